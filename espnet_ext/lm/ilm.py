"""Decoder-based internal LM (ILM) estimation: the ASR decoder run on the label history with its
acoustic context replaced, used as an ESPnet LM.

The acoustic context is what the decoder receives from the encoder at each label position:
- ESPnet RNN/LAS decoder (``RNNDecoder``): the attention context vector ``c_i``;
- ESPnet transformer decoders: the output of each block's cross-attention (``src_attn``);
- our CIF decoder: the CIF vector ``c_i`` aligned with label ``i``.
ILME-Z replaces it by zeros (Meng et al., SLT 2021); ILME-L by a vector predicted from the label
history by a small learned module (Liu et al., Interspeech 2022; ``context_learner.py``).

:class:`InternalLM` is an ``AbsLM``: ``forward`` gives teacher-forced logits (KD teacher,
perplexity via ``ESPnetLanguageModel``), ``batch_score`` scores hypotheses in beam search.
:class:`ClampedScorer` makes any scorer safe under a negative fusion weight.
"""
import contextlib
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple, Union

import torch
from typeguard import typechecked

from espnet2.asr.decoder.abs_decoder import AbsDecoder
from espnet2.lm.abs_model import AbsLM
from espnet.nets.scorer_interface import BatchScorerInterface, ScorerInterface
from espnet_ext.utils.tokens import SOS_EOS, read_token_list

# Log-probabilities of negatively weighted scorers are clamped here: -w * -inf would be +inf.
LOGP_FLOOR = -1.0e4


