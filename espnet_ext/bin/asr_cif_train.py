"""Renamed: ``python -m espnet_ext.bin.cif_asr_train`` (this name only tells so)."""
import sys

if __name__ == "__main__":
    sys.exit("espnet_ext.bin.asr_cif_train was renamed: use python -m espnet_ext.bin.cif_asr_train")
