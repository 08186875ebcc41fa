"""sclite wrapper against hand-computed error rates (real Debian sclite), refusal of empty or
incomplete hypotheses, and RESULTS.md collection."""
import os
import shutil
import subprocess
import sys

import pytest
import torch
import yaml

from espnet_ext.recipe.bin import collect_results, score_sclite
from espnet_ext.recipe.scoring import ScoringError, find_sclite, parse_result, score

pytestmark = pytest.mark.skipif(
    shutil.which("sclite") is None and not os.access("/usr/lib/sctk/bin/sclite", os.X_OK),
    reason="sclite (Debian sctk) not installed")


def write(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.fixture
def wer_case(tmp_path):
    # Hand alignment: u1 "on the mat" -> "on mat": 1 deletion (6 words);
    # u2 "a b c" -> "a x c d": 1 substitution + 1 insertion (3 words).
    # Total 9 reference words, 7 correct, S=1 D=1 I=1 -> WER 3/9 = 33.3 %, both sentences wrong.
    ref = write(tmp_path / "ref", ["u1 the cat sat on the mat", "u2 a b c"])
    hyp = write(tmp_path / "hyp", ["u1 the cat sat on mat", "u2 a x c d"])
    utt2spk = write(tmp_path / "utt2spk", ["u1 s1", "u2 s2"])
    return ref, hyp, utt2spk


def test_wer_matches_hand_computation(wer_case, tmp_path):
    ref, hyp, utt2spk = wer_case
    r = score(ref, hyp, utt2spk, "word", tmp_path / "score_wer")
    assert r == {"snt": 2, "wrd": 9, "corr": 77.8, "sub": 11.1, "del": 11.1, "ins": 11.1,
                 "err": 33.3, "serr": 100.0}
    out = tmp_path / "score_wer"
    assert (out / "ref.trn").read_text() == "the cat sat on the mat\t(s1-u1)\na b c\t(s2-u2)\n"
    assert (out / "hyp.trn").read_text() == "the cat sat on mat\t(s1-u1)\na x c d\t(s2-u2)\n"
    result = (out / "result.txt").read_text()
    assert "Sum/Avg" in result and "REF:" in result  # summary and alignment dump (-o all)
    dtl = (out / "result.dtl").read_text()
    assert "Percent Total Error       =   33.3%   (   3)" in dtl
    assert "b ==> x" in dtl  # the confusion pair


def test_cer_counts_characters_and_spaces(tmp_path):
    ref = write(tmp_path / "ref", ["u1 ab cd"])
    hyp = write(tmp_path / "hyp", ["u1 ab cx"])
    # a b <space> c d: 5 tokens, 1 substitution -> 20 %
    r = score(ref, hyp, None, "char", tmp_path / "score_cer")
    assert (r["wrd"], r["sub"], r["err"]) == (5, 20.0, 20.0)
    assert (tmp_path / "score_cer" / "ref.trn").read_text() == "a b <space> c d\t(u1-u1)\n"


def test_chinese_cer_utf8(tmp_path):
    ref = write(tmp_path / "ref", ["u1 今天天气很好"])
    hyp = write(tmp_path / "hyp", ["u1 今天天很好"])
    r = score(ref, hyp, None, "char", tmp_path / "cer")
    assert (r["wrd"], r["del"], r["err"]) == (6, 16.7, 16.7)
    assert "今" in (tmp_path / "cer" / "result.txt").read_text(encoding="utf-8")


def test_empty_hypothesis_line_counts_as_deletions(tmp_path):
    ref = write(tmp_path / "ref", ["u1 a b", "u2 c"])
    hyp = write(tmp_path / "hyp", ["u1", "u2 c"])
    # 3 reference words, u1's two deleted: Del 2/3 = 66.7 %, Corr 1/3 = 33.3 %
    r = score(ref, hyp, None, "word", tmp_path / "s")
    assert (r["wrd"], r["del"], r["corr"]) == (3, 66.7, 33.3)


def test_refuses_empty_hypothesis_file(wer_case, tmp_path):
    ref, _, utt2spk = wer_case
    empty = write(tmp_path / "empty", [])
    with pytest.raises(ScoringError, match=f"hypothesis file {empty} is empty"):
        score(ref, empty, utt2spk, "word", tmp_path / "s")
    assert not (tmp_path / "s" / "result.txt").exists()


def test_refuses_incomplete_hypothesis_file(wer_case, tmp_path, capsys):
    ref, hyp, utt2spk = wer_case
    score(ref, hyp, utt2spk, "word", tmp_path / "s")  # an earlier, complete scoring
    partial = write(tmp_path / "partial", ["u1 the cat sat on mat"])
    with pytest.raises(ScoringError, match=r"lacks 1 of 2 reference utterances \(u2\)"):
        score(ref, partial, utt2spk, "word", tmp_path / "s")
    extra = write(tmp_path / "extra", ["u1 x", "u2 y", "u3 z"])
    with pytest.raises(ScoringError, match=r"1 utterances not in the reference \(u3\)"):
        score(ref, extra, utt2spk, "word", tmp_path / "s")
    rc = score_sclite.main(["--ref", str(ref), "--hyp", str(partial), "--score_type", "wer",
                            "--output_dir", str(tmp_path / "s")])
    assert rc == 1 and "refusing to score" in capsys.readouterr().err
    # A refused scoring leaves none of the earlier results for a collector to report.
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == []
    with pytest.raises(ScoringError, match=f"hypothesis file {tmp_path / 'gone'} does not exist"):
        score(ref, tmp_path / "gone", utt2spk, "word", tmp_path / "s")


def test_find_sclite_is_the_debian_binary():
    assert os.path.basename(find_sclite()) == "sclite"


def test_length_difference_from_sclite_counts(tmp_path):
    """Len = mean hypothesis-minus-reference length per utterance. Hand count: u1 "a b c d" ->
    "a b c d e f" (+2), u2 "a b c" -> "a b c" (0), u3 "x y z w" -> "x" (-3), u4 "p q" -> "p r"
    (0): (2 + 0 - 3 + 0) / 4 = -0.25 words per utterance."""
    from espnet_ext.recipe.results import length_difference

    ref = write(tmp_path / "ref", ["u1 a b c d", "u2 a b c", "u3 x y z w", "u4 p q"])
    hyp = write(tmp_path / "hyp", ["u1 a b c d e f", "u2 a b c", "u3 x", "u4 p r"])
    utt2spk = write(tmp_path / "utt2spk", ["u1 s", "u2 s", "u3 s", "u4 s"])
    r = score(ref, hyp, utt2spk, "word", tmp_path / "score_wer")
    assert length_difference(r) == pytest.approx(-0.25, abs=0.005)  # sclite rounds % to 0.1


def test_collect_results_writes_results_md(wer_case, tmp_path):
    ref, hyp, utt2spk = wer_case
    exp = tmp_path / "exp" / "asr_tiny"
    exp.mkdir(parents=True)
    (exp / "config.yaml").write_text(yaml.safe_dump(
        {"config": "conf/tiny.yaml", "model": "cif", "encoder": "conformer_pooling",
         "decoder": "cif_ar"}))
    torch.save({"encoder.w": torch.zeros(300, 400), "decoder.b": torch.zeros(1000),
                "normalize.mean": torch.zeros(80)}, exp / "valid.acc.ave.pth")
    (exp / "train.log").write_text("# Started\n...\n# Accounting: time=61 threads=1\n"
                                   "# Ended (code 0) at Mon, elapsed time 61 seconds\n")
    dec = exp / "decode_beam10" / "test"
    (dec / "logdir").mkdir(parents=True)
    (dec / "logdir" / "asr_inference.1.log").write_text(
        "# Ended (code 0) at Mon, elapsed time 7 seconds\n")
    score(ref, hyp, utt2spk, "word", dec / "score_wer")
    score(ref, hyp, utt2spk, "char", dec / "score_cer")
    head = "stage\tname\ttag\twall_s\tcpu_s\tload_1_5_15\tdate\tstatus\n"
    (tmp_path / "exp" / "stage_times.tsv").write_text(head + "".join("\t".join(row) + "\n" for row in [
        ("3", "fbank features", "train dev", "8", "12", "1.0 0.5 0.2", "d1", "ran"),
        ("3", "fbank features", "-", "0", "0", "1.0 0.5 0.2", "d2", "skipped"),
        ("3", "fbank features", "dev_cross", "3", "2", "1.0 0.5 0.2", "d3", "ran"),  # another set: own row
        ("4", "length filter", "-", "2", "1", "1.0 0.5 0.2", "d1", "ran"),
        ("12", "internal LM: DR-LSTM", "tiny_char", "5", "4", "2.0 1.5 1.2", "d3", "ran"),  # listed by stage
        ("11", "ASR training", "tiny_char", "100", "150", "2.0 1.5 1.2", "d4", "ran"),
        ("11", "ASR training", "tiny_char", "1", "0", "0.1 0.1 0.1", "d5", "skipped"),  # rerun: kept the work
        ("4", "length filter", "-", "1", "1", "1.0 0.5 0.2", "d6", "ran"),  # redone: the latest
    ]))
    # Sections of earlier stages (Table 3, Table 1) are included as written.
    (tmp_path / "exp" / "ilm_tiny").mkdir()
    (tmp_path / "exp" / "ilm_tiny" / "RESULTS.md").write_text("## Internal-LM estimation and DR-KD: x\n\n|t3|\n")
    (tmp_path / "exp" / "table1_tiny.md").write_text("## HKD paper Table 1: CIF / +HKD, WER on test\n\n|t1|\n")
    out = tmp_path / "RESULTS.md"
    assert collect_results.main(["--output", str(out), str(tmp_path / "exp")]) == 0
    md = out.read_text()
    assert "|dataset|Snt|Wrd|Corr|Sub|Del|Ins|Err|S.Err|" in md
    assert "|decode_beam10/test|2|9|77.8|11.1|11.1|11.1|33.3|100.0|" in md
    assert "### WER" in md and "### CER" in md
    # 300 x 400 + 1000 = 121,000 parameters; normalize.* holds feature statistics, not parameters
    assert "model: cif (encoder conformer_pooling, decoder cif_ar); parameters: 121,000 (0.12 M)" in md
    assert "config: conf/tiny.yaml" in md and "training wall time: 61 s" in md
    assert "decode_beam10/test 7 s (1 jobs)" in md
    times = md.split("## Wall and CPU time per stage")[1].split("\n## ")[0]
    rows = [line for line in times.splitlines() if line.startswith("|") and not line.startswith("|-")]
    assert rows == ["|stage|name|config/tag|wall s|CPU s|load|finished|status|",
                    "|3|fbank features|train dev|8|12|1.0 0.5 0.2|d1|ran|",
                    "|3|fbank features|-|0|0|1.0 0.5 0.2|d2|skipped|",
                    "|3|fbank features|dev_cross|3|2|1.0 0.5 0.2|d3|ran|",
                    "|4|length filter|-|1|1|1.0 0.5 0.2|d6|ran|",
                    "|11|ASR training|tiny_char|100|150|2.0 1.5 1.2|d4|ran|",
                    "|12|internal LM: DR-LSTM|tiny_char|5|4|2.0 1.5 1.2|d3|ran|",
                    # 8 + 0 + 3 + 1 + 100 + 5 = 117 s wall; 12 + 0 + 2 + 1 + 150 + 4 = 169 s CPU
                    "|**total**|||117 s (1.9 min)|169 s (2.8 min)||||"]
    assert md.index("## Wall and CPU time") < md.index("## Internal-LM estimation and DR-KD: x\n\n|t3|")
    assert md.index("|t3|") < md.index("## HKD paper Table 1: CIF / +HKD, WER on test\n\n|t1|")
    assert parse_result(dec / "score_wer" / "result.txt")["err"] == 33.3


def test_collect_results_cli_rejects_missing_dir(tmp_path):
    r = subprocess.run([sys.executable, "-m", "espnet_ext.recipe.bin.collect_results",
                        str(tmp_path / "nope")], capture_output=True, text=True)
    assert r.returncode == 1 and "not a directory" in r.stderr
