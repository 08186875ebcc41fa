"""Synthetic speakers and the two offline synthesisers (festival, espeak-ng) that voice them.

A "speaker" is one synthesiser voice with fixed prosody settings. festival's diphone voices
(kal, ked) vary by Duration_Stretch and target F0; its HTS voice slt has no such knobs; espeak-ng
speakers are accent x variant x rate x pitch. Every synthesiser writes a temporary file that
:func:`finalize_wav` validates (16 kHz mono 16-bit, long enough, not silent) and renames into
place, so a killed run never leaves a truncated wav under the final name.
"""
import os
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from espnet_ext.recipe.corpus.word_times import FESTIVAL_WORD_TIMES_SCHEME, festival_words_path

SAMPLE_RATE = 16000
MIN_SECONDS = 0.3
MIN_RMS = 1e-3  # of full scale; synthetic speech sits around 0.05-0.1

# festival voice -> (scheme command that selects it, default target F0 std or None for HTS)
FESTIVAL_VOICES = {
    "kal": ("voice_kal_diphone", 14.0),
    "ked": ("voice_ked_diphone", 15.0),
    "slt": ("voice_cmu_us_slt_arctic_hts", None),
}
# The diphone voices' own F0 model statistics (from their festvox definitions).
_MODEL_F0 = "(model_f0_mean 170) (model_f0_std 34)"


@dataclass(frozen=True)
class Voice:
    """One synthetic speaker: a synthesiser voice with fixed settings."""

    engine: str  # "festival" | "espeak"
    name: str  # festival voice (kal, ked, slt) or espeak accent (en-us, en-gb-x-rp, ...)
    variant: str = ""  # espeak variant (m3, f2, ...)
    rate: int = 0  # espeak words per minute
    pitch: int = 0  # espeak base pitch, 0..99
    stretch: float = 0.0  # festival Duration_Stretch; 0 = voice default
    f0_mean: int = 0  # festival target F0 mean in Hz; 0 = voice default

    def __post_init__(self):
        if self.engine == "festival":
            if self.name not in FESTIVAL_VOICES:
                raise ValueError(f"unknown festival voice {self.name!r}; "
                                 f"known: {sorted(FESTIVAL_VOICES)}")
            if FESTIVAL_VOICES[self.name][1] is None and (self.stretch or self.f0_mean):
                raise ValueError(f"festival voice {self.name} (HTS) ignores stretch/f0_mean; "
                                 "leave them unset")
        elif self.engine == "espeak":
            if not (self.variant and self.rate and self.pitch):
                raise ValueError(f"espeak voice {self.name} needs variant, rate and pitch")
        else:
            raise ValueError(f"unknown engine {self.engine!r}")

    @property
    def speaker_id(self) -> str:
        """Kaldi speaker id; no '-' inside, because sclite cuts the speaker at the first '-'."""
        if self.engine == "festival":
            if not (self.stretch or self.f0_mean):
                return self.name
            return f"{self.name}_s{round(self.stretch * 100):03d}_f{self.f0_mean:03d}"
        accent = self.name.replace("-", "")
        return f"{accent}_{self.variant}_r{self.rate:03d}_p{self.pitch:02d}"

    @property
    def family(self) -> str:
        """Voice family: a festival voice, or espeak as a whole (one formant synthesiser)."""
        return self.name if self.engine == "festival" else "espeak"


def check_espeak_voices(voices: Sequence[Voice]) -> None:
    """Fail early on an unknown espeak-ng accent or variant.

    espeak-ng silently falls back to its default variant for an unknown one, which would turn a
    typo in a preset into duplicated "speakers".
    """
    listing = subprocess.run(["espeak-ng", "--voices"], capture_output=True, text=True, check=True)
    accents = {line.split()[1] for line in listing.stdout.splitlines()[1:] if line.split()}
    listing = subprocess.run(["espeak-ng", "--voices=variant"], capture_output=True, text=True,
                             check=True)
    variants = {tok[len("!v/"):] for line in listing.stdout.splitlines() for tok in line.split()
                if tok.startswith("!v/")}
    for v in voices:
        if v.engine != "espeak":
            continue
        if v.name not in accents:
            raise ValueError(f"espeak-ng has no voice {v.name!r} (see `espeak-ng --voices`)")
        if v.variant not in variants:
            raise ValueError(f"espeak-ng has no variant {v.variant!r} (see `espeak-ng --voices=variant`)")


