"""Done markers that vouch for the files of their step.

A recipe step is done when its marker ``<dir>/.done.<step>`` holds: the marker is a JSON record,
written when the step completed, of

- its **inputs**: content digest and size of small files (scp lists, transcripts, configs), size
  and modification time of large ones (model checkpoints),
- the **audio** a ``wav.scp`` points to: size and modification time of every file it names (a
  replaced recording at the same path changes both),
- its **outputs**: size and modification time (a truncated ark, a rewritten or deleted hypothesis
  file),
- paths that must merely **exist** (outputs that a later step edits in place),
- an **options** string (the command line or settings the outputs depend on).

:func:`check` says why a marker no longer holds, or returns None. A marker without a record (an
empty file, as ``touch`` made them) holds nothing and is stale.
"""
import hashlib
import json
import os
from pathlib import Path
from typing import Dict, Iterable, List, Optional

HASH_LIMIT = 64 << 20  # inputs up to this size are compared by content, larger ones by size+mtime
VERSION = 1


def _stat(path: str) -> Optional[List[int]]:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _input_state(path: str) -> Optional[list]:
    st = _stat(path)
    if st is None or st[0] > HASH_LIMIT or os.path.isdir(path):
        return st
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return [st[0], h.hexdigest()]


def audio_paths(wav_scp: str) -> List[str]:
    """The files a ``wav.scp`` reads: a plain path (an ``ark:offset`` suffix dropped), or every
    word of a pipe command that names an existing file."""
    paths: List[str] = []
    with open(wav_scp, encoding="utf-8") as f:
        for line in f:
            parts = line.strip().split(maxsplit=1)
            if len(parts) < 2:
                continue
            value = parts[1].strip()
            if value.endswith("|"):
                paths.extend(w for w in value[:-1].split() if os.path.isfile(w))
            else:
                head, sep, tail = value.rpartition(":")
                paths.append(head if sep and tail.isdigit() else value)
    return paths


def record(inputs: Iterable[str] = (), audio_of: Iterable[str] = (), outputs: Iterable[str] = (),
           exists: Iterable[str] = (), options: str = "") -> Dict:
    """The record of a completed step (missing inputs or outputs are recorded as null)."""
    audio: Dict[str, Optional[List[int]]] = {}
    for scp in audio_of:
        for p in audio_paths(scp):
            audio[p] = _stat(p)
    return {"version": VERSION,
            "inputs": {p: _input_state(p) for p in inputs},
            "audio": audio,
            "outputs": {p: _stat(p) for p in outputs},
            "exists": sorted(set(exists)),
            "options": options}


def write(marker: str, **kwargs) -> None:
    """Write the marker of a completed step (atomically: a marker is whole or absent)."""
    rec = record(**kwargs)
    missing = [p for p, st in rec["outputs"].items() if st is None] + \
        [p for p in rec["exists"] if not os.path.exists(p)]
    if missing:
        raise FileNotFoundError(f"{marker}: the step's outputs are missing: {' '.join(missing)}")
    Path(marker).parent.mkdir(parents=True, exist_ok=True)
    tmp = f"{marker}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(rec, f, ensure_ascii=False)
    os.replace(tmp, marker)


def _describe(old, new) -> str:
    if new is None:
        return "is missing"
    if old is None:
        return "appeared"
    if old[0] != new[0]:
        return f"changed size ({old[0]} -> {new[0]} bytes)"
    return "changed content" if isinstance(new[1], str) else "was modified"


def check(marker: str, options: Optional[str] = None) -> Optional[str]:
    """None if ``marker`` holds; otherwise why not (one line). ``options``, when given, must equal
    the recorded ones."""
    try:
        with open(marker, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return f"{marker} does not exist"
    try:
        rec = json.loads(text)
        assert rec.get("version") == VERSION
    except (ValueError, AssertionError, AttributeError):
        return f"{marker} holds no record of its files (written by an earlier version)"
    for p, old in rec["outputs"].items():
        new = _stat(p)
        if new != old:
            return f"output {p} {_describe(old, new)}"
    for p in rec["exists"]:
        if not os.path.exists(p):
            return f"output {p} is missing"
    for p, old in rec["inputs"].items():
        new = _input_state(p)
        if new != old:
            return f"input {p} {_describe(old, new)}"
    for p, old in rec["audio"].items():
        new = _stat(p)
        if new != old:
            return f"audio file {p} {_describe(old, new)}"
    if options is not None and options != rec["options"]:
        return "options changed"
    return None


def holds(marker: str, options: Optional[str] = None) -> bool:
    return check(marker, options) is None
