"""Job runners with the interface of Kaldi's ``run.pl``/``slurm.pl`` (written from scratch).

    <runner> [--gpu N] [--mem M] [--num_threads N] [--time T] [--max_jobs_run N]
             [--num_nodes N] [--name NAME] [--config conf/slurm.conf] [JOB=1:N] LOG CMD ...

``JOB`` (any variable name) is replaced by the job index in LOG and CMD wherever it stands as a
word (``keys.JOB.scp``, ``out/JOB/``; not inside ``SLURM_JOB_ID`` or ``feats_JOB``). CMD runs under
``bash -c``; its stdout and stderr go to the job's log, between a header (command, start time) and
a footer (``# Accounting: time=S threads=N`` / ``# Ended (code C) at DATE, elapsed time S seconds``).
The runner exits non-zero when any job fails and names the failed logs on stderr.

Backends: ``local`` runs the jobs as parallel processes (at most ``--max_jobs_run``, by default
nproc // num_threads at a time); ``slurm`` submits one ``sbatch --array --wait`` per call, with the
options translated by a Kaldi-style ``conf/slurm.conf`` (see :class:`SlurmConfig`). This module
needs only the standard library, so the runners start in milliseconds on any node.

Multi-node jobs (``slurm`` backend, ``--num_nodes N`` > 1, one job): the job gets N nodes and its
batch script starts CMD once per node (``srun``, one task per node, the step ended when a task
fails), as ESPnet's launcher does for ``slurm.pl``. Each node writes its own log with header and
footer: node 0 the job's LOG, node k ``<LOG stem>.node<k><suffix>`` beside it (``train.log``,
``train.node1.log``; see :func:`node_log`). The runner fails when any node fails and names the
failed nodes' logs, the first one to fail first. The local backend ignores ``--num_nodes``.
"""
import dataclasses
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

REPO_ROOT = Path(__file__).resolve().parents[2]
# Option names accepted by every backend (dashes are accepted too: --num-threads).
OPTIONS = ("gpu", "mem", "num_threads", "time", "max_jobs_run", "num_nodes", "name", "config")
_ARRAY_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(\d+)(?::(\d+))?$")
_FOOTER_RE = re.compile(r"^# Ended \(code (-?\d+)\)")


class UsageError(Exception):
    """Bad runner invocation (unknown option, malformed JOB range, ...)."""


@dataclasses.dataclass
class Request:
    options: Dict[str, str]
    var: Optional[str]  # the array variable, e.g. "JOB"; None for a single job
    start: int
    end: int
    log: str  # log path template (contains ``var`` for arrays)
    command: str  # shell command template

    @property
    def job_ids(self) -> range:
        return range(self.start, self.end + 1)

    def expand(self, text: str, job_id) -> str:
        # As a whole word only, so that e.g. $SLURM_JOB_ID in a command stays intact.
        if not self.var:
            return text
        return re.sub(rf"\b{re.escape(self.var)}\b", str(job_id), text)

    def num_threads(self) -> int:
        return int(self.options.get("num_threads", 1))


def join_command(args: Sequence[str]) -> str:
    """Join CMD words like run.pl: plain words as they are (so ``\\|`` becomes a pipe), words with
    whitespace or quotes shell-quoted so they stay one argument. A CMD given as one single word
    is taken as a shell command line verbatim (``run.py log 'a | b; c'``)."""
    if len(args) == 1:
        return args[0]
    out = []
    for a in args:
        out.append(a if a and re.fullmatch(r"[^\s'\"]+", a) else shlex.quote(a))
    return " ".join(out)


