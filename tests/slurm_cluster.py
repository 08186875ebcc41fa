"""Private Slurm clusters on localhost for integration tests: one node (``slurm_cluster``) or two
(``slurm_cluster_two_nodes``).

Everything lives in one temporary directory (config, munge
key and socket, state, spool, logs) with free ports, and ``SLURM_CONF`` points every Slurm client
at it, so a system Slurm (``/etc/slurm``) is neither used nor touched. The fixture starts munged,
slurmctld and slurmd as background children, waits for the node to be ``idle``, and at the end
cancels remaining jobs and stops each daemon it started, by PID.

Two nodes on one machine: one slurmd per node, each started as ``slurmd -N <node>`` and listening
on its own port (``NodeName=node1 NodeHostname=<host> NodeAddr=127.0.0.1 Port=...``; Slurm's
"multiple slurmd" setup, which Debian's slurmd supports). The nodes share the host name and the
file system; jobs tell them apart by ``SLURMD_NODENAME``. The CPUs are split between them.

Needs root (slurmd runs jobs as their users; munged runs as user munge) and the Debian packages
slurmctld, slurmd, slurm-client and munge (tools/setup.sh installs them). Skipped otherwise, or
when ``SLURM_TESTS=0``.
"""
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import pytest

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "sinfo", "scancel")
PARTITION = "shared"


@dataclass
class SlurmCluster:
    root: Path
    conf: Path
    partition: str = PARTITION
    env: Dict[str, str] = field(default_factory=dict)  # what clients need (SLURM_CONF)
    nodes: List[str] = field(default_factory=list)  # node names
    procs: Dict[str, subprocess.Popen] = field(default_factory=dict)

    def logs(self) -> str:
        out = []
        for p in sorted((self.root / "log").glob("*.log")):
            out.append(f"==> {p} <==\n" + p.read_text(errors="replace")[-3000:])
        return "\n".join(out)


def skip_reason() -> str:
    if os.environ.get("SLURM_TESTS") == "0":
        return "SLURM_TESTS=0"
    if os.geteuid() != 0:
        return "Slurm integration tests need root"
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        return "missing Slurm/munge binaries: " + ", ".join(missing) + " (run tools/setup.sh)"
    try:
        pwd.getpwnam("munge")
    except KeyError:
        return "no 'munge' user (install the munge package)"
    return ""


