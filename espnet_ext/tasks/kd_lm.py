"""LMKDTask: ESPnet2's LMTask plus an internal-LM teacher for DR-KD (``KDLanguageModel``), trained
by our trainer (espnet_ext.tasks.lm).

Teacher options name a trained ASR model (config + checkpoint) and which ILM of it teaches:
``zero`` (ILME-Z) or ``label_ctx`` (ILME-L, with the context learner checkpoint). The teacher
is loaded only for training, never in ``--collect_stats`` (stats need no teacher).
"""
import argparse
import logging

from espnet2.utils.types import str_or_none
from typeguard import typechecked

from espnet_ext.lm.internal_lm import load_internal_lm
from espnet_ext.lm.kd_lm import KDLanguageModel
from espnet_ext.tasks.lm import LMTask
from espnet_ext.utils.tokens import check_same_tokens


class LMKDTask(LMTask):
    @classmethod
    @typechecked
    def add_task_arguments(cls, parser: argparse.ArgumentParser):
        super().add_task_arguments(parser)
        group = parser.add_argument_group(description="DR-KD teacher")
        group.add_argument("--teacher_train_config", type=str_or_none, default=None,
                           help="config.yaml of the trained ASR model whose ILM teaches")
        group.add_argument("--teacher_model_file", type=str_or_none, default=None,
                           help="checkpoint of that ASR model")
        group.add_argument("--teacher_ilm_type", type=str, default="zero",
                           choices=["zero", "label_ctx"],
                           help="zero: ILME-Z (zeroed context); label_ctx: ILME-L")
        group.add_argument("--teacher_ctx_file", type=str_or_none, default=None,
                           help="ILME-L context learner checkpoint (label_ctx only)")
        group.add_argument("--teacher_ctx_config", type=str_or_none, default=None,
                           help="its config.yaml (default: next to --teacher_ctx_file)")
        parser.set_defaults(model="lm_kd")
        return parser

    @classmethod
    @typechecked
    def build_model(cls, args: argparse.Namespace):
        model = super().build_model(args)
        teacher_file = getattr(args, "teacher_model_file", None)
        if teacher_file is None or getattr(args, "collect_stats", False):
            return model
        if not isinstance(model, KDLanguageModel):
            raise ValueError(f"--teacher_model_file needs --model lm_kd, got --model {args.model}")
        teacher = load_internal_lm(
            args.teacher_train_config, teacher_file, args.teacher_ilm_type,
            args.teacher_ctx_config, args.teacher_ctx_file,
        )
        check_same_tokens(teacher.token_list, args.token_list,
                          f"teacher {teacher_file} vs --token_list")
        logging.info(f"DR-KD teacher: ILME-{'Z' if args.teacher_ilm_type == 'zero' else 'L'} of "
                     f"{teacher_file}, {teacher.num_ilm_params()} ILM parameters (frozen)")
        model.set_teacher(teacher)
        return model
