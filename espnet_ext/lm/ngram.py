"""Count-based 2-gram LM: the cheap density-ratio baseline ("DR-2gram").

Smoothing: interpolated Kneser-Ney (Chen & Goodman 1998), one absolute discount per order
estimated from count-of-counts, ``D = n1 / (n1 + 2 n2)``:

    P(w|v)  = max(c(v,w) - D2, 0) / c(v) + D2 * N1+(v .) / c(v) * P1(w)      (c(v) > 0)
    P(w|v)  = P1(w)                                                           (c(v) = 0)
    P1(w)   = max(N1+(. w) - D1, 0) / N1+(. .) + D1 * |{w: N1+(. w) > 0}| / N1+(. .) / V

where N1+(. w) counts distinct left contexts of w (continuation count) and the order-0 model
is uniform over the V ids of the token list. Every row is an exact probability distribution
over the vocabulary (``<sos/eos>`` as a target is the sentence end), so no id gets -inf.

The model is stored as a standard ARPA file (``<s>``/``</s>`` for ``<sos/eos>``) and scored by
:class:`BigramLM`, an ESPnet ``AbsLM`` (batch scorer in beam search, ``ESPnetLanguageModel``
wrapper for perplexity).
"""
import math
from collections import Counter
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
from typeguard import typechecked

from espnet2.lm.abs_model import AbsLM
from espnet_ext.utils.tokens import SOS_EOS
from espnet_ext.utils.tokens import read_token_list as _read_tokens

ARPA_BOS, ARPA_EOS = "<s>", "</s>"
LOG10 = math.log(10.0)


def _discount(count_of_counts: Counter, default: float = 0.5) -> float:
    """Absolute discount D = n1 / (n1 + 2 n2), kept inside (0, 1)."""
    n1, n2 = count_of_counts.get(1, 0), count_of_counts.get(2, 0)
    if n1 == 0 or n2 == 0:
        return default
    return min(max(n1 / (n1 + 2.0 * n2), 0.05), 0.95)


@typechecked
def estimate_bigram_kn(
    sentences: Iterable[Sequence[int]],
    vocab_size: int,
    sos_eos: int,
    discount: Optional[float] = None,
) -> Tuple[List[float], List[float], Dict[Tuple[int, int], float], Dict[str, float]]:
    """Estimate an interpolated Kneser-Ney 2-gram on token-id sentences.

    Returns natural-log ``(unigram_logp[V], backoff_logw[V], bigram_logp{(v, w)}, info)``;
    ``<sos/eos>`` is the history ``<s>`` at sentence start and the target ``</s>`` at the end.
    """
    bigrams: Counter = Counter()
    for sent in sentences:
        seq = [sos_eos] + list(sent) + [sos_eos]
        bigrams.update(zip(seq[:-1], seq[1:]))
    if not bigrams:
        raise ValueError("No training sentences for the 2-gram LM")
    for v, w in bigrams:
        if not (0 <= v < vocab_size and 0 <= w < vocab_size):
            raise ValueError(f"token id {(v, w)} outside vocabulary of size {vocab_size}")

    d2 = discount if discount is not None else _discount(Counter(bigrams.values()))
    continuation = Counter(w for _, w in bigrams)  # N1+(. w)
    d1 = discount if discount is not None else _discount(Counter(continuation.values()))
    total_types = float(sum(continuation.values()))  # N1+(. .)
    floor = d1 * len(continuation) / total_types / vocab_size
    uni = [floor] * vocab_size
    for w, n in continuation.items():
        uni[w] += max(n - d1, 0.0) / total_types

    ctx_count: Counter = Counter()
    ctx_types: Counter = Counter()
    for (v, _), n in bigrams.items():
        ctx_count[v] += n
        ctx_types[v] += 1
    gamma = [1.0] * vocab_size
    for v, cv in ctx_count.items():
        gamma[v] = d2 * ctx_types[v] / cv
    bigram_logp = {
        (v, w): math.log(max(n - d2, 0.0) / ctx_count[v] + gamma[v] * uni[w])
        for (v, w), n in bigrams.items()
    }
    info = dict(discount_bigram=d2, discount_unigram=d1, num_bigrams=float(len(bigrams)),
                num_tokens=float(sum(bigrams.values())))
    return [math.log(p) for p in uni], [math.log(g) for g in gamma], bigram_logp, info


def _arpa_word(token: str, target: bool) -> str:
    if token == SOS_EOS:
        return ARPA_EOS if target else ARPA_BOS
    if any(c.isspace() for c in token):
        raise ValueError(f"token {token!r} contains whitespace; cannot be written to ARPA")
    return token


