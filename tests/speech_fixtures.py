"""Real synthesised speech for the recipe-machinery tests (espeak-ng and festival, 16 kHz mono).

``speech_corpus`` (session fixture, imported by conftest.py) synthesises a handful of utterances
once per test session and lays them out as Kaldi data directories ``train``/``dev``/``test``.
One ``dev`` entry is a ``sox ... |`` pipe, so both wav.scp forms are exercised.
"""
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "a stitch in time saves nine",
    "all that glitters is not gold",
    "the early bird catches the worm",
    "better late than never",
    "actions speak louder than words",
    "knowledge is power",
    "time flies like an arrow",
    "every cloud has a silver lining",
    "practice makes perfect",
    "where there is smoke there is fire",
    "the pen is mightier than the sword",
    "fortune favours the bold",
    "honesty is the best policy",
    "rome was not built in a day",
    "two heads are better than one",
]
# speaker id -> espeak-ng voice (None: festival kal diphone voice)
SPEAKERS = {"spkA": "en-us", "spkB": "en-gb+m3", "spkC": "en-us+f3", "spkD": None}
SETS = {"train": range(0, 10), "dev": range(10, 13), "test": range(13, 16)}


@dataclass
class SpeechCorpus:
    root: Path
    wav_dir: Path
    data: Dict[str, Path]  # set name -> data directory
    utts: Dict[str, Tuple[Path, str]]  # utt id -> (wav path, transcript)


def have_tts() -> bool:
    return all(shutil.which(b) for b in ("espeak-ng", "sox", "festival"))


def _espeak(text: str, voice: str, out: Path, rate: int, pitch: int) -> None:
    cmd = (f"espeak-ng -v {voice} -s {rate} -p {pitch} --stdout \"{text}\" "
           f"| sox -G -t wav - -r 16000 -c 1 -b 16 {out}")
    subprocess.run(["bash", "-c", "set -o pipefail; " + cmd], check=True)


def _festival(items: List[Tuple[str, Path]], workdir: Path) -> None:
    """All festival utterances in one process (start-up dominates otherwise)."""
    scm = workdir / "batch.scm"
    lines = ["(voice_kal_diphone)"]
    for text, out in items:
        lines.append(f'(utt.save.wave (utt.wave.resample (SynthText "{text}") 16000) '
                     f'"{out}" \'riff)')
    scm.write_text("\n".join(lines) + "\n")
    subprocess.run(["festival", "-b", str(scm)], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def synthesize(root: Path) -> SpeechCorpus:
    wav_dir = root / "wav"
    wav_dir.mkdir(parents=True, exist_ok=True)
    utts: Dict[str, Tuple[Path, str]] = {}
    fest: List[Tuple[str, Path]] = []
    for k, (spk, voice) in enumerate(SPEAKERS.items()):
        for i, text in enumerate(SENTENCES):
            # Speakers A and C read the even sentences, B and D the odd ones.
            if (i + k) % 2:
                continue
            utt = f"{spk}-{i:02d}"
            wav = wav_dir / f"{utt}.wav"
            utts[utt] = (wav, text)
            if voice is None:
                fest.append((text, wav))
            else:
                _espeak(text, voice, wav, rate=150 + 10 * k, pitch=40 + 5 * k)
    if fest:
        _festival(fest, root)
    data = {}
    for name, idx in SETS.items():
        d = root / "data" / name
        d.mkdir(parents=True, exist_ok=True)
        ids = sorted(u for u in utts if int(u.split("-")[1]) in idx)
        wav_lines = []
        for j, u in enumerate(ids):
            wav = utts[u][0]
            if name == "dev" and j == 0:
                wav_lines.append(f"{u} sox {wav} -t wav - |")
            else:
                wav_lines.append(f"{u} {wav}")
        (d / "wav.scp").write_text("".join(x + "\n" for x in wav_lines))
        (d / "text").write_text("".join(f"{u} {utts[u][1]}\n" for u in ids))
        (d / "utt2spk").write_text("".join(f"{u} {u.split('-')[0]}\n" for u in ids))
        spks = sorted({u.split("-")[0] for u in ids})
        (d / "spk2utt").write_text("".join(
            f"{s} {' '.join(u for u in ids if u.startswith(s + '-'))}\n" for s in spks))
        data[name] = d
    return SpeechCorpus(root, wav_dir, data, utts)


@pytest.fixture(scope="session")
def speech_corpus(tmp_path_factory) -> SpeechCorpus:
    if not have_tts():
        pytest.skip("espeak-ng, sox and festival are needed (tools/setup.sh installs them)")
    return synthesize(tmp_path_factory.mktemp("speech"))
