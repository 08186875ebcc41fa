"""Interpolated Kneser-Ney estimation of the count-based 2-gram LM, the cheap density-ratio
baseline ("DR-2gram").

Smoothing: interpolated Kneser-Ney (Chen & Goodman 1998), one absolute discount per order
estimated from count-of-counts, ``D = n1 / (n1 + 2 n2)``:

    P(w|v)  = max(c(v,w) - D2, 0) / c(v) + D2 * N1+(v .) / c(v) * P1(w)      (c(v) > 0)
    P(w|v)  = P1(w)                                                           (c(v) = 0)
    P1(w)   = max(N1+(. w) - D1, 0) / N1+(. .) + D1 * |{w: N1+(. w) > 0}| / N1+(. .) / V

where N1+(. w) counts distinct left contexts of w (continuation count) and the order-0 model
is uniform over the V ids of the token list. Every row is an exact probability distribution
over the vocabulary (``<sos/eos>`` as a target is the sentence end), so no id gets -inf.

The model is stored as a standard ARPA file (:mod:`espnet_ext.lm.arpa`) and scored by
:class:`espnet_ext.lm.bigram_lm.BigramLM`; ``python -m espnet_ext.bin.ngram_lm_train`` runs
:func:`train_bigram`.
"""
import math
from collections import Counter
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

from typeguard import typechecked

from espnet_ext.lm.arpa import write_arpa
from espnet_ext.utils.tokens import check_sos_eos_last, read_token_ids, read_token_list


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
    check_sos_eos_last(token_list, f"{token_list_file} (2-gram LM)")
    _, sentences, skipped = read_token_ids(text_file, token_list, token_type, bpemodel, cleaner,
                                           non_linguistic_symbols)
    uni, bow, bi, info = estimate_bigram_kn(sentences, len(token_list), len(token_list) - 1,
                                            discount)
    write_arpa(output_arpa, token_list, uni, bow, bi)
    info.update(num_sentences=float(len(sentences)), skipped=float(skipped))
    return info
