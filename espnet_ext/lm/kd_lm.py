"""DR-KD student: an ESPnet LM trained towards an internal-LM teacher (Chen et al., Eq. 6):

    L = alpha * CE(ground truth) + (1 - alpha) * CE(teacher distribution)

with CE(p_T, p_S) = -sum_v p_T(v) log p_S(v) per label position, both terms averaged over the
label positions of the batch (ESPnet LM convention: input ``<sos> w``, target ``w <eos>``).
The teacher (ILME-Z / ILME-L of a trained ASR model, an ``AbsLM``) is frozen and hidden from
``state_dict()``/``parameters()``/``train()``, so a checkpoint holds only the student ``lm.*``
and loads with stock ``LMTask.build_model_from_file`` (registered as model choice ``lm_kd``).
"""
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from espnet.nets.pytorch_backend.nets_utils import make_pad_mask
from espnet2.lm.abs_model import AbsLM
from espnet2.lm.espnet_model import ESPnetLanguageModel
from espnet2.torch_utils.device_funcs import force_gatherable
from typeguard import typechecked

from espnet_ext.lm.frozen import HiddenFrozenMixin


class KDLanguageModel(HiddenFrozenMixin, ESPnetLanguageModel):
    """ESPnet LM with the DR-KD loss; ``kd_alpha`` is the paper's alpha (weight of the
    ground-truth cross-entropy)."""

    _hidden_names = ("_teacher",)

    @typechecked
    def __init__(self, lm: AbsLM, vocab_size: int, ignore_id: int = 0, kd_alpha: float = 0.2):
        super().__init__(lm=lm, vocab_size=vocab_size, ignore_id=ignore_id)
        if not 0.0 <= kd_alpha <= 1.0:
            raise ValueError(f"kd_alpha must be in [0, 1], got {kd_alpha}")
        self.kd_alpha = kd_alpha
        self._teacher = None

    @property
    def teacher(self) -> Optional[AbsLM]:
        return self._teacher

    def set_teacher(self, teacher: AbsLM) -> None:
        sos = getattr(teacher, "sos", None)
        if sos is not None and sos != self.sos:
            raise ValueError(f"teacher sos/eos id {sos} != LM sos/eos id {self.sos} (V-1); "
                             "use one token list with <sos/eos> last")
        self._set_hidden("_teacher", teacher)

    def kd_losses(
        self, text: torch.Tensor, text_lengths: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-batch means ``(ce_ground_truth, ce_teacher, ntokens)``."""
        text = text[:, : text_lengths.max()]
        x = F.pad(text, [1, 0], value=self.eos)
        t = F.pad(text, [0, 1], value=self.ignore_id)
        t[torch.arange(text.size(0), device=t.device), text_lengths] = self.eos
        mask = ~make_pad_mask(text_lengths + 1, maxlen=x.size(1)).to(x.device)
        logp = torch.log_softmax(self.lm(x, None)[0], dim=-1)
        ntok = mask.sum()
        ce_gt = -logp.gather(-1, t.unsqueeze(-1)).squeeze(-1).masked_fill(~mask, 0.0).sum() / ntok
        if self.kd_alpha == 1.0:
            return ce_gt, torch.zeros_like(ce_gt), ntok
        if self._teacher is None:
            raise RuntimeError("KDLanguageModel with kd_alpha < 1 needs a teacher (set_teacher)")
        with torch.no_grad():
            p_teacher = torch.softmax(self._teacher(x, None)[0].to(logp.dtype), dim=-1)
        ce_kd = -(p_teacher * logp).sum(-1).masked_fill(~mask, 0.0).sum() / ntok
        return ce_gt, ce_kd, ntok

    def forward(
        self, text: torch.Tensor, text_lengths: torch.Tensor, **kwargs
    ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor], torch.Tensor]:
        ce_gt, ce_kd, ntok = self.kd_losses(text, text_lengths)
        loss = self.kd_alpha * ce_gt + (1.0 - self.kd_alpha) * ce_kd
        stats = dict(loss=loss.detach(), loss_gt=ce_gt.detach(), loss_kd=ce_kd.detach())
        return force_gatherable((loss, stats, ntok), loss.device)
