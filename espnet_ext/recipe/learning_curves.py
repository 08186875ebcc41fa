"""Learning curves of a recipe's trainings for RESULTS.md (asr.sh stage 16).

Per epoch train/valid loss and accuracy (and teacher-forced valid CER/WER) of every
``<exp>/{asr,lm}_*/train.log``, read from ESPnet's "Nepoch results" lines, as a table and as
``<exp>/learning_curves.png`` (every loss part, accuracy, the CIF count error: train solid, valid
dashed). TensorBoard logs come from ESPnet itself: ``--asr_args "--use_tensorboard true"``.
"""
import re
from collections import OrderedDict
from pathlib import Path
from typing import Dict, List

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


def series(log: Path) -> "OrderedDict[str, Dict[str, List]]":
    """{panel: {"<split> <key>": [(epoch, value), ...]}} of a train.log: panel "loss" holds
    every ``loss*`` key, "accuracy" ``acc``, "CIF count error" ``cif_count_err`` (tokens per
    utterance); empty panels are left out."""
    panels: "OrderedDict[str, Dict[str, List]]" = OrderedDict(
        (p, OrderedDict()) for p in ("loss", "accuracy", "CIF count error"))
    for ep, sections in parse_epochs(log).items():
        for split in ("train", "valid"):
            for key, value in sections.get(split, {}).items():
                panel = ("loss" if key.startswith("loss") and key != "loss_scale" else
                         "accuracy" if key == "acc" else
                         "CIF count error" if key == "cif_count_err" else None)
                try:
                    number = float(value)
                except ValueError:
                    continue
                if panel is not None:
                    panels[panel].setdefault(f"{split} {key}", []).append((ep, number))
    return OrderedDict((p, c) for p, c in panels.items() if c)


def plot(log: Path, png: Path) -> bool:
    """Write the curves of ``log`` to ``png``; False when the log has no epoch yet."""
    curves = series(log)
    if not curves:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3.6), squeeze=False)
    for ax, (panel, lines) in zip(axes[0], curves.items()):
        for name, points in lines.items():
            ax.plot(*zip(*points), "-" if name.startswith("train") else "--", marker=".", label=name)
        ax.set_title(panel)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(str(log.parent))
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return True


def section(roots: List[Path]) -> list:
    """The "Learning curves" section: per ASR and LM training below ``roots`` a table and its
    PNG (written next to the train.log)."""
    curves = []
    for root in roots:
        for log in sorted(root.glob("asr_*/train.log")) + sorted(root.glob("lm_*/train.log")):
            table = learning_curve(log)
            png = log.parent / "learning_curves.png"
            if table and plot(log, png):
                table.insert(2, f"![learning curves of {log.parent}]({png})")
                table.insert(3, "")
            curves += table
    if not curves:
        return []
    return ["## Learning curves (ESPnet train.log; tf = teacher-forced)", ""] + curves
