"""Word timestamp errors against reference word times (the synthesiser's, a CTM).

Hypothesis words are aligned to the reference words by edit distance; a correctly recognised
word contributes the absolute error of its start and of its end. A reference entry ``a+b`` (words
read as one unit: :mod:`espnet_ext.recipe.corpus.word_times`) knows the start of ``a`` and the end
of ``b`` only, so only those are compared.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

WordTime = Tuple[str, float, float]
RefWord = Tuple[str, Optional[float], Optional[float]]  # None: boundary not known


def expand_units(ref: Sequence[WordTime]) -> List[RefWord]:
    """One entry per word; inner boundaries of ``a+b`` units become None."""
    words: List[RefWord] = []
    for unit, start, end in ref:
        parts = unit.split("+")
        for i, w in enumerate(parts):
            words.append((w, start if i == 0 else None, end if i == len(parts) - 1 else None))
    return words


def matched_pairs(hyp: Sequence[str], ref: Sequence[str]) -> List[Tuple[int, int]]:
    """(hyp index, ref index) of the words a minimum edit-distance alignment marks correct
    (ties broken towards matches)."""
    n, m = len(hyp), len(ref)
    cost = np.zeros((n + 1, m + 1), dtype=np.int64)
    cost[:, 0] = np.arange(n + 1)
    cost[0, :] = np.arange(m + 1)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            sub = cost[i - 1, j - 1] + (hyp[i - 1] != ref[j - 1])
            cost[i, j] = min(sub, cost[i - 1, j] + 1, cost[i, j - 1] + 1)
    pairs = []
    i, j = n, m
    while i > 0 and j > 0:
        if hyp[i - 1] == ref[j - 1] and cost[i, j] == cost[i - 1, j - 1]:
            pairs.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif cost[i, j] == cost[i - 1, j - 1] + 1:
            i, j = i - 1, j - 1
        elif cost[i, j] == cost[i - 1, j] + 1:
            i -= 1
        else:
            j -= 1
    return pairs[::-1]


def boundary_errors(hyp: Sequence[WordTime], ref: Sequence[WordTime]) -> Tuple[List[float], List[float]]:
    """(start errors, end errors) in seconds over the correctly recognised words."""
    ref_words = expand_units(ref)
    starts, ends = [], []
    for h, r in matched_pairs([w for w, _, _ in hyp], [w for w, _, _ in ref_words]):
        _, h_start, h_end = hyp[h]
        _, r_start, r_end = ref_words[r]
        if r_start is not None:
            starts.append(abs(h_start - r_start))
        if r_end is not None:
            ends.append(abs(h_end - r_end))
    return starts, ends


def summarize(errors: Sequence[float]) -> Dict[str, Optional[float]]:
    """Mean, median and 90th percentile (seconds) and the count."""
    if not errors:
        return {"n": 0, "mean": None, "median": None, "p90": None}
    e = np.asarray(errors, dtype=np.float64)
    return {"n": int(e.size), "mean": round(float(e.mean()), 4),
            "median": round(float(np.median(e)), 4), "p90": round(float(np.percentile(e, 90)), 4)}
