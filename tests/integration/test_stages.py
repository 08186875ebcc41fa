"""Recipe stage machinery: option parsing (utils/parse_options.sh), the shared pipeline's help,
stage selection, skip logic and per-stage time rows on real audio (egs/TEMPLATE/asr1/asr.sh
stages 1-5)."""
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from espnet_ext.recipe.runner import REPO_ROOT

TEMPLATE = REPO_ROOT / "egs" / "TEMPLATE" / "asr1"

SCRIPT = """#!/usr/bin/env bash
set -euo pipefail
stage=1          # first stage
stop_stage=100   # last stage
use_lm=true      # shallow fusion
lm_config=conf/lm.yaml
help_message="Usage: $0 [options] <dir>"
. {repo}/utils/parse_options.sh
echo "stage=$stage stop_stage=$stop_stage use_lm=$use_lm lm_config=$lm_config rest=$*"
"""


@pytest.fixture
def script(tmp_path):
    p = tmp_path / "run.sh"
    p.write_text(SCRIPT.format(repo=REPO_ROOT))
    p.chmod(0o755)
    return p


def sh(script, *args):
    return subprocess.run([str(script), *args], capture_output=True, text=True, timeout=30)


def test_options_override_defined_variables(script):
    r = sh(script, "--stage", "3", "--stop-stage=5", "--lm_config", "a b.yaml", "x", "--y")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "stage=3 stop_stage=5 use_lm=true lm_config=a b.yaml rest=x --y"
    r = sh(script, "--stage", "2", "--stage", "4", "--", "--stage")
    assert r.stdout.strip().startswith("stage=4 ") and r.stdout.strip().endswith("rest=--stage")


@pytest.mark.parametrize("args, message", [
    (["--bogus", "1"], "unknown option --bogus"),
    (["--use_lm", "yes"], "--use_lm expects true or false, got 'yes'"),
    (["--stage"], "option --stage needs a value"),
])
def test_option_errors(script, args, message):
    r = sh(script, *args)
    assert r.returncode == 1 and message in r.stderr and r.stdout == ""


def test_help_lists_options_with_values_and_comments(script):
    r = sh(script, "--stop_stage", "7", "--help")
    assert r.returncode == 0
    assert r.stdout.startswith("Usage: ")
    assert "--stage" in r.stdout and "'1'  # first stage" in r.stdout
    assert "--stop_stage                   '7'  # last stage" in r.stdout
    assert "help_message" not in r.stdout


FORWARD_SCRIPT = """#!/usr/bin/env bash
set -euo pipefail
fast=false       # recipe option
forward_opts=()
. {repo}/utils/parse_options.sh
printf '%s|' "fast=$fast" "${{forward_opts[@]}}"
"""


def test_forwarded_options_keep_their_order_and_values(tmp_path):
    """A recipe's run.sh takes its own options and hands every other one on, in order."""
    p = tmp_path / "run.sh"
    p.write_text(FORWARD_SCRIPT.format(repo=REPO_ROOT))
    p.chmod(0o755)
    r = sh(p, "--stage", "11", "--fast", "true", "--asr_args", "--max_epoch 1", "--use-lm=false")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "fast=true|--stage|11|--asr_args|--max_epoch 1|--use_lm|false|"
    r = sh(p, "--fast", "yes")  # its own options are still checked
    assert r.returncode == 1 and "--fast expects true or false" in r.stderr


def asr_sh_in_template(*args):
    return subprocess.run([str(TEMPLATE / "asr.sh"), *args], cwd=TEMPLATE, capture_output=True,
                          text=True, timeout=60)


STAGES = {1: "data preparation", 2: "speed perturbation", 3: "fbank features", 4: "length filter",
          5: "token list", 6: "LM statistics", 7: "LM training", 8: "LM perplexity",
          9: "PLM teacher features", 10: "ASR statistics", 11: "ASR training", 12: "internal LM",
          13: "ILM perplexities", 14: "decoding", 15: "sclite scoring", 16: "RESULTS.md"}


