"""ESPnet-style token lists (``tokens.txt``, one token per line, line number = id).

Layout (what ESPnet's ASR/LM models expect): ``<blank>`` (id 0, CTC blank and LM padding),
``<unk>`` (id 1), the units, ``<sos/eos>`` (last id).

- ``char``: characters by frequency (ties in code-point order); a space becomes ``<space>`` as in
  ESPnet's CharTokenizer, or is dropped with ``remove_space`` (Chinese: one token per character).
- ``word``: whitespace-separated words by frequency.
- ``bpe``: a sentencepiece model (``unigram`` or ``bpe``, ``nbpe`` pieces); the list is ``<blank>``,
  ``<unk>``, the pieces after sentencepiece's own ``<unk> <s> </s>``, ``<sos/eos>``.
- ``hugging_face``: a pre-trained LM's vocabulary, read with ``AutoTokenizer`` from a local path.
  The mapping keeps **ASR id == tokenizer id for every real token** (so teacher features and
  PLM ids need no translation): id 0 (BERT ``[PAD]``) becomes ``<blank>``, id 1 (BERT
  ``[unused0]``) becomes ``<unk>``, every other entry keeps its id and string (``[UNK]`` 100,
  ``[CLS]`` 101, ``[SEP]`` 102 stay ordinary entries; unknown input pieces come out as ``[UNK]``),
  and ``<sos/eos>`` is appended as id V, the list's last id: BOS and EOS of the ASR model and of
  every LM (ESPnet's sos = eos = V-1 of the list), so ``[SEP]`` is never the EOS; the teacher's
  ``[SEP]`` feature still lines up with the EOS position (teacher rows are positional). Ids 0
  and 1 must be special or ``[unused*]`` entries the tokenizer never produces from text, else the
  builder refuses.
- ``hugging_face`` with ``vocab="compact"``: only the tokenizer pieces that occur in the
  token-training text, by frequency (``<blank>``, ``<unk>``, pieces, ``<sos/eos>``). A small corpus
  uses a few thousand of BERT's 30,522 pieces, so the CTC and decoder output layers shrink by the
  rest. Ids then differ from the tokenizer's: text -> pieces by the tokenizer, pieces -> ids through
  the token list (``CIFASRTask`` uses ESPnet's ``TokenIDConverter`` for hugging_face; a piece
  missing from the list, and the tokenizer's own ``[UNK]``, become ``<unk>``), ids -> pieces through
  the list, pieces -> words by :class:`WordpieceTokenizer`. The PLM teacher maps pieces back to
  PLM ids by their strings, so teacher position j still describes ASR token j.
"""
import logging
import re
from collections import Counter
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

from espnet_ext.utils.kaldi_table import iter_table, read_lines, read_table, write_table

logger = logging.getLogger("tokens")

BLANK, UNK, SOS_EOS, SPACE = "<blank>", "<unk>", "<sos/eos>", "<space>"
SPECIALS = (BLANK, UNK, SOS_EOS)


def read_texts(paths: Sequence, field: int = 2) -> List[str]:
    """Transcripts from Kaldi ``text`` files (``field=2``: the values of the table) or plain text
    (``field=1``: every line)."""
    if field not in (1, 2):
        raise ValueError(f"field must be 1 (plain text) or 2 (Kaldi text), got {field}")
    out = []
    for path in paths:
        if field == 2:
            out += [text for _, text in read_table(path)]
        else:
            out += [line for _, line in read_lines(path)]
    return out


