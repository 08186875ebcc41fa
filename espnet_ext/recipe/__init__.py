"""Recipe machinery, separate from the model code: job runners (local, Slurm), Kaldi data
directories, fbank features, sclite scoring, results tables and the synthetic corpus builder.

Everything here is importable without torch or ESPnet (heavy imports happen inside functions), so
the small CLIs under ``utils/`` and ``espnet_ext/recipe/bin`` start fast. Models, tasks, scorers and
the inference API never import this package.
"""
