"""Internal-LM terms for LM fusion: ``log P(W|X) - w_ilm log P_ilm(W) + w_lm log P_lm(W)``.

One option set for every ILM estimator, shared by the inference entry point, the tuning tool,
the perplexity tool and the speed benchmark:

    --ilm_type  none | zero (ILME-Z) | label_ctx (ILME-L) | dr (LSTM DR-LM) | dr_2gram | dr_kd
    --ilm_weight  w_ilm >= 0; the scorer enters the beam search with weight -w_ilm
    --ilm_file  label_ctx: context learner checkpoint; dr/dr_kd: LM checkpoint; dr_2gram: ARPA
    --ilm_train_config  config.yaml of label_ctx/dr/dr_kd (default: next to --ilm_file)

Every ILM is an ESPnet ``AbsLM`` sharing the ASR model's token list, ``<sos/eos>`` last and
the ASR model's sos/eos (checked at load time); the scorer is wrapped in :class:`ClampedScorer`
so the negative weight never meets ``-inf``.
"""
import argparse
import logging
from pathlib import Path
from typing import Dict, Optional

import torch
from espnet2.lm.abs_model import AbsLM

from espnet_ext.lm.bigram_lm import BigramLM
from espnet_ext.lm.clamped_scorer import ClampedScorer
from espnet_ext.lm.internal_lm import internal_lm_from_asr_model
from espnet_ext.utils.tokens import check_same_tokens

ILM_TYPES = ("none", "zero", "label_ctx", "dr", "dr_2gram", "dr_kd")


def add_ilm_arguments(parser: argparse.ArgumentParser) -> None:
    from espnet2.utils.types import str_or_none

    group = parser.add_argument_group("Internal LM estimation (ILME / density ratio)")
    group.add_argument("--ilm_type", type=str, default="none", choices=ILM_TYPES,
                       help="zero: ILME-Z; label_ctx: ILME-L; dr: LSTM DR-LM; dr_2gram: 2-gram "
                            "DR-LM (ARPA); dr_kd: DR-KD student LM")
    group.add_argument("--ilm_weight", type=float, default=0.0,
                       help="lambda_ILM >= 0 (the ILM is subtracted: scorer weight -lambda_ILM)")
    group.add_argument("--ilm_file", type=str_or_none, default=None,
                       help="label_ctx: context learner .pth; dr/dr_kd: LM .pth; dr_2gram: .arpa")
    group.add_argument("--ilm_train_config", type=str_or_none, default=None,
                       help="config.yaml for label_ctx/dr/dr_kd (default: next to --ilm_file)")


def load_ilm(ilm_type: str, asr_model, ilm_file: Optional[str] = None,
             ilm_train_config: Optional[str] = None, device: str = "cpu",
             asr_name: Optional[str] = None) -> Optional[AbsLM]:
    """The ILM of ``ilm_type`` as an ESPnet LM in eval mode (None for ``none``).

    Refused at load time unless the ASR model and the ILM share one token list with
    ``<sos/eos>`` last and the ASR model's sos/eos are that id (``check_same_tokens``);
    ``asr_name`` (the ASR model file) goes into the error. ``asr_model`` may be a bare
    namespace with ``token_list`` only (DR-LMs without an ASR model: no sos/eos to check).
    """
    if ilm_type == "none":
        return None
    asr_name = asr_name or "(in memory)"
    if ilm_type in ("zero", "label_ctx"):
        return internal_lm_from_asr_model(asr_model, ilm_type, ilm_train_config, ilm_file, device,
                                          asr_name=asr_name)
    if ilm_file is None:
        raise ValueError(f"--ilm_type {ilm_type} needs --ilm_file")
    if not Path(ilm_file).exists():
        raise FileNotFoundError(f"--ilm_file {ilm_file} does not exist")
    sos_eos = dict(asr_sos=getattr(asr_model, "sos", None), asr_eos=getattr(asr_model, "eos", None))
    if ilm_type == "dr_2gram":
        # The ARPA file's <s>/</s> are read as the token list's <sos/eos>: it must be the ASR
        # model's sos/eos and the last id.
        check_same_tokens(asr_model.token_list, asr_model.token_list,
                          f"ASR model {asr_name} vs 2-gram DR-LM {ilm_file}", **sos_eos)
        return BigramLM(ilm_file, list(asr_model.token_list)).to(device).eval()
    if ilm_type in ("dr", "dr_kd"):
        from espnet2.tasks.lm import LMTask

        lm_model, lm_args = LMTask.build_model_from_file(ilm_train_config, ilm_file, device)
        check_same_tokens(asr_model.token_list, lm_args.token_list,
                          f"ASR model {asr_name} vs {ilm_type} LM {ilm_file}", **sos_eos)
        lm = lm_model.lm.eval()
        lm.requires_grad_(False)
        return lm
    raise ValueError(f"unknown --ilm_type {ilm_type}; choose from {ILM_TYPES}")


