"""Kaldi-style data directories: validate, fix, split, combine, subset, speed-perturb.

A data directory holds per-utterance tables ``<id> <value>`` sorted by id in byte order
(``LC_ALL=C sort``): ``wav.scp`` (or ``segments`` + per-recording ``wav.scp``), ``text``,
``utt2spk``, and ``spk2utt`` derived from it; optionally ``feats.scp``, ``utt2num_frames`` and
other ``utt2*`` tables. Every function here either keeps all utterances or says which it dropped
and why: problems are reported with the file, line and utterance id.
"""
import logging
import os
import re
import shutil
from collections import OrderedDict, defaultdict
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from espnet_ext.utils.kaldi_table import Rows, TableError, read_table, write_table

logger = logging.getLogger("datadir")

# Per-utterance tables handled by every tool (wav.scp is per-recording when segments exists).
UTT_FILES = ("segments", "wav.scp", "text", "utt2spk", "feats.scp", "utt2num_frames",
             "utt2num_samples", "utt2dur", "utt2category", "utt2lang")
SPK_FILES = ("spk2gender",)
MAX_LISTED = 5


class DataDirError(Exception):
    """A data directory is malformed; the message lists every problem found."""


def utt2spk_to_spk2utt(utt2spk: Rows) -> Rows:
    spk2utts: Dict[str, List[str]] = defaultdict(list)
    for utt, spk in utt2spk:
        spk2utts[spk].append(utt)
    return [(spk, " ".join(sorted(utts))) for spk, utts in sorted(spk2utts.items())]


def _ids_listed(ids: Sequence[str]) -> str:
    ids = list(ids)
    head = ", ".join(repr(i) for i in ids[:MAX_LISTED])
    return head + (f", ... ({len(ids)} in all)" if len(ids) > MAX_LISTED else "")


def _check_table(path: Path, problems: List[str], value_required: bool = True) -> Rows:
    """Read a table, appending problems (unsorted/duplicate ids, missing values)."""
    try:
        rows = read_table(path)
    except TableError as e:
        problems.append(str(e))
        return []
    prev = None
    seen = set()
    for n, (key, value) in enumerate(rows, 1):
        if key in seen:
            problems.append(f"{path}:{n}: duplicate id {key!r}")
        elif prev is not None and key < prev:
            problems.append(f"{path}:{n}: not sorted: {key!r} comes after {prev!r}")
        seen.add(key)
        prev = key
        if value_required and not value:
            what = "empty transcript" if path.name == "text" else "no value"
            problems.append(f"{path}:{n}: {what} for {key!r}")
    return rows


def _spaced_id(utt: str, speaker: str) -> Optional[str]:
    """An ``utt2spk`` entry whose speaker holds whitespace comes from an id with a space in it
    (``utt 1 spk``: the line's first word became the id): the id it most likely meant, or None
    for a well-formed entry. Kaldi tables end the id at the first whitespace, so such ids cannot
    be represented."""
    words = speaker.split()
    return " ".join([utt] + words[:-1]) if len(words) > 1 else None


