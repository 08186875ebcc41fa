"""Same seed + same data -> same results on CPU: features, token lists, trained
parameters and decoded text are identical across runs (byte for byte where they are files).
Which stages are not deterministic on a GPU, and why, is in docs/reliability.md."""
import filecmp
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import torch
from reliability_helpers import CIF_CONF, chdir, one_thread, tiny_cif_model


def _same_files(a: Path, b: Path, names):
    _, mismatch, errors = filecmp.cmpfiles(a, b, names, shallow=False)
    assert mismatch == [] and errors == [], (mismatch, errors)


def test_features_are_byte_identical_and_independent_of_the_split(speech_corpus, tmp_path):
    from espnet_ext.recipe.datadir import split_scp
    from espnet_ext.recipe.fbank import extract_to_ark

    wav_scp = speech_corpus.data["train"] / "wav.scp"
    split_scp(wav_scp, [tmp_path / "wav.1.scp", tmp_path / "wav.2.scp"])
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        with chdir(tmp_path / run):
            extract_to_ark(str(wav_scp), "feats.ark", "feats.scp", "u2nf", progress=False)
            for i in (1, 2):
                extract_to_ark(str(tmp_path / f"wav.{i}.scp"), f"p{i}.ark", f"p{i}.scp",
                               f"u2nf.{i}", progress=False)
    _same_files(tmp_path / "a", tmp_path / "b", ["feats.ark", "feats.scp", "u2nf", "p1.ark", "p2.ark"])
    with chdir(tmp_path / "a"):
        whole = dict(kaldiio.load_scp_sequential("feats.scp"))
        parts = {**dict(kaldiio.load_scp_sequential("p1.scp")),
                 **dict(kaldiio.load_scp_sequential("p2.scp"))}
    # 10 training sentences, each read by 2 of the 4 speakers (tests/speech_fixtures.py)
    assert whole.keys() == parts.keys() and len(whole) == 20
    assert all(np.array_equal(whole[k], parts[k]) for k in whole)


@pytest.mark.parametrize("token_type, extra", [("char", []), ("word", []),
                                               ("bpe", ["--nbpe", "60"])])
def test_token_lists_are_byte_identical(speech_corpus, tmp_path, token_type, extra):
    """bpe.model records its training paths, so both runs use the same relative ones."""
    from espnet_ext.bin import make_token_list

    text = speech_corpus.data["train"] / "text"
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        with chdir(tmp_path / run):
            assert make_token_list.main(["--token_type", token_type, "--input", str(text),
                                         "--output_dir", "list", *extra]) == 0
    names = ["tokens.txt"] + (["bpe.model", "bpe.vocab"] if token_type == "bpe" else [])
    _same_files(tmp_path / "a/list", tmp_path / "b/list", names)
    assert (tmp_path / "a/list/tokens.txt").read_text().startswith("<blank>\n<unk>\n")


def _train(out: Path, data, seed: int):
    from tiny_asr_data import asr_data_args

    from espnet_ext.tasks.cif_asr import CIFASRTask

    with one_thread():
        CIFASRTask.main(cmd=["--config", str(CIF_CONF), "--output_dir", str(out), "--max_epoch",
                             "1", "--seed", str(seed)] + asr_data_args(data))
    return torch.load(out / "1epoch.pth", map_location="cpu")


def test_training_with_the_same_seed_gives_the_same_parameters(tmp_path):
    from tiny_asr_data import make_tiny_asr_data

    data = make_tiny_asr_data(tmp_path / "data", n_utts=8, feat_dim=20, seed=1)
    a = _train(tmp_path / "a", data, seed=1)
    b = _train(tmp_path / "b", data, seed=1)
    c = _train(tmp_path / "c", data, seed=2)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


def test_decoded_text_is_byte_identical_across_runs(tmp_path_factory):
    from espnet_ext.bin import asr_inference

    exp, data = tiny_cif_model(tmp_path_factory.getbasetemp() / "reliability_cif")
    root = tmp_path_factory.mktemp("determinism_decode")
    args = ["--asr_train_config", str(exp / "config.yaml"), "--asr_model_file",
            str(exp / "valid.acc.ave.pth"), "--data_path_and_name_and_type",
            f"{data['valid_feats_scp']},speech,kaldi_ark", "--beam_size", "4", "--batch_size", "3"]
    names = ["text", "token", "token_int", "score"]
    for run in ("a", "b"):
        asr_inference.main(args + ["--output_dir", str(root / run)])
    _same_files(root / "a/1best_recog", root / "b/1best_recog", names)
    asr_inference.main(args + ["--output_dir", str(root / "bs1"), "--batch_size", "1"])
    _same_files(root / "a/1best_recog", root / "bs1/1best_recog", ["text", "token", "token_int"])
    assert len((root / "a/1best_recog/text").read_text().splitlines()) == 20  # valid: 40 // 2 utterances
