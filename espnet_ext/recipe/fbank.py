"""80-dim Kaldi-compatible log-mel filterbank features written as kaldiio ark/scp.

Features are ``torchaudio.compliance.kaldi.fbank`` (Kaldi's compute-fbank-feats) on the waveform
in int16 units: 25 ms Povey window, 10 ms shift, pre-emphasis 0.97, power spectrum, 80 mel bins
from 20 Hz to Nyquist, snip_edges, no dither (so reruns and backends give identical bytes) and
Kaldi's energy floor 0. Normalisation is not applied here: recipes use ESPnet's global CMVN
(``--collect_stats`` then ``GlobalMVN``).

``wav.scp`` values may be a path (anything libsndfile reads: wav, flac, ...), a Kaldi ark
offset (``x.ark:123``) or a shell pipe ``cmd |`` whose stdout is an audio file. A truncated WAV
file (its header promises more audio than the file holds) is an error: libsndfile would silently
return the shorter audio. Duplicate ids in ``wav.scp`` are refused.
"""
import io
import json
import logging
import os
import struct
import subprocess
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np

from espnet_ext.recipe import done_marker
from espnet_ext.utils.kaldi_table import TableError, read_table_dict

logger = logging.getLogger("fbank")

DEFAULT_OPTS = dict(num_mel_bins=80, frame_length=25.0, frame_shift=10.0, dither=0.0,
                    energy_floor=0.0, sample_frequency=16000.0)


class AudioError(Exception):
    """An utterance's audio cannot be used; the message names the utterance and its source."""


# RIFF data sizes written by streaming writers that cannot seek back (espeak-ng --stdout, sox to
# a pipe): the length is unknown, not truncated.
_STREAMED_WAV_SIZE = 0x7FFF0000


def wav_truncation(path: str) -> Optional[str]:
    """Why a RIFF/WAVE file is truncated (its data chunk declares more bytes than the file
    holds), or None. libsndfile silently returns the shorter audio, so this is checked here."""
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        size = os.fstat(f.fileno()).st_size
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk, n = struct.unpack("<4sI", f.read(8))
            if chunk == b"data":
                available = size - pos - 8
                if available < n < _STREAMED_WAV_SIZE:
                    return (f"truncated: its WAV header declares {n} bytes of audio, the file "
                            f"holds {available}")
                return None
            pos += 8 + n + (n & 1)
    return None


def read_audio(entry: str) -> Tuple[np.ndarray, int]:
    """Load one wav.scp value; returns (samples in int16 units as float32 of shape (n,) or
    (n, channels), sample rate)."""
    import soundfile

    entry = entry.strip()
    if entry.endswith("|"):
        cmd = entry[:-1].strip()
        res = subprocess.run(["bash", "-c", "set -o pipefail; " + cmd], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        if res.returncode != 0:
            err = res.stderr.decode(errors="replace").strip().splitlines()[-3:]
            raise AudioError(f"command failed (code {res.returncode}): {cmd}: {' | '.join(err)}")
        if not res.stdout:
            raise AudioError(f"command produced no audio: {cmd}")
        data, rate = soundfile.read(io.BytesIO(res.stdout), dtype="float32")
    elif os.path.splitext(entry.split(":")[0])[1] == ".ark" and ":" in entry:
        import kaldiio

        rate, data = kaldiio.load_mat(entry)
        if np.issubdtype(data.dtype, np.integer):
            return data.astype(np.float32), rate
        return (data * 32768.0).astype(np.float32), rate
    else:
        if not os.path.isfile(entry):
            raise AudioError(f"audio file not found: {entry}")
        truncated = wav_truncation(entry)
        if truncated:
            raise AudioError(truncated)
        data, rate = soundfile.read(entry, dtype="float32")
    # soundfile scales integer PCM to [-1, 1); Kaldi works on int16 sample values.
    return data * 32768.0, rate


def fbank(wave: np.ndarray, opts: Optional[dict] = None) -> np.ndarray:
    """(num_samples,) int16-unit waveform -> (num_frames, num_mel_bins) float32 log-mel."""
    import torch
    import torchaudio.compliance.kaldi as kaldi

    opts = {**DEFAULT_OPTS, **(opts or {})}
    with torch.no_grad():
        feats = kaldi.fbank(torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))[None],
                            **opts)
    return feats.numpy()


def _read(path: str) -> Dict[str, str]:
    """A table of unique ids with values; a malformed one is an AudioError (file and line)."""
    try:
        return read_table_dict(path, allow_empty_value=False)
    except TableError as e:
        raise AudioError(f"{e}; fix the data directory (utils/data_dir.py fix)") from None


def _segments(path: Optional[str]) -> Optional[Dict[str, Tuple[str, float, float]]]:
    if path is None:
        return None
    out = {}
    for n, (utt, value) in enumerate(_read(path).items(), 1):
        fields = value.split()
        if len(fields) != 3:
            raise AudioError(f"{path}:{n}: expected '<utt> <recording> <start> <end>', got "
                             f"{utt} {value}")
        out[utt] = (fields[0], float(fields[1]), float(fields[2]))
    return out