def check_wav(path: Path) -> Tuple[Optional[str], float]:
    """(None, seconds) for a usable 16 kHz mono 16-bit speech wav, else (reason, 0.0)."""
    try:
        with wave.open(str(path), "rb") as w:
            if (w.getnchannels(), w.getsampwidth(), w.getframerate()) != (1, 2, SAMPLE_RATE):
                return (f"format {w.getnchannels()}ch/{8 * w.getsampwidth()}bit/"
                        f"{w.getframerate()}Hz, expected 1ch/16bit/{SAMPLE_RATE}Hz"), 0.0
            frames = w.readframes(w.getnframes())
    except (OSError, EOFError, wave.Error) as e:
        return f"unreadable wav: {e}", 0.0
    samples = np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0
    seconds = len(samples) / SAMPLE_RATE
    if seconds < MIN_SECONDS:
        return f"too short ({seconds:.2f} s)", 0.0
    rms = float(np.sqrt(np.mean(samples**2)))
    if rms < MIN_RMS:
        return f"silent (rms {rms:.2e})", 0.0
    return None, seconds


def wav_seconds(path: Path) -> Optional[float]:
    """Duration from the header of a 16 kHz mono 16-bit wav; None if it is not one."""
    try:
        with wave.open(str(path), "rb") as w:
            if (w.getnchannels(), w.getsampwidth(), w.getframerate()) != (1, 2, SAMPLE_RATE):
                return None
            frames = w.getnframes()
    except (OSError, EOFError, wave.Error):
        return None
    # A truncated file still has the full length in its header: check the data is there.
    if os.path.getsize(path) < 44 + 2 * frames:
        return None
    return frames / SAMPLE_RATE


def tmp_path(wav: Path) -> Path:
    return wav.with_name(wav.name + ".tmp")


def finalize_wav(wav: Path) -> Optional[str]:
    """Validate ``wav``'s temporary file and rename it into place; return a reason if unusable."""
    tmp = tmp_path(wav)
    if not tmp.exists():
        return "missing"
    reason, _ = check_wav(tmp)
    if reason:
        tmp.unlink()
        return reason
    os.replace(tmp, wav)
    return None


def _scheme_string(text: str) -> str:
    if '"' in text or "\\" in text:
        raise ValueError(f"cannot quote {text!r} for festival")
    return f'"{text}"'


def festival_script(items: Sequence[Tuple[Voice, str, Path]]) -> str:
    """A festival batch script saving each (voice, text, wav) to ``wav``'s temporary file, and
    its word times to ``<wav>.words`` (:mod:`espnet_ext.recipe.corpus.word_times`).

    The voice is re-selected whenever the speaker changes, because selecting a voice resets its
    prosody; so an utterance's audio depends only on its own speaker and text, never on which
    utterances share its batch (resumed runs batch differently).
    """
    lines, current = [], None
    for voice, text, wav in items:
        select, f0_std = FESTIVAL_VOICES[voice.name]
        if voice != current:
            lines.append(f"({select})")
            if voice.stretch:
                lines.append(f"(Parameter.set 'Duration_Stretch {voice.stretch:g})")
            if voice.f0_mean:
                std = f0_std * voice.f0_mean / 105.0  # keep the voice's relative pitch range
                lines.append(f"(set! int_lr_params '((target_f0_mean {voice.f0_mean}) "
                             f"(target_f0_std {std:.1f}) {_MODEL_F0}))")
            current = voice
        lines.append(f"(set! utt (SynthText {_scheme_string(text)}))")
        lines.append(f"(utt.save.wave (utt.wave.resample utt {SAMPLE_RATE}) "
                     f"{_scheme_string(str(tmp_path(wav)))} 'riff)")
        lines.append(f"(save_word_times utt {_scheme_string(str(festival_words_path(wav)))})")
    return FESTIVAL_WORD_TIMES_SCHEME + "\n".join(lines) + "\n"


