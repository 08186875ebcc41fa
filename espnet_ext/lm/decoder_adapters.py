"""Decoder-context adapters: run an ASR decoder with its acoustic context given from outside.

The acoustic context is what the decoder receives from the encoder at each label position:
- ESPnet RNN/LAS decoder (``RNNDecoder``): the attention context vector ``c_i``;
- ESPnet transformer decoders: the output of each block's cross-attention (``src_attn``);
- our CIF decoder: the CIF vector ``c_i`` aligned with label ``i``.
The internal LM (:mod:`espnet_ext.lm.internal_lm`) and the ILME-L context learner
(:mod:`espnet_ext.lm.ilm_context`) drive every decoder type through one of these adapters.
"""
import contextlib
import importlib
from typing import Any, List, Tuple

import torch
from espnet2.asr.decoder.abs_decoder import AbsDecoder


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
    """The adapter registered for ``decoder``'s class (the most recently registered first)."""
    for module, name, adapter in _ADAPTERS:
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
        if isinstance(decoder, cls):
            return adapter(decoder)
    raise NotImplementedError(f"No internal-LM adapter for decoder {type(decoder).__name__}")
