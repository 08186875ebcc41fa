"""CIF encoder-decoder ASR model for ESPnet2 (model choice ``cif``).

encoder (80 ms frames) -> CTC head and CIF predictor -> token-level vectors c_1..c_{L+1} ->
autoregressive CIF decoder (HKD paper §2.1.1; reference: docs/differences.md).
The EOS is a CIF token: CIF scaling/quantity targets, CE targets and CTC targets all have L+1
tokens (``<sos/eos>`` appended).

Loss, as the reference (every term summed over the batch, then divided by the token count Σ(L+1)):
    CE_ls + quantity_weight * Σ_b |Σ_t a_bt - (L_b+1)| + ctc_weight * CTC  (+ distillation terms)
with uniform label smoothing (target 1-ε, every other class ε/(V-1)). The weights are additive,
not ESPnet's (1-w)/w interpolation. The returned ``weight`` is Σ(L+1), so ESPnet's multi-GPU
averaging reproduces the reference's normalisation by the global token count.

Bad input: speech features holding NaN/inf are refused with an error naming the utterances; a
non-finite loss is logged with the batch's utterances (and those whose teacher features are not
finite) and reported as the stat ``nonfinite_loss``; ESPnet then skips that update.

model_conf keys: ctc_weight (0.5), quantity_weight (1.0), lsm_weight (0.1), plus ESPnet's
ignore_id, report_cer/wer, sym_*. The two parts of the CIF model that ESPnet's ASRTask does not
build, the predictor and the optional distiller, are chosen by name and conf
(:mod:`espnet_ext.asr.cif_part_choices`): CIFASRTask takes them as ``--predictor``/
``--predictor_conf`` and ``--distiller``/``--distiller_conf`` and writes them into ``model_conf``,
the only options ESPnet's ``ASRTask.build_model`` hands a model, so stock
``ASRTask.build_model_from_file`` rebuilds the same model from config.yaml. The model builds the
parts itself because their sizes come from the encoder and decoder that build_model makes just
before it. With a distiller, ``plm_feats`` (B, L+1, Dt) in the batch adds the distillation sums /
Σ(L+1) to the loss.

Precision under a bf16 autocast (``--cpu_bf16``, espnet_ext.train.trainer): CTC, the CE and
quantity losses, the CIF weights and integration, and the distillation losses run in fp32.

Deliberate differences from the reference (also in docs/differences.md):
- CTC uses ESPnet's CTC module with ``zero_infinity`` (ctc_conf); infeasible utterances are logged.
- Normalisation/SpecAugment order: feature normalisation first, then SpecAugment with zero fill,
  as the reference (CMVN, then masks filled with the mean ~ 0); ESPnet2 applies SpecAugment first.
- Validation (model in eval mode, targets given) runs the inference CIF (no scaling, tail
  handling) and teacher-forces all L+1 steps with c_i = 0 beyond the CIF length; the reference
  truncates targets to min(N_cif_max, max(L+1)).
"""
import logging
import math
from typing import Dict, List, Optional, Tuple, Union

import torch
from espnet.nets.pytorch_backend.nets_utils import th_accuracy
from espnet.nets.pytorch_backend.transformer.add_sos_eos import add_sos_eos
from espnet2.asr.ctc import CTC
from espnet2.asr.decoder.abs_decoder import AbsDecoder
from espnet2.asr.encoder.abs_encoder import AbsEncoder
from espnet2.asr.espnet_model import ESPnetASRModel
from espnet2.asr.frontend.abs_frontend import AbsFrontend
from espnet2.asr.postencoder.abs_postencoder import AbsPostEncoder
from espnet2.asr.preencoder.abs_preencoder import AbsPreEncoder
from espnet2.asr.specaug.abs_specaug import AbsSpecAug
from espnet2.layers.abs_normalize import AbsNormalize
from espnet2.torch_utils.device_funcs import force_gatherable
from typeguard import typechecked

from espnet_ext.asr.cif import CIFOutput
from espnet_ext.asr.cif_part_choices import distiller_choices, predictor_choices
from espnet_ext.asr.decoder.cif_decoder import CIFDecoder


def _nonfinite_rows(x: torch.Tensor, utt_id: List[str]) -> List[str]:
    """Utterances (batch rows) of ``x`` holding NaN or inf."""
    bad = ~torch.isfinite(x.reshape(x.size(0), -1)).all(dim=1)
    return [utt_id[b] for b in bad.nonzero().flatten().tolist()]


