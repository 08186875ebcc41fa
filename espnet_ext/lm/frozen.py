"""Frozen helper modules kept outside a model's module tree."""
from typing import Optional, Tuple

import torch


class HiddenFrozenMixin:
    """Holds frozen helper modules (a teacher, an ASR decoder) outside the module tree: they
    stay out of ``state_dict()``, ``parameters()`` (optimizer, DDP) and ``train()`` (no dropout
    after the Trainer's per-epoch ``model.train()``), yet ``.to()/.half()`` still move them."""

    _hidden_names: Tuple[str, ...] = ()

    def _set_hidden(self, name: str, module: Optional[torch.nn.Module]) -> None:
        if name not in self._hidden_names:
            raise AttributeError(f"{name} is not a declared hidden module")
        if module is not None:
            module.eval()
            module.requires_grad_(False)
        object.__setattr__(self, name, module)

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        for name in self._hidden_names:
            module = self.__dict__.get(name)
            if module is not None:
                module._apply(fn, *args, **kwargs)
        return self
