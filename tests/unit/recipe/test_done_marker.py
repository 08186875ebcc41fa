"""espnet_ext.recipe.done_marker: a marker holds while the files it vouches for are unchanged."""
import os

import pytest

from espnet_ext.recipe import done_marker
from espnet_ext.recipe.bin import done_marker as done_marker_cli


@pytest.fixture
def step(tmp_path):
    """A finished step: a list and an audio file read, an ark written."""
    audio = tmp_path / "a.wav"
    audio.write_bytes(b"RIFF" + bytes(100))
    wav_scp = tmp_path / "wav.scp"
    wav_scp.write_text(f"u1 {audio}\nu2 {audio}:44\nu3 sox {audio} -t wav - |\n")
    ark = tmp_path / "feats.ark"
    ark.write_bytes(bytes(1000))
    marker = tmp_path / ".done.step"
    done_marker.write(str(marker), inputs=[str(wav_scp)], audio_of=[str(wav_scp)],
                      outputs=[str(ark)], exists=[str(wav_scp)], options="fs=16000")
    return marker, wav_scp, audio, ark


def test_a_written_marker_holds(step):
    marker, *_ = step
    assert done_marker.check(str(marker)) is None
    assert done_marker.check(str(marker), "fs=16000") is None
    assert done_marker.check(str(marker), "fs=8000") == "options changed"


def test_audio_paths_of_plain_offset_and_pipe_entries(step):
    _, wav_scp, audio, _ = step
    assert done_marker.audio_paths(str(wav_scp)) == [str(audio)] * 3


def test_each_change_is_named(step):
    marker, wav_scp, audio, ark = step
    with open(ark, "r+b") as f:  # a full disk: the ark lost its end
        f.truncate(400)
    assert done_marker.check(str(marker)) == f"output {ark} changed size (1000 -> 400 bytes)"
    ark.write_bytes(bytes(1000))  # same size, rewritten later
    os.utime(ark, ns=(1, 1))
    assert done_marker.check(str(marker)) == f"output {ark} was modified"
    ark.unlink()
    assert done_marker.check(str(marker)) == f"output {ark} is missing"


def test_inputs_compare_by_content_and_audio_by_size_and_time(step):
    marker, wav_scp, audio, ark = step
    st = wav_scp.stat()
    text = wav_scp.read_text()
    wav_scp.write_text(text.replace("u1", "u9"))  # same size, new content
    os.utime(wav_scp, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert done_marker.check(str(marker)) == f"input {wav_scp} changed content"
    wav_scp.write_text(text)
    assert done_marker.check(str(marker)) is None  # content is what counts for small inputs
    audio.write_bytes(b"RIFF" + bytes(100))  # the same bytes, written again: a new recording
    os.utime(audio, ns=(5, 5))
    assert done_marker.check(str(marker)) == f"audio file {audio} was modified"


def test_missing_empty_and_legacy_markers_do_not_hold(tmp_path):
    marker = tmp_path / ".done.x"
    assert done_marker.check(str(marker)) == f"{marker} does not exist"
    marker.touch()  # as earlier versions wrote them
    assert "holds no record of its files" in done_marker.check(str(marker))


def test_a_marker_is_not_written_for_missing_outputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="outputs are missing: .*nothing.ark"):
        done_marker.write(str(tmp_path / ".done.x"), outputs=[str(tmp_path / "nothing.ark")])
    assert not (tmp_path / ".done.x").exists()


def test_cli_exit_codes_and_messages(step, capsys):
    marker, wav_scp, audio, ark = step
    assert done_marker_cli.main(["check", str(marker), "--options", "fs=16000"]) == 0
    ark.unlink()
    assert done_marker_cli.main(["check", str(marker)]) == 1
    assert capsys.readouterr().err == f"{marker} no longer holds: output {ark} is missing; redoing\n"
    assert done_marker_cli.main(["why", str(marker)]) == 1
    assert capsys.readouterr().out == f"output {ark} is missing\n"
    assert done_marker_cli.main(["check", str(marker) + ".absent"]) == 1
    assert capsys.readouterr().err == ""  # an absent marker is just a step to do
    assert done_marker_cli.main(["write", str(marker), "--outputs", str(ark)]) == 1
    assert "outputs are missing" in capsys.readouterr().err
