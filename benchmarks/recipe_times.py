#!/usr/bin/env python
"""Recipe wall time per stage, from the ``exp/stage_times.tsv`` that asr.sh appends to.

    python benchmarks/recipe_times.py egs/minisynth/asr1            # or .../exp/stage_times.tsv

One row per stage: the latest run's wall seconds and status (ran/skipped), how many times the
stage has run, and, when the recipe also wrote ``exp/run_times.tsv`` (run.sh's per-step wall and
CPU seconds), the CPU seconds of the latest step that covered that single stage. ``--quick`` reads
a built-in two-stage example (harness check).
"""
import os
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import base_parser, emit  # noqa: E402

EXAMPLE = "1\tdata preparation\t7\tran\t2026-01-01T00:00:07\n3\tfbank features\t30\tran\t2026-01-01T00:00:37\n"


def stage_table(tsv: Path) -> List[Dict]:
    if not tsv.is_file():
        raise SystemExit(f"{tsv}: no such file (run the recipe first; asr.sh writes it)")
    latest: Dict[int, Dict] = {}
    runs: Dict[int, int] = {}
    for n, line in enumerate(tsv.read_text(encoding="utf-8").splitlines(), 1):
        f = line.split("\t")
        if not line.strip():
            continue
        if len(f) < 4 or not f[0].isdigit() or not f[2].lstrip("-").isdigit():
            raise SystemExit(f"{tsv}:{n}: expected 'stage<TAB>name<TAB>seconds<TAB>status[<TAB>date]', got {line!r}")
        s = int(f[0])
        runs[s] = runs.get(s, 0) + (f[3] == "ran")
        latest[s] = {"stage": s, "name": f[1], "wall_s": int(f[2]), "status": f[3],
                     "date": f[4] if len(f) > 4 else ""}
    cpu = _cpu_by_stage(tsv.parent / "run_times.tsv")
    rows = []
    for s in sorted(latest):
        r = latest[s]
        r["runs"] = runs[s]
        r["cpu_s"] = cpu.get(s, "")
        rows.append(r)
    rows.append({"stage": "total", "name": "latest run of every stage",
                 "wall_s": sum(r["wall_s"] for r in rows), "status": "", "runs": "", "cpu_s": "",
                 "date": ""})
    return rows


def _cpu_by_stage(path: Path) -> Dict[int, int]:
    """run_times.tsv: step, stages, config, wall_s, cpu_s, ... (header line first)."""
    out: Dict[int, int] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines()[1:]:
            f = line.split("\t")
            if len(f) >= 5 and f[1].isdigit() and f[4].isdigit():
                out[int(f[1])] = int(f[4])
    return out


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
    emit(f"recipe_times ({source})", rows, args, ["stage", "name", "wall_s", "cpu_s", "status", "runs", "date"])
    return rows


if __name__ == "__main__":
    main()
