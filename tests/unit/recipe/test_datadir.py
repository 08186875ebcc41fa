"""Data directory tools: validation messages, fix with reports, split, combine, subset, speed
perturbation (real sox on real audio) and the LM-text leak guard."""
import logging
import subprocess
import sys

import pytest

from espnet_ext.recipe import datadir as dd
from espnet_ext.recipe.fbank import read_audio
from espnet_ext.recipe.runner import REPO_ROOT

DATA_DIR_PY = str(REPO_ROOT / "utils" / "data_dir.py")


def write(d, name, lines):
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def make_dir(d, utts=("a-1", "a-2", "b-1", "b-2")):
    write(d, "wav.scp", [f"{u} /audio/{u}.wav" for u in utts])
    write(d, "text", [f"{u} words of {u}" for u in utts])
    write(d, "utt2spk", [f"{u} {u.split('-')[0]}" for u in utts])
    write(d, "spk2utt", [f"{s} {v}" for s, v in dd.utt2spk_to_spk2utt(
        [(u, u.split("-")[0]) for u in utts])])
    return d


def problems(d, **kw):
    with pytest.raises(dd.DataDirError) as e:
        dd.validate_data_dir(d, **kw)
    return str(e.value)


def test_valid_dir_passes(tmp_path):
    dd.validate_data_dir(make_dir(tmp_path / "d"))


def test_unsorted_and_duplicate_ids_are_named(tmp_path):
    d = make_dir(tmp_path / "d")
    write(d, "text", ["a-2 x", "a-1 y", "b-1 z", "b-1 again", "b-2 w"])
    msg = problems(d)
    assert f"{d}/text:2: not sorted: 'a-1' comes after 'a-2'" in msg
    assert f"{d}/text:4: duplicate id 'b-1'" in msg
    assert "utils/data_dir.py fix" in msg


def test_missing_utterances_and_empty_text_are_named(tmp_path):
    d = make_dir(tmp_path / "d")
    write(d, "text", ["a-1 x", "a-2", "b-2 w"])
    msg = problems(d)
    assert "1 utterance(s) in utt2spk but not in text: 'b-1'" in msg
    assert f"{d}/text:2: empty transcript for 'a-2'" in msg


def test_spk2utt_must_agree_with_utt2spk(tmp_path):
    d = make_dir(tmp_path / "d")
    write(d, "spk2utt", ["a a-1", "b b-1 b-2"])
    assert "spk2utt: disagrees with utt2spk for speaker(s) 'a'" in problems(d)


def test_missing_files_are_named(tmp_path):
    d = make_dir(tmp_path / "d")
    (d / "wav.scp").unlink()
    assert f"{d}/wav.scp: missing" in problems(d)
    dd.validate_data_dir(d, need_audio=False)


def test_fix_keeps_consistent_utterances_and_reports_the_rest(tmp_path, caplog):
    d = make_dir(tmp_path / "d", ("a-1", "a-2", "b-1", "b-2", "c-1"))
    write(d, "text", ["b-2 w", "a-1 x", "a-2", "c-1 v", "c-1 dup"])  # unsorted, empty, dup
    write(d, "wav.scp", ["a-1 /a1.wav", "a-2 /a2.wav", "b-2 /b2.wav", "c-1 /c1.wav"])
    with caplog.at_level(logging.WARNING, logger="datadir"):
        dropped = dd.fix_data_dir(d)
    assert dropped == {"duplicate id in text (first kept)": ["c-1"],
                       "not in wav.scp, text": ["b-1"], "empty value in text": ["a-2"]}
    assert "kept 3 of 5 utterances; dropped 2" in caplog.text
    assert "1 not in wav.scp, text: 'b-1'" in caplog.text
    dd.validate_data_dir(d)
    assert (d / "text").read_text() == "a-1 x\nb-2 w\nc-1 v\n"
    assert (d / "spk2utt").read_text() == "a a-1\nb b-2\nc c-1\n"
    assert "b-1 not in wav.scp, text" in (d / ".backup" / "dropped").read_text()
    assert "b-1" in (d / ".backup" / "utt2spk").read_text()  # originals kept


def test_split_rows_is_balanced_and_deterministic():
    parts = dd.split_rows(list(range(10)), 4)
    # boundaries floor(10 i / 4) = 0, 2, 5, 7, 10: sizes 2, 3, 2, 3 (differ by at most one)
    assert parts == [[0, 1], [2, 3, 4], [5, 6], [7, 8, 9]]
    assert dd.split_rows(list(range(10)), 4) == parts
    with pytest.raises(dd.DataDirError, match="cannot split 3 lines into 4"):
        dd.split_rows([1, 2, 3], 4)


def test_split_data_dir_parts_are_valid_and_reused(tmp_path):
    d = make_dir(tmp_path / "d", [f"s{i % 3}-{i:02d}" for i in range(10)])
    dd.fix_data_dir(d)  # sorts
    parts = dd.split_data_dir(d, 3)
    seen = []
    for p in parts:
        dd.validate_data_dir(p)
        seen += [u for u, _ in dd.read_table(p / "utt2spk")]
    assert seen == [u for u, _ in dd.read_table(d / "utt2spk")]
    stamp = (parts[0] / "text").stat().st_mtime_ns
    assert dd.split_data_dir(d, 3) == parts
    assert (parts[0] / "text").stat().st_mtime_ns == stamp  # reused, not rewritten


