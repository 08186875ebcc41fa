"""Run a list of decoding-side jobs in one Python process (asr.sh stages 13-15 with use_ilm).

    python -m espnet_ext.recipe.bin.ilm_jobs --jobs exp/ilm_cif/tune_jobs.txt

Each line of ``--jobs`` is ``[--done MARKER [--input F]... [--output F]...] LOG MODULE ARGS...``
(shell-quoted words, e.g. from ``printf %q``): ``MODULE`` is an entry point under
``espnet_ext.bin`` or ``espnet_ext.recipe.bin`` with ``main(cmd)`` (tune_fusion, asr_inference,
score_sclite, ...); its log and printed output go to ``LOG``. With ``--done MARKER`` the job is
skipped while MARKER holds (espnet_ext.recipe.done_marker: the listed inputs and outputs are
unchanged), and MARKER records them when the job succeeds; a marker that no longer holds is said,
and the job redone with its outputs removed first. Why one process: the fusion grid and the
test decodings of Table 3 are ~30 short jobs, and starting ESPnet costs ~20 CPU-seconds per
process, more than a whole job of the mini recipe. Jobs run in order; the first failing job stops
the run with an error naming it and its log (a rerun resumes: finished jobs are skipped).
"""
import argparse
import contextlib
import importlib
import logging
import shlex
import sys
import time
import traceback
from pathlib import Path
from typing import List, NamedTuple, Optional, Sequence, Tuple

from espnet_ext.recipe import done_marker

logger = logging.getLogger("ilm_jobs")
_ENTRY_POINT_PACKAGES = ("espnet_ext.bin.", "espnet_ext.recipe.bin.")
_FORMAT = "%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s"


class Job(NamedTuple):
    log: Path
    module: str
    args: List[str]
    done: Optional[Path] = None  # marker: skip while it holds, written after success
    inputs: Tuple[str, ...] = ()
    outputs: Tuple[str, ...] = ()


def read_jobs(path: Path) -> List[Job]:
    jobs = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        words = shlex.split(line)
        done = None
        files = {"--input": [], "--output": []}
        if words[:1] == ["--done"] and len(words) > 1:
            done, words = Path(words[1]), words[2:]
            while len(words) > 1 and words[0] in files:
                files[words[0]].append(words[1])
                words = words[2:]
        if len(words) < 2 or not words[1].startswith(_ENTRY_POINT_PACKAGES):
            raise ValueError(f"{path}:{n}: expected '[--done MARKER [--input F]... [--output F]...] "
                             f"LOG MODULE ARGS...' with MODULE under "
                             f"{' or '.join(_ENTRY_POINT_PACKAGES)}, got {line!r}")
        jobs.append(Job(Path(words[0]), words[1], words[2:], done, tuple(files["--input"]),
                        tuple(files["--output"])))
    return jobs


def run_job(log: Path, module: str, args: Sequence[str]) -> None:
    """``module.main(args)`` with the root logger, stdout and stderr going to ``log``; raises on
    failure (an exception, a non-zero return code or an argparse exit)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    with open(log, "w", encoding="utf-8") as stream, contextlib.redirect_stdout(stream), \
            contextlib.redirect_stderr(stream):
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter(_FORMAT))
        root.addHandler(handler)
        try:
            stream.write(f"# python -m {module} {shlex.join(args)}\n")
            stream.flush()
            rc = importlib.import_module(module).main(list(args))
            if isinstance(rc, int) and rc != 0:
                raise RuntimeError(f"{module} returned {rc}")
        except BaseException as e:  # SystemExit from argparse too: the log says why
            stream.write(traceback.format_exc())
            raise RuntimeError(f"job {module} failed ({e!r}); log: {log}") from e
        finally:
            root.removeHandler(handler)


def main(cmd: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=Path, required=True, help="LOG MODULE ARGS... per line")
    args = parser.parse_args(cmd)
    logging.basicConfig(level=logging.INFO, format=_FORMAT, stream=sys.stderr)
    jobs = read_jobs(args.jobs)
    t0 = time.time()
    for i, job in enumerate(jobs, 1):
        if job.done is not None:
            stale = done_marker.check(str(job.done))
            if stale is None:
                logger.info(f"job {i}/{len(jobs)}: {job.module} done earlier ({job.done})")
                continue
            if job.done.exists():
                logger.warning(f"job {i}/{len(jobs)}: {job.done} no longer holds: {stale}; redoing")
                job.done.unlink()
            for out in job.outputs:
                Path(out).unlink(missing_ok=True)
        t = time.time()
        logger.info(f"job {i}/{len(jobs)}: {job.module} (log: {job.log})")
        run_job(job.log, job.module, job.args)
        if job.done is not None:
            done_marker.write(str(job.done), inputs=job.inputs, outputs=job.outputs)
        logger.info(f"job {i}/{len(jobs)} done in {time.time() - t:.1f} s")
    logger.info(f"{len(jobs)} jobs done in {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
