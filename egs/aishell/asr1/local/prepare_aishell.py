#!/usr/bin/env python3
"""Kaldi data directories from the official AISHELL-1 layout (openslr 33, data_aishell.tgz).

    local/prepare_aishell.py --corpus_dir /path/data_aishell --data_dir data

Reads ``<corpus_dir>/wav/{train,dev,test}/<speaker>/<utt>.wav`` and
``<corpus_dir>/transcript/aishell_transcript_v0.8.txt`` (``<utt> word word ...``, words separated
by the corpus's segmentation spaces) and writes ``<data_dir>/{train,dev,test}/{wav.scp,text,
utt2spk,spk2utt}``: utterance id = file stem, speaker = parent directory, text = the transcript
with every space removed (the char token type splits it into characters downstream; the
reference recipe removes the spaces as well).

Nothing is dropped silently: wavs without a transcript line are left out, counted per set in the
log and listed in ``<data_dir>/local/<set>.no_transcript``; transcript lines without a wav are
counted; duplicate ids stop the preparation with the offending paths.
"""
import argparse
import logging
import re
import sys
from pathlib import Path
from typing import Dict, List, Tuple

from espnet_ext.utils.kaldi_table import write_table

SETS = ("train", "dev", "test")
TRANSCRIPT = Path("transcript") / "aishell_transcript_v0.8.txt"
logger = logging.getLogger("prepare_aishell")


class CorpusError(Exception):
    """The corpus directory does not have the official layout; the message says what is wrong."""


def read_transcripts(path: Path) -> Dict[str, str]:
    """utt id -> transcript without spaces. Empty transcripts are kept out (and counted)."""
    texts: Dict[str, str] = {}
    empty = 0
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            parts = line.strip().split(maxsplit=1)
            if not parts:
                continue
            utt = parts[0]
            if utt in texts:
                raise CorpusError(f"{path}:{n}: utterance {utt} has a second transcript line")
            text = re.sub(r"\s+", "", parts[1]) if len(parts) > 1 else ""
            if not text:
                empty += 1
                continue
            texts[utt] = text
    if empty:
        logger.warning("%s: %d lines without text ignored", path, empty)
    return texts


def scan_wavs(wav_dir: Path) -> Dict[str, Tuple[str, Path]]:
    """utt id -> (speaker, wav path) for ``wav_dir/<speaker>/<utt>.wav``."""
    out: Dict[str, Tuple[str, Path]] = {}
    for wav in sorted(wav_dir.glob("*/*.wav")):
        utt, spk = wav.stem, wav.parent.name
        if utt in out:
            raise CorpusError(f"utterance {utt} occurs twice: {out[utt][1]} and {wav}")
        out[utt] = (spk, wav.resolve())
    return out


def prepare(corpus_dir: Path, data_dir: Path, sets=SETS) -> Dict[str, Dict[str, int]]:
    """Write the data directories; returns per-set counts {kept, no_transcript}."""
    transcript = corpus_dir / TRANSCRIPT
    if not transcript.is_file():
        raise CorpusError(f"{transcript} not found: {corpus_dir} is not AISHELL-1's data_aishell "
                          f"directory (expected wav/ and {TRANSCRIPT})")
    texts = read_transcripts(transcript)
    (data_dir / "local").mkdir(parents=True, exist_ok=True)
    stats: Dict[str, Dict[str, int]] = {}
    seen: Dict[str, str] = {}
    for name in sets:
        wav_dir = corpus_dir / "wav" / name
        if not wav_dir.is_dir():
            raise CorpusError(f"{wav_dir} not found (expected data_aishell/wav/{{{','.join(sets)}}}"
                              f"/<speaker>/*.wav; extract the per-speaker tarballs of wav/ first)")
        wavs = scan_wavs(wav_dir)
        if not wavs:
            raise CorpusError(f"{wav_dir}: no <speaker>/*.wav files")
        for utt in wavs:
            if utt in seen:
                raise CorpusError(f"utterance {utt} is in both {seen[utt]} and {name}")
            seen[utt] = name
        kept = sorted(u for u in wavs if u in texts)
        missing = sorted(u for u in wavs if u not in texts)
        out = data_dir / name
        out.mkdir(parents=True, exist_ok=True)
        write_table(out / "wav.scp", [(u, str(wavs[u][1])) for u in kept])
        write_table(out / "text", [(u, texts[u]) for u in kept])
        write_table(out / "utt2spk", [(u, wavs[u][0]) for u in kept])
        spk2utt: Dict[str, List[str]] = {}
        for u in kept:
            spk2utt.setdefault(wavs[u][0], []).append(u)
        write_table(out / "spk2utt", [(s, " ".join(us)) for s, us in sorted(spk2utt.items())])
        write_table(data_dir / "local" / f"{name}.no_transcript",
                    [(u, str(wavs[u][1])) for u in missing])
        stats[name] = {"kept": len(kept), "no_transcript": len(missing), "speakers": len(spk2utt)}
        msg = (f"{name}: {len(kept)} utterances of {len(spk2utt)} speakers; {len(missing)} wavs "
               f"without transcript dropped")
        if missing:
            logger.warning("%s (listed in %s)", msg, data_dir / "local" / f"{name}.no_transcript")
        else:
            logger.info("%s", msg)
    orphans = len(set(texts) - set(seen))
    if orphans:
        logger.info("%d transcript lines have no wav in %s (not part of these sets)", orphans,
                    ", ".join(sets))
    return stats


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus_dir", required=True, type=Path, help="the data_aishell directory")
    p.add_argument("--data_dir", default=Path("data"), type=Path)
    p.add_argument("--sets", nargs="+", default=list(SETS))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    try:
        prepare(args.corpus_dir, args.data_dir, args.sets)
    except (CorpusError, OSError, UnicodeDecodeError) as e:
        logger.error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
