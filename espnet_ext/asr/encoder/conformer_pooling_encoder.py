"""Conformer encoder with a conv2d/2 front-end and time max-pooling between blocks.

The encoder of the CIF ASR model (HKD paper §2.1.1/§3.2; reference: docs/differences.md):
one Conv2d(1->C, 3x3, stride 2) + ReLU, flatten, Linear(C*F'->d); x*sqrt(d); Linear(d->d) + dropout;
then Conformer blocks built from ESPnet's own layer classes (macaron FFN, rel-pos MHSA "latest",
convolution module, FFN, final LN) with MaxPool(2) over time after the blocks listed in
``pooling_layers`` (1-based). Paper sizes: 15 blocks, pooling after 5 and 10, so the blocks run at
20/40/80 ms and the output (fed to CTC and CIF) has an 80 ms frame rate.

Deliberate differences from the reference implementation (also in docs/differences.md):
- The convolution module zeroes padded frames before its depthwise convolution
  (``mask_conv_padding``; the reference does not), so a padded utterance is encoded exactly as when
  it is alone in the batch.
- Pooling floors every utterance's length (a pooled frame is valid iff both of its input frames are
  valid). The reference marks a pooled frame valid if either input frame is, which gives ceil for
  padded utterances but floor for the longest of the batch (MaxPool floors the tensor), i.e. the
  length depended on the batch.
"""
from typing import Optional, Sequence, Tuple

import torch
from espnet.nets.pytorch_backend.conformer.convolution import ConvolutionModule
from espnet.nets.pytorch_backend.conformer.encoder_layer import EncoderLayer
from espnet.nets.pytorch_backend.nets_utils import get_activation
from espnet.nets.pytorch_backend.transformer.attention import RelPositionMultiHeadedAttention
from espnet.nets.pytorch_backend.transformer.embedding import RelPositionalEncoding
from espnet.nets.pytorch_backend.transformer.positionwise_feed_forward import (
    PositionwiseFeedForward,
)
from espnet2.asr.encoder.abs_encoder import AbsEncoder
from typeguard import typechecked


def _valid_frames(lengths: torch.Tensor, maxlen: int) -> torch.Tensor:
    """(B, maxlen) True on valid frames (ESPnet's make_pad_mask treats length 0 as full length)."""
    return torch.arange(maxlen, device=lengths.device)[None, :] < lengths[:, None]


class _PaddingMaskedConvolution(ConvolutionModule):
    """ESPnet's conformer convolution module, with padded frames zeroed before the depthwise conv.

    ESPnet's EncoderLayer calls ``conv_module(x)`` without a mask, so the encoder sets
    ``frame_mask`` (B, T, 1; True = valid) around each block call.
    """

    frame_mask: Optional[torch.Tensor] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.glu(self.pointwise_conv1(x.transpose(1, 2)), dim=1)
        if self.frame_mask is not None:
            x = x * self.frame_mask.transpose(1, 2).to(x.dtype)
        x = self.activation(self.norm(self.depthwise_conv(x)))
        return self.pointwise_conv2(x).transpose(1, 2)


