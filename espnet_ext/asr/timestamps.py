"""Token and word times from CIF fire positions (FunASR-style timestamps).

CIF emits a token when the integrated weight crosses the threshold, so the encoder frame at which a
token fires ends it:

    end_k   = (fire_k + 1) * shift                      # shift = seconds per encoder frame
    start_k = end_{k-1}, start_0 = first_weighted * shift

with ``first_weighted`` the first encoder frame whose CIF weight is positive (speech before it
carried no weight: leading silence). ``shift`` is the feature frame shift times the encoder's
subsampling. Word times span their pieces: sentencepiece ``▁`` starts a word, wordpiece ``##``
continues one, a char token list with ``<space>`` splits at it, any other token is a word.

:func:`ctc_alignment_times` gives the usual baseline from a CTC branch: the frames a forced
alignment of the same tokens assigns to each of them.
"""
from typing import List, Optional, Sequence, Tuple

import torch

Span = Tuple[float, float]
SP_SPACE = "\u2581"  # sentencepiece's word-start mark


def first_weighted_frames(alphas: torch.Tensor) -> torch.Tensor:
    """(B,) index of the first frame with a positive CIF weight in ``alphas`` (B, T); 0 if none."""
    positive = alphas > 0
    if positive.size(1) == 0:  # no encoder frames at all
        return torch.zeros(positive.size(0), dtype=torch.long, device=positive.device)
    first = positive.to(torch.int8).argmax(dim=1)  # the first maximum: the first True
    return torch.where(positive.any(dim=1), first, torch.zeros_like(first))


def fire_times(fire_frames: Sequence[int], first_frame: int, shift: float,
               offset: float = 0.0, limit: Optional[float] = None) -> List[Span]:
    """(start, end) seconds of each token from the frames it fired at (in order).

    ``offset`` is added (a segment's start in its recording); ends are capped at ``limit``
    seconds of the input (a rounded subsampling may overshoot the last frame)."""
    times: List[Span] = []
    start = first_frame * shift
    for frame in fire_frames:
        end = max((int(frame) + 1) * shift, start)  # several fires in one frame: zero length
        if limit is not None:
            end = min(end, limit)
            start = min(start, end)
        # Rounded to microseconds: the sums would print as 2.7199999999999998.
        times.append((round(offset + start, 6), round(offset + end, 6)))
        start = end
    return times


def word_spans(tokens: Sequence[str], times: Sequence[Span], token_type: Optional[str],
               space_symbol: Optional[str] = "<space>") -> List[Tuple[str, float, float]]:
    """(word, start, end) from tokens and their times (one per token).

    ``space_symbol``: for char tokens, the token between words (pass None when the token list has
    none, e.g. Mandarin: each character is a word)."""
    if len(tokens) != len(times):
        raise ValueError(f"{len(tokens)} tokens but {len(times)} times")
    words: List[List] = []  # [text, start, end]
    new_word = True
    for tok, (start, end) in zip(tokens, times):
        if token_type == "char" and space_symbol is not None:
            if tok == space_symbol:
                new_word = True
                continue
            starts, text, new_word = new_word, tok, False
        elif token_type == "bpe":
            starts, text = tok.startswith(SP_SPACE) or not words, tok.replace(SP_SPACE, "")
        elif token_type == "hugging_face":
            starts, text = not tok.startswith("##") or not words, tok[2:] if tok.startswith("##") else tok
        else:  # char without spaces, word, phn, ...: every token is a word
            starts, text = True, tok
        if starts:
            words.append([text, start, end])
        else:
            words[-1][0] += text
            words[-1][2] = end
    return [(w, s, e) for w, s, e in words if w]


def ctc_alignment_times(log_probs: torch.Tensor, token_ids: Sequence[int], shift: float,
                        blank: int = 0) -> Optional[List[Span]]:
    """(start, end) seconds of each token from a CTC forced alignment of ``token_ids`` to
    ``log_probs`` (T, V): a token spans the frames the Viterbi path gives it (CTC's peaky
    posteriors make these short). None when the frames cannot hold the tokens (with the blanks
    that repeated tokens need)."""
    import torchaudio.functional as AF

    if not token_ids:
        return []
    repeats = sum(a == b for a, b in zip(token_ids, token_ids[1:]))
    if log_probs.size(0) < len(token_ids) + repeats:
        return None
    targets = torch.tensor([list(token_ids)], dtype=torch.int32)
    path, scores = AF.forced_align(log_probs[None].float().cpu(), targets, blank=blank)
    spans = AF.merge_tokens(path[0], scores[0].exp(), blank=blank)
    if len(spans) != len(token_ids):
        raise RuntimeError(f"forced alignment gave {len(spans)} spans for {len(token_ids)} tokens")
    return [(round(s.start * shift, 6), round(s.end * shift, 6)) for s in spans]