def _free_ports(n: int) -> List[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _mem_mb() -> int:
    with open("/proc/meminfo") as f:
        total_kb = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
    return max(1000, min(8000, total_kb // 1024 // 2))


def write_config(root: Path, host: str, cpus: int, nodes: Optional[List[str]] = None) -> Path:
    """slurm.conf of a cluster whose node is ``host``, or, with ``nodes``, whose nodes are
    those names, each a slurmd of this host on its own port with ``cpus`` CPUs."""
    ctld_port, slurmd_port, *node_ports = _free_ports(2 + len(nodes or []))
    if nodes:
        mem = _mem_mb() // len(nodes)
        node_lines = "".join(f"NodeName={n} NodeHostname={host} NodeAddr=127.0.0.1 Port={port} "
                             f"CPUs={cpus} RealMemory={mem} State=UNKNOWN\n"
                             for n, port in zip(nodes, node_ports))
    else:
        node_lines = (f"NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={_mem_mb()} "
                      "State=UNKNOWN\n")
    conf = root / "slurm.conf"
    conf.write_text(f"""\
ClusterName=espnetexttest
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
AuthInfo=socket={root}/munge/munge.socket
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool/%n
SlurmctldPidFile={root}/run/slurmctld.pid
SlurmdPidFile={root}/run/slurmd.%n.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.%n.log
ProctrackType=proctrack/pgid
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500
SchedulerParameters=sched_min_interval=0,batch_sched_delay=0
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
KillWait=2
{node_lines}PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
    return conf


def _spawn(name: str, cmd: List[str], root: Path, env: Dict[str, str],
           user: pwd.struct_passwd = None) -> subprocess.Popen:
    # Daemons inherit stdout: never let them hold a pipe of ours (the pipeline would hang).
    out = open(root / "log" / f"{name}.stdout.log", "wb")
    ids = dict(user=user.pw_uid, group=user.pw_gid, extra_groups=[]) if user else {}
    try:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True, **ids)
    finally:
        out.close()


def start_cluster(timeout: float = 30.0, num_nodes: int = 1) -> SlurmCluster:
    """Start a cluster of one node (this host) or of ``num_nodes`` slurmds named node1, ...;
    returns once every node is idle."""
    # Not under pytest's 0700 tmp dir: the munge user must reach its socket and key.
    root = Path(tempfile.mkdtemp(prefix="espnet_ext_slurm_"))
    root.chmod(0o755)
    for sub in ("state", "spool", "log", "run", "munge"):
        (root / sub).mkdir()
    munge = pwd.getpwnam("munge")
    mdir = root / "munge"
    mdir.chmod(0o755)  # with 0700 clients fail with "Munge encode failed"
    key = mdir / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    for p in (mdir, key):
        os.chown(p, munge.pw_uid, munge.pw_gid)
    host = socket.gethostname().split(".")[0]
    cpus = os.cpu_count() or 1
    if num_nodes > 1:
        nodes = [f"node{i}" for i in range(1, num_nodes + 1)]
        conf = write_config(root, host, max(1, cpus // num_nodes), nodes)
    else:
        nodes = [host]
        conf = write_config(root, host, cpus)
    for n in nodes:
        (root / "spool" / n).mkdir()
    env = dict(os.environ, SLURM_CONF=str(conf))
    cluster = SlurmCluster(root=root, conf=conf, env={"SLURM_CONF": str(conf)}, nodes=nodes)
    try:
        # munged runs as user munge, as our direct child so that we reap it (no zombie).
        cluster.procs["munged"] = _spawn("munged", [
            "munged", "-F", f"--socket={mdir}/munge.socket", f"--key-file={key}",
            f"--pid-file={mdir}/munged.pid", f"--log-file={mdir}/munged.log",
            f"--seed-file={mdir}/munged.seed"], root, env, user=munge)
        _wait_for(lambda: (mdir / "munge.socket").exists(), 10, "munged socket", cluster)
        cluster.procs["slurmctld"] = _spawn("slurmctld", ["slurmctld", "-D", "-i"], root, env)
        for n in nodes:
            name = "slurmd" if num_nodes == 1 else f"slurmd.{n}"
            cluster.procs[name] = _spawn(name, ["slurmd", "-D", "-N", n], root, env)

        def idle() -> bool:
            r = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], env=env, capture_output=True,
                               text=True)
            return r.returncode == 0 and r.stdout.split() == ["idle"] * len(nodes)

        _wait_for(idle, timeout, f"{len(nodes)} node(s) to become idle", cluster)
    except BaseException:
        stop_cluster(cluster)
        raise
    return cluster


def _wait_for(cond, timeout: float, what: str, cluster: SlurmCluster) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        for name, p in cluster.procs.items():
            if p.poll() is not None:
                raise RuntimeError(f"{name} exited with {p.returncode} while waiting for "
                                   f"{what}\n{cluster.logs()}")
        if cond():
            return
        time.sleep(0.2)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}\n{cluster.logs()}")


def _stop(p: subprocess.Popen, timeout: float = 10.0) -> None:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def stop_cluster(cluster: SlurmCluster) -> None:
    env = dict(os.environ, SLURM_CONF=str(cluster.conf))
    if "slurmctld" in cluster.procs and cluster.procs["slurmctld"].poll() is None:
        subprocess.run(["scancel", "--user", "root"], env=env, capture_output=True, timeout=30)
    for name in [n for n in cluster.procs if n.startswith("slurmd")] + ["slurmctld"]:
        if name in cluster.procs:
            _stop(cluster.procs[name])
    if "munged" in cluster.procs:
        _stop(cluster.procs["munged"])
    shutil.rmtree(cluster.root, ignore_errors=True)


@pytest.fixture(scope="session")
def slurm_cluster():
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    cluster = start_cluster()
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    try:
        yield cluster
    finally:
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old
        stop_cluster(cluster)


@pytest.fixture(scope="session")
def slurm_cluster_two_nodes():
    """A second cluster of two slurmd nodes (node1, node2) on this machine. It leaves
    ``SLURM_CONF`` alone (the single-node fixture may be running too): tests pass
    ``cluster.env`` to the Slurm commands and recipes they start."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    cluster = start_cluster(num_nodes=2)
    try:
        yield cluster
    finally:
        stop_cluster(cluster)