def build_ilm_scorer(ilm_type: str, asr_model, ilm_file: Optional[str] = None,
                     ilm_train_config: Optional[str] = None,
                     device: str = "cpu", asr_name: Optional[str] = None) -> Optional[ClampedScorer]:
    """The ILM as a clamped beam-search scorer (None for ``none``)."""
    lm = load_ilm(ilm_type, asr_model, ilm_file, ilm_train_config, device, asr_name)
    return None if lm is None else ClampedScorer(lm).to(device).eval()


def add_ilm_scorer(scorers: Dict, weights: Dict[str, float], args: argparse.Namespace,
                   asr_model, device: str = "cpu") -> None:
    """Add ``scorers["ilm"]`` with weight ``-args.ilm_weight`` (nothing for none / weight 0)."""
    ilm_type = getattr(args, "ilm_type", "none")
    ilm_weight = float(getattr(args, "ilm_weight", 0.0))
    if ilm_weight < 0:
        raise ValueError(f"--ilm_weight is lambda_ILM >= 0 (subtracted), got {ilm_weight}")
    if ilm_type == "none" or ilm_weight == 0.0:
        if ilm_type != "none" or ilm_weight != 0.0:
            logging.info(f"internal LM not used (--ilm_type {ilm_type}, --ilm_weight {ilm_weight})")
        return
    scorers["ilm"] = build_ilm_scorer(ilm_type, asr_model, args.ilm_file, args.ilm_train_config,
                                      device, asr_name=getattr(args, "asr_model_file", None))
    weights["ilm"] = -ilm_weight
    logging.info(f"internal LM: {ilm_type} ({args.ilm_file or 'ASR decoder'}), weight "
                 f"{-ilm_weight}, {count_ilm_params(scorers['ilm'].scorer):,} ILM parameters")


def count_ilm_params(lm: AbsLM) -> int:
    """ILM-related parameters (paper Fig. 1a): decoder parts the ILM runs (+ context learner)
    for ILME; all LM parameters for DR/DR-KD; stored probabilities for a 2-gram."""
    if hasattr(lm, "num_ilm_params"):
        return int(lm.num_ilm_params())
    if isinstance(lm, BigramLM):
        return int(lm.unigram_logp.numel() + lm.backoff_logw.numel() + lm._delta.numel())
    return int(sum(p.numel() for p in lm.parameters()))


@torch.no_grad()
def perplexity(lm: AbsLM, token_ids, vocab_size: int, batch_size: int = 32) -> Dict[str, float]:
    """Perplexity of ``lm`` on token-id sentences (ESPnet LM convention: every sentence is
    scored with its ``<eos>``; sos = eos = V-1)."""
    from espnet2.lm.espnet_model import ESPnetLanguageModel

    model = ESPnetLanguageModel(lm, vocab_size).eval()
    total_nll, total_tokens = 0.0, 0
    order = sorted(range(len(token_ids)), key=lambda i: len(token_ids[i]))
    device = next((b.device for b in lm.buffers()), None) or next(
        (p.device for p in lm.parameters()), torch.device("cpu"))
    for start in range(0, len(order), batch_size):
        batch = [token_ids[i] for i in order[start:start + batch_size]]
        lengths = torch.tensor([len(s) for s in batch], device=device)
        text = torch.zeros(len(batch), int(lengths.max()), dtype=torch.long, device=device)
        for row, sent in enumerate(batch):
            text[row, : len(sent)] = torch.as_tensor(sent, dtype=torch.long)
        nll, x_lengths = model.nll(text, lengths)
        total_nll += float(nll.sum())
        total_tokens += int(x_lengths.sum())
    return dict(ppl=float(torch.tensor(total_nll / total_tokens).exp()),
                nll_per_token=total_nll / total_tokens, tokens=float(total_tokens))
