"""Beam search batched over utterances: B utterances x beam hypotheses advance together.

ESPnet's ``BatchBeamSearch`` batches the hypotheses of one utterance only, so decoding a test set
costs one Python loop per utterance and tiny matrix products. Here every step scores the running
hypotheses of all utterances of a batch with one call per scorer and takes, per utterance, the top
``beam`` of ``running x V`` weighted sums.

Scorers are ESPnet ``ScorerInterface`` objects with weights (decoder 1.0, LM ``w``, an internal LM
``-w``, ...), reached through :mod:`espnet_ext.asr.incremental_decoding`: stock batch scorers keep
their own ``batch_score``/``select_state`` and per-hypothesis state lists (the ``BatchBeamSearch``
convention), ESPnet transformer decoders and the CIF decoder run incrementally (cached keys/values).
Each scorer's log-probabilities are clamped at ``score_floor`` before weighting, so a ``-inf`` times
a negative weight cannot turn into ``+inf``/NaN.

Two length modes:

- fixed (CIF): utterance ``b`` gets exactly ``fixed_lengths[b]`` tokens; then ``<eos>`` is scored by
  every scorer and appended. EOS is masked out before that step, everything but EOS at it.
  Finished utterances leave the batch. ``fixed_lengths[b] == 0`` gives ``[sos, eos]``. For CIF,
  ``fixed_lengths`` is :func:`espnet_ext.asr.cif.tokens_before_eos` of the fire counts: the
  ``<eos>`` step reads the last integrated vector, as in training.
- free (attention encoder-decoder): ESPnet ``BatchBeamSearch`` semantics per utterance: hypotheses
  choosing ``<eos>`` end (and are dropped before ``minlen``), an unscored ``<eos>`` is appended at
  ``maxlen``, end detection when ``maxlenratio == 0``. One deliberate difference: a hypothesis that
  chose ``<eos>`` at the last step keeps a single ``<eos>`` (ESPnet appends a second one).

Per-utterance and batched decoding give the same 1-best: every row of every computation depends
on its own utterance only (memories are masked or used per utterance), and the top-k breaks ties
deterministically (higher score first, then lower hypothesis/token index).
"""
import logging
from typing import Dict, List, Optional, Tuple

import torch
from espnet.nets.beam_search import Hypothesis
from espnet.nets.e2e_asr_common import end_detect
from espnet.nets.scorer_interface import PartialScorerInterface, ScorerInterface
from typeguard import typechecked

from espnet_ext.asr.incremental_decoding import Layout, step_scorer

logger = logging.getLogger(__name__)


