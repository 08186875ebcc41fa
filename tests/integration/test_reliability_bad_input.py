"""Every kind of bad input gets a clear answer: an error naming the utterance or file,
or, where the stage is configured to skip, a counted and logged skip. Real audio (espeak-ng,
festival, sox), real ESPnet training and decoding, real recipe stages.

Cases covered elsewhere (not repeated here; docs/reliability.md lists them all):
missing wav file (test_features, test_stages), a failing Slurm array task (test_slurm), sclite
fed an empty or incomplete hypothesis file (test_scoring), the teacher misalignment policy at
extraction and in the distiller (test_teacher, test_distill_losses, test_hkd_train), data-dir
validation details (test_datadir).
"""
import logging
import math
import os
import subprocess
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile
import torch
from reliability_helpers import CIF_CONF, tiny_cif_model
from test_stages import asr_sh, make_recipe

from espnet_ext.recipe.fbank import AudioError, extract_to_ark


def _extract(tmp_path, entries, **kw):
    scp = tmp_path / "wav.scp"
    scp.write_text("".join(f"{u} {e}\n" for u, e in entries))
    out = tmp_path / "out"
    counts = extract_to_ark(str(scp), str(out / "feats.ark"), str(out / "feats.scp"),
                            str(out / "u2nf"), progress=False, **kw)
    return counts, out


