"""Collect the internal-LM stages' results in the DR-KD paper's Table 3 layout (Markdown).

    python -m espnet_ext.recipe.bin.ilm_results --ilm_exp exp/ilm_cif --asr_exp exp/asr_cif \\
        --conditions "intra cross" --test_sets_intra test_in --test_sets_cross test_cross \\
        [--score_type cer] [--output exp/ilm_cif/RESULTS.md]

The section (asr.sh stage 16; included in the recipe's RESULTS.md) is headed by the ASR model and
followed by the ILM perplexity and parameter table of ``<ilm_exp>/perplexity/perplexity.md``.

Rows: No LM, SF, ILME-Z, ILME-L, DR, DR-2gram, DR-KD-Z, DR-KD-L (those decoded); columns: error
rate per condition and test set with the relative reduction over SF in brackets, the tuned
(lambda_ILM, lambda_ELM), ILM-related parameters (``perplexity/perplexity.json``) and decoding
throughput (audio seconds per second, from each ``decode.log``). Missing results show as "-".
"""
import argparse
import json
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from espnet_ext.recipe.scoring import parse_result

METHOD_NAMES = {"none": "No LM", "sf": "SF", "ilme_z": "ILME-Z", "ilme_l": "ILME-L", "dr": "DR",
                "dr_2gram": "DR-2gram", "drkd_z": "DR-KD-Z", "drkd_l": "DR-KD-L"}
SPEED_RE = re.compile(r"decoding speed: .* RTF ([0-9.]+), ([0-9.]+) audio-s/s")


def _err(path: Path) -> Optional[float]:
    return parse_result(path)["err"] if path.exists() else None


def _speed(log: Path) -> Optional[float]:
    if not log.exists():
        return None
    found = SPEED_RE.findall(log.read_text(errors="replace"))
    return float(found[-1][1]) if found else None


def collect(ilm_exp: Path, methods: Sequence[str], conditions: Sequence[str],
            test_sets: Dict[str, List[str]], score_type: str) -> Dict:
    ppl_file = ilm_exp / "perplexity" / "perplexity.json"
    params = {}
    if ppl_file.exists():
        params = {row["name"]: row["ilm_params"] for row in json.loads(ppl_file.read_text())}
    rows = []
    for m in methods:
        row = dict(method=METHOD_NAMES.get(m, m), err={}, weights={}, speed=[],
                   ilm_params=params.get(METHOD_NAMES.get(m, m)))
        for c in conditions:
            best = ilm_exp / f"tune_{c}" / m / "best.json"
            if best.exists():
                b = json.loads(best.read_text())
                row["weights"][c] = (b["ilm_weight"], b["lm_weight"])
            for s in test_sets.get(c, []):
                d = ilm_exp / f"decode_{c}_{m}" / s
                row["err"][f"{c}/{s}"] = _err(d / f"score_{score_type}" / "result.txt")
                speed = _speed(d / "decode.log")
                if speed is not None:
                    row["speed"].append(speed)
        rows.append(row)
    return dict(rows=rows, columns=[f"{c}/{s}" for c in conditions for s in test_sets.get(c, [])])


def format_table(result: Dict, conditions: Sequence[str], score_type: str) -> str:
    cols = result["columns"]
    sf = next((r for r in result["rows"] if r["method"] == "SF"), None)
    head = (f"| {score_type.upper()} (%) | " + " | ".join(cols) + " | "
            + " | ".join(f"(λ_ILM, λ_ELM) {c}" for c in conditions)
            + " | ILM params | audio-s/s |")
    lines = [head, "|" + "---|" * (len(cols) + len(conditions) + 3)]
    for r in result["rows"]:
        cells = []
        for col in cols:
            e = r["err"].get(col)
            if e is None:
                cells.append("-")
                continue
            ref = sf["err"].get(col) if sf is not None else None
            rel = (f" ({100.0 * (ref - e) / ref:+.1f}%)" if ref and r is not sf
                   and r["method"] != "No LM" else "")
            cells.append(f"{e:.2f}{rel}")
        weights = [("(%g, %g)" % r["weights"][c]) if c in r["weights"] else "-" for c in conditions]
        params = f"{r['ilm_params']:,}" if r["ilm_params"] is not None else "-"
        speed = f"{sum(r['speed']) / len(r['speed']):.1f}" if r["speed"] else "-"
        lines.append(f"| {r['method']} | " + " | ".join(cells + weights) + f" | {params} | {speed} |")
    return "\n".join(lines)


def render_section(ilm_exp: Path, asr_exp: str, table: str) -> str:
    lines = [f"## Internal-LM estimation and DR-KD: {asr_exp} ({ilm_exp})", "",
             "Relative change over SF in brackets (positive = fewer errors); weights tuned on dev; "
             "ILM params: parameters the ILM term runs (Fig. 1a); audio-s/s: decoding throughput.",
             "", table]
    heatmaps = sorted(ilm_exp.glob("tune_*/*/heatmap.png"))
    if heatmaps:
        lines += ["", "Fusion-weight grids on the dev sets (error rate per λ_ILM × λ_ELM): "
                  + ", ".join(f"[{h.parent.parent.name[len('tune_'):]} {h.parent.name}]({h})"
                              for h in heatmaps)]
    ppl = ilm_exp / "perplexity" / "perplexity.md"
    if ppl.is_file():
        lines += ["", f"### ILM perplexity and parameters ({ilm_exp}/perplexity)", "",
                  ppl.read_text(encoding="utf-8").rstrip("\n")]
    return "\n".join(lines) + "\n"


def main(cmd: Optional[Sequence[str]] = None) -> str:
    parser = argparse.ArgumentParser(description="Table 3 of the internal-LM stages")
    parser.add_argument("--ilm_exp", required=True, type=Path)
    parser.add_argument("--asr_exp", default=None, help="the ASR experiment (section heading)")
    parser.add_argument("--output", type=Path, default=None, help="write here instead of stdout")
    parser.add_argument("--methods", default=" ".join(METHOD_NAMES))
    parser.add_argument("--conditions", default="intra cross")
    parser.add_argument("--test_sets_intra", default="")
    parser.add_argument("--test_sets_cross", default="")
    parser.add_argument("--score_type", default="cer")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(cmd)
    conditions = args.conditions.split()
    test_sets = {"intra": args.test_sets_intra.split(), "cross": args.test_sets_cross.split()}
    result = collect(args.ilm_exp, args.methods.split(), conditions, test_sets, args.score_type)
    if args.json:
        text = json.dumps(result, indent=2) + "\n"
    else:
        text = render_section(args.ilm_exp, args.asr_exp or str(args.ilm_exp),
                              format_table(result, conditions, args.score_type))
    if args.output is None:
        print(text, end="")
    else:
        args.output.write_text(text, encoding="utf-8")
    return text


if __name__ == "__main__":
    main()
