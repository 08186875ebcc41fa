"""Perplexity of internal LMs and density-ratio LMs on text, with ILM-related parameter counts
(DR-KD paper Fig. 1a/1b).

    python -m espnet_ext.bin.ilm_perplexity --token_list tokens.txt --token_type char \\
        --asr_train_config exp/asr/config.yaml --asr_model_file exp/asr/valid.acc.ave.pth \\
        --text data/dev/text --text data/test/text \\
        --ilm ILME-Z=zero --ilm ILME-L=label_ctx:exp/ilm_ctx/valid.loss.ave.pth \\
        --ilm DR=dr:exp/drlm/valid.loss.ave.pth --ilm DR-2gram=dr_2gram:exp/drlm_2gram/lm.arpa \\
        --ilm DR-KD-Z=dr_kd:exp/drkd_z/valid.loss.ave.pth --output_dir exp/ilm_ppl [--json]

``--ilm NAME=TYPE[:FILE[:CONFIG]]`` with TYPE from ``--ilm_type`` of the decoder. The ASR model
is given as for decoding (``--asr_train_config``/``--asr_model_file``, or a packed model file of
``espnet_ext.bin.pack_model``: ``--packed_model``) and loaded by the decoder's loader
(:func:`espnet_ext.bin.asr_inference.load_asr_model`); ``--token_list`` defaults to its token
list. Writes ``perplexity.md`` and ``perplexity.json`` to ``--output_dir`` and prints the table
(or JSON).
"""
import argparse
import json
import logging
import sys
import types
from pathlib import Path
from typing import Dict, List, Optional

import espnet_ext  # noqa: F401  (registers our model classes for loading)
from espnet_ext.lm.fusion import ILM_TYPES, count_ilm_params, load_ilm, perplexity
from espnet_ext.utils.tokens import check_sos_eos_last, read_token_ids, read_token_list


def parse_ilm_spec(spec: str) -> Dict[str, Optional[str]]:
    if "=" not in spec:
        raise argparse.ArgumentTypeError(f"--ilm {spec!r}: expected NAME=TYPE[:FILE[:CONFIG]]")
    name, rest = spec.split("=", 1)
    parts = rest.split(":")
    if parts[0] not in ILM_TYPES or parts[0] == "none":
        raise argparse.ArgumentTypeError(f"--ilm {spec!r}: TYPE must be one of {ILM_TYPES[1:]}")
    return dict(name=name, type=parts[0], file=parts[1] if len(parts) > 1 else None,
                config=parts[2] if len(parts) > 2 else None)


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--text", action="append", required=True,
                        help="ESPnet text file (uttid text); repeatable, named by its directory")
    parser.add_argument("--token_list", default=None,
                        help="default: the ASR model's token list (required without a model)")
    parser.add_argument("--token_type", default="char", choices=["char", "bpe", "word"])
    parser.add_argument("--bpemodel", default=None,
                        help="default for --token_type bpe: the ASR model's, when it is a bpe model")
    parser.add_argument("--cleaner", default=None)
    parser.add_argument("--non_linguistic_symbols", default=None)
    parser.add_argument("--asr_train_config", default=None)
    parser.add_argument("--asr_model_file", default=None,
                        help="ASR model (needed for zero/label_ctx; token list check for all)")
    parser.add_argument("--packed_model", default=None,
                        help="the ASR model as a packed file (espnet_ext.bin.pack_model), "
                             "instead of --asr_train_config/--asr_model_file")
    parser.add_argument("--unpack_dir", default=None,
                        help="where --packed_model is unpacked (default: <packed_model>.unpacked)")
    parser.add_argument("--ilm", action="append", type=parse_ilm_spec, required=True,
                        help="NAME=TYPE[:FILE[:CONFIG]], repeatable")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--output_dir", default=None)
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    return parser


def load_asr(args: argparse.Namespace):
    """(ASR model, its training args) as decoding loads them (from the files or the packed
    model), or (None, None) when no ASR model is given."""
    if not (args.asr_model_file or args.packed_model):
        return None, None
    from espnet_ext.bin.asr_inference import load_asr_model
    from espnet_ext.inference.speech2text import resolve_model

    config = args.asr_train_config
    if config is None and args.asr_model_file:  # as ESPnet's loader: the one beside the model
        config = str(Path(args.asr_model_file).parent / "config.yaml")
    model = resolve_model(config, args.asr_model_file, packed_model=args.packed_model,
                          unpack_dir=args.unpack_dir)
    return load_asr_model(model["asr_train_config"], model["asr_model_file"], args.device)


def run(args: argparse.Namespace) -> List[Dict]:
    asr_model, asr_args = load_asr(args)
    if asr_model is None:
        if args.token_list is None:
            raise ValueError("--token_list is needed without an ASR model")
        token_list = read_token_list(args.token_list)
        asr_model = types.SimpleNamespace(token_list=token_list)  # DR-LMs only
    else:
        token_list = list(asr_model.token_list)
        if args.token_list is not None and read_token_list(args.token_list) != token_list:
            raise ValueError(f"--token_list {args.token_list} differs from the ASR model's")
    check_sos_eos_last(token_list, f"--token_list {args.token_list or '(the ASR model)'}")
    bpemodel = args.bpemodel
    if bpemodel is None and args.token_type == "bpe" and getattr(asr_args, "token_type", None) == "bpe":
        bpemodel = asr_args.bpemodel
    texts = {}
    for path in args.text:
        name = Path(path).parent.name or Path(path).name
        _, ids, skipped = read_token_ids(path, token_list, args.token_type, bpemodel,
                                         args.cleaner, args.non_linguistic_symbols)
        texts[name] = ids
    rows = []
    if hasattr(asr_model, "decoder"):
        rows.append(dict(name="ASR decoder (all)", type="-", ilm_params=int(
            sum(p.numel() for p in asr_model.decoder.parameters())), ppl={}))
    for spec in args.ilm:
        if spec["type"] in ("zero", "label_ctx") and not hasattr(asr_model, "decoder"):
            raise ValueError(f"--ilm {spec['name']}: {spec['type']} needs --asr_model_file or "
                             f"--packed_model")
        lm = load_ilm(spec["type"], asr_model, spec["file"], spec["config"], args.device)
        row = dict(name=spec["name"], type=spec["type"], ilm_params=count_ilm_params(lm), ppl={})
        for tname, ids in texts.items():
            row["ppl"][tname] = perplexity(lm, ids, len(token_list), args.batch_size)["ppl"]
        rows.append(row)
        logging.info(f"{row['name']}: {row}")
    return rows


def format_table(rows: List[Dict]) -> str:
    sets = sorted({k for r in rows for k in r["ppl"]})
    head = "| ILM | type | ILM params | " + " | ".join(f"PPL {s}" for s in sets) + " |"
    lines = [head, "|" + "---|" * (3 + len(sets))]
    for r in rows:
        ppl = " | ".join(f"{r['ppl'][s]:.2f}" if s in r["ppl"] else "-" for s in sets)
        lines.append(f"| {r['name']} | {r['type']} | {r['ilm_params']:,} | {ppl} |")
    return "\n".join(lines)


def main(cmd: Optional[List[str]] = None) -> List[Dict]:
    args = get_parser().parse_args(cmd)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s")
    rows = run(args)
    table = format_table(rows)
    if args.output_dir:
        out = Path(args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "perplexity.json").write_text(json.dumps(rows, indent=2) + "\n")
        (out / "perplexity.md").write_text(table + "\n")
    print(json.dumps(rows, indent=2) if args.json else table)
    return rows


if __name__ == "__main__":
    main()