class ConformerPoolingEncoder(AbsEncoder):
    """Conv2d/2 front-end + Conformer blocks with max-pooling by 2 after ``pooling_layers``."""

    @typechecked
    def __init__(
        self,
        input_size: int,
        output_size: int = 256,
        attention_heads: int = 4,
        linear_units: int = 2048,
        num_blocks: int = 15,
        dropout_rate: float = 0.1,
        attention_dropout_rate: float = 0.1,
        frontend_channels: int = 128,
        activation_type: str = "swish",
        macaron_style: bool = True,
        cnn_module_kernel: int = 15,
        cnn_module_bias: bool = False,
        pooling_layers: Sequence[int] = (5, 10),
        mask_conv_padding: bool = True,
    ):
        super().__init__()
        if input_size < 3:
            raise ValueError(f"input_size must be >= 3 for the 3x3 front-end, got {input_size}")
        bad = [i for i in pooling_layers if not 1 <= i <= num_blocks]
        if bad:
            raise ValueError(f"pooling_layers must be 1-based block ids in [1, {num_blocks}], got {bad}")
        self._output_size = output_size
        self.pooling_layers = sorted(set(int(i) for i in pooling_layers))
        self.mask_conv_padding = mask_conv_padding

        # Front-end: one 3x3/2 conv (no padding) -> T' = floor((T - 1) / 2), F' likewise.
        self.frontend_conv = torch.nn.Conv2d(1, frontend_channels, 3, stride=2)
        self.frontend_linear = torch.nn.Linear(frontend_channels * ((input_size - 1) // 2), output_size)
        # Scales x by sqrt(d) and gives the rel-pos embeddings; no dropout (the reference has none here).
        self.pos_enc = RelPositionalEncoding(output_size, 0.0)
        self.embed_proj = torch.nn.Linear(output_size, output_size)
        self.embed_dropout = torch.nn.Dropout(dropout_rate)

        activation = get_activation(activation_type)
        self.encoders = torch.nn.ModuleList(
            EncoderLayer(
                output_size,
                RelPositionMultiHeadedAttention(attention_heads, output_size, attention_dropout_rate),
                PositionwiseFeedForward(output_size, linear_units, dropout_rate, activation),
                PositionwiseFeedForward(output_size, linear_units, dropout_rate, activation)
                if macaron_style else None,
                _PaddingMaskedConvolution(output_size, cnn_module_kernel, activation, bias=cnn_module_bias),
                dropout_rate,
                normalize_before=True,
            )
            for _ in range(num_blocks)
        )

    def output_size(self) -> int:
        return self._output_size

    def forward(
        self,
        xs_pad: torch.Tensor,
        ilens: torch.Tensor,
        prev_states: torch.Tensor = None,
    ) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """(B, T, F) features -> (B, T_out, d), T_out = floor((T-1)/2) floor-halved per pooling."""
        if xs_pad.size(1) < 3:  # shorter than the 3x3 kernel: no valid output frame, no crash
            xs_pad = torch.nn.functional.pad(xs_pad, (0, 0, 0, 3 - xs_pad.size(1)))
        x = torch.relu(self.frontend_conv(xs_pad.unsqueeze(1)))  # (B, C, T', F')
        x = self.frontend_linear(x.transpose(1, 2).flatten(2))
        lengths = torch.div(ilens - 1, 2, rounding_mode="floor").clamp(min=0)
        x, pos_emb = self.pos_enc(x)
        x = self.embed_dropout(self.embed_proj(x))

        for block_id, layer in enumerate(self.encoders, start=1):
            if x.size(1) == 0:  # every utterance too short: nothing left to encode
                break
            valid = _valid_frames(lengths, x.size(1))  # (B, T)
            if self.mask_conv_padding:
                layer.conv_module.frame_mask = valid[:, :, None]
            try:
                (x, _), _ = layer((x, pos_emb), valid[:, None, :])
            finally:
                layer.conv_module.frame_mask = None
            if block_id in self.pooling_layers:
                x = x[:, : x.size(1) // 2 * 2]
                x = x.reshape(x.size(0), x.size(1) // 2, 2, x.size(2)).amax(dim=2)
                lengths = torch.div(lengths, 2, rounding_mode="floor")
                # Relative positions are recomputed for the new frame rate (as the reference).
                _, pos_emb = self.pos_enc(x)

        x = x * _valid_frames(lengths, x.size(1))[:, :, None].to(x.dtype)
        return x, lengths, None

    @staticmethod
    def output_length(input_length: int, num_poolings: int) -> int:
        """Encoder frames for ``input_length`` feature frames (front-end /2, then floor per pooling)."""
        n = max((input_length - 1) // 2, 0)
        return n // (2 ** num_poolings)

