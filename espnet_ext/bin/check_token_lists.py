"""Refuse (exit 1, the error on stderr) an ASR model whose token list differs from the LMs' or
whose sos/eos is not its last entry, before any LM is trained for it:

    python -m espnet_ext.bin.check_token_lists --asr_train_config C --token_list T

The model is built from its config only (ESPnet's own sos/eos rule, no checkpoint needed).
"""
import argparse
import sys
from typing import List, Optional

from espnet_ext.utils.tokens import check_same_tokens


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--asr_train_config", required=True, help="the ASR model's config.yaml")
    parser.add_argument("--token_list", required=True, help="tokens.txt of the LMs")
    return parser


def main(cmd: Optional[List[str]] = None) -> None:
    args = get_parser().parse_args(cmd)
    from espnet2.tasks.asr import ASRTask

    import espnet_ext  # noqa: F401  (registers our ASR model classes)

    model, _ = ASRTask.build_model_from_file(args.asr_train_config, None, "cpu")
    try:
        check_same_tokens(model.token_list, args.token_list,
                          f"ASR model {args.asr_train_config} vs LM token list {args.token_list}",
                          asr_sos=model.sos, asr_eos=model.eos)
    except ValueError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
