"""Train the ILME-L context learner: ``python -m espnet_ext.bin.ilm_context_train`` (LMTask data
options plus ``--asr_train_config --asr_model_file --learner_conf``)."""
import argparse
from typing import List, Optional

import espnet_ext  # noqa: F401  (registers the CIF ASR classes for loading the ASR model)
from espnet_ext.tasks.ilm_context import ILMContextTask
from espnet_ext.utils.tokens import check_same_tokens


class CheckedILMContextTask(ILMContextTask):
    """ILMContextTask that refuses, when it loads the ASR model, one whose sos/eos is not the
    last id of the token list: the learner trains the decoder's ILM from that sos, while ILME-L
    is then scored as an ESPnet LM (sos = eos = V-1) in fusion, perplexity and DR-KD."""

    @classmethod
    def build_model(cls, args: argparse.Namespace):
        tokens = args.token_list if isinstance(args.token_list, str) else "--token_list"
        model = super().build_model(args)  # token lists compared there; list in args.token_list
        check_same_tokens(args.token_list, args.token_list,
                          f"ASR model {args.asr_model_file} ({args.asr_train_config}) vs "
                          f"context learner token list {tokens}",
                          asr_sos=model.sos, asr_eos=model.eos)
        return model


def main(cmd: Optional[List[str]] = None) -> None:
    CheckedILMContextTask.main(cmd=cmd)


if __name__ == "__main__":
    main()
