"""Train the interpolated Kneser-Ney 2-gram DR-LM (ARPA) on an ESPnet ``text`` file, tokenised
exactly like LM training:

    python -m espnet_ext.bin.ngram_lm_train --text T --token_list L --output bigram.arpa
"""
import argparse
import json
import logging
from pathlib import Path
from typing import List, Optional

from espnet_ext.lm.kneser_ney import train_bigram


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Train the interpolated Kneser-Ney 2-gram DR-LM")
    parser.add_argument("--text", required=True, help="ESPnet text file: uttid text")
    parser.add_argument("--token_list", required=True)
    parser.add_argument("--output", required=True, help="ARPA file to write")
    parser.add_argument("--token_type", default="char", choices=["char", "bpe", "word"])
    parser.add_argument("--bpemodel", default=None)
    parser.add_argument("--cleaner", default=None)
    parser.add_argument("--non_linguistic_symbols", default=None)
    parser.add_argument("--discount", type=float, default=None,
                        help="fixed absolute discount (default: n1/(n1+2 n2) per order)")
    return parser


def main(cmd: Optional[List[str]] = None) -> None:
    args = get_parser().parse_args(cmd)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    info = train_bigram(args.text, args.token_list, args.output, args.token_type, args.bpemodel,
                        args.cleaner, args.non_linguistic_symbols, args.discount)
    logging.info(f"2-gram written to {args.output}: {json.dumps(info)}")


if __name__ == "__main__":
    main()
