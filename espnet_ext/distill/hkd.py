"""Hierarchical knowledge distillation (HKD, seed paper §2.2) as a training-only module.

The CIF model owns one distiller (ESPnet choice ``--distiller``, see
:mod:`espnet_ext.distill.variants` for the paper's variants) and calls it in its
training/validation forward with the CIF outputs, the pre-vocabulary decoder states under teacher
forcing and the teacher features of the batch (ESPnet data key ``plm_feats``, or an online PLM).
All weights here (the two projections) are training heads: the model's inference copy drops the
whole module.

Faithful to the official code (docs/differences.md): teacher row j describes target
position j (its [SEP] row the EOS position); per utterance the first min(teacher rows, CIF tokens)
positions are distilled; ACD = InfoNCE over batch-wide teacher negatives (τ 0.02, K 700, own index
removed, K -> int(0.8 N) for small batches); LRD = MSE between the projected decoder state and the
raw teacher, summed over tokens and dims (``noscale``), λ 0.01. Every loss is a sum; the model
divides by Σ(L+1) like every other term. Added: an explicit check that the teacher has L + 1 rows
per utterance (misaligned utterances are skipped and counted, or raise), O(N·K) negative sampling,
optional removal of same-token negatives, MSE/COS acoustic alternatives (paper eq. 3-4).
"""
import logging
from typing import Dict, List, Optional, Sequence, Union

import torch
from typeguard import typechecked

from espnet_ext.distill.abs_distiller import AbsDistiller
from espnet_ext.distill.losses import (
    contrastive_loss,
    cosine_loss,
    mse_loss,
    sample_negatives,
)
from espnet_ext.distill.teacher import PLMTeacher, log_misaligned

logger = logging.getLogger(__name__)

ACOUSTIC_LOSSES = ("contrastive", "mse", "cos", "none")
ACOUSTIC_STAT = {"contrastive": "loss_acd", "mse": "loss_ad_mse", "cos": "loss_ad_cos"}


