"""ESPnet2's trainer with atomic checkpoint files and an optional CPU bf16 autocast.

Our tasks set it as their ``trainer`` class attribute (ESPnet's hook for another trainer):
CIFASRTask, LMKDTask, ILMContextTask and the LMTask of ``espnet_ext.bin.lm_train``.

Atomic checkpoints: ESPnet's ``Trainer.run`` writes ``checkpoint.pth`` (model, optimizers,
schedulers, reporter: what ``--resume true`` reads), ``<N>epoch.pth`` and the averaged models with
``torch.save`` straight to the final name. A job killed while it saves (seconds for a large model
and its Adam state) leaves a truncated ``checkpoint.pth`` that every later ``--resume`` fails on
("PytorchStreamReader failed reading zip archive"). ``run`` has no save hook, so for the duration
of our ``run`` the ``torch`` name of ESPnet's trainer and model-averaging modules is a view of
torch whose ``save`` writes ``<file>.tmp`` and renames it; afterwards they get torch back. A
checkpoint is then either the previous complete one or the new complete one.

CPU bf16 (``--cpu_bf16 auto|true|false``, default false): ``true`` runs the forward passes of
training and validation under ``torch.autocast("cpu", dtype=torch.bfloat16)`` when ``ngpu`` is 0
(backward and optimizer steps stay outside, as autocast asks); ``auto`` does so when the CPU has
bf16 matrix instructions (``amx_bf16`` or ``avx512_bf16`` among the /proc/cpuinfo flags). Autocast
leaves log-softmax in the input's dtype, so the models cast what needs fp32 themselves
(espnet_ext.asr.cif_asr_model).

Distributed training (DDP; e.g. over Slurm nodes, asr.sh ``--num_nodes``): every rank writes to
stderr, which is its own log, which rank of how many it is (ESPnet logs only errors on ranks
other than 0) and, at the end, the digest of its final parameters (:func:`parameter_digest`).
DDP keeps the ranks' parameters identical, so the digests are equal.
"""
import argparse
import contextlib
import dataclasses
import hashlib
import logging
import os
import sys
from typing import Any, Iterator, Sequence

import espnet2.main_funcs.average_nbest_models as espnet_averaging
import espnet2.train.trainer as espnet_trainer
import torch
from espnet2.utils.build_dataclass import build_dataclass
from typeguard import typechecked

#: /proc/cpuinfo flags of CPUs with bf16 matrix instructions.
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


@dataclasses.dataclass
class TrainerOptions(espnet_trainer.TrainerOptions):
    cpu_bf16: str


def atomic_save(obj: Any, f, *args, **kwargs) -> None:
    """``torch.save`` to ``<f>.tmp``, then rename to ``f`` (file objects are written as they are)."""
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
    """The torch module with an atomic ``save``; every other name is torch's own."""

    save = staticmethod(atomic_save)

    def __init__(self, torch_module):
        self._torch = torch_module

    def __getattr__(self, name: str):
        return getattr(self._torch, name)


@contextlib.contextmanager
def atomic_checkpoint_saves() -> Iterator[None]:
    """Inside the block, ESPnet's trainer and model averaging save through :func:`atomic_save`."""
    modules = (espnet_trainer, espnet_averaging)
    before = [m.torch for m in modules]
    for m in modules:
        m.torch = _TorchWithAtomicSave(torch)
    try:
        yield
    finally:
        for m, t in zip(modules, before):
            m.torch = t


def cpu_bf16_flags(cpuinfo: str = "/proc/cpuinfo") -> Sequence[str]:
    """The bf16 matrix-instruction flags this CPU reports (empty where there is no cpuinfo)."""
    try:
        with open(cpuinfo, encoding="utf-8") as f:
            flags = {w for line in f if line.startswith("flags") for w in line.split(":", 1)[1].split()}
    except OSError:
        return ()
    return tuple(x for x in BF16_CPU_FLAGS if x in flags)


def use_cpu_bf16(setting: str, ngpu: int) -> bool:
    """Whether ``--cpu_bf16 setting`` turns the CPU bf16 autocast on."""
    if ngpu > 0 or setting == "false":
        return False
    return setting == "true" or bool(cpu_bf16_flags())


