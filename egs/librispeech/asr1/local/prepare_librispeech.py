#!/usr/bin/env python3
"""Kaldi data directory of one LibriSpeech part (openslr 12) in its official layout.

    local/prepare_librispeech.py --part_dir /path/LibriSpeech/dev-clean --data_dir data/dev_clean

Reads ``<part_dir>/<reader>/<chapter>/<reader>-<chapter>.trans.txt`` (``<utt> WORD WORD ...``)
and the ``<utt>.flac`` files beside it, and writes ``wav.scp`` (the flac path: the fbank stage
reads flac through libsndfile, so no ``flac -d |`` pipe and no flac binary are needed), ``text``
(the upper-case words as in the corpus, whitespace normalised), ``utt2spk`` (speaker =
``<reader>-<chapter>``, one per chapter as in Kaldi's LibriSpeech recipe, so per-speaker CMVN
and sclite's speaker tables work per chapter), ``spk2utt`` and ``spk2gender`` (from
``SPEAKERS.TXT`` next to the part, when present).

Nothing is dropped silently: transcript lines without a flac, flacs without a transcript line
and empty transcripts are counted in the log and listed in ``<data_dir>/../local/<name>.dropped``.
"""
import argparse
import logging
import sys
from pathlib import Path
from typing import Dict, List, Tuple

from espnet_ext.utils.kaldi_table import write_table

logger = logging.getLogger("prepare_librispeech")


class CorpusError(Exception):
    """The part directory does not have the official layout; the message says what is wrong."""


def read_speakers(path: Path) -> Dict[str, str]:
    """reader id -> gender (m/f) from SPEAKERS.TXT (``ID | SEX | SUBSET | MINUTES | NAME``)."""
    out = {}
    if not path.is_file():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith(";") or "|" not in line:
            continue
        fields = [f.strip() for f in line.split("|")]
        if len(fields) >= 2 and fields[1].upper() in ("M", "F"):
            out[fields[0]] = fields[1].lower()
    return out


def prepare_part(part_dir: Path, data_dir: Path) -> Dict[str, int]:
    """Write one data directory; returns counts {kept, no_audio, no_transcript, empty_text}."""
    if not part_dir.is_dir():
        raise CorpusError(f"{part_dir}: not a directory")
    trans_files = sorted(part_dir.glob("*/*/*.trans.txt"))
    if not trans_files:
        raise CorpusError(f"{part_dir}: no <reader>/<chapter>/<reader>-<chapter>.trans.txt files "
                          f"(official LibriSpeech layout expected)")
    texts: Dict[str, str] = {}
    audio: Dict[str, Path] = {}
    spk: Dict[str, str] = {}
    dropped: List[Tuple[str, str]] = []
    for trans in trans_files:
        chapter_dir = trans.parent
        reader, chapter = chapter_dir.parent.name, chapter_dir.name
        if trans.name != f"{reader}-{chapter}.trans.txt":
            raise CorpusError(f"{trans}: expected the name {reader}-{chapter}.trans.txt")
        listed = set()
        with open(trans, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                parts = line.split(maxsplit=1)
                if not parts:
                    continue
                utt = parts[0]
                if not utt.startswith(f"{reader}-{chapter}-"):
                    raise CorpusError(f"{trans}:{n}: utterance {utt} is not of chapter "
                                      f"{reader}-{chapter}")
                if utt in texts or utt in listed:
                    raise CorpusError(f"{trans}:{n}: utterance {utt} is listed twice")
                listed.add(utt)
                words = " ".join(parts[1].split()) if len(parts) > 1 else ""
                flac = chapter_dir / f"{utt}.flac"
                if not words:
                    dropped.append((utt, "empty transcript"))
                elif not flac.is_file():
                    dropped.append((utt, f"no audio {flac}"))
                else:
                    texts[utt] = words
                    audio[utt] = flac.resolve()
                    spk[utt] = f"{reader}-{chapter}"
        for flac in sorted(chapter_dir.glob("*.flac")):
            if flac.stem not in listed:
                dropped.append((flac.stem, f"no transcript line in {trans.name}"))
    for flac in sorted(part_dir.glob("*/*/*.flac")):
        if not (flac.parent / f"{flac.parent.parent.name}-{flac.parent.name}.trans.txt").is_file():
            dropped.append((flac.stem, "chapter has no .trans.txt"))
    if not texts:
        raise CorpusError(f"{part_dir}: no utterance has both a transcript and a flac")

    data_dir.mkdir(parents=True, exist_ok=True)
    utts = sorted(texts)
    write_table(data_dir / "wav.scp", [(u, str(audio[u])) for u in utts])
    write_table(data_dir / "text", [(u, texts[u]) for u in utts])
    write_table(data_dir / "utt2spk", [(u, spk[u]) for u in utts])
    spk2utt: Dict[str, List[str]] = {}
    for u in utts:
        spk2utt.setdefault(spk[u], []).append(u)
    write_table(data_dir / "spk2utt", [(s, " ".join(us)) for s, us in sorted(spk2utt.items())])
    genders = read_speakers(part_dir.parent / "SPEAKERS.TXT")
    if genders:
        readers = {s: s.split("-")[0] for s in spk2utt}
        rows = [(s, genders[r]) for s, r in sorted(readers.items()) if r in genders]
        write_table(data_dir / "spk2gender", rows)
    dropped_list = data_dir.parent / "local" / f"{data_dir.name}.dropped"
    dropped_list.parent.mkdir(parents=True, exist_ok=True)
    write_table(dropped_list, sorted(dropped))
    counts = {"kept": len(utts), "speakers": len(spk2utt)}
    for reason in ("no audio", "no transcript", "empty transcript", "chapter has no"):
        counts[reason] = sum(1 for _, r in dropped if r.startswith(reason))
    msg = (f"{part_dir.name} -> {data_dir}: {len(utts)} utterances, {len(spk2utt)} speakers "
           f"(reader-chapter); dropped {len(dropped)}")
    if dropped:
        logger.warning("%s (listed in %s): %s", msg, dropped_list,
                       ", ".join(f"{n} {r}" for r, n in counts.items()
                                 if r not in ("kept", "speakers") and n))
    else:
        logger.info("%s", msg)
    return counts


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part_dir", required=True, type=Path, help="e.g. LibriSpeech/dev-clean")
    p.add_argument("--data_dir", required=True, type=Path, help="e.g. data/dev_clean")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    try:
        prepare_part(args.part_dir, args.data_dir)
    except (CorpusError, OSError, UnicodeDecodeError) as e:
        logger.error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
