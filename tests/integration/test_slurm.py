"""Slurm backend on a real single-node Slurm cluster (tests/slurm_cluster.py): a pipeline stage
as an sbatch array job gives byte-identical outputs to the local backend; a failing array task
fails the stage and names its log; runner options reach the jobs. On a two-node cluster: ASR
training with --num_nodes 2 runs one rank per node, both ranks end with the same model, and a
failing rank fails the stage naming its log."""
import contextlib
import filecmp
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional, Tuple

import pytest
import yaml
from slurm_cluster import slurm_cluster, slurm_cluster_two_nodes  # noqa: F401  (session fixtures)
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


# ------------------------------------------------------------------ training over two nodes
TRAIN_ARGS = ["--train_set", "train", "--valid_set", "dev", "--test_sets", "test", "--nj", "2",
              "--use_lm", "false", "--asr_train_module", "espnet_ext.bin.cif_asr_train",
              "--asr_tag", "two_nodes"]
PREPARED = ("data", "dump", "exp")  # what stages 1-10 leave (relative paths only)


@pytest.fixture(scope="module")
def prepared_recipe(speech_corpus, tmp_path_factory):
    """A recipe after stages 1-10 (features, char token list, ASR statistics; no LM) on the
    local backend, and the tiny CIF config (2 epochs of 5 batches of 4)."""
    root = tmp_path_factory.mktemp("two_nodes")
    conf = yaml.safe_load((REPO_ROOT / "conf" / "train_asr_cif_tiny.yaml").read_text())
    conf.pop("fold_length")  # asr.sh passes --fold_length itself
    (root / "train_asr_cif_tiny.yaml").write_text(yaml.safe_dump(conf, sort_keys=False))
    recipe = make_recipe(root / "asr1", speech_corpus.data)
    r = subprocess.run(["./asr.sh", *TRAIN_ARGS, "--asr_config", str(root / "train_asr_cif_tiny.yaml"),
                        "--stop_stage", "10"], cwd=recipe, capture_output=True, text=True,
                       env=dict(os.environ, cmd_backend="local"), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return recipe, conf


def recipe_copy(prepared, corpus_data, dest: Path, **config) -> Tuple[Path, Path]:
    """A fresh recipe dir holding the prepared one's outputs, and its config (``config`` set)."""
    recipe = make_recipe(dest / "asr1", corpus_data)
    for d in PREPARED:
        shutil.copytree(prepared[0] / d, recipe / d)
    conf = dest / "train_asr_cif_tiny.yaml"
    conf.write_text(yaml.safe_dump({**prepared[1], **config}, sort_keys=False))
    return recipe, conf


def train_on_two_nodes(recipe: Path, conf: Path, cluster) -> subprocess.CompletedProcess:
    """Stage 11 with --num_nodes 2 on the two-node cluster (its SLURM_CONF passed explicitly)."""
    env = dict(os.environ, cmd_backend="slurm", **cluster.env)
    return subprocess.run(["./asr.sh", *TRAIN_ARGS, "--asr_config", str(conf), "--stage", "11",
                           "--stop_stage", "11", "--num_nodes", "2"], cwd=recipe,
                          capture_output=True, text=True, env=env, timeout=900)


def rank_lines(log: Path) -> Tuple[str, str, Optional[str]]:
    """(Slurm node of the runner's header, the trainer's rank line, its parameter digest)."""
    text = log.read_text()
    node = re.search(r"^# Slurm job \d+, node \d of 2: (\S+)$", text, re.M).group(1)
    rank = re.search(r"distributed training: (rank \d of world size \d) \(gloo, file://.*, "
                     r"Slurm node (\S+)\)$", text, re.M)
    assert rank.group(2) == node, text[-3000:]
    digest = re.search(r"parameter digest after training: sha256 ([0-9a-f]{64})$", text, re.M)
    return node, rank.group(1), digest.group(1) if digest else None


def saved_model_digest(recipe: Path, exp: Path, model_file: str = "latest.pth") -> str:
    """The digest of a model rank 0 saved (latest.pth: the last epoch's parameters)."""
    from espnet_ext.tasks.cif_asr import CIFASRTask
    from espnet_ext.train.trainer import parameter_digest

    with contextlib.chdir(recipe):  # config.yaml names the token list and stats relatively
        model, _ = CIFASRTask.build_model_from_file(exp / "config.yaml", exp / model_file, "cpu")
    return parameter_digest(model)


def test_training_over_two_slurm_nodes_gives_both_ranks_the_same_model(
        prepared_recipe, speech_corpus, slurm_cluster_two_nodes, tmp_path):  # noqa: F811
    """One Slurm job over two nodes: rank 0 on node1 logs to train.log, rank 1 on node2 to
    train.node1.log, and DDP leaves both with the parameters rank 0 saved."""
    recipe, conf = recipe_copy(prepared_recipe, speech_corpus.data, tmp_path)
    r = train_on_two_nodes(recipe, conf, slurm_cluster_two_nodes)
    assert r.returncode == 0, r.stderr[-3000:]
    exp = recipe / "exp" / "asr_two_nodes"
    logs = [exp / "train.log", exp / "train.node1.log"]
    assert sorted(p.name for p in exp.glob("train*.log")) == ["train.log", "train.node1.log"]
    assert [log_status(p) for p in logs] == [0, 0]
    (node0, rank0, digest0), (node1, rank1, digest1) = [rank_lines(p) for p in logs]
    assert [node0, node1] == slurm_cluster_two_nodes.nodes  # two different Slurm nodes
    assert (rank0, rank1) == ("rank 0 of world size 2", "rank 1 of world size 2")
    assert digest0 == digest1 == saved_model_digest(recipe, exp)
    assert saved_model_digest(recipe, exp, "1epoch.pth") != digest0  # epoch 2 changed them
    # Rank 0 wrote the outputs where a single-node training puts them; rank 1 wrote none.
    assert (exp / "checkpoint.pth").is_file() and (exp / "valid.loss.ave.pth").exists()
    assert (exp / "latest.pth").resolve().name == f"{prepared_recipe[1]['max_epoch']}epoch.pth"
    assert (exp / ".done.train").exists() and not list(exp.glob(".dist_init_*"))


def test_failing_rank_fails_the_stage_naming_its_log(prepared_recipe, speech_corpus,
                                                     slurm_cluster_two_nodes, tmp_path):  # noqa: F811
    """An unreadable feature file of an utterance that only rank 1 reads: rank 1 fails on its
    first batch, srun ends rank 0, and the stage fails naming rank 1's log first."""
    from espnet2.samplers.build_batch_sampler import build_batch_sampler

    recipe, conf = recipe_copy(prepared_recipe, speech_corpus.data, tmp_path,
                               batch_type="unsorted")
    shape = next((recipe / "exp").glob("asr_stats_*/train/speech_shape"))
    batches = list(build_batch_sampler("unsorted", batch_size=4, batch_bins=0,
                                       shape_files=[str(shape)]))
    bad = batches[0][1::2][0]  # ESPnet gives rank r the items r, r + W, ... of each mini-batch
    scp = recipe / "dump" / "fbank" / "train" / "feats.scp"
    lines = scp.read_text().splitlines()
    scp.write_text("".join((f"{bad} /nonexistent/rank1.ark:8" if line.split()[0] == bad
                            else line) + "\n" for line in lines))
    r = train_on_two_nodes(recipe, conf, slurm_cluster_two_nodes)
    assert r.returncode != 0
    exp = "exp/asr_two_nodes"
    failures = re.findall(r"^slurm\.py: (node \d failed \(.*\); log: .*)$", r.stderr, re.M)
    assert failures[0] == f"node 1 failed (exit code 1); log: {exp}/train.node1.log", r.stderr
    assert f"slurm.py: first error in {exp}/train.node1.log:" in r.stderr
    assert "/nonexistent/rank1.ark" in r.stderr
    rank1 = (recipe / exp / "train.node1.log").read_text()
    assert "rank 1 of world size 2" in rank1 and "/nonexistent/rank1.ark" in rank1
    assert "/nonexistent/rank1.ark" not in (recipe / exp / "train.log").read_text()
    assert not (recipe / exp / ".done.train").exists()


@pytest.mark.parametrize("backend, args, message", [
    ("local", [], "--num_nodes 2: training over several nodes needs the Slurm backend "
                  "(cmd_backend=slurm, not 'local')"),
    ("slurm", ["--train_cpu_procs", "2"], "--num_nodes 2 trains on CPU with one process per node: "
                                          "drop --train_cpu_procs 2"),
], ids=["local_backend", "train_cpu_procs"])
def test_num_nodes_refused_where_it_cannot_work(tmp_path, backend, args, message):
    """Refused before any stage runs (no cluster needed)."""
    recipe = make_recipe(tmp_path / "asr1", {})
    r = subprocess.run(["./asr.sh", *TRAIN_ARGS, "--stage", "11", "--stop_stage", "11",
                        "--num_nodes", "2", *args], cwd=recipe, capture_output=True, text=True,
                       env=dict(os.environ, cmd_backend=backend), timeout=120)
    assert r.returncode == 2 and message in r.stderr, r.stderr