def iter_utterances(wav_scp: str, segments: Optional[str] = None
                    ) -> Iterator[Tuple[str, str, object]]:
    """Yield (utt, source description, loader) where loader() -> (samples, rate)."""
    # Duplicate ids are refused: both would land in the ark and a reader would keep one of them.
    recs = list(_read(wav_scp).items())
    segs = _segments(segments)
    if segs is None:
        for utt, entry in recs:
            yield utt, entry, (lambda e=entry: read_audio(e))
        return
    entries = dict(recs)
    cache: Dict[str, Tuple[np.ndarray, int]] = {}
    for utt, (rec, start, end) in sorted(segs.items(), key=lambda kv: kv[0]):
        if rec not in entries:
            raise AudioError(f"{segments}: recording {rec!r} of {utt!r} is not in {wav_scp}")

        def load(rec=rec, start=start, end=end):
            if rec not in cache:
                cache.clear()  # segments are mostly grouped by recording; keep one in memory
                cache[rec] = read_audio(entries[rec])
            data, rate = cache[rec]
            return data[int(start * rate):int(end * rate)], rate

        yield utt, f"{entries[rec]} [{start}, {end}]", load


def extract_to_ark(wav_scp: str, ark: str, scp: str, utt2num_frames: str,
                   segments: Optional[str] = None, skip_bad: bool = False,
                   opts: Optional[dict] = None, progress: bool = True) -> Dict[str, int]:
    """Compute features for every utterance of ``wav_scp`` into ``ark`` + ``scp`` (the scp
    references ``ark`` by the path given) + ``utt2num_frames``.

    Outputs are written under temporary names and renamed at the end, then the done marker
    ``<scp>.done`` records the inputs (lists, options, size and time of every audio file) and
    outputs: a rerun returns at once unless one of them changed (a replaced recording, a
    truncated ark), which is said and redone.
    Bad audio raises :class:`AudioError` naming the utterance, or with ``skip_bad`` is logged,
    counted and listed in ``<scp>.skipped``. Returns counts {"done", "skipped", "reused"}.
    """
    opts = {**DEFAULT_OPTS, **(opts or {})}
    marker = Path(scp + ".done")
    inputs = [p for p in (wav_scp, segments) if p]
    options = json.dumps({**opts, "skip_bad": skip_bad}, sort_keys=True)
    stale = done_marker.check(str(marker), options)
    if stale is None:
        n = sum(1 for _ in open(scp, encoding="utf-8"))
        logger.info("%s: already complete (%d utterances); skipping", scp, n)
        return {"done": 0, "skipped": 0, "reused": n}
    if marker.exists():
        logger.warning("%s: recomputing: %s", scp, stale)
    import kaldiio
    import torch
    from tqdm import tqdm

    torch.set_num_threads(1)  # one utterance at a time is cheap; parallelism comes from jobs
    marker.unlink(missing_ok=True)
    for p in (ark, scp, utt2num_frames):
        Path(p).parent.mkdir(parents=True, exist_ok=True)
    tmp = {p: p + ".tmp" for p in (ark, scp, utt2num_frames)}
    skipped: List[Tuple[str, str]] = []
    fs = opts["sample_frequency"]
    done = 0
    utts = list(iter_utterances(wav_scp, segments))
    with open(tmp[ark], "wb") as fa, open(tmp[scp], "w", encoding="utf-8") as fs_scp, \
            open(tmp[utt2num_frames], "w", encoding="utf-8") as fn:
        for utt, source, load in tqdm(utts, desc=os.path.basename(scp), disable=not progress,
                                      mininterval=5, file=None):
            try:
                data, rate = load()
                if data.ndim != 1:
                    raise AudioError(f"has {data.shape[1]} channels; expected mono")
                if rate != fs:
                    raise AudioError(f"sample rate {rate} Hz; expected {fs:g} Hz "
                                     f"(resample in data preparation)")
                min_len = int(opts["frame_length"] * fs / 1000)
                if len(data) < min_len:
                    raise AudioError(f"too short: {len(data)} samples, fewer than one "
                                     f"{opts['frame_length']:g} ms frame")
                feats = fbank(data, opts)
                if not np.isfinite(feats).all():
                    raise AudioError("features contain NaN/inf")
            except Exception as e:  # noqa: BLE001 - any reader error becomes a named AudioError
                msg = f"utterance {utt!r} ({source}): {e}"
                if not skip_bad:
                    raise AudioError(msg + f" [from {wav_scp}]; fix the data or extract "
                                     f"with skip_bad") from e
                logger.warning("skipping %s", msg)
                skipped.append((utt, str(e).replace("\n", " ")))
                continue
            offset = fa.tell() + len(utt.encode("utf-8")) + 1
            kaldiio.save_ark(fa, {utt: feats})
            fs_scp.write(f"{utt} {ark}:{offset}\n")
            fn.write(f"{utt} {feats.shape[0]}\n")
            done += 1
    skipped_file = Path(scp + ".skipped")
    if skipped:
        skipped_file.write_text("".join(f"{u} {why}\n" for u, why in skipped), encoding="utf-8")
        logger.warning("%s: skipped %d of %d utterances (listed in %s)", scp, len(skipped),
                       len(utts), skipped_file)
    else:
        skipped_file.unlink(missing_ok=True)
    for final, t in tmp.items():
        os.replace(t, final)
    done_marker.write(str(marker), inputs=inputs, audio_of=[wav_scp], outputs=list(tmp),
                      options=options)
    logger.info("%s: %d utterances, %d skipped", scp, done, len(skipped))
    return {"done": done, "skipped": len(skipped), "reused": 0}