def test_asr_sh_help_lists_every_stage_and_option():
    r = asr_sh_in_template("--help")
    assert r.returncode == 0, r.stderr
    listed = dict(re.findall(r"^\s+(\d+)  (.+)$", r.stdout, re.M))
    assert sorted(int(k) for k in listed) == list(range(1, 17))  # no stage left out or reserved
    for n, name in STAGES.items():
        assert listed[str(n)].startswith(name), (n, listed[str(n)])
    # Every option declared in asr.sh is listed once, with its comment.
    head = (TEMPLATE / "asr.sh").read_text().split("help_message=")[0]
    declared = re.findall(r"^([a-z_][a-z0-9_]*)=[^(].*?# (.+)$", head, re.M)
    assert [n for n, _ in declared] == re.findall(r"^([a-z_][a-z0-9_]*)=", head, re.M)  # all commented
    assert len(declared) >= 80
    for name, comment in declared:
        lines = [line for line in r.stdout.splitlines() if line.strip().startswith(f"--{name} ")]
        assert len(lines) == 1 and comment.strip() in lines[0], (name, lines)
    for name in ("use_ilm", "distillers", "ilm_cross_text", "inference_without_lm", "plot_cif_fires"):
        assert f"--{name} " in r.stdout
    assert "replaced_options" not in r.stdout and "forward_opts" not in r.stdout


def test_asr_sh_unknown_replaced_and_missing_options():
    r = asr_sh_in_template("--nonsense", "1")
    assert r.returncode == 1 and "unknown option --nonsense" in r.stderr
    # Options of earlier versions name their replacement in one line.
    for old, new in (("variant", "--distillers"), ("ilm", "--use_ilm true"),
                     ("decode_without_lm", "--inference_without_lm true"),
                     ("dev_max_utts", "--ilm_tune_max_utts")):
        r = asr_sh_in_template(f"--{old}", "x")
        assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
        assert f"--{old} no longer exists: {new}" in r.stderr
    r = asr_sh_in_template("--train_set", "train", "--valid_set", "dev", "--stage", "17")
    assert r.returncode == 2 and "there is no stage 17" in r.stderr and "--use_ilm true --stage 12" in r.stderr


# ------------------------------------------------------------------ pipeline stages 1-5
def make_recipe(root: Path, corpus_data: dict, drop_text_of: str = None) -> Path:
    """A recipe directory made by the template's setup.sh, whose local/data.sh copies the
    synthesised corpus (optionally losing one transcript)."""
    subprocess.run([str(TEMPLATE / "setup.sh"), str(root)], check=True, capture_output=True)
    lines = ["#!/usr/bin/env bash", "set -euo pipefail", "mkdir -p data"]
    for name, d in corpus_data.items():
        lines.append(f"rm -rf data/{name}; cp -r {d} data/{name}")
    if drop_text_of:
        lines.append(f"sed -i '/^{drop_text_of} /d' data/train/text")
    (root / "local" / "data.sh").write_text("\n".join(lines) + "\n")
    (root / "local" / "data.sh").chmod(0o755)
    return root


ARGS = ["--train_set", "train", "--valid_set", "dev", "--test_sets", "test", "--nj", "2",
        "--min_frames", "10"]


def asr_sh(recipe: Path, *args, check=True):
    env = dict(os.environ, cmd_backend="local")
    r = subprocess.run(["./asr.sh", *ARGS, *args], cwd=recipe, capture_output=True, text=True,
                       env=env, timeout=300)
    if check:
        assert r.returncode == 0, r.stderr[-3000:]
    return r


def stage_rows(recipe: Path) -> list:
    lines = (recipe / "exp" / "stage_times.tsv").read_text().splitlines()
    assert lines[0].split("\t") == ["stage", "name", "tag", "wall_s", "cpu_s", "load_1_5_15", "date",
                                    "status"]
    return [dict(zip(lines[0].split("\t"), line.split("\t"))) for line in lines[1:]]


def latest_status(recipe: Path) -> dict:
    return {int(r["stage"]): r["status"] for r in stage_rows(recipe)}