def test_combine_and_duplicates(tmp_path):
    a = make_dir(tmp_path / "a", ("a-1", "a-2"))
    b = make_dir(tmp_path / "b", ("b-1",))
    dd.combine_data_dirs(tmp_path / "c", [a, b])
    dd.validate_data_dir(tmp_path / "c")
    assert [u for u, _ in dd.read_table(tmp_path / "c" / "text")] == ["a-1", "a-2", "b-1"]
    with pytest.raises(dd.DataDirError, match=r"'a-1' of .* is in both .*/a and .*/a2"):
        dd.combine_data_dirs(tmp_path / "x", [a, make_dir(tmp_path / "a2", ("a-1",))])


def test_subset_and_filter_by_length(tmp_path, caplog):
    d = make_dir(tmp_path / "d")
    write(d, "utt2num_frames", ["a-1 5", "a-2 100", "b-1 4000", "b-2 50"])
    dd.subset_data_dir(d, tmp_path / "s", ["a-2", "b-2"])
    dd.validate_data_dir(tmp_path / "s")
    with caplog.at_level(logging.WARNING, logger="datadir"):
        dropped = dd.filter_by_length(d, min_frames=10, max_frames=3000)
    assert dropped == {"length outside [10, 3000] frames": ["a-1", "b-1"]}
    assert "kept 2 of 4" in caplog.text
    dd.validate_data_dir(d)


def test_lm_text_leaves_out_dev_and_test_sentences(tmp_path, caplog):
    write(tmp_path, "lm", ["l1 the cat sat", "l2 The  Cat sat", "l3 a new sentence", "l4 hello"])
    write(tmp_path, "dev", ["d1 the cat sat"])
    write(tmp_path, "test", ["t1 hello"])
    with caplog.at_level(logging.WARNING, logger="datadir"):
        kept, removed = dd.prepare_lm_text([tmp_path / "lm"], tmp_path / "out" / "train.txt",
                                           [tmp_path / "dev", tmp_path / "test"])
    assert (kept, removed) == (1, 3)
    assert (tmp_path / "out" / "train.txt").read_text() == "l3 a new sentence\n"
    assert "3 removed" in caplog.text
    assert len((tmp_path / "out" / "train.txt.removed").read_text().splitlines()) == 3


def test_speed_perturbation_pipes_real_audio_through_sox(speech_corpus, tmp_path):
    src = speech_corpus.data["train"]
    dd.perturb_speed(src, tmp_path / "sp", 0.9)
    dd.validate_data_dir(tmp_path / "sp")
    rows = dd.read_table(tmp_path / "sp" / "wav.scp")
    assert all(u.startswith("sp0.9-") and v.endswith("speed 0.9 |") for u, v in rows)
    utt, entry = rows[0]
    orig, rate = read_audio(dd.read_table(src / "wav.scp")[0][1])
    slow, rate2 = read_audio(entry)
    assert rate == rate2 == 16000
    assert len(slow) == pytest.approx(len(orig) / 0.9, rel=0.01)
    assert dd.read_table(tmp_path / "sp" / "utt2spk")[0] == (utt, "sp0.9-spkA")


def test_ids_with_whitespace_are_named_and_dropped_consistently(tmp_path):
    """An id with a space ('b 3') reads as id 'b' with the rest in the value: validate names the
    line and the id it meant, fix drops the utterance (counted), and validate then passes."""
    d = make_dir(tmp_path / "d", utts=("a-1", "a-2"))
    for name, value in (("wav.scp", "/audio/b3.wav"), ("text", "words of b three"), ("utt2spk", "b")):
        with open(d / name, "a", encoding="utf-8") as f:
            f.write(f"b 3 {value}\n")
    write(d, "spk2utt", ["a a-1 a-2", "3 b b"])  # as spk2utt would be derived from it
    r = subprocess.run([sys.executable, DATA_DIR_PY, "validate", str(d)], capture_output=True, text=True)
    assert r.returncode == 1
    assert f"{d}/utt2spk:3: utterance 'b' has speaker '3 b': ids cannot contain whitespace " \
        "(is the id 'b 3'?)" in r.stderr
    r = subprocess.run([sys.executable, DATA_DIR_PY, "fix", str(d)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "kept 2 of 3 utterances; dropped 1" in r.stderr
    assert "1 whitespace in its utt2spk entry (ids cannot contain whitespace): 'b'" in r.stderr
    r = subprocess.run([sys.executable, DATA_DIR_PY, "validate", str(d)], capture_output=True, text=True)
    assert r.returncode == 0 and "is valid (2 utterances)" in r.stderr, r.stderr


def test_cli_reports_problems_with_exit_code(tmp_path):
    d = make_dir(tmp_path / "d")
    write(d, "utt2spk", ["a-1 a", "b-1 b", "a-2 a", "b-2 b"])
    r = subprocess.run([sys.executable, DATA_DIR_PY, "validate", str(d)], capture_output=True,
                       text=True)
    assert r.returncode == 1
    assert f"{d}/utt2spk:3: not sorted: 'a-2' comes after 'b-1'" in r.stderr
    r = subprocess.run([sys.executable, DATA_DIR_PY, "fix", str(d)], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, DATA_DIR_PY, "validate", str(d)], capture_output=True,
                       text=True)
    assert r.returncode == 0 and "is valid (4 utterances)" in r.stderr