@pytest.fixture
def bad_audio(speech_corpus, tmp_path):
    """Real speech damaged in the ways corpora are: name -> (file, expected message)."""
    good = speech_corpus.utts["spkA-00"][0]
    raw = good.read_bytes()
    d = tmp_path / "bad"
    d.mkdir()
    (d / "truncated.wav").write_bytes(raw[: len(raw) // 2])
    (d / "header_only.wav").write_bytes(raw[:36])
    (d / "garbage.wav").write_bytes(np.random.default_rng(0).bytes(4000))
    (d / "zero_bytes.wav").write_bytes(b"")
    soundfile.write(str(d / "zero_samples.wav"), np.zeros(0, dtype=np.int16), 16000)
    declared = int.from_bytes(raw[40:44], "little")
    return good, {
        "truncated": (d / "truncated.wav", f"truncated: its WAV header declares {declared} bytes "
                                           f"of audio, the file holds {len(raw) // 2 - 44}"),
        "header_only": (d / "header_only.wav", "No 'data' chunk"),
        "garbage": (d / "garbage.wav", "Format not recognised"),
        "zero_bytes": (d / "zero_bytes.wav", "Format not recognised"),
        "zero_samples": (d / "zero_samples.wav", "too short: 0 samples, fewer than one 25 ms frame"),
    }


@pytest.mark.parametrize("kind", ["truncated", "header_only", "garbage", "zero_bytes",
                                  "zero_samples"])
def test_corrupt_truncated_and_empty_audio_is_an_error_naming_the_utterance(bad_audio, tmp_path,
                                                                              kind):
    good, bad = bad_audio
    path, message = bad[kind]
    with pytest.raises(AudioError) as e:
        _extract(tmp_path, [("u1", good), ("u2_bad", path), ("u3", good)])
    assert f"utterance 'u2_bad' ({path}): " in str(e.value) and message in str(e.value)
    assert f"[from {tmp_path / 'wav.scp'}]" in str(e.value)
    assert not (tmp_path / "out" / "feats.scp").exists()


def test_bad_audio_with_skip_is_counted_and_listed(bad_audio, tmp_path, caplog):
    good, bad = bad_audio
    entries = [("a_good", good)] + [(f"b_{k}", p) for k, (p, _) in sorted(bad.items())]
    with caplog.at_level(logging.WARNING, logger="fbank"):
        counts, out = _extract(tmp_path, entries, skip_bad=True)
    assert counts == {"done": 1, "skipped": 5, "reused": 0}
    assert [line.split()[0] for line in open(out / "feats.scp")] == ["a_good"]
    skipped = dict(line.split(" ", 1) for line in (out / "feats.scp.skipped").read_text().splitlines())
    assert sorted(skipped) == sorted(f"b_{k}" for k in bad)
    for k, (_, message) in bad.items():
        assert message in skipped[f"b_{k}"]
    assert f"skipped 5 of 6 utterances (listed in {out / 'feats.scp.skipped'})" in caplog.text


def test_streamed_wav_header_is_not_mistaken_for_truncation(tmp_path):
    """espeak-ng | sox writing to a pipe cannot fix up the RIFF sizes (the length is unknown);
    such files are complete and read as they are."""
    streamed, fixed = tmp_path / "streamed.wav", tmp_path / "fixed.wav"
    subprocess.run(["bash", "-c", "espeak-ng --stdout 'knowledge is power' | sox -t wav - -r 16000 "
                                  f"-t wav - | cat > {streamed}"], check=True)
    assert int.from_bytes(streamed.read_bytes()[40:44], "little") > 0x7FFF0000
    samples, rate = soundfile.read(str(streamed), dtype="int16")
    soundfile.write(str(fixed), samples, rate)
    _, out = _extract(tmp_path, [("fixed", fixed), ("streamed", streamed)])
    feats = dict(kaldiio.load_scp_sequential(str(out / "feats.scp")))
    assert np.array_equal(feats["fixed"], feats["streamed"]) and len(feats["fixed"]) > 50


def test_duplicate_ids_in_wav_scp_are_refused(speech_corpus, tmp_path):
    good = speech_corpus.utts["spkA-00"][0]
    with pytest.raises(AudioError, match=r"wav\.scp:3: duplicate id 'u1' \(first on line 1\)"):
        _extract(tmp_path, [("u1", good), ("u2", good), ("u1", good)])


# ------------------------------------------------------------------------------ data dirs
def _recipe_with_train_text(speech_corpus, tmp_path, lines):
    """A recipe whose local/data.sh delivers data/train/text with the given raw lines."""
    recipe = make_recipe(tmp_path / "asr1", speech_corpus.data)
    text = tmp_path / "train_text"
    text.write_bytes(b"".join(lines))
    with open(recipe / "local" / "data.sh", "a") as f:
        f.write(f"cp {text} data/train/text\n")
    return recipe


def test_duplicate_unsorted_and_empty_transcripts_are_dropped_with_counts(speech_corpus, tmp_path,
                                                                           caplog):
    lines = (speech_corpus.data["train"] / "text").read_bytes().splitlines(keepends=True)
    first_id = lines[0].split()[0].decode()
    empty_id = lines[3].split()[0].decode()
    lines[3] = lines[3].split()[0] + b"\n"                       # empty transcript
    lines = lines[::-1] + [first_id.encode() + b" another transcript\n"]  # unsorted, duplicate
    recipe = _recipe_with_train_text(speech_corpus, tmp_path, lines)
    r = asr_sh(recipe, "--stop_stage", "1")
    assert "fix_data_dir data/train: kept 19 of 20 utterances; dropped 1" in r.stderr
    assert f"1 duplicate id in text (first kept): '{first_id}'" in r.stderr
    assert f"1 empty value in text: '{empty_id}'" in r.stderr
    assert "data/train is valid (19 utterances)" in r.stderr
    ids = [line.split()[0] for line in (recipe / "data/train/text").read_text().splitlines()]
    assert ids == sorted(ids) and empty_id not in ids
    assert empty_id in (recipe / "data/train/.backup/dropped").read_text()
    # An external LM text with an empty sentence: left out, counted and named.
    from espnet_ext.recipe.datadir import prepare_lm_text

    lm_text = tmp_path / "lm_text"
    lm_text.write_text("s1 a sentence\ns2\ns3 another one\n")
    with caplog.at_level(logging.WARNING, logger="datadir"):
        assert prepare_lm_text([lm_text], tmp_path / "lm" / "train.txt") == (2, 0)
    assert "1 empty sentence(s) left out: 's2'" in caplog.text


def test_non_utf8_transcript_fails_the_stage_naming_file_line_and_utterance(speech_corpus,
                                                                             tmp_path, caplog):
    lines = (speech_corpus.data["train"] / "text").read_bytes().splitlines(keepends=True)
    bad_id = lines[2].split()[0].decode()
    lines[2] = lines[2].split()[0] + " 今天天气".encode("gb18030") + b"\n"
    recipe = _recipe_with_train_text(speech_corpus, tmp_path, lines)
    r = asr_sh(recipe, "--stop_stage", "1", check=False)
    assert r.returncode != 0
    assert (f"data/train/text:3: not UTF-8 (byte 0xbd at column {len(bad_id) + 2}) in the line "
            f"of '{bad_id}'; convert the file to UTF-8") in r.stderr
    from espnet_ext.bin import make_token_list

    assert make_token_list.main(["--token_type", "char", "--input",
                                 str(recipe / "data/train/text"),
                                 "--output_dir", str(tmp_path / "tok")]) == 1
    assert f"data/train/text:3: not UTF-8 (byte 0xbd at column {len(bad_id) + 2})" in caplog.text
    assert not (tmp_path / "tok" / "tokens.txt").exists()


# ------------------------------------------------------------------------------ tokens
def test_characters_outside_the_token_list_are_counted_as_unk(speech_corpus, tmp_path):
    """Stage 5 builds the list from the training text and counts, per set, what ESPnet's
    preprocessor will map to <unk> (here: accented letters and a digit only in the test set)."""
    from espnet2.text.char_tokenizer import CharTokenizer
    from espnet2.text.token_id_converter import TokenIDConverter

    recipe = make_recipe(tmp_path / "asr1", speech_corpus.data)
    asr_sh(recipe, "--stop_stage", "1")
    test_text = recipe / "data/test/text"
    lines = test_text.read_text().splitlines()
    changed = lines[0].split()[0]
    lines[0] = f"{changed} café olé 7"
    test_text.write_text("\n".join(lines) + "\n")
    r = asr_sh(recipe, "--stage", "5", "--stop_stage", "5")
    assert ("tokens WARNING: data/test/text: 3 of" in r.stderr and "in 1 utterance(s) are not "
            "in the token list and become <unk>: 'é' x2, '7' x1" in r.stderr)
    assert "data/train/text: all" in r.stderr and "data/dev/text: all" in r.stderr
    listdir = recipe / "data/token_list/char"
    report = (listdir / "unknown_tokens").read_text().splitlines()
    assert report == [f"data/test/text\t{changed}\té é 7"]
    # The count is exactly what ESPnet's converter turns into <unk> for that utterance.
    tokens = (listdir / "tokens.txt").read_text().split()
    ids = TokenIDConverter(tokens).tokens2ids(CharTokenizer().text2tokens(lines[0].split(" ", 1)[1]))
    mine = next(line for line in report if f"\t{changed}\t" in line).split("\t")[2].split()
    assert ids.count(tokens.index("<unk>")) == len(mine)


# ------------------------------------------------------------------------------ model
@pytest.fixture(scope="module")
def cif_model(tmp_path_factory):
    return tiny_cif_model(tmp_path_factory.getbasetemp() / "reliability_cif")


def test_audio_too_short_for_one_cif_fire(cif_model, tmp_path):
    """Decoding: an empty hypothesis, logged by name. Training: a finite loss and gradients."""
    from espnet2.tasks.asr import ASRTask

    from espnet_ext.bin import asr_inference

    exp, data = cif_model
    feats = dict(list(kaldiio.load_scp(str(data["valid_feats_scp"])).items())[:3])
    feats = {k: np.asarray(v) for k, v in feats.items()}
    feats["short"] = np.random.default_rng(0).standard_normal((7, 20)).astype(np.float32)
    with kaldiio.WriteHelper(f"ark,scp:{tmp_path / 'f.ark'},{tmp_path / 'f.scp'}") as w:
        for k in sorted(feats):
            w(k, feats[k])
    out = tmp_path / "decode"
    asr_inference.main(["--asr_train_config", str(exp / "config.yaml"), "--asr_model_file",
                        str(exp / "valid.acc.ave.pth"), "--data_path_and_name_and_type",
                        f"{tmp_path / 'f.scp'},speech,kaldi_ark", "--output_dir", str(out)])
    text = dict(line.split(" ", 1) for line in (out / "1best_recog/text").read_text().splitlines())
    assert text["short"] == "" and all(text[k] for k in text if k != "short")
    assert ("1 utterance(s) with fewer than two CIF fires (the last fire is <eos>; written as "
            "empty text): short"
            in (out / "decode.log").read_text())

    model, _ = ASRTask.build_model_from_file(exp / "config.yaml", exp / "valid.acc.ave.pth", "cpu")
    model.train()
    long = torch.tensor(feats[sorted(feats)[0]])
    speech = torch.zeros(2, len(long), 20)
    speech[0] = long
    speech[1, :7] = torch.tensor(feats["short"])
    loss, stats, _ = model(speech, torch.tensor([len(long), 7]), torch.tensor([[2, 3, 4], [5, 6, -1]]),
                           torch.tensor([3, 2]), utt_id=["long", "short"])
    loss.backward()
    assert math.isfinite(float(loss.detach())) and float(stats["nonfinite_loss"]) == 0
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


PLM_DIM = 16


def test_nonfinite_loss_batch_is_skipped_counted_and_named(tmp_path, caplog):
    """A batch whose teacher features hold inf (fp16 overflow) gives a NaN loss: ESPnet's trainer
    skips the update ("grad norm is nan") and leaves the loss out of the epoch average; our model
    names the utterances and reports the share as ``nonfinite_loss``. The parameters and buffers
    stay finite. One more utterance has teacher features of the wrong length (L rows for L+1
    targets): left out of distillation, counted (``distill_skipped``) and named."""
    from tiny_asr_data import asr_data_args, make_tiny_asr_data

    from espnet_ext.tasks.cif_asr import CIFASRTask

    data = make_tiny_asr_data(tmp_path / "data", n_utts=8, feat_dim=20, seed=3, plm_dim=PLM_DIM)
    scp = data["train_plm_scp"]
    plm = {k: np.array(v) for k, v in kaldiio.load_scp(str(scp)).items()}
    keys = sorted(plm)
    plm[keys[2]][1, 3] = np.inf
    plm[keys[5]] = plm[keys[5]][:-1]
    kaldiio.save_ark(str(scp.with_suffix(".ark")), plm, scp=str(scp))
    out = tmp_path / "exp"
    with caplog.at_level(logging.INFO):
        CIFASRTask.main(cmd=["--config", str(CIF_CONF), "--output_dir", str(out), "--max_epoch", "1",
                             "--distiller", "hkd", "--distiller_conf", f"teacher_dim={PLM_DIM}",
                             "--distiller_conf", "num_negatives=20"]
                        + asr_data_args(data, with_plm=True))
    skips = [r for r in caplog.records if "Skipping updating the model" in r.getMessage()]
    named = [r.getMessage() for r in caplog.records if "non-finite loss" in r.getMessage()]
    assert len(skips) == 1 and len(named) == 1, [r.getMessage() for r in skips] + named
    assert "in a training batch of 4 utterance(s)" in named[0]
    assert f"teacher features not finite for: {keys[2]}" in named[0]
    assert any(f"PLM teacher misaligned for utterance {keys[5]}: teacher has" in r.getMessage()
               for r in caplog.records)
    ckpt = torch.load(out / "checkpoint.pth", map_location="cpu", weights_only=False)
    train = ckpt["reporter"]["stats"][1]["train"]
    assert 0 < train["nonfinite_loss"] < 1 and train["distill_skipped"] > 0
    assert math.isfinite(train["loss"]) and math.isfinite(train["grad_norm"])
    for name, value in ckpt["model"].items():
        if value.is_floating_point():
            assert torch.isfinite(value).all(), name


def test_nonfinite_speech_features_are_refused_naming_the_utterance(cif_model):
    """NaN input would also poison the encoder's BatchNorm statistics, which ESPnet's skip of the
    update cannot undo: refused at once."""
    from espnet2.tasks.asr import ASRTask

    exp, _ = cif_model
    model, _ = ASRTask.build_model_from_file(exp / "config.yaml", exp / "valid.acc.ave.pth", "cpu")
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    speech = torch.randn(2, 100, 20)
    speech[1, 50, 3] = float("nan")
    with pytest.raises(ValueError, match=r"speech features of utterance\(s\) bad_utt contain NaN"):
        model(speech, torch.tensor([100, 100]), torch.tensor([[2, 3], [4, 5]]), torch.tensor([2, 2]),
              utt_id=["ok_utt", "bad_utt"])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_this_file_documents_every_case():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "reliability.md").read_text()
    tests = [n for n in globals() if n.startswith("test_") and n != "test_this_file_documents_every_case"]
    for name in tests:
        assert name in doc, name
    assert os.path.basename(__file__) in doc
