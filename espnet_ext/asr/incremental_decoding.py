"""Step scorers for :class:`UtteranceBatchBeamSearch`: the interface and its implementations.

The search talks to every scorer through a :class:`StepScorer`: ``init`` (state of one hypothesis
per utterance), ``score`` (log-probs of the next token for the running hypotheses) and ``select``
(reorder/prune hypothesis states with an index tensor). Implementations:

- :class:`ListStateScorer`: any ESPnet ``BatchScorerInterface`` (decoders, LMs, ILMs) with its own
  ``batch_score``/``select_state`` and per-hypothesis state lists, as ``BatchBeamSearch`` uses them;
- :class:`PerHypothesisScorer`: a plain ``ScorerInterface`` (e.g. espnet2 ``RNNDecoder``), one
  ``score`` call per hypothesis with the hypothesis's own unpadded encoder output;
- :class:`CachedTransformerDecoderScorer` and :class:`CachedCIFDecoderScorer`: ESPnet transformer
  decoders and our CIF decoder computed incrementally. ESPnet's ``batch_score`` recomputes, at
  every step and for every hypothesis, the key/value projections of the whole encoder output
  (cross-attention) and of the whole prefix (self-attention, its cache holds layer outputs).
  Here the encoder keys/values are projected once per utterance and shared by its hypotheses,
  and the self-attention keeps a key/value cache, so a step costs O(prefix + frames) instead of
  O((prefix + frames) x d). Same weights and operations (ESPnet's own modules and
  ``forward_attention``); results equal ``batch_score`` up to float rounding (tested).

:func:`step_scorer` picks the cached implementation when the module has exactly the supported
structure, else the generic one.
"""
import math
from typing import Any, NamedTuple, Optional, Tuple

import torch
from espnet.nets.pytorch_backend.transformer.mask import subsequent_mask
from espnet.nets.scorer_interface import BatchScorerInterface, ScorerInterface


class Layout(NamedTuple):
    """Where the scored hypotheses sit: utterance-major dense slots ``(len(active), k)``.

    utt: (n,) original utterance index of each hypothesis; active: (A,) original indices of the
    running utterances; k: slots per utterance; slots: (n,) slot of each hypothesis in ``A * k``;
    cache: per-step values shared by the scorers (e.g. the per-hypothesis memories).
    """

    utt: torch.Tensor
    active: torch.Tensor
    k: int
    slots: torch.Tensor
    cache: dict


class StepScorer:
    """What the search needs from a scorer."""

    def init(self, xs: torch.Tensor, xlens: torch.Tensor) -> Any:
        """State of B hypotheses, hypothesis b = empty prefix of utterance b."""
        raise NotImplementedError

    def score(self, ys: torch.Tensor, state: Any, layout: Layout) -> Tuple[torch.Tensor, Any]:
        """Log-probs (n, V) of the token after prefixes ``ys`` (n, L) incl. <sos>; new state."""
        raise NotImplementedError

    def select(self, state: Any, rows: torch.Tensor) -> Any:
        """State of the hypotheses ``rows`` (indices into the last scored hypotheses)."""
        raise NotImplementedError


def _valid(xlens: torch.Tensor, t: int) -> torch.Tensor:
    """(B, t) True on valid frames (make_pad_mask fails for t == 0)."""
    return torch.arange(t, device=xlens.device)[None, :] < xlens[:, None]


def _decoder_memory_class():
    from espnet2.asr.decoder.transformer_decoder import BaseTransformerDecoder

    return BaseTransformerDecoder


class ListStateScorer(StepScorer):
    """ESPnet ``BatchScorerInterface``: ``batch_score`` on each hypothesis's own (padded) memory."""

    def __init__(self, scorer: BatchScorerInterface):
        self.scorer = scorer

    def init(self, xs, xlens):
        self.xs, self.xlens = xs, xlens
        return [self.scorer.batch_init_state(xs[b, : int(xlens[b])]) for b in range(xs.size(0))]

    def score(self, ys, state, layout):
        key = ("memory", id(self.xs))
        if key not in layout.cache:  # one gather per step, whatever the number of such scorers
            xlens = self.xlens.index_select(0, layout.utt)
            layout.cache[key] = (self.xs.index_select(0, layout.utt)[:, : max(int(xlens.max()), 1)], xlens)
        xs, xlens = layout.cache[key]
        if isinstance(self.scorer, _decoder_memory_class()) and bool((xlens < xs.size(1)).any()):
            return self._masked_transformer_step(ys, state, xs, xlens)
        return self.scorer.batch_score(ys, state, xs)

    def _masked_transformer_step(self, ys, states, xs, xlens):
        # ESPnet transformer decoders' batch_score attends to all of xs (no memory mask), so
        # padding would change short utterances' scores: same one-step call, with the mask.
        dec = self.scorer
        n_layers = len(dec.decoders)
        cache = None
        if states[0] is not None:
            cache = [torch.stack([s[i] for s in states]) for i in range(n_layers)]
        ys_mask = subsequent_mask(ys.size(-1), device=ys.device).unsqueeze(0)
        memory_mask = _valid(xlens, xs.size(1))[:, None, :]
        logp, new_cache = dec.forward_one_step(ys, ys_mask, xs, memory_mask, cache=cache)
        return logp, [[c[b] for c in new_cache] for b in range(ys.size(0))]

    def select(self, state, rows):
        return [self.scorer.select_state(state, r) for r in rows.tolist()]


