"""Seed tables: Table 1 and Table 3 over seeds from fabricated per-seed sclite results (means and
sample standard deviations computed by hand), the ordering sentences, missing seeds, and the
plumbing of local/seed_tables.sh around a fake run.sh."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from espnet_ext.recipe.bin import seed_tables as seed_tables_bin
from espnet_ext.recipe.results import render as render_results
from espnet_ext.recipe.seed_tables import mean_std, render

REPO = Path(__file__).resolve().parents[3]
TAG = "train_asr_cif_mini_fast_wp_minilm"
NOLM = "decode_mini_valid.acc.ave"
LM = "decode_mini_lm_train_lm_mini_fast_wp_minilm_valid.acc.ave"


def sclite(path: Path, err: float) -> None:
    """A result.txt whose Sum/Avg line has the error rate ``err`` (all substitutions)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "result.txt").write_text(
        "|  Sum/Avg |   40   300 | "
        f"{100 - err:5.1f} {err:5.1f}  0.0  0.0 {err:5.1f}  90.0 |\n", encoding="utf-8")


def table1(expdir: Path, wers: dict) -> None:
    """wers[label][seed] = (WER without LM, WER with LM); a seed without a label has no result."""
    for label, per_seed in wers.items():
        name = f"asr_{TAG}" if label == "CIF" else f"asr_{TAG}_{label[1:].lower()}"
        for seed, (nolm, lm) in per_seed.items():
            d = expdir / f"seed{seed}"
            (d / f"table1_{TAG}.md").parent.mkdir(parents=True, exist_ok=True)
            (d / f"table1_{TAG}.md").write_text("## table 1 of one seed\n")
            sclite(d / name / NOLM / "test_in" / "score_wer", nolm)
            sclite(d / name / LM / "test_in" / "score_wer", lm)


def table_row(text: str, label: str, heading: str) -> str:
    """The row of ``label`` in the table under the heading that starts with ``heading``."""
    part = text[text.index(f"### {heading}"):]
    return next(line for line in part.splitlines() if line.startswith(f"|{label}|"))


def sentence(text: str, heading: str, column: str) -> str:
    part = text[text.index(f"### {heading}"):]
    return next(line for line in part.splitlines() if line.startswith(f"**{column}.**"))


def test_mean_and_sample_standard_deviation():
    assert mean_std([10, 12, 14]) == (12.0, 2.0)  # squares 4 + 0 + 4 over n - 1 = 2
    assert mean_std([8, 8, 8]) == (8.0, 0.0)
    assert mean_std([5.0]) == (5.0, None)  # one seed: no spread
    assert mean_std([]) == (None, None)


# Three seeds. Without LM every row keeps the paper's order (+HKD < +LRD < +ACD < CIF); with the
# LM +ACD (13, 13, 13) is worse than CIF (11, 11, 14).
THREE_SEEDS = {
    "CIF": {1: (10, 11), 2: (12, 11), 3: (14, 14)},
    "+ACD": {1: (9, 13), 2: (10, 13), 3: (11, 13)},
    "+LRD": {1: (8, 8), 2: (8, 8), 3: (8, 8)},
    "+HKD": {1: (5, 5), 2: (6, 6), 3: (7, 7)},
}


