"""Train a DR-KD student LM: ``python -m espnet_ext.bin.kd_lm_train`` (LMTask options plus
``--teacher_*``). After training, ``config.plain.yaml`` in the output dir describes the student
as a stock ESPnet LM (``model: lm``) for tools that do not import espnet_ext."""
import sys
from pathlib import Path
from typing import List, Optional

import yaml

import espnet_ext  # noqa: F401  (registers lm_kd and the CIF ASR classes)
from espnet_ext.tasks.kd_lm import LMKDTask

TEACHER_KEYS = ("teacher_train_config", "teacher_model_file", "teacher_ilm_type",
                "teacher_ctx_file", "teacher_ctx_config")


def write_plain_config(output_dir: Path) -> Optional[Path]:
    """config.yaml of the KD run rewritten for ``ESPnetLanguageModel`` (student only)."""
    src = output_dir / "config.yaml"
    if not src.exists():
        return None
    with open(src, encoding="utf-8") as f:
        conf = yaml.safe_load(f)
    conf["model"] = "lm"
    conf["model_conf"] = {"ignore_id": conf.get("model_conf", {}).get("ignore_id", 0)}
    for key in TEACHER_KEYS:
        conf.pop(key, None)
    dst = output_dir / "config.plain.yaml"
    with open(dst, "w", encoding="utf-8") as f:
        yaml.safe_dump(conf, f, sort_keys=False, allow_unicode=True)
    return dst


def main(cmd: Optional[List[str]] = None) -> None:
    LMKDTask.main(cmd=cmd)
    parser = LMKDTask.get_parser()
    args, _ = parser.parse_known_args(cmd if cmd is not None else sys.argv[1:])
    if not args.collect_stats and not args.print_config and args.output_dir:
        write_plain_config(Path(args.output_dir))


if __name__ == "__main__":
    main()
