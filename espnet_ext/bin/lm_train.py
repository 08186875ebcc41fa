"""ESPnet2's LM training (``espnet2.bin.lm_train``, every option as there) by our trainer: a job
killed while saving never leaves a ``checkpoint.pth`` that ``--resume`` cannot read, and
``--cpu_bf16`` is available (see :mod:`espnet_ext.train.trainer`).

    python -m espnet_ext.bin.lm_train --config conf/train_lm.yaml --resume true ...
"""
from espnet_ext.tasks.lm import LMTask


def get_parser():
    return LMTask.get_parser()


def main(cmd=None):
    LMTask.main(cmd=cmd)


if __name__ == "__main__":
    main()
