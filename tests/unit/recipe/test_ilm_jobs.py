"""espnet_ext.recipe.bin.ilm_jobs: the job lists of asr.sh's internal-LM steps (stages 13-15), run in
one process (here with real sclite scoring jobs)."""
import shlex

import pytest

from espnet_ext.recipe import done_marker
from espnet_ext.recipe.bin import ilm_jobs
from espnet_ext.recipe.scoring import find_sclite, parse_result


def write(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


@pytest.fixture
def texts(tmp_path):
    try:
        find_sclite()
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"sclite not available: {e}")
    ref = write(tmp_path / "data dir" / "text", ["u1 the lord is great", "u2 in zion"])
    good = write(tmp_path / "hyp" / "text", ["u1 the lord is great", "u2 in sion"])
    short = write(tmp_path / "hyp_short" / "text", ["u1 the lord is great"])
    return tmp_path, ref, good, short


def job(*words):
    return shlex.join(str(w) for w in words)


def test_jobs_run_in_order_with_own_logs(texts):
    tmp, ref, good, _ = texts
    jobs = write(tmp / "jobs.txt", [
        "# comment lines and blank lines are skipped", "",
        job(tmp / "a" / "score.log", "espnet_ext.recipe.bin.score_sclite", "--ref", ref, "--hyp", good,
            "--score_type", "wer", "--output_dir", tmp / "a" / "score_wer"),
        job(tmp / "b" / "score.log", "espnet_ext.recipe.bin.score_sclite", "--ref", ref, "--hyp", ref,
            "--score_type", "cer", "--output_dir", tmp / "b" / "score_cer"),
    ])
    assert ilm_jobs.main(["--jobs", str(jobs)]) == 0
    a = parse_result(tmp / "a" / "score_wer" / "result.txt")
    assert (a["snt"], a["wrd"], a["sub"]) == (2, 6, 16.7)  # 1 of 6 words
    assert parse_result(tmp / "b" / "score_cer" / "result.txt")["err"] == 0
    log = (tmp / "a" / "score.log").read_text()
    assert log.startswith("# python -m espnet_ext.recipe.bin.score_sclite --ref ")
    assert "WER " in log  # the job's printed Sum/Avg went to its own log


def test_failing_job_stops_the_list_naming_its_log(texts):
    tmp, ref, good, short = texts
    jobs = write(tmp / "jobs.txt", [
        job(tmp / "bad.log", "espnet_ext.recipe.bin.score_sclite", "--ref", ref, "--hyp", short,
            "--score_type", "wer", "--output_dir", tmp / "bad"),
        job(tmp / "next.log", "espnet_ext.recipe.bin.score_sclite", "--ref", ref, "--hyp", good,
            "--score_type", "wer", "--output_dir", tmp / "next"),
    ])
    with pytest.raises(RuntimeError, match="bad.log"):
        ilm_jobs.main(["--jobs", str(jobs)])
    assert not (tmp / "next.log").exists()  # later jobs depend on earlier ones: not run
    with pytest.raises(RuntimeError, match="argv.log"):  # argparse's exit is a failure too
        ilm_jobs.run_job(tmp / "argv.log", "espnet_ext.recipe.bin.score_sclite", ["--no_such_option"])
    assert "no_such_option" in (tmp / "argv.log").read_text()
    bad = write(tmp / "bad_jobs.txt", [job(tmp / "x.log", "os.system", "true")])
    with pytest.raises(ValueError, match="bad_jobs.txt:1"):
        ilm_jobs.read_jobs(bad)


def test_done_markers_skip_finished_jobs_and_mark_new_ones(texts, caplog):
    tmp, ref, good, short = texts
    marker_a, marker_b = tmp / "a" / ".done.score", tmp / "b" / ".done.score"
    result_a, result_b = tmp / "a" / "score_wer" / "result.txt", tmp / "b" / "score_wer" / "result.txt"
    # b finished in an earlier run: while its marker holds, its (failing) job must not run again.
    write(result_b, ["an earlier result"])
    done_marker.write(str(marker_b), inputs=[str(short)], outputs=[str(result_b)])
    jobs = write(tmp / "jobs.txt", [
        job("--done", marker_a, "--input", good, "--output", result_a, tmp / "a" / "score.log",
            "espnet_ext.recipe.bin.score_sclite", "--ref", ref, "--hyp", good, "--score_type", "wer",
            "--output_dir", tmp / "a" / "score_wer"),
        job("--done", marker_b, "--input", short, "--output", result_b, tmp / "b" / "score.log",
            "espnet_ext.recipe.bin.score_sclite", "--ref", ref, "--hyp", short, "--score_type", "wer",
            "--output_dir", tmp / "b" / "score_wer"),
    ])
    parsed = ilm_jobs.read_jobs(jobs)
    assert [j.done for j in parsed] == [marker_a, marker_b]
    assert parsed[0].inputs == (str(good),) and parsed[0].outputs == (str(result_a),)
    assert parsed[0].log == tmp / "a" / "score.log" and parsed[0].args[:2] == ["--ref", str(ref)]
    assert ilm_jobs.main(["--jobs", str(jobs)]) == 0
    assert done_marker.holds(str(marker_a)) and parse_result(result_a)["sub"] == 16.7
    assert not (tmp / "b" / "score.log").exists()
    # A rerun finds both done and runs nothing (the result is not rewritten).
    stamp = result_a.stat().st_mtime_ns
    assert ilm_jobs.main(["--jobs", str(jobs)]) == 0
    assert result_a.stat().st_mtime_ns == stamp
    # A changed input (the hypothesis now matches the reference) makes the job run again, said.
    write(good, ["u1 the lord is great", "u2 in zion"])
    assert ilm_jobs.main(["--jobs", str(jobs)]) == 0
    assert f"{marker_a} no longer holds: input {good} changed content; redoing" in caplog.text
    assert parse_result(result_a)["err"] == 0
    # So does a deleted output.
    result_a.unlink()
    assert ilm_jobs.main(["--jobs", str(jobs)]) == 0
    assert f"output {result_a} is missing" in caplog.text and parse_result(result_a)["err"] == 0
    # A failing job leaves no marker.
    marker_c = tmp / "c" / ".done.score"
    failing = write(tmp / "fail.txt", [job("--done", marker_c, tmp / "c" / "score.log",
                                           "espnet_ext.recipe.bin.score_sclite", "--ref", ref, "--hyp",
                                           short, "--score_type", "wer", "--output_dir", tmp / "c")])
    with pytest.raises(RuntimeError):
        ilm_jobs.main(["--jobs", str(failing)])
    assert not marker_c.exists()
