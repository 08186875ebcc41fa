"""Sweep ACD's temperature τ and number of negatives K (HKD paper Figure 3) as separate experiments.

    python -m espnet_ext.recipe.bin.sweep --name hkd \
        --temperatures 0.01,0.02,0.05,0.1,0.2 --num_negatives 700 --out_dir exp/sweep_tau_hkd \
        --run_cmd "./run.sh --stage 11 --asr_tag {tag} --asr_args '--distiller hkd {asr_args}'" \
        --result_glob "exp/asr_{tag}/*/{test_set}/score_cer/result.txt" --test_sets "dev test"

(the K curve: ``--temperatures 0.02 --num_negatives 100,200,300,400,500,600,700``; ACD without LRD:
``--distiller acd`` in the command). Every (τ, K) pair runs ``--run_cmd`` with ``{tag}``
(``<name>_tau<τ>_k<K>``) and ``{asr_args}`` filled in, the training options of that pair:
``--distiller_conf temperature=<τ> --distiller_conf num_negatives=<K>`` (ESPnet merges them into the
distiller's other options), logging to ``<out_dir>/log/<tag>.log``. A variant whose results already
exist for every test set is not rerun (``--force`` reruns), so an interrupted sweep continues where
it stopped. Finally the sclite ``Sum/Avg`` error rates are tabulated into ``<out_dir>/RESULTS.md``
(also printed; ``--json`` prints machine-readable rows instead). ``--tabulate_only`` skips running,
``--dry_run`` only prints the commands.
"""
import argparse
import glob
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", required=True, help="tag prefix of the variants (e.g. the distiller)")
    p.add_argument("--temperatures", default="0.02", help="comma list of τ")
    p.add_argument("--num_negatives", default="700", help="comma list of K")
    p.add_argument("--out_dir", required=True)
    p.add_argument("--run_cmd", default=None, help="shell command; {tag} and {asr_args} are filled in")
    p.add_argument("--result_glob", required=True,
                   help="sclite result.txt per variant and test set; {tag} and {test_set} are filled in")
    p.add_argument("--test_sets", default="test", help="space or comma separated")
    p.add_argument("--cwd", default=".", help="directory to run --run_cmd in (the recipe)")
    p.add_argument("--force", action="store_true", help="rerun variants that have results")
    p.add_argument("--keep_going", action="store_true", help="continue after a failed variant")
    p.add_argument("--dry_run", action="store_true")
    p.add_argument("--tabulate_only", action="store_true")
    p.add_argument("--json", action="store_true", help="print the table as JSON rows")
    return p


def _numbers(text: str, kind):
    return [kind(x) for x in text.replace(",", " ").split()]


def variant_tag(name: str, temperature: float, k: int) -> str:
    return f"{name}_tau{temperature:g}_k{k}"


def make_variants(name: str, temperatures: Sequence[float], negatives: Sequence[int]) -> List[Dict]:
    """One variant per (τ, K): [{tag, asr_args, temperature, num_negatives}]."""
    variants = []
    for tau in temperatures:
        for k in negatives:
            options = ["--distiller_conf", f"temperature={float(tau):g}", "--distiller_conf", f"num_negatives={int(k)}"]
            variants.append(dict(tag=variant_tag(name, tau, k), asr_args=shlex.join(options),
                                 temperature=float(tau), num_negatives=int(k)))
    return variants


def find_result(pattern: str, tag: str, test_set: str) -> Optional[Path]:
    """The newest file matching the pattern for one variant and test set (None if none)."""
    matches = glob.glob(pattern.format(tag=tag, test_set=test_set))
    return max(map(Path, matches), key=lambda p: p.stat().st_mtime) if matches else None


def tabulate(variants: List[Dict], pattern: str, test_sets: Sequence[str], cwd: Path) -> List[Dict]:
    from espnet_ext.recipe.scoring import ScoringError, parse_result

    rows = []
    for v in variants:
        row = dict(v)
        for s in test_sets:
            found = find_result(str(cwd / pattern), v["tag"], s)
            try:
                row[s] = parse_result(found)["err"] if found else None
            except ScoringError as e:
                print(f"sweep: {e}", file=sys.stderr)
                row[s] = None
        rows.append(row)
    return rows


def render(rows: List[Dict], test_sets: Sequence[str], name: str) -> str:
    def fmt(x):
        return "-" if x is None else f"{x:.1f}"

    lines = [f"# τ × K sweep {name}", "", "Error rate (%) from sclite's Sum/Avg row; '-' = no result.", ""]
    lines += ["|tag|τ|K|" + "|".join(test_sets) + "|", "|---|---|---|" + "---|" * len(test_sets)]
    for r in rows:
        cells = "|".join(fmt(r[s]) for s in test_sets)
        lines.append(f"|{r['tag']}|{r['temperature']:g}|{r['num_negatives']}|{cells}|")
    taus = sorted({r["temperature"] for r in rows})
    ks = sorted({r["num_negatives"] for r in rows})
    if len(taus) > 1 and len(ks) > 1:
        for s in test_sets:
            lines += ["", f"{s}: rows τ, columns K", "", "|τ \\ K|" + "|".join(map(str, ks)) + "|",
                      "|---|" + "---|" * len(ks)]
            cell = {(r["temperature"], r["num_negatives"]): r[s] for r in rows}
            for t in taus:
                lines.append(f"|{t:g}|" + "|".join(fmt(cell.get((t, k))) for k in ks) + "|")
    return "\n".join(lines) + "\n"


def main(cmd: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(cmd)
    out_dir = Path(args.out_dir)
    cwd = Path(args.cwd)
    test_sets = _numbers(args.test_sets, str)
    variants = make_variants(args.name, _numbers(args.temperatures, float), _numbers(args.num_negatives, int))
    failed = []
    if not args.tabulate_only:
        if not args.run_cmd:
            print("sweep: --run_cmd is needed unless --tabulate_only", file=sys.stderr)
            return 2
        (out_dir / "log").mkdir(parents=True, exist_ok=True)
        for i, v in enumerate(variants, 1):
            command = args.run_cmd.format(tag=v["tag"], asr_args=v["asr_args"])
            done = all(find_result(str(cwd / args.result_glob), v["tag"], s) for s in test_sets)
            if args.dry_run:
                print(("# has results: " if done and not args.force else "") + command)
                continue
            if done and not args.force:
                print(f"sweep [{i}/{len(variants)}] {v['tag']}: results exist, skipped", file=sys.stderr)
                continue
            log = out_dir / "log" / f"{v['tag']}.log"
            print(f"sweep [{i}/{len(variants)}] {v['tag']}: {command} (log {log})", file=sys.stderr)
            start = time.time()
            with open(log, "w", encoding="utf-8") as f:
                f.write(f"# {command}\n")
                f.flush()
                code = subprocess.run(command, shell=True, cwd=cwd, stdout=f, stderr=subprocess.STDOUT).returncode
                f.write(f"# ended (code {code}) after {time.time() - start:.0f} s\n")
            if code != 0:
                failed.append(v["tag"])
                print(f"sweep: {v['tag']} failed with code {code}, see {log}", file=sys.stderr)
                if not args.keep_going:
                    break
        if args.dry_run:
            return 0
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = tabulate(variants, args.result_glob, test_sets, cwd)
    table = render(rows, test_sets, args.name)
    (out_dir / "RESULTS.md").write_text(table, encoding="utf-8")
    print(json.dumps(rows, indent=1) if args.json else table)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
