"""Collect a recipe's sclite results into RESULTS.md.

Every ``<asr exp>/<decode dir>/<set>/score_<cer|wer|ter>/result.txt`` below the scanned
directories becomes a row ``|dataset|Snt|Wrd|Corr|Sub|Del|Ins|Err|S.Err|Len|`` (percentages from
sclite's Sum/Avg line; dataset = ``<decode dir>/<set>``; Len = mean hypothesis-minus-reference
length per utterance), grouped per experiment and metric. Each
experiment also gets its model classes and config (from ``config.yaml``), parameter count
(counted from a saved model), training wall time (runner log footers of ``train*.log``) and
decoding wall time. LM perplexities and the recipe's per-stage wall times
(``<exp>/stage_times.tsv``, written by asr.sh) are listed too.
"""
import datetime
import os
import platform
import re
import subprocess
from collections import OrderedDict
from importlib import metadata
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from espnet_ext.recipe.scoring import parse_result

REPO_ROOT = Path(__file__).resolve().parents[2]
_ELAPSED_RE = re.compile(r"^# Ended \(code (-?\d+)\) at .*, elapsed time (\d+) seconds")
MODEL_FILES = ("valid.acc.ave.pth", "valid.loss.ave.pth", "valid.acc.best.pth",
               "valid.loss.best.pth", "latest.pth")


_UNITS = {"wer": "words", "cer": "characters", "ter": "tokens"}


def length_difference(result: Dict[str, float]) -> float:
    """Mean hypothesis-minus-reference length per utterance from sclite's Sum/Avg counts:
    insertions lengthen a hypothesis, deletions shorten it, substitutions keep its length."""
    if not result["snt"]:
        return 0.0
    return (result["ins"] - result["del"]) / 100.0 * result["wrd"] / result["snt"]


def log_elapsed(path) -> Optional[int]:
    """Elapsed seconds from a runner log footer (None without footer)."""
    sec = None
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                m = _ELAPSED_RE.match(line)
                if m:
                    sec = int(m.group(2))
    except OSError:
        return None
    return sec


def _yaml(path) -> dict:
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError):
        return {}


def count_parameters(exp: Path) -> Optional[int]:
    """Trainable-size count from a saved state dict: floating tensors, without normalisation
    statistics and BatchNorm running buffers."""
    candidates = [exp / m for m in MODEL_FILES] + sorted(exp.glob("*epoch.pth"))
    model = next((p for p in candidates if p.exists()), None)
    if model is None:
        return None
    import torch

    state = torch.load(model, map_location="cpu", weights_only=True)
    return sum(v.numel() for k, v in state.items()
               if torch.is_tensor(v) and v.is_floating_point() and not k.startswith("normalize.")
               and not re.search(r"running_(mean|var)$", k))


def _human(n: Optional[int]) -> str:
    if n is None:
        return "unknown"
    return f"{n:,} ({n / 1e6:.2f} M)"


def find_scores(roots: List[Path]) -> "OrderedDict[Path, List[Tuple[str, str, Path]]]":
    """{asr exp dir: [(metric, dataset, result.txt)]}; the exp dir is the nearest ancestor of
    the score dir holding config.yaml."""
    found: "OrderedDict[Path, List[Tuple[str, str, Path]]]" = OrderedDict()
    for root in roots:
        for res in sorted(root.rglob("score_*/result.txt")):
            metric = res.parent.name[len("score_"):]
            exp = next((p for p in res.parents if (p / "config.yaml").is_file()), None)
            if exp is None:
                continue
            dataset = str(res.parent.parent.relative_to(exp))
            found.setdefault(exp, []).append((metric, dataset, res))
    return found


