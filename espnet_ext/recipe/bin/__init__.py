"""Command-line entry points of the recipe machinery (``python -m espnet_ext.recipe.bin.<name>``)."""
