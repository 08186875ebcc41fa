#!/usr/bin/env python3
"""The HKD paper's Table 1 section of RESULTS.md (run.sh --hkd true): one row per system
(CIF, +ACD, +LRD, +HKD) with its sclite WER on one test set, decoded without and with the LM,
plus the teacher features behind it (utterances, misaligned ones, storage).

    local/hkd_table1.py --test_set test_in --plm_dir dump/plm_wp_minilm --sets "train dev" \
        --row CIF=exp/asr_train_asr_cif_mini_wp_minilm --row +ACD=exp/asr_..._acd_wp_minilm ... \
        >> RESULTS.md

A system whose decoding is missing shows "-" (its row is still printed, labelled).
"""
import argparse
import sys
from pathlib import Path
from typing import Optional

from espnet_ext.recipe.results import _human, count_parameters
from espnet_ext.recipe.scoring import parse_result
from recipe_report import parse_epochs  # local/, next to this script


def wer(exp: Path, test_set: str, with_lm: bool) -> Optional[dict]:
    """sclite Sum/Avg of the (newest) decoding of ``test_set`` with or without the LM."""
    found = [r for r in exp.glob(f"decode_*/{test_set}/score_wer/result.txt")
             if ("_lm_" in r.parts[-4]) == with_lm]
    if not found:
        return None
    return parse_result(max(found, key=lambda p: p.stat().st_mtime))


def training_summary(exp: Path) -> tuple:
    """(epochs trained, last epoch's teacher-forced dev token accuracy) from ESPnet's train.log."""
    log = exp / "train.log"
    epochs = parse_epochs(log) if log.is_file() else {}
    if not epochs:
        return "-", "-"
    last = next(reversed(epochs))
    return str(last), epochs[last].get("valid", {}).get("acc", "-")


def plm_summary(plm_dir: Path, sets) -> list:
    lines = []
    for s in sets:
        scp = plm_dir / s / "feats.scp"
        if not scp.is_file():
            continue
        n = sum(1 for line in scp.read_text(encoding="utf-8").splitlines() if line.strip())
        mis = plm_dir / s / "misaligned"
        n_mis = sum(1 for _ in mis.read_text(encoding="utf-8").splitlines()) if mis.is_file() else 0
        size = sum(p.stat().st_size for p in (plm_dir / s / "data").glob("*.ark"))
        lines.append(f"- teacher features {s}: {n} utterances, {n_mis} misaligned (listed in {mis}), "
                     f"{size / 1e6:.1f} MB fp16 ark ({size / max(n, 1) / 1e3:.1f} kB/utt)")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--row", action="append", required=True, metavar="LABEL=EXPDIR")
    p.add_argument("--test_set", default="test_in")
    p.add_argument("--plm_dir", default=None, help="teacher features dir (dump/plm_<tag>)")
    p.add_argument("--sets", default="train dev", help="sets of --plm_dir to summarise")
    p.add_argument("--note", default="", help="a line under the heading (units, teacher)")
    args = p.parse_args(argv)

    out = [f"## HKD paper Table 1: CIF / +ACD / +LRD / +HKD, WER on {args.test_set}", ""]
    if args.note:
        out += [args.note, ""]
    out += ["|Table 1 system|WER w/o LM|WER with LM|S.Err w/o LM|epochs|dev acc (tf)|"
            "parameters (training-only heads incl.)|exp|",
            "|---|---|---|---|---|---|---|---|"]
    for row in args.row:
        label, _, exp = row.partition("=")
        exp = Path(exp)
        no_lm, lm = wer(exp, args.test_set, False), wer(exp, args.test_set, True)
        fmt = lambda r, k="err": f"{r[k]:.1f}" if r else "-"  # noqa: E731
        params = _human(count_parameters(exp)) if (exp / "config.yaml").is_file() else "-"
        epochs, dev_acc = training_summary(exp)
        out.append(f"|{label}|{fmt(no_lm)}|{fmt(lm)}|{fmt(no_lm, 'serr')}|{epochs}|{dev_acc}|{params}|{exp}|")
    out.append("")
    if args.plm_dir:
        out += plm_summary(Path(args.plm_dir), args.sets.split()) + [""]
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