class HierarchicalDistiller(AbsDistiller):
    """Acoustic (CIF outputs) and linguistic (decoder states) distillation from PLM features.

    Its defaults are the paper's HKD (ACD + LRD, ``--distiller hkd``); every other variant is
    this module with other values (:mod:`espnet_ext.distill.variants`).

    Args:
        cif_dim: size of the CIF outputs (student of the acoustic level).
        decoder_state_dim: size of the pre-vocabulary decoder state o_i (linguistic level).
        teacher_dim: size of the teacher features (768 for bert-base, 384 for MiniLM); the
            training pipeline sets it from the teacher features it extracted.
        acoustic_loss: contrastive (ACD) | mse (eq. 3) | cos (eq. 4) | none.
        acoustic_weight: λ_AD.
        linguistic_weight: λ_LD of LRD; 0 disables LRD.
        temperature, num_negatives, negatives_fallback_ratio: ACD's τ, K and the small-batch rule.
        exclude_same_token_negatives: also remove negatives with the anchor's token id.
        mse_alpha, cos_alpha: α_mse (0.01) and α_cos (10) of the acoustic MSE/COS losses.
        mse_dim_reduction: LRD over dims: sum (reference ``noscale``) | mean.
        misaligned_policy: skip (utterance left out of distillation, counted, logged once) | fail.
        online_teacher: dict(model=<HF path>, token_type=char|bpe|hugging_face, layer=-1,
            token_list=<path>) to run a frozen PLM in the step instead of reading features.
        token_list: ASR token list for the online teacher (if not in ``online_teacher``).
        ignore_id: padding value of ``ys_out``.
    """

    @typechecked
    def __init__(
        self,
        cif_dim: int,
        decoder_state_dim: int,
        teacher_dim: int = 768,
        acoustic_loss: str = "contrastive",
        acoustic_weight: float = 1.0,
        linguistic_weight: float = 0.01,
        temperature: float = 0.02,
        num_negatives: int = 700,
        negatives_fallback_ratio: float = 0.8,
        exclude_same_token_negatives: bool = False,
        mse_alpha: float = 0.01,
        cos_alpha: float = 10.0,
        mse_dim_reduction: str = "sum",
        misaligned_policy: str = "skip",
        online_teacher: Optional[Dict] = None,
        token_list: Optional[Union[str, List[str]]] = None,
        ignore_id: int = -1,
    ):
        super().__init__()
        if acoustic_loss not in ACOUSTIC_LOSSES:
            raise ValueError(f"acoustic_loss must be one of {ACOUSTIC_LOSSES}, got {acoustic_loss!r}")
        if misaligned_policy not in ("skip", "fail"):
            raise ValueError(f"misaligned_policy must be skip or fail, got {misaligned_policy!r}")
        if mse_dim_reduction not in ("sum", "mean"):
            raise ValueError(f"mse_dim_reduction must be sum or mean, got {mse_dim_reduction!r}")
        if temperature <= 0 or num_negatives < 0 or not 0 < negatives_fallback_ratio <= 1:
            raise ValueError("need temperature > 0, num_negatives >= 0, 0 < negatives_fallback_ratio <= 1")
        if acoustic_weight == 0:
            acoustic_loss = "none"
        self.acoustic_loss = acoustic_loss
        self.acoustic_weight = acoustic_weight
        self.linguistic_weight = linguistic_weight
        self.temperature = temperature
        self.num_negatives = num_negatives
        self.negatives_fallback_ratio = negatives_fallback_ratio
        self.exclude_same_token_negatives = exclude_same_token_negatives
        self.mse_alpha = mse_alpha
        self.cos_alpha = cos_alpha
        self.mse_dim_reduction = mse_dim_reduction
        self.misaligned_policy = misaligned_policy
        self.ignore_id = ignore_id
        self.teacher_dim = teacher_dim
        # Training-only projections to the teacher space (reference: Linear with bias).
        self.acoustic_proj = torch.nn.Linear(cif_dim, teacher_dim) if acoustic_loss != "none" else None
        self.linguistic_proj = torch.nn.Linear(decoder_state_dim, teacher_dim) if linguistic_weight > 0 else None
        self.online_teacher_conf = dict(online_teacher) if online_teacher else None
        if self.online_teacher_conf is not None:
            unknown = set(self.online_teacher_conf) - {"model", "token_type", "layer", "token_list"}
            if "model" not in self.online_teacher_conf or "token_type" not in self.online_teacher_conf or unknown:
                raise ValueError(
                    "online_teacher needs keys model, token_type (optional layer, token_list); "
                    f"got {sorted(self.online_teacher_conf)}"
                )
            self.online_teacher_conf.setdefault("token_list", token_list)
        # Hidden from state_dict()/parameters()/train(): a frozen PLM loaded on first use.
        object.__setattr__(self, "_teacher", None)
        self._reported = set()

    @property
    def has_online_teacher(self) -> bool:
        return self.online_teacher_conf is not None

    def _online_teacher(self, device: torch.device) -> PLMTeacher:
        if self._teacher is None:
            conf = self.online_teacher_conf
            logger.info("Loading the online PLM teacher %s", conf["model"])
            object.__setattr__(
                self,
                "_teacher",
                PLMTeacher(
                    conf["model"],
                    conf["token_type"],
                    token_list=conf.get("token_list"),
                    layer=int(conf.get("layer", -1)),
                    device=device,
                ),
            )
            if self._teacher.dim != self.teacher_dim:
                raise ValueError(f"online teacher dim {self._teacher.dim} != teacher_dim {self.teacher_dim}")
        elif self._teacher.device != device:
            self._teacher.to(device)
        return self._teacher

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
        """Distillation losses of one batch.

        cif_out (B, N, D) CIF outputs, cif_lengths (B,); decoder_states (B, N', Ddec) pre-vocabulary
        decoder states under teacher forcing (valid up to min(cif_lengths, L+1)); teacher
        (B, Tt, Dt) and teacher_lengths (B,) (None with an online teacher); ys_out (B, L+1)
        targets incl. EOS padded with ``ignore_id``; utt_id names utterances in messages.

        Returns SUMS over the batch (divide by Σ(L+1) like the other terms): ``loss_distill``
        (λ_AD·AD + λ_LD·LD) and the parts ``loss_acd`` | ``loss_ad_mse`` | ``loss_ad_cos``
        (α included, λ not) and ``loss_lrd`` (λ not included). Counts (not to be divided):
        ``distill_tokens`` (distilled positions) and ``distill_skipped`` (misaligned utterances);
        ``acc_contrastive`` is a ratio already: anchors whose positive wins / anchors.
        """
        device = cif_out.device
        target_lengths = (ys_out != self.ignore_id).sum(dim=1)
        if teacher is None:
            if not self.has_online_teacher:
                raise ValueError("HierarchicalDistiller got no teacher features and has no online teacher")
            teacher, teacher_lengths, reasons = self._online_teacher(device).features_for_token_ids(
                ys_out.clamp(min=0), target_lengths - 1
            )
            teacher, teacher_lengths = teacher.to(device), teacher_lengths.to(device)
        else:
            reasons = None
            if teacher.size(-1) != self.teacher_dim:
                raise ValueError(f"teacher features have {teacher.size(-1)} dims, the distiller was "
                                 f"built for teacher_dim {self.teacher_dim} (--distiller_conf teacher_dim=...)")
        aligned = teacher_lengths.to(device) == target_lengths
        skipped = int((~aligned).sum())
        if skipped:
            self._report_misaligned(aligned, teacher_lengths, target_lengths, reasons, utt_id)

        # Positions distilled per utterance: first min(teacher rows, CIF tokens), aligned only.
        reg_lengths = torch.minimum(teacher_lengths.to(device), cif_lengths.to(device)) * aligned
        parts = {}
        zero = cif_out.new_zeros((), dtype=torch.float32)
        total = zero
        num_tokens = reg_lengths.sum()

        if self.acoustic_proj is not None:
            T = min(teacher.size(1), cif_out.size(1), ys_out.size(1))
            mask = torch.arange(T, device=device).unsqueeze(0) < reg_lengths.unsqueeze(1)
            student = self.acoustic_proj(cif_out[:, :T][mask])
            target = teacher[:, :T][mask]
            if self.acoustic_loss == "contrastive":
                ad, correct = self._contrastive(student, target, ys_out[:, :T][mask])
                parts["acc_contrastive"] = correct.float() / num_tokens.clamp(min=1)
            elif self.acoustic_loss == "mse":
                ad = self.mse_alpha * mse_loss(student, target, "sum")
            else:
                ad = self.cos_alpha * cosine_loss(student, target)
            parts[ACOUSTIC_STAT[self.acoustic_loss]] = ad
            total = total + self.acoustic_weight * ad

        if self.linguistic_proj is not None:
            if decoder_states is None:
                raise ValueError("LRD (linguistic_weight > 0) needs the decoder states")
            T = min(teacher.size(1), decoder_states.size(1), ys_out.size(1))
            dec_lengths = torch.minimum(reg_lengths, target_lengths)
            mask = torch.arange(T, device=device).unsqueeze(0) < dec_lengths.unsqueeze(1)
            student = self.linguistic_proj(decoder_states[:, :T][mask])
            ld = mse_loss(student, teacher[:, :T][mask], self.mse_dim_reduction)
            parts["loss_lrd"] = ld
            total = total + self.linguistic_weight * ld

        parts["loss_distill"] = total
        parts["distill_tokens"] = num_tokens.float()
        parts["distill_skipped"] = torch.tensor(float(skipped), device=device)
        return parts

    def _contrastive(self, student, target, token_ids):
        negatives = sample_negatives(
            student.size(0), self.num_negatives, self.negatives_fallback_ratio, device=student.device
        )
        with torch.autocast(student.device.type, enabled=False):
            return contrastive_loss(
                student,
                target,
                negatives,
                self.temperature,
                token_ids=token_ids if self.exclude_same_token_negatives else None,
            )

    def _report_misaligned(self, aligned, teacher_lengths, target_lengths, reasons, utt_id):
        for b in (~aligned).nonzero().flatten().tolist():
            name = utt_id[b] if utt_id is not None else f"batch index {b}"
            reason = (reasons[b] if reasons else "") or (
                f"teacher has {int(teacher_lengths[b])} rows, expected {int(target_lengths[b])} "
                "(ASR tokens + EOS)"
                + ("; features were withheld at extraction (see its misaligned file)"
                   if teacher_lengths[b] == 0 else "")
            )
            if self.misaligned_policy == "fail":
                raise ValueError(f"PLM teacher misaligned for utterance {name}: {reason}")
            if name not in self._reported:  # once per utterance, the count goes to the stats
                self._reported.add(name)
                log_misaligned(logger, name, reason)
