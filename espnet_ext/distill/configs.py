"""Distillation variants of a CIF training config (HKD paper Tables 1-2, Figure 3).

ESPnet's ``--config`` takes one yaml, so each variant is a full config: the base config's text
unchanged (comments included) with a ``distill_conf`` block inserted under ``model_conf``. The
result is checked to parse to exactly the base plus that block.

Variants (λ = loss weight, α inside the loss as paper eq. 3-4; values of paper §3.2/§4.1 and the
reference run, docs/differences.md):
    acd      contrastive AD λ 1.0 (τ 0.02, K 700)            Table 1 "+ACD", Table 2 CONT w/o LRD
    lrd      LRD λ 0.01 (sum over dims)                       Table 1 "+LRD"
    hkd      ACD + LRD                                        Table 1 "+HKD", Table 2 CONT w/ LRD
    mse      MSE AD λ 1.0, α_mse 0.01                          Table 2 MSE w/o LRD
    cos      COS AD λ 0.2, α_cos 10                            Table 2 COS w/o LRD
    mse_lrd  MSE AD + LRD                                     Table 2 MSE w/ LRD
    cos_lrd  COS AD + LRD                                     Table 2 COS w/ LRD
    acd_xsame  acd without same-token negatives (not in the paper or the reference: a
               negative that is the anchor's token in another context is a false negative)
"""
import re
from typing import Dict, Optional

import yaml

_ACD = dict(acoustic_loss="contrastive", acoustic_weight=1.0)
_MSE = dict(acoustic_loss="mse", acoustic_weight=1.0)
_COS = dict(acoustic_loss="cos", acoustic_weight=0.2)
_NO_AD = dict(acoustic_loss="none", acoustic_weight=0.0)
_LRD = dict(linguistic_weight=0.01)
_NO_LRD = dict(linguistic_weight=0.0)

VARIANTS: Dict[str, dict] = {
    "acd": {**_ACD, **_NO_LRD},
    "lrd": {**_NO_AD, **_LRD},
    "hkd": {**_ACD, **_LRD},
    "mse": {**_MSE, **_NO_LRD},
    "cos": {**_COS, **_NO_LRD},
    "mse_lrd": {**_MSE, **_LRD},
    "cos_lrd": {**_COS, **_LRD},
    "acd_xsame": {**_ACD, **_NO_LRD, "exclude_same_token_negatives": True},
}

DEFAULTS = dict(
    temperature=0.02,
    num_negatives=700,
    negatives_fallback_ratio=0.8,
    exclude_same_token_negatives=False,
    mse_alpha=0.01,
    cos_alpha=10.0,
    mse_dim_reduction="sum",
    misaligned_policy="skip",
)


def distill_conf(variant: str, teacher_dim: int, **overrides) -> dict:
    """The full ``distill_conf`` of a variant (every key explicit)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown distillation variant {variant!r}; choose from {sorted(VARIANTS)}")
    conf = {"teacher_dim": teacher_dim, **VARIANTS[variant], **DEFAULTS}
    conf.update(VARIANTS[variant])  # a variant's own value wins over a default (acd_xsame)
    unknown = set(overrides) - set(conf)
    if unknown:
        raise ValueError(f"unknown distill_conf keys {sorted(unknown)}")
    conf.update(overrides)
    return conf


def with_distill_conf(base_text: str, conf: dict, header: Optional[str] = None) -> str:
    """``base_text`` with ``model_conf.distill_conf = conf`` inserted (or replaced) as yaml."""
    base = yaml.safe_load(base_text)
    if not isinstance(base.get("model_conf"), dict):
        raise ValueError("the base config has no model_conf mapping to extend")
    lines = base_text.splitlines()
    try:
        at = next(i for i, line in enumerate(lines) if re.match(r"^model_conf:\s*(#.*)?$", line))
    except StopIteration:
        raise ValueError("the base config's model_conf must be a block mapping ('model_conf:' line)")
    child = next(
        (l for l in lines[at + 1 :] if l.strip() and not l.lstrip().startswith("#")), ""
    )
    indent = child[: len(child) - len(child.lstrip())]
    if not indent:
        raise ValueError("could not find the indentation of model_conf's entries")
    if "distill_conf" in base["model_conf"]:  # drop the existing block
        start = next(i for i in range(at + 1, len(lines)) if lines[i].startswith(indent + "distill_conf:"))
        end = start + 1
        while end < len(lines) and (not lines[end].strip() or lines[end].startswith(indent + " ")):
            end += 1
        lines = lines[:start] + lines[end:]
    block = yaml.safe_dump({"distill_conf": conf}, sort_keys=False, default_flow_style=False, indent=4)
    block_lines = [indent + l for l in block.rstrip("\n").splitlines()]
    lines = lines[: at + 1] + block_lines + lines[at + 1 :]
    if header:
        lines = [f"# {h}" if h else "#" for h in header.splitlines()] + lines
    text = "\n".join(lines) + "\n"
    expected = dict(base)
    expected["model_conf"] = {**base["model_conf"], "distill_conf": conf}
    if yaml.safe_load(text) != expected:
        raise AssertionError("inserting distill_conf changed other keys of the base config")
    return text


def set_distill_options(config_text: str, **options) -> str:
    """A distillation config with some ``distill_conf`` values changed (sweeps)."""
    conf = yaml.safe_load(config_text)["model_conf"].get("distill_conf")
    if conf is None:
        raise ValueError("the config has no model_conf.distill_conf to change")
    unknown = set(options) - set(conf)
    if unknown:
        raise ValueError(f"unknown distill_conf keys {sorted(unknown)}")
    return with_distill_conf(config_text, {**conf, **options})
