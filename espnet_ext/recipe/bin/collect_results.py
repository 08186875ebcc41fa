"""Write a recipe's RESULTS.md from every sclite result.txt below the given directories.

    python -m espnet_ext.recipe.bin.collect_results --output RESULTS.md exp

Tables ``|dataset|Snt|Wrd|Corr|Sub|Del|Ins|Err|S.Err|Len|`` per experiment and metric, with model,
config, parameter count and wall times, then LM perplexities, per-stage wall and CPU times,
learning curves, CIF fire plots, Table 3 and Table 1 sections; see :mod:`espnet_ext.recipe.results`.
"""
import argparse
import sys
from pathlib import Path
from typing import Sequence


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dirs", nargs="+", help="directories to scan (e.g. exp)")
    p.add_argument("--output", default="RESULTS.md")
    p.add_argument("--title", default="RESULTS")
    return p


def main(cmd: Sequence[str] = None) -> int:
    args = get_parser().parse_args(cmd)
    from espnet_ext.recipe.results import write_results

    roots = [Path(d) for d in args.dirs]
    missing = [str(d) for d in roots if not d.is_dir()]
    if missing:
        print(f"collect_results: not a directory: {', '.join(missing)}", file=sys.stderr)
        return 1
    text = write_results(roots, Path(args.output), args.title)
    print(f"collect_results: wrote {args.output} ({text.count(chr(10)) + 1} lines)",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
