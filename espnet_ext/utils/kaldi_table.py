"""Kaldi tables: ``<id> <value>`` lines (``text``, ``wav.scp``, ``feats.scp``, ``utt2spk``,
``utt2num_frames``, ``segments``, ...), read and written in one place.

One error behaviour for every reader in the package: a line that is not UTF-8, an empty line, an
id without the value the caller requires, or (for :func:`read_table_dict`) an id seen before is
a :class:`TableError` naming the file, the line and the id. Values are stripped of surrounding
whitespace, as ESPnet's own table reader does, and a bare id has the value ``""``. Standard
library only, so model-side code and recipe tools import it alike.
"""
import os
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Tuple, Union

PathLike = Union[str, Path]
Rows = List[Tuple[str, str]]


class TableError(ValueError):
    """A table (or text file) is malformed; the message names the file and line."""


def decode_line(raw: bytes, path: PathLike, n: int) -> str:
    """Line ``n`` of ``path`` as UTF-8, or a TableError naming the file, line, column and id."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        key = raw.split(maxsplit=1)[0].decode("utf-8", errors="replace") if raw.strip() else ""
        raise TableError(f"{path}:{n}: not UTF-8 (byte 0x{raw[e.start]:02x} at column "
                         f"{e.start + 1}) in the line of {key!r}; convert the file to UTF-8 "
                         f"(e.g. iconv -f GB18030 -t UTF-8)") from None


def read_lines(path: PathLike) -> Iterator[Tuple[int, str]]:
    """``(line number, line without its newline)`` of a UTF-8 text file (decoding errors as in
    :func:`decode_line`)."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            yield n, decode_line(raw, path, n).rstrip("\r\n")


def iter_table(path: PathLike, allow_empty_value: bool = True) -> Iterator[Tuple[str, str]]:
    """``(id, value)`` rows in file order, streamed (ids may repeat: checking them is the
    caller's)."""
    for n, line in read_lines(path):
        parts = line.split(maxsplit=1)
        if not parts:
            raise TableError(f"{path}:{n}: empty line")
        value = parts[1].strip() if len(parts) > 1 else ""
        if not value and not allow_empty_value:
            raise TableError(f"{path}:{n}: id {parts[0]!r} has no value")
        yield parts[0], value


def read_table(path: PathLike, allow_empty_value: bool = True) -> Rows:
    """All rows of :func:`iter_table` as a list."""
    return list(iter_table(path, allow_empty_value))


def read_table_dict(path: PathLike, allow_empty_value: bool = True) -> Dict[str, str]:
    """``{id: value}`` in file order; an id on two lines is a TableError."""
    out: Dict[str, str] = {}
    first: Dict[str, int] = {}
    for n, (key, value) in enumerate(iter_table(path, allow_empty_value), 1):
        if key in out:
            raise TableError(f"{path}:{n}: duplicate id {key!r} (first on line {first[key]})")
        out[key] = value
        first[key] = n
    return out


def write_table(path: PathLike, rows: Iterable[Tuple[str, str]]) -> None:
    """Write ``id value`` lines (a bare id for an empty value) atomically: a crash never leaves a
    half-written table."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for key, value in rows:
            f.write(f"{key} {value}\n" if value != "" else f"{key}\n")
    os.replace(tmp, path)
