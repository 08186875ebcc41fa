"""HKD Table 1 and DR-KD Table 3 over several model-training seeds: per row the mean ± sample
standard deviation of the error rate, the seeds behind it, the papers' numbers
(:mod:`espnet_ext.recipe.paper_numbers`) and, per column, a sentence on whether the paper's
ordering of the rows holds in our means and which adjacent differences exceed the seed spread.

``local/seed_tables.sh`` runs the recipe once per seed N into ``<expdir>/seed<N>`` (asr.sh's
layout); this module reads the sclite results there as the table writers do:

- Table 1: ``table1_<tag>.md`` marks the Table 1 run of ASR tag <tag>; its rows are
  ``asr_<tag>`` (CIF) and ``asr_<tag>_<distiller>`` (+<DISTILLER>), each read by
  ``hkd_table1.error_rate`` (the test set decoded without and with the LM);
- Table 3: ``ilm_<tag>/decode_<condition>_<method>/<set>/score_<type>/result.txt`` (as
  ``ilm_results`` reads them), one column per condition and test set.

A result a seed lacks is listed under its table and left out of that cell's mean (the cell says
over how many seeds), never dropped silently. Spread criterion: two rows differ by more than the
seed spread when ``|mean_a - mean_b| > max(std_a, std_b)`` (sample standard deviations, n - 1 in
the denominator); a row with fewer than two seeds has no standard deviation and no verdict.
"""
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from espnet_ext.recipe.bin.hkd_table1 import error_rate
from espnet_ext.recipe.bin.ilm_results import METHOD_NAMES
from espnet_ext.recipe.paper_numbers import DRKD_TABLE3, HKD_TABLE1, PaperTable
from espnet_ext.recipe.results import stage_times
from espnet_ext.recipe.scoring import parse_result

TABLE1_ORDER = ("acd", "lrd", "hkd")  # the paper's rows after CIF; other distillers follow, sorted
CONDITIONS = ("intra", "cross")
TIE = 1e-9  # means closer than this are equal (sclite rounds to 0.1)


def mean_std(values: Sequence[float]) -> Tuple[Optional[float], Optional[float]]:
    """Mean and sample standard deviation (None below two values; both None without values)."""
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


@dataclass
class Row:
    """One system: ``values[column key][seed]`` = its error rate (seeds without a result absent)."""

    label: str
    values: Dict[str, Dict[int, float]] = field(default_factory=dict)

    def stats(self, key: str) -> Tuple[Optional[float], Optional[float], int]:
        got = self.values.get(key, {})
        mean, std = mean_std([got[s] for s in sorted(got)])
        return mean, std, len(got)


@dataclass
class SeedTable:
    """A table over seeds: ``columns`` = [(key, heading, paper column key)]."""

    title: str
    metric: str
    columns: List[Tuple[str, str, str]]
    rows: List[Row]
    paper: PaperTable


def seed_dirs(expdir: Path, seeds: Sequence[int]) -> Dict[int, Path]:
    return {s: Path(expdir) / f"seed{s}" for s in seeds}


def _err(path: Path) -> Optional[float]:
    return parse_result(path)["err"] if path.is_file() else None


def read_table1(dirs: Dict[int, Path], test_set: str = "test_in",
                score_type: str = "wer") -> List[SeedTable]:
    """One table per Table 1 run (``table1_<tag>.md`` in any seed's directory)."""
    tags = sorted({p.name[len("table1_"):-len(".md")] for d in dirs.values() for p in d.glob("table1_*.md")})
    tables = []
    for tag in tags:
        suffixes = {p.name[len(f"asr_{tag}_"):] for sdir in dirs.values() for p in sdir.glob(f"asr_{tag}_*")
                    if p.is_dir()}
        distillers = [x for x in TABLE1_ORDER if x in suffixes] + sorted(suffixes - set(TABLE1_ORDER))
        rows = []
        for label, name in [("CIF", f"asr_{tag}")] + [(f"+{d.upper()}", f"asr_{tag}_{d}") for d in distillers]:
            row = Row(label, {"nolm": {}, "lm": {}})
            for seed, sdir in dirs.items():
                for key, with_lm in (("nolm", False), ("lm", True)):
                    result = error_rate(sdir / name, test_set, with_lm, score_type)
                    if result is not None:
                        row.values[key][seed] = result["err"]
            rows.append(row)
        metric = score_type.upper()
        tables.append(SeedTable(
            f"HKD paper Table 1 over seeds: {metric} (%) on {test_set}, <seed dir>/asr_{tag}[_<distiller>]",
            metric, [("nolm", "no LM", "nolm"), ("lm", "with LM", "lm")], rows, HKD_TABLE1))
    return tables


