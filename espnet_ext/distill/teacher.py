"""Frozen pre-trained LM (PLM) teacher: loading, ASR-token alignment and feature extraction.

Alignment contract (paper §2.1.2, docs/differences.md): for an utterance of L ASR tokens the PLM
input is ``[CLS] t_1 .. t_L [SEP]``; dropping the [CLS] output leaves L + 1 rows, row j describing
ASR token j and the last row ([SEP]) the EOS position. This only holds when the PLM tokenises the
transcript into exactly one token per ASR token; the reference never checks it (digits or latin
letters in Chinese text silently shift every later row). :class:`TokenAligner` checks it per
utterance and returns ``None`` with a reason when it fails, so callers can apply an explicit policy.

- ``char`` / ``bpe`` ASR tokens: the transcript is rebuilt from the tokens, tokenised by the PLM
  with character offsets, and each PLM token must cover exactly the characters of one ASR token
  (same spans, same order). One Chinese character -> one token (also ``[UNK]``) passes;
  "2018" read as one PLM token for four ASR characters fails; a ``<space>`` token fails.
- ``hugging_face`` ASR tokens (the ASR token list *is* the PLM vocabulary, or a compact subset of
  it): tokens map to PLM ids by their strings, 1:1 by construction; the token list is verified
  against the PLM vocabulary once (a full-size list must keep the PLM's ids).

The same code serves offline extraction (``espnet_ext.bin.extract_plm_feats``) and the optional
online teacher of :class:`espnet_ext.distill.hkd.HierarchicalDistiller`.
"""
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import torch

from espnet_ext.utils.tokens import read_token_list

TOKEN_TYPES = ("char", "bpe", "hugging_face")


@dataclass
class Alignment:
    """PLM input ids (with [CLS]/[SEP]) for one utterance, or None and the reason it misaligns."""

    input_ids: Optional[List[int]]
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.input_ids is not None


def load_plm(model_name_or_path: str):
    """(tokenizer, model) of a Hugging Face encoder, frozen: eval mode, no gradients."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_name_or_path)
    model = AutoModel.from_pretrained(model_name_or_path)
    model.eval().requires_grad_(False)
    return tokenizer, model


class TokenAligner:
    """Builds PLM inputs whose outputs line up 1:1 with an utterance's ASR tokens (+ EOS)."""

    def __init__(
        self,
        tokenizer,
        token_type: str,
        token_list: Optional[Sequence[str]] = None,
        max_length: int = 512,
        space_symbol: str = "<space>",
        unk_symbol: str = "<unk>",
    ):
        if token_type not in TOKEN_TYPES:
            raise ValueError(f"token_type must be one of {TOKEN_TYPES}, got {token_type!r}")
        self.tokenizer = tokenizer
        self.token_type = token_type
        self.max_length = max_length
        self.space_symbol = space_symbol
        self.unk_symbol = unk_symbol
        self.prefix_id = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
        self.suffix_id = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
        if self.prefix_id is None or self.suffix_id is None:
            raise ValueError("the PLM tokenizer has no [CLS]/[SEP] (or BOS/EOS) token")
        if token_type == "hugging_face":
            if token_list is not None:
                self.verify_vocabulary(token_list)
        elif not getattr(tokenizer, "is_fast", False):
            raise ValueError("character offsets need a fast (Rust) tokenizer; this PLM has none")

    def verify_vocabulary(self, token_list: Sequence[str]) -> None:
        """With token_type hugging_face the ASR token list must be the PLM vocabulary (ids kept),
        or a compact list (fewer entries: ESPnet specials + PLM pieces, espnet_ext.utils.tokens)."""
        vocab = self.tokenizer.convert_ids_to_tokens(list(range(len(self.tokenizer))))
        token_list = list(token_list)
        if len(token_list) < len(vocab):
            known = set(vocab) | {"<blank>", self.unk_symbol, "<sos/eos>"}
            foreign = [t for t in token_list if t not in known]
            if foreign:
                raise ValueError(f"compact hugging_face token list has {len(foreign)} entries that are "
                                 f"not PLM pieces, e.g. {foreign[:5]}")
            return
        # espnet_ext.utils.tokens' hugging_face list: ids 0/1 renamed <blank>/<unk> (never produced
        # from text), every other id kept, <sos/eos> appended as id V.
        espnet_layout = len(token_list) == len(vocab) + 1 and token_list[2 : len(vocab)] == list(vocab[2:])
        if token_list != list(vocab) and not espnet_layout:
            first = next(
                (i for i, (a, b) in enumerate(zip(token_list, vocab)) if a != b),
                min(len(token_list), len(vocab)),
            )
            raise ValueError(
                "token_type hugging_face needs the ASR token list to be the PLM vocabulary "
                f"(sizes {len(token_list)} vs {len(vocab)}, first difference at id {first})"
            )

    def align(self, tokens: Sequence[str]) -> Alignment:
        """PLM input ids for ASR ``tokens`` (strings, no EOS), verified 1:1; or the reason not."""
        if len(tokens) + 2 > self.max_length:
            return Alignment(None, f"{len(tokens)} tokens exceed the PLM's {self.max_length} positions")
        if self.token_type == "hugging_face":
            # an <unk> id (compact list, online teacher) reads as [UNK]
            tokens = [self.tokenizer.unk_token if t == self.unk_symbol else t for t in tokens]
            ids = self.tokenizer.convert_tokens_to_ids(list(tokens))
            unk = self.tokenizer.unk_token_id
            bad = [t for t, i in zip(tokens, ids) if i is None or (i == unk and t != self.tokenizer.unk_token)]
            if bad:
                return Alignment(None, f"tokens not in the PLM vocabulary: {bad[:5]}")
            return Alignment([self.prefix_id] + list(ids) + [self.suffix_id])
        text, spans = self._text_and_spans(tokens)
        for tok, (s, e) in zip(tokens, spans):
            if s == e:
                return Alignment(None, f"token {tok!r} is blank for the PLM")
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        plm_spans = [tuple(o) for o in enc["offset_mapping"]]
        if plm_spans != spans:
            plm_tokens = self.tokenizer.convert_ids_to_tokens(enc["input_ids"])
            where = next(
                (i for i, (a, b) in enumerate(zip(spans, plm_spans)) if a != b), min(len(spans), len(plm_spans))
            )
            asr_here = tokens[where] if where < len(tokens) else None
            plm_here = plm_tokens[where] if where < len(plm_tokens) else None
            return Alignment(
                None,
                f"{len(tokens)} ASR tokens vs {len(plm_spans)} PLM tokens; first mismatch at "
                f"token {where}: ASR {asr_here!r} vs PLM {plm_here!r}",
            )
        return Alignment([self.prefix_id] + list(enc["input_ids"]) + [self.suffix_id])

    def _text_and_spans(self, tokens: Sequence[str]) -> Tuple[str, List[Tuple[int, int]]]:
        """Transcript rebuilt from ASR tokens and each token's character span (spaces excluded)."""
        text = ""
        spans = []
        for tok in tokens:
            if tok == self.unk_symbol:
                piece = self.tokenizer.unk_token  # an <unk> id (online teacher) reads as [UNK]
            elif self.token_type == "char":
                piece = " " if tok == self.space_symbol else tok
            else:  # sentencepiece: "\u2581" marks a word start
                piece = tok.replace("\u2581", " ")
            start = len(text) + (len(piece) - len(piece.lstrip()))
            text += piece
            spans.append((start, max(start, len(text.rstrip()))))
        return text, spans


