"""Feature extraction: our ark/scp equals torchaudio's Kaldi fbank on the same real audio; pipes,
bad audio (error or counted skip) and resumable, atomic outputs."""
import re
import shutil
import subprocess

import kaldiio
import numpy as np
import pytest
import soundfile
import torch
import torchaudio.compliance.kaldi as kaldi

from espnet_ext.recipe.bin import compute_fbank
from espnet_ext.recipe.fbank import AudioError, extract_to_ark


def _extract(tmp_path, wav_scp, name="feats", **kw):
    out = tmp_path / "out"
    return extract_to_ark(str(wav_scp), str(out / f"{name}.ark"), str(out / f"{name}.scp"),
                          str(out / f"{name}.u2nf"), progress=False, **kw), out


def _reference_fbank(path):
    """The definition: Kaldi fbank of the 16-bit samples (Kaldi works in int16 units)."""
    samples, rate = soundfile.read(str(path), dtype="int16")
    wave = torch.from_numpy(samples.astype(np.float32))[None]
    return kaldi.fbank(wave, num_mel_bins=80, frame_length=25.0, frame_shift=10.0, dither=0.0,
                       energy_floor=0.0, sample_frequency=rate).numpy()


def test_fbank_matches_torchaudio_kaldi_on_real_speech(speech_corpus, tmp_path):
    wav_scp = speech_corpus.data["train"] / "wav.scp"
    rc = compute_fbank.main(["--wav_scp", str(wav_scp), "--ark", str(tmp_path / "f.ark"),
                             "--scp", str(tmp_path / "f.scp"),
                             "--utt2num_frames", str(tmp_path / "u2nf")])
    assert rc == 0
    feats = dict(kaldiio.load_scp_sequential(str(tmp_path / "f.scp")))
    frames = dict(line.split() for line in open(tmp_path / "u2nf"))
    utts = [line.split()[0] for line in open(wav_scp)]
    assert list(feats) == utts
    for utt in utts:
        wav = speech_corpus.utts[utt][0]
        ref = _reference_fbank(wav)
        assert feats[utt].dtype == np.float32 and feats[utt].shape == ref.shape
        assert np.array_equal(feats[utt], ref), utt
        n = soundfile.info(str(wav)).frames
        assert int(frames[utt]) == 1 + (n - 400) // 160  # 25 ms window, 10 ms shift, snip edges
    assert not list(tmp_path.glob("*.tmp"))


def test_pipe_entry_gives_the_same_features(speech_corpus, tmp_path):
    wav = speech_corpus.utts["spkA-10"][0]
    scp = tmp_path / "wav.scp"
    scp.write_text(f"file {wav}\npipe sox {wav} -t wav - |\n")
    _, out = _extract(tmp_path, scp)
    feats = dict(kaldiio.load_scp_sequential(str(out / "feats.scp")))
    assert np.array_equal(feats["file"], feats["pipe"])


def test_bad_audio_is_an_error_naming_the_utterance(speech_corpus, tmp_path):
    good = speech_corpus.utts["spkA-00"][0]
    scp = tmp_path / "wav.scp"
    scp.write_text(f"u1 {good}\nu2 {tmp_path}/missing.wav\n")
    with pytest.raises(AudioError, match=r"utterance 'u2' .*missing\.wav.*audio file not found"):
        _extract(tmp_path, scp)
    assert not (tmp_path / "out" / "feats.scp").exists()  # nothing half-written


@pytest.mark.parametrize("kind, message", [
    ("rate", "sample rate 8000 Hz; expected 16000 Hz"),
    ("stereo", "has 2 channels; expected mono"),
    ("short", "too short: 100 samples"),
    ("pipe", "command failed (code 3)"),
])
def test_bad_audio_kinds(speech_corpus, tmp_path, kind, message):
    good = speech_corpus.utts["spkA-00"][0]
    bad = tmp_path / "bad.wav"
    if kind == "rate":
        subprocess.run(["sox", str(good), "-r", "8000", str(bad)], check=True)
    elif kind == "stereo":
        subprocess.run(["sox", str(good), "-c", "2", str(bad)], check=True)
    elif kind == "short":
        soundfile.write(str(bad), np.zeros(100, dtype=np.int16), 16000)
    entry = "cat /dev/null; exit 3 |" if kind == "pipe" else str(bad)
    (tmp_path / "wav.scp").write_text(f"bad {entry}\n")
    with pytest.raises(AudioError, match=f"utterance 'bad'.*{re.escape(message)}"):
        _extract(tmp_path, tmp_path / "wav.scp")


def test_skip_bad_counts_and_lists_skipped_utterances(speech_corpus, tmp_path):
    good = speech_corpus.utts["spkA-00"][0]
    scp = tmp_path / "wav.scp"
    scp.write_text(f"u1 {good}\nu2 {tmp_path}/missing.wav\nu3 {good}\n")
    counts, out = _extract(tmp_path, scp, skip_bad=True)
    assert counts == {"done": 2, "skipped": 1, "reused": 0}
    assert [line.split()[0] for line in open(out / "feats.scp")] == ["u1", "u3"]
    assert (out / "feats.scp.skipped").read_text().startswith("u2 audio file not found")


def test_rerun_reuses_complete_output_and_redoes_changed_input(speech_corpus, tmp_path):
    src = speech_corpus.data["dev"] / "wav.scp"
    scp = tmp_path / "wav.scp"
    shutil.copy(src, scp)
    counts, out = _extract(tmp_path, scp)
    assert counts["done"] == 6  # the dev set's 6 utterances
    first = dict(kaldiio.load_scp_sequential(str(out / "feats.scp")))
    mtime = (out / "feats.ark").stat().st_mtime_ns
    counts, _ = _extract(tmp_path, scp)
    assert counts == {"done": 0, "skipped": 0, "reused": 6}
    assert (out / "feats.ark").stat().st_mtime_ns == mtime
    lines = open(src).readlines()[:3]
    scp.write_text("".join(lines))  # changed input: recomputed
    counts, _ = _extract(tmp_path, scp)
    assert counts["done"] == 3
    again = dict(kaldiio.load_scp_sequential(str(out / "feats.scp")))
    assert list(again) == [line.split()[0] for line in lines]  # exactly the new input's utterances
    for utt, feats in again.items():
        assert np.array_equal(feats, first[utt]), utt


@pytest.mark.parametrize("table, lines, message", [
    ("wav.scp", ["u1 {good}", "u2"], r"wav\.scp:2: id 'u2' has no value"),
    ("wav.scp", ["u1 {good}", "", "u2 {good}"], r"wav\.scp:2: empty line"),
    ("segments", ["s1 rec 0.0"], r"segments:1: expected '<utt> <recording> <start> <end>', got s1 rec 0.0"),
])
def test_malformed_tables_are_refused_naming_file_and_line(speech_corpus, tmp_path, table, lines,
                                                           message):
    good = speech_corpus.utts["spkA-00"][0]
    scp = tmp_path / "wav.scp"
    scp.write_text(f"rec {good}\n")
    path = tmp_path / table
    path.write_text("".join(line.format(good=good) + "\n" for line in lines))
    segments = str(path) if table == "segments" else None
    with pytest.raises(AudioError, match=message):
        _extract(tmp_path, scp, segments=segments)
    assert not (tmp_path / "out" / "feats.scp").exists()