def test_table1_means_paper_numbers_and_ordering(tmp_path):
    table1(tmp_path, THREE_SEEDS)
    text = render(tmp_path, [1, 2, 3])
    head = "HKD paper Table 1"
    # CIF: no LM 10, 12, 14 -> 12 ± 2; with LM 11, 11, 14 -> 12 ± sqrt((1 + 1 + 4) / 2) = 1.73.
    # Paper (HKD Table 1, AISHELL-1 test CER): CIF 4.9 without, 4.8 with the LM.
    assert table_row(text, "CIF", head) == \
        "|CIF|12.00 ± 2.00|12.00 ± 1.73|3|10.0, 12.0, 14.0|11.0, 11.0, 14.0|4.9|4.8|"
    assert table_row(text, "+ACD", head).startswith("|+ACD|10.00 ± 1.00|13.00 ± 0.00|3|")
    assert table_row(text, "+HKD", head).endswith("|4.2|4.1|")
    assert "Missing results" not in text

    nolm = sentence(text, head, "no LM")
    assert "The paper's order (lowest CER first: +HKD < +LRD < +ACD < CIF) holds in our means" in nolm
    # Adjacent differences against the larger std: 8 - 6 = 2 > max(1, 0); 10 - 8 = 2 > max(0, 1);
    # 12 - 10 = 2 is not > max(1, 2).
    assert "+HKD→+LRD +2.00 > 1.00" in nolm and "+LRD→+ACD +2.00 > 1.00" in nolm
    assert "+ACD→CIF +2.00 ≤ 2.00" in nolm and "2 of 3 exceed the seed spread." in nolm

    lm = sentence(text, head, "with LM")
    # Of the 6 pairs only (+ACD, CIF) is reversed: 13 > 12; within the spread (1 <= 1.73).
    assert "does not hold in our means (1 of 6 pairs reversed)" in lm
    assert "our means, lowest WER first: +HKD 6.00, +LRD 8.00, CIF 12.00, +ACD 13.00." in lm
    assert "+ACD→CIF -1.00 ≤ 1.73" in lm


def test_missing_seeds_are_reported_not_averaged_silently(tmp_path):
    partial = {label: {s: v for s, v in per_seed.items() if s != 3} for label, per_seed in THREE_SEEDS.items()}
    partial["+HKD"].pop(2)  # +HKD only has seed 1
    table1(tmp_path, partial)
    text = render(tmp_path, [1, 2, 3])
    head = "HKD paper Table 1"
    assert f"- seed 3: not run (no {tmp_path}/seed3)" in text
    # CIF over seeds 1 and 2: 10, 12 -> 11 ± sqrt(2) = 1.41; with LM 11, 11 -> 11 ± 0.
    assert table_row(text, "CIF", head) == ("|CIF|11.00 ± 1.41 (2 of 3 seeds)|11.00 ± 0.00 (2 of 3 seeds)|2|"
                                            "10.0, 12.0, -|11.0, 11.0, -|4.9|4.8|")
    assert table_row(text, "+HKD", head).startswith("|+HKD|5.00 (1 of 3 seeds)|5.00 (1 of 3 seeds)|1|")
    # Seed 3 has no result at all: named once; +HKD also lacks seed 2.
    assert "Missing results (left out of the means above): seed 3: no result yet; +HKD no LM: seed 2; " in text
    assert "CIF with LM" not in text
    # A row of one seed has no spread: no verdict on its differences.
    # Means over seeds 1, 2: +HKD 5 (one seed), +LRD 8 ± 0, +ACD 9.5 ± 0.71, CIF 11 ± 1.41.
    nolm = sentence(text, head, "no LM")
    assert "+HKD→+LRD +3.00 (no spread)" in nolm
    assert "+LRD→+ACD +1.50 > 0.71" in nolm and "+ACD→CIF +1.50 > 1.41" in nolm
    assert nolm.endswith("; 2 of 2 exceed the seed spread; 1 without a spread (a row with fewer than 2 seeds).")


def test_equal_means_do_not_count_as_the_papers_order(tmp_path):
    table1(tmp_path, {"CIF": {1: (10, 10), 2: (12, 12)}, "+ACD": {1: (12, 10), 2: (10, 12)}})
    nolm = sentence(render(tmp_path, [1, 2]), "HKD paper Table 1", "no LM")
    assert "(lowest CER first: +ACD < CIF) holds in our means only up to ties (1 of 1 pairs equal)" in nolm
    assert "+ACD→CIF +0.00 ≤ 1.41; 0 of 1 exceed the seed spread." in nolm


