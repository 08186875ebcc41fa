"""The paper's distillation variants as ``--distiller`` choices: each builds the losses and weights
of HKD paper §3.2/§4.1 (Tables 1-2) and of the reference run (docs/differences.md)."""
import pytest
import torch

from espnet_ext.asr.cif_part_choices import distiller_choices
from espnet_ext.distill.hkd import HierarchicalDistiller

# name -> (acoustic loss, λ_AD, λ_LD, same-token negatives removed); τ 0.02, K 700, α_mse 0.01,
# α_cos 10 for all (paper §3.2 and §4.1; acd_xsame is ours).
PAPER = {
    "acd": ("contrastive", 1.0, 0.0, False),
    "lrd": ("none", 0.0, 0.01, False),
    "hkd": ("contrastive", 1.0, 0.01, False),
    "mse": ("mse", 1.0, 0.0, False),
    "cos": ("cos", 0.2, 0.0, False),
    "mse_lrd": ("mse", 1.0, 0.01, False),
    "cos_lrd": ("cos", 0.2, 0.01, False),
    "acd_xsame": ("contrastive", 1.0, 0.0, True),
}
STAT = {"contrastive": "loss_acd", "mse": "loss_ad_mse", "cos": "loss_ad_cos"}


def build(name, **conf):
    return distiller_choices.get_class(name)(cif_dim=12, decoder_state_dim=10, **conf)


def test_choices_are_the_paper_variants_and_none():
    assert set(distiller_choices.choices()) == set(PAPER) | {None}
    assert distiller_choices.get_class("hkd") is HierarchicalDistiller


@pytest.mark.parametrize("name", sorted(PAPER))
def test_variant_defaults_and_loss_composition(name):
    acoustic, w_ad, w_ld, xsame = PAPER[name]
    d = build(name, teacher_dim=8)
    assert (d.acoustic_loss, d.acoustic_weight, d.linguistic_weight) == (acoustic, w_ad, w_ld)
    assert (d.temperature, d.num_negatives, d.mse_alpha, d.cos_alpha) == (0.02, 700, 0.01, 10.0)
    assert d.exclude_same_token_negatives is xsame and d.mse_dim_reduction == "sum"
    assert (d.acoustic_proj is not None) == (acoustic != "none")
    assert (d.linguistic_proj is not None) == (w_ld > 0)

    torch.manual_seed(0)
    ys_out = torch.tensor([[3, 4, 5, 9], [6, 3, 9, -1]])
    lengths = (ys_out != -1).sum(1)
    teacher = torch.randn(2, 4, 8)
    parts = d(cif_out=torch.randn(2, 4, 12), cif_lengths=lengths, decoder_states=torch.randn(2, 4, 10),
              teacher=teacher, teacher_lengths=lengths, ys_out=ys_out)
    # paper eq. 1: λ_AD · AD + λ_LD · LD
    want = torch.zeros(())
    if acoustic != "none":
        want = want + w_ad * parts[STAT[acoustic]]
    if w_ld > 0:
        want = want + w_ld * parts["loss_lrd"]
    else:
        assert "loss_lrd" not in parts
    torch.testing.assert_close(parts["loss_distill"], want)
    assert parts["distill_tokens"].item() == 7


def test_conf_overrides_values_but_not_the_acoustic_loss():
    d = build("acd", teacher_dim=384, temperature=0.05, num_negatives=300)
    assert (d.teacher_dim, d.temperature, d.num_negatives) == (384, 0.05, 300)
    assert d.acoustic_proj.out_features == 384
    with pytest.raises(ValueError, match="contrastive"):
        build("acd", acoustic_loss="mse")
    assert build("hkd", acoustic_loss="mse").acoustic_loss == "mse"  # hkd leaves it free
    with pytest.raises(TypeError):
        build("lrd", lrd_weight=0.1)  # not an option of the distiller


def test_teacher_of_another_size_is_refused():
    d = build("hkd")  # teacher_dim 768 (bert-base) by default
    ys_out = torch.tensor([[3, 9]])
    with pytest.raises(ValueError, match="384 dims.*teacher_dim 768"):
        d(cif_out=torch.randn(1, 2, 12), cif_lengths=torch.tensor([2]), decoder_states=torch.randn(1, 2, 10),
          teacher=torch.randn(1, 2, 384), teacher_lengths=torch.tensor([2]), ys_out=ys_out)