def validate_data_dir(d, need_text: bool = True, need_audio: bool = True) -> None:
    """Raise DataDirError listing every problem of data directory ``d``; return if it is valid."""
    d = Path(d)
    problems: List[str] = []
    if not d.is_dir():
        raise DataDirError(f"{d}: not a directory")
    required = ["utt2spk", "spk2utt"] + (["text"] if need_text else [])
    if need_audio and not (d / "feats.scp").exists():
        required.append("wav.scp")
    for name in required:
        if not (d / name).is_file():
            problems.append(f"{d}/{name}: missing")
    tables: Dict[str, Rows] = {}
    for name in UTT_FILES + ("spk2utt",) + SPK_FILES:
        if (d / name).is_file():
            tables[name] = _check_table(d / name, problems)
    utt_sets: "OrderedDict[str, set]" = OrderedDict()
    for name in ("utt2spk", "text", "feats.scp", "segments", "utt2num_frames", "utt2num_samples",
                 "utt2dur", "utt2category", "utt2lang"):
        if name in tables:
            utt_sets[name] = {k for k, _ in tables[name]}
    if "wav.scp" in tables:
        wav_ids = {k for k, _ in tables["wav.scp"]}
        if "segments" in tables:
            for n, (utt, value) in enumerate(tables["segments"], 1):
                f = value.split()
                if len(f) != 3 or not _is_float(f[1]) or not _is_float(f[2]) \
                        or float(f[1]) >= float(f[2]):
                    problems.append(f"{d}/segments:{n}: expected '<utt> <rec> <start> <end>' "
                                    f"with start < end for {utt!r}")
                elif f[0] not in wav_ids:
                    problems.append(f"{d}/segments:{n}: recording {f[0]!r} of {utt!r} is not "
                                    f"in wav.scp")
        else:
            utt_sets["wav.scp"] = wav_ids
    for name in ("utt2num_frames", "utt2num_samples"):
        for n, (utt, value) in enumerate(tables.get(name, []), 1):
            if not re.fullmatch(r"\d+", value) or int(value) == 0:
                problems.append(f"{d}/{name}:{n}: expected a positive integer for {utt!r}, "
                                f"got {value!r}")
    if utt_sets:
        ref_name, ref = next(iter(utt_sets.items()))
        for name, ids in utt_sets.items():
            if name == ref_name:
                continue
            for a, b, ab in ((ref_name, name, ref - ids), (name, ref_name, ids - ref)):
                if ab:
                    problems.append(f"{d}: {len(ab)} utterance(s) in {a} but not in {b}: "
                                    f"{_ids_listed(sorted(ab))}")
    spaced = 0
    for n, (utt, spk) in enumerate(tables.get("utt2spk", []), 1):
        meant = _spaced_id(utt, spk)
        if meant is not None:
            spaced += 1
            problems.append(f"{d}/utt2spk:{n}: utterance {utt!r} has speaker {spk!r}: ids cannot "
                            f"contain whitespace (is the id {meant!r}?)")
    if "utt2spk" in tables and "spk2utt" in tables and not spaced:
        expected = dict(utt2spk_to_spk2utt(tables["utt2spk"]))
        actual = {spk: " ".join(sorted(utts.split())) for spk, utts in tables["spk2utt"]}
        bad = sorted(s for s in set(expected) | set(actual) if expected.get(s) != actual.get(s))
        if bad:
            problems.append(f"{d}/spk2utt: disagrees with utt2spk for speaker(s) "
                            f"{_ids_listed(bad)} (regenerate it: utils/data_dir.py spk2utt {d})")
    if problems:
        shown = problems[:40]
        more = f"\n  ... and {len(problems) - 40} more" if len(problems) > 40 else ""
        raise DataDirError(f"data directory {d} is invalid ({len(problems)} problem(s)):\n  "
                           + "\n  ".join(shown) + more
                           + f"\n(utils/data_dir.py fix {d} keeps the consistent utterances)")


