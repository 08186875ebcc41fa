"""The transcription command line on the tiny CIF model trained on real audio
(tests/tiny_audio_asr.py): text, CTM and JSON outputs parse and agree with the API and the
transcripts; a bad input fails naming it (exit 1), or with --skip_bad is warned, counted, listed."""
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
from reliability_helpers import ENV, REPO
from tiny_audio_asr import tiny_audio_cif_model

from espnet_ext.bin.transcribe import main
from espnet_ext.inference import Speech2Text


@pytest.fixture(scope="session")
def cli_setup(tmp_path_factory):
    """The model, three inputs (a wav, a stereo FLAC copy of another, a wav.scp entry) and the
    API's results for them."""
    model = tiny_audio_cif_model(tmp_path_factory.getbasetemp() / "audio_cif")
    root = tmp_path_factory.mktemp("transcribe")
    utts = sorted(model.wavs)[:3]
    wave, rate = soundfile.read(str(model.wavs[utts[1]]), dtype="int16")
    flac = root / f"{utts[1]}.flac"
    soundfile.write(str(flac), np.stack([wave, wave], axis=1), rate)  # stereo FLAC
    inputs = {str(model.wavs[utts[0]]): utts[0], str(flac): utts[1]}
    wav_scp = root / "wav.scp"
    wav_scp.write_text(f"{utts[2]} {model.wavs[utts[2]]}\n")
    s2t = Speech2Text(asr_train_config=model.exp / "config.yaml", asr_model_file=model.model_file, beam_size=4)
    api = {path: s2t(soundfile.read(path, dtype="float32")[0]) for path in inputs}
    api[utts[2]] = s2t(soundfile.read(str(model.wavs[utts[2]]), dtype="float32")[0])
    model_args = ["--asr_train_config", str(model.exp / "config.yaml"), "--asr_model_file",
                  str(model.model_file), "--beam_size", "4"]
    ids = list(inputs) + [utts[2]]
    texts = {uid: model.texts[inputs.get(uid, uid)] for uid in ids}
    return dict(root=root, args=model_args + list(inputs) + ["--wav_scp", str(wav_scp)], ids=ids,
                texts=texts, api=api, model=model)


def _run(setup, output, *extra):
    out = setup["root"] / f"out.{output}"
    summary = main(setup["args"] + ["--output", output, "--output_file", str(out), *extra])
    return summary, out.read_text(encoding="utf-8").splitlines()


def test_text_output(cli_setup):
    summary, lines = _run(cli_setup, "text")
    assert summary == {"decoded": 3, "skipped": []}
    got = [line.split(" ", 1) for line in lines]
    assert [uid for uid, _ in got] == cli_setup["ids"]  # input order: files, then wav.scp
    assert {uid: text for uid, text in got} == cli_setup["texts"]
    assert {uid: text for uid, text in got} == {uid: r.text for uid, r in cli_setup["api"].items()}


def test_ctm_output(cli_setup):
    _, lines = _run(cli_setup, "ctm")
    words = {}
    for line in lines:
        uid, channel, start, dur, word, conf = line.split(" ")
        assert channel == "1" and conf == "1.00"
        assert len(start.split(".")[1]) == 2 and len(dur.split(".")[1]) == 2  # seconds, 2 decimals
        assert float(dur) >= 0
        words.setdefault(uid, []).append((word, float(start), float(dur)))
    assert {uid: [w for w, _, _ in ws] for uid, ws in words.items()} == {
        uid: text.split() for uid, text in cli_setup["texts"].items()}
    for uid, ws in words.items():
        api = cli_setup["api"][uid].words
        assert [x for _, s, d in ws for x in (s, d)] == pytest.approx(
            [x for _, s, e in api for x in (s, e - s)], abs=0.0051)


def test_json_output(cli_setup):
    _, lines = _run(cli_setup, "json")
    records = [json.loads(line) for line in lines]
    assert [r["id"] for r in records] == cli_setup["ids"]
    for r in records:
        api = cli_setup["api"][r["id"]]
        assert r["text"] == cli_setup["texts"][r["id"]] == api.text
        assert r["tokens"] == api.tokens
        assert [tuple(t) for t in r["token_times"]] == api.token_times
        assert [(w["word"], w["start"], w["end"]) for w in r["words"]] == api.words
        assert r["score"] == pytest.approx(api.score)