class PLMTeacher:
    """A frozen PLM giving per-utterance features of shape (L + 1, D) aligned to ASR tokens.

    Deliberately not a ``torch.nn.Module``: a model holding it keeps it out of ``state_dict()``,
    ``parameters()`` and ``train()`` (ESPnet's trainer calls both on every model part).
    """

    def __init__(
        self,
        model_name_or_path: str,
        token_type: str,
        token_list: Optional[Union[str, Path, Sequence[str]]] = None,
        layer: int = -1,
        space_symbol: str = "<space>",
        unk_symbol: str = "<unk>",
        device: Union[str, torch.device] = "cpu",
    ):
        self.model_name_or_path = str(model_name_or_path)
        self.tokenizer, self.model = load_plm(self.model_name_or_path)
        self.token_list = read_token_list(token_list) if token_list is not None else None
        num_layers = self.model.config.num_hidden_layers
        if not -num_layers - 1 <= layer <= num_layers:
            raise ValueError(f"layer {layer} out of range for a {num_layers}-layer PLM")
        self.layer = layer
        self.dim = int(self.model.config.hidden_size)
        self.aligner = TokenAligner(
            self.tokenizer,
            token_type,
            token_list=self.token_list,
            max_length=int(getattr(self.model.config, "max_position_embeddings", 512)),
            space_symbol=space_symbol,
            unk_symbol=unk_symbol,
        )
        self.to(device)

    def to(self, device) -> "PLMTeacher":
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    @torch.no_grad()
    def features(self, batch_input_ids: Sequence[Sequence[int]]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Run the PLM on aligned inputs; returns (B, T, D) fp32 features without [CLS] (zero
        padded; row T_b - 1 is [SEP]) and lengths (B,) = input length - 1 = L + 1."""
        lengths = torch.tensor([len(x) for x in batch_input_ids], dtype=torch.long)
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(batch_input_ids), int(lengths.max())), pad_id, dtype=torch.long)
        for b, x in enumerate(batch_input_ids):
            ids[b, : len(x)] = torch.tensor(x, dtype=torch.long)
        mask = (torch.arange(ids.size(1)).unsqueeze(0) < lengths.unsqueeze(1)).long()
        want_hidden = self.layer != -1
        out = self.model(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            output_hidden_states=want_hidden,
        )
        hidden = out.hidden_states[self.layer] if want_hidden else out.last_hidden_state
        feats = hidden[:, 1:].float() * mask[:, 1:, None].to(hidden.device)
        return feats, lengths - 1

    def features_for_token_ids(
        self, token_ids: torch.Tensor, lengths: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, List[str]]:
        """Online teacher: features for ASR id sequences (B, L) of ``lengths`` (no EOS).

        Returns (feats (B, T, D), feat_lengths (B,), reasons); a misaligned utterance gets
        length 0 and its reason (empty string when aligned).
        """
        if self.token_list is None:
            raise ValueError("the online PLM teacher needs the ASR token list (token_list)")
        aligned, reasons = [], []
        for row, n in zip(token_ids.tolist(), lengths.tolist()):
            a = self.aligner.align([self.token_list[i] for i in row[:n]])
            aligned.append(a)
            reasons.append(a.reason)
        ok = [b for b, a in enumerate(aligned) if a.ok]
        B = token_ids.size(0)
        feat_lengths = torch.zeros(B, dtype=torch.long)
        if not ok:
            return torch.zeros(B, 0, self.dim, device=self.device), feat_lengths, reasons
        feats_ok, lens_ok = self.features([aligned[b].input_ids for b in ok])
        feats = feats_ok.new_zeros(B, feats_ok.size(1), self.dim)
        feats[ok] = feats_ok
        feat_lengths[ok] = lens_ok
        return feats, feat_lengths, reasons


def log_misaligned(logger: logging.Logger, utt_id: str, reason: str) -> None:
    logger.warning("PLM teacher misaligned for utterance %s: %s", utt_id, reason)
