"""Helpers of the reliability tests: run a stage in a subprocess and SIGKILL it once there is
evidence of a known amount of work; one tiny CIF ASR model trained once per process.

The stages run as ``python -m <module>`` with one CPU thread (``OMP_NUM_THREADS=1``), so their
arithmetic is the same as that of an in-process reference run under ``one_thread()``.
"""
import contextlib
import functools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator, List, Sequence

REPO = Path(__file__).resolve().parents[1]
CIF_CONF = REPO / "conf" / "train_asr_cif_tiny.yaml"
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1",
           HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
           PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))


def tail(path: Path, n: int = 3000) -> str:
    try:
        return Path(path).read_text(errors="replace")[-n:]
    except OSError:
        return ""


def start(module_args: Sequence[str], cwd: Path, log: Path) -> subprocess.Popen:
    """``python -m <module_args>`` in its own session (so that a kill reaches its children)."""
    with open(log, "ab") as f:
        return subprocess.Popen([sys.executable, "-m", *map(str, module_args)], cwd=cwd, stdout=f,
                                stderr=subprocess.STDOUT, env=ENV, start_new_session=True)


def run(module_args: Sequence[str], cwd: Path, log: Path, timeout: float = 600) -> None:
    """Run to completion; fail with the log's tail unless it exits 0."""
    proc = start(module_args, cwd, log)
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise AssertionError(f"{module_args[0]} timed out; log {log}:\n{tail(log)}")
    assert rc == 0, f"{module_args[0]} failed (code {rc}); log {log}:\n{tail(log)}"


def kill_when(proc: subprocess.Popen, evidence: Callable[[], bool], what: str, log: Path,
              timeout: float = 600) -> float:
    """Poll ``evidence`` (every 10 ms) and SIGKILL the process group as soon as it holds.

    Fails if the process ends on its own first: the kill must interrupt real work. Returns the
    seconds from start to kill.
    """
    t0 = time.monotonic()
    while not evidence():
        if proc.poll() is not None:
            raise AssertionError(f"{what}: the process ended (code {proc.returncode}) before the "
                                 f"evidence appeared; log {log}:\n{tail(log)}")
        if time.monotonic() - t0 > timeout:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise AssertionError(f"{what}: no evidence after {timeout} s; log {log}:\n{tail(log)}")
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"{what}: ended with {proc.returncode}, not killed"
    return time.monotonic() - t0


def log_has(log: Path, text: str) -> Callable[[], bool]:
    return lambda: text in tail(log, 10 ** 9)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """In-process reference runs with the same single thread as the subprocesses."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def chdir(path: Path) -> Iterator[None]:
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def files(root: Path, exclude: Sequence[str] = ()) -> List[str]:
    """Relative paths of the regular files under root (symlinks listed by name too)."""
    out = []
    for p in Path(root).rglob("*"):
        rel = str(p.relative_to(root))
        if (p.is_file() or p.is_symlink()) and not any(x in rel for x in exclude):
            out.append(rel)
    return sorted(out)


@functools.lru_cache(maxsize=None)
def tiny_cif_model(root: Path, max_epoch: int = 3, n_utts: int = 40):
    """A tiny CIF model trained in-process (once per process and root): (exp dir, data paths).

    Shared by the resume tests (the uninterrupted reference of ASR training, the model that is
    decoded) and the bad-input tests (a model to decode with)."""
    from tiny_asr_data import asr_data_args, make_tiny_asr_data

    from espnet_ext.tasks.cif_asr import CIFASRTask

    root = Path(root)
    data = make_tiny_asr_data(root / "data", n_utts=n_utts, feat_dim=20, seed=7)
    exp = root / "exp"
    with one_thread():
        CIFASRTask.main(cmd=["--config", str(CIF_CONF), "--output_dir", str(exp), "--resume",
                             "true", "--max_epoch", str(max_epoch)] + asr_data_args(data))
    return exp, data
