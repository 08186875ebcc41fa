#!/usr/bin/env python3
"""Train the CIF ASR model with ESPnet2's trainer.

``python -m espnet_ext.bin.cif_asr_train --config conf/train_asr_cif_aishell.yaml ...``: every
option of ``espnet2.bin.asr_train``, plus ``--predictor``/``--predictor_conf``,
``--distiller``/``--distiller_conf`` (e.g. ``--distiller hkd --distiller_conf teacher_dim=768``),
``plm_feats`` as an optional data name and ``--cpu_bf16`` (see
:class:`espnet_ext.tasks.cif_asr.CIFASRTask`).
"""
from espnet_ext.tasks.cif_asr import CIFASRTask


def get_parser():
    return CIFASRTask.get_parser()


def main(cmd=None):
    CIFASRTask.main(cmd=cmd)


if __name__ == "__main__":
    main()
