"""An ESPnet batch scorer that makes stock beam search decode a fixed CIF length.

With it, ``espnet.nets.batch_beam_search.BatchBeamSearch`` over the N integrated CIF vectors of one
utterance yields N-1 tokens and ``<eos>``, exactly the hypotheses the CIF model's own batched search
is allowed to produce; the decoding tests and the decode-speed benchmark use it as the ESPnet
reference.
"""
import torch
from espnet.nets.scorer_interface import BatchScorerInterface


class LengthForcingScorer(BatchScorerInterface):
    """``<eos>`` forbidden (score -1e10) before output step ``n``, the only choice from step ``n`` on.

    Args:
        n: number of tokens before ``<eos>``.
        vocab: vocabulary size.
        eos: id of ``<eos>``.
    """

    def __init__(self, n: int, vocab: int, eos: int):
        self.n, self.vocab, self.eos = n, vocab, eos

    def batch_score(self, ys: torch.Tensor, states, xs: torch.Tensor):
        scores = torch.zeros(ys.size(0), self.vocab, device=ys.device)
        if ys.size(1) - 1 < self.n:  # ys starts with <sos>
            scores[:, self.eos] = -1e10
        else:
            scores[:] = -1e10
            scores[:, self.eos] = 0.0
        return scores, states