class DecoderContextAdapter:
    """Runs one decoder type with an externally given acoustic context.

    ``context_shape`` is ``(K, C)``: K context vectors of size C per label position (K > 1 when
    each transformer block has its own cross-attention). Contexts are ``(B, L, K, C)``.
    """

    context_shape: Tuple[int, int]
    # True when a scoring step reads the contexts of all positions, not just the last one.
    needs_full_context: bool = False

    def __init__(self, decoder: AbsDecoder):
        self.decoder = decoder

    def forward(self, ys_in: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits ``(B, L, V)`` for inputs ``ys_in (B, L)`` (starting with sos)."""
        raise NotImplementedError

    def batch_step(self, ys: torch.Tensor, states: List[Any], ctx: torch.Tensor):
        """Next-token log-probs ``(n, V)`` for prefixes ``ys (n, L)``; ``ctx (n, Lc, K, C)`` holds
        the contexts of the last ``Lc`` positions (all L when ``states[0] is None``)."""
        raise NotImplementedError

    def parameters(self) -> List[torch.nn.Parameter]:
        """Parameters the ILM actually uses (for ILM-related parameter counts)."""
        return list(self.decoder.parameters())


class RNNDecoderAdapter(DecoderContextAdapter):
    """ESPnet ``RNNDecoder`` (LAS): the context enters the first LSTM layer next to the label
    embedding (and the output layer when ``context_residual``); attention is not run."""

    def __init__(self, decoder: AbsDecoder):
        super().__init__(decoder)
        if decoder.num_encs != 1 or decoder.replace_sos:
            raise ValueError("ILM of RNNDecoder supports num_encs=1 and replace_sos=False only")
        self.context_shape = (1, decoder.decoder[0].input_size - decoder.dunits)

    def _cell(self, ey, ctx_t, z_prev, c_prev):
        dec = self.decoder
        z_list, c_list = list(z_prev), list(c_prev)
        z_list, c_list = dec.rnn_forward(torch.cat((ey, ctx_t), dim=-1), z_list, c_list,
                                         z_prev, c_prev)
        h = dec.dropout_dec[-1](z_list[-1])
        if dec.context_residual:
            h = torch.cat((h, ctx_t), dim=-1)
        return h, z_list, c_list

    def forward(self, ys_in, ctx):
        dec = self.decoder
        eys = dec.dropout_emb(dec.embed(ys_in))
        zeros = eys.new_zeros(ys_in.size(0), dec.dunits)
        z_list, c_list = [zeros] * dec.dlayers, [zeros] * dec.dlayers
        outs = []
        for i in range(ys_in.size(1)):
            h, z_list, c_list = self._cell(eys[:, i], ctx[:, i, 0], z_list, c_list)
            outs.append(h)
        return dec.output(torch.stack(outs, dim=1))

    def batch_step(self, ys, states, ctx):
        dec = self.decoder
        if states[0] is None:  # fresh hypotheses: run the whole prefix (normally just <sos>)
            zeros = ctx.new_zeros(ys.size(0), dec.dunits)
            z_list, c_list = [zeros] * dec.dlayers, [zeros] * dec.dlayers
            positions = range(ys.size(1))
        else:
            z_list = [torch.stack([s[0][k] for s in states]) for k in range(dec.dlayers)]
            c_list = [torch.stack([s[1][k] for s in states]) for k in range(dec.dlayers)]
            positions = [ys.size(1) - 1]
        for i in positions:
            ey = dec.dropout_emb(dec.embed(ys[:, i]))
            h, z_list, c_list = self._cell(ey, ctx[:, i - ys.size(1), 0], z_list, c_list)
        logp = torch.log_softmax(dec.output(h), dim=-1)
        new_states = [
            ([z[b] for z in z_list], [c[b] for c in c_list]) for b in range(ys.size(0))
        ]
        return logp, new_states

    def parameters(self):
        # Attention modules are not used once the context is given.
        att = {id(p) for p in self.decoder.att_list.parameters()}
        return [p for p in self.decoder.parameters() if id(p) not in att]


class TransformerDecoderAdapter(DecoderContextAdapter):
    """ESPnet transformer decoders (``BaseTransformerDecoder``): the output of every block's
    cross-attention is replaced by the context (forward hooks, so ESPnet's own layer code runs;
    the cross-attention itself sees a 1-frame dummy memory)."""

    def __init__(self, decoder: AbsDecoder):
        super().__init__(decoder)
        layers = list(decoder.decoders)
        if not layers or not all(hasattr(layer, "src_attn") for layer in layers):
            raise ValueError(f"{type(decoder).__name__}: blocks without src_attn")
        self.context_shape = (len(layers), layers[0].size)

    @contextlib.contextmanager
    def _inject(self, ctx: torch.Tensor):
        def make_hook(k):
            def hook(module, args, out):
                return ctx[:, -out.size(1):, k].to(out.dtype)

            return hook

        handles = [
            layer.src_attn.register_forward_hook(make_hook(k))
            for k, layer in enumerate(self.decoder.decoders)
        ]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def _memory(self, ys):
        dtype = next(self.decoder.parameters()).dtype
        return torch.zeros(ys.size(0), 1, self.context_shape[1], dtype=dtype, device=ys.device)

    def forward(self, ys_in, ctx):
        lens = ys_in.new_full((ys_in.size(0),), ys_in.size(1))
        memory = self._memory(ys_in)
        with self._inject(ctx):
            logits, _ = self.decoder(memory, torch.ones_like(lens), ys_in, lens)
        return logits

    def batch_step(self, ys, states, ctx):
        with self._inject(ctx):
            return self.decoder.batch_score(ys, states, self._memory(ys))

    def parameters(self):
        att = {id(p) for layer in self.decoder.decoders for p in layer.src_attn.parameters()}
        return [p for p in self.decoder.parameters() if id(p) not in att]


class CIFDecoderAdapter(DecoderContextAdapter):
    """Our CIF decoder: the context is the CIF vector c_i (input at i+1 and output at i), given
    to the decoder as its ``xs``/``hs_pad``; ILME-Z is exactly the decoder with zero ``xs``."""

    needs_full_context = True  # its batch_score rebuilds inputs from c_0..c_{L-1}

    def __init__(self, decoder: AbsDecoder):
        super().__init__(decoder)
        self.context_shape = (1, decoder.cif_dim)

    def forward(self, ys_in, ctx):
        lens = ys_in.new_full((ys_in.size(0),), ys_in.size(1))
        return self.decoder(ctx[:, :, 0], None, ys_in, lens)[0]

    def batch_step(self, ys, states, ctx):
        if ctx.size(1) != ys.size(1):
            raise ValueError(f"CIF ILM needs contexts of all {ys.size(1)} positions, "
                             f"got {ctx.size(1)}")
        return self.decoder.batch_score(ys, states, ctx[:, :, 0])


_ADAPTERS: List[Tuple[str, str, type]] = []  # (module, class name, adapter), checked in order


def register_adapter(decoder_module: str, decoder_class: str, adapter: type) -> None:
    """Declare the adapter for a decoder class (by name, so nothing heavy is imported here)."""
    _ADAPTERS.insert(0, (decoder_module, decoder_class, adapter))


register_adapter("espnet2.asr.decoder.rnn_decoder", "RNNDecoder", RNNDecoderAdapter)
register_adapter("espnet2.asr.decoder.transformer_decoder", "BaseTransformerDecoder",
                 TransformerDecoderAdapter)
register_adapter("espnet_ext.asr.decoder.cif_decoder", "CIFDecoder", CIFDecoderAdapter)


def make_adapter(decoder: AbsDecoder) -> DecoderContextAdapter:
    import importlib

    for module, name, adapter in _ADAPTERS:
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
        if isinstance(decoder, cls):
            return adapter(decoder)
    raise NotImplementedError(f"No internal-LM adapter for decoder {type(decoder).__name__}")


class InternalLM(AbsLM):
    """The ASR decoder as an LM with zero (ILME-Z) or learned (ILME-L) acoustic context."""

    @typechecked
    def __init__(self, decoder: AbsDecoder, context_learner: Optional[torch.nn.Module] = None,
                 sos: Optional[int] = None):
        super().__init__()
        self.decoder = decoder
        self.context_learner = context_learner
        self.adapter = make_adapter(decoder)
        self.sos = sos
        if context_learner is not None and tuple(context_learner.context_shape) != tuple(
                self.adapter.context_shape):
            raise ValueError(
                f"context learner predicts {tuple(context_learner.context_shape)} contexts, "
                f"decoder expects {tuple(self.adapter.context_shape)}"
            )

    def contexts(self, ys_in: torch.Tensor) -> torch.Tensor:
        """Contexts ``(B, L, K, C)`` for every position of ``ys_in``."""
        if self.context_learner is None:
            dtype = next(self.decoder.parameters()).dtype
            return ys_in.new_zeros((*ys_in.shape, *self.adapter.context_shape), dtype=dtype)
        return self.context_learner(ys_in)

    def forward(self, input: torch.Tensor, hidden=None) -> Tuple[torch.Tensor, None]:
        """Logits ``(B, L, V)``; ``input`` starts with sos (ESPnet LMs use eos = sos = V-1)."""
        return self.adapter.forward(input, self.contexts(input)), None

    def batch_score(self, ys: torch.Tensor, states: List[Any], xs: torch.Tensor):
        """Beam-search step; ``xs`` (acoustics) is ignored. Per-hypothesis state:
        ``(decoder state, learner state, context history if the decoder needs it)``."""
        n = ys.size(0)
        fresh = states[0] is None
        full = self.adapter.needs_full_context
        if self.context_learner is None:
            ctx = self.contexts(ys if (fresh or full) else ys[:, -1:])
            ctx_states, history = [None] * n, [None] * n
        else:
            ctx, ctx_states = self.context_learner.batch_contexts(
                ys, None if fresh else [s[1] for s in states])
            if full and not fresh:
                ctx = torch.cat([torch.stack([s[2] for s in states]), ctx], dim=1)
            history = list(ctx) if full else [None] * n
        dec_states = [None] * n if fresh else [s[0] for s in states]
        logp, new_dec = self.adapter.batch_step(ys, dec_states, ctx)
        return logp, list(zip(new_dec, ctx_states, history))

    def score(self, y: torch.Tensor, state: Any, x: torch.Tensor):
        logp, states = self.batch_score(y.unsqueeze(0), [state], x.unsqueeze(0))
        return logp[0], states[0]

    def num_ilm_params(self) -> int:
        """ILM-related parameters: decoder parts the ILM runs plus the context learner."""
        n = sum(p.numel() for p in self.adapter.parameters())
        if self.context_learner is not None:
            n += sum(p.numel() for p in self.context_learner.parameters())
        return n


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


def _at(tokens: Sequence[str], i: Optional[int]) -> str:
    return repr(tokens[i]) if i is not None and 0 <= i < len(tokens) else "out of range"


@typechecked
def check_same_tokens(
    asr_tokens: Union[str, Path, Sequence[str]],
    lm_tokens: Union[str, Path, Sequence[str]],
    what: str,
    asr_sos: Optional[int] = None,
    asr_eos: Optional[int] = None,
) -> None:
    """One vocabulary convention for an ASR model and every LM scored with it (ESPnet's): the
    same token list, ``<sos/eos>`` as its last entry, and the ASR model's sos/eos ids (when
    given) equal to V-1.

    ESPnet LMs, and our ILM, DR-LM, 2-gram and DR-KD LMs, hard-wire sos = eos = V-1; an ASR
    model whose sos/eos is another token (e.g. a PLM's ``[SEP]`` through ``sym_sos/sym_eos``)
    would be fused with LMs that start from another history and score another end of sentence.
    ``what`` names both sides (their files); token lists may be tokens.txt paths. Raises
    ValueError.
    """
    asr, lm = read_token_list(asr_tokens), read_token_list(lm_tokens)
    lm_side = f"LM: sos = eos = V-1 = {len(lm) - 1} ({_at(lm, len(lm) - 1)})"
    if asr_sos is not None or asr_eos is not None:
        if asr_sos != len(asr) - 1 or asr_eos != len(asr) - 1:
            raise ValueError(
                f"{what}: the ASR model's sos/eos ids are {asr_sos}/{asr_eos} "
                f"({_at(asr, asr_sos)}/{_at(asr, asr_eos)}), but ESPnet LMs use sos = eos = V-1 "
                f"({lm_side}); the ASR model must use the last token {SOS_EOS} of its token list "
                f"(no sym_sos/sym_eos in its model_conf)"
            )
    if asr != lm:
        diff = next((i for i, (a, b) in enumerate(zip(asr, lm)) if a != b), min(len(asr), len(lm)))
        where = {n: (t.index(SOS_EOS) if SOS_EOS in t else None) for n, t in (("asr", asr), ("lm", lm))}
        raise ValueError(
            f"{what}: token list differs from the ASR model's (sizes {len(asr)} vs {len(lm)}, "
            f"first difference at id {diff}: ASR {_at(asr, diff)}, LM {_at(lm, diff)}; {SOS_EOS} "
            f"at id {where['asr']} vs {where['lm']}; {lm_side}); use the same tokens.txt"
        )
    if not asr or asr[-1] != SOS_EOS:
        raise ValueError(
            f"{what}: {SOS_EOS} must be the last token (ESPnet LMs use sos = eos = V-1 = "
            f"{len(asr) - 1}, here {_at(asr, len(asr) - 1)}; {SOS_EOS} is at id "
            f"{asr.index(SOS_EOS) if SOS_EOS in asr else 'none'})"
        )


class HiddenFrozenMixin:
    """Holds frozen helper modules (a teacher, an ASR decoder) outside the module tree: they
    stay out of ``state_dict()``, ``parameters()`` (optimizer, DDP) and ``train()`` (no dropout
    after the Trainer's per-epoch ``model.train()``), yet ``.to()/.half()`` still move them."""

    _hidden_names: Tuple[str, ...] = ()

    def _set_hidden(self, name: str, module: Optional[torch.nn.Module]) -> None:
        if name not in self._hidden_names:
            raise AttributeError(f"{name} is not a declared hidden module")
        if module is not None:
            module.eval()
            module.requires_grad_(False)
        object.__setattr__(self, name, module)

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        for name in self._hidden_names:
            module = self.__dict__.get(name)
            if module is not None:
                module._apply(fn, *args, **kwargs)
        return self


@typechecked
def load_internal_lm(
    asr_train_config: str,
    asr_model_file: str,
    ilm_type: str = "zero",
    ctx_train_config: Optional[str] = None,
    ctx_model_file: Optional[str] = None,
    device: str = "cpu",
) -> "InternalLM":
    """ILME-Z (``zero``) or ILME-L (``label_ctx``) of a trained ASR model (config + checkpoint).
    Only the decoder is kept; ``import espnet_ext`` has registered our model classes."""
    from espnet2.tasks.asr import ASRTask

    asr_model, _ = ASRTask.build_model_from_file(asr_train_config, asr_model_file, device)
    return internal_lm_from_asr_model(asr_model, ilm_type, ctx_train_config, ctx_model_file,
                                      device, asr_name=f"{asr_model_file} ({asr_train_config})")


def internal_lm_from_asr_model(asr_model, ilm_type: str = "zero",
                               ctx_train_config: Optional[str] = None,
                               ctx_model_file: Optional[str] = None,
                               device: str = "cpu", asr_name: Optional[str] = None
                               ) -> "InternalLM":
    """Build the ILM on an already loaded ASR model (shares its decoder). The ILM is scored as
    an ESPnet LM (sos = eos = V-1: DR-KD teacher, perplexity), so the ASR model must use that
    convention too; ``asr_name`` (its file) goes into the error."""
    asr_name = asr_name or "(in memory)"
    check_same_tokens(asr_model.token_list, asr_model.token_list,
                      f"ASR model {asr_name} vs its internal LM ({ilm_type})",
                      asr_sos=asr_model.sos, asr_eos=asr_model.eos)
    learner = None
    if ilm_type == "label_ctx":
        if ctx_model_file is None:
            raise ValueError("ILME-L (label_ctx) needs the context learner checkpoint")
        from espnet_ext.lm.ilm_context import load_context_learner

        learner, token_list = load_context_learner(ctx_train_config, ctx_model_file, device)
        check_same_tokens(asr_model.token_list, token_list,
                          f"ASR model {asr_name} vs context learner {ctx_model_file}")
    elif ilm_type != "zero":
        raise ValueError(f"decoder-based ILM type must be zero|label_ctx, got {ilm_type}")
    ilm = InternalLM(asr_model.decoder, learner, sos=asr_model.sos).to(device).eval()
    ilm.requires_grad_(False)
    ilm.token_list = list(asr_model.token_list)
    return ilm


def main(cmd: Optional[List[str]] = None) -> None:
    """Former CLI location; the entry point is :mod:`espnet_ext.bin.check_token_lists`."""
    from espnet_ext.bin.check_token_lists import main as bin_main

    bin_main(cmd)


if __name__ == "__main__":
    main()
