#!/usr/bin/env python3
"""Markdown sections that run.sh appends to RESULTS.md (after asr.sh's sclite tables):

- wall and CPU time of every run.sh step (``exp/run_times.tsv``: latest row per step and config)
  with the machine load, since the machine may be shared and CPU time is what carries over;
- learning curves: per epoch train/valid loss and accuracy (and teacher-forced valid CER/WER) of
  every ``exp/{asr,lm}_*/train.log`` (ESPnet's "Nepoch results" lines);
- the CIF fire plots found under exp/.

    local/recipe_report.py --exp exp >> RESULTS.md
"""
import argparse
import re
import sys
from collections import OrderedDict
from pathlib import Path

_EPOCH_RE = re.compile(r"INFO: (\d+)epoch results: (.*)$")
_SECTION_RE = re.compile(r"\[(\w+)\] ")
_TIME_RE = re.compile(r"(?:(\d+) minutes? and )?([\d.]+) seconds")


def parse_epochs(log: Path) -> "OrderedDict[int, dict]":
    """{epoch: {"train": {key: value}, "valid": {...}}} from an ESPnet train.log (last run wins)."""
    epochs: "OrderedDict[int, dict]" = OrderedDict()
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        m = _EPOCH_RE.search(line)
        if not m:
            continue
        sections, parts = {}, _SECTION_RE.split(m.group(2))
        for name, body in zip(parts[1::2], parts[2::2]):
            values = {}
            for item in body.split(", "):
                key, _, value = item.partition("=")
                values[key.strip()] = value.strip().rstrip(",")
            sections[name] = values
        epochs[int(m.group(1))] = sections
    return epochs


def _seconds(text: str):
    m = _TIME_RE.search(text or "")
    if not m:
        return None
    return int(m.group(1) or 0) * 60 + float(m.group(2))


def _num(values: dict, key: str, fmt: str = "{:.3f}") -> str:
    try:
        return fmt.format(float(values[key]))
    except (KeyError, ValueError):
        return "-"


def learning_curve(log: Path) -> list:
    epochs = parse_epochs(log)
    if not epochs:
        return []
    is_asr = any("acc" in e.get("train", {}) for e in epochs.values())
    head = ["epoch", "train loss", "valid loss"]
    if is_asr:
        head += ["train acc", "valid acc", "valid CER (tf)", "valid WER (tf)"]
    head += ["epoch s"]
    lines = [f"### {log.parent}", "", "|" + "|".join(head) + "|", "|" + "---|" * len(head)]
    for ep, s in epochs.items():
        tr, va = s.get("train", {}), s.get("valid", {})
        row = [str(ep), _num(tr, "loss"), _num(va, "loss")]
        if is_asr:
            row += [_num(tr, "acc"), _num(va, "acc"), _num(va, "cer"), _num(va, "wer")]
        secs = [x for x in (_seconds(tr.get("time")), _seconds(va.get("time"))) if x is not None]
        row.append(f"{sum(secs):.0f}" if secs else "-")
        lines.append("|" + "|".join(row) + "|")
    return lines + [""]


def timing_table(path: Path) -> list:
    if not path.is_file():
        return []
    rows: "OrderedDict[tuple, list]" = OrderedDict()
    for line in path.read_text(encoding="utf-8").splitlines()[1:]:
        f = line.split("\t")
        if len(f) >= 7:
            key = (f[0], f[2])
            # The latest run of each step, in run order; a rerun that found the step done (no
            # CPU spent) keeps the run that did the work.
            if key in rows and float(f[4]) < 1 <= float(rows[key][4]):
                continue
            rows[key] = f
    if not rows:
        return []
    lines = ["## Wall and CPU time per step (run.sh, exp/run_times.tsv)", "",
             "CPU time = user + system time of every process of the step; the load average "
             "(1/5/15 min, at the end of the step) shows how busy the machine was.", "",
             "|step|stages|config|wall s|CPU s|load|finished|", "|---|---|---|---|---|---|---|"]
    wall = cpu = 0.0
    for f in rows.values():
        lines.append("|" + "|".join(f[:7]) + "|")
        wall += float(f[3])
        cpu += float(f[4])
    lines += [f"|**total**||||{wall:.0f} s ({wall / 60:.1f} min)|{cpu:.0f} s ({cpu / 60:.1f} min)||", ""]
    return lines


def main(cmd=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp", type=Path, default=Path("exp"))
    args = p.parse_args(cmd)
    out = [""] + timing_table(args.exp / "run_times.tsv")
    curves = []
    for log in sorted(args.exp.glob("asr_*/train.log")) + sorted(args.exp.glob("lm_*/train.log")):
        curves += learning_curve(log)
    if curves:
        out += ["## Learning curves (ESPnet train.log; tf = teacher-forced)", ""] + curves
    plots = sorted(args.exp.rglob("cif_fires_*.png"))
    if plots:
        out += ["## CIF fire positions", ""] + [f"- [{png}]({png})" for png in plots] + [""]
    sys.stdout.write("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
