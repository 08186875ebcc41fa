"""Registration of espnet_ext classes in ESPnet2's stock ClassChoices.

ESPnet2's ``ASRTask.build_model``/``LMTask.build_model`` look parts up in module-level
ClassChoices (``espnet2.tasks.asr.model_choices`` ...) and ESPnet has no plugin mechanism, so
``import espnet_ext`` adds our entries to those dicts; stock tools (``build_model_from_file``)
then rebuild our models. Importing ``espnet2.tasks.asr`` costs ~20 s, which ``import espnet_ext``
must not pay: entries are added at once to a task module that is already imported, otherwise right
after it is imported (a finder on ``sys.meta_path`` that only wraps the loader of these modules).
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


def register_module(task_module) -> None:
    """Add the entries of ``task_module`` to its ClassChoices."""
    for attr, key, spec in REGISTRY[task_module.__name__]:
        module, name = spec.split(":")
        getattr(task_module, attr).classes[key] = getattr(importlib.import_module(module), name)


class _RegisterAfterImport(importlib.abc.MetaPathFinder):
    """Finds the task modules with the other finders and registers right after their execution."""

    def find_spec(self, fullname, path, target=None):
        if fullname not in REGISTRY:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                exec_module = spec.loader.exec_module

                def exec_and_register(module, _exec=exec_module):
                    _exec(module)
                    register_module(module)

                spec.loader.exec_module = exec_and_register
                return spec
        return None


def install() -> None:
    """Register in the task modules already imported, and in the others when they are."""
    for name in REGISTRY:
        if name in sys.modules:
            register_module(sys.modules[name])
    if not any(isinstance(f, _RegisterAfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterImport())