def _git_revision(cwd: Path) -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=cwd,
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=cwd, capture_output=True, text=True).stdout.strip()
        return rev + (" (with local changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _version(pkg: str) -> str:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "-"


def stage_times(path: Path) -> List[Tuple[str, str, str, str]]:
    """Latest (stage, name, seconds, status) per stage from asr.sh's stage_times.tsv.

    A later run that found the stage done ("skipped") keeps the run that did the work.
    """
    latest: Dict[str, Tuple[str, str, str, str]] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            f = line.split("\t")
            if len(f) >= 4 and f[0].isdigit():
                if f[3] == "skipped" and latest.get(f[0], ("",) * 4)[3] == "ran":
                    continue
                latest[f[0]] = (f[0], f[1], f[2], f[3])
    return [latest[k] for k in sorted(latest, key=int)]


def render(roots: List[Path], title: str = "RESULTS") -> str:
    lines = [f"# {title}", "",
             f"- date: {datetime.datetime.now().strftime('%Y-%m-%d %H:%M:%S')}",
             f"- host: {platform.node()}, {os.cpu_count()} CPUs, python {platform.python_version()}",
             f"- torch {_version('torch')}, espnet {_version('espnet')}, "
             f"espnet_ext {_version('espnet_ext')}, git {_git_revision(REPO_ROOT)}", ""]
    scores = find_scores(roots)
    if not scores:
        lines += ["No scored decodings found.", ""]
    for exp, items in scores.items():
        cfg = _yaml(exp / "config.yaml")
        parts = [f"{k} {cfg[k]}" for k in ("encoder", "decoder") if cfg.get(k)]
        model = str(cfg.get("model", "?")) + (f" ({', '.join(parts)})" if parts else "")
        train_logs = sorted(exp.glob("train*.log"))
        train_sec = [s for s in (log_elapsed(p) for p in train_logs) if s is not None]
        lines += [f"## {exp}", "",
                  f"- model: {model}; parameters: {_human(count_parameters(exp))}",
                  f"- config: {cfg.get('config', '?')}",
                  "- training wall time: " + (f"{sum(train_sec)} s" + (
                      f" over {len(train_sec)} runs (resumed)" if len(train_sec) > 1 else "")
                      if train_sec else "unknown")]
        decode = []
        for dataset in OrderedDict.fromkeys(d for _, d, _ in items):
            secs = [s for s in (log_elapsed(p) for p in (exp / dataset).glob("logdir/*.log"))
                    if s is not None]
            if secs:
                decode.append(f"{dataset} {max(secs)} s ({len(secs)} jobs)")
        if decode:
            lines.append("- decoding wall time: " + ", ".join(decode))
        lines.append("")
        for metric in OrderedDict.fromkeys(m for m, _, _ in items):
            lines += [f"### {metric.upper()}", "",
                      "|dataset|Snt|Wrd|Corr|Sub|Del|Ins|Err|S.Err|Len|",
                      "|---|---|---|---|---|---|---|---|---|---|"]
            for m, dataset, res in items:
                if m != metric:
                    continue
                r = parse_result(res)
                lines.append(f"|{dataset}|{r['snt']:.0f}|{r['wrd']:.0f}|{r['corr']:.1f}|"
                             f"{r['sub']:.1f}|{r['del']:.1f}|{r['ins']:.1f}|{r['err']:.1f}|"
                             f"{r['serr']:.1f}|{length_difference(r):+.2f}|")
            lines += ["", "Len: mean hypothesis minus reference length per utterance, in "
                      f"{_UNITS.get(metric, metric)} ((Ins - Del) x Wrd / Snt).", ""]
    ppl_rows = []
    for root in roots:
        for ppl in sorted(root.rglob("perplexity_*/ppl")):
            value = ppl.read_text().strip()
            ppl_rows.append(f"|{ppl.parent.parent}|{ppl.parent.name[len('perplexity_'):]}|"
                            f"{float(value):.2f}|")
    if ppl_rows:
        lines += ["## LM perplexity", "", "|lm|dataset|ppl|", "|---|---|---|", *ppl_rows, ""]
    for root in roots:
        rows = stage_times(root / "stage_times.tsv")
        if rows:
            lines += [f"## Stage wall times ({root}/stage_times.tsv, latest run that did each stage's work)",
                      "", "|stage|name|seconds|status|", "|---|---|---|---|"]
            lines += [f"|{a}|{b}|{c}|{d}|" for a, b, c, d in rows]
            lines.append("")
    return "\n".join(lines)


def write_results(roots: List[Path], output: Path, title: str = "RESULTS") -> str:
    text = render(roots, title)
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(output)
    return text
