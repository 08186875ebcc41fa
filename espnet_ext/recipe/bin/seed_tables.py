"""HKD Table 1 and DR-KD Table 3 over seeds: mean ± sample standard deviation per row, the papers'
numbers beside them, a sentence per column on the paper's ordering and the seed spread (see
:mod:`espnet_ext.recipe.seed_tables`). Reads ``<expdir>/seed<N>`` (``local/seed_tables.sh``) and
writes a Markdown section that RESULTS.md includes (``<expdir>/seed_tables.md``).

    python -m espnet_ext.recipe.bin.seed_tables --expdir exp --seeds "1 2 3"
"""
import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--expdir", type=Path, default=Path("exp"), help="holds seed<N>/ per seed")
    p.add_argument("--seeds", default="1 2 3", help="the seeds of the tables (space separated)")
    p.add_argument("--test_set", default="test_in", help="Table 1's test set")
    p.add_argument("--score_type", default="wer", choices=("wer", "cer", "ter"))
    p.add_argument("--output", type=Path, default=None, help="default: <expdir>/seed_tables.md")
    return p


def main(cmd: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(cmd)
    from espnet_ext.recipe.seed_tables import write_section

    try:
        seeds = [int(s) for s in args.seeds.split()]
    except ValueError:
        print(f"seed_tables: --seeds '{args.seeds}' is not a list of integers", file=sys.stderr)
        return 2
    if not seeds:
        print("seed_tables: --seeds is empty", file=sys.stderr)
        return 2
    output = args.output or args.expdir / "seed_tables.md"
    output.parent.mkdir(parents=True, exist_ok=True)
    write_section(args.expdir, seeds, output, args.test_set, args.score_type)
    print(f"seed_tables: wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
