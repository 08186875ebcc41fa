# The two entry points of the README. Both run the idempotent set-up first (seconds when done).
SHELL := /bin/bash
.PHONY: setup recipe test bench lint

setup:
	bash tools/setup.sh

# Main job: the offline mini corpus recipe, end to end (corpus, fbank, tokens, LM, ASR, decoding, sclite).
recipe: setup
	cd egs/minisynth/asr1 && ./run.sh $(ARGS)

# Lint first (ruff + shellcheck, seconds), then every test: unit tests mirror the package under
# tests/unit/, recipe and stage runs are tests/integration/ (marker: integration).
test: setup
	bash tools/lint.sh
	.venv/bin/python -m pytest $(PYTEST_ARGS)

bench: setup
	.venv/bin/python benchmarks/cif_speed.py

# ruff on the Python code and shellcheck on every tracked shell script (tools/lint.sh).
lint: setup
	bash tools/lint.sh