def topk_deterministic(scores: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Row-wise top ``k`` of ``scores`` (R, C), sorted by value desc, ties by lower column first.

    ``torch.topk`` gives no guarantee on which of several equal values it keeps; the boundary
    value's ties are resolved here by column index, so the result only depends on the row itself.
    """
    if torch.isnan(scores).any():
        raise FloatingPointError("beam search: NaN in weighted scores (a scorer produced NaN)")
    vals = scores.topk(k, dim=1).values
    threshold = vals[:, -1:]
    above = scores > threshold
    n_missing = k - above.sum(dim=1, keepdim=True)
    ties = scores == threshold
    take = above | (ties & (ties.cumsum(dim=1) <= n_missing))
    cols = take.nonzero()[:, 1].view(scores.size(0), k)  # ascending columns per row
    picked = scores.gather(1, cols)
    order = torch.sort(picked, dim=1, descending=True, stable=True).indices
    return picked.gather(1, order), cols.gather(1, order)


class UtteranceBatchBeamSearch(torch.nn.Module):
    """Beam search over a batch of utterances with weighted ESPnet scorers."""

    @typechecked
    def __init__(
        self,
        scorers: Dict[str, ScorerInterface],
        weights: Dict[str, float],
        beam_size: int,
        vocab_size: int,
        sos: int,
        eos: int,
        token_list: Optional[List[str]] = None,
        score_floor: float = -1e4,
        cached_scorers: bool = True,
    ):
        """Scorers with weight 0 are dropped (as in ESPnet); negative weights are allowed.

        ``cached_scorers``: run supported decoders incrementally (see incremental_decoding);
        False uses every scorer's own ``batch_score``/``score``.
        """
        super().__init__()
        missing = set(scorers) - set(weights)
        if missing:
            raise ValueError(f"beam search: no weight for scorer(s) {sorted(missing)}")
        if beam_size < 1:
            raise ValueError(f"beam search: beam_size must be >= 1, got {beam_size}")
        self.scorers: Dict[str, ScorerInterface] = {}
        self.weights: Dict[str, float] = {}
        modules = {}
        for name, scorer in scorers.items():
            w = float(weights[name])
            if scorer is None or w == 0.0:
                logger.info(f"beam search: scorer {name!r} dropped (weight {w})")
                continue
            if isinstance(scorer, PartialScorerInterface):
                raise TypeError(f"beam search: partial scorer {name!r} ({type(scorer).__name__}) is "
                                "not supported; use full-vocabulary scorers")
            if not isinstance(scorer, ScorerInterface):
                raise TypeError(f"beam search: scorer {name!r} is not an ESPnet ScorerInterface")
            self.scorers[name] = scorer
            self.weights[name] = w
            if isinstance(scorer, torch.nn.Module):
                modules[name] = scorer
        self.nn_dict = torch.nn.ModuleDict(modules)  # so .to()/.eval() reach the scorers
        self.beam_size = beam_size
        self.vocab_size = vocab_size
        self.sos = sos
        self.eos = eos
        self.token_list = token_list
        self.score_floor = score_floor
        self.cached_scorers = cached_scorers
        logger.info("beam search scorers: " + ", ".join(
            f"{k} x {w:g} ({type(step_scorer(self.scorers[k], cached_scorers)).__name__})"
            for k, w in self.weights.items()))

    @torch.no_grad()
    def forward(
        self,
        xs: torch.Tensor,
        xlens: torch.Tensor,
        fixed_lengths: Optional[torch.Tensor] = None,
        maxlenratio: float = 0.0,
        minlenratio: float = 0.0,
        nbest: int = 1,
    ) -> List[List[Hypothesis]]:
        """Decode ``xs`` (B, T, D) with valid lengths ``xlens`` (B,).

        ``fixed_lengths`` (B,) selects the fixed-length mode; otherwise ``maxlenratio``/``minlenratio``
        follow ESPnet (0: maxlen = T_b with end detection; > 0: ratio of T_b; < 0: constant).
        Returns per utterance up to ``nbest`` hypotheses, best first; ``yseq`` holds sos ... eos.
        """
        B = xs.size(0)
        device = xs.device
        xlens = xlens.to(device=device, dtype=torch.long)
        if xlens.shape != (B,):
            raise ValueError(f"beam search: xlens must have shape ({B},), got {tuple(xlens.shape)}")
        fixed = fixed_lengths is not None
        if fixed:
            fixed_lengths = fixed_lengths.to(device="cpu", dtype=torch.long)
            if fixed_lengths.shape != (B,) or bool((fixed_lengths < 0).any()):
                raise ValueError(f"beam search: fixed_lengths must be (B,) >= 0, got {fixed_lengths}")
            maxlens = (fixed_lengths + 1).tolist()
            minlens = [0] * B
        else:
            maxlens, minlens = self._length_bounds(xlens.cpu(), maxlenratio, minlenratio)

        results: List[List[Hypothesis]] = [[] for _ in range(B)]
        ended: List[List[Hypothesis]] = [[] for _ in range(B)]
        for b in range(B):
            if maxlens[b] <= 0:
                logger.warning(f"beam search: utterance {b} has max length 0; no hypothesis")
        active = [b for b in range(B) if maxlens[b] > 0]
        if not active:
            return results
        V, K = self.vocab_size, self.beam_size
        acc_dtype = torch.float64 if xs.dtype == torch.float64 else torch.float32
        runners = {n: step_scorer(s, self.cached_scorers) for n, s in self.scorers.items()}
        act = torch.tensor(active, device=device)
        states = {n: r.select(r.init(xs, xlens), act) for n, r in runners.items()}

        # Running hypotheses: `k` slots per active utterance, utterance-major, flat slot ids.
        k = 1
        yseq = torch.full((len(active), 1), self.sos, dtype=torch.long, device=device)
        score = torch.zeros(len(active), 1, dtype=acc_dtype, device=device)
        part = {n: torch.zeros_like(score) for n in self.scorers}  # unweighted sums per scorer
        alive = torch.ones(len(active), 1, dtype=torch.bool, device=device)
        is_eos = torch.zeros(V, dtype=torch.bool, device=device)
        is_eos[self.eos] = True
        step = 0  # tokens after <sos> in the running prefixes
        while active:
            n_act = len(active)
            rows = alive.view(-1).nonzero().view(-1)  # slots of the hypotheses scored now
            layout = Layout(utt=act.index_select(0, torch.div(rows, k, rounding_mode="floor")),
                            active=act, k=k, slots=rows, cache={})
            ys = yseq.index_select(0, rows)
            weighted = torch.zeros(rows.numel(), V, dtype=acc_dtype, device=device)
            logps, new_states = {}, {}
            for name, runner in runners.items():
                logp, new_states[name] = runner.score(ys, states[name], layout)
                if logp.shape != weighted.shape:
                    raise ValueError(f"beam search: scorer {name!r} returned {tuple(logp.shape)}, "
                                     f"expected {tuple(weighted.shape)} (vocabulary mismatch?)")
                logps[name] = logp.to(acc_dtype).clamp(min=self.score_floor)
                weighted += self.weights[name] * logps[name]

            total = torch.full((n_act * k, V), float("-inf"), dtype=acc_dtype, device=device)
            total[rows] = weighted + score.view(-1)[rows, None]
            total = total.view(n_act, k, V)
            if fixed:  # eos only at position N_b, and only eos there
                at_end = torch.tensor([int(fixed_lengths[b]) == step for b in active], device=device)
                total = total.masked_fill(torch.where(at_end[:, None, None], ~is_eos, is_eos), float("-inf"))
            k_new = min(K, k * V)
            top, flat = topk_deterministic(total.view(n_act, k * V), k_new)
            token = flat % V
            src = (torch.arange(n_act, device=device)[:, None] * k
                   + torch.div(flat, V, rounding_mode="floor")).view(-1)  # source slots
            row_of_slot = torch.full((n_act * k,), -1, dtype=torch.long, device=device)
            row_of_slot[rows] = torch.arange(rows.numel(), device=device)
            src_row = row_of_slot[src]  # index into the scored hypotheses (-1: dead source)

            yseq = torch.cat([yseq.index_select(0, src), token.view(-1, 1)], dim=1)
            score = top
            gather = (src_row.clamp(min=0), token.view(-1))
            part = {n: part[n].view(-1)[src].view(n_act, k_new) + logps[n][gather].view(n_act, k_new)
                    for n in self.scorers}
            k = k_new
            alive = ((top > float("-inf")).view(-1) & (src_row >= 0)).view(n_act, k)
            step += 1

            # ends: eos chosen or maxlen reached (fixed mode: the eos step is the last one)
            at_max = [step >= maxlens[b] for b in active]
            chose_eos = token == self.eos
            ending = alive & (chose_eos | torch.tensor(at_max, device=device)[:, None])
            for a, s in ending.nonzero().tolist():
                b = active[a]
                seq = yseq[a * k + s]
                if not bool(chose_eos[a, s]):
                    seq = torch.cat([seq, seq.new_tensor([self.eos])])  # unscored eos at maxlen
                if step - 1 >= minlens[b]:  # ESPnet drops hyps ending before minlen
                    ended[b].append(Hypothesis(
                        yseq=seq, score=score[a, s], scores={n: part[n][a, s] for n in self.scorers}))
            alive = alive & ~ending
            any_alive = alive.any(dim=1).tolist()
            done = []
            for a, b in enumerate(active):
                finished = at_max[a] or not any_alive[a]
                if not finished and not fixed and maxlenratio == 0.0 and ended[b]:
                    finished = end_detect([h.asdict() for h in ended[b]], step - 1)
                if finished:
                    done.append(a)
                    hyps = sorted(ended[b], key=lambda h: float(h.score), reverse=True)
                    if not hyps:
                        logger.warning(f"beam search: utterance {b} ended without hypothesis")
                    results[b], ended[b] = hyps[:nbest], []
            if done:
                keep = [a for a in range(n_act) if a not in set(done)]
                active = [active[a] for a in keep]
                if not active:
                    break
                keep_t = torch.tensor(keep, device=device)
                slots = (keep_t[:, None] * k + torch.arange(k, device=device)[None]).view(-1)
                act = act.index_select(0, keep_t)
                yseq = yseq.index_select(0, slots)
                score, alive = score.index_select(0, keep_t), alive.index_select(0, keep_t)
                part = {n: v.index_select(0, keep_t) for n, v in part.items()}
                src_row = src_row.index_select(0, slots)
            # states of the hypotheses that keep running, in slot order
            sel = src_row[alive.view(-1)]
            states = {n: runners[n].select(new_states[n], sel) for n in runners}
        return results

    @staticmethod
    def _length_bounds(xlens: torch.Tensor, maxlenratio: float, minlenratio: float):
        maxlens, minlens = [], []
        for t in xlens.tolist():
            if maxlenratio == 0:
                maxlens.append(t)
            elif maxlenratio < 0:
                maxlens.append(-1 * int(maxlenratio))
            else:
                maxlens.append(max(1, int(maxlenratio * t)))
            minlens.append(-1 * int(minlenratio) if minlenratio < 0 else int(minlenratio * t))
        return maxlens, minlens
