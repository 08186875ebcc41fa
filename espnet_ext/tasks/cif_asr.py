"""ESPnet2 task for the CIF ASR model: ASRTask plus the CIF parts, teacher data and our trainer.

- Options ``--predictor``/``--predictor_conf`` and ``--distiller``/``--distiller_conf``
  (:mod:`espnet_ext.asr.cif_part_choices`; default ``--predictor cif``, ``--distiller none``). A
  paper variant is one line: ``--distiller acd --distiller_conf teacher_dim=384``.
- ``plm_feats`` (B, L+1, Dt) pre-extracted PLM features, one row per target token incl. EOS, is
  accepted for training and validation and handed to the model's distiller.
- The trainer is :class:`espnet_ext.train.trainer.Trainer` (atomic checkpoints, ``--cpu_bf16``).

The model, encoder and decoder are the stock ASRTask choices registered by ``espnet_ext``
(``cif``, ``conformer_pooling``, ``cif_ar``), built by ASRTask's own ``build_model``; this task
makes them the defaults. ESPnet hands a model nothing but ``model_conf``, so :meth:`build_model`
writes the chosen predictor and distiller there (and thereby into config.yaml): stock
``ASRTask.build_model_from_file`` rebuilds the same model.

With ``--token_type hugging_face`` the preprocessor maps pieces to ids through the token list
(ESPnet's ``TokenIDConverter``) instead of the tokenizer's own ids (ESPnet's default), so a
compact PLM-wordpiece list (espnet_ext.utils.tokens) works; for the full list both give the same
ids.
"""
import argparse
from typing import Callable, Dict, Optional, Tuple

import numpy as np
from espnet2.tasks.asr import ASRTask, model_choices

import espnet_ext  # noqa: F401  (registers our classes in espnet2.tasks.asr)
from espnet_ext.asr.cif_asr_model import CIFASRModel
from espnet_ext.asr.cif_part_choices import distiller_choices, predictor_choices
from espnet_ext.train.trainer import Trainer

#: Options of this task that CIFASRModel receives through model_conf.
PART_OPTIONS = ("predictor", "predictor_conf", "distiller", "distiller_conf")


class CIFASRTask(ASRTask):
    """ASRTask with the CIF parts as choices, ``plm_feats`` as optional data, our trainer."""

    teacher_data_name = "plm_feats"
    class_choices_list = ASRTask.class_choices_list + [predictor_choices, distiller_choices]
    trainer = Trainer

    @classmethod
    def add_task_arguments(cls, parser: argparse.ArgumentParser):
        super().add_task_arguments(parser)
        parser.set_defaults(model="cif", encoder="conformer_pooling", decoder="cif_ar")

    @classmethod
    def build_model(cls, args: argparse.Namespace):
        """ASRTask's model; for a CIF model, the predictor and distiller options go into
        ``model_conf`` first (``args`` is dumped to config.yaml after this)."""
        model_class = model_choices.get_class(args.model) if getattr(args, "model", None) else None
        if model_class is not None and issubclass(model_class, CIFASRModel) and hasattr(args, "predictor"):
            chosen = {k: getattr(args, k) for k in PART_OPTIONS}
            stale = [k for k in PART_OPTIONS if k in args.model_conf and args.model_conf[k] != chosen[k]]
            if stale:
                raise ValueError(
                    f"model_conf sets {', '.join(stale)} ({ {k: args.model_conf[k] for k in stale} }), "
                    f"which differ from the options ({ {k: chosen[k] for k in stale} }): choose the "
                    "CIF parts with --predictor/--predictor_conf/--distiller/--distiller_conf "
                    "(top-level config keys); CIFASRTask copies them into model_conf"
                )
            args.model_conf = {**args.model_conf, **chosen}
        return super().build_model(args)

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
