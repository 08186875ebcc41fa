"""Beam search batched over utterances: B utterances x beam hypotheses advance together.

ESPnet's ``BatchBeamSearch`` batches the hypotheses of one utterance only, so decoding a test set
costs one Python loop per utterance and tiny matrix products. Here every step scores the running
hypotheses of all utterances of a batch in one ``batch_score`` call per scorer and takes, per
utterance, the top ``beam`` of ``running x V`` weighted sums.

Scorers are ESPnet ``ScorerInterface`` objects with weights (decoder 1.0, LM ``w``, an internal LM
``-w``, ...). Their states are lists with one entry per hypothesis, selected with the scorer's own
``select_state`` (the ``BatchBeamSearch`` convention), so stock decoders and LMs work unchanged.
Each scorer's log-probabilities are clamped at ``score_floor`` before weighting, so a ``-inf`` times
a negative weight cannot turn into ``+inf``/NaN.

Two length modes:

- fixed (CIF): utterance ``b`` gets exactly ``fixed_lengths[b]`` tokens; then ``<eos>`` is scored by
  every scorer and appended. EOS is masked out before that step, everything but EOS at it.
  Finished utterances leave the batch. ``fixed_lengths[b] == 0`` gives ``[sos, eos]``.
- free (attention encoder-decoder): ESPnet ``BatchBeamSearch`` semantics per utterance: hypotheses
  choosing ``<eos>`` end (and are dropped before ``minlen``), an unscored ``<eos>`` is appended at
  ``maxlen``, end detection when ``maxlenratio == 0``. One deliberate difference: a hypothesis that
  chose ``<eos>`` at the last step keeps a single ``<eos>`` (ESPnet appends a second one).

Per-utterance and batched decoding give the same 1-best: every row of every tensor depends on its
own utterance only (padded memories are masked, see :func:`_score_batch`), and the top-k breaks
ties deterministically (higher score first, then lower hypothesis/token index).
"""
import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from espnet.nets.beam_search import Hypothesis
from espnet.nets.e2e_asr_common import end_detect
from espnet.nets.pytorch_backend.nets_utils import make_pad_mask
from espnet.nets.pytorch_backend.transformer.mask import subsequent_mask
from espnet.nets.scorer_interface import (
    BatchScorerInterface,
    PartialScorerInterface,
    ScorerInterface,
)
from typeguard import typechecked

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


def _memory_decoder_class():
    # ESPnet decoders with cross-attention whose batch_score cannot take a memory mask.
    try:
        from espnet2.asr.decoder.transformer_decoder import BaseTransformerDecoder
    except ImportError:  # pragma: no cover - espnet always ships it
        return ()
    return (BaseTransformerDecoder,)


def _score_batch(
    scorer: BatchScorerInterface,
    ys: torch.Tensor,
    states: List[Any],
    xs: torch.Tensor,
    xlens: torch.Tensor,
) -> Tuple[torch.Tensor, List[Any]]:
    """``scorer.batch_score`` for hypotheses whose memories ``xs`` have different lengths.

    ESPnet transformer decoders' ``batch_score`` attends to the whole ``xs`` (no memory mask),
    which would let padding change a short utterance's scores; for them the same one-step call is
    made with the padding mask. Other batch scorers (LMs, the CIF decoder, ILMs) get ``xs`` as is
    and must not depend on its padding.
    """
    if isinstance(scorer, _memory_decoder_class()) and bool((xlens < xs.size(1)).any()):
        n_layers = len(scorer.decoders)
        cache = None
        if states[0] is not None:
            cache = [torch.stack([s[i] for s in states]) for i in range(n_layers)]
        ys_mask = subsequent_mask(ys.size(-1), device=ys.device).unsqueeze(0)
        memory_mask = (~make_pad_mask(xlens, maxlen=xs.size(1)))[:, None, :].to(xs.device)
        logp, new_cache = scorer.forward_one_step(ys, ys_mask, xs, memory_mask, cache=cache)
        return logp, [[c[b] for c in new_cache] for b in range(ys.size(0))]
    return scorer.batch_score(ys, states, xs)


