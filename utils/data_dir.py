#!/usr/bin/env python3
"""Data directory tools (Kaldi layout): validate, fix, split, split_scp, combine, spk2utt, subset,
perturb_speed, filter. Run `utils/data_dir.py <command> --help` for each; logic lives in
espnet_ext/recipe/datadir.py.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), ".."))
from espnet_ext.recipe.bin.data_dir import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
