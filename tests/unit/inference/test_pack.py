"""Packed models (espnet_ext.inference.pack): pack -> unpack elsewhere -> the same 1-best as the
training directory; training-only parameters left out; the stock ESPnet loader rebuilds it."""
import os
import shutil

import pytest
import soundfile
import torch
import yaml
from tiny_audio_asr import tiny_audio_cif_model

from espnet_ext.bin import pack_model as pack_cli
from espnet_ext.bin import transcribe
from espnet_ext.inference import Speech2Text
from espnet_ext.inference.pack import unpack_model


@pytest.fixture(scope="session")
def audio_model(tmp_path_factory):
    return tiny_audio_cif_model(tmp_path_factory.getbasetemp() / "audio_cif")


@pytest.fixture(scope="session")
def packed(audio_model, tmp_path_factory):
    """The model with a distiller's tensors added to its parameters and config, as an HKD model
    has them, packed from a copy of its directory; then moved away from it."""
    work = tmp_path_factory.mktemp("pack_src")
    exp = work / "exp"
    shutil.copytree(audio_model.exp, exp)
    conf = yaml.safe_load((exp / "config.yaml").read_text())
    conf["distiller"] = conf["model_conf"]["distiller"] = "acd"
    conf["distiller_conf"] = conf["model_conf"]["distiller_conf"] = {"teacher_dim": 8}
    (exp / "config.yaml").write_text(yaml.safe_dump(conf))
    state = torch.load(audio_model.model_file, map_location="cpu")
    state["distiller.proj.weight"] = torch.zeros(8, 4)
    torch.save(state, exp / "model.pth")
    (work / "conf").mkdir()
    (work / "conf" / "decode.yaml").write_text("beam_size: 3\n")
    before = os.getcwd()
    os.chdir(work)
    try:
        assert pack_cli.main(["--asr_train_config", "exp/config.yaml", "--asr_model_file", "exp/model.pth",
                              "--decode_config", "conf/decode.yaml", "--outpath", "model.zip"]) == 0
    finally:
        os.chdir(before)
    elsewhere = tmp_path_factory.mktemp("colleague") / "model.zip"
    shutil.move(work / "model.zip", elsewhere)
    shutil.rmtree(work)  # nothing of the training directory is left
    return elsewhere


def test_packed_model_transcribes_as_the_training_directory(packed, audio_model):
    s2t = Speech2Text(packed_model=packed)
    assert s2t.args.beam_size == 3  # from the packed decode config
    reference = Speech2Text(asr_train_config=audio_model.exp / "config.yaml",
                            asr_model_file=audio_model.model_file, beam_size=3)
    for utt, wav in audio_model.wavs.items():
        wave, rate = soundfile.read(str(wav), dtype="float32")
        got, want = s2t(wave, fs=rate), reference(wave, fs=rate)
        assert got.text == want.text == audio_model.texts[utt]
        assert got.token_ids == want.token_ids and got.score == pytest.approx(want.score)
        assert got.words == want.words


def test_training_only_parts_are_left_out_and_stock_espnet_rebuilds_it(packed):
    from espnet2.tasks.asr import ASRTask

    paths = unpack_model(packed)
    state = torch.load(paths["asr_model_file"], map_location="cpu")
    assert state and not [k for k in state if k.startswith("distiller.")]
    conf = yaml.safe_load(open(paths["asr_train_config"]))
    assert conf["distiller"] is None and conf["model_conf"]["distiller"] is None
    assert paths["feature"]["fs"] == 16000 and paths["feature"]["num_mel_bins"] == 80
    model, _ = ASRTask.build_model_from_file(paths["asr_train_config"], paths["asr_model_file"], "cpu")
    assert getattr(model, "distiller", None) is None


def test_transcribe_takes_the_packed_file(packed, audio_model, tmp_path, capsys):
    utt = sorted(audio_model.wavs)[0]
    transcribe.main(["--packed_model", str(packed), "--unpack_dir", str(tmp_path / "u"),
                     str(audio_model.wavs[utt])])
    assert capsys.readouterr().out == f"{audio_model.wavs[utt]} {audio_model.texts[utt]}\n"
