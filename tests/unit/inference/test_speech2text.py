"""The transcription API on a tiny CIF model trained on the recipe's fbank of real audio
(tests/tiny_audio_asr.py): the known transcripts from waveforms at any rate and channel count,
the same 1-best as the recipe's decoding, batches equal to single inputs, consistent token and
word times, long inputs cut and joined, LM / internal-LM options.

Expected values are the transcripts of the synthesised audio, the recipe's own outputs (features,
``asr_inference`` hypotheses) and hand calculations, never what this API printed.
"""
import logging
import math
import os

import kaldiio
import numpy as np
import pytest
import soundfile
import torch
from tiny_audio_asr import tiny_audio_cif_model, tiny_audio_las, tiny_audio_lm

from espnet_ext.asr.timestamps import fire_times, word_spans
from espnet_ext.inference import Speech2Text, Transcription
from espnet_ext.inference.speech2text import find_model_files

BEAM = 4


@pytest.fixture(scope="session")
def audio_model(tmp_path_factory):
    return tiny_audio_cif_model(tmp_path_factory.getbasetemp() / "audio_cif")


@pytest.fixture(scope="session")
def s2t(audio_model):
    return Speech2Text(asr_train_config=audio_model.exp / "config.yaml",
                       asr_model_file=audio_model.model_file, beam_size=BEAM)


@pytest.fixture(scope="session")
def waves(audio_model):
    """utt -> (float32 samples in [-1, 1], rate), as soundfile reads them."""
    return {u: soundfile.read(str(p), dtype="float32") for u, p in audio_model.wavs.items()}


def _tokens(text):
    return ["<space>" if ch == " " else ch for ch in text]


def test_waveforms_give_the_transcripts(s2t, audio_model, waves):
    """Precondition of the rest: the model fits its training audio."""
    for utt, (wave, rate) in waves.items():
        result = s2t(wave, fs=rate)
        assert isinstance(result, Transcription)
        assert result.text == audio_model.texts[utt], utt
        assert result.tokens == _tokens(audio_model.texts[utt])


def test_features_give_the_same_1best_as_asr_inference(s2t, audio_model, tmp_path):
    from espnet_ext.bin import asr_inference

    asr_inference.main(["--asr_train_config", str(audio_model.exp / "config.yaml"),
                        "--asr_model_file", str(audio_model.model_file), "--beam_size", str(BEAM),
                        "--data_path_and_name_and_type", f"{audio_model.feats_scp},speech,kaldi_ark",
                        "--output_dir", str(tmp_path)])
    recog = {name: dict(line.split(" ", 1) for line in (tmp_path / "1best_recog" / name).read_text().splitlines())
             for name in ("text", "token_int", "score")}
    feats = kaldiio.load_scp(str(audio_model.feats_scp))
    utts = sorted(feats)
    results = s2t([feats[u] for u in utts], features=True)
    for utt, result in zip(utts, results):
        assert result.text == recog["text"][utt] == audio_model.texts[utt]
        assert result.token_ids == [int(t) for t in recog["token_int"][utt].split()]
        assert result.score == pytest.approx(float(recog["score"][utt]), abs=1e-4)


def test_waveform_input_is_the_recipes_fbank(s2t, audio_model, waves):
    """Float samples (soundfile's [-1, 1]), 16-bit integers and a torch tensor all give the
    recipe's feature bytes (feats.scp written by extract_to_ark)."""
    feats = kaldiio.load_scp(str(audio_model.feats_scp))
    utt = sorted(waves)[0]
    wave, rate = waves[utt]
    ints, _ = soundfile.read(str(audio_model.wavs[utt]), dtype="int16")
    for x in (wave, ints, torch.from_numpy(wave)):
        assert np.array_equal(s2t.model_input(x, fs=rate), feats[utt])
    assert s2t(ints, fs=rate) == s2t(feats[utt], features=True)