def run_festival(items: Sequence[Tuple[Voice, str, Path]], workdir: Path, timeout: float) -> str:
    """Run one festival process over ``items``; return its error text ('' on success).

    Outputs are left as temporary files for :func:`finalize_wav`; a crash part-way (festival
    segfaults on some inputs) simply leaves the later ones missing.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".scm", dir=workdir, delete=False) as f:
        f.write(festival_script(items))
    try:
        proc = subprocess.run(["festival", "-b", f.name], capture_output=True, text=True,
                              errors="replace", timeout=timeout)
        if proc.returncode == 0:
            return ""
        return f"festival exit {proc.returncode}: {proc.stderr.strip()[-500:]}"
    except subprocess.TimeoutExpired:
        return f"festival timed out after {timeout:.0f} s"
    finally:
        os.unlink(f.name)


def synthesize_festival(
    items: Sequence[Tuple[Voice, str, Path]], workdir: Path, timeout: float
) -> Tuple[List[Path], List[Tuple[Path, str]]]:
    """Synthesise a chunk in as few festival processes as failures allow.

    Returns (written wavs, [(wav, reason)] failures). When festival dies, it reruns the missing
    items; an item that is missing again as the first of a run is the culprit and is skipped.
    """
    done: List[Path] = []
    failed: List[Tuple[Path, str]] = []
    remaining = list(items)
    while remaining:
        error = run_festival(remaining, workdir, timeout)
        missing = []
        for item in remaining:
            reason = finalize_wav(item[2])
            if reason is None:
                done.append(item[2])
            elif reason == "missing":
                missing.append(item)
            else:
                failed.append((item[2], f"festival {item[0].speaker_id}: {reason}"))
        if missing and missing[0] is remaining[0]:
            voice, _, wav = missing[0]
            failed.append((wav, f"festival {voice.speaker_id}: no output ({error or 'no error'})"))
            missing = missing[1:]
        remaining = missing
    return done, failed


def synthesize_espeak(voice: Voice, text: str, wav: Path, timeout: float) -> Optional[str]:
    """espeak-ng (22.05 kHz) piped through sox to 16 kHz mono 16-bit; a reason on failure.

    sox runs with -R (repeatable dither seed) so the same input gives byte-identical output,
    and -G to avoid clipping after resampling.
    """
    espeak = ["espeak-ng", "-v", f"{voice.name}+{voice.variant}", "-s", str(voice.rate),
              "-p", str(voice.pitch), "--stdout", text]
    sox = ["sox", "-R", "-G", "-t", "wav", "-", "-t", "wav", "-r", str(SAMPLE_RATE), "-c", "1",
           "-b", "16", str(tmp_path(wav))]
    synth = subprocess.Popen(espeak, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        conv = subprocess.run(sox, stdin=synth.stdout, capture_output=True, timeout=timeout)
        synth.stdout.close()  # sox is done; espeak must not block on a full pipe
        synth_err = synth.stderr.read().decode(errors="replace")
        synth.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        synth.kill()
        synth.wait()
        tmp_path(wav).unlink(missing_ok=True)
        return f"espeak-ng/sox timed out after {timeout:.0f} s"
    finally:
        synth.stdout.close()
        synth.stderr.close()
    if synth.returncode or conv.returncode:
        tmp_path(wav).unlink(missing_ok=True)
        return (f"espeak-ng exit {synth.returncode} {synth_err.strip()[-200:]}; "
                f"sox exit {conv.returncode} {conv.stderr.decode(errors='replace').strip()[-200:]}")
    return finalize_wav(wav)