def test_stages_run_once_then_skip_and_redo_only_what_is_missing(speech_corpus, tmp_path):
    recipe = make_recipe(tmp_path / "asr1", speech_corpus.data, drop_text_of="spkA-00")
    r = asr_sh(recipe, "--stop_stage", "5")
    # Stage 1: the utterance without transcript is dropped, and said so.
    assert "fix_data_dir data/train: kept 19 of 20 utterances; dropped 1" in r.stderr
    assert "1 not in text: 'spkA-00'" in r.stderr
    assert latest_status(recipe) == {1: "ran", 2: "skipped", 3: "ran", 4: "ran", 5: "ran"}
    rows = stage_rows(recipe)
    assert [r["stage"] for r in rows] == ["1", "2", "3", "4", "5"]
    assert rows[2]["tag"] == "train dev test" and rows[4]["tag"] == "char"  # stage 3: the sets it made
    for r in rows:
        assert int(r["wall_s"]) >= 0 and int(r["cpu_s"]) >= 0 and len(r["load_1_5_15"].split()) == 3
    # The feature stage's CPU time (user + sys of its jobs) is counted: 32 utterances of fbank
    # with Python start-ups cost well over a second of CPU; a skipped stage costs none.
    assert int(rows[2]["cpu_s"]) >= 1 and rows[1]["cpu_s"] == "0"
    feats = recipe / "dump" / "fbank"
    # speech fixture: 10/3/3 sentences x 2 speakers each; train lost spkA-00's transcript
    for name, n in (("train", 19), ("dev", 6), ("test", 6)):
        assert len((feats / name / "feats.scp").read_text().splitlines()) == n
        assert (feats / name / "feats_dim").read_text().strip() == "80"
    assert (recipe / "data" / "token_list" / "char" / "tokens.txt").read_text() \
        .startswith("<blank>\n<unk>\n")
    logs = feats / "log" / "train+dev+test"  # one log directory per feature run
    for i in (1, 2):  # one array job over all sets, logs with footers
        assert "# Ended (code 0)" in (logs / f"fbank.{i}.log").read_text()

    # Rerun: every stage skips, nothing is rewritten.
    arks = sorted(feats.glob("*/data/*.ark"))
    stamps = [p.stat().st_mtime_ns for p in arks]
    r = asr_sh(recipe, "--stop_stage", "5")
    assert latest_status(recipe) == {1: "skipped", 2: "skipped", 3: "skipped", 4: "skipped",
                                     5: "skipped"}
    assert len(stage_rows(recipe)) == 10  # appended, never rewritten
    assert "dump/fbank/train: features done" in r.stderr
    assert [p.stat().st_mtime_ns for p in arks] == stamps

    # The test set lost part 2 of its features (its done markers stay): the markers no longer
    # hold, so only that part is recomputed; part 1 is reused (its inputs did not change).
    ark2 = feats / "test" / "data" / "feats.2.ark"
    ref_bytes = ark2.read_bytes()
    ark1_stamp = (feats / "test" / "data" / "feats.1.ark").stat().st_mtime_ns
    ark2.unlink()
    r = asr_sh(recipe, "--stage", "3", "--stop_stage", "3")
    assert "dump/fbank/test/.done.fbank no longer holds: output dump/fbank/test/data/feats.2.ark " \
        "is missing; redoing" in r.stderr
    assert latest_status(recipe)[3] == "ran"
    assert ark2.read_bytes() == ref_bytes
    assert (feats / "test" / "data" / "feats.1.ark").stat().st_mtime_ns == ark1_stamp
    log1 = (feats / "log" / "test" / "fbank.1.log").read_text()
    assert "test/data/feats.1.scp: already complete" in log1
    assert "train" not in (feats / "log" / "test" / "fbank.1.list").read_text()  # only pending sets
    # The first run's logs and its stage-time row stay; this run has a row of its own.
    assert "# Ended (code 0)" in (logs / "fbank.1.log").read_text()
    assert "train/data/feats.1.scp" in (logs / "fbank.1.log").read_text()
    from espnet_ext.recipe.results import stage_times

    fbank_rows = {r["tag"]: r["status"] for r in stage_times(recipe / "exp" / "stage_times.tsv")
                  if r["stage"] == "3" and r["status"] == "ran"}
    assert fbank_rows == {"train dev test": "ran", "test": "ran"}


def _feats(recipe: Path, scp: str) -> dict:
    """The matrices of a feature scp (its ark paths are relative to the recipe)."""
    import kaldiio

    cwd = os.getcwd()
    os.chdir(recipe)
    try:
        return {k: v.copy() for k, v in kaldiio.load_scp(scp).items()}
    finally:
        os.chdir(cwd)


