"""Packed models: one file that a colleague decodes with, in ESPnet's packing format.

:func:`pack_model` writes what decoding needs through ESPnet's own packer
(``espnet2.main_funcs.pack_funcs.pack``: a zip or tar with ``meta.yaml``, the layout
``espnet2.bin.pack`` and espnet_model_zoo use):

- ``config.yaml`` of the ASR model without its training-only parts (the distiller set to
  null), so that the stock ``ASRTask.build_model_from_file`` rebuilds it (once ``espnet_ext``
  is imported, which registers the CIF classes);
- ``model.pth``: the given (averaged) parameters without the distiller's;
- the files the config names: the BPE model, the global-MVN statistics; for ``token_type:
  hugging_face`` the tokenizer files of the ``bpemodel`` directory (not the model weights), with
  ``bpemodel`` pointed at their copy;
- ``feature.yaml``: the features the model takes (the recipe's Kaldi fbank: rate and mel bins);
- optionally the decode config and an LM (config and parameters).

Paths inside the configs are those of the training directory (``root``, where the recipe ran);
ESPnet's unpacker rewrites them to the unpacked files (a tokenizer directory, which it does not
rewrite, :func:`unpack_model` does). :func:`unpack_model` unpacks (once per target directory) and
returns the paths and the feature settings.
"""
import contextlib
import logging
import shutil
from pathlib import Path
from typing import Dict, List, Optional, Union

import torch
import yaml

from espnet_ext.recipe.fbank import DEFAULT_OPTS as FBANK_OPTS

logger = logging.getLogger("espnet_ext.pack")

