"""ARPA files of order <= 2 for token-id LMs: ``<sos/eos>`` of the token list is written as
``<s>`` (history) and ``</s>`` (target); log10 in the file, natural log in memory."""
import math
from pathlib import Path
from typing import Dict, Sequence, Tuple, Union

import torch
from typeguard import typechecked

from espnet_ext.utils.tokens import SOS_EOS

ARPA_BOS, ARPA_EOS = "<s>", "</s>"
LOG10 = math.log(10.0)


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
