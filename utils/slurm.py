#!/usr/bin/env python3
"""Slurm job runner with Kaldi's slurm.pl interface: one `sbatch --array --wait` per call, options
mapped through conf/slurm.conf; see espnet_ext/recipe/runner.py.

    utils/slurm.py [--config conf/slurm.conf] [--gpu N --mem M --num_threads N --time T]
                   [--max_jobs_run N] JOB=1:N LOG CMD ...
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), ".."))
from espnet_ext.recipe.runner import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], backend="slurm", prog="slurm.py"))
