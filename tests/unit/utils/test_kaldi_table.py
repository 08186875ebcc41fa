"""The one Kaldi-table reader: rows as written, and every malformed line named by file and line."""
import subprocess
import sys

import pytest

from espnet_ext.utils.kaldi_table import TableError, read_table, read_table_dict, write_table


def write_bytes(path, data: bytes):
    path.write_bytes(data)
    return path


def test_rows_in_file_order_with_stripped_values_and_bare_ids(tmp_path):
    p = write_bytes(tmp_path / "text", b"u2  two  words \nu1 one\nu3\r\nu0\tt\xc3\xa9\n")
    assert read_table(p) == [("u2", "two  words"), ("u1", "one"), ("u3", ""), ("u0", "t\u00e9")]
    assert list(read_table_dict(p)) == ["u2", "u1", "u3", "u0"]
    assert read_table(write_bytes(tmp_path / "empty", b"")) == []


def test_empty_line_is_named(tmp_path):
    p = write_bytes(tmp_path / "text", b"a x\n\nb y\n")
    with pytest.raises(TableError, match=rf"^{p}:2: empty line$"):
        read_table(p)
    with pytest.raises(TableError, match=rf"^{p}:2: empty line$"):
        read_table(write_bytes(p, b"a x\n   \nb y\n"))


def test_missing_value_is_refused_only_when_required(tmp_path):
    p = write_bytes(tmp_path / "wav.scp", b"a /x.wav\nb\n")
    assert read_table(p)[1] == ("b", "")
    with pytest.raises(TableError, match=rf"^{p}:2: id 'b' has no value$"):
        read_table(p, allow_empty_value=False)
    with pytest.raises(TableError, match=rf"^{p}:2: id 'b' has no value$"):
        read_table_dict(p, allow_empty_value=False)


def test_not_utf8_names_line_column_and_id(tmp_path):
    # "今天" in GB18030 is bd f1 cc ec; 0xbd is a UTF-8 continuation byte, invalid where a
    # character starts: column len("utt7 ") + 1 = 6.
    p = write_bytes(tmp_path / "text", b"utt1 ok\nutt7 " + "今天".encode("gb18030") + b"\n")
    with pytest.raises(TableError) as e:
        read_table(p)
    assert str(e.value).startswith(f"{p}:2: not UTF-8 (byte 0xbd at column 6) in the line of "
                                   f"'utt7'; convert the file to UTF-8")


def test_duplicate_id_names_both_lines(tmp_path):
    p = write_bytes(tmp_path / "text", b"a x\nb y\na z\n")
    assert [k for k, _ in read_table(p)] == ["a", "b", "a"]  # the list keeps what the file says
    with pytest.raises(TableError, match=rf"^{p}:3: duplicate id 'a' \(first on line 1\)$"):
        read_table_dict(p)


def test_write_then_read_round_trip(tmp_path):
    rows = [("b", "two words"), ("a", ""), ("c", "\u4eca\u5929")]
    write_table(tmp_path / "t", rows)
    assert (tmp_path / "t").read_bytes() == "b two words\na\nc \u4eca\u5929\n".encode("utf-8")
    assert read_table(tmp_path / "t") == rows
    assert not (tmp_path / "t.tmp").exists()


def test_table_error_is_a_value_error():
    assert issubclass(TableError, ValueError)


def test_importable_without_torch():
    code = ("import sys, espnet_ext.utils.kaldi_table, espnet_ext.utils.tokens; "
            "sys.exit(int('torch' in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