def _is_float(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def fix_data_dir(d, utt_extra_files: Sequence[str] = (), keep: Optional[set] = None,
                 reason_not_kept: str = "filtered out") -> Dict[str, List[str]]:
    """Keep only utterances present (once, with a value) in every per-utterance table, sort all
    tables and regenerate spk2utt. ``keep`` optionally restricts the utterances further.

    Originals are backed up in ``d/.backup``; dropped utterances are logged with counts per reason
    and listed in ``d/.backup/dropped``. Returns {reason: [utt, ...]}.
    """
    d = Path(d)
    names = [n for n in UTT_FILES + tuple(utt_extra_files) if (d / n).is_file()]
    if "utt2spk" not in names:
        raise DataDirError(f"{d}/utt2spk: missing; cannot fix the directory without it")
    has_segments = "segments" in names
    dropped: Dict[str, List[str]] = defaultdict(list)
    tables: Dict[str, "OrderedDict[str, str]"] = {}
    for name in names:
        table: "OrderedDict[str, str]" = OrderedDict()
        for key, value in read_table(d / name):
            if key in table:
                dropped[f"duplicate id in {name} (first kept)"].append(key)
                continue
            table[key] = value
        tables[name] = table
    utt_tables = [n for n in names if not (n == "wav.scp" and has_segments)]
    all_utts = set().union(*(set(tables[n]) for n in utt_tables))
    reasons: Dict[str, str] = {}
    for utt in sorted(all_utts):
        absent = [name for name in utt_tables if utt not in tables[name]]
        empty = [name for name in ("text", "utt2spk", "wav.scp", "feats.scp")
                 if name in utt_tables and utt in tables[name] and not tables[name][utt]]
        if absent:
            reasons[utt] = "not in " + ", ".join(absent)
        elif _spaced_id(utt, tables["utt2spk"][utt]) is not None:
            reasons[utt] = "whitespace in its utt2spk entry (ids cannot contain whitespace)"
        elif empty:
            reasons[utt] = "empty value in " + ", ".join(empty)
        else:
            if has_segments and tables["segments"][utt].split()[0] not in tables.get("wav.scp", {}):
                reasons[utt] = "recording not in wav.scp"
            elif keep is not None and utt not in keep:
                reasons[utt] = reason_not_kept
    for utt, reason in reasons.items():
        dropped[reason].append(utt)
    kept = sorted(all_utts - set(reasons))
    kept_set = set(kept)
    backup = d / ".backup"
    backup.mkdir(exist_ok=True)
    for name in names + [n for n in ("spk2utt",) + SPK_FILES if (d / n).is_file()]:
        shutil.copy2(d / name, backup / name)
    for name in utt_tables:
        write_table(d / name, [(u, tables[name][u]) for u in kept])
    if has_segments:
        recs = {tables["segments"][u].split()[0] for u in kept}
        write_table(d / "wav.scp", sorted((r, v) for r, v in tables["wav.scp"].items() if r in recs))
    utt2spk = [(u, tables["utt2spk"][u]) for u in kept]
    write_table(d / "spk2utt", utt2spk_to_spk2utt(utt2spk))
    spks = {s for _, s in utt2spk}
    for name in SPK_FILES:
        if (d / name).is_file():
            write_table(d / name, sorted((s, v) for s, v in read_table(d / name) if s in spks))
    total = len(all_utts)
    with open(backup / "dropped", "w", encoding="utf-8") as f:
        for reason, utts in dropped.items():
            for u in utts:
                f.write(f"{u} {reason}\n")
    n_dropped = len(all_utts) - len(kept)
    if dropped:
        logger.warning("fix_data_dir %s: kept %d of %d utterances; dropped %d "
                       "(listed in %s):", d, len(kept), total, n_dropped, backup / "dropped")
        for reason, utts in dropped.items():
            logger.warning("  %d %s: %s", len(utts), reason, _ids_listed(utts))
    else:
        logger.info("fix_data_dir %s: all %d utterances kept", d, len(kept))
    assert kept_set == {u for u, _ in utt2spk}
    return dict(dropped)


def split_rows(rows: Sequence, n: int) -> List[List]:
    """Split into ``n`` contiguous parts whose sizes differ by at most one (deterministic)."""
    if n < 1:
        raise ValueError(f"cannot split into {n} parts")
    if n > len(rows):
        raise DataDirError(f"cannot split {len(rows)} lines into {n} non-empty parts; "
                           f"use at most {len(rows)} jobs")
    bounds = [len(rows) * i // n for i in range(n + 1)]
    return [list(rows[bounds[i]:bounds[i + 1]]) for i in range(n)]


def split_scp(scp, outputs: Sequence) -> None:
    """Split a table into ``len(outputs)`` files, like Kaldi's split_scp."""
    with open(scp, encoding="utf-8") as f:
        lines = [line for line in f if line.strip()]
    for out, part in zip(outputs, split_rows(lines, len(outputs))):
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(str(out) + ".tmp")
        tmp.write_text("".join(part), encoding="utf-8")
        os.replace(tmp, out)


def subset_data_dir(src, dest, utts: Iterable[str]) -> None:
    """Copy the tables of ``src`` restricted to ``utts`` into ``dest``."""
    src, dest = Path(src), Path(dest)
    keep = set(utts)
    dest.mkdir(parents=True, exist_ok=True)
    segs = {}
    for name in UTT_FILES:
        if not (src / name).is_file() or (name == "wav.scp" and (src / "segments").is_file()):
            continue
        rows = [(k, v) for k, v in read_table(src / name) if k in keep]
        if name == "segments":
            segs = {v.split()[0] for _, v in rows}
        write_table(dest / name, rows)
    if (src / "segments").is_file():
        write_table(dest / "wav.scp", [(k, v) for k, v in read_table(src / "wav.scp") if k in segs])
    utt2spk = [(k, v) for k, v in read_table(src / "utt2spk") if k in keep]
    write_table(dest / "spk2utt", utt2spk_to_spk2utt(utt2spk))
    for name in ("feats_dim", "feats_type"):
        if (src / name).is_file():
            shutil.copy2(src / name, dest / name)


def split_data_dir(d, n: int) -> List[Path]:
    """Split ``d`` by utterance into ``d/split<n>utt/{1..n}`` (reused while newer than ``d``)."""
    d = Path(d)
    utts = [u for u, _ in read_table(d / "utt2spk")]
    out = d / f"split{n}utt"
    done = out / ".done"
    sources = [d / name for name in UTT_FILES if (d / name).is_file()]
    if done.is_file() and all(done.stat().st_mtime >= s.stat().st_mtime for s in sources):
        return [out / str(i) for i in range(1, n + 1)]
    parts = split_rows(utts, n)
    tmp = d / f".split{n}utt.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    for i, part in enumerate(parts, 1):
        subset_data_dir(d, tmp / str(i), part)
    (tmp / ".done").touch()
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return [out / str(i) for i in range(1, n + 1)]


def combine_data_dirs(dest, srcs: Sequence) -> None:
    """Merge data directories; utterance ids must be unique across them. A table missing from
    some source is left out (with a warning) rather than combined partially."""
    dest = Path(dest)
    srcs = [Path(s) for s in srcs]
    if not srcs:
        raise DataDirError("combine: no source directories")
    dest.mkdir(parents=True, exist_ok=True)
    names = [n for n in UTT_FILES + SPK_FILES if any((s / n).is_file() for s in srcs)]
    for name in names:
        missing = [str(s) for s in srcs if not (s / name).is_file()]
        if missing:
            logger.warning("combine_data_dirs %s: %s left out: missing in %s", dest, name,
                           ", ".join(missing))
            (dest / name).unlink(missing_ok=True)
            continue
        merged: Dict[str, Tuple[str, Path]] = {}
        for s in srcs:
            for key, value in read_table(s / name):
                if key in merged and (name not in SPK_FILES or merged[key][0] != value):
                    raise DataDirError(f"combine: id {key!r} of {name} is in both "
                                       f"{merged[key][1]} and {s}")
                merged[key] = (value, s)
        write_table(dest / name, sorted((k, v) for k, (v, _) in merged.items()))
    write_table(dest / "spk2utt", utt2spk_to_spk2utt(read_table(dest / "utt2spk")))


def perturb_speed(src, dest, factor: float) -> None:
    """Speed-perturbed copy of ``src``: ids prefixed ``sp<factor>-``, audio piped through
    ``sox ... speed <factor>`` (pitch and tempo change; the sample rate stays)."""
    src, dest = Path(src), Path(dest)
    prefix = f"sp{factor:g}-"
    dest.mkdir(parents=True, exist_ok=True)
    wav = []
    for rec, entry in read_table(src / "wav.scp", allow_empty_value=False):
        if entry.endswith("|"):
            wav.append((prefix + rec, f"{entry[:-1].strip()} | sox -t wav - -t wav - "
                                      f"speed {factor:g} |"))
        else:
            wav.append((prefix + rec, f"sox {entry} -t wav - speed {factor:g} |"))
    write_table(dest / "wav.scp", wav)
    if (src / "segments").is_file():
        segs = []
        for utt, value in read_table(src / "segments"):
            rec, start, end = value.split()
            segs.append((prefix + utt, f"{prefix}{rec} {float(start) / factor:.2f} "
                                       f"{float(end) / factor:.2f}"))
        write_table(dest / "segments", segs)
    for name in ("text", "utt2lang", "utt2category"):
        if (src / name).is_file():
            write_table(dest / name, [(prefix + k, v) for k, v in read_table(src / name)])
    utt2spk = [(prefix + u, prefix + s) for u, s in read_table(src / "utt2spk")]
    write_table(dest / "utt2spk", utt2spk)
    write_table(dest / "spk2utt", utt2spk_to_spk2utt(utt2spk))
    for name in SPK_FILES:
        if (src / name).is_file():
            write_table(dest / name, [(prefix + k, v) for k, v in read_table(src / name)])


def filter_by_length(d, min_frames: int = 0, max_frames: int = 0) -> Dict[str, List[str]]:
    """Drop utterances shorter than ``min_frames``/longer than ``max_frames`` (0: no limit) or
    with empty transcripts; needs ``utt2num_frames``. Reports what was dropped like fix."""
    d = Path(d)
    frames = {u: int(v) for u, v in read_table(d / "utt2num_frames")}
    keep = {u for u, n in frames.items()
            if n >= min_frames and (max_frames <= 0 or n <= max_frames)}
    return fix_data_dir(d, keep=keep,
                        reason_not_kept=f"length outside [{min_frames}, {max_frames or 'inf'}] "
                                        f"frames")


def _norm_sentence(text: str) -> str:
    # Compare sentences independent of spacing and case (Chinese may be char-split or not).
    return re.sub(r"\s+", "", text).lower()


def prepare_lm_text(inputs: Sequence, output, exclude: Sequence = ()) -> Tuple[int, int]:
    """Concatenate Kaldi-format LM texts into ``output``, removing every sentence that also
    occurs in an ``exclude`` text (dev/test): an LM must never train on evaluation sentences.
    Removed lines go to ``<output>.removed``. Returns (kept, removed)."""
    held_out = set()
    for path in exclude:
        for _, text in read_table(path):
            held_out.add(_norm_sentence(text))
    kept, removed, empty = [], [], []
    seen_ids = set()
    for path in inputs:
        for n, (utt, text) in enumerate(read_table(path), 1):
            if utt in seen_ids:
                raise DataDirError(f"{path}:{n}: LM text id {utt!r} occurs twice in the inputs")
            seen_ids.add(utt)
            if not text:
                empty.append(utt)
                continue
            (removed if _norm_sentence(text) in held_out else kept).append((utt, text))
    if empty:
        logger.warning("LM text %s: %d empty sentence(s) left out: %s", output, len(empty),
                       _ids_listed(empty))
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_table(out.with_name(out.name + ".removed"), removed)
    write_table(out, kept)
    level = logging.WARNING if removed else logging.INFO
    logger.log(level, "LM text %s: %d sentences kept, %d removed because they occur in %s "
               "(listed in %s.removed)", out, len(kept), len(removed),
               ", ".join(str(p) for p in exclude) or "-", out)
    return len(kept), len(removed)