def _low_bins(num_bins=80, fs=16000, below_hz=3500.0):
    """Mel bins (Kaldi: 20 Hz to Nyquist) whose upper edge is below ``below_hz``."""
    def mel(f):
        return 1127.0 * np.log(1.0 + f / 700.0)

    edges = np.linspace(mel(20.0), mel(fs / 2), num_bins + 2)
    return np.flatnonzero(edges[2:] < mel(below_hz))


@pytest.mark.parametrize("rate", [8000, 44100])
def test_other_sample_rates_are_resampled(s2t, audio_model, waves, rate):
    """The same audio at 8 or 44.1 kHz (scipy's polyphase resampler, independent of the API's
    torchaudio) gives features close to the 16 kHz ones; at 44.1 kHz also the transcript (8 kHz
    audio lacks the 4-8 kHz band the model was trained with: its noise "space" is no longer
    recognised reliably)."""
    from fractions import Fraction

    from scipy.signal import resample_poly

    for utt in sorted(waves)[:3]:
        wave, fs = waves[utt]
        ratio = Fraction(rate, fs)
        other = resample_poly(wave.astype(np.float64), ratio.numerator, ratio.denominator).astype(np.float32)
        ref, got = s2t.model_input(wave, fs=fs), s2t.model_input(other, fs=rate)
        n = min(len(ref), len(got))
        assert abs(len(ref) - len(got)) <= 1
        # 8 kHz holds nothing above 4 kHz: compare the bins below 3.5 kHz there.
        bins = _low_bins() if rate < fs else slice(None)
        loud = ref[:n, bins].mean(1) > ref[:n, bins].mean()  # tones and noise, not near-silence
        assert np.median(np.abs(ref[:n, bins][loud] - got[:n, bins][loud])) < 0.1
        if rate > fs:
            assert s2t(other, fs=rate).text == audio_model.texts[utt]


def test_stereo_and_lists(s2t, waves):
    """A duplicated channel equals mono; a list is decoded as a batch equal to one by one."""
    utts = sorted(waves)
    singles = [s2t(waves[u][0]) for u in utts]
    wave = waves[utts[0]][0]
    assert s2t(np.stack([wave, wave], axis=1)) == singles[0]
    assert s2t(torch.from_numpy(np.stack([wave, wave], axis=1))) == singles[0]
    ints = (wave * 32768).astype(np.int16)  # soundfile's float of 16-bit PCM, back to integers
    assert s2t(np.stack([ints, ints], axis=1)) == singles[0]
    batch = s2t([waves[u][0] for u in utts])
    assert [r.tokens for r in batch] == [r.tokens for r in singles]
    assert [r.token_times for r in batch] == [r.token_times for r in singles]
    assert [r.words for r in batch] == [r.words for r in singles]
    assert [r.score for r in batch] == pytest.approx([r.score for r in singles], abs=1e-4)


def test_token_and_word_times(s2t, audio_model, waves):
    for utt, (wave, rate) in waves.items():
        result = s2t(wave, fs=rate)
        duration = len(wave) / rate
        times = result.token_times
        assert len(times) == len(result.tokens)
        assert all(0.0 <= s <= e <= duration for s, e in times), times
        assert all(prev[1] == nxt[0] for prev, nxt in zip(times, times[1:])), times  # contiguous
        assert all(e > s for s, e in times), times  # one fire per frame here: no zero length
        words = audio_model.texts[utt].split()
        assert [w for w, _, _ in result.words] == words
        assert all(s < e for _, s, e in result.words)
        # A word spans its letters: from the first letter's start to the last one's end.
        first, last = times[0], times[len(words[0]) - 1]
        assert result.words[0][1:] == (first[0], last[1])