def test_table3_conditions_methods_and_direction(tmp_path):
    # No LM and SF on intra test_in and cross test_cross, two seeds.
    wer = {("intra", "none"): (20, 22), ("intra", "sf"): (25, 27),
           ("cross", "none"): (30, 30), ("cross", "sf"): (28, 28), ("intra", "dr_2gram"): (24, 24)}
    for (cond, method), values in wer.items():
        test_set = "test_in" if cond == "intra" else "test_cross"
        for seed, err in zip((1, 2), values):
            sclite(tmp_path / f"seed{seed}" / "ilm_cif" / f"decode_{cond}_{method}" / test_set / "score_wer", err)
    text = render(tmp_path, [1, 2])
    head = "DR-KD paper Table 3"
    # Paper: DR-KD Table 3 (zh-100kh) No LM 7.61 / 5.07, SF 7.39 / 4.10; DR-2gram from Table 2: 7.36 / 3.97.
    assert table_row(text, "No LM", head) == "|No LM|21.00 ± 1.41|30.00 ± 0.00|2|20.0, 22.0|30.0, 30.0|7.61|5.07|"
    assert table_row(text, "SF", head).endswith("|7.39|4.10|")
    assert table_row(text, "DR-2gram", head) == \
        "|DR-2gram|24.00 ± 0.00|-|2 / 0|24.0, 24.0|-, -|7.36|3.97|"
    assert "DR-2gram: Table 2" in text
    assert "DR-2gram cross test_cross: seeds 1, 2" in text
    intra = sentence(text, head, "intra test_in")
    # Paper: DR-2gram 7.36 < SF 7.39 < No LM 7.61; ours No LM 21 < DR-2gram 24 < SF 26: the pairs
    # (DR-2gram, No LM) and (SF, No LM) are reversed. Adjacent: 26 - 24 = 2 > max(0, 1.41), in the
    # paper's direction; 21 - 26 = -5, beyond the spread against it.
    assert "(lowest CER first: DR-2gram < SF < No LM) does not hold in our means (2 of 3 pairs reversed)" in intra
    assert "DR-2gram→SF +2.00 > 1.41" in intra and "SF→No LM -5.00 > 1.41" in intra
    assert "2 of 2 exceed the seed spread (1 of them against the paper's direction)." in intra
    cross = sentence(text, head, "cross test_cross")
    assert "(lowest CER first: SF < No LM) holds in our means" in cross
    assert "SF→No LM +2.00 > 0.00; 1 of 1 exceed the seed spread." in cross


def test_cli_writes_the_section_that_results_md_includes(tmp_path, capsys):
    table1(tmp_path / "exp", THREE_SEEDS)
    assert seed_tables_bin.main(["--expdir", str(tmp_path / "exp"), "--seeds", "1 2 3"]) == 0
    out = tmp_path / "exp" / "seed_tables.md"
    assert capsys.readouterr().out == f"seed_tables: wrote {out}\n"
    assert "|CIF|12.00 ± 2.00|" in out.read_text()
    assert "|CIF|12.00 ± 2.00|" in render_results([tmp_path / "exp"])  # RESULTS.md's section files
    assert seed_tables_bin.main(["--expdir", str(tmp_path), "--seeds", "1 b"]) == 2


FAKE_RUN_SH = """#!/usr/bin/env bash
# Records its arguments (one a line) in <expdir>/args.<n>; fails for the expdir in $FAIL_EXPDIR.
for ((i = 1; i < $#; i++)); do [ "${!i}" = --expdir ] && { j=$((i + 1)); d=${!j}; }; done
mkdir -p "$d"
n=$(ls "$d" | grep -c '^args' || true)
printf '%s\\n' "$@" > "$d/args.$n"
echo "$d $*" >> calls
if [ -n "${SLEEP:-}" ]; then echo $$ > "$d/pid"; sleep "$SLEEP"; fi
[ "$d" != "${FAIL_EXPDIR:-}" ]
"""


@pytest.fixture
def recipe(tmp_path):
    """A recipe directory with the real local/seed_tables.sh and a fake run.sh."""
    asr1 = REPO / "egs" / "minisynth" / "asr1"
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "seed_tables.sh").symlink_to(asr1 / "local" / "seed_tables.sh")
    (tmp_path / "utils").symlink_to(REPO / "egs" / "TEMPLATE" / "asr1" / "utils")
    (tmp_path / "path.sh").write_text("")
    (tmp_path / "run.sh").write_text(FAKE_RUN_SH)
    (tmp_path / "run.sh").chmod(0o755)
    return tmp_path


def seed_tables_sh(recipe, *args, **env):
    environ = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
                   PYTHONPATH=str(REPO), **env)
    return subprocess.run(["local/seed_tables.sh", *args], cwd=recipe, capture_output=True, text=True,
                          env=environ, timeout=120)


