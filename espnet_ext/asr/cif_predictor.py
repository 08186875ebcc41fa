"""CIF weight predictor + integrate-and-fire: encoder frames -> token-level acoustic vectors.

Weights a_t = sigmoid(Linear(Dropout(Conv1d_k3(h)))), with no nonlinearity between the conv and the
linear layer (as the reference, docs/differences.md), masked to valid frames, then
integrated by :func:`espnet_ext.asr.cif.cif` over the encoder output ``h`` itself.
Training (``target_lengths`` given): weights scaled so that exactly L+1 tokens fire (EOS counts).
Inference: unscaled weights, a residual >= ``tail_threshold`` emits a last token.

Deliberate differences from the reference (also in docs/differences.md):
- ``threshold`` defaults to 1.0 (the paper's beta). The reference fires at 0.99 but consumes 1.0
  per fire; our CIF fires at, and consumes, exactly ``threshold``.
- One ``tail_threshold`` (0.4, the reference's test value) is used whenever no targets are given,
  including validation inside training (the reference validates with 0.5).
- Padded frames are zeroed before the conv (the reference's conv sees unmasked padding), so the
  last valid frames get the same weight whether or not the utterance is padded.

Precision: the weights and the integration run in the predictor's parameter dtype (fp32) with
autocast off, since every fire is a threshold decision on a running sum of weights; under a bf16
autocast only the layers around the predictor run in bf16.
"""
from typing import Optional

import torch
from typeguard import typechecked

from espnet_ext.asr.abs_predictor import AbsPredictor
from espnet_ext.asr.cif import CIFOutput, cif


class CIFPredictor(AbsPredictor):
    """Conv1d -> dropout -> Linear(->1) -> sigmoid weight predictor followed by CIF."""

    @typechecked
    def __init__(
        self,
        input_size: int,
        conv_channels: Optional[int] = None,
        kernel_size: int = 3,
        dropout_rate: float = 0.2,
        threshold: float = 1.0,
        tail_threshold: float = 0.4,
    ):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd (same-length conv), got {kernel_size}")
        conv_channels = conv_channels or input_size
        self.threshold = threshold
        self.tail_threshold = tail_threshold
        self.conv = torch.nn.Conv1d(input_size, conv_channels, kernel_size, padding=kernel_size // 2)
        self.dropout = torch.nn.Dropout(dropout_rate)
        self.weight_proj = torch.nn.Linear(conv_channels, 1)
        # The reference initialises its linear layers with xavier-uniform and zero bias.
        torch.nn.init.xavier_uniform_(self.weight_proj.weight)
        torch.nn.init.zeros_(self.weight_proj.bias)

    def weights(self, hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T, D) encoder output -> (B, T) weights in (0, 1), zero on padded frames."""
        valid = torch.arange(hidden.size(1), device=hidden.device)[None, :] < lengths.to(hidden.device)[:, None]
        x = hidden * valid[:, :, None].to(hidden.dtype)
        x = self.conv(x.transpose(1, 2)).transpose(1, 2)
        alphas = torch.sigmoid(self.weight_proj(self.dropout(x))).squeeze(-1)
        return alphas * valid.to(alphas.dtype)

    def forward(
        self,
        hidden: torch.Tensor,
        lengths: torch.Tensor,
        target_lengths: Optional[torch.Tensor] = None,
    ) -> CIFOutput:
        """Training (``target_lengths``: L+1 per utterance) or inference (tail handling) CIF."""
        with torch.autocast(hidden.device.type, enabled=False):
            return self._integrate(hidden.to(self.weight_proj.weight.dtype), lengths, target_lengths)

    def _integrate(
        self,
        hidden: torch.Tensor,
        lengths: torch.Tensor,
        target_lengths: Optional[torch.Tensor],
    ) -> CIFOutput:
        if hidden.size(1) == 0:  # no encoder frame at all (every input shorter than the front-end)
            B, _, D = hidden.shape
            none = torch.zeros(B, 0, dtype=torch.long, device=hidden.device)
            return CIFOutput(outputs=hidden.new_zeros(B, 0, D), lengths=none.new_zeros(B),
                             alpha_sum=hidden.new_zeros(B), fire_positions=none,
                             alphas=hidden.new_zeros(B, 0))
        alphas = self.weights(hidden, lengths)
        if target_lengths is not None:
            return cif(hidden, alphas, lengths, self.threshold, target_lengths=target_lengths)
        return cif(hidden, alphas, lengths, self.threshold, tail_threshold=self.tail_threshold)

    def count_tokens(self, alpha_sum: torch.Tensor) -> torch.Tensor:
        """Tokens the inference CIF emits for unscaled weight sums (B,): floor + tail token."""
        total = alpha_sum.detach().double() / self.threshold
        n_fire = torch.floor(total)
        residual = total - n_fire
        tail = (residual > 0) & (residual * self.threshold >= self.tail_threshold)
        return n_fire.long() + tail.long()
