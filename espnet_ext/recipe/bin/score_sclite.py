"""Score a decoding with sclite (ESPnet-style trn files, CER/WER/TER).

    python -m espnet_ext.recipe.bin.score_sclite --ref data/test/text --hyp exp/.../test/text \
        --utt2spk data/test/utt2spk --score_type wer --output_dir exp/.../test/score_wer

Writes ref.trn, hyp.trn, result.txt (``sclite -i rm -o all stdout``) and result.dtl, and prints
the Sum/Avg row. Refuses (exit 1, message naming the file) an empty or incomplete hypothesis.
"""
import argparse
import sys
from typing import Sequence

from espnet_ext.recipe.scoring import ScoringError, score, score_types_to_units
from espnet_ext.utils.kaldi_table import TableError


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ref", required=True, help="reference Kaldi text")
    p.add_argument("--hyp", required=True, help="hypothesis Kaldi text (1best_recog/text)")
    p.add_argument("--utt2spk", default=None, help="speaker of each utterance for (spk-utt)")
    p.add_argument("--score_type", required=True, choices=["cer", "wer", "ter"])
    p.add_argument("--bpemodel", default=None, help="sentencepiece model (ter)")
    p.add_argument("--output_dir", required=True)
    return p


def main(cmd: Sequence[str] = None) -> int:
    args = get_parser().parse_args(cmd)
    ((kind, unit),) = score_types_to_units([args.score_type])
    if unit == "bpe" and not args.bpemodel:
        print("score_sclite: --score_type ter needs --bpemodel", file=sys.stderr)
        return 2
    try:
        r = score(args.ref, args.hyp, args.utt2spk, unit, args.output_dir, args.bpemodel)
    except (ScoringError, TableError) as e:
        print(f"score_sclite: {e}", file=sys.stderr)
        return 1
    print(f"{kind.upper()} {args.output_dir}: Snt {r['snt']:.0f} Wrd {r['wrd']:.0f} "
          f"Corr {r['corr']} Sub {r['sub']} Del {r['del']} Ins {r['ins']} Err {r['err']} "
          f"S.Err {r['serr']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