@pytest.fixture(scope="session")
def bad_inputs(cli_setup):
    root = cli_setup["root"]
    bad = root / "bad.wav"
    bad.write_text("not audio\n")
    short = root / "short.wav"
    soundfile.write(str(short), np.zeros(100, dtype=np.int16), 16000)  # shorter than a frame
    return bad, short


def test_bad_file_fails_naming_it(cli_setup, bad_inputs):
    bad, _ = bad_inputs
    good = cli_setup["ids"][0]
    out = cli_setup["root"] / "failed.txt"
    with pytest.raises(SystemExit) as e:
        main(cli_setup["args"][:6] + [good, str(bad), "--output_file", str(out)])
    assert str(bad) in str(e.value.code) and "--skip_bad" in str(e.value.code)
    assert not out.exists()  # no partial output
    # The real exit status of the command line.
    proc = subprocess.run([sys.executable, "-m", "espnet_ext.bin.transcribe", *cli_setup["args"][:6],
                           str(bad)], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and str(bad) in proc.stderr
    assert proc.stdout == ""  # library prints go to stderr: stdout holds transcripts only


def test_skip_bad_counts_and_lists(cli_setup, bad_inputs, caplog):
    bad, short = bad_inputs
    with caplog.at_level(logging.WARNING, logger="espnet_ext.transcribe"):
        summary, lines = _run(cli_setup, "text", str(bad), str(short), "--skip_bad")
    assert summary["decoded"] == 3 and [uid for uid, _ in summary["skipped"]] == [str(bad), str(short)]
    assert [line.split(" ", 1)[0] for line in lines] == cli_setup["ids"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum(m.startswith("skipping ") for m in warnings) == 2
    assert f"skipped 2 of 5 files: {bad}, {short}" in warnings


ALSA_SOUNDS = "/usr/share/sounds/alsa"  # Debian's alsa-utils: a person saying "Front Center", ...


def test_real_recordings_at_16_and_44_1_khz(cli_setup, tmp_path):
    """Recorded speech (not synthesised), as 16 kHz and 44.1 kHz WAV and 44.1 kHz stereo FLAC
    (sox from the 48 kHz originals): every file gets a line, and the CTM's words lie inside their
    recordings. The model was trained on tones: the words themselves are not checked."""
    import shutil

    names = ["Front_Center", "Front_Left", "Rear_Right"]
    if shutil.which("sox") is None or not all((Path(ALSA_SOUNDS) / f"{n}.wav").is_file() for n in names):
        pytest.skip("sox and alsa-utils' recordings are needed (tools/setup.sh installs them)")
    files = []
    for n in names:
        src = f"{ALSA_SOUNDS}/{n}.wav"
        for rate, suffix, channels in ((16000, "wav", 1), (44100, "wav", 1), (44100, "flac", 2)):
            out = tmp_path / f"{n}_{rate}_{channels}ch.{suffix}"
            subprocess.run(["sox", src, "-r", str(rate), "-c", str(channels), str(out)], check=True)
            files.append(str(out))
    ctm = tmp_path / "real.ctm"
    summary = main(cli_setup["args"][:6] + files + ["--output", "ctm", "--output_file", str(ctm)])
    assert summary == {"decoded": len(files), "skipped": []}
    durations = {f: soundfile.info(f).duration for f in files}
    for line in ctm.read_text(encoding="utf-8").splitlines():
        uid, channel, start, dur, word, conf = line.split()
        assert uid in durations and channel == "1" and float(conf) <= 1.0
        assert 0 <= float(start) and float(start) + float(dur) <= durations[uid] + 0.08  # one encoder frame
    text = tmp_path / "real.txt"
    main(cli_setup["args"][:6] + files + ["--output", "text", "--output_file", str(text)])
    assert [line.split(" ", 1)[0] for line in text.read_text(encoding="utf-8").splitlines()] == files
