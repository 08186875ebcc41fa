"""Job runner (utils/run.py, Kaldi run.pl interface): parallel jobs, logs, failure propagation,
option handling; Slurm option mapping without a cluster (tests/integration/test_slurm.py uses a real one)."""
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from espnet_ext.recipe.runner import (
    REPO_ROOT,
    Request,
    SlurmConfig,
    UsageError,
    _job_script,
    first_error,
    log_status,
    parse_args,
)

RUN = str(REPO_ROOT / "utils" / "run.py")


def run(args, cwd, **kw):
    return subprocess.run([sys.executable, RUN, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, **kw)


def _intervals(logs):
    """(start, end) times each job printed into its log."""
    out = []
    for log in logs:
        text = log.read_text()
        out.append((float(re.search(r"^start=(\S+)", text, re.M).group(1)),
                    float(re.search(r"^end=(\S+)", text, re.M).group(1))))
    return out


def _max_overlap(intervals):
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals],
                    key=lambda x: (x[0], x[1]))
    cur = best = 0
    for _, d in events:
        cur += d
        best = max(best, cur)
    return best


JOB_CMD = 'echo start=$(date +%s.%N); sleep 0.6; echo end=$(date +%s.%N); echo job JOB done'


def test_parallel_jobs_write_logs_with_header_and_footer(tmp_path):
    r = run(["--max_jobs_run", "4", "JOB=1:4", "log/x.JOB.log", JOB_CMD], tmp_path)
    assert r.returncode == 0, r.stderr
    logs = [tmp_path / f"log/x.{i}.log" for i in range(1, 5)]
    assert _max_overlap(_intervals(logs)) == 4  # all four ran at the same time
    for i, log in enumerate(logs, 1):
        lines = log.read_text().splitlines()
        assert lines[0] == "# " + JOB_CMD.replace("JOB", str(i))
        assert lines[1].startswith("# Started at ")
        assert f"job {i} done" in lines
        assert re.fullmatch(r"# Accounting: time=\d+ threads=1", lines[-2])
        assert re.fullmatch(r"# Ended \(code 0\) at .*, elapsed time \d+ seconds", lines[-1])
        assert log_status(log) == 0


def test_max_jobs_run_bounds_concurrency(tmp_path):
    r = run(["--max_jobs_run", "2", "JOB=1:5", "log/x.JOB.log", JOB_CMD], tmp_path)
    assert r.returncode == 0, r.stderr
    ivs = _intervals([tmp_path / f"log/x.{i}.log" for i in range(1, 6)])
    assert _max_overlap(ivs) == 2


def test_failed_job_fails_the_run_and_names_its_log(tmp_path):
    r = run(["JOB=1:4", "exp/log/t.JOB.log", "echo running JOB; test JOB -ne 3"], tmp_path)
    assert r.returncode == 1
    assert "exp/log/t.3.log" in r.stderr
    assert "1 / 4 failed" in r.stderr
    assert "running 3" in r.stderr  # the tail of the failed log is shown
    for i in (1, 2, 4):
        assert f"t.{i}.log" not in r.stderr.replace("exp/log/t.3.log", "")
        assert log_status(tmp_path / f"exp/log/t.{i}.log") == 0
    assert log_status(tmp_path / "exp/log/t.3.log") == 1


def test_failed_job_shows_the_first_python_error_of_its_log(tmp_path):
    """A launcher's log ends with its own traceback and many lines after the one that matters
    (a rank's TypeError): the first error is shown, whole, before the last lines."""
    script = tmp_path / "train.py"
    script.write_text("def build(conf):\n    return dict(**conf, **conf)\n\n"
                      "build({'encoder_conf': 1})\n")
    cmd = (f"{sys.executable} {script}; for i in $(seq 30); do echo launcher line $i; done; "
           f"{sys.executable} -c 'raise RuntimeError(\"ChildFailedError\")'")
    r = run(["exp/train.log", cmd], tmp_path)
    assert r.returncode == 1
    first = r.stderr.index("first error in exp/train.log:")
    assert r.stderr.index("TypeError: dict() got multiple values for keyword argument 'encoder_conf'") > first
    assert 'line 2, in build' in r.stderr  # the frame that raised
    assert r.stderr.index("last lines of exp/train.log") > r.stderr.index("TypeError")


def test_first_error_reads_rank_prefixed_tracebacks(tmp_path):
    log = tmp_path / "train.log"
    log.write_text("\n".join([
        "# python -m torch.distributed.run --nproc_per_node 2 ...", "W1204 some warning",
        "[rank1]: Traceback (most recent call last):",
        '[rank1]:   File "train.py", line 9, in <module>',
        "[rank1]:     main()",
        "[rank1]: TypeError: __init__() got an unexpected keyword argument 'output_siz'",
        "Traceback (most recent call last):",
        "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: ", ""]))
    assert first_error(str(log)) == "\n".join([
        "Traceback (most recent call last):", '  File "train.py", line 9, in <module>',
        "    main()", "TypeError: __init__() got an unexpected keyword argument 'output_siz'"])
    log.write_text("no traceback here\n")
    assert first_error(str(log)) == ""


def test_single_job_and_separate_words_with_pipe(tmp_path):
    # Words are joined like run.pl: an escaped pipe becomes a shell pipe, a word with spaces
    # stays one argument.
    r = run(["--gpu", "0", "--name", "x", "log/one.log", "echo", "a b", "|", "tr", "a", "z"],
            tmp_path)
    assert r.returncode == 0, r.stderr
    text = (tmp_path / "log/one.log").read_text()
    assert "\nz b\n" in text
    assert text.splitlines()[0] == "# echo 'a b' | tr a z"


