"""Shared pytest configuration: repository paths and markers."""
import os
from pathlib import Path

import pytest
from speech_fixtures import speech_corpus  # noqa: F401  (session fixture: synthesised wavs)

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long end-to-end test (still run in CI)")
    config.addinivalue_line("markers", "slurm: needs root and the Debian Slurm packages")
