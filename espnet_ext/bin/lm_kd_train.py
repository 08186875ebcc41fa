"""Renamed: ``python -m espnet_ext.bin.kd_lm_train`` (this name only tells so)."""
import sys

if __name__ == "__main__":
    sys.exit("espnet_ext.bin.lm_kd_train was renamed: use python -m espnet_ext.bin.kd_lm_train")
