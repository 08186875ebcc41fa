"""ILMContextTask: trains the ILME-L context learner on transcripts with the ASR model frozen.

Same data, preprocessing and batching as ESPnet2's LMTask (a ``text`` file); the model is a
``ContextLearnerModel`` whose loss is the frozen decoder's cross-entropy. The ASR decoder is
hidden from checkpoints, so ``valid.loss.ave.pth`` holds only ``learner.*``. Trained by our
trainer (espnet_ext.tasks.lm).
"""
import argparse
import logging

from espnet2.torch_utils.initialize import initialize
from espnet2.utils.nested_dict_action import NestedDictAction
from espnet2.utils.types import str_or_none
from typeguard import typechecked

from espnet_ext.lm.decoder_adapters import make_adapter
from espnet_ext.lm.ilm_context import ContextLearner, ContextLearnerModel
from espnet_ext.tasks.lm import LMTask
from espnet_ext.utils.tokens import check_same_tokens, read_token_list


class ILMContextTask(LMTask):
    class_choices_list = []  # no --lm/--model: the model is fixed

    @classmethod
    @typechecked
    def add_task_arguments(cls, parser: argparse.ArgumentParser):
        super().add_task_arguments(parser)
        group = parser.add_argument_group(description="ILME-L context learner")
        group.add_argument("--asr_train_config", type=str_or_none, default=None,
                           help="config.yaml of the trained (frozen) ASR model")
        group.add_argument("--asr_model_file", type=str_or_none, default=None,
                           help="checkpoint of that ASR model")
        group.add_argument("--learner_conf", action=NestedDictAction, default=dict(),
                           help="ContextLearner options: embed_size, hidden_size, num_layers, "
                                "dropout (context_shape is taken from the decoder)")
        required = parser.get_default("required")
        required += ["asr_model_file"]
        return parser

    @classmethod
    @typechecked
    def build_model(cls, args: argparse.Namespace) -> ContextLearnerModel:
        from espnet2.tasks.asr import ASRTask

        if isinstance(args.token_list, str):
            args.token_list = read_token_list(args.token_list)
        asr_model, _ = ASRTask.build_model_from_file(args.asr_train_config,
                                                     args.asr_model_file, "cpu")
        check_same_tokens(asr_model.token_list, args.token_list,
                          f"ASR model {args.asr_model_file} vs --token_list")
        shape = list(make_adapter(asr_model.decoder).context_shape)
        conf = dict(args.learner_conf)
        if conf.get("context_shape", shape) != shape:
            raise ValueError(f"learner_conf.context_shape {conf['context_shape']} != decoder "
                             f"context shape {shape}")
        conf["context_shape"] = shape
        args.learner_conf = conf  # dumped to config.yaml: the learner rebuilds from it alone
        learner = ContextLearner(len(args.token_list), **conf)
        model = ContextLearnerModel(learner, len(args.token_list), asr_model.sos, asr_model.eos)
        if args.init is not None:
            initialize(model, args.init)
        model.set_decoder(asr_model.decoder)
        logging.info(f"ILME-L learner: {sum(p.numel() for p in learner.parameters())} params, "
                     f"context shape {shape}; ASR decoder frozen")
        return model
