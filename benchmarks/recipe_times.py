#!/usr/bin/env python
"""Recipe wall and CPU time per stage, from the ``exp/stage_times.tsv`` that asr.sh appends to.

    python benchmarks/recipe_times.py egs/minisynth/asr1            # or .../exp/stage_times.tsv

The file has a header and one row per step (stage, name, tag, wall_s, cpu_s, load_1_5_15, date,
status ran/skipped). Reported: per stage and tag, the latest row that did work (else the latest
row), how many times it ran, and a total. ``--quick`` reads a built-in example (harness check).
"""
import os
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import base_parser, emit  # noqa: E402

HEADER = "stage\tname\ttag\twall_s\tcpu_s\tload_1_5_15\tdate\tstatus"
EXAMPLE = (HEADER + "\n"
           "1\tdata preparation\t-\t7\t5\t0.50 0.40 0.30\t2026-01-01T00:00:07\tran\n"
           "3\tfbank features\ttrain dev\t30\t52\t1.90 1.20 0.60\t2026-01-01T00:00:37\tran\n"
           "3\tfbank features\ttrain dev\t0\t0\t0.20 0.90 0.60\t2026-01-01T01:00:00\tskipped\n")


def stage_table(tsv: Path) -> List[Dict]:
    if not tsv.is_file():
        raise SystemExit(f"{tsv}: no such file (run the recipe first; asr.sh writes it)")
    lines = tsv.read_text(encoding="utf-8").splitlines()
    if not lines or lines[0] != HEADER:
        raise SystemExit(f"{tsv}:1: expected the header {HEADER!r} (a stage_times.tsv of asr.sh)")
    latest: Dict[tuple, Dict] = {}
    runs: Dict[tuple, int] = {}
    for n, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        f = line.split("\t")
        if len(f) != 8 or not f[0].isdigit() or not f[3].isdigit() or not f[4].isdigit():
            raise SystemExit(f"{tsv}:{n}: expected 8 tab-separated fields ({HEADER}), got {line!r}")
        key = (int(f[0]), f[2])
        row = {"stage": key[0], "name": f[1], "tag": f[2], "wall_s": int(f[3]), "cpu_s": int(f[4]),
               "status": f[7], "date": f[6]}
        runs[key] = runs.get(key, 0) + (f[7] == "ran")
        if f[7] == "ran" or key not in latest or latest[key]["status"] != "ran":
            latest[key] = row
    rows = []
    for key in sorted(latest):
        rows.append({**latest[key], "runs": runs[key]})
    rows.append({"stage": "total", "name": "latest run of every stage and tag", "tag": "",
                 "wall_s": sum(r["wall_s"] for r in rows), "cpu_s": sum(r["cpu_s"] for r in rows),
                 "status": "", "runs": "", "date": ""})
    return rows


def main(argv=None) -> List[Dict]:
    p = base_parser(__doc__.split("\n\n")[0])
    p.add_argument("recipe", nargs="?", default="egs/minisynth/asr1",
                   help="recipe directory (reads exp/stage_times.tsv) or a stage_times.tsv")
    args = p.parse_args(argv)
    if args.quick:
        with tempfile.TemporaryDirectory() as tmp:
            tsv = Path(tmp) / "stage_times.tsv"
            tsv.write_text(EXAMPLE)
            rows = stage_table(tsv)
        source = "built-in example (--quick)"
    else:
        path = Path(args.recipe)
        tsv = path if path.is_file() else path / "exp" / "stage_times.tsv"
        rows = stage_table(tsv)
        source = str(tsv)
    emit(f"recipe_times ({source})", rows, args, ["stage", "name", "tag", "wall_s", "cpu_s", "status", "runs", "date"])
    return rows


if __name__ == "__main__":
    main()