def test_feature_stage_notices_replaced_audio_and_a_truncated_ark(speech_corpus, tmp_path):
    """The feature stage's done markers vouch for their inputs and outputs: a recording replaced
    at the same path, or an ark cut short (a full disk), makes that part be computed again."""
    recipe = make_recipe(tmp_path / "asr1", speech_corpus.data)
    asr_sh(recipe, "--stop_stage", "1")
    # The test set reads copies of its recordings, which the test may then replace.
    audio = recipe / "audio"
    audio.mkdir()
    wav_scp = recipe / "data" / "test" / "wav.scp"
    entries = dict(line.split(maxsplit=1) for line in wav_scp.read_text().splitlines())
    for utt, path in entries.items():
        entries[utt] = str(audio / f"{utt}.wav")
        shutil.copy(path, entries[utt])
    wav_scp.write_text("".join(f"{u} {p}\n" for u, p in entries.items()))
    asr_sh(recipe, "--stage", "3", "--stop_stage", "3")
    feats = recipe / "dump" / "fbank"
    before = _feats(recipe, "dump/fbank/test/feats.scp")
    train_arks = sorted((feats / "train" / "data").glob("feats.*.ark"))
    train_bytes = [p.read_bytes() for p in train_arks]

    # The recording of one utterance is replaced by another one's: its features follow.
    target, donor = sorted(entries)[0], sorted(entries)[-1]
    shutil.copy(entries[donor], entries[target])
    r = asr_sh(recipe, "--stage", "3", "--stop_stage", "3")
    assert f"dump/fbank/test/.done.fbank no longer holds: audio file {entries[target]} changed" \
        in r.stderr, r.stderr[-3000:]
    assert "dump/fbank/train: features done" in r.stderr
    after = _feats(recipe, "dump/fbank/test/feats.scp")
    assert np.array_equal(after[target], before[donor])
    for utt in set(before) - {target}:
        assert np.array_equal(after[utt], before[utt]), utt
    assert [p.read_bytes() for p in train_arks] == train_bytes  # not recomputed

    # A training ark cut to half its size is noticed and computed again, identically.
    with open(train_arks[0], "r+b") as f:
        f.truncate(len(train_bytes[0]) // 2)
    r = asr_sh(recipe, "--stage", "3", "--stop_stage", "3")
    assert f"dump/fbank/train/.done.fbank no longer holds: output dump/fbank/train/data/" \
        f"{train_arks[0].name} changed size ({len(train_bytes[0])} -> {len(train_bytes[0]) // 2} " \
        f"bytes)" in r.stderr
    assert [p.read_bytes() for p in train_arks] == train_bytes

    # Sets named for later stages must have features; the message lists those that do.
    r = asr_sh(recipe, "--stage", "14", "--test_sets", "test nosuch", check=False)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "set 'nosuch' has no features (dump/fbank/nosuch/feats.scp): run stage 3 for it " \
        "(from data/nosuch); sets with features: dev test train" in r.stderr
    r = asr_sh(recipe, "--stage", "3", "--test_sets", "nosuch", check=False)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "set 'nosuch' has no data directory (data/nosuch/wav.scp)" in r.stderr


@pytest.mark.parametrize("args, message", [
    (["--stage", "abc"], "--stage 'abc' is not a stage number: the stages are 1-16"),
    (["--stop_stage", "1x"], "--stop_stage '1x' is not a stage number: the stages are 1-16"),
    (["--stage", "99"], "there is no stage 99: the stages are 1-16"),
    (["--stage", "0"], "there is no stage 0: the stages are 1-16"),
    (["--stage", "15", "--stop_stage", "14"], "--stop_stage 14 comes before --stage 15: no stage would run"),
])
def test_wrong_stage_options_exit_nonzero_with_one_line(tmp_path, args, message):
    recipe = make_recipe(tmp_path / "asr1", {})
    r = asr_sh(recipe, *args, check=False)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and message in r.stderr, r.stderr
    assert not (recipe / "exp").exists() and not (recipe / "data").exists()  # nothing ran


def test_stage_failure_names_the_failed_job_log(speech_corpus, tmp_path):
    recipe = make_recipe(tmp_path / "asr1", speech_corpus.data)
    asr_sh(recipe, "--stop_stage", "1")
    wav = recipe / "data" / "test" / "wav.scp"
    lines = wav.read_text().splitlines()
    lines[-1] = lines[-1].split()[0] + " /nonexistent/audio.wav"
    wav.write_text("\n".join(lines) + "\n")
    r = asr_sh(recipe, "--stage", "3", "--stop_stage", "3", check=False)
    assert r.returncode != 0
    assert "dump/fbank/log/train+dev+test/fbank.2.log" in r.stderr
    log = (recipe / "dump" / "fbank" / "log" / "train+dev+test" / "fbank.2.log").read_text()
    assert f"utterance '{lines[-1].split()[0]}' (/nonexistent/audio.wav)" in log
    assert not (recipe / "dump" / "fbank" / "test" / ".done.fbank").exists()
    # With skip_bad_audio the utterance is dropped, counted, and the stage completes.
    r = asr_sh(recipe, "--stage", "3", "--stop_stage", "3", "--skip_bad_audio", "true")
    assert "kept 5 of 6 utterances; dropped 1" in r.stderr
    assert len((recipe / "dump/fbank/test/feats.scp").read_text().splitlines()) == 5
