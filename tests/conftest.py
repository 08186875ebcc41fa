"""Shared pytest configuration: repository paths and markers.

Unit tests mirror the package (tests/unit/<subpackage>/test_<module>.py); recipe runs, stage
runs and kill/resume runs live in tests/integration/ and carry the ``integration`` marker
(``pytest -m "not integration"`` runs the unit tests alone). The helpers next to this file
(tiny_asr_data, fake_corpora, ...) are importable from every test directory.
"""
import os
import sys
from pathlib import Path

import pytest
from speech_fixtures import speech_corpus  # noqa: F401  (session fixture: synthesised wavs)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the shared helpers, from any test directory
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long end-to-end test (still run in CI)")
    config.addinivalue_line("markers", "slurm: needs root and the Debian Slurm packages")
    config.addinivalue_line("markers", "integration: runs recipes or pipeline stages (tests/integration)")


def pytest_collection_modifyitems(config, items):
    integration = REPO / "tests" / "integration"
    for item in items:
        if integration in Path(item.fspath).parents:
            item.add_marker(pytest.mark.integration)
