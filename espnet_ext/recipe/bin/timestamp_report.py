"""Word timestamp accuracy of a model on a test set with reference word times (asr.sh stage 15).

    python -m espnet_ext.recipe.bin.timestamp_report --asr_exp exp/asr_x \\
        --data_dir dump/fbank/test_in --ref_ctm data/test_in/word_times.ctm --output_dir DIR

Decodes every utterance of ``<data_dir>/feats.scp`` with :class:`espnet_ext.inference.Speech2Text`
(the model's decode config via ``--config``, no LM) and times the 1-best's words two ways: from
the CIF fires (what ``transcribe --output ctm`` writes) and, as the baseline, from a CTC forced
alignment of the same tokens with the model's own CTC branch. Both are compared with the
reference (the synthesiser's word times) on the correctly recognised words
(:mod:`espnet_ext.recipe.timestamp_eval`). Exit status 3: a model without CIF or CTC (nothing
to time). Writes ``cif.ctm``, ``ctc.ctm``, ``timestamps.json``
and ``timestamps.md`` (mean / median / 90th percentile absolute error of word starts and ends).
"""
import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Dict, List

logger = logging.getLogger("espnet_ext.timestamp_report")
METHODS = ("cif", "ctc")
NOT_TIMEABLE = 3  # exit status for a model without CIF fires or CTC branch (e.g. LAS)


class NotTimeable(ValueError):
    """The model has no CIF fires, or no CTC branch for the baseline."""


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--asr_exp", type=Path, required=True, help="dir with config.yaml and the model")
    p.add_argument("--model", default="valid.acc.ave.pth", help="model file in --asr_exp")
    p.add_argument("--config", default=None, help="decode config (beam size, tail threshold)")
    p.add_argument("--data_dir", type=Path, required=True, help="dir with feats.scp")
    p.add_argument("--ref_ctm", type=Path, required=True, help="reference word times (CTM)")
    p.add_argument("--output_dir", type=Path, required=True)
    p.add_argument("--batch_size", type=int, default=16)
    return p


def report(args: argparse.Namespace) -> Dict:
    import kaldiio
    import numpy as np
    import torch
    from tqdm import tqdm

    from espnet_ext.asr.timestamps import ctc_alignment_times, word_spans
    from espnet_ext.inference import Speech2Text
    from espnet_ext.recipe.corpus.word_times import ctm_lines, read_ctm
    from espnet_ext.recipe.timestamp_eval import boundary_errors, summarize

    ref = read_ctm(args.ref_ctm)
    feats = dict(kaldiio.load_scp(str(args.data_dir / "feats.scp")))
    keys = sorted(k for k in feats if k in ref)
    if not keys:
        raise ValueError(f"no utterance of {args.data_dir}/feats.scp has reference times in "
                         f"{args.ref_ctm}")
    missing = len(feats) - len(keys)
    if missing:
        logger.warning(f"{missing} utterances of {args.data_dir} have no reference times: not scored")
    options = {}
    if args.config:
        import yaml

        decode = yaml.safe_load(Path(args.config).read_text()) or {}
        options = {k: decode[k] for k in ("beam_size", "tail_threshold") if k in decode}
    s2t = Speech2Text(asr_train_config=args.asr_exp / "config.yaml",
                      asr_model_file=args.asr_exp / args.model, batch_size=args.batch_size, **options)
    if s2t.encoder_shift is None:
        raise NotTimeable(f"{args.asr_exp}: the model has no CIF fires to time words with")
    if getattr(s2t.asr_model, "ctc", None) is None:
        raise NotTimeable(f"{args.asr_exp}: the model has no CTC branch for the baseline")

    hyp_words: Dict[str, Dict[str, List]] = {m: {} for m in METHODS}
    errors = {m: ([], []) for m in METHODS}
    no_ctc = []
    for i in tqdm(range(0, len(keys), args.batch_size), desc="timestamps", unit="batch",
                  mininterval=5.0):
        batch = keys[i:i + args.batch_size]
        results = s2t([feats[k] for k in batch], features=True)
        for key, result in zip(batch, results):
            hyp_words["cif"][key] = result.words or []
            x = torch.from_numpy(np.array(feats[key], dtype=np.float32))[None]
            with torch.no_grad():
                enc, enc_lens = s2t.asr_model.encode(x, torch.tensor([x.size(1)]))
                log_probs = s2t.asr_model.ctc.log_softmax(enc)[0, :int(enc_lens[0])]
            times = ctc_alignment_times(log_probs, result.token_ids, s2t.encoder_shift)
            if times is None:
                no_ctc.append(key)
                continue
            hyp_words["ctc"][key] = word_spans(result.tokens, times, s2t.token_type, s2t.space_symbol)
    for method in METHODS:
        for key, words in hyp_words[method].items():
            if method == "cif" and key in no_ctc:
                continue  # both methods over the same utterances
            starts, ends = boundary_errors(words, ref[key])
            errors[method][0].extend(starts)
            errors[method][1].extend(ends)
    if no_ctc:
        logger.warning(f"{len(no_ctc)} utterances have fewer encoder frames than the CTC alignment "
                       f"of their hypothesis needs; left out of both methods: {' '.join(no_ctc[:10])}")

    args.output_dir.mkdir(parents=True, exist_ok=True)
    for method in METHODS:
        lines = [line for key in sorted(hyp_words[method])
                 for line in ctm_lines(key, hyp_words[method][key])]
        (args.output_dir / f"{method}.ctm").write_text("".join(f"{x}\n" for x in lines))
    summary = {
        "data_dir": str(args.data_dir), "asr_exp": str(args.asr_exp),
        "utterances": len(keys), "without_ctc_alignment": len(no_ctc),
        "reference_words": sum(len(w.split("+")) for k in keys for w, _, _ in ref[k]),
        "encoder_frame_seconds": s2t.encoder_shift,
        **{m: {"start": summarize(errors[m][0]), "end": summarize(errors[m][1])} for m in METHODS},
    }
    (args.output_dir / "timestamps.json").write_text(json.dumps(summary, indent=1) + "\n")
    (args.output_dir / "timestamps.md").write_text(format_table(summary))
    return summary


def format_table(summary: Dict) -> str:
    """Markdown table of the errors (ms) per method and boundary."""
    def ms(v):
        return "-" if v is None else f"{1000 * v:.0f}"

    rows = ["| word times from | boundary | words | mean (ms) | median (ms) | 90th pct (ms) |",
            "|---|---|---|---|---|---|"]
    names = {"cif": "CIF fires", "ctc": "CTC forced alignment (baseline)"}
    for m in METHODS:
        for b in ("start", "end"):
            s = summary[m][b]
            rows.append(f"| {names[m]} | {b} | {s['n']} | {ms(s['mean'])} | {ms(s['median'])} | "
                        f"{ms(s['p90'])} |")
    note = (f"\n{summary['utterances']} utterances ({summary['reference_words']} reference words) of "
            f"{summary['data_dir']}; errors over the correctly recognised words; encoder frame "
            f"{1000 * summary['encoder_frame_seconds']:.0f} ms.\n")
    return "\n".join(rows) + "\n" + note


def main(cmd=None) -> int:
    args = get_parser().parse_args(cmd)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        summary = report(args)
    except NotTimeable as e:
        logger.warning(str(e))
        return NOT_TIMEABLE
    except (FileNotFoundError, ValueError) as e:
        logger.error(str(e))
        return 1
    print(format_table(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
