"""ESPnet2 task for the CIF ASR model: ASRTask plus the optional teacher-feature data key.

``plm_feats`` (B, L+1, Dt) pre-extracted PLM features, one row per target token incl. EOS, is
accepted for training and validation and handed to the model's distiller. The model, encoder and
decoder are the stock ASRTask choices registered by ``espnet_ext`` (``cif``, ``conformer_pooling``,
``cif_ar``), so stock ``ASRTask.build_model_from_file`` rebuilds the model too; this task only makes
them the defaults.

With ``--token_type hugging_face`` the preprocessor maps pieces to ids through the token list
(ESPnet's ``TokenIDConverter``) instead of the tokenizer's own ids (ESPnet's default), so a
compact PLM-wordpiece list (espnet_ext.utils.tokens) works; for the full list both give the same
ids.
"""
import argparse
from typing import Callable, Dict, Optional, Tuple

import numpy as np

import espnet_ext  # noqa: F401  (registers our classes in espnet2.tasks.asr)
from espnet2.tasks.asr import ASRTask
from espnet_ext.utils import checkpoint

checkpoint.install()  # a kill while saving never leaves a truncated checkpoint.pth


class CIFASRTask(ASRTask):
    """ASRTask with ``plm_feats`` as optional data and the CIF model as default choices."""

    teacher_data_name = "plm_feats"

    @classmethod
    def add_task_arguments(cls, parser: argparse.ArgumentParser):
        super().add_task_arguments(parser)
        parser.set_defaults(model="cif", encoder="conformer_pooling", decoder="cif_ar")

    @classmethod
    def build_preprocess_fn(
        cls, args: argparse.Namespace, train: bool
    ) -> Optional[Callable[[str, Dict[str, np.ndarray]], Dict[str, np.ndarray]]]:
        preprocess = super().build_preprocess_fn(args, train)
        if getattr(args, "token_type", None) == "hugging_face" and hasattr(preprocess, "token_id_converter"):
            from espnet2.text.token_id_converter import TokenIDConverter

            preprocess.token_id_converter = TokenIDConverter(token_list=args.token_list, unk_symbol="<unk>")
        return preprocess

    @classmethod
    def optional_data_names(cls, train: bool = True, inference: bool = False) -> Tuple[str, ...]:
        names = super().optional_data_names(train, inference)
        if not inference:
            names = names + (cls.teacher_data_name,)
        return names
