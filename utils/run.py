#!/usr/bin/env python3
"""Local job runner with Kaldi's run.pl interface; see espnet_ext/recipe/runner.py.

    utils/run.py [--max_jobs_run N] [--num_threads N] [--gpu N --mem M --time T] JOB=1:N LOG CMD ...
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), ".."))
from espnet_ext.recipe.runner import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], backend="local", prog="run.py"))
