"""ILME-L: label-synchronous context vector learning.

Liu et al. (Interspeech 2022, ref. [19] of the DR-KD paper) estimate the internal LM of an
attention-based decoder by feeding it, instead of the acoustic context, a vector predicted
without the encoder, trained on the ASR training transcripts to minimise the decoder's
perplexity with every ASR parameter frozen. Here the predictor is a small LSTM over the label
history (it sees what the decoder's query sees: the labels so far), so it works for every
decoder with an adapter in :mod:`espnet_ext.lm.decoder_adapters` (LAS, transformer, CIF). The
output layer starts at zero, so training starts exactly from ILME-Z and can only lower the ILM
perplexity from there.
"""
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
import yaml
from espnet.nets.pytorch_backend.nets_utils import make_pad_mask
from espnet2.torch_utils.device_funcs import force_gatherable
from espnet2.train.abs_espnet_model import AbsESPnetModel
from typeguard import typechecked

from espnet_ext.lm.decoder_adapters import make_adapter
from espnet_ext.lm.frozen import HiddenFrozenMixin
from espnet_ext.utils.tokens import read_token_list


class ContextLearner(torch.nn.Module):
    """LSTM over the label history -> K context vectors of size C for the next label."""

    @typechecked
    def __init__(
        self,
        vocab_size: int,
        context_shape: Sequence[int],
        embed_size: int = 128,
        hidden_size: int = 256,
        num_layers: int = 1,
        dropout: float = 0.0,
    ):
        super().__init__()
        if len(context_shape) != 2:
            raise ValueError(f"context_shape must be [K, C], got {list(context_shape)}")
        self.context_shape = tuple(int(d) for d in context_shape)
        self.embed = torch.nn.Embedding(vocab_size, embed_size)
        self.lstm = torch.nn.LSTM(embed_size, hidden_size, num_layers, batch_first=True,
                                  dropout=dropout if num_layers > 1 else 0.0)
        self.dropout = torch.nn.Dropout(dropout)
        k, c = self.context_shape
        self.output = torch.nn.Linear(hidden_size, k * c)
        torch.nn.init.zeros_(self.output.weight)  # start from ILME-Z (all-zero contexts)
        torch.nn.init.zeros_(self.output.bias)

    def _project(self, h: torch.Tensor) -> torch.Tensor:
        return self.output(self.dropout(h)).view(*h.shape[:-1], *self.context_shape)

    def forward(self, ys_in: torch.Tensor) -> torch.Tensor:
        """Contexts ``(B, L, K, C)`` for inputs ``ys_in (B, L)`` starting with sos."""
        h, _ = self.lstm(self.embed(ys_in))
        return self._project(h)

    def batch_contexts(
        self, ys: torch.Tensor, states: Optional[List[Any]]
    ) -> Tuple[torch.Tensor, List[Any]]:
        """Incremental version for beam search: contexts of all positions when ``states`` is
        None, else of the last one; per-hypothesis LSTM states ``(h, c)``."""
        if states is None:
            h, (hn, cn) = self.lstm(self.embed(ys))
        else:
            h0 = torch.stack([s[0] for s in states], dim=1)
            c0 = torch.stack([s[1] for s in states], dim=1)
            h, (hn, cn) = self.lstm(self.embed(ys[:, -1:]), (h0, c0))
        return self._project(h), [(hn[:, b], cn[:, b]) for b in range(ys.size(0))]


class ContextLearnerModel(HiddenFrozenMixin, AbsESPnetModel):
    """Trains a :class:`ContextLearner` through the frozen ASR decoder: cross-entropy of the
    decoder's next-label distribution on transcripts (ESPnet model contract; only the learner
    is a registered submodule, so checkpoints hold ``learner.*`` only)."""

    _hidden_names = ("_decoder",)

    @typechecked
    def __init__(self, learner: ContextLearner, vocab_size: int, sos: int, eos: int):
        super().__init__()
        self.learner = learner
        self.vocab_size = vocab_size
        self.sos, self.eos = sos, eos
        self._decoder = None

    def set_decoder(self, decoder: torch.nn.Module) -> None:
        self._set_hidden("_decoder", decoder)
        adapter = make_adapter(decoder)
        if tuple(adapter.context_shape) != self.learner.context_shape:
            raise ValueError(f"learner predicts {self.learner.context_shape} contexts, "
                             f"decoder expects {tuple(adapter.context_shape)}")
        object.__setattr__(self, "_adapter", adapter)

    def forward(self, text: torch.Tensor, text_lengths: torch.Tensor, **kwargs):
        if self._decoder is None:
            raise RuntimeError("ContextLearnerModel has no ASR decoder (set_decoder)")
        text = text[:, : text_lengths.max()]
        ys_in = F.pad(text, [1, 0], value=self.sos)
        target = F.pad(text, [0, 1], value=0)
        target[torch.arange(text.size(0)), text_lengths] = self.eos
        mask = ~make_pad_mask(text_lengths + 1, maxlen=ys_in.size(1)).to(text.device)
        logits = self._adapter.forward(ys_in, self.learner(ys_in))
        nll = F.cross_entropy(logits.transpose(1, 2), target, reduction="none")
        ntok = mask.sum()
        loss = nll.masked_fill(~mask, 0.0).sum() / ntok
        acc = ((logits.argmax(-1) == target) & mask).sum().float() / ntok
        stats = dict(loss=loss.detach(), acc=acc.detach(), ppl=loss.detach().exp())
        return force_gatherable((loss, stats, ntok), loss.device)

    def collect_feats(self, text: torch.Tensor, text_lengths: torch.Tensor, **kwargs):
        return {}


@typechecked
def load_context_learner(
    train_config: Optional[Union[str, Path]],
    model_file: Union[str, Path],
    device: str = "cpu",
) -> Tuple[ContextLearner, List[str]]:
    """Load a trained learner without its ASR model (the decoder comes from the ASR model used
    for decoding). ``train_config`` defaults to ``config.yaml`` next to ``model_file``."""
    if train_config is None:
        train_config = Path(model_file).parent / "config.yaml"
    with open(train_config, encoding="utf-8") as f:
        conf: Dict[str, Any] = yaml.safe_load(f)
    token_list = read_token_list(conf["token_list"])
    learner = ContextLearner(len(token_list), **conf["learner_conf"])
    state = torch.load(model_file, map_location=device, weights_only=True)
    learner_state = {k[len("learner."):]: v for k, v in state.items() if k.startswith("learner.")}
    if not learner_state:
        raise ValueError(f"{model_file}: no 'learner.*' parameters (not an ILME-L checkpoint)")
    learner.load_state_dict(learner_state)
    return learner.to(device).eval(), list(token_list)