def read_table3(dirs: Dict[int, Path], score_type: str = "wer") -> List[SeedTable]:
    """One table per internal-LM experiment (``ilm_<tag>`` in any seed's directory)."""
    tags = sorted({p.name[len("ilm_"):] for d in dirs.values() for p in d.glob("ilm_*") if p.is_dir()})
    tables = []
    for tag in tags:
        found: Dict[Tuple[str, str, str], Dict[int, float]] = {}  # (condition, set, method) -> seeds
        for seed, sdir in dirs.items():
            for res in (sdir / f"ilm_{tag}").glob(f"decode_*/*/score_{score_type}/result.txt"):
                condition, _, method = res.parents[2].name[len("decode_"):].partition("_")
                err = _err(res)
                if condition in CONDITIONS and method and err is not None:
                    found.setdefault((condition, res.parents[1].name, method), {})[seed] = err
        cols = sorted({(c, s) for c, s, _ in found}, key=lambda cs: (CONDITIONS.index(cs[0]), cs[1]))
        methods = {m for _, _, m in found}
        order = [m for m in METHOD_NAMES if m in methods] + sorted(methods - set(METHOD_NAMES))
        rows = [Row(METHOD_NAMES.get(m, m), {f"{c}/{s}": dict(found.get((c, s, m), {})) for c, s in cols})
                for m in order]
        metric = score_type.upper()
        tables.append(SeedTable(
            f"DR-KD paper Table 3 over seeds: {metric} (%), <seed dir>/ilm_{tag}", metric,
            [(f"{c}/{s}", f"{c} {s}", c) for c, s in cols], rows, DRKD_TABLE3))
    return tables


def _order_text(items: List[Tuple[str, float]]) -> str:
    """'A < B = C < D' for (label, value) pairs sorted by value."""
    out = items[0][0]
    for (_, prev), (label, value) in zip(items, items[1:]):
        out += (" = " if value == prev else " < ") + label
    return out


def ordering_sentence(table: SeedTable, key: str, heading: str, paper_key: str) -> str:
    """Whether the paper's order of the rows (lowest error first) holds in our means, and, for each
    pair adjacent in the paper's order, whether our difference exceeds the seed spread."""
    items = []  # (label, paper value, mean, std)
    for row in table.rows:
        paper = table.paper.values.get(row.label, {}).get(paper_key)
        mean, std, _ = row.stats(key)
        if paper is not None and mean is not None:
            items.append((row.label, paper, mean, std))
    head = f"**{heading}.**"
    if len(items) < 2:
        return f"{head} Fewer than two rows have both a result and a paper number: no ordering to compare."
    by_paper = sorted(items, key=lambda it: it[1])
    ours = sorted(items, key=lambda it: it[2])
    pairs = [(a, b) for i, a in enumerate(by_paper) for b in by_paper[i + 1:] if a[1] < b[1]]
    n_reversed = sum(a[2] > b[2] for a, b in pairs)
    n_tied = sum(abs(a[2] - b[2]) < TIE for a, b in pairs)
    text = (f"{head} The paper's order (lowest {table.paper.metric.split()[0]} first: "
            f"{_order_text([(it[0], it[1]) for it in by_paper])}) ")
    if n_reversed:
        text += f"does not hold in our means ({n_reversed} of {len(pairs)} pairs reversed"
        text += f", {n_tied} equal)" if n_tied else ")"
    elif n_tied:
        text += f"holds in our means only up to ties ({n_tied} of {len(pairs)} pairs equal)"
    else:
        text += "holds in our means"
    text += (f"; our means, lowest {table.metric} first: "
             + ", ".join(f"{it[0]} {it[2]:.2f}" for it in ours) + ".")
    adjacent, exceed, against, spreadless = [], 0, 0, 0
    for a, b in zip(by_paper, by_paper[1:]):
        delta = b[2] - a[2]
        if a[3] is None or b[3] is None:
            spreadless += 1
            adjacent.append(f"{a[0]}→{b[0]} {delta:+.2f} (no spread)")
            continue
        spread = max(a[3], b[3])
        if abs(delta) > spread:
            exceed += 1
            if a[1] < b[1] and delta < 0:
                against += 1
            adjacent.append(f"{a[0]}→{b[0]} {delta:+.2f} > {spread:.2f}")
        else:
            adjacent.append(f"{a[0]}→{b[0]} {delta:+.2f} ≤ {spread:.2f}")
    text += (" Adjacent rows of the paper's order, Δ = our mean of the second − the first (positive: the "
             "paper's direction) against the larger of their seed standard deviations: "
             + "; ".join(adjacent) + "; ")
    if spreadless == len(adjacent):
        return text + "no pair has a seed spread (a row with fewer than 2 seeds has none)."
    text += f"{exceed} of {len(adjacent) - spreadless} exceed the seed spread"
    if against:
        text += f" ({against} of them against the paper's direction)"
    if spreadless:
        text += f"; {spreadless} without a spread (a row with fewer than 2 seeds)"
    return text + "."


def _cell(mean: Optional[float], std: Optional[float], n: int, n_seeds: int) -> str:
    if mean is None:
        return "-"
    text = f"{mean:.2f} ± {std:.2f}" if std is not None else f"{mean:.2f}"
    return text + (f" ({n} of {n_seeds} seeds)" if n < n_seeds else "")


