"""The paper's distillation variants as distiller choices: ``--distiller <name>``.

Each is :class:`~espnet_ext.distill.hkd.HierarchicalDistiller` with the values of HKD paper §3.2/§4.1
and of the reference run (docs/differences.md) as defaults; ``--distiller_conf`` overrides any of
them except ``acoustic_loss``, which is what tells the variants apart (``hkd`` leaves it free).
λ = loss weight, α inside the loss as paper eq. 3-4:

    acd        contrastive AD λ 1.0 (τ 0.02, K 700)       Table 1 "+ACD", Table 2 CONT w/o LRD
    lrd        LRD λ 0.01 (sum over dims)                  Table 1 "+LRD"
    hkd        ACD + LRD                                   Table 1 "+HKD", Table 2 CONT w/ LRD
    mse        MSE AD λ 1.0, α_mse 0.01                     Table 2 MSE w/o LRD
    cos        COS AD λ 0.2, α_cos 10                       Table 2 COS w/o LRD
    mse_lrd    MSE AD + LRD                                Table 2 MSE w/ LRD
    cos_lrd    COS AD + LRD                                Table 2 COS w/ LRD
    acd_xsame  acd without same-token negatives (not in the paper or the reference: a negative
               that is the anchor's token in another context is a false negative)

The teacher's size is a conf key: ``--distiller acd --distiller_conf teacher_dim=384``.
"""
from typing import Any, Dict

from espnet_ext.distill.hkd import HierarchicalDistiller


class _Variant(HierarchicalDistiller):
    """HierarchicalDistiller with ``preset`` as defaults."""

    preset: Dict[str, Any] = {}

    def __init__(self, cif_dim: int, decoder_state_dim: int, **conf):
        if "acoustic_loss" in conf and conf["acoustic_loss"] != self.preset["acoustic_loss"]:
            raise ValueError(
                f"{type(self).__name__} distils with acoustic_loss {self.preset['acoustic_loss']!r}; "
                "for another one choose its variant (or --distiller hkd with acoustic_loss set)"
            )
        super().__init__(cif_dim, decoder_state_dim, **{**self.preset, **conf})


class ACDDistiller(_Variant):
    """Contrastive acoustic distillation (ACD) only."""

    preset = dict(acoustic_loss="contrastive", acoustic_weight=1.0, linguistic_weight=0.0)


class LRDDistiller(_Variant):
    """Linguistic regression distillation (LRD) only."""

    preset = dict(acoustic_loss="none", acoustic_weight=0.0, linguistic_weight=0.01)


class MSEDistiller(_Variant):
    """MSE acoustic distillation only."""

    preset = dict(acoustic_loss="mse", acoustic_weight=1.0, linguistic_weight=0.0)


class COSDistiller(_Variant):
    """Cosine acoustic distillation only."""

    preset = dict(acoustic_loss="cos", acoustic_weight=0.2, linguistic_weight=0.0)


class MSELRDDistiller(_Variant):
    """MSE acoustic distillation + LRD."""

    preset = dict(acoustic_loss="mse", acoustic_weight=1.0, linguistic_weight=0.01)


class COSLRDDistiller(_Variant):
    """Cosine acoustic distillation + LRD."""

    preset = dict(acoustic_loss="cos", acoustic_weight=0.2, linguistic_weight=0.01)


class ACDXSameDistiller(_Variant):
    """ACD whose negatives never carry the anchor's token id."""

    preset = dict(acoustic_loss="contrastive", acoustic_weight=1.0, linguistic_weight=0.0,
                  exclude_same_token_negatives=True)


#: ``--distiller`` name -> class (``hkd`` is HierarchicalDistiller with its own defaults).
VARIANTS = dict(
    acd=ACDDistiller,
    lrd=LRDDistiller,
    hkd=HierarchicalDistiller,
    mse=MSEDistiller,
    cos=COSDistiller,
    mse_lrd=MSELRDDistiller,
    cos_lrd=COSLRDDistiller,
    acd_xsame=ACDXSameDistiller,
)