@typechecked
def write_arpa(
    path: Union[str, Path],
    token_list: Sequence[str],
    unigram_logp: Sequence[float],
    backoff_logw: Sequence[float],
    bigram_logp: Dict[Tuple[int, int], float],
) -> None:
    """Write the model as a standard ARPA 2-gram file (log10 probabilities)."""
    sos_eos = token_list.index(SOS_EOS)
    uni_lines = [f"-99\t{ARPA_BOS}\t{backoff_logw[sos_eos] / LOG10:.6f}"]
    for i, tok in enumerate(token_list):
        word = _arpa_word(tok, target=True)
        if i == sos_eos:
            uni_lines.append(f"{unigram_logp[i] / LOG10:.6f}\t{word}")
        else:
            uni_lines.append(f"{unigram_logp[i] / LOG10:.6f}\t{word}\t{backoff_logw[i] / LOG10:.6f}")
    bi_lines = [
        f"{lp / LOG10:.6f}\t{_arpa_word(token_list[v], False)} {_arpa_word(token_list[w], True)}"
        for (v, w), lp in sorted(bigram_logp.items())
    ]
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"\\data\\\nngram 1={len(uni_lines)}\nngram 2={len(bi_lines)}\n\n")
        f.write("\\1-grams:\n" + "\n".join(uni_lines) + "\n\n")
        f.write("\\2-grams:\n" + "\n".join(bi_lines) + "\n\n\\end\\\n")


@typechecked
def read_arpa(
    path: Union[str, Path], token_list: Sequence[str]
) -> Tuple[torch.Tensor, torch.Tensor, Dict[Tuple[int, int], float]]:
    """Read an ARPA file of order <= 2 into natural-log tables indexed by ``token_list`` ids.

    Vocabulary tokens missing from the file take the ``<unk>`` probability (kenlm's
    convention); a missing ``<unk>`` in that case is an error naming the token.
    """
    index = {tok: i for i, tok in enumerate(token_list)}
    sos_eos = index.get(SOS_EOS)
    if sos_eos is None:
        raise ValueError(f"token list has no {SOS_EOS}")
    uni: Dict[int, float] = {}
    bow: Dict[int, float] = {}
    bigrams: Dict[Tuple[int, int], float] = {}
    section = None
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("ngram ") or line == "\\data\\":
                continue
            if line.startswith("\\"):
                section = line
                if section not in ("\\1-grams:", "\\2-grams:", "\\end\\"):
                    raise ValueError(f"{path}:{lineno}: only 2-gram ARPA is supported ({line})")
                continue
            fields = line.split()
            if section == "\\1-grams:":
                word = fields[1]
                ids = [sos_eos] if word in (ARPA_BOS, ARPA_EOS) else [index.get(word)]
                if ids[0] is None:
                    raise ValueError(f"{path}:{lineno}: word {word!r} not in token list")
                if word != ARPA_BOS:
                    uni[ids[0]] = float(fields[0]) * LOG10
                if word != ARPA_EOS:
                    bow[ids[0]] = float(fields[2]) * LOG10 if len(fields) > 2 else 0.0
            elif section == "\\2-grams:":
                v, w = fields[1], fields[2]
                vi = sos_eos if v == ARPA_BOS else index.get(v)
                wi = sos_eos if w == ARPA_EOS else index.get(w)
                if vi is None or wi is None:
                    raise ValueError(f"{path}:{lineno}: bigram {v} {w} not in token list")
                bigrams[(vi, wi)] = float(fields[0]) * LOG10
    unk = uni.get(index.get("<unk>", -1))
    unigram = torch.empty(len(token_list), dtype=torch.float64)
    for i, tok in enumerate(token_list):
        if i in uni:
            unigram[i] = uni[i]
        elif unk is not None:
            unigram[i] = unk
        else:
            raise ValueError(f"{path}: token {tok!r} has no unigram and there is no <unk>")
    backoff = torch.tensor([bow.get(i, 0.0) for i in range(len(token_list))], dtype=torch.float64)
    return unigram, backoff, bigrams