def render_table(table: SeedTable, seeds: Sequence[int]) -> List[str]:
    p = table.paper
    lines = [f"### {table.title}", "",
             "|system|" + "|".join(f"{h}: mean ± std" for _, h, _ in table.columns) + "|seeds|"
             + "|".join(f"{h} per seed ({', '.join(map(str, seeds))})" for _, h, _ in table.columns)
             + "|" + "|".join(f"paper {p.metric}: {p.columns.get(pk, pk)}" for _, _, pk in table.columns) + "|",
             "|---" * (2 + 3 * len(table.columns)) + "|"]
    missing = []
    for row in table.rows:
        stats = [row.stats(k) for k, _, _ in table.columns]
        counts = [n for _, _, n in stats]
        per_seed = [", ".join(f"{row.values[k][s]:.1f}" if s in row.values.get(k, {}) else "-" for s in seeds)
                    for k, _, _ in table.columns]
        paper = [p.values.get(row.label, {}).get(pk) for _, _, pk in table.columns]
        lines.append(f"|{row.label}|" + "|".join(_cell(m, sd, n, len(seeds)) for m, sd, n in stats)
                     + f"|{counts[0] if len(set(counts)) == 1 else ' / '.join(map(str, counts))}|"
                     + "|".join(per_seed) + "|"
                     + "|".join(f"{v:.{p.decimals}f}" if v is not None else "-" for v in paper) + "|")
    # Seeds without any result in this table are named once; other gaps cell by cell.
    absent = [s for s in seeds if not any(s in got for r in table.rows for got in r.values.values())]
    if absent:
        missing.append(f"seed{'s' if len(absent) > 1 else ''} {', '.join(map(str, absent))}: no result yet")
    for row in table.rows:
        for k, h, _ in table.columns:
            lacking = [s for s in seeds if s not in row.values.get(k, {}) and s not in absent]
            if lacking:
                missing.append(f"{row.label} {h}: seed{'s' if len(lacking) > 1 else ''} "
                               + ", ".join(map(str, lacking)))
    lines.append("")
    sources = sorted({f"{r.label}: {p.source(r.label)}" for r in table.rows
                      if r.label in p.values and p.source(r.label) != p.table})
    lines.append(f"Paper: {p.paper}, {p.table}, {p.metric}" + (f"; {'; '.join(sources)}" if sources else "")
                 + ". Per seed: values in seed order, - = no result.")
    lines.append("")
    if missing:
        lines += ["Missing results (left out of the means above): " + "; ".join(missing) + ".", ""]
    for key, heading, pk in table.columns:
        lines += [ordering_sentence(table, key, heading, pk), ""]
    return lines


def seed_summary(dirs: Dict[int, Path]) -> List[str]:
    """Per seed: its stage wall time (asr.sh's stage_times.tsv), or that it has not run."""
    lines = []
    for seed, d in dirs.items():
        if not d.is_dir():
            lines.append(f"- seed {seed}: not run (no {d})")
            continue
        rows = stage_times(d / "stage_times.tsv")
        if not rows:
            lines.append(f"- seed {seed}: {d}, no stage times yet ({d}/stage_times.tsv)")
            continue
        wall = sum(int(r["wall_s"]) for r in rows)
        lines.append(f"- seed {seed}: {d}, {wall} s ({wall / 60:.1f} min) of stage wall time, "
                     f"{sum(r['status'] == 'ran' for r in rows)} steps run ({d}/stage_times.tsv)")
    return lines


def render(expdir: Path, seeds: Sequence[int], test_set: str = "test_in", score_type: str = "wer") -> str:
    """The Markdown section: both tables over ``<expdir>/seed<N>`` for the given seeds."""
    dirs = seed_dirs(expdir, seeds)
    lines = ["## Seed tables: HKD Table 1 and DR-KD Table 3 over model-training seeds", "",
             f"Seeds {', '.join(map(str, seeds))} (`local/seed_tables.sh`: the recipe once per seed, "
             "`--seed <N>` for every ASR, LM and internal-LM training; corpus, features and token lists "
             f"shared), experiments in {Path(expdir)}/seed<N>. Mean ± sample standard deviation (n − 1 "
             "denominator) over the seeds with a result; a missing result is listed under its table. "
             "Two rows differ by more than the seed spread when |Δ mean| > the larger of their two "
             "standard deviations. The papers report CER on Mandarin: compare orderings, not values.", ""]
    lines += seed_summary(dirs) + [""]
    table1 = read_table1(dirs, test_set, score_type)
    table3 = read_table3(dirs, score_type)
    if not table1:
        lines += [f"No Table 1 results yet (no {Path(expdir)}/seed<N>/table1_*.md: `--hkd true`).", ""]
    if not table3:
        lines += [f"No Table 3 results yet (no {Path(expdir)}/seed<N>/ilm_*: `--ilm true`).", ""]
    for table in table1 + table3:
        lines += render_table(table, seeds)
    return "\n".join(lines).rstrip("\n") + "\n"


def write_section(expdir: Path, seeds: Sequence[int], output: Path, test_set: str = "test_in",
                  score_type: str = "wer") -> str:
    text = render(expdir, seeds, test_set, score_type)
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(output)
    return text
