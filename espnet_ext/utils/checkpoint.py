"""Atomic checkpoint files for ESPnet2's trainer.

``espnet2.train.trainer.Trainer.run`` writes ``checkpoint.pth`` (model, optimizer, scheduler and
reporter state: what ``--resume true`` reads) and ``<N>epoch.pth`` with ``torch.save`` straight to
the final name. A job killed while it saves (seconds for a large model and its Adam state) leaves a
truncated ``checkpoint.pth``, and every later ``--resume`` fails on it ("PytorchStreamReader failed
reading zip archive"). :func:`install` makes the trainer module's ``torch.save`` write a ``.tmp``
file and rename it, so a checkpoint is either the previous complete one or the new complete one.

Only the ``torch`` name inside ``espnet2.train.trainer`` is replaced (by a view of the torch module
whose ``save`` is :func:`atomic_save`); nothing else in the process changes. Our training entry
points install it when their task module is imported.
"""
import os
from typing import Any


def atomic_save(obj: Any, f, *args, **kwargs) -> None:
    """``torch.save`` to ``<f>.tmp`` and rename to ``f`` (file objects are written as they are)."""
    import torch

    if not isinstance(f, (str, os.PathLike)):
        torch.save(obj, f, *args, **kwargs)
        return
    tmp = f"{os.fspath(f)}.tmp"
    try:
        torch.save(obj, tmp, *args, **kwargs)
        os.replace(tmp, f)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class _TorchWithAtomicSave:
    """The torch module as the trainer sees it, with an atomic ``save``."""

    def __init__(self, torch_module):
        self._torch = torch_module

    def __getattr__(self, name: str):
        return getattr(self._torch, name)

    save = staticmethod(atomic_save)


def install() -> None:
    """Make ESPnet's trainer save checkpoints atomically (idempotent)."""
    import espnet2.train.trainer as trainer

    if not isinstance(trainer.torch, _TorchWithAtomicSave):
        trainer.torch = _TorchWithAtomicSave(trainer.torch)