class PerHypothesisScorer(StepScorer):
    """Plain ``ScorerInterface``: one ``score`` call per hypothesis, unpadded encoder output."""

    def __init__(self, scorer: ScorerInterface):
        self.scorer = scorer

    def _reset_encoder_cache(self):
        # espnet2 RNNDecoder's attention caches the projected encoder output of the last utterance.
        for att in getattr(self.scorer, "att_list", []):
            if hasattr(att, "reset"):
                att.reset()

    def init(self, xs, xlens):
        self.xs, self.xlens = xs, xlens
        states = []
        for b in range(xs.size(0)):
            self._reset_encoder_cache()
            states.append(self.scorer.init_state(xs[b, : int(xlens[b])]))
        return states

    def score(self, ys, state, layout):
        out, new_states, last = [], [], None
        for j, b in enumerate(layout.utt.tolist()):
            if b != last:
                self._reset_encoder_cache()
                last = b
            logp, st = self.scorer.score(ys[j], state[j], self.xs[b, : int(self.xlens[b])])
            out.append(logp)
            new_states.append(st)
        return torch.stack(out), new_states

    def select(self, state, rows):
        return [state[r] for r in rows.tolist()]


# ---------------------------------------------------------------------------------------------
# cached (incremental) transformer computation
# ---------------------------------------------------------------------------------------------
def _heads(att, x: torch.Tensor, linear, norm) -> torch.Tensor:
    """(n, t, d) -> (n, h, t, d_k) projection as MultiHeadedAttention.forward_qkv does it."""
    return norm(linear(x).view(x.size(0), -1, att.h, att.d_k).transpose(1, 2))


def _self_attention_step(att, x: torch.Tensor, cache: Optional[Tuple[torch.Tensor, torch.Tensor]]):
    """Attention of the new position x (n, 1, d) over the cached keys/values plus its own."""
    q = _heads(att, x, att.linear_q, att.q_norm)
    k = _heads(att, x, att.linear_k, att.k_norm)
    v = _heads(att, x, att.linear_v, torch.nn.Identity())
    if cache is not None:
        k = torch.cat([cache[0], k], dim=2)
        v = torch.cat([cache[1], v], dim=2)
    scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(att.d_k)
    return att.forward_attention(v, scores, None), (k, v)


def _memory_attention_step(x: torch.Tensor, att, mem_k, mem_v, mem_mask, layout: Layout):
    """Cross-attention of x (n, 1, d) to its utterance's projected memory (A, h, T, d_k): queries
    are placed in the dense (A, k) slot layout so that every utterance's memory is used as is."""
    A, k = layout.active.numel(), layout.k
    q = _heads(att, x, att.linear_q, att.q_norm)[:, :, 0]  # (n, h, d_k)
    dense = q.new_zeros(A * k, att.h, att.d_k)
    dense[layout.slots] = q
    dense = dense.view(A, k, att.h, att.d_k).transpose(1, 2)  # (A, h, k, d_k)
    scores = torch.matmul(dense, mem_k.transpose(-2, -1)) / math.sqrt(att.d_k)  # (A, h, k, T)
    out = att.forward_attention(mem_v, scores, mem_mask)  # (A, k, d)
    return out.reshape(A * k, -1)[layout.slots].unsqueeze(1)


def _self_attention_block(layer, x: torch.Tensor, cache):
    """The self-attention sub-layer of an ESPnet decoder layer for one new position, with its
    residual and pre/post norm: (output, new key/value cache)."""
    h = layer.norm1(x) if layer.normalize_before else x
    att_out, kv = _self_attention_step(layer.self_attn, h, cache)
    x = x + layer.dropout(att_out)
    return (x if layer.normalize_before else layer.norm1(x)), kv


def _residual_block(layer, norm, x: torch.Tensor, fn, *args) -> torch.Tensor:
    """Another sub-layer of an ESPnet decoder layer: x + dropout(fn(norm(x), *args)) with
    pre-norm, norm(x + dropout(fn(x, *args))) with post-norm."""
    h = norm(x) if layer.normalize_before else x
    x = x + layer.dropout(fn(h, *args))
    return x if layer.normalize_before else norm(x)


def _plain_mha(att) -> bool:
    from espnet.nets.pytorch_backend.transformer.attention import MultiHeadedAttention

    return type(att) is MultiHeadedAttention


class _CachedBase(StepScorer):
    """Per-layer self-attention key/value caches as the state: list of (k, v) (n, h, L, d_k)."""

    def select(self, state, rows):
        if state is None:
            return None
        return [(k.index_select(0, rows), v.index_select(0, rows)) for k, v in state]


