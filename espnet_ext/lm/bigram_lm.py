"""A 2-gram LM read from an ARPA file, scored as an ESPnet LM (the DR-2gram density ratio)."""
from pathlib import Path
from typing import List, Sequence, Tuple, Union

import torch
from espnet2.lm.abs_model import AbsLM
from typeguard import typechecked

from espnet_ext.lm.arpa import read_arpa


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