def _refuse_nonfinite(what: str, x: torch.Tensor, utt_id: List[str]) -> None:
    """NaN/inf input is corrupt data: in training it would also poison the BatchNorm running
    statistics of the encoder for good (ESPnet's skip of the update cannot undo that)."""
    bad = _nonfinite_rows(x, utt_id)
    if bad:
        raise ValueError(f"{what} of utterance(s) {', '.join(bad)} contain NaN or inf; the "
                         f"feature files are corrupt: recompute them or drop the utterances")


class CIFASRModel(ESPnetASRModel):
    """Conformer-pooling encoder + CIF + autoregressive CIF decoder, CE-LS + CTC + quantity loss."""

    @typechecked
    def __init__(
        self,
        vocab_size: int,
        token_list: Union[Tuple[str, ...], List[str]],
        frontend: Optional[AbsFrontend],
        specaug: Optional[AbsSpecAug],
        normalize: Optional[AbsNormalize],
        preencoder: Optional[AbsPreEncoder],
        encoder: AbsEncoder,
        postencoder: Optional[AbsPostEncoder],
        decoder: AbsDecoder,
        ctc: CTC,
        joint_network: Optional[torch.nn.Module] = None,
        predictor: str = "cif",
        predictor_conf: Optional[dict] = None,
        distiller: Optional[str] = None,
        distiller_conf: Optional[dict] = None,
        ctc_weight: float = 0.5,
        quantity_weight: float = 1.0,
        lsm_weight: float = 0.1,
        ignore_id: int = -1,
        report_cer: bool = True,
        report_wer: bool = True,
        sym_space: str = "<space>",
        sym_blank: str = "<blank>",
        sym_sos: str = "<sos/eos>",
        sym_eos: str = "<sos/eos>",
        extract_feats_in_collect_stats: bool = True,
    ):
        if not isinstance(decoder, CIFDecoder):
            raise TypeError(f"model 'cif' needs decoder 'cif_ar' (CIFDecoder), got {type(decoder).__name__}")
        if joint_network is not None:
            raise ValueError("model 'cif' has no transducer joint network")
        if ctc_weight < 0 or quantity_weight < 0 or not 0 <= lsm_weight < 1:
            raise ValueError(f"invalid loss weights: ctc_weight={ctc_weight}, "
                             f"quantity_weight={quantity_weight}, lsm_weight={lsm_weight}")
        # The parent only keeps the pieces; its CTC/attention interpolation is not used here.
        super().__init__(
            vocab_size=vocab_size, token_list=token_list, frontend=frontend, specaug=specaug,
            normalize=normalize, preencoder=preencoder, encoder=encoder, postencoder=postencoder,
            decoder=decoder, ctc=ctc, joint_network=None, ctc_weight=0.0, ignore_id=ignore_id,
            lsm_weight=lsm_weight, report_cer=report_cer, report_wer=report_wer, sym_space=sym_space,
            sym_blank=sym_blank, sym_sos=sym_sos, sym_eos=sym_eos,
            extract_feats_in_collect_stats=extract_feats_in_collect_stats,
        )
        del self.criterion_att  # replaced by the reference's CE form in _ce_loss
        self.ctc_weight = ctc_weight
        self.ctc = ctc if ctc_weight > 0 else None
        self.quantity_weight = quantity_weight
        self.lsm_weight = lsm_weight
        cif_dim = postencoder.output_size() if postencoder is not None else encoder.output_size()
        if decoder.cif_dim != cif_dim:
            raise ValueError(f"decoder CIF input size {decoder.cif_dim} != encoder output size {cif_dim}")
        self.predictor = predictor_choices.get_class(predictor)(cif_dim, **(predictor_conf or {}))
        distiller_class = distiller_choices.get_class(distiller)
        if distiller_class is None and distiller_conf:
            raise ValueError(f"distiller_conf {distiller_conf} given without a distiller")
        self.distiller = None
        if distiller_class is not None:
            self.distiller = distiller_class(
                cif_dim=cif_dim, decoder_state_dim=decoder.state_dim, **(distiller_conf or {})
            )

    def strip_training_heads(self) -> "CIFASRModel":
        """Drop training-only modules (the distiller) for inference."""
        self.distiller = None
        return self

    def encode(
        self, speech: torch.Tensor, speech_lengths: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Features -> normalisation -> SpecAugment (training) -> encoder: (B, T', D), (B,)."""
        feats, feats_lengths = self._extract_feats(speech, speech_lengths)
        if self.normalize is not None:
            if feats.data_ptr() == speech.data_ptr():
                feats = feats.clone()  # ESPnet's utterance_mvn works in place: keep the caller's input
            feats, feats_lengths = self.normalize(feats, feats_lengths)
        if self.specaug is not None and self.training:
            feats, feats_lengths = self.specaug(feats, feats_lengths)
        if self.preencoder is not None:
            feats, feats_lengths = self.preencoder(feats, feats_lengths)
        encoder_out, encoder_out_lens, _ = self.encoder(feats, feats_lengths)
        if self.postencoder is not None:
            encoder_out, encoder_out_lens = self.postencoder(encoder_out, encoder_out_lens)
        return encoder_out, encoder_out_lens

    def cif_encode(
        self, speech: torch.Tensor, speech_lengths: torch.Tensor, count_from_ctc: bool = False
    ) -> Tuple[CIFOutput, torch.Tensor, torch.Tensor]:
        """Inference CIF: (CIFOutput, encoder_out, encoder_out_lens).

        By default the weights fire unscaled, a residual above the tail threshold adding a last
        token. With ``count_from_ctc`` the number of tokens is the CTC branch's greedy count
        (:meth:`ctc_token_counts`) and the weights are scaled to fire exactly that many (+ EOS),
        as in training with the reference length: the CIF positions, the CTC count."""
        encoder_out, encoder_out_lens = self.encode(speech, speech_lengths)
        if count_from_ctc:
            counts = self.ctc_token_counts(encoder_out, encoder_out_lens)
            cif_out = self.predictor(encoder_out, encoder_out_lens, target_lengths=counts + 1)
            return cif_out, encoder_out, encoder_out_lens
        return self.predictor(encoder_out, encoder_out_lens), encoder_out, encoder_out_lens

    def ctc_token_counts(self, encoder_out: torch.Tensor, encoder_out_lens: torch.Tensor) -> torch.Tensor:
        """(B,) tokens of the CTC greedy path: runs of one non-blank label within each length."""
        if self.ctc is None:
            raise ValueError("counting tokens with CTC needs a model trained with a CTC branch")
        best = self.ctc.argmax(encoder_out)  # (B, T)
        valid = torch.arange(best.size(1), device=best.device)[None] < encoder_out_lens[:, None]
        new_run = torch.ones_like(best, dtype=torch.bool)
        new_run[:, 1:] = best[:, 1:] != best[:, :-1]
        return ((best != self.blank_id) & new_run & valid).sum(dim=1)

    def forward(
        self,
        speech: torch.Tensor,
        speech_lengths: torch.Tensor,
        text: torch.Tensor,
        text_lengths: torch.Tensor,
        plm_feats: Optional[torch.Tensor] = None,
        plm_feats_lengths: Optional[torch.Tensor] = None,
        utt_id: Optional[List[str]] = None,
        **kwargs,
    ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor], torch.Tensor]:
        """Loss per target token (EOS included), stats, and weight = Σ(L+1)."""
        batch_size = speech.shape[0]
        if not speech_lengths.shape[0] == text.shape[0] == text_lengths.shape[0] == batch_size:
            raise ValueError(f"batch size mismatch: speech {tuple(speech.shape)}, text {tuple(text.shape)}")
        utt_id = list(utt_id) if utt_id is not None else [f"#{i}" for i in range(batch_size)]
        _refuse_nonfinite("speech features", speech, utt_id)
        text = text[:, : text_lengths.max()].clone()
        text[text == -1] = self.ignore_id

        encoder_out, encoder_out_lens = self.encode(speech, speech_lengths)
        ys_in, ys_out = add_sos_eos(text, self.sos, self.eos, self.ignore_id)
        ys_lens = text_lengths + 1
        num_tokens = ys_lens.sum()

        if self.training:
            cif_out = self.predictor(encoder_out, encoder_out_lens, target_lengths=ys_lens)
            num_cif = self.predictor.count_tokens(cif_out.alpha_sum)
        else:
            cif_out = self.predictor(encoder_out, encoder_out_lens)
            num_cif = cif_out.lengths
        logits, _, dec_states = self.decoder(
            cif_out.outputs, cif_out.lengths, ys_in, ys_lens, return_states=True
        )

        loss_ce, nll = self._ce_loss(logits, ys_out)
        loss_quantity = (cif_out.alpha_sum - ys_lens.to(cif_out.alpha_sum.dtype)).abs().sum()
        total = loss_ce + self.quantity_weight * loss_quantity
        stats = dict(
            loss_ce=loss_ce.detach() / num_tokens,
            nll=nll.detach() / num_tokens,
            loss_quantity=loss_quantity.detach() / num_tokens,
            acc=th_accuracy(logits.reshape(-1, self.vocab_size), ys_out, ignore_label=self.ignore_id),
            cif_count_err=(num_cif - ys_lens).abs().float().mean(),
        )
        if self.ctc is not None:
            self._warn_ctc_infeasible(encoder_out_lens, ys_out, ys_lens, utt_id)
            # ESPnet's CTC returns the batch mean: times B gives the reference's sum. In fp32 (its
            # log-softmax would follow a bf16 autocast).
            with torch.autocast(encoder_out.device.type, enabled=False):
                ctc_in = encoder_out.to(self.ctc.ctc_lo.weight.dtype)
                loss_ctc = (self.ctc(ctc_in, encoder_out_lens, ys_out, ys_lens) * batch_size).sum()
            total = total + self.ctc_weight * loss_ctc
            stats["loss_ctc"] = loss_ctc.detach() / num_tokens
        if self.distiller is not None and (
            plm_feats is not None or self.distiller.has_online_teacher
        ):
            parts = self.distiller(
                cif_out=cif_out.outputs, cif_lengths=cif_out.lengths, decoder_states=dec_states,
                teacher=plm_feats, teacher_lengths=plm_feats_lengths, ys_out=ys_out, utt_id=utt_id,
            )
            total = total + parts["loss_distill"]
            for key, value in parts.items():
                value = value.detach() if torch.is_tensor(value) else value
                # Loss sums are reported per token like the other terms; counts/ratios as given.
                stats[key] = value / num_tokens if key.startswith("loss_") else value
        if not self.training and self.error_calculator is not None:
            # Teacher-forced CER/WER (the reference's validation "uer"): EOS step excluded and
            # predicted EOS dropped (mapped to blank, which the calculator removes), as the reference.
            hyp = logits[:, : text.size(1)].argmax(-1)
            hyp = hyp.masked_fill(hyp == self.eos, self.blank_id)
            stats["cer"], stats["wer"] = self.error_calculator(hyp.cpu(), text.cpu())

        loss = total / num_tokens
        stats["loss"] = loss.detach()
        # ESPnet's trainer skips the update of a batch whose gradient is not finite and leaves its
        # loss out of the epoch average, both without saying which utterances: name them here and
        # report the share of such batches (1 or 0 per batch; token-weighted over the epoch).
        finite = bool(torch.isfinite(loss))
        stats["nonfinite_loss"] = loss.new_tensor(0.0 if finite else 1.0)
        if not finite:
            terms = {k: float(v) for k, v in stats.items() if k.startswith("loss_")}
            bad = ", ".join(f"{k}={v}" for k, v in terms.items() if not math.isfinite(v))
            culprits = _nonfinite_rows(plm_feats, utt_id) if plm_feats is not None else []
            logging.warning(
                "non-finite loss (%s) in a %s batch of %d utterance(s) %s%s; ESPnet skips its "
                "update", bad or f"loss={float(loss)}", "training" if self.training else "validation",
                batch_size, ", ".join(utt_id[:8]) + (" ..." if batch_size > 8 else ""),
                f"; teacher features not finite for: {', '.join(culprits)}" if culprits else "",
            )
        loss, stats, weight = force_gatherable((loss, stats, num_tokens), loss.device)
        return loss, stats, weight

    def _ce_loss(self, logits: torch.Tensor, ys_out: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Summed label-smoothed CE (target 1-ε, other classes ε/(V-1)) and summed NLL, in fp32."""
        lprobs = torch.log_softmax(logits.float(), dim=-1)
        valid = ys_out != self.ignore_id
        target = ys_out.masked_fill(~valid, 0)
        nll = -lprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1)
        smooth = -lprobs.sum(-1)
        eps_other = self.lsm_weight / (self.vocab_size - 1)
        loss = (1.0 - self.lsm_weight - eps_other) * nll + eps_other * smooth
        return loss.masked_fill(~valid, 0.0).sum(), nll.masked_fill(~valid, 0.0).sum()

    def _warn_ctc_infeasible(self, enc_lens, ys_out, ys_lens, utt_id) -> None:
        """Log utterances too short for CTC (their loss is zeroed by zero_infinity)."""
        repeats = ((ys_out[:, 1:] == ys_out[:, :-1]) & (ys_out[:, 1:] != self.ignore_id)).sum(1)
        bad = (enc_lens < ys_lens + repeats).nonzero().flatten().tolist()
        if bad:
            logging.warning(
                "CTC infeasible for %d utterance(s) (encoder frames < tokens incl. EOS + repeats); "
                "their CTC loss is zeroed: %s",
                len(bad), ", ".join(f"{utt_id[b]} ({int(enc_lens[b])} < {int(ys_lens[b] + repeats[b])})"
                                    for b in bad),
            )
