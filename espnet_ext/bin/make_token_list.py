"""Build an ESPnet token list (``<blank>`` 0, ``<unk>`` 1, ..., ``<sos/eos>`` last).

    python -m espnet_ext.bin.make_token_list --token_type char --input data/train/text \
        --output_dir data/token_list/char [--remove_space true]
    python -m espnet_ext.bin.make_token_list --token_type bpe --nbpe 300 --bpemode unigram \
        --input data/train/text --output_dir data/token_list/bpe_unigram300
    python -m espnet_ext.bin.make_token_list --token_type hugging_face --hf_model /path/to/model \
        --output_dir data/token_list/hf_minilm
    python -m espnet_ext.bin.make_token_list --token_type hugging_face --hf_model /path/to/model \
        --hf_vocab compact --input data/train/text --output_dir data/token_list/hf_minilm_compact

Writes ``<output_dir>/tokens.txt`` (and ``bpe.model`` for bpe). With ``--pretokenize IN OUT``
(hugging_face only) also rewrites a text file as tokenizer pieces for ESPnet's LM task. With
``--report_unknown TEXT ...`` counts and logs, per text, the tokens ESPnet will map to ``<unk>``
(listed per utterance in ``<output_dir>/unknown_tokens``). The id
mapping of each type is documented in :mod:`espnet_ext.utils.tokens`.
"""
import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

from espnet2.utils.types import str2bool


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--token_type", required=True, choices=["char", "word", "bpe", "hugging_face"])
    p.add_argument("--input", nargs="*", default=[], help="Kaldi text file(s) (id + transcript)")
    p.add_argument("--field", type=int, default=2, help="2: drop the id column; 1: plain text")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--remove_space", type=str2bool, default=False,
                   help="char: drop spaces instead of emitting <space> (Chinese)")
    p.add_argument("--nbpe", type=int, default=300)
    p.add_argument("--bpemode", default="unigram", choices=["unigram", "bpe"])
    p.add_argument("--bpe_char_cover", type=float, default=1.0)
    p.add_argument("--user_defined_symbols", nargs="*", default=[])
    p.add_argument("--hf_model", default=None, help="local path of a Hugging Face tokenizer")
    p.add_argument("--hf_vocab", default="full", choices=["full", "compact"],
                   help="hugging_face: full = the tokenizer's vocabulary with its ids; compact = "
                        "only the pieces occurring in --input (ids through the token list)")
    p.add_argument("--pretokenize", nargs=2, action="append", default=[], metavar=("IN", "OUT"),
                   help="hugging_face: also write IN as tokenizer pieces to OUT")
    p.add_argument("--report_unknown", nargs="*", default=[], metavar="TEXT",
                   help="Kaldi text files whose tokens missing from the list (they become <unk> "
                        "in ESPnet) are counted, logged and listed in <output_dir>/unknown_tokens")
    return p


def main(cmd: Sequence[str] = None) -> int:
    args = get_parser().parse_args(cmd)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    from espnet_ext.utils import tokens as T

    out = Path(args.output_dir)
    compact = args.token_type == "hugging_face" and args.hf_vocab == "compact"
    if (args.token_type != "hugging_face" or compact) and not args.input:
        logging.error("--input is required for token_type %s%s", args.token_type,
                      " --hf_vocab compact" if compact else "")
        return 2
    try:
        if args.token_type == "char":
            toks = T.char_tokens(T.read_texts(args.input, args.field), args.remove_space)
        elif args.token_type == "word":
            toks = T.word_tokens(T.read_texts(args.input, args.field))
        elif args.token_type == "bpe":
            toks = T.bpe_tokens(T.read_texts(args.input, args.field), str(out / "bpe"),
                                args.nbpe, args.bpemode, args.bpe_char_cover,
                                args.user_defined_symbols)
        else:
            if not args.hf_model:
                logging.error("--hf_model is required for token_type hugging_face")
                return 2
            if compact:
                toks = T.hf_compact_tokens(args.hf_model, T.read_texts(args.input, args.field))
            else:
                toks = T.hf_tokens(args.hf_model)
            for src, dst in args.pretokenize:
                n = T.hf_pretokenize(args.hf_model, src, dst)
                logging.info("pre-tokenized %s -> %s (%d lines)", src, dst, n)
    except (ValueError, OSError) as e:
        logging.error("%s", e)
        return 1
    T.write_token_list(toks, out / "tokens.txt")
    logging.info("%s: %d tokens (%s)", out / "tokens.txt", len(toks), args.token_type)
    if args.report_unknown:
        bpemodel = {"bpe": out / "bpe.model", "hugging_face": args.hf_model}.get(args.token_type)
        try:
            T.unknown_token_report(args.report_unknown, toks, args.token_type, bpemodel,
                                   report=out / "unknown_tokens")
        except (ValueError, OSError) as e:
            logging.error("%s", e)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
