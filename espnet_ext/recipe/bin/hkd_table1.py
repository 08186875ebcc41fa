"""The HKD paper's Table 1 section of RESULTS.md (asr.sh stage 16 with several --distillers): one
row per system (CIF, +ACD, +LRD, +HKD) with its sclite WER on one test set, decoded without and
with the LM, plus the teacher features behind it (utterances, misaligned ones, storage).

    python -m espnet_ext.recipe.bin.hkd_table1 --test_set test_in --plm_dir dump/plm_wp_minilm \
        --sets "train dev" --row CIF=exp/asr_train_asr_cif_mini_wp_minilm \
        --row +ACD=exp/asr_train_asr_cif_mini_wp_minilm_acd ... [--output exp/table1_<tag>.md]

A system whose decoding is missing shows "-" (its row is still printed, labelled).
"""
import argparse
import sys
from pathlib import Path
from typing import Optional

from espnet_ext.recipe.learning_curves import parse_epochs
from espnet_ext.recipe.results import _human, count_parameters
from espnet_ext.recipe.scoring import parse_result


def error_rate(exp: Path, test_set: str, with_lm: bool, score_type: str = "wer") -> Optional[dict]:
    """sclite Sum/Avg of the (newest) decoding of ``test_set`` with or without the LM."""
    found = [r for r in exp.glob(f"decode_*/{test_set}/score_{score_type}/result.txt")
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
    p.add_argument("--score_type", default="wer", choices=("wer", "cer", "ter"))
    p.add_argument("--plm_dir", default=None, help="teacher features dir (dump/plm_<tag>)")
    p.add_argument("--sets", default="train dev", help="sets of --plm_dir to summarise")
    p.add_argument("--note", default="", help="a line under the heading (units, teacher)")
    p.add_argument("--output", type=Path, default=None, help="write here instead of stdout")
    args = p.parse_args(argv)

    rows = [row.partition("=")[::2] for row in args.row]
    metric = args.score_type.upper()
    out = [f"## HKD paper Table 1: {' / '.join(label for label, _ in rows)}, {metric} on {args.test_set}", ""]
    if args.note:
        out += [args.note, ""]
    out += [f"|Table 1 system|{metric} w/o LM|{metric} with LM|S.Err w/o LM|epochs|dev acc (tf)|"
            "parameters (training-only heads incl.)|exp|",
            "|---|---|---|---|---|---|---|---|"]
    for label, exp in rows:
        exp = Path(exp)
        no_lm = error_rate(exp, args.test_set, False, args.score_type)
        lm = error_rate(exp, args.test_set, True, args.score_type)
        fmt = lambda r, k="err": f"{r[k]:.1f}" if r else "-"  # noqa: E731
        params = _human(count_parameters(exp)) if (exp / "config.yaml").is_file() else "-"
        epochs, dev_acc = training_summary(exp)
        out.append(f"|{label}|{fmt(no_lm)}|{fmt(lm)}|{fmt(no_lm, 'serr')}|{epochs}|{dev_acc}|{params}|{exp}|")
    out.append("")
    if args.plm_dir:
        out += plm_summary(Path(args.plm_dir), args.sets.split()) + [""]
    text = "\n".join(out) + "\n"
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