class BigramLM(AbsLM):
    """A 2-gram LM (ARPA) as an ESPnet LM: batch scorer for beam search and ``forward`` for
    perplexity through ``ESPnetLanguageModel``. Stateless: scores depend on the last token."""

    @typechecked
    def __init__(self, arpa_file: Union[str, Path], token_list: Sequence[str]):
        super().__init__()
        unigram, backoff, bigrams = read_arpa(arpa_file, token_list)
        self.vocab_size = len(token_list)
        self.register_buffer("unigram_logp", unigram.float())
        self.register_buffer("backoff_logw", backoff.float())
        # Seen bigrams as a CSR-style correction on top of the back-off row: a row is
        # backoff[v] + unigram + correction[v], made dense only for the rows being scored.
        entries = sorted(bigrams.items())
        rows = torch.tensor([v for (v, _), _ in entries], dtype=torch.long)
        cols = torch.tensor([w for (_, w), _ in entries], dtype=torch.long)
        logp = torch.tensor([lp for _, lp in entries], dtype=torch.float64)
        delta = logp - (backoff[rows] + unigram[cols]) if entries else logp
        row_ptr = torch.zeros(self.vocab_size + 1, dtype=torch.long)
        row_ptr[1:] = torch.bincount(rows, minlength=self.vocab_size).cumsum(0)
        self.register_buffer("_row_ptr", row_ptr)
        self.register_buffer("_cols", cols)
        self.register_buffer("_delta", delta.float())

    def log_probs(self, history: torch.Tensor) -> torch.Tensor:
        """Next-token log-probabilities (..., V) for last-token ids ``history`` (...)."""
        flat = history.reshape(-1)
        out = self.backoff_logw[flat].unsqueeze(-1) + self.unigram_logp.unsqueeze(0)
        start, end = self._row_ptr[flat], self._row_ptr[flat + 1]
        counts = end - start
        total = int(counts.sum())
        if total:
            which = torch.repeat_interleave(torch.arange(flat.numel(), device=flat.device), counts)
            offset = torch.arange(total, device=flat.device) - torch.repeat_interleave(
                counts.cumsum(0) - counts, counts)
            idx = start[which] + offset
            out[which, self._cols[idx]] += self._delta[idx]
        return out.view(*history.shape, self.vocab_size)

    def forward(self, input: torch.Tensor, hidden=None) -> Tuple[torch.Tensor, None]:
        return self.log_probs(input), None

    def score(self, y: torch.Tensor, state, x: torch.Tensor):
        return self.log_probs(y[-1:])[0], None

    def batch_score(self, ys: torch.Tensor, states: List, xs: torch.Tensor):
        return self.log_probs(ys[:, -1]), None


@typechecked
def read_token_ids(
    text_file: Union[str, Path],
    token_list: Sequence[str],
    token_type: str = "char",
    bpemodel: Optional[str] = None,
    cleaner: Optional[str] = None,
    non_linguistic_symbols: Optional[str] = None,
) -> Tuple[List[str], List[List[int]], int]:
    """Tokenise an ESPnet ``text`` file (``uttid text``) exactly like LM training (ESPnet's
    CommonPreprocessor). Returns ``(utt_ids, token_ids, skipped)``; utterances without text
    are skipped, logged and counted."""
    import logging

    import numpy as np
    from tqdm import tqdm

    from espnet2.train.preprocessor import CommonPreprocessor

    prep = CommonPreprocessor(train=False, token_type=token_type, token_list=list(token_list),
                              bpemodel=bpemodel, text_cleaner=cleaner,
                              non_linguistic_symbols=non_linguistic_symbols)
    utts, sentences, skipped = [], [], 0
    with open(text_file, encoding="utf-8") as f:
        for lineno, line in enumerate(tqdm(f, desc=f"tokenise {Path(text_file).name}",
                                           mininterval=5), 1):
            parts = line.rstrip("\n").split(maxsplit=1)
            if len(parts) < 2:
                skipped += 1
                logging.warning(f"{text_file}:{lineno}: no text for utterance "
                                f"{parts[0] if parts else '(empty line)'}; skipped")
                continue
            ids = prep(parts[0], {"text": parts[1]})["text"]
            utts.append(parts[0])
            sentences.append(np.asarray(ids).tolist())
    if skipped:
        logging.warning(f"{text_file}: skipped {skipped} utterances without text")
    return utts, sentences, skipped


def read_token_list(token_list_file: Union[str, Path]) -> List[str]:
    """Token list whose last entry must be ``<sos/eos>`` (ESPnet LM convention: sos = eos = V-1)."""
    token_list = _read_tokens(token_list_file)
    if not token_list or token_list[-1] != SOS_EOS:
        raise ValueError(f"{token_list_file}: last token must be {SOS_EOS} (ESPnet LM convention)")
    return token_list


@typechecked
def train_bigram(
    text_file: Union[str, Path],
    token_list_file: Union[str, Path],
    output_arpa: Union[str, Path],
    token_type: str = "char",
    bpemodel: Optional[str] = None,
    cleaner: Optional[str] = None,
    non_linguistic_symbols: Optional[str] = None,
    discount: Optional[float] = None,
) -> Dict[str, float]:
    """Tokenise ``text_file`` like LM training and write the KN 2-gram as ARPA."""
    token_list = read_token_list(token_list_file)
    _, sentences, skipped = read_token_ids(text_file, token_list, token_type, bpemodel, cleaner,
                                           non_linguistic_symbols)
    uni, bow, bi, info = estimate_bigram_kn(sentences, len(token_list), len(token_list) - 1,
                                            discount)
    write_arpa(output_arpa, token_list, uni, bow, bi)
    info.update(num_sentences=float(len(sentences)), skipped=float(skipped))
    return info


def main(cmd: Optional[List[str]] = None) -> None:
    """Former CLI location; the entry point is :mod:`espnet_ext.bin.ngram_lm_train`."""
    from espnet_ext.bin.ngram_lm_train import main as bin_main

    bin_main(cmd)


if __name__ == "__main__":
    main()
