"""Compute 80-dim Kaldi-compatible log-mel fbank for wav.scp files into ark/scp + utt2num_frames.

One job of the recipe's feature stage (``JOB=1:N`` over ``split<N>utt``); parts whose inputs
did not change since they were completed are skipped. See :mod:`espnet_ext.recipe.fbank`.

    python -m espnet_ext.recipe.bin.compute_fbank --wav_scp data/x/split4utt/1/wav.scp \
        --ark dump/fbank/x/data/feats.1.ark --scp dump/fbank/x/data/feats.1.scp \
        --utt2num_frames dump/fbank/x/data/utt2num_frames.1
    python -m espnet_ext.recipe.bin.compute_fbank --manifest dump/fbank/log/train+dev/fbank.1.list

A manifest has one part per line, ``WAV_SCP ARK SCP UTT2NUM_FRAMES [SEGMENTS]``: one process
(one torch import) then serves the parts of several data sets.
"""
import argparse
import logging
import sys
from typing import Sequence


def str2bool(v: str) -> bool:
    if v.lower() in ("true", "1", "yes"):
        return True
    if v.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {v!r}")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", default=None, help="file listing parts (see above)")
    p.add_argument("--wav_scp")
    p.add_argument("--segments", default=None, help="Kaldi segments file (optional)")
    p.add_argument("--ark", help="output ark (the scp refers to this path)")
    p.add_argument("--scp")
    p.add_argument("--utt2num_frames")
    p.add_argument("--skip_bad", type=str2bool, default=False,
                   help="log and skip unreadable audio instead of failing")
    p.add_argument("--fs", type=float, default=16000.0, help="expected sample rate")
    p.add_argument("--num_mel_bins", type=int, default=80)
    p.add_argument("--frame_length", type=float, default=25.0, help="ms")
    p.add_argument("--frame_shift", type=float, default=10.0, help="ms")
    return p


def main(cmd: Sequence[str] = None) -> int:
    args = get_parser().parse_args(cmd)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    from espnet_ext.recipe.fbank import AudioError, extract_to_ark

    opts = dict(num_mel_bins=args.num_mel_bins, frame_length=args.frame_length,
                frame_shift=args.frame_shift, sample_frequency=args.fs)
    parts = []
    if args.manifest:
        with open(args.manifest, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                fields = line.split()
                if len(fields) not in (4, 5):
                    logging.error("%s:%d: expected WAV_SCP ARK SCP UTT2NUM_FRAMES [SEGMENTS]",
                                  args.manifest, n)
                    return 2
                parts.append(fields + [None] * (5 - len(fields)))
    elif args.wav_scp and args.ark and args.scp and args.utt2num_frames:
        parts.append([args.wav_scp, args.ark, args.scp, args.utt2num_frames, args.segments])
    else:
        logging.error("give --manifest, or --wav_scp, --ark, --scp and --utt2num_frames")
        return 2
    try:
        for wav_scp, ark, scp, utt2num_frames, segments in parts:
            extract_to_ark(wav_scp, ark, scp, utt2num_frames, segments=segments,
                           skip_bad=args.skip_bad, opts=opts)
    except AudioError as e:
        logging.error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