def test_fire_times_by_hand():
    # 80 ms encoder frames; weight from frame 1; fires at frames 2, 5, 5 (two in one frame), 9.
    assert fire_times([2, 5, 5, 9], first_frame=1, shift=0.08) == [
        (0.08, 0.24), (0.24, 0.48), (0.48, 0.48), (0.48, 0.8)]
    # A segment starting 10 s into its recording, 0.7 s long: shifted, the last end capped.
    assert fire_times([2, 9], first_frame=0, shift=0.08, offset=10.0, limit=0.7) == [
        (10.0, 10.24), (10.24, 10.7)]
    assert fire_times([], first_frame=3, shift=0.08) == []


def test_word_spans_by_hand():
    t = [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]
    assert word_spans(["\u2581he", "llo", "\u2581wor", "ld", "!"], t, "bpe") == [
        ("hello", 0, 2), ("world!", 2, 5)]
    assert word_spans(["\u2581", "a", "\u2581b", "c", "\u2581d"], t, "bpe") == [
        ("a", 0, 2), ("bc", 2, 4), ("d", 4, 5)]
    assert word_spans(["play", "##ing", "it", "##s", "x"], t, "hugging_face") == [
        ("playing", 0, 2), ("its", 2, 4), ("x", 4, 5)]
    assert word_spans(["a", "b", "<space>", "c", "d"], t, "char") == [("ab", 0, 2), ("cd", 3, 5)]
    assert word_spans(["今", "天", "天", "气", "好"], t, "char", space_symbol=None) == [
        ("今", 0, 1), ("天", 1, 2), ("天", 2, 3), ("气", 3, 4), ("好", 4, 5)]
    with pytest.raises(ValueError):
        word_spans(["a"], t, "char")


def test_long_input_is_cut_and_joined_in_recording_time(audio_model, waves, caplog):
    """An utterance twice in a row, with a segment limit just above one utterance: cut between
    the copies (in the quiet edges), both decoded, times of the second copy one utterance later."""
    utt = sorted(waves)[0]
    wave, rate = waves[utt]
    duration = len(wave) / rate
    s2t = Speech2Text(asr_train_config=audio_model.exp / "config.yaml", asr_model_file=audio_model.model_file,
                      beam_size=BEAM, max_segment_seconds=round(duration + 0.1, 2))
    with caplog.at_level(logging.INFO, logger="espnet_ext.asr_inference"):
        result = s2t(np.concatenate([wave, wave]), fs=rate)
    assert "decoding 2 segments" in caplog.text
    tokens = _tokens(audio_model.texts[utt])
    assert result.tokens == tokens + tokens
    first, second = result.token_times[:len(tokens)], result.token_times[len(tokens):]
    assert all(0 <= s <= e <= 2 * duration for s, e in result.token_times)
    # The same audio one utterance later: ends within an encoder frame plus the cut's slack.
    assert [e2 - e1 for (_, e1), (_, e2) in zip(first, second)] == pytest.approx(
        [duration] * len(tokens), abs=0.25)


def test_model_dir_and_checks(audio_model, s2t, tmp_path):
    exp = audio_model.exp
    assert find_model_files(exp) == (exp / "config.yaml", exp / "valid.acc.ave.pth")
    # Without valid.acc.ave.pth: the newest parameter file, never the trainer's checkpoint.pth.
    d = tmp_path / "exp"
    d.mkdir()
    for i, name in enumerate(["config.yaml", "1epoch.pth", "5epoch.pth", "checkpoint.pth"]):
        (d / name).write_text("x")
        t = 1_000_000 + i
        os.utime(d / name, (t, t))
    assert find_model_files(d) == (d / "config.yaml", d / "5epoch.pth")
    (d / "config.yaml").unlink()
    with pytest.raises(FileNotFoundError, match="config.yaml"):
        find_model_files(d)
    with pytest.raises(ValueError, match="80-dim features.*num_mel_bins is 40"):
        Speech2Text(model_dir=exp, num_mel_bins=40)
    with pytest.raises(ValueError, match="ilm_type"):
        Speech2Text(model_dir=exp, ilm_type="ilme")
    with pytest.raises(ValueError, match=r"features must be \(frames, 80\)"):
        s2t(np.zeros((50, 40), dtype=np.float32), features=True)
    with pytest.raises(ValueError, match="too short"):
        s2t(np.zeros(100, dtype=np.float32))


