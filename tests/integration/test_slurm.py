"""Slurm backend on a real single-node Slurm cluster (tests/slurm_cluster.py): a pipeline stage
as an sbatch array job gives byte-identical outputs to the local backend; a failing array task
fails the stage and names its log; runner options reach the jobs."""
import filecmp
import os
import subprocess
import sys
from pathlib import Path

import pytest
from slurm_cluster import slurm_cluster  # noqa: F401  (session fixture)
from test_stages import make_recipe

from espnet_ext.recipe.runner import REPO_ROOT, log_status

pytestmark = pytest.mark.slurm
SLURM_PY = str(REPO_ROOT / "utils" / "slurm.py")
ARGS = ["--train_set", "train", "--valid_set", "dev", "--test_sets", "test", "--nj", "4",
        "--stop_stage", "3"]


def asr_sh(recipe: Path, backend: str, *args):
    env = dict(os.environ, cmd_backend=backend)
    return subprocess.run(["./asr.sh", *ARGS, *args], cwd=recipe, capture_output=True,
                          text=True, env=env, timeout=600)


def tree(root: Path):
    """Relative paths of the files that make up the stage's output (logs, Slurm's own files and
    the done markers, which record the files' times, excluded)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and "/log/" not in f"/{p.relative_to(root)}"
                  and ".done" not in p.name)


def test_fbank_stage_on_slurm_equals_local(speech_corpus, slurm_cluster, tmp_path):  # noqa: F811
    local = make_recipe(tmp_path / "local" / "asr1", speech_corpus.data)
    slurm = make_recipe(tmp_path / "slurm" / "asr1", speech_corpus.data)
    r = asr_sh(local, "local")
    assert r.returncode == 0, r.stderr[-3000:]
    r = asr_sh(slurm, "slurm")
    assert r.returncode == 0, r.stderr[-3000:]
    # One array job of 4 tasks: Slurm wrote one output file per array task, and our logs sit
    # at the same paths as with the local backend.
    logdir = slurm / "dump" / "fbank" / "log" / "train+dev+test"  # the sets of this run
    assert sorted(p.name for p in (logdir / "q").glob("*.slurm")) == \
        [f"fbank.{i}.log.slurm" for i in range(1, 5)]
    for i in range(1, 5):
        assert log_status(logdir / f"fbank.{i}.log") == 0
    files = tree(local / "dump")
    assert files == tree(slurm / "dump")
    assert any(f.endswith(".ark") for f in files) and "fbank/train/feats.scp" in files
    _, mismatch, errors = filecmp.cmpfiles(local / "dump", slurm / "dump", files, shallow=False)
    assert mismatch == [] and errors == []


def test_failing_array_task_fails_the_stage_naming_its_log(speech_corpus, slurm_cluster,  # noqa: F811
                                                           tmp_path):
    recipe = make_recipe(tmp_path / "asr1", speech_corpus.data)
    r = asr_sh(recipe, "slurm", "--stop_stage", "1")
    assert r.returncode == 0, r.stderr[-3000:]
    wav = recipe / "data" / "dev" / "wav.scp"
    lines = wav.read_text().splitlines()
    bad_utt = lines[-1].split()[0]  # the last of 6 dev utterances: part 4 of 4
    lines[-1] = f"{bad_utt} /nonexistent/{bad_utt}.wav"
    wav.write_text("\n".join(lines) + "\n")
    r = asr_sh(recipe, "slurm", "--stage", "3")
    assert r.returncode != 0
    logs = "dump/fbank/log/train+dev+test"
    assert f"job 4 failed (exit code 1); log: {logs}/fbank.4.log" in r.stderr
    assert f"utterance '{bad_utt}'" in (recipe / logs / "fbank.4.log").read_text()
    for i in (1, 2, 3):
        assert log_status(recipe / logs / f"fbank.{i}.log") == 0


def test_runner_options_reach_the_array_tasks(slurm_cluster, tmp_path):  # noqa: F811
    cmd = ("echo partition=$SLURM_JOB_PARTITION cpus=$SLURM_CPUS_PER_TASK "
           "mem=$SLURM_MEM_PER_CPU task=$SLURM_ARRAY_TASK_ID job=JOB omp=$OMP_NUM_THREADS")
    r = subprocess.run([sys.executable, SLURM_PY, "--num_threads", "2", "--mem", "200M",
                        "--time", "5", "--max_jobs_run", "1", "JOB=1:2", "log/o.JOB.log", cmd],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    for i in (1, 2):
        text = (tmp_path / f"log/o.{i}.log").read_text()
        assert f"partition={slurm_cluster.partition} cpus=2 mem=200 task={i} job={i} omp=2" \
            in text
