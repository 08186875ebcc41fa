"""Train the ILME-L context learner: ``python -m espnet_ext.bin.ilm_context_train`` (LMTask data
options plus ``--asr_train_config --asr_model_file --learner_conf``)."""
from typing import List, Optional

import espnet_ext  # noqa: F401  (registers the CIF ASR classes for loading the ASR model)
from espnet_ext.tasks.ilm_context import ILMContextTask


def main(cmd: Optional[List[str]] = None) -> None:
    ILMContextTask.main(cmd=cmd)


if __name__ == "__main__":
    main()