def args_of(recipe, seed, call=0):
    return (recipe / "exp" / f"seed{seed}" / f"args.{call}").read_text().splitlines()


def value(args, name):
    return args[args.index(name) + 1]


def test_script_runs_each_seed_with_its_seed_and_expdir(recipe):
    r = seed_tables_sh(recipe, "--seeds", "1 2", "--fast", "true", "--asr_args", "--max_epoch 1")
    assert r.returncode == 0, r.stderr
    for seed in (1, 2):
        args = args_of(recipe, seed)
        assert value(args, "--expdir") == f"exp/seed{seed}"
        assert value(args, "--results_md") == f"exp/seed{seed}/RESULTS.md"
        assert value(args, "--asr_args") == f"--max_epoch 1 --seed {seed}"
        assert value(args, "--lm_args").split() == ["--seed", str(seed)]
        assert value(args, "--ilm_train_args").split() == ["--seed", str(seed)]
        assert value(args, "--hkd") == "true" and value(args, "--ilm") == "true"
        assert value(args, "--fast") == "true"  # run.sh's own options pass through
        assert "--ngpu" not in args
    assert (recipe / "calls").read_text().count("\n") == 2  # one run per seed, seed 1 first
    assert (recipe / "calls").read_text().startswith("exp/seed1 ")
    assert "## Seed tables" in (recipe / "exp" / "seed_tables.md").read_text()
    assert "## Seed tables" in (recipe / "RESULTS.md").read_text()
    assert "seed 2: finished" in (recipe / "exp" / "seed_tables.log").read_text()


def test_script_on_one_gpu_prepares_shared_stages_then_runs_seeds_together(recipe):
    r = seed_tables_sh(recipe, "--seeds", "1 2 3", "--gpu", "true", "--inference_batch_size", "32")
    assert r.returncode == 0, r.stderr
    prep = args_of(recipe, 1, 0)  # the first seed makes data/ and dump/ (stages up to 9) first
    assert value(prep, "--stop_stage") == "9"
    for seed, call in ((1, 1), (2, 0), (3, 0)):
        args = args_of(recipe, seed, call)
        assert value(args, "--stop_stage") == "16"
        assert value(args, "--ngpu") == "1" and value(args, "--gpu_inference") == "true"
        # The command line's option comes after the GPU default (run.sh's parser: the last wins).
        assert args.index("32") > args.index("64")
    assert "3 at a time, one GPU" in (recipe / "exp" / "seed_tables.log").read_text()


def test_script_reports_a_failed_seed_and_continues(recipe):
    r = seed_tables_sh(recipe, "--seeds", "1 2 3", FAIL_EXPDIR="exp/seed2")
    assert r.returncode == 1
    log = (recipe / "exp" / "seed_tables.log").read_text()
    assert "seed 2: failed (status 1" in log and "seed 3: finished" in log
    assert "failed seeds: 2 (rerun to continue where they stopped)" in log


def test_script_killed_stops_the_running_seed(recipe):
    environ = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
                   PYTHONPATH=str(REPO), SLEEP="60")
    proc = subprocess.Popen(["local/seed_tables.sh", "--seeds", "1 2"], cwd=recipe, env=environ,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pid_file = recipe / "exp" / "seed1" / "pid"
    deadline = time.time() + 30
    while not pid_file.is_file() or not pid_file.read_text().strip():
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.1)
    run_sh = int(pid_file.read_text())
    proc.terminate()
    assert proc.wait(timeout=30) == 130
    deadline = time.time() + 10
    while Path(f"/proc/{run_sh}").exists() and "Z" not in Path(f"/proc/{run_sh}/stat").read_text().split()[2]:
        assert time.time() < deadline, "run.sh of seed 1 still runs after the script was killed"
        time.sleep(0.1)
    assert "interrupted: seeds stopped" in (recipe / "exp" / "seed_tables.log").read_text()
    assert not (recipe / "exp" / "seed2").exists()


def test_script_rejects_bad_seed_lists(recipe):
    for seeds, message in (("1 x", "'x' is not a seed number"), ("1 1", "names seed 1 twice"),
                           ("", "--seeds is empty")):
        r = seed_tables_sh(recipe, "--seeds", seeds)
        assert r.returncode == 2 and message in r.stderr
    assert not (recipe / "calls").exists()
