"""Decoder-based internal LM (ILM) estimation: the ASR decoder run on the label history with its
acoustic context replaced (:mod:`espnet_ext.lm.decoder_adapters`), used as an ESPnet LM.

ILME-Z replaces the context by zeros (Meng et al., SLT 2021); ILME-L by a vector predicted from
the label history by a small learned module (Liu et al., Interspeech 2022;
:mod:`espnet_ext.lm.ilm_context`). :class:`InternalLM` is an ``AbsLM``: ``forward`` gives
teacher-forced logits (KD teacher, perplexity via ``ESPnetLanguageModel``), ``batch_score``
scores hypotheses in beam search.
"""
from typing import Any, List, Optional, Tuple

import torch
from espnet2.asr.decoder.abs_decoder import AbsDecoder
from espnet2.lm.abs_model import AbsLM
from typeguard import typechecked

from espnet_ext.lm.decoder_adapters import make_adapter
from espnet_ext.lm.ilm_context import load_context_learner
from espnet_ext.utils.tokens import check_same_tokens


class InternalLM(AbsLM):
    """The ASR decoder as an LM with zero (ILME-Z) or learned (ILME-L) acoustic context."""

    @typechecked
    def __init__(self, decoder: AbsDecoder, context_learner: Optional[torch.nn.Module] = None,
                 sos: Optional[int] = None):
        super().__init__()
        self.decoder = decoder
        self.context_learner = context_learner
        self.adapter = make_adapter(decoder)
        self.sos = sos
        if context_learner is not None and tuple(context_learner.context_shape) != tuple(
                self.adapter.context_shape):
            raise ValueError(
                f"context learner predicts {tuple(context_learner.context_shape)} contexts, "
                f"decoder expects {tuple(self.adapter.context_shape)}"
            )

    def contexts(self, ys_in: torch.Tensor) -> torch.Tensor:
        """Contexts ``(B, L, K, C)`` for every position of ``ys_in``."""
        if self.context_learner is None:
            dtype = next(self.decoder.parameters()).dtype
            return ys_in.new_zeros((*ys_in.shape, *self.adapter.context_shape), dtype=dtype)
        return self.context_learner(ys_in)

    def forward(self, input: torch.Tensor, hidden=None) -> Tuple[torch.Tensor, None]:
        """Logits ``(B, L, V)``; ``input`` starts with sos (ESPnet LMs use eos = sos = V-1)."""
        return self.adapter.forward(input, self.contexts(input)), None

    def batch_score(self, ys: torch.Tensor, states: List[Any], xs: torch.Tensor):
        """Beam-search step; ``xs`` (acoustics) is ignored. Per-hypothesis state:
        ``(decoder state, learner state, context history if the decoder needs it)``."""
        n = ys.size(0)
        fresh = states[0] is None
        full = self.adapter.needs_full_context
        if self.context_learner is None:
            ctx = self.contexts(ys if (fresh or full) else ys[:, -1:])
            ctx_states, history = [None] * n, [None] * n
        else:
            ctx, ctx_states = self.context_learner.batch_contexts(
                ys, None if fresh else [s[1] for s in states])
            if full and not fresh:
                ctx = torch.cat([torch.stack([s[2] for s in states]), ctx], dim=1)
            history = list(ctx) if full else [None] * n
        dec_states = [None] * n if fresh else [s[0] for s in states]
        logp, new_dec = self.adapter.batch_step(ys, dec_states, ctx)
        return logp, list(zip(new_dec, ctx_states, history))

    def score(self, y: torch.Tensor, state: Any, x: torch.Tensor):
        logp, states = self.batch_score(y.unsqueeze(0), [state], x.unsqueeze(0))
        return logp[0], states[0]

    def num_ilm_params(self) -> int:
        """ILM-related parameters: decoder parts the ILM runs plus the context learner."""
        n = sum(p.numel() for p in self.adapter.parameters())
        if self.context_learner is not None:
            n += sum(p.numel() for p in self.context_learner.parameters())
        return n


@typechecked
def load_internal_lm(
    asr_train_config: str,
    asr_model_file: str,
    ilm_type: str = "zero",
    ctx_train_config: Optional[str] = None,
    ctx_model_file: Optional[str] = None,
    device: str = "cpu",
) -> "InternalLM":
    """ILME-Z (``zero``) or ILME-L (``label_ctx``) of a trained ASR model (config + checkpoint).
    Only the decoder is kept; ``import espnet_ext`` has registered our model classes."""
    from espnet2.tasks.asr import ASRTask

    asr_model, _ = ASRTask.build_model_from_file(asr_train_config, asr_model_file, device)
    return internal_lm_from_asr_model(asr_model, ilm_type, ctx_train_config, ctx_model_file,
                                      device, asr_name=f"{asr_model_file} ({asr_train_config})")


def internal_lm_from_asr_model(asr_model, ilm_type: str = "zero",
                               ctx_train_config: Optional[str] = None,
                               ctx_model_file: Optional[str] = None,
                               device: str = "cpu", asr_name: Optional[str] = None
                               ) -> "InternalLM":
    """Build the ILM on an already loaded ASR model (shares its decoder). The ILM is scored as
    an ESPnet LM (sos = eos = V-1: DR-KD teacher, perplexity), so the ASR model must use that
    convention too; ``asr_name`` (its file) goes into the error."""
    asr_name = asr_name or "(in memory)"
    check_same_tokens(asr_model.token_list, asr_model.token_list,
                      f"ASR model {asr_name} vs its internal LM ({ilm_type})",
                      asr_sos=asr_model.sos, asr_eos=asr_model.eos)
    learner = None
    if ilm_type == "label_ctx":
        if ctx_model_file is None:
            raise ValueError("ILME-L (label_ctx) needs the context learner checkpoint")
        learner, token_list = load_context_learner(ctx_train_config, ctx_model_file, device)
        check_same_tokens(asr_model.token_list, token_list,
                          f"ASR model {asr_name} vs context learner {ctx_model_file}")
    elif ilm_type != "zero":
        raise ValueError(f"decoder-based ILM type must be zero|label_ctx, got {ilm_type}")
    ilm = InternalLM(asr_model.decoder, learner, sos=asr_model.sos).to(device).eval()
    ilm.requires_grad_(False)
    ilm.token_list = list(asr_model.token_list)
    return ilm
