"""Abstract base of the CIF model's distiller (ESPnet choice ``--distiller``)."""
from abc import ABC, abstractmethod
from typing import Dict, Optional, Sequence

import torch


class AbsDistiller(torch.nn.Module, ABC):
    """Training-only loss head: distils teacher features into the CIF model.

    Built as ``cls(cif_dim=..., decoder_state_dim=..., **distiller_conf)`` with the sizes of the
    CIF outputs and of the pre-vocabulary decoder states. Its parameters are training heads: an
    inference copy of the model drops the module (``CIFASRModel.strip_training_heads``) and never
    needs a teacher.
    """

    @property
    def has_online_teacher(self) -> bool:
        """True if the module computes its teacher features itself (no ``plm_feats`` data)."""
        return False

    @abstractmethod
    def forward(
        self,
        cif_out: torch.Tensor,
        cif_lengths: torch.Tensor,
        decoder_states: Optional[torch.Tensor],
        teacher: Optional[torch.Tensor],
        teacher_lengths: Optional[torch.Tensor],
        ys_out: torch.Tensor,
        utt_id: Optional[Sequence[str]] = None,
    ) -> Dict[str, torch.Tensor]:
        """Losses of one batch as SUMS over the batch; ``loss_distill`` is added to the model loss.

        cif_out (B, N, D) CIF outputs and cif_lengths (B,); decoder_states (B, N', Ddec) under
        teacher forcing; teacher (B, Tt, Dt) and teacher_lengths (B,) (None with an online
        teacher); ys_out (B, L+1) targets incl. EOS, padded with the ignore id. Keys starting with
        ``loss_`` are divided by Σ(L+1) by the model; other keys are reported as given.
        """
        raise NotImplementedError
