"""The benchmark harness in CI: every script in ``--quick --json`` mode (one subprocess per script,
spawned by ``benchmarks/run_all.py``), checking the JSON rows, the machine record and the rendered
docs/benchmarks.md + plot. Correctness of the harness, not timing (speed lives in benchmarks/)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MACHINE_KEYS = {"cpu", "cores", "torch_threads", "torch", "python", "gpu"}
ALL = ["cif_speed", "train_step", "decode_speed", "fusion_speed", "feature_speed", "recipe_times",
       "synth_speed"]


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    cmd = [sys.executable, str(REPO / "benchmarks" / "run_all.py"), "--quick", "--json",
           "--only", *ALL, "--results_dir", str(out / "results"), "--doc", str(out / "benchmarks.md"),
           "--plot", str(out / "cif_speed.png")]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=2400)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out, json.loads(proc.stdout)


def rows(summary, name, table="rows"):
    res = summary["results"][name]
    assert MACHINE_KEYS <= set(res["machine"]), res["machine"]
    assert res["run"]["command"].startswith(f"python benchmarks/{name}.py --json --quick")
    assert res["run"]["wall_s"] > 0 and res["run"]["cpu_s"] > 0  # a real subprocess ran
    assert res[table], f"{name}: empty {table}"
    return res[table]


def test_cif_speed(quick_run):
    r = rows(quick_run[1], "cif_speed")
    assert [x["mode"] for x in r] == ["fwd", "fwd+bwd"]
    for x in r:
        assert {"B", "T", "D", "dtype", "ours_ms", "loop_ms", "torch_cif_ms", "loop/ours",
                "ours/torch_cif"} <= set(x)
        assert x["ours_ms"] > 0 and x["max_abs_diff"] < 1e-2  # the three implementations agree


def test_train_step(quick_run):
    step = rows(quick_run[1], "train_step", "step")
    assert [x["variant"] for x in step] == ["cif", "acd_k100", "acd_k300", "acd_k700", "lrd", "hkd"]
    assert step[0]["ratio"] == pytest.approx(1.0)
    assert all(x["step_ms"] > 0 and x["peak_MiB"] > 0 for x in step)
    assert {x["variant"] for x in rows(quick_run[1], "train_step", "distiller")} >= {"hkd"}


def test_decode_speed(quick_run):
    r = rows(quick_run[1], "decode_speed")
    assert {(x["model"], x["method"].split()[0]) for x in r} == {(m, k) for m in ("aed", "cif")
                                                                  for k in ("espnet", "ours")}
    for x in r:
        assert x["utt_per_s"] > 0 and 0.0 <= x["same_1best"] <= 1.0
    assert all(x["same_1best"] == 1.0 for x in r if x["method"] == "ours")  # identical 1-best


def test_fusion_speed(quick_run):
    r = rows(quick_run[1], "fusion_speed")
    assert [x["method"] for x in r] == ["no_lm", "sf", "ilme_z", "ilme_l", "dr", "dr_2gram", "dr_kd"]
    assert all(x["seconds"] > 0 and x["x_sf"] > 0 for x in r)


def test_feature_speed(quick_run):
    r = rows(quick_run[1], "feature_speed")
    assert [x["what"].split()[0] for x in r] == ["fbank", "teacher"]
    for x in r:
        assert x["utts"] == 2 and x["utt_per_s"] > 0 and x["bytes_per_utt"] > 0
    # 80-d fp32 at 100 frames/s dominates the fbank ark size
    assert r[0]["bytes_per_utt"] == pytest.approx(320 * 100 * r[0]["audio_s"] / r[0]["utts"], rel=0.1)


def test_recipe_times(quick_run):
    r = rows(quick_run[1], "recipe_times")
    assert [x["stage"] for x in r] == [1, 3, "total"]
    # --quick reads the built-in example: stage 1 took 7 s (5 CPU s), stage 3 30 s (52 CPU s) and
    # was later skipped (a skip does not replace the run that did the work); totals 37 s, 57 CPU s
    assert [x["wall_s"] for x in r] == [7, 30, 37]
    assert [x["cpu_s"] for x in r] == [5, 52, 57]
    assert [x["runs"] for x in r[:2]] == [1, 1]


def test_synth_speed(quick_run):
    r = rows(quick_run[1], "synth_speed")
    assert all(x["utts"] > 0 and x["utt_per_s"] > 0 for x in r)


def test_doc_plot_and_targets(quick_run):
    out, summary = quick_run
    doc = (out / "benchmarks.md").read_text()
    for name in ALL:
        assert f"python benchmarks/{name}.py --json --quick" in doc
    assert "cif_speed.png" in doc
    assert (out / "cif_speed.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    goals = {t["target"]: t for t in summary["targets"]}
    assert any(k.startswith("HKD (K=700) training step") for k in goals)
    assert any(k.startswith("DR-KD") for k in goals) and any(k.startswith("ILME-Z") for k in goals)
    assert sum(k.startswith("batched decoding") for k in goals) == 2


def test_recipe_times_reports_a_bad_line(tmp_path):
    tsv = tmp_path / "stage_times.tsv"
    header = "stage\tname\ttag\twall_s\tcpu_s\tload_1_5_15\tdate\tstatus"
    good = "1\tdata preparation\t-\t7\t5\t0.1 0.1 0.1\t2026-01-01T00:00:07\tran"
    cmd = [sys.executable, str(REPO / "benchmarks" / "recipe_times.py"), str(tsv), "--json"]
    tsv.write_text(f"{header}\n{good}\nnot a stage line\n")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode != 0 and f"{tsv}:3" in proc.stderr
    tsv.write_text(f"{good}\n")  # the old layout (no header) is named, not misread
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode != 0 and f"{tsv}:1: expected the header" in proc.stderr
