"""A scorer wrapper that makes any scorer safe under a negative fusion weight."""
import torch
from espnet.nets.scorer_interface import BatchScorerInterface, ScorerInterface
from typeguard import typechecked

# Log-probabilities of negatively weighted scorers are clamped here: -w * -inf would be +inf.
LOGP_FLOOR = -1.0e4


class ClampedScorer(torch.nn.Module, BatchScorerInterface):
    """Wraps a scorer and clamps its scores at ``floor`` so a negative fusion weight can never
    turn a masked (-inf / -1e10) token into +inf or NaN."""

    @typechecked
    def __init__(self, scorer: ScorerInterface, floor: float = LOGP_FLOOR):
        super().__init__()
        self.scorer = scorer
        self.floor = floor

    def init_state(self, x):
        return self.scorer.init_state(x)

    def batch_init_state(self, x):
        return self.scorer.batch_init_state(x)

    def select_state(self, state, i, new_id=None):
        return self.scorer.select_state(state, i, new_id)

    def score(self, y, state, x):
        s, state = self.scorer.score(y, state, x)
        return s.clamp(min=self.floor), state

    def batch_score(self, ys, states, xs):
        if isinstance(self.scorer, BatchScorerInterface):
            s, states = self.scorer.batch_score(ys, states, xs)
        else:  # per-hypothesis fallback for scorers without batch support
            outs = [self.scorer.score(y, st, x) for y, st, x in zip(ys, states, xs)]
            s, states = torch.stack([o[0] for o in outs]), [o[1] for o in outs]
        return s.clamp(min=self.floor), states

    def final_score(self, state):
        return max(float(self.scorer.final_score(state)), self.floor)
