"""Helpers shared by the model side and the recipe tools, importable without torch: token lists
(``tokens``) and Kaldi tables (``kaldi_table``)."""