def _by_frequency(counts: Counter) -> List[str]:
    for s in SPECIALS:
        counts.pop(s, None)
    return [t for t, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def char_tokens(texts: Iterable[str], remove_space: bool = False) -> List[str]:
    from espnet2.text.char_tokenizer import CharTokenizer

    tok = CharTokenizer(space_symbol=SPACE)
    counts: Counter = Counter()
    for line in texts:
        line = re.sub(r"\s+", "" if remove_space else " ", line.strip())
        counts.update(tok.text2tokens(line))
    return [BLANK, UNK] + _by_frequency(counts) + [SOS_EOS]


def word_tokens(texts: Iterable[str]) -> List[str]:
    counts: Counter = Counter()
    for line in texts:
        counts.update(line.split())
    return [BLANK, UNK] + _by_frequency(counts) + [SOS_EOS]


def bpe_tokens(texts: Iterable[str], model_prefix: str, nbpe: int, model_type: str = "unigram",
               character_coverage: float = 1.0, user_defined_symbols: Sequence[str] = ()
               ) -> List[str]:
    """Train ``<model_prefix>.model`` on ``texts`` and return its token list."""
    import sentencepiece as spm

    prefix = Path(model_prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    train_txt = prefix.parent / "train.txt"
    train_txt.write_text("".join(t.strip() + "\n" for t in texts), encoding="utf-8")
    kwargs = dict(input=str(train_txt), vocab_size=nbpe, model_type=model_type,
                  model_prefix=str(prefix), character_coverage=character_coverage,
                  input_sentence_size=100000000, num_threads=1, minloglevel=1)
    if user_defined_symbols:
        kwargs["user_defined_symbols"] = ",".join(user_defined_symbols)
    try:
        spm.SentencePieceTrainer.train(**kwargs)
    except RuntimeError as e:
        # e.g. "Vocabulary size too high (300). Please set it to a value <= 212."
        raise ValueError(f"sentencepiece training on {train_txt} failed: {e}") from e
    sp = spm.SentencePieceProcessor(model_file=str(prefix) + ".model")
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    if pieces[:3] != ["<unk>", "<s>", "</s>"]:
        raise ValueError(f"unexpected sentencepiece specials {pieces[:3]}")
    return [BLANK, UNK] + pieces[3:] + [SOS_EOS]


def hf_tokens(model_path: str) -> List[str]:
    """ESPnet token list of a Hugging Face tokenizer with ids preserved (module docstring)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    vocab = tok.get_vocab()
    size = max(vocab.values()) + 1
    by_id = [None] * size
    for t, i in vocab.items():
        by_id[i] = t
    holes = [i for i, t in enumerate(by_id) if t is None]
    if holes:
        raise ValueError(f"{model_path}: tokenizer vocabulary has no entry for ids {holes[:5]}")
    special = set(tok.all_special_tokens)
    for i in (0, 1):
        if by_id[i] not in special and not re.fullmatch(r"\[unused\d+\]", by_id[i]):
            raise ValueError(f"{model_path}: id {i} is {by_id[i]!r}, a token the tokenizer can "
                             f"produce; it cannot become {SPECIALS[i]!r} without changing ids")
    clash = [t for t in by_id[2:] if t in SPECIALS]
    if clash:
        raise ValueError(f"{model_path}: vocabulary already contains {clash}; choose another "
                         f"mapping for this tokenizer")
    logger.info("hugging_face token list: id 0 %r -> %s, id 1 %r -> %s, %s appended as id %d",
                by_id[0], BLANK, by_id[1], UNK, SOS_EOS, size)
    return [BLANK, UNK] + by_id[2:] + [SOS_EOS]


def hf_compact_tokens(model_path: str, texts: Iterable[str]) -> List[str]:
    """Compact hugging_face token list: the pieces ``AutoTokenizer.tokenize`` produces from
    ``texts`` (by frequency, ties in string order); the tokenizer's special tokens (e.g. ``[UNK]``)
    are left out and map to ``<unk>``."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    counts: Counter = Counter()
    n_lines = 0
    for line in texts:
        counts.update(tok.tokenize(line))
        n_lines += 1
    clash = sorted(t for t in counts if t in SPECIALS)
    if clash:
        raise ValueError(f"{model_path}: tokenizer produces {clash}, which are ESPnet specials")
    special = {t: counts.pop(t) for t in set(tok.all_special_tokens) if t in counts}
    if special:
        logger.warning("compact hugging_face list: special pieces %s left out (they become %s)",
                       special, UNK)
    pieces = _by_frequency(counts)
    if not pieces:
        raise ValueError("compact hugging_face list: the token-training text has no pieces")
    logger.info("compact hugging_face token list: %d of the tokenizer's %d pieces occur in %d "
                "lines (%d piece tokens)", len(pieces), len(tok), n_lines, sum(counts.values()))
    return [BLANK, UNK] + pieces + [SOS_EOS]


class WordpieceTokenizer:
    """text <-> Hugging Face tokenizer pieces, for hugging_face token lists (full or compact).

    ``text2tokens`` is ``AutoTokenizer.tokenize`` (as ESPnet's HuggingFaceTokenizer, which the
    training preprocessor uses). ``tokens2text`` turns decoded pieces back into words for WER:
    ESPnet specials and the tokenizer's specials are dropped, ``convert_tokens_to_string`` joins
    the ``##`` continuations, and a lone ``'`` between two word characters is glued to both (BERT's
    pre-tokenizer splits "don't" into ``don ' t``, which ``convert_tokens_to_string`` keeps
    spaced). The round trip gives the tokenizer's normalisation of the text (uncased models:
    lower case, accents stripped) with single spaces, which equals Kaldi-style lower-case
    transcripts whose apostrophes sit inside words.
    """

    def __init__(self, model: str):
        self.model = str(model)
        self.tokenizer = None  # built lazily: HF tokenizers do not pickle for data workers

    def __repr__(self):
        return f'{self.__class__.__name__}(model="{self.model}")'

    def _tok(self):
        if self.tokenizer is None:
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(self.model)
        return self.tokenizer

    def text2tokens(self, line: str) -> List[str]:
        return self._tok().tokenize(line)

    def tokens2text(self, tokens: Iterable[str]) -> str:
        tok = self._tok()
        drop = set(SPECIALS) | set(tok.all_special_tokens)
        text = tok.convert_tokens_to_string([t for t in tokens if t not in drop])
        text = re.sub(r"(?<=\w) ' (?=\w)", "'", " ".join(text.split()))
        return text


def read_token_list(tokens: Union[str, Path, Sequence[str]]) -> List[str]:
    """A token list given as a tokens.txt path (one token per line, line number = id, as ESPnet
    writes and reads it) or as the tokens themselves."""
    if isinstance(tokens, (str, Path)):
        return [line for _, line in read_lines(tokens)]
    return list(tokens)


def _at(tokens: Sequence[str], i: Optional[int]) -> str:
    return repr(tokens[i]) if i is not None and 0 <= i < len(tokens) else "out of range"


def check_sos_eos_last(tokens: Sequence[str], what: str) -> None:
    """ESPnet LMs (and ours) hard-wire sos = eos = V-1: ``<sos/eos>`` must be the last token.
    ``what`` names the list (its file) in the ValueError."""
    if not tokens or tokens[-1] != SOS_EOS:
        raise ValueError(
            f"{what}: {SOS_EOS} must be the last token (ESPnet LMs use sos = eos = V-1 = "
            f"{len(tokens) - 1}, here {_at(tokens, len(tokens) - 1)}; {SOS_EOS} is at id "
            f"{tokens.index(SOS_EOS) if SOS_EOS in tokens else 'none'})"
        )


def check_same_tokens(
    asr_tokens: Union[str, Path, Sequence[str]],
    lm_tokens: Union[str, Path, Sequence[str]],
    what: str,
    asr_sos: Optional[int] = None,
    asr_eos: Optional[int] = None,
) -> None:
    """One vocabulary convention for an ASR model and every LM scored with it (ESPnet's): the
    same token list, ``<sos/eos>`` as its last entry, and the ASR model's sos/eos ids (when
    given) equal to V-1.

    ESPnet LMs, and our ILM, DR-LM, 2-gram and DR-KD LMs, hard-wire sos = eos = V-1; an ASR
    model whose sos/eos is another token (e.g. a PLM's ``[SEP]`` through ``sym_sos/sym_eos``)
    would be fused with LMs that start from another history and score another end of sentence.
    ``what`` names both sides (their files); token lists may be tokens.txt paths. Raises
    ValueError.
    """
    asr, lm = read_token_list(asr_tokens), read_token_list(lm_tokens)
    lm_side = f"LM: sos = eos = V-1 = {len(lm) - 1} ({_at(lm, len(lm) - 1)})"
    if asr_sos is not None or asr_eos is not None:
        if asr_sos != len(asr) - 1 or asr_eos != len(asr) - 1:
            raise ValueError(
                f"{what}: the ASR model's sos/eos ids are {asr_sos}/{asr_eos} "
                f"({_at(asr, asr_sos)}/{_at(asr, asr_eos)}), but ESPnet LMs use sos = eos = V-1 "
                f"({lm_side}); the ASR model must use the last token {SOS_EOS} of its token list "
                f"(no sym_sos/sym_eos in its model_conf)"
            )
    if asr != lm:
        diff = next((i for i, (a, b) in enumerate(zip(asr, lm)) if a != b), min(len(asr), len(lm)))
        where = {n: (t.index(SOS_EOS) if SOS_EOS in t else None) for n, t in (("asr", asr), ("lm", lm))}
        raise ValueError(
            f"{what}: token list differs from the ASR model's (sizes {len(asr)} vs {len(lm)}, "
            f"first difference at id {diff}: ASR {_at(asr, diff)}, LM {_at(lm, diff)}; {SOS_EOS} "
            f"at id {where['asr']} vs {where['lm']}; {lm_side}); use the same tokens.txt"
        )
    check_sos_eos_last(asr, what)


def write_token_list(tokens: Sequence[str], path) -> None:
    dup = [t for t, c in Counter(tokens).items() if c > 1]
    if dup:
        raise ValueError(f"duplicate tokens {dup[:5]}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    tmp.replace(path)


def espnet_text2tokens(token_type: str, bpemodel: Optional[str] = None):
    """text -> tokens exactly as ESPnet's preprocessor splits them for training (space as
    ``<space>`` for char; no cleaner, no non-linguistic symbols). Only the one tokenizer module is
    imported: espnet2.text.build_tokenizer pulls in the phoneme tools (seconds)."""
    if token_type == "char":
        from espnet2.text.char_tokenizer import CharTokenizer

        return CharTokenizer(space_symbol=SPACE).text2tokens
    if token_type == "word":
        from espnet2.text.word_tokenizer import WordTokenizer

        return WordTokenizer().text2tokens
    if token_type == "bpe":
        from espnet2.text.sentencepiece_tokenizer import SentencepiecesTokenizer

        return SentencepiecesTokenizer(str(bpemodel)).text2tokens
    if token_type == "hugging_face":
        from espnet2.text.hugging_face_tokenizer import HuggingFaceTokenizer

        return HuggingFaceTokenizer(str(bpemodel)).text2tokens
    raise ValueError(f"unknown token_type {token_type!r}")


def unknown_token_report(text_paths: Sequence, token_list: Sequence[str], token_type: str,
                         bpemodel: Optional[str] = None, report=None) -> Dict[str, dict]:
    """Count the tokens of Kaldi ``text`` files that ESPnet will map to ``<unk>``.

    ESPnet's TokenIDConverter silently turns every token missing from the list into ``<unk>``
    (and a tokenizer may emit its own unknown piece, e.g. BERT's ``[UNK]``); this makes the loss
    visible. Per file, logs a line (a warning when anything is unknown) and returns
    {"tokens", "unknown", "utterances": {utt: [tokens]}, "counts": {token: n}}. With ``report``
    (a path), writes ``<text>\t<utt>\t<unknown tokens>`` lines there.
    """
    known = set(token_list) - {UNK}
    text2tokens = espnet_text2tokens(token_type, bpemodel)
    unk_pieces = {UNK, "[UNK]"} if token_type == "hugging_face" else {UNK}
    out: Dict[str, dict] = {}
    lines = []
    for path in text_paths:
        total, utts, counts = 0, {}, Counter()
        for utt, text in read_table(path):
            toks = text2tokens(text)
            total += len(toks)
            bad = [t for t in toks if t not in known or t in unk_pieces]
            if bad:
                utts[utt] = bad
                counts.update(bad)
                lines.append(f"{path}\t{utt}\t{' '.join(bad)}\n")
        n_unk = sum(counts.values())
        out[str(path)] = {"tokens": total, "unknown": n_unk, "utterances": utts, "counts": dict(counts)}
        if n_unk:
            shown = ", ".join(f"{t!r} x{c}" for t, c in counts.most_common(10))
            logger.warning("%s: %d of %d tokens (%.2f%%) in %d utterance(s) are not in the token "
                           "list and become %s: %s", path, n_unk, total, 100.0 * n_unk / max(total, 1),
                           len(utts), UNK, shown)
        else:
            logger.info("%s: all %d tokens are in the token list", path, total)
    if report is not None:
        report = Path(report)
        tmp = report.with_name(report.name + ".tmp")
        tmp.write_text("".join(lines), encoding="utf-8")
        tmp.replace(report)
    return out


def hf_pretokenize(model_path: str, text_in, text_out) -> int:
    """Rewrite a Kaldi ``text`` file as space-separated tokenizer pieces (``utt ▁piece ...``).

    ESPnet's LM task has no ``hugging_face`` token type; with pre-tokenized text and
    ``--token_type word`` the LM sees exactly the ASR's wordpiece ids. Returns the line count.
    """
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    rows = [(utt, " ".join(tok.tokenize(text))) for utt, text in read_table(text_in)]
    Path(text_out).parent.mkdir(parents=True, exist_ok=True)
    write_table(text_out, rows)
    return len(rows)


def read_token_ids(
    text_file: Union[str, Path],
    token_list: Sequence[str],
    token_type: str = "char",
    bpemodel: Optional[str] = None,
    cleaner: Optional[str] = None,
    non_linguistic_symbols: Optional[str] = None,
) -> Tuple[List[str], List[List[int]], int]:
    """Tokenise a Kaldi ``text`` file exactly like LM training (ESPnet's CommonPreprocessor).
    Returns ``(utt_ids, token_ids, skipped)``; utterances without text are skipped, logged and
    counted."""
    import numpy as np
    from espnet2.train.preprocessor import CommonPreprocessor
    from tqdm import tqdm

    prep = CommonPreprocessor(train=False, token_type=token_type, token_list=list(token_list),
                              bpemodel=bpemodel, text_cleaner=cleaner,
                              non_linguistic_symbols=non_linguistic_symbols)
    utts, sentences, skipped = [], [], 0
    rows = tqdm(iter_table(text_file), desc=f"tokenise {Path(text_file).name}", mininterval=5)
    for n, (utt, text) in enumerate(rows, 1):
        if not text:
            skipped += 1
            logger.warning("%s:%d: no text for utterance %s; skipped", text_file, n, utt)
            continue
        utts.append(utt)
        sentences.append(np.asarray(prep(utt, {"text": text})["text"]).tolist())
    if skipped:
        logger.warning("%s: skipped %d utterances without text", text_file, skipped)
    return utts, sentences, skipped
