"""Autoregressive CIF decoder: a causal transformer without cross-attention.

Acoustic information enters only by concatenation with the CIF outputs c_i (HKD paper §2.1.1,
reference: docs/differences.md):

    x_i = W_in [Emb(y_{i-1}) * sqrt(d) ; c_{i-1}] + PE(i)      (y_{-1} = <sos>, c_{-1} = 0)
    h   = causal pre-LN self-attention blocks (ESPnet's transformer EncoderLayer + causal mask)
    o_i = W_out [LN(h_i) ; c_i]                                  (pre-vocabulary state, for LRD)
    logits_i = W_vocab o_i                                       (W_in, W_out, W_vocab without bias)

c_i is zero for i >= N (number of CIF vectors). Training scales the weights to N = L + 1 fires, so
the EOS step i = L reads the last integrated vector c_L; decoding does the same (N fires: N - 1
tokens, then EOS at step N - 1, see espnet_ext.asr.cif.tokens_before_eos).

Scorer contract (beam search): ``batch_score(ys (n, L) incl. <sos>, states, xs (n, N, D))``
scores step i = L - 1 with xs the (zero-padded) CIF outputs of each hypothesis's utterance. The
state is ESPnet's per-layer cache of previous positions' outputs, so a step costs O(L), as in
ESPnet's TransformerDecoder. ILME-Z is ``batch_score`` with ``xs`` zeros: nothing special-cased.

Deliberate differences from the reference (also in docs/differences.md): ESPnet's sinusoidal
positional encoding (positions from 0, interleaved sin/cos) instead of fairseq's (positions from 2,
concatenated halves); no padding row in the embedding (ESPnet pads decoder inputs with <eos>);
teacher forcing runs L+1 steps with c_i = 0 beyond the CIF length instead of truncating to
min(N_cif, L+1).
"""
from typing import Any, List, Optional, Tuple

import torch
from espnet.nets.pytorch_backend.transformer.attention import MultiHeadedAttention
from espnet.nets.pytorch_backend.transformer.embedding import PositionalEncoding
from espnet.nets.pytorch_backend.transformer.encoder_layer import EncoderLayer
from espnet.nets.pytorch_backend.transformer.layer_norm import LayerNorm
from espnet.nets.pytorch_backend.transformer.mask import subsequent_mask
from espnet.nets.pytorch_backend.transformer.positionwise_feed_forward import (
    PositionwiseFeedForward,
)
from espnet.nets.scorer_interface import BatchScorerInterface
from espnet2.asr.decoder.abs_decoder import AbsDecoder
from typeguard import typechecked


