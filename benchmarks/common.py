"""Shared helpers for the benchmark scripts: machine description, timing, output."""
import argparse
import json
import os
import platform
import statistics
import subprocess
import time
from typing import Callable, Dict, List, Tuple


def machine_info() -> Dict[str, str]:
    import torch

    cpu = platform.processor() or "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "torch_threads": str(torch.get_num_threads()),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
    }
    try:
        info["git"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                     text=True, check=False).stdout.strip()
    except OSError:
        pass
    return info


def time_fn(fn: Callable[[], None], repeats: int, warmup: int = 1, sync: Callable[[], None] = lambda: None) -> float:
    """Median wall time in milliseconds."""
    for _ in range(warmup):
        fn()
    sync()
    times: List[float] = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def time_fn_cpu(fn: Callable[[], None], repeats: int, warmup: int = 1,
                sync: Callable[[], None] = lambda: None) -> Tuple[float, float]:
    """(median wall ms, median process CPU ms): on a shared machine with one torch thread the
    CPU time does not depend on other users' load."""
    for _ in range(warmup):
        fn()
    sync()
    walls: List[float] = []
    cpus: List[float] = []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        sync()
        walls.append((time.perf_counter() - t0) * 1000)
        cpus.append((time.process_time() - c0) * 1000)
    return statistics.median(walls), statistics.median(cpus)


def base_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--json", action="store_true", help="print machine-readable results")
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks the harness, not timing")
    return p


def emit(name: str, rows: List[Dict], args, columns: List[str]) -> None:
    result = {"benchmark": name, "machine": machine_info(), "rows": rows}
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print(f"# {name}")
    print("# machine: " + ", ".join(f"{k}={v}" for k, v in result["machine"].items()))
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for r in rows:
        print("| " + " | ".join(_fmt(r.get(c, "")) for c in columns) + " |")


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)