class CachedTransformerDecoderScorer(_CachedBase):
    """espnet2 transformer decoders (``BaseTransformerDecoder`` of ``DecoderLayer``s), incremental."""

    def __init__(self, decoder):
        self.decoder = decoder

    @staticmethod
    def supports(decoder) -> bool:
        from espnet.nets.pytorch_backend.transformer.decoder_layer import DecoderLayer

        if not isinstance(decoder, _decoder_memory_class()) or decoder.output_layer is None:
            return False
        return all(
            type(layer) is DecoderLayer and not layer.concat_after and layer.sequential_attn is None
            and _plain_mha(layer.self_attn) and _plain_mha(layer.src_attn)
            for layer in decoder.decoders
        )

    def init(self, xs, xlens):
        self.mem, self.mem_cache = [], {}
        for layer in self.decoder.decoders:
            att = layer.src_attn
            self.mem.append((_heads(att, xs, att.linear_k, att.k_norm),
                             _heads(att, xs, att.linear_v, torch.nn.Identity())))
        self.mem_mask = _valid(xlens.to(xs.device), xs.size(1))[:, None, :]
        self.xlens = xlens
        return None

    def _memory(self, active: torch.Tensor):
        key = tuple(active.tolist())
        if key not in self.mem_cache:
            t = max(int(self.xlens.index_select(0, active).max()), 1)
            self.mem_cache = {key: (
                [(k.index_select(0, active)[:, :, :t], v.index_select(0, active)[:, :, :t]) for k, v in self.mem],
                self.mem_mask.index_select(0, active)[:, :, :t],
            )}
        return self.mem_cache[key]

    def score(self, ys, state, layout):
        dec = self.decoder
        mem, mem_mask = self._memory(layout.active)
        x = dec.embed(ys)[:, -1:]  # position-wise embedding + positional encoding
        new_state = []
        for i, layer in enumerate(dec.decoders):
            x, kv = _self_attention_block(layer, x, None if state is None else state[i])
            new_state.append(kv)
            x = _residual_block(layer, layer.norm2, x, _memory_attention_step, layer.src_attn, *mem[i],
                                mem_mask, layout)
            x = _residual_block(layer, layer.norm3, x, layer.feed_forward)
        y = dec.after_norm(x[:, -1]) if dec.normalize_before else x[:, -1]
        return torch.log_softmax(dec.output_layer(y), dim=-1), new_state


class CachedCIFDecoderScorer(_CachedBase):
    """Our CIF decoder (:class:`CIFDecoder`), incremental: step i sees c_{i-1} and c_i of its
    utterance (zero at and beyond the CIF length)."""

    def __init__(self, decoder):
        self.decoder = decoder

    @staticmethod
    def supports(decoder) -> bool:
        from espnet.nets.pytorch_backend.transformer.encoder_layer import EncoderLayer

        from espnet_ext.asr.decoder.cif_decoder import CIFDecoder

        return type(decoder) is CIFDecoder and all(
            type(layer) is EncoderLayer and not layer.concat_after and _plain_mha(layer.self_attn)
            for layer in decoder.decoders
        )

    def init(self, xs, xlens):
        valid = _valid(xlens.to(xs.device), xs.size(1))
        self.cif = xs * valid[:, :, None].to(xs.dtype)
        return None

    def _cif_at(self, utt: torch.Tensor, i: int) -> torch.Tensor:
        if 0 <= i < self.cif.size(1):
            return self.cif[:, i].index_select(0, utt)
        return self.cif.new_zeros(utt.numel(), self.cif.size(2))

    def score(self, ys, state, layout):
        dec = self.decoder
        i = ys.size(1) - 1
        c_prev, c_cur = self._cif_at(layout.utt, i - 1), self._cif_at(layout.utt, i)
        # x_i = W_in[emb(y_{i-1}) * sqrt(d) ; c_{i-1}] + PE(i), as CIFDecoder._decoder_inputs
        # (pos_enc multiplies by sqrt(d), hence c / sqrt(d)); PE(i) from the position-wise
        # pos_enc applied to a zero-padded sequence whose last row is x.
        x = dec.input_proj(torch.cat([dec.embed(ys[:, -1:]), c_prev[:, None] / dec.pos_enc.xscale], dim=-1))
        x = dec.pos_enc(torch.nn.functional.pad(x, (0, 0, i, 0)))[:, -1:]
        new_state = []
        for j, layer in enumerate(dec.decoders):
            x, kv = _self_attention_block(layer, x, None if state is None else state[j])
            new_state.append(kv)
            x = _residual_block(layer, layer.norm2, x, layer.feed_forward)
        logits, _ = dec._outputs(x[:, -1], c_cur)
        return torch.log_softmax(logits.float(), dim=-1).to(logits.dtype), new_state


def step_scorer(scorer: ScorerInterface, cached: bool = True) -> StepScorer:
    """The :class:`StepScorer` for an ESPnet scorer (cached implementation when supported)."""
    if cached:
        for impl in (CachedTransformerDecoderScorer, CachedCIFDecoderScorer):
            try:
                if impl.supports(scorer):
                    return impl(scorer)
            except ImportError:
                continue
    if isinstance(scorer, BatchScorerInterface):
        return ListStateScorer(scorer)
    return PerHypothesisScorer(scorer)