def parse_args(argv: Sequence[str], prog: str) -> Request:
    argv = list(argv)
    options: Dict[str, str] = {}
    while argv and argv[0].startswith("--"):
        opt = argv.pop(0)[2:]
        if "=" in opt:
            name, value = opt.split("=", 1)
        else:
            if not argv:
                raise UsageError(f"option --{opt} needs a value")
            name, value = opt, argv.pop(0)
        name = name.replace("-", "_")
        if name not in OPTIONS:
            raise UsageError(f"unknown option --{name} (known: "
                             + ", ".join("--" + o for o in OPTIONS) + ")")
        options[name] = value
    for name in ("gpu", "num_threads", "max_jobs_run", "num_nodes"):
        if name in options and not re.fullmatch(r"\d+", options[name]):
            raise UsageError(f"--{name} expects a non-negative integer, got {options[name]!r}")
    if options.get("num_threads") == "0":
        raise UsageError("--num_threads must be >= 1")
    var, start, end = None, 1, 1
    if argv and _ARRAY_RE.match(argv[0]):
        m = _ARRAY_RE.match(argv.pop(0))
        var, start = m.group(1), int(m.group(2))
        end = int(m.group(3)) if m.group(3) is not None else start
        if end < start:
            raise UsageError(f"empty job range {var}={start}:{end}")
    if len(argv) < 2:
        raise UsageError(f"usage: {prog} [options] [JOB=1:N] LOG CMD ...")
    log, command = argv[0], join_command(argv[1:])
    if var is None and re.search(r"\bJOB\b", log):
        raise UsageError(f"log path {log!r} contains JOB but no JOB=a:b range was given")
    if var is not None and end > start and not re.search(rf"\b{re.escape(var)}\b", log):
        raise UsageError(f"log path {log!r} does not contain {var}: all jobs would share one log")
    return Request(options, var, start, end, log, command)


def _now() -> str:
    return time.strftime("%a %b %d %H:%M:%S %Z %Y")


def _tail(path: str, n: int = 10) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


_TRACEBACK = "Traceback (most recent call last):"
_RANK_PREFIX_RE = re.compile(r"^\[(?:rank|default)\d+\]:\s?")  # torchrun's per-rank prefix
_CHAIN_LINES = ("During handling of the above exception", "The above exception was the direct")


def first_error(path: str, max_lines: int = 12) -> str:
    """The first Python traceback of a log, ending with its exception line (at most
    ``max_lines`` lines: the header, the innermost frames, the exception); "" when none.

    A distributed training's log holds the failed rank's traceback first and the launcher's
    (torchrun's ``ChildFailedError``) last; the first one says what went wrong."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = [_RANK_PREFIX_RE.sub("", line.rstrip("\n")) for line in f]
    except OSError:
        return ""
    for i, line in enumerate(lines):
        if line.startswith(_TRACEBACK):
            block = [line]
            for body in lines[i + 1:]:
                block.append(body)
                if body and not body[0].isspace() and not body.startswith(_CHAIN_LINES):
                    break
            if len(block) > max_lines:
                block = [block[0], "  ..."] + block[-(max_lines - 2):]
            return "\n".join(block)
    return ""


def _report_failures(prog: str, failed: List[Tuple[str, str, str]], total: int) -> None:
    """failed: (what, log path, reason), what being "job 3" or "node 1". Shows the first failed
    log's first Python error, then its last lines."""
    for what, log, reason in failed:
        print(f"{prog}: {what} failed ({reason}); log: {log}", file=sys.stderr)
    _, log, _ = failed[0]
    error = first_error(log)
    if error:
        print(f"{prog}: first error in {log}:\n{error}", file=sys.stderr)
    tail = _tail(log)
    if tail:
        print(f"{prog}: last lines of {log}:\n" + tail.rstrip("\n"), file=sys.stderr)
    logs = " ".join(log for _, log, _ in failed)
    print(f"{prog}: {len(failed)} / {total} failed, log is in {logs}", file=sys.stderr)


def log_status(log: str) -> Optional[int]:
    """Exit code written in a job log's footer, or None when the log has no footer (yet)."""
    try:
        with open(log, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 1024))
            tail = f.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    code = None
    for line in tail.splitlines():
        m = _FOOTER_RE.match(line)
        if m:
            code = int(m.group(1))
    return code


