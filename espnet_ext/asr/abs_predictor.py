"""Abstract base of the CIF model's predictor (ESPnet choice ``--predictor``)."""
from abc import ABC, abstractmethod
from typing import Optional

import torch

from espnet_ext.asr.cif import CIFOutput


class AbsPredictor(torch.nn.Module, ABC):
    """Encoder frames -> token-level acoustic vectors (``CIFOutput``).

    Built as ``cls(input_size, **predictor_conf)`` with ``input_size`` the encoder's output size.
    Training passes ``target_lengths`` (L+1 per utterance, EOS included) so that exactly that many
    tokens are emitted; inference passes none.
    """

    @abstractmethod
    def forward(
        self,
        hidden: torch.Tensor,
        lengths: torch.Tensor,
        target_lengths: Optional[torch.Tensor] = None,
    ) -> CIFOutput:
        """(B, T, D) encoder output and (B,) valid frames -> CIFOutput."""
        raise NotImplementedError

    @abstractmethod
    def count_tokens(self, alpha_sum: torch.Tensor) -> torch.Tensor:
        """(B,) tokens inference would emit for the unscaled weight sums of a training forward."""
        raise NotImplementedError