def test_lm_and_internal_lm_options(audio_model, s2t, waves, tmp_path_factory):
    lm = tiny_audio_lm(tmp_path_factory.getbasetemp() / "audio_cif")
    common = dict(asr_train_config=audio_model.exp / "config.yaml", asr_model_file=audio_model.model_file,
                  beam_size=BEAM)
    lm_files = dict(lm_train_config=lm / "config.yaml", lm_file=lm / "valid.loss.ave.pth")
    utts = sorted(waves)
    inputs = [waves[u][0] for u in utts]
    plain = s2t(inputs)
    assert Speech2Text(**common, **lm_files, lm_weight=0.0)(inputs) == plain
    fused = Speech2Text(**common, **lm_files, lm_weight=0.3)
    assert fused.decoder.beam_search.weights["lm"] == 0.3
    # ILME-Z needs only the ASR model: its decoder with a zero context.
    ilme = Speech2Text(**common, **lm_files, lm_weight=0.2, ilm_type="zero", ilm_weight=0.1)
    assert ilme.decoder.beam_search.weights["ilm"] == -0.1
    for s in (fused, ilme):
        results = s(inputs)
        assert [r.text for r in results] == [audio_model.texts[u] for u in utts]
        assert all(len(r.token_times) == len(r.tokens) and math.isfinite(r.score) for r in results)
    assert all(r_f.score != r_p.score for r_f, r_p in zip(fused(inputs), plain))  # the LM scored



def test_fusion_weights_change_without_reloading(audio_model, s2t, waves, tmp_path_factory):
    """set_fusion_weights on a model loaded with LM and ILME-Z: weights 0 decode as the model
    without them (the plain ``s2t``), other weights as a model built with those weights."""
    lm = tiny_audio_lm(tmp_path_factory.getbasetemp() / "audio_cif")
    common = dict(asr_train_config=audio_model.exp / "config.yaml", asr_model_file=audio_model.model_file,
                  beam_size=BEAM, lm_train_config=lm / "config.yaml", lm_file=lm / "valid.loss.ave.pth")
    inputs = [waves[u][0] for u in sorted(waves)]
    fused = Speech2Text(**common, lm_weight=0.5, ilm_type="zero", ilm_weight=0.3)
    want_fused = fused(inputs)
    assert [r.score for r in want_fused] != [r.score for r in s2t(inputs)]  # the weights count
    fused.set_fusion_weights(lm_weight=0.0, ilm_weight=0.0)
    assert fused.decoder.beam_search.weights == {"decoder": 1.0}
    assert fused(inputs) == s2t(inputs)
    fused.set_fusion_weights(lm_weight=0.2)  # the ILM weight stays 0
    assert fused(inputs) == Speech2Text(**common, lm_weight=0.2)(inputs)
    fused.set_fusion_weights(lm_weight=0.5, ilm_weight=0.3)
    assert fused(inputs) == want_fused
    assert fused.args.lm_weight == 0.5 and fused.args.ilm_weight == 0.3
    with pytest.raises(ValueError, match="no lm scorer is loaded"):
        s2t.set_fusion_weights(lm_weight=0.1)  # built without an LM


def test_attention_model_has_no_times(waves, tmp_path_factory):
    """A stock ESPnet attention model decodes through the same API, without timestamps."""
    las = tiny_audio_las(tmp_path_factory.getbasetemp() / "audio_cif")
    s2t = Speech2Text(model_dir=las, beam_size=2)
    assert s2t.encoder_shift is None
    result = s2t(waves[sorted(waves)[0]][0])
    assert result.token_times is None and result.words is None
    assert isinstance(result.text, str) and len(result.tokens) == len(result.token_ids)