# --------------------------------------------------------------------------------------- local
def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


KILL_GRACE_S = 10.0  # after SIGTERM, a job that has not exited gets SIGKILL


def run_local(req: Request, prog: str = "run.py") -> int:
    """Run the jobs as local processes; returns 0 when all succeeded, else 1."""
    threads = req.num_threads()
    limit = int(req.options.get("max_jobs_run", 0)) or max(1, _cpu_count() // threads)
    env = dict(os.environ)
    if "num_threads" in req.options:
        # Keep each job to its share of the machine, as a scheduler would.
        for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[k] = str(threads)
    running: Dict[int, Tuple[subprocess.Popen, object, float, str]] = {}
    failed: List[Tuple[int, str, str]] = []
    stop = threading.Event()

    signalled: Dict[int, float] = {}  # pid -> when SIGTERM was sent

    def terminate_running() -> None:
        # Runs in the main loop, not only in the handler: a job whose Popen was returning when
        # the signal came is not yet in ``running`` and would otherwise be left to finish.
        now = time.time()
        for proc, *_ in list(running.values()):
            sent = signalled.get(proc.pid)
            if sent is not None and now - sent < KILL_GRACE_S:
                continue
            try:
                os.killpg(proc.pid, signal.SIGTERM if sent is None else signal.SIGKILL)
            except ProcessLookupError:
                pass
            signalled[proc.pid] = now if sent is None else float("inf")

    def on_signal(signum, frame):
        stop.set()
        terminate_running()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        pending = list(req.job_ids)
        while pending or running:
            while pending and len(running) < limit and not stop.is_set():
                job_id = pending.pop(0)
                log = req.expand(req.log, job_id)
                cmd = req.expand(req.command, job_id)
                Path(log).parent.mkdir(parents=True, exist_ok=True)
                f = open(log, "w", encoding="utf-8")
                f.write(f"# {cmd}\n# Started at {_now()}\n#\n")
                f.flush()
                proc = subprocess.Popen(["bash", "-c", cmd], stdout=f, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, env=env, start_new_session=True)
                running[job_id] = (proc, f, time.time(), log)
            if stop.is_set():
                if not running:
                    break
                terminate_running()
            time.sleep(0.05)
            for job_id in list(running):
                proc, f, t0, log = running[job_id]
                code = proc.poll()
                if code is None:
                    continue
                elapsed = int(round(time.time() - t0))
                f.write(f"# Accounting: time={elapsed} threads={threads}\n"
                        f"# Ended (code {code}) at {_now()}, elapsed time {elapsed} seconds\n")
                f.close()
                del running[job_id]
                if code != 0:
                    failed.append((f"job {job_id}", log, f"exit code {code}"))
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if stop.is_set():
        print(f"{prog}: interrupted; running jobs were terminated", file=sys.stderr)
        return 130
    if failed:
        failed.sort(key=lambda f: int(f[0].split()[1]))
        _report_failures(prog, failed, len(req.job_ids))
        return 1
    return 0


# --------------------------------------------------------------------------------------- slurm
class SlurmConfig:
    """Kaldi-style ``slurm.conf``: how runner options become ``sbatch`` arguments.

    Lines (``#`` starts a comment)::

        command sbatch --export=ALL          # the submit command and fixed arguments
        option gpu=0 -p shared               # exact value
        option gpu=* -p gpu --gres=gpu:$0    # any value; $0 is replaced by it
        default gpu=0                        # value used when the option is not given
    """

    def __init__(self, text: str, path: str = "<builtin>"):
        self.path = path
        self.command: List[str] = []
        self.exact: Dict[Tuple[str, str], List[str]] = {}
        self.wildcard: Dict[str, List[str]] = {}
        self.defaults: Dict[str, str] = {}
        for n, raw in enumerate(text.splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            words = shlex.split(line)
            kind = words[0]
            if kind == "command":
                self.command = words[1:]
            elif kind in ("option", "default") and len(words) >= 2 and "=" in words[1]:
                name, value = words[1].split("=", 1)
                if kind == "default":
                    self.defaults[name] = value
                elif value == "*":
                    self.wildcard[name] = words[2:]
                else:
                    self.exact[(name, value)] = words[2:]
            else:
                raise UsageError(f"{path}:{n}: cannot parse {raw.strip()!r}")
        if not self.command:
            raise UsageError(f"{path}: no 'command' line (e.g. 'command sbatch --export=ALL')")

    @classmethod
    def load(cls, path: Optional[str]) -> "SlurmConfig":
        if path is None:
            for cand in (Path("conf/slurm.conf"), REPO_ROOT / "conf" / "slurm.conf"):
                if cand.is_file():
                    path = str(cand)
                    break
            else:
                raise UsageError("no conf/slurm.conf here or in the repository; pass --config")
        if not Path(path).is_file():
            raise UsageError(f"slurm config {path} not found")
        return cls(Path(path).read_text(encoding="utf-8"), path)

    def sbatch_args(self, options: Dict[str, str]) -> List[str]:
        args: List[str] = []
        values = dict(self.defaults)
        values.update({k: v for k, v in options.items() if k not in ("config", "max_jobs_run")})
        for name, value in values.items():
            if (name, value) in self.exact:
                args += self.exact[(name, value)]
            elif name in self.wildcard:
                args += [w.replace("$0", value) for w in self.wildcard[name]]
            else:
                raise UsageError(f"{self.path} has no rule for --{name} {value} "
                                 f"(add 'option {name}=* ...' or 'option {name}={value} ...')")
        return args


def _timed_command(threads: int) -> List[str]:
    """Job-script lines that run ``$cmd`` into ``$log`` and append run.pl's footer (the same
    for array tasks and for the nodes of a multi-node job)."""
    return [
        "t0=$(date +%s)",
        'bash -c "$cmd" < /dev/null >> "$log" 2>&1',
        "ret=$?",
        "t1=$(date +%s)",
        f'echo "# Accounting: time=$((t1 - t0)) threads={threads}" >> "$log"',
        'echo "# Ended (code $ret) at $(date), elapsed time $((t1 - t0)) seconds" >> "$log"',
        "exit $ret",
        "",
    ]


def _job_script(req: Request, cwd: str) -> str:
    """Bash script run by every array task: selects its log and command by the task id, writes
    the same header/footer as the local backend."""
    threads = req.num_threads()
    cases = []
    for job_id in req.job_ids:
        cases.append(f"  {job_id}) log={shlex.quote(req.expand(req.log, job_id))}; "
                     f"cmd={shlex.quote(req.expand(req.command, job_id))} ;;")
    return "\n".join([
        "#!/usr/bin/env bash",
        f"cd {shlex.quote(cwd)} || exit 1",
        'task=${SLURM_ARRAY_TASK_ID:?not run as a Slurm array task}',
        'case "$task" in',
        *cases,
        '  *) echo "unexpected array task id $task" >&2; exit 2 ;;',
        "esac",
        f"export OMP_NUM_THREADS=${{SLURM_CPUS_PER_TASK:-{threads}}}",
        "export MKL_NUM_THREADS=$OMP_NUM_THREADS OPENBLAS_NUM_THREADS=$OMP_NUM_THREADS",
        'mkdir -p "$(dirname "$log")"',
        '{ printf "# %s\\n" "$cmd"; printf "# Started at %s\\n#\\n" "$(date)"; } > "$log"',
        *_timed_command(threads),
    ])


def node_log(log: str, node: int) -> str:
    """The log of node ``node`` of a multi-node job whose log is ``log``: ``log`` itself for
    node 0 (where a single-node run writes it), else ``.node<k>`` before the suffix
    (``exp/a/train.log`` -> ``exp/a/train.node1.log``)."""
    if node == 0:
        return log
    head, name = os.path.split(log)
    stem, dot, suffix = name.rpartition(".")
    name = f"{stem}.node{node}.{suffix}" if dot and stem else f"{name}.node{node}"
    return os.path.join(head, name)


def _multi_node_script(req: Request, cwd: str, nodes: int, script: str) -> str:
    """Batch script of a job over ``nodes`` nodes. Started by sbatch (on the first node), it runs
    itself once per node through srun (``script node``); each of those tasks writes its node's
    log (:func:`node_log`) with the header and footer of a single job. srun ends the other tasks
    when one exits non-zero (``--kill-on-bad-exit``); they still write their footer (exit code
    143) unless killed outright."""
    threads = req.num_threads()
    log = req.expand(req.log, req.start)
    cases = [f"  {k}) log={shlex.quote(node_log(log, k))} ;;" for k in range(nodes)]
    return "\n".join([
        "#!/usr/bin/env bash",
        f"cd {shlex.quote(cwd)} || exit 1",
        'if [ "${1:-}" != node ]; then',
        f"  exec srun --nodes={nodes} --ntasks={nodes} --ntasks-per-node=1 --kill-on-bad-exit=1 \\",
        "    ${SLURM_CPUS_PER_TASK:+--cpus-per-task=$SLURM_CPUS_PER_TASK} \\",
        f"    bash {shlex.quote(script)} node",
        "fi",
        'node=${SLURM_NODEID:?not run as a task of srun}',
        'case "$node" in',
        *cases,
        '  *) echo "unexpected node id $node" >&2; exit 2 ;;',
        "esac",
        f"cmd={shlex.quote(req.expand(req.command, req.start))}",
        f"export OMP_NUM_THREADS=${{SLURM_CPUS_PER_TASK:-{threads}}}",
        "export MKL_NUM_THREADS=$OMP_NUM_THREADS OPENBLAS_NUM_THREADS=$OMP_NUM_THREADS",
        'mkdir -p "$(dirname "$log")"',
        '{ printf "# %s\\n" "$cmd"; printf "# Started at %s\\n" "$(date)"',
        f'  printf "# Slurm job %s, node %s of {nodes}: %s\\n#\\n" "$SLURM_JOB_ID" "$node" '
        '"${SLURMD_NODENAME:-$(hostname)}"; } > "$log"',
        "trap : TERM  # when srun ends the step: let the command end, then write the footer",
        *_timed_command(threads),
    ])


def _wait_for_array(proc: subprocess.Popen, job_id: str, logs: Sequence[str]) -> None:
    """Wait for ``sbatch --wait`` to return, or stop it early once the job is over.

    sbatch --wait polls the controller at growing intervals (up to ~30 s), so short array jobs
    would wait far longer than they run. The job is over when every task's (or node's) log has
    its footer and squeue no longer lists the job; the footers then hold every exit status.
    """
    delay = 0.5
    while proc.poll() is None:
        time.sleep(delay)
        delay = min(delay * 1.5, 5.0)
        if any(log_status(log) is None for log in logs):
            continue
        q = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%i"], capture_output=True,
                           text=True)
        if q.returncode != 0 or not q.stdout.strip():  # unknown (purged) or no task left
            proc.terminate()
            return


def run_slurm(req: Request, prog: str = "slurm.py") -> int:
    """Submit the jobs as one ``sbatch --array --wait`` (a job with ``--num_nodes`` > 1: over
    that many nodes, see :func:`_multi_node_script`); returns 0 when all tasks succeeded."""
    conf = SlurmConfig.load(req.options.get("config"))
    nodes = int(req.options.get("num_nodes", 1))
    if nodes > 1 and len(req.job_ids) > 1:
        raise UsageError(f"--num_nodes {nodes} runs one job over {nodes} nodes; "
                         f"got {len(req.job_ids)} jobs ({req.var}={req.start}:{req.end})")
    log0 = Path(req.expand(req.log, req.start))
    qdir = log0.parent / "q"
    qdir.mkdir(parents=True, exist_ok=True)
    base = Path(req.log).name
    script = qdir / (req.expand(base, "JOB") if req.var else base)
    script = script.with_name(script.name + ".sh")
    # (what, its log, its array task id)
    if nodes > 1:
        logs = [(f"node {k}", node_log(str(log0), k), req.start) for k in range(nodes)]
        text = _multi_node_script(req, os.getcwd(), nodes, os.path.abspath(script))
    else:
        logs = [(f"job {j}", req.expand(req.log, j), j) for j in req.job_ids]
        text = _job_script(req, os.getcwd())
    script.write_text(text, encoding="utf-8")
    script.chmod(0o755)
    # Stale logs from an earlier run must not be mistaken for this run's results.
    for _, log, _ in logs:
        Path(log).unlink(missing_ok=True)
    array = f"{req.start}-{req.end}"
    if "max_jobs_run" in req.options:
        array += f"%{req.options['max_jobs_run']}"
    slurm_out = str(qdir / ((req.expand(base, "%a") if req.var else base) + ".slurm"))
    name = req.options.get("name") or (base.split(".")[0] or "job")
    cmd = (conf.command + conf.sbatch_args(req.options)
           + ["--job-name", name, "--array", array, "--wait", "--parsable",
              "--output", slurm_out, "--error", slurm_out, str(script)])
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    except FileNotFoundError:
        print(f"{prog}: {conf.command[0]} not found; is Slurm installed (cmd_backend=slurm)?",
              file=sys.stderr)
        return 1
    job = {"id": None, "interrupted": False}

    def on_signal(signum, frame):
        job["interrupted"] = True
        if job["id"]:
            subprocess.run(["scancel", job["id"]], check=False)
        proc.terminate()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        first = proc.stdout.readline().strip()
        job["id"] = first.split(";")[0] or None
        if job["id"] and job["interrupted"]:  # signalled before the id was known
            subprocess.run(["scancel", job["id"]], check=False)
        elif job["id"]:
            _wait_for_array(proc, job["id"], [log for _, log, _ in logs])
        out, err = proc.communicate()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if job["interrupted"]:
        print(f"{prog}: interrupted; Slurm job {job['id']} was cancelled", file=sys.stderr)
        return 130
    if job["id"] is None:
        print(f"{prog}: submission failed: {shlex.join(cmd)}\n{err.strip()}", file=sys.stderr)
        return 1
    failed = []
    for what, log, task in logs:
        code = log_status(log)
        if code is None:
            sout = slurm_out.replace("%a", str(task))
            failed.append((what, log, f"no exit status in the log: task was killed or never "
                                      f"ran; Slurm's output: {sout}"))
        elif code == 128 + signal.SIGTERM and nodes > 1:
            failed.append((what, log, f"exit code {code}: terminated, as srun ends every node "
                                      "once one fails"))
        elif code != 0:
            failed.append((what, log, f"exit code {code}"))
    if failed:
        if nodes > 1:  # the node that failed first (footer written first) caused the rest;
            # nodes that srun terminated or killed come last
            failed.sort(key=lambda f: (log_status(f[1]) in (None, 128 + signal.SIGTERM),
                                       _mtime(f[1])))
        print(f"{prog}: Slurm job {job['id']} ({array}) had failures", file=sys.stderr)
        _report_failures(prog, failed, len(logs))
        return 1
    if proc.returncode not in (0, -signal.SIGTERM):  # SIGTERM: stopped early by us
        print(f"{prog}: sbatch exited with {proc.returncode} although every task log reports "
              f"success (job {job['id']}): {err.strip()}", file=sys.stderr)
        return 1
    return 0


def _mtime(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0


def main(argv: Sequence[str], backend: str, prog: str) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    try:
        req = parse_args(argv, prog)
        return run_local(req, prog) if backend == "local" else run_slurm(req, prog)
    except UsageError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
