"""Registration of espnet_ext classes in ESPnet2's stock ClassChoices.

ESPnet2's ``ASRTask.build_model``/``LMTask.build_model`` read module-level ClassChoices
(``espnet2.tasks.asr.encoder_choices`` ...), so adding our classes there lets stock tools
(``espnet2.bin.asr_inference``, ``build_model_from_file``) rebuild our models. Importing
``espnet2.tasks.asr`` costs ~20 s, so ``import espnet_ext`` does not import it: registration runs
right away when the task module is already loaded, otherwise as soon as it is imported (an import
hook on the two task modules). Entries are ``"module:Class"`` strings imported at that moment.
"""
import importlib
import importlib.abc
import sys
from typing import Dict, List, Tuple

# task module -> [(ClassChoices attribute, choice key, "module:Class")]
REGISTRY: Dict[str, List[Tuple[str, str, str]]] = {
    "espnet2.tasks.asr": [
        ("model_choices", "cif", "espnet_ext.asr.cif_asr_model:CIFASRModel"),
        ("encoder_choices", "conformer_pooling",
         "espnet_ext.asr.encoder.conformer_pooling_encoder:ConformerPoolingEncoder"),
        ("decoder_choices", "cif_ar", "espnet_ext.asr.decoder.cif_decoder:CIFDecoder"),
    ],
    "espnet2.tasks.lm": [
        ("model_choices", "lm_kd", "espnet_ext.lm.kd_lm:KDLanguageModel"),
    ],
}


def _load(spec: str):
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def register_module(task_module) -> None:
    """Add every entry for ``task_module`` to its ClassChoices (idempotent)."""
    for attr, key, spec in REGISTRY.get(task_module.__name__, []):
        choices = getattr(task_module, attr)
        if key not in choices.classes:
            try:
                cls = _load(spec)
            except ModuleNotFoundError as e:
                # Only tolerate a registry entry whose own module is not written yet.
                if e.name and spec.split(":")[0].startswith(e.name):
                    continue
                raise
            choices.classes[key] = cls


class _RegisterOnImport(importlib.abc.MetaPathFinder):
    """Wraps the loader of the task modules so registration follows their execution."""

    def find_spec(self, fullname, path, target=None):
        if fullname not in REGISTRY:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                loader = spec.loader
                exec_module = loader.exec_module

                def exec_and_register(module, _exec=exec_module):
                    _exec(module)
                    register_module(module)

                loader.exec_module = exec_and_register
                return spec
        return None


def install() -> None:
    for name in REGISTRY:
        if name in sys.modules:
            register_module(sys.modules[name])
    if not any(isinstance(f, _RegisterOnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterOnImport())
