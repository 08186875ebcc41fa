"""τ × K sweep helper: one run per variant with its training options filled into the command
(resumable), real sclite results tabulated."""
import json
import shlex
import sys

from espnet_ext.recipe.bin.sweep import main as sweep

REF = {"utt1": "今天天气很好", "utt2": "你好世界"}


def test_sweep_runs_each_variant_once_and_tabulates_sclite(tmp_path, capsys):
    (tmp_path / "ref").write_text("".join(f"{u} {t}\n" for u, t in REF.items()))
    # Each variant "decodes" with a different number of character errors (out of 10 characters).
    errors = {"tau0.02_k100": 3, "tau0.02_k700": 1, "tau0.1_k100": 4, "tau0.1_k700": 2}
    (tmp_path / "hyps").mkdir()
    for suffix, n in errors.items():
        hyp = dict(REF)
        hyp["utt1"] = "错" * n + REF["utt1"][n:]
        (tmp_path / "hyps" / f"hkd_{suffix}.txt").write_text("".join(f"{u} {t}\n" for u, t in hyp.items()))
    # The "training" records the options it got; "decoding" scores the variant's hypotheses.
    run_cmd = (f"echo --distiller hkd {{asr_args}} > args_{{tag}} && {sys.executable} -m "
               "espnet_ext.recipe.bin.score_sclite --ref ref --hyp hyps/{tag}.txt --score_type cer "
               "--output_dir exp/asr_{tag}/decode/test/score_cer")
    args = ["--name", "hkd", "--temperatures", "0.02,0.1", "--num_negatives", "100,700",
            "--out_dir", str(tmp_path / "sweep"), "--run_cmd", run_cmd, "--cwd", str(tmp_path),
            "--result_glob", "exp/asr_{tag}/*/{test_set}/score_cer/result.txt", "--test_sets", "test"]

    assert sweep(args + ["--dry_run"]) == 0
    assert capsys.readouterr().out.count("score_sclite") == 4
    assert not (tmp_path / "sweep" / "conf").exists()  # no config files are written

    assert sweep(args) == 0
    table = (tmp_path / "sweep" / "RESULTS.md").read_text()
    for suffix, n in errors.items():
        assert f"|hkd_{suffix}|" in table and f"|{10 * n:.1f}|" in table  # sclite Err %
    assert "|0.02|30.0|10.0|" in table  # τ × K matrix (rows τ, columns K)
    assert shlex.split((tmp_path / "args_hkd_tau0.1_k100").read_text()) == [
        "--distiller", "hkd", "--distiller_conf", "temperature=0.1", "--distiller_conf", "num_negatives=100"]

    # Rerun: every variant has results, nothing is run again; JSON rows on request.
    logs = {p: p.stat().st_mtime_ns for p in (tmp_path / "sweep" / "log").glob("*.log")}
    capsys.readouterr()
    assert sweep(args + ["--json"]) == 0
    captured = capsys.readouterr()
    rows = json.loads(captured.out)
    assert {r["tag"]: r["test"] for r in rows} == {f"hkd_{s}": 10.0 * n for s, n in errors.items()}
    assert captured.err.count("results exist, skipped") == 4
    assert logs == {p: p.stat().st_mtime_ns for p in (tmp_path / "sweep" / "log").glob("*.log")}


def test_sweep_options_are_what_the_cif_task_parses(tmp_path, capsys):
    """{asr_args} given to CIFASRTask after a distiller choice set τ and K, other options kept."""
    from espnet_ext.tasks.cif_asr import CIFASRTask

    capsys.readouterr()  # ESPnet's import notes
    assert sweep(["--name", "acd", "--temperatures", "0.05", "--num_negatives", "300",
                  "--out_dir", str(tmp_path), "--run_cmd", "{asr_args}", "--dry_run",
                  "--result_glob", "none/{tag}/{test_set}"]) == 0
    asr_args = shlex.split(capsys.readouterr().out.strip())
    args = CIFASRTask.get_parser().parse_args(
        ["--distiller", "acd", "--distiller_conf", "teacher_dim=384"] + asr_args)
    assert args.distiller_conf == {"teacher_dim": 384, "temperature": 0.05, "num_negatives": 300}


def test_sweep_reports_a_failed_variant(tmp_path, capsys):
    code = sweep(["--name", "acd", "--temperatures", "0.05", "--num_negatives", "300,400",
                  "--out_dir", str(tmp_path / "sweep"), "--run_cmd", "exit 3", "--cwd", str(tmp_path),
                  "--result_glob", "exp/{tag}/{test_set}/result.txt", "--keep_going"])
    assert code == 1
    err = capsys.readouterr().err
    assert err.count("failed with code 3") == 2
    assert "|acd_tau0.05_k300|0.05|300|-|" in (tmp_path / "sweep" / "RESULTS.md").read_text()
