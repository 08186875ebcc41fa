"""ESPnet2's LM training (``espnet2.bin.lm_train``, every option as there) with atomic checkpoint
saves: a job killed while saving never leaves a ``checkpoint.pth`` that ``--resume`` cannot read
(see :mod:`espnet_ext.utils.checkpoint`).

    python -m espnet_ext.bin.lm_train --config conf/train_lm.yaml --resume true ...
"""
from espnet2.tasks.lm import LMTask

from espnet_ext.utils import checkpoint

# At import, so that DDP workers started with "spawn" (which re-import this module) have it too.
checkpoint.install()


def main(cmd=None):
    LMTask.main(cmd=cmd)


if __name__ == "__main__":
    main()