PathLike = Union[str, Path]
FEATURE_FILE = "feature.yaml"
DECODE_FILE = "decode.yaml"
TRAINING_ONLY_PREFIXES = ("distiller.",)
TOKENIZER_DIR = "tokenizer"
# Files a Hugging Face tokenizer is loaded from, besides its class's vocabulary files
# (``vocab_files_names``: vocab.txt, merges.txt, spiece.model, ...); config.json for tokenizer
# configs that name no tokenizer class (AutoTokenizer then reads the model type there).
HF_TOKENIZER_FILES = ("tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                      "tokenizer.json", "config.json", "chat_template.jinja", "chat_template.json")


def inference_config(conf: dict) -> dict:
    """The training config without its training-only parts: no distiller (top level and in
    ``model_conf``, where the CIF task copies it)."""
    conf = dict(conf)
    conf["model_conf"] = dict(conf.get("model_conf") or {})
    for where in (conf, conf["model_conf"]):
        if "distiller" in where:
            where["distiller"] = None
            where["distiller_conf"] = {}
    return conf


def inference_state(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Parameters without those of the training-only modules."""
    return {k: v for k, v in state.items() if not k.startswith(TRAINING_ONLY_PREFIXES)}


def _relative(path: str) -> str:
    """As the packer names a file: relative to the working directory when below it."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


# Config entries naming files that decoding reads: BPE model, token list file, MVN statistics.
_FILE_KEYS = (("bpemodel",), ("token_list",), ("normalize_conf", "stats_file"))


def _config_files(conf: dict) -> Dict[tuple, str]:
    """{key path: existing file} of a config's :data:`_FILE_KEYS`."""
    found = {}
    for keys in _FILE_KEYS:
        value = conf
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, str) and Path(value).is_file():
            found[keys] = value
    return found


def _relative_paths(conf: dict) -> dict:
    """The config with its file paths written as the packer names the files, so that the
    unpacker rewrites them to the unpacked copies."""
    conf = dict(conf)
    for keys, path in _config_files(conf).items():
        if len(keys) == 1:
            conf[keys[0]] = _relative(path)
        else:
            conf[keys[0]] = {**conf[keys[0]], keys[1]: _relative(path)}
    return conf


def hf_tokenizer_files(directory: PathLike) -> List[Path]:
    """The files of a local Hugging Face tokenizer directory that loading the tokenizer reads
    (:data:`HF_TOKENIZER_FILES` and the class's vocabulary files): not the model's weights,
    configs of other libraries or READMEs that such a directory also holds."""
    from transformers import AutoTokenizer

    directory = Path(directory)
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    names = set(HF_TOKENIZER_FILES) | set(getattr(tokenizer, "vocab_files_names", {}).values())
    return sorted(p for p in (directory / n for n in names) if p.is_file())


def _check_same_tokenizer(original: Path, copy: Path) -> None:
    """Refuse a tokenizer copy that loads as another tokenizer (vocabulary, specials, pieces)."""
    from transformers import AutoTokenizer

    a, b = (AutoTokenizer.from_pretrained(str(d)) for d in (original, copy))
    probe = "Packing keeps the tokenizer's pieces: don't split 3.5 MB of naïve text!"
    for what, get in (("vocabulary", lambda t: t.get_vocab()),
                      ("special tokens", lambda t: t.all_special_tokens),
                      ("pieces", lambda t: t.tokenize(probe))):
        if get(a) != get(b):
            raise RuntimeError(f"the packed copy of the tokenizer {original} ({copy}) loads with "
                               f"another {what}; files copied: {sorted(p.name for p in copy.iterdir())}")


def _stage_hf_tokenizer(conf: dict, stage: Path) -> List[str]:
    """For ``token_type: hugging_face`` with a local ``bpemodel`` directory: copy its tokenizer
    files to ``<stage>/tokenizer``, point ``conf["bpemodel"]`` there (as the packer names it) and
    return the copies to pack. A ``bpemodel`` that is no directory (a Hub name) stays a
    reference, with a warning: it loads only where that name is cached or reachable."""
    if conf.get("token_type") != "hugging_face" or not isinstance(conf.get("bpemodel"), str):
        return []
    source = Path(conf["bpemodel"])
    if not source.is_dir():
        logger.warning(f"hugging_face tokenizer {conf['bpemodel']!r} is no local directory: not "
                       f"packed, the packed model loads it by name (Hugging Face cache or Hub)")
        return []
    target = stage / TOKENIZER_DIR
    target.mkdir()
    files = hf_tokenizer_files(source)
    for f in files:
        shutil.copy(f, target / f.name)
    _check_same_tokenizer(source, target)
    logger.info(f"packing the tokenizer of {source}: {', '.join(f.name for f in files)}")
    conf["bpemodel"] = _relative(str(target))
    return [str(target / f.name) for f in files]


def pack_model(asr_train_config: PathLike, asr_model_file: PathLike, outpath: PathLike,
               root: PathLike = ".", fs: int = 16000, num_mel_bins: int = 80,
               decode_config: Optional[PathLike] = None, lm_train_config: Optional[PathLike] = None,
               lm_file: Optional[PathLike] = None) -> Path:
    """Pack a trained ASR model (see the module doc) into ``outpath`` (``.zip`` or ``.tar.gz``);
    relative paths are taken from ``root``. Returns the packed file's absolute path."""
    root = Path(root).resolve()
    outpath = (root / outpath).resolve() if not Path(outpath).is_absolute() else Path(outpath)
    with contextlib.chdir(root):
        config = Path(asr_train_config)
        stage = config.parent / "pack"  # inside root: archive names stay relative
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir(parents=True)
        with open(config, encoding="utf-8") as f:
            conf = inference_config(yaml.safe_load(f))
        tokenizer_files = _stage_hf_tokenizer(conf, stage)
        conf = _relative_paths(conf)
        with open(stage / "config.yaml", "w", encoding="utf-8") as f:
            yaml.safe_dump(conf, f, allow_unicode=True, sort_keys=False)
        state = torch.load(asr_model_file, map_location="cpu")
        kept = inference_state(state)
        if len(kept) < len(state):
            logger.info(f"left out {len(state) - len(kept)} training-only tensors "
                        f"({', '.join(TRAINING_ONLY_PREFIXES)})")
        torch.save(kept, stage / "model.pth")
        with open(stage / FEATURE_FILE, "w", encoding="utf-8") as f:
            yaml.safe_dump({"type": "kaldi_fbank", "fs": fs, "num_mel_bins": num_mel_bins,
                            "frame_length_ms": FBANK_OPTS["frame_length"],
                            "frame_shift_ms": FBANK_OPTS["frame_shift"]}, f)
        options = list(_config_files(conf).values()) + tokenizer_files + [str(stage / FEATURE_FILE)]
        if decode_config is not None:
            shutil.copy(decode_config, stage / DECODE_FILE)
            options.append(str(stage / DECODE_FILE))
        yaml_files = {"asr_train_config": str(stage / "config.yaml")}
        files = {"asr_model_file": str(stage / "model.pth")}
        if (lm_train_config is None) != (lm_file is None):
            raise ValueError("an LM needs both lm_train_config and lm_file")
        if lm_file is not None:
            yaml_files["lm_train_config"] = str(lm_train_config)
            files["lm_file"] = str(lm_file)
            with open(lm_train_config, encoding="utf-8") as f:
                options += [n for n in _config_files(yaml.safe_load(f)).values() if n not in options]
        from espnet2.main_funcs.pack_funcs import pack

        pack(files=files, yaml_files=yaml_files, option=options, outpath=outpath)
    logger.info(f"packed {asr_model_file} into {outpath} ({outpath.stat().st_size / 2**20:.1f} MiB)")
    return outpath


def unpack_model(packed: PathLike, outdir: Optional[PathLike] = None) -> Dict[str, object]:
    """Unpack ``packed`` into ``outdir`` (default: ``<packed>.unpacked`` beside it; reused when
    already there) and return {asr_train_config, asr_model_file, [lm_train_config, lm_file],
    feature: {fs, num_mel_bins, ...}, decode_config: path or None}."""
    from espnet2.main_funcs.pack_funcs import unpack

    packed = Path(packed)
    if not packed.is_file():
        raise FileNotFoundError(f"packed model {packed} does not exist")
    outdir = Path(outdir) if outdir is not None else packed.with_name(packed.name + ".unpacked")
    paths: Dict[str, object] = dict(unpack(packed, outdir))
    _localize_tokenizer(Path(str(paths["asr_train_config"])), outdir)
    stage = Path(str(paths["asr_train_config"])).parent
    feature = stage / FEATURE_FILE
    if not feature.is_file():
        raise FileNotFoundError(f"{packed} holds no {FEATURE_FILE} next to its config: not a model "
                                f"packed by espnet_ext.bin.pack_model")
    with open(feature, encoding="utf-8") as f:
        paths["feature"] = yaml.safe_load(f)
    decode = stage / DECODE_FILE
    paths["decode_config"] = str(decode) if decode.is_file() else None
    return paths


def _localize_tokenizer(config: Path, outdir: Path) -> None:
    """Point an unpacked hugging_face config's ``bpemodel`` (the packed tokenizer directory, named
    as in the archive) at its unpacked copy: ESPnet's unpacker rewrites file paths only."""
    with open(config, encoding="utf-8") as f:
        conf = yaml.safe_load(f)
    bpemodel = conf.get("bpemodel")
    if conf.get("token_type") != "hugging_face" or not isinstance(bpemodel, str):
        return
    unpacked = outdir / bpemodel
    if Path(bpemodel).is_absolute() or Path(bpemodel).name != TOKENIZER_DIR or not unpacked.is_dir():
        return  # not packed (a Hub name), or already rewritten
    conf["bpemodel"] = str(unpacked)
    with open(config, "w", encoding="utf-8") as f:
        yaml.safe_dump(conf, f)
