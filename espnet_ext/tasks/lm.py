"""ESPnet2's LMTask trained by our trainer (atomic checkpoints, ``--cpu_bf16``); the base of our
LM-data tasks (LMKDTask, ILMContextTask) and the task of ``espnet_ext.bin.lm_train``."""
from espnet2.tasks.lm import LMTask as ESPnetLMTask

from espnet_ext.train.trainer import Trainer


class LMTask(ESPnetLMTask):
    """ESPnet's LMTask (same options and models) with :class:`espnet_ext.train.trainer.Trainer`."""

    trainer = Trainer