def parameter_digest(model: torch.nn.Module) -> str:
    """SHA-256 over the model's parameters (names, dtypes, shapes, values), in their order.

    Buffers are left out: BatchNorm running statistics are updated from each rank's own
    data and differ between DDP ranks."""
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        t = p.detach().to("cpu").contiguous()
        h.update(f"{name} {t.dtype} {tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _rank_prefix(distributed_option) -> str:
    """ESPnet's log prefix of a rank: ``[host:rank/world]``."""
    return (f"[{os.uname()[1].split('.')[0]}:{distributed_option.dist_rank}/"
            f"{distributed_option.dist_world_size}]")


class _CPUBf16Forward(torch.nn.Module):
    """The wrapped model with its forward under CPU bf16 autocast."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *args, **kwargs):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.model(*args, **kwargs)


class Trainer(espnet_trainer.Trainer):
    """ESPnet's Trainer; checkpoints saved atomically, optional CPU bf16 forward passes."""

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser):
        group = parser.add_argument_group(description="espnet_ext trainer")
        group.add_argument(
            "--cpu_bf16", type=str, default="false", choices=("auto", "true", "false"),
            help="forward passes under CPU bf16 autocast when ngpu is 0: true, false, or auto "
                 f"(on if the CPU reports {' or '.join(BF16_CPU_FLAGS)})",
        )

    @classmethod
    @typechecked
    def build_options(cls, args: argparse.Namespace) -> TrainerOptions:
        return build_dataclass(TrainerOptions, args)

    @classmethod
    def run(cls, model, optimizers, schedulers, train_iter_factory, valid_iter_factory,
            plot_attention_iter_factory, trainer_options, distributed_option) -> None:
        opts = trainer_options
        on = use_cpu_bf16(opts.cpu_bf16, opts.ngpu)
        logging.info(f"CPU bf16 autocast {'on' if on else 'off'} (--cpu_bf16 {opts.cpu_bf16}, "
                     f"ngpu {opts.ngpu}, CPU bf16 flags: {' '.join(cpu_bf16_flags()) or 'none'})")
        distributed = getattr(distributed_option, "distributed", False)
        if distributed:
            d = distributed_option
            node = os.environ.get("SLURMD_NODENAME")
            print(f"{_rank_prefix(d)} distributed training: rank {d.dist_rank} of world size "
                  f"{d.dist_world_size} ({d.dist_backend}, {d.dist_init_method}"
                  + (f", Slurm node {node}" if node else "") + ")", file=sys.stderr, flush=True)
        with atomic_checkpoint_saves():
            super().run(
                model=model, optimizers=optimizers, schedulers=schedulers,
                train_iter_factory=train_iter_factory, valid_iter_factory=valid_iter_factory,
                plot_attention_iter_factory=plot_attention_iter_factory,
                trainer_options=trainer_options, distributed_option=distributed_option,
            )
        if distributed:
            print(f"{_rank_prefix(distributed_option)} parameter digest after training: "
                  f"sha256 {parameter_digest(model)}", file=sys.stderr, flush=True)

    @classmethod
    def train_one_epoch(cls, model, iterator, optimizers, schedulers, scaler, reporter,
                        summary_writer, options, distributed_option) -> bool:
        if use_cpu_bf16(options.cpu_bf16, options.ngpu):
            model = _CPUBf16Forward(model)
        return super().train_one_epoch(
            model=model, iterator=iterator, optimizers=optimizers, schedulers=schedulers,
            scaler=scaler, reporter=reporter, summary_writer=summary_writer, options=options,
            distributed_option=distributed_option,
        )

    @classmethod
    def validate_one_epoch(cls, model, iterator, reporter, options, distributed_option) -> None:
        if use_cpu_bf16(options.cpu_bf16, options.ngpu):
            model = _CPUBf16Forward(model)
        super().validate_one_epoch(
            model=model, iterator=iterator, reporter=reporter, options=options,
            distributed_option=distributed_option,
        )