class CIFDecoder(AbsDecoder, BatchScorerInterface):
    """Causal transformer over [token embedding ; previous CIF vector], output [state ; CIF vector]."""

    @typechecked
    def __init__(
        self,
        vocab_size: int,
        encoder_output_size: int,
        output_size: Optional[int] = None,
        attention_heads: int = 4,
        linear_units: int = 2048,
        num_blocks: int = 2,
        dropout_rate: float = 0.2,
        attention_dropout_rate: float = 0.2,
        activation_dropout_rate: float = 0.2,
        positional_dropout_rate: float = 0.1,
    ):
        super().__init__()
        d = output_size or encoder_output_size
        self.vocab_size = vocab_size
        self.cif_dim = encoder_output_size
        self.state_dim = d
        self.embed = torch.nn.Embedding(vocab_size, d)
        self.input_proj = torch.nn.Linear(d + encoder_output_size, d, bias=False)
        # PositionalEncoding returns dropout(x * sqrt(d) + PE); see _decoder_inputs for the scaling.
        self.pos_enc = PositionalEncoding(d, positional_dropout_rate)
        self.decoders = torch.nn.ModuleList(
            EncoderLayer(
                d,
                MultiHeadedAttention(attention_heads, d, attention_dropout_rate),
                PositionwiseFeedForward(d, linear_units, activation_dropout_rate),
                dropout_rate,
                normalize_before=True,
            )
            for _ in range(num_blocks)
        )
        self.after_norm = LayerNorm(d)
        self.output_proj = torch.nn.Linear(d + encoder_output_size, d, bias=False)
        self.output_layer = torch.nn.Linear(d, vocab_size, bias=False)
        # Reference initialisation of the embedding and the vocabulary projection: N(0, d^-0.5).
        torch.nn.init.normal_(self.embed.weight, std=d**-0.5)
        torch.nn.init.normal_(self.output_layer.weight, std=d**-0.5)

    def _cif_steps(self, hs: torch.Tensor, hlens: Optional[torch.Tensor], steps: int) -> torch.Tensor:
        """CIF vectors for decoder steps 0..steps-1: (B, steps, D), zero beyond each length."""
        hs = hs[:, :steps]
        if hlens is not None:
            valid = torch.arange(hs.size(1), device=hs.device)[None, :] < hlens.to(hs.device)[:, None]
            hs = hs * valid[:, :, None].to(hs.dtype)
        if hs.size(1) < steps:
            hs = torch.nn.functional.pad(hs, (0, 0, 0, steps - hs.size(1)))
        return hs

    def _decoder_inputs(self, ys: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """x_i = W_in[emb(y_{i-1}) * sqrt(d) ; c_{i-1}] + PE(i), with ys[:, i] = y_{i-1}."""
        c_prev = torch.nn.functional.pad(c[:, :-1], (0, 0, 1, 0))
        # pos_enc multiplies by sqrt(d): feeding [emb ; c / sqrt(d)] yields W_in[emb*sqrt(d) ; c].
        x = self.input_proj(torch.cat([self.embed(ys), c_prev / self.pos_enc.xscale], dim=-1))
        return self.pos_enc(x)

    def _outputs(self, h: torch.Tensor, c: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(logits, o) from the last block's output h and the current CIF vectors c."""
        o = self.output_proj(torch.cat([self.after_norm(h), c], dim=-1))
        return self.output_layer(o), o

    def forward(
        self,
        hs_pad: torch.Tensor,
        hlens: torch.Tensor,
        ys_in_pad: torch.Tensor,
        ys_in_lens: torch.Tensor,
        return_states: bool = False,
    ):
        """Teacher-forced pass.

        Args:
            hs_pad: (B, N, D) CIF outputs; hlens: (B,) their lengths.
            ys_in_pad: (B, L+1) [<sos>, y_1..y_L] padded; ys_in_lens: (B,) L+1.
            return_states: also return o_i (B, L+1, d), the pre-vocabulary states.
        Returns:
            logits (B, L+1, V), ys_in_lens[, states].
        """
        steps = ys_in_pad.size(1)
        c = self._cif_steps(hs_pad, hlens, steps)
        x = self._decoder_inputs(ys_in_pad, c)
        valid = torch.arange(steps, device=x.device)[None, :] < ys_in_lens.to(x.device)[:, None]
        mask = valid[:, None, :] & subsequent_mask(steps, device=x.device)[None]
        for layer in self.decoders:
            x, mask = layer(x, mask)
        logits, states = self._outputs(x, c)
        if return_states:
            return logits, ys_in_lens, states
        return logits, ys_in_lens

    def batch_score(
        self, ys: torch.Tensor, states: List[Any], xs: torch.Tensor
    ) -> Tuple[torch.Tensor, List[Any]]:
        """Log-probs (n, V) of step i = ys.shape[1] - 1 and the new per-hypothesis states.

        ys: (n, L) prefixes incl. <sos>; states: per hypothesis a list of per-layer caches
        (L-1, d) or None; xs: (n, N, D) CIF outputs, zero-padded (c_i = 0 for i >= N).
        """
        n, steps = ys.shape
        c = self._cif_steps(xs, None, steps)
        x = self._decoder_inputs(ys, c)
        mask = subsequent_mask(steps, device=x.device)[None].expand(n, -1, -1)
        if states[0] is None:
            cache = [None] * len(self.decoders)
        else:
            cache = [torch.stack([s[i] for s in states]) for i in range(len(self.decoders))]
        new_cache = []
        for layer, layer_cache in zip(self.decoders, cache):
            x, mask = layer(x, mask, layer_cache)
            new_cache.append(x)
        logits, _ = self._outputs(x[:, -1], c[:, -1])
        logp = torch.log_softmax(logits.float(), dim=-1).to(logits.dtype)
        new_states = [[layer_out[b] for layer_out in new_cache] for b in range(n)]
        return logp, new_states

    def score(self, ys: torch.Tensor, state: Any, x: torch.Tensor) -> Tuple[torch.Tensor, Any]:
        """Single hypothesis: ys (L,) incl. <sos>, x (N, D) CIF outputs of its utterance."""
        logp, states = self.batch_score(ys.unsqueeze(0), [state], x.unsqueeze(0))
        return logp.squeeze(0), states[0]