def _reset_encoder_cache(scorer: ScorerInterface) -> None:
    # espnet2 RNNDecoder's attention caches the projected encoder output of the last utterance.
    for att in getattr(scorer, "att_list", []):
        if hasattr(att, "reset"):
            att.reset()


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
    ):
        """Scorers with weight 0 are dropped (as in ESPnet); negative weights are allowed."""
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
        logger.info("beam search scorers: " + ", ".join(f"{k} x {w:g}" for k, w in self.weights.items()))

    # ------------------------------------------------------------------ scoring
    def _init_states(self, xs: torch.Tensor, xlens: torch.Tensor) -> Dict[str, List[Any]]:
        states = {}
        for name, scorer in self.scorers.items():
            per_utt = []
            for b in range(xs.size(0)):
                x = xs[b, : int(xlens[b])]
                if isinstance(scorer, BatchScorerInterface):
                    per_utt.append(scorer.batch_init_state(x))
                else:
                    _reset_encoder_cache(scorer)
                    per_utt.append(scorer.init_state(x))
            states[name] = per_utt
        return states

    def _score(
        self,
        ys: torch.Tensor,
        states: Dict[str, List[Any]],
        xs: torch.Tensor,
        xlens: torch.Tensor,
        utt_of_hyp: torch.Tensor,
    ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor], Dict[str, List[Any]]]:
        """Weighted sum (n, V) plus clamped per-scorer log-probs and new per-hyp states."""
        xs_h = xs.index_select(0, utt_of_hyp)
        xlens_h = xlens.index_select(0, utt_of_hyp)
        acc_dtype = torch.float64 if xs.dtype == torch.float64 else torch.float32
        weighted = torch.zeros(ys.size(0), self.vocab_size, dtype=acc_dtype, device=xs.device)
        scores, new_states = {}, {}
        for name, scorer in self.scorers.items():
            if isinstance(scorer, BatchScorerInterface):
                logp, st = _score_batch(scorer, ys, states[name], xs_h, xlens_h)
            else:
                logp, st = self._score_per_hyp(scorer, ys, states[name], xs, xlens, utt_of_hyp)
            if logp.shape != weighted.shape:
                raise ValueError(f"beam search: scorer {name!r} returned {tuple(logp.shape)}, "
                                 f"expected {tuple(weighted.shape)} (vocabulary mismatch?)")
            logp = logp.to(acc_dtype).clamp(min=self.score_floor)
            weighted += self.weights[name] * logp
            scores[name], new_states[name] = logp, st
        return weighted, scores, new_states

    @staticmethod
    def _score_per_hyp(scorer, ys, states, xs, xlens, utt_of_hyp):
        # Non-batch scorers (e.g. espnet2 RNNDecoder) see each hypothesis with its own unpadded x.
        out, new_states, last_utt = [], [], None
        for j in range(ys.size(0)):
            b = int(utt_of_hyp[j])
            if b != last_utt:
                _reset_encoder_cache(scorer)
                last_utt = b
            logp, st = scorer.score(ys[j], states[j], xs[b, : int(xlens[b])])
            out.append(logp)
            new_states.append(st)
        return torch.stack(out), new_states

    def _select(self, name: str, states: List[Any], rows: Sequence[int]) -> List[Any]:
        scorer = self.scorers[name]
        if isinstance(scorer, BatchScorerInterface):
            return [scorer.select_state(states, r) for r in rows]
        return [states[r] for r in rows]

    # ------------------------------------------------------------------ search
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
        V, K = self.vocab_size, self.beam_size

        # Running set: utterances `active` (original indices), k slots each, row-major flat slots.
        active = [b for b in range(B) if maxlens[b] > 0]
        for b in range(B):
            if maxlens[b] <= 0:
                logger.warning(f"beam search: utterance {b} has max length 0; no hypothesis")
        if not active:
            return results
        act = torch.tensor(active, device=device)
        xs_a, xlens_a = self._trim(xs.index_select(0, act), xlens.index_select(0, act))
        k = 1
        yseq = torch.full((len(active), 1), self.sos, dtype=torch.long, device=device)
        acc_dtype = torch.float64 if xs.dtype == torch.float64 else torch.float32
        score = torch.zeros(len(active), 1, dtype=acc_dtype, device=device)
        part = {n: torch.zeros_like(score) for n in self.scorers}
        alive = torch.ones(len(active), 1, dtype=torch.bool, device=device)
        states = self._init_states(xs_a, xlens_a)

        step = 0  # number of tokens in the prefix after sos
        while active:
            n_act = len(active)
            alive_flat = alive.view(-1)
            rows = alive_flat.nonzero().view(-1)  # flat slot ids of alive hyps
            utt_of_hyp = torch.div(rows, k, rounding_mode="floor")
            weighted, logps, new_states = self._score(
                yseq.index_select(0, rows), states, xs_a, xlens_a, utt_of_hyp
            )
            total = torch.full((n_act * k, V), float("-inf"), dtype=acc_dtype, device=device)
            total[rows] = weighted + score.view(-1)[rows, None]
            total = total.view(n_act, k, V)
            if fixed:
                pos = torch.tensor([int(fixed_lengths[b]) for b in active], device=device)
                at_end = (pos == step)[:, None, None]
                is_eos = torch.zeros(V, dtype=torch.bool, device=device)
                is_eos[self.eos] = True
                banned = torch.where(at_end, ~is_eos, is_eos)
                total = total.masked_fill(banned, float("-inf"))
            k_new = min(K, k * V)
            top, flat = topk_deterministic(total.view(n_act, k * V), k_new)
            prev_slot = torch.div(flat, V, rounding_mode="floor")  # (n_act, k_new) within utterance
            token = flat % V
            src = (torch.arange(n_act, device=device)[:, None] * k + prev_slot).view(-1)
            # map source slots to rows of the scored (alive) hyps
            row_of_slot = torch.full((n_act * k,), -1, dtype=torch.long, device=device)
            row_of_slot[rows] = torch.arange(rows.numel(), device=device)
            src_row = row_of_slot[src]
            new_alive = (top > float("-inf")).view(-1) & (src_row >= 0)

            yseq = torch.cat([yseq.index_select(0, src), token.view(-1, 1)], dim=1)
            score = top
            tok_flat = token.view(-1)
            gather_row = src_row.clamp(min=0)
            for n in self.scorers:
                gained = logps[n][gather_row, tok_flat]
                part[n] = part[n].view(-1)[src].view(n_act, k_new) + gained.view(n_act, k_new)
            k = k_new
            alive = new_alive.view(n_act, k)
            step += 1

            # --- ends: eos chosen, maxlen reached (fixed mode: the eos step is the last)
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
            done_utts = []
            for a, b in enumerate(active):
                finished = at_max[a] or not any_alive[a]
                if not finished and not fixed and maxlenratio == 0.0 and ended[b]:
                    finished = end_detect([h.asdict() for h in ended[b]], step - 1)
                if finished:
                    done_utts.append(a)
            if done_utts:
                done_set = set(done_utts)
                keep = [a for a in range(n_act) if a not in done_set]
                for a in done_utts:
                    b = active[a]
                    hyps = sorted(ended[b], key=lambda h: float(h.score), reverse=True)
                    if not hyps:
                        logger.warning(f"beam search: utterance {b} ended without hypothesis")
                    results[b] = hyps[:nbest]
                    ended[b] = []
                active = [active[a] for a in keep]
                if not active:
                    break
                keep_t = torch.tensor(keep, device=device)
                slots = (keep_t[:, None] * k + torch.arange(k, device=device)[None]).view(-1)
                yseq, score = yseq.index_select(0, slots), score.index_select(0, keep_t)
                part = {n: v.index_select(0, keep_t) for n, v in part.items()}
                alive = alive.index_select(0, keep_t)
                xs_a, xlens_a = self._trim(xs_a.index_select(0, keep_t), xlens_a.index_select(0, keep_t))
                src_row = src_row.view(n_act, k).index_select(0, keep_t).view(-1)
                alive_keep = alive.view(-1)
            else:
                alive_keep = alive.view(-1)
            # states of the hyps that stay alive, in flat slot order
            sel_rows = src_row[alive_keep].tolist()
            states = {n: self._select(n, new_states[n], sel_rows) for n in self.scorers}
        return results

    @staticmethod
    def _trim(xs: torch.Tensor, xlens: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Drop padding beyond the longest remaining utterance (less work, same result)."""
        t = max(int(xlens.max()), 1) if xlens.numel() else 1
        return xs[:, :t], xlens

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
