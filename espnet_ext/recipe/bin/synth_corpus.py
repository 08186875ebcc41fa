"""Synthesise the offline English mini corpus and write Kaldi data dirs (minisynth recipe).

Example (from egs/minisynth/asr1)::

    python -m espnet_ext.recipe.bin.synth_corpus --config conf/corpus.yaml --seed 1 --nj 2
"""
import argparse
import logging
import sys
from pathlib import Path
from typing import List, Optional

from espnet_ext.recipe.corpus.synth import SUBSETS, build_corpus, load_config

_SIZE_KEYS = SUBSETS + ("lm_in", "lm_cross")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True, help="corpus preset YAML")
    parser.add_argument("--data_dir", type=Path, default=Path("data"),
                        help="where data/<subset> and data/local are written")
    parser.add_argument("--corpus_dir", type=Path, default=Path("downloads/minisynth"),
                        help="where the wavs are kept (reused by later runs)")
    parser.add_argument("--seed", type=int, default=1, help="text split and speaker seed")
    parser.add_argument("--nj", type=int, default=2, help="parallel synthesis workers")
    parser.add_argument("--log_dir", type=Path, default=None,
                        help="logs (default <data_dir>/local/log)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    for key in _SIZE_KEYS:
        parser.add_argument(f"--num_{key}", type=int, default=None,
                            help=f"override sizes.{key} of the preset")
    return parser


def main(cmd: Optional[List[str]] = None) -> None:
    args = get_parser().parse_args(cmd)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    sizes = {k: getattr(args, f"num_{k}") for k in _SIZE_KEYS if getattr(args, f"num_{k}") is not None}
    cfg = load_config(args.config, {"sizes": sizes} if sizes else None)
    build_corpus(cfg, args.data_dir, args.corpus_dir, seed=args.seed, nj=args.nj,
                 log_dir=args.log_dir, progress=not args.no_progress)


if __name__ == "__main__":
    main()
