"""Collect a recipe's results into RESULTS.md (asr.sh stage 16).

Every ``<asr exp>/<decode dir>/<set>/score_<cer|wer|ter>/result.txt`` below the scanned
directories becomes a row ``|dataset|Snt|Wrd|Corr|Sub|Del|Ins|Err|S.Err|Len|`` (percentages from
sclite's Sum/Avg line; dataset = ``<decode dir>/<set>``; Len = mean hypothesis-minus-reference
length per utterance), grouped per experiment and metric. Each
experiment also gets its model classes and config (from ``config.yaml``), parameter count
(counted from a saved model), training wall time (runner log footers of ``train*.log``) and
decoding wall time. Then the LM perplexities, the wall and CPU time of every stage
(``<exp>/stage_times.tsv``, written by asr.sh), the learning curves, the CIF fire plots, and the
section files earlier stages wrote: Table 3 of each internal-LM experiment
(``<exp>/ilm_*/RESULTS.md``), HKD Table 1 (``<exp>/table1_*.md``) and both over seeds
(``<exp>/seed_tables.md``).
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

from espnet_ext.recipe import learning_curves
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


STAGE_TIMES_HEADER = ("stage", "name", "tag", "wall_s", "cpu_s", "load_1_5_15", "date", "status")


def stage_times(path: Path) -> List[Dict[str, str]]:
    """Rows of asr.sh's stage_times.tsv, one per (stage, name, tag), by stage and then in the
    order they first ran: the latest row of each, except that a later run that found the step
    done ("skipped") keeps the row of the run that did its work."""
    latest: "OrderedDict[Tuple[str, str, str], Dict[str, str]]" = OrderedDict()
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            f = line.split("\t")
            if len(f) != len(STAGE_TIMES_HEADER) or not f[0].isdigit():
                continue  # the header (or a row of another layout)
            row = dict(zip(STAGE_TIMES_HEADER, f))
            key = (row["stage"], row["name"], row["tag"])
            if row["status"] == "skipped" and latest.get(key, {}).get("status") == "ran":
                continue
            latest[key] = row
    return sorted(latest.values(), key=lambda r: int(r["stage"]))


def stage_times_section(root: Path) -> List[str]:
    rows = stage_times(root / "stage_times.tsv")
    if not rows:
        return []
    lines = [f"## Wall and CPU time per stage ({root}/stage_times.tsv)", "",
             "CPU time = user + system time of every process of the stage; the load average "
             "(1/5/15 min, at the end of the stage) shows how busy the machine was. A rerun that "
             "found a stage done keeps the row of the run that did its work.", "",
             "|stage|name|config/tag|wall s|CPU s|load|finished|status|",
             "|---|---|---|---|---|---|---|---|"]
    wall = cpu = 0
    for r in rows:
        lines.append(f"|{r['stage']}|{r['name']}|{r['tag']}|{r['wall_s']}|{r['cpu_s']}|"
                     f"{r['load_1_5_15']}|{r['date']}|{r['status']}|")
        wall += int(r["wall_s"])
        cpu += int(r["cpu_s"])
    lines += [f"|**total**|||{wall} s ({wall / 60:.1f} min)|{cpu} s ({cpu / 60:.1f} min)||||", ""]
    return lines


def fire_plots_section(roots: List[Path]) -> List[str]:
    plots = sorted(p for root in roots for p in root.rglob("cif_fires_*.png"))
    if not plots:
        return []
    return ["## CIF fire positions", ""] + [f"- [{png}]({png})" for png in plots] + [""]


def section_files(roots: List[Path]) -> List[Path]:
    """Sections written by earlier stages (and earlier asr.sh calls of the recipe): Table 3 of
    every internal-LM experiment, then HKD Table 1 of every distiller set, then both tables over
    seeds (``seed_tables.md``, local/seed_tables.sh)."""
    found = []
    for root in roots:
        found += sorted(root.glob("ilm_*/RESULTS.md"))
    for root in roots:
        found += sorted(root.glob("table1_*.md"))
    for root in roots:
        found += sorted(root.glob("seed_tables*.md"))
    return found


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
        # train.log and ESPnet's rotated train.<n>.log of earlier runs; not the logs of the other
        # nodes of a multi-node training (train.node<k>.log: same run).
        train_logs = sorted(p for p in exp.glob("train*.log") if re.fullmatch(r"train(\.\d+)?\.log", p.name))
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
        packed = exp / "packed_model.zip"
        if packed.is_file():
            lines.append(f"- packed model: {packed} ({packed.stat().st_size / 2**20:.1f} MiB; "
                         f"`python -m espnet_ext.bin.transcribe --packed_model {packed} a.wav`)")
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
        for table in sorted(exp.glob("timestamps/*/timestamps.md")):
            lines += [f"### Word timestamps ({table.parent.name}, no LM)", "",
                      table.read_text(encoding="utf-8").rstrip("\n"), ""]
    ppl_rows = []
    for root in roots:
        for ppl in sorted(root.rglob("perplexity_*/ppl")):
            value = ppl.read_text().strip()
            ppl_rows.append(f"|{ppl.parent.parent}|{ppl.parent.name[len('perplexity_'):]}|"
                            f"{float(value):.2f}|")
    if ppl_rows:
        lines += ["## LM perplexity", "", "|lm|dataset|ppl|", "|---|---|---|", *ppl_rows, ""]
    for root in roots:
        lines += stage_times_section(root)
    lines += learning_curves.section(roots)
    lines += fire_plots_section(roots)
    for path in section_files(roots):
        lines += [path.read_text(encoding="utf-8").rstrip("\n"), ""]
    return "\n".join(lines)


def write_results(roots: List[Path], output: Path, title: str = "RESULTS") -> str:
    text = render(roots, title)
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(output)
    return text
