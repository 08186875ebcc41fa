"""The minisynth recipe end to end: `egs/minisynth/asr1/run.sh --fast true` in a scratch copy.

One subprocess runs every stage (corpus synthesis, fbank, BPE, LM, CIF training, batched beam
search with and without the LM, sclite, RESULTS.md, the CIF fire plot) on the CI preset; the
test then checks that RESULTS.md has a sclite WER row for every test set with and without the
LM, the per-step timing and learning-curve sections, and the PNG.
"""
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

RECIPE = Path(__file__).resolve().parents[1] / "egs" / "minisynth" / "asr1"
TEST_SETS = ("test_in", "test_unseen_voice", "test_cross")
# Utterances per test set in conf/corpus_fast.yaml.
FAST_SIZES = {"test_in": 40, "test_unseen_voice": 40, "test_cross": 40}


def scratch_recipe(root: Path) -> Path:
    """A recipe dir whose entries link to the real recipe: data/, dump/, exp/ stay in ``root``."""
    root.mkdir()
    for entry in RECIPE.iterdir():
        if entry.name in ("data", "dump", "exp", "downloads", "RESULTS.md"):
            continue
        (root / entry.name).symlink_to(entry.resolve())
    return root


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory):
    recipe = scratch_recipe(tmp_path_factory.mktemp("minisynth") / "asr1")
    env = dict(os.environ, cmd_backend="local")
    t0 = time.time()
    proc = subprocess.run(["./run.sh", "--fast", "true"], cwd=recipe, env=env,
                          capture_output=True, text=True, timeout=1800)
    elapsed = time.time() - t0
    if proc.returncode != 0:
        pytest.fail(f"run.sh --fast true failed (rc {proc.returncode}) after {elapsed:.0f} s:\n"
                    f"{proc.stderr[-6000:]}")
    print(f"run.sh --fast true: {elapsed:.0f} s")
    return recipe


def wer_rows(results: str) -> dict:
    """{decode dir/test set: (Snt, Err)} from the WER tables of RESULTS.md."""
    rows, metric = {}, None
    for line in results.splitlines():
        if line.startswith("### "):
            metric = line[4:].strip()
        m = re.match(r"^\|([^|]+/[^|]+)\|(\d+)\|(\d+)\|([\d.]+)\|([\d.]+)\|([\d.]+)\|([\d.]+)\|([\d.]+)\|", line)
        if m and metric == "WER":
            rows[m.group(1)] = (int(m.group(2)), float(m.group(8)))
    return rows


@pytest.mark.slow
def test_fast_recipe_results_have_every_row(fast_run):
    results = (fast_run / "RESULTS.md").read_text(encoding="utf-8")
    rows = wer_rows(results)
    for test_set in TEST_SETS:
        with_lm = [k for k in rows if k.endswith("/" + test_set) and "_lm_" in k.split("/")[0]]
        without_lm = [k for k in rows if k.endswith("/" + test_set) and "_lm_" not in k.split("/")[0]]
        assert len(with_lm) == 1 and len(without_lm) == 1, (test_set, sorted(rows))
        for key in with_lm + without_lm:
            snt, err = rows[key]
            assert snt == FAST_SIZES[test_set], (key, snt)  # sclite scored every utterance
            assert err >= 0.0
    # Model, parameter count, LM perplexities, the shared stage table and run.sh's own sections.
    assert "- model: cif (encoder conformer_pooling, decoder cif_ar); parameters: " in results
    assert "## LM perplexity" in results
    assert "## Wall and CPU time per step (run.sh, exp/run_times.tsv)" in results
    for step in ("stage 1", "stage 3", "stage 7", "stage 11", "stage 14", "stages 14-15 without LM"):
        assert f"|{step}|" in results, step
    assert "## Learning curves" in results and "valid acc" in results
    pngs = list((fast_run / "exp").rglob("cif_fires_*.png"))
    assert len(pngs) == 1 and pngs[0].stat().st_size > 10000
    assert pngs[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(pngs[0].relative_to(fast_run)) in results


@pytest.mark.slow
def test_fast_recipe_rerun_skips_finished_work(fast_run):
    """A second run from stage 14 finds every decoding and score done and only rewrites RESULTS.md."""
    before = (fast_run / "exp" / "run_times.tsv").read_text().count("\n")
    proc = subprocess.run(["./run.sh", "--fast", "true", "--stage", "14"], cwd=fast_run,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "decoding" in proc.stderr and ": decoded" in proc.stderr and ": scored" in proc.stderr
    assert (fast_run / "exp" / "run_times.tsv").read_text().count("\n") > before
    # A different corpus preset on the same data/ is refused instead of mixing corpora.
    proc = subprocess.run(["./run.sh", "--stage", "1", "--stop_stage", "1"], cwd=fast_run,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "holds the corpus 'fast=true seed=1'" in proc.stderr