def test_num_threads_sets_thread_variables(tmp_path):
    r = run(["--num_threads", "1", "JOB=2:3", "l/t.JOB.log", "echo omp=$OMP_NUM_THREADS"],
            tmp_path)
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "l/t.1.log").exists()  # the range starts at 2
    assert "omp=1" in (tmp_path / "l/t.3.log").read_text()


def test_job_word_is_replaced_only_as_a_word(tmp_path):
    r = run(["JOB=1:2", "l/JOB/t.log", "echo keys.JOB.scp SLURM_JOB_ID"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "keys.2.scp SLURM_JOB_ID" in (tmp_path / "l/2/t.log").read_text()


@pytest.mark.parametrize("args, message", [
    (["--bogus", "1", "l.log", "true"], "unknown option --bogus"),
    (["l/x.JOB.log", "true"], "contains JOB but no JOB=a:b range"),
    (["JOB=1:3", "l/x.log", "true"], "all jobs would share one log"),
    (["JOB=3:1", "l/x.JOB.log", "true"], "empty job range"),
    (["--num_threads", "two", "l.log", "true"], "expects a non-negative integer"),
    (["l.log"], "usage"),
])
def test_usage_errors(tmp_path, args, message):
    r = run(args, tmp_path)
    assert r.returncode == 2
    assert message in r.stderr


def test_interrupt_terminates_running_jobs(tmp_path):
    p = subprocess.Popen([sys.executable, RUN, "JOB=1:2", "l/s.JOB.log",
                          "echo $$ > pid.JOB; exec sleep 30"], cwd=tmp_path,
                         stderr=subprocess.PIPE, text=True)
    for _ in range(100):
        if all((tmp_path / f"pid.{i}").exists() and (tmp_path / f"pid.{i}").read_text()
               for i in (1, 2)):
            break
        time.sleep(0.05)
    pids = [int((tmp_path / f"pid.{i}").read_text()) for i in (1, 2)]
    t0 = time.time()
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=10)
    assert p.returncode == 130 and "interrupted" in err
    assert time.time() - t0 < 5
    time.sleep(0.2)
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_signal_while_a_job_is_being_started_still_terminates_it(tmp_path):
    """The job signals the runner at once, often before Popen has returned to the runner."""
    t0 = time.time()
    r = subprocess.run([sys.executable, RUN, "JOB=1:3", "l/s.JOB.log",
                        "kill -TERM $PPID; exec sleep 30"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=25)
    assert r.returncode == 130 and "interrupted" in r.stderr
    assert time.time() - t0 < 15
    assert not any("Ended (code 0)" in (tmp_path / f"l/s.{i}.log").read_text()
                   for i in (1, 2, 3) if (tmp_path / f"l/s.{i}.log").exists())


def test_espnet_launch_style_call(tmp_path):
    """espnet2.bin.launch calls '<cmd> --gpu N LOG CMD ...' (single node)."""
    (tmp_path / "utils").symlink_to(REPO_ROOT / "utils")
    r = subprocess.run([sys.executable, "-m", "espnet2.bin.launch", "--cmd",
                        "utils/run.py --name t", "--log", "exp/train.log", "--ngpu", "0", "--",
                        "echo", "trained"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    text = (tmp_path / "exp/train.log").read_text()
    assert "trained --ngpu 0 --multiprocessing_distributed True" in text
    assert log_status(tmp_path / "exp/train.log") == 0


# ------------------------------------------------------------------ Slurm mapping (no cluster)
def test_repo_slurm_conf_maps_options_to_sbatch():
    conf = SlurmConfig.load(str(REPO_ROOT / "conf" / "slurm.conf"))
    assert conf.command[0] == "sbatch"
    assert conf.sbatch_args({}) == ["-p", "shared", "--cpus-per-task", "1"]
    args = conf.sbatch_args({"gpu": "2", "mem": "4G", "num_threads": "3", "time": "2:00:00",
                             "max_jobs_run": "5", "config": "x"})
    assert args == ["-p", "gpu", "--gres=gpu:2", "--cpus-per-task", "3", "--mem-per-cpu", "4G",
                    "--time", "2:00:00"]
    assert conf.sbatch_args({"mem": "0"}) == ["-p", "shared", "--cpus-per-task", "1"]


def test_slurm_conf_errors():
    with pytest.raises(UsageError, match="no rule for --time"):
        SlurmConfig("command sbatch\n").sbatch_args({"time": "1:00"})
    with pytest.raises(UsageError, match="no 'command' line"):
        SlurmConfig("option gpu=0 -p x\n")
    with pytest.raises(UsageError, match="cannot parse"):
        SlurmConfig("command sbatch\nfrobnicate\n", "my.conf")


def test_slurm_job_script_selects_log_and_command_by_task(tmp_path):
    req = parse_args(["JOB=1:2", "log/a.JOB.log", "echo", "JOB"], "slurm.py")
    assert isinstance(req, Request)
    script = tmp_path / "job.sh"
    script.write_text(_job_script(req, str(tmp_path)))
    for task in (1, 2):
        env = dict(os.environ, SLURM_ARRAY_TASK_ID=str(task), SLURM_CPUS_PER_TASK="1")
        r = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        lines = (tmp_path / f"log/a.{task}.log").read_text().splitlines()
        assert lines[0] == f"# echo {task}" and lines[3] == str(task)
        assert log_status(tmp_path / f"log/a.{task}.log") == 0
