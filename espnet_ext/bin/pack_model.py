"""Pack a trained ASR model into one file (ESPnet's packing format; espnet_ext.inference.pack).

    python -m espnet_ext.bin.pack_model --asr_train_config exp/asr_x/config.yaml \
        --asr_model_file exp/asr_x/valid.acc.ave.pth --decode_config conf/decode_mini.yaml \
        [--lm_train_config exp/lm_x/config.yaml --lm_file exp/lm_x/valid.loss.ave.pth] \
        --fs 16000 --num_mel_bins 80 --outpath exp/asr_x/packed_model.zip

Run from the recipe directory (the configs' relative paths start there). A ``hugging_face`` model
brings its tokenizer's files (from the config's ``bpemodel`` directory). The file decodes with
``Speech2Text(packed_model=...)`` or ``python -m espnet_ext.bin.transcribe --packed_model ...``.
"""
import argparse
import logging
import sys
from typing import Optional, Sequence


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--asr_train_config", required=True)
    p.add_argument("--asr_model_file", required=True, help="e.g. the averaged valid.acc.ave.pth")
    p.add_argument("--outpath", required=True, help="*.zip or *.tar.gz")
    p.add_argument("--decode_config", default=None)
    p.add_argument("--lm_train_config", default=None)
    p.add_argument("--lm_file", default=None)
    p.add_argument("--fs", type=int, default=16000, help="sample rate of the model's fbank")
    p.add_argument("--num_mel_bins", type=int, default=80)
    return p


def main(cmd: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(cmd)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    from espnet_ext.inference.pack import pack_model

    out = pack_model(args.asr_train_config, args.asr_model_file, args.outpath, fs=args.fs,
                     num_mel_bins=args.num_mel_bins, decode_config=args.decode_config,
                     lm_train_config=args.lm_train_config, lm_file=args.lm_file)
    print(f"{out} {out.stat().st_size}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
