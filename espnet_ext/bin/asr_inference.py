"""Batched ASR decoding: many utterances decoded together by one beam search.

    python -m espnet_ext.bin.asr_inference --asr_train_config exp/asr/config.yaml \
        --asr_model_file exp/asr/valid.acc.ave.pth \
        --data_path_and_name_and_type dump/fbank/test/feats.scp,speech,kaldi_ark \
        --output_dir exp/asr/decode/test --config conf/decode_cif.yaml [--lm_train_config ...]

Works for the CIF model (``cif_encode``: N fires give N decoder steps, the last of which is a
scored ``<eos>``, as training aligns the (L+1)-th integrated vector with EOS) and for stock ESPnet
attention encoder-decoder models (free length, ESPnet's maxlenratio/minlenratio/end detection).
Utterances are sorted by length and decoded ``--batch_size`` at a time with
:class:`UtteranceBatchBeamSearch`. Inputs longer than ``--max_segment_seconds`` are cut in their
quietest places (:mod:`espnet_ext.asr.segmentation`) into segments that are batched and decoded
like utterances and joined again, so memory does not grow with the recording's length. Output is
ESPnet's layout ``<output_dir>/<n>best_recog/{text,token,token_int,score}`` sorted by utterance
id, with the score as a plain float; the log ends with the decoding speed (RTF, audio seconds per second).

Extension points: :func:`build_scorers` decides which scorers enter the search (decoder, LM,
length bonus); an internal-LM estimator adds its own arguments to :func:`get_parser` and its
scorers in a wrapped ``build_scorers`` passed to :func:`main`/:func:`inference`. Loaded models
decode again with other fusion weights through :meth:`BatchSpeech2Text.set_fusion_weights` or
:func:`inference`'s ``decoder`` (the fusion-weight grid of ``espnet_ext.bin.tune_fusion``).
"""
import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import humanfriendly
import torch
from espnet.nets.beam_search import Hypothesis
from espnet.nets.scorer_interface import ScorerInterface
from espnet2.utils import config_argparse
from espnet2.utils.types import str2bool, str2triple_str, str_or_none
from tqdm import tqdm

import espnet_ext  # noqa: F401  (registers the CIF model in ESPnet's task registries)
from espnet_ext.asr.cif import tokens_before_eos
from espnet_ext.asr.segmentation import frame_energy, segment_bounds, split_points
from espnet_ext.asr.timestamps import first_weighted_frames
from espnet_ext.asr.utterance_batch_beam_search import UtteranceBatchBeamSearch
from espnet_ext.utils.kaldi_table import iter_table

logger = logging.getLogger("espnet_ext.asr_inference")

Result = Tuple[Optional[str], List[str], List[int], object]  # text, tokens, token ids, Hypothesis
Item = Union[str, Tuple[str, int, int]]  # an utterance id, or (id, start, end) of one of its segments


def get_parser() -> config_argparse.ArgumentParser:
    parser = config_argparse.ArgumentParser(
        description="Batched beam-search ASR decoding (CIF and ESPnet attention models)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--log_level", type=lambda x: x.upper(), default="INFO",
                        choices=("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG", "NOTSET"))
    parser.add_argument("--output_dir", type=str, required=True)
    parser.add_argument("--ngpu", type=int, default=0, choices=(0, 1), help="0: CPU, 1: one GPU")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", default="float32", choices=["float16", "float32", "float64"])
    parser.add_argument("--num_workers", type=int, default=0, help="data loader processes")

    group = parser.add_argument_group("Input data")
    group.add_argument("--data_path_and_name_and_type", type=str2triple_str, required=True,
                       action="append", help="e.g. feats.scp,speech,kaldi_ark or wav.scp,speech,sound")
    group.add_argument("--key_file", type=str_or_none, help="decode only these utterance ids")
    group.add_argument("--allow_variable_data_keys", type=str2bool, default=False)
    group.add_argument("--frame_shift", type=float, default=0.01,
                       help="seconds per frame of 2-D (frames x dims) inputs, for the speed log "
                            "and --max_segment_seconds")
    group.add_argument("--max_segment_seconds", type=float, default=30.0,
                       help="inputs longer than this are cut into segments of at most this length "
                            "in their quietest places near the limit (lowest mean feature value, "
                            "or short-time energy for waveforms), decoded as separate items and "
                            "joined (tokens concatenated, scores summed; 1-best only): peak memory "
                            "then grows with batch_size x this, not with the recording's length. "
                            "0: never cut (memory grows with the longest recording)")

    group = parser.add_argument_group("Models")
    group.add_argument("--asr_train_config", type=str, required=True)
    group.add_argument("--asr_model_file", type=str, required=True)
    group.add_argument("--lm_train_config", type=str_or_none, help="ESPnet LM config.yaml")
    group.add_argument("--lm_file", type=str_or_none, help="ESPnet LM parameters (.pth)")
    group.add_argument("--tail_threshold", type=float, default=None,
                       help="CIF only: override the predictor's inference tail threshold")
    group.add_argument("--cif_count", choices=["cif", "ctc"], default="cif",
                       help="CIF only: number of tokens from the CIF weights (with the tail "
                            "threshold) or from the CTC branch's greedy path (weights scaled to it)")

    group = parser.add_argument_group("Beam search")
    group.add_argument("--batch_size", type=int, default=16, help="utterances decoded together")
    group.add_argument("--nbest", type=int, default=1)
    group.add_argument("--beam_size", type=int, default=10)
    group.add_argument("--lm_weight", type=float, default=1.0, help="shallow-fusion LM weight")
    group.add_argument("--penalty", type=float, default=0.0, help="length bonus per token")
    group.add_argument("--ctc_weight", type=float, default=0.0,
                       help="accepted for ESPnet decode configs; only 0 is supported")
    group.add_argument("--maxlenratio", type=float, default=0.0,
                       help="free-length models: 0 = encoder length with end detection, "
                            ">0 ratio of it, <0 constant maximum")
    group.add_argument("--minlenratio", type=float, default=0.0)
    group.add_argument("--score_floor", type=float, default=-1e4,
                       help="each scorer's log-probs are clamped to >= this before weighting")
    group.add_argument("--cached_scorers", type=str2bool, default=True,
                       help="run ESPnet transformer decoders and the CIF decoder incrementally "
                            "(cached keys/values; same results); false: their own batch_score")
    group.add_argument("--encoder_batching", default="auto", choices=["auto", "batch", "utterance"],
                       help="batch: encode the padded batch at once; utterance: one at a time "
                            "(exactly as unbatched); auto: batch only when the front end, "
                            "normalisation and encoder are padding-exact")

    group = parser.add_argument_group("Text conversion")
    group.add_argument("--token_type", type=str_or_none, default=None,
                       help="default: the ASR training config's")
    group.add_argument("--bpemodel", type=str_or_none, default=None,
                       help="default: the ASR training config's")
    # --- internal-LM fusion (espnet_ext/lm/fusion.py): --ilm_type/--ilm_weight/... ---
    from espnet_ext.lm.fusion import add_ilm_arguments

    add_ilm_arguments(parser)
    # --- end internal-LM fusion ---
    return parser


def build_scorers(
    args: argparse.Namespace, asr_model: torch.nn.Module, device: str
) -> Tuple[Dict[str, ScorerInterface], Dict[str, float]]:
    """Scorers and weights of the search: decoder 1.0, LM ``--lm_weight``, internal LM
    ``-(--ilm_weight)`` (espnet_ext.lm.fusion), length bonus ``--penalty``.

    Wrap this (and pass it to :func:`main`/:func:`inference`) to add scorers.
    """
    scorers: Dict[str, ScorerInterface] = {"decoder": asr_model.decoder}
    weights = {"decoder": 1.0}
    if args.lm_train_config is not None or args.lm_file is not None:
        if args.lm_weight == 0.0:
            logger.info("lm_weight is 0: the LM is not loaded (same result as no LM)")
        else:
            from espnet2.tasks.lm import LMTask

            from espnet_ext.utils.tokens import check_same_tokens

            lm_model, lm_args = LMTask.build_model_from_file(args.lm_train_config, args.lm_file, device)
            # One token list, <sos/eos> last, and the ASR model's sos/eos = the LM's (V-1).
            lm_name = args.lm_file or args.lm_train_config
            check_same_tokens(asr_model.token_list, lm_args.token_list,
                              f"ASR model {args.asr_model_file} vs LM {lm_name}",
                              asr_sos=asr_model.sos, asr_eos=asr_model.eos)
            scorers["lm"] = lm_model.lm
            weights["lm"] = args.lm_weight
    if args.penalty != 0.0:
        from espnet.nets.scorers.length_bonus import LengthBonus

        scorers["length_bonus"] = LengthBonus(len(asr_model.token_list))
        weights["length_bonus"] = args.penalty
    # --- internal-LM fusion: scorers["ilm"] with weight -ilm_weight ---
    from espnet_ext.lm.fusion import add_ilm_scorer

    add_ilm_scorer(scorers, weights, args, asr_model, device)
    # --- end internal-LM fusion ---
    return scorers, weights


def fusion_weights(args: argparse.Namespace) -> Tuple[float, float]:
    """(LM weight, lambda_ILM) that :func:`build_scorers` decodes ``args`` with: 0 for an LM or
    internal LM that is not configured (its weight option then has no effect)."""
    has_lm = args.lm_train_config is not None or args.lm_file is not None
    has_ilm = getattr(args, "ilm_type", "none") != "none"
    return (float(args.lm_weight) if has_lm else 0.0,
            float(getattr(args, "ilm_weight", 0.0)) if has_ilm else 0.0)


def load_asr_model(asr_train_config: Optional[str], asr_model_file: Optional[str],
                   device: str = "cpu", dtype: str = "float32"):
    """(model, train args) for decoding: ESPnet's ``ASRTask.build_model_from_file``, the
    training-only heads stripped (CIF distiller), in eval mode. The decoding CLI, the API and the
    perplexity tool load models this one way."""
    from espnet2.tasks.asr import ASRTask

    asr_model, asr_train_args = ASRTask.build_model_from_file(asr_train_config, asr_model_file, device)
    if hasattr(asr_model, "strip_training_heads"):
        asr_model.strip_training_heads()
    asr_model.to(dtype=getattr(torch, dtype)).eval()
    return asr_model, asr_train_args


def padding_exact_encoding(asr_model) -> bool:
    """Whether encoding a padded batch gives each utterance exactly its unpadded encoding.

    Not the case for ESPnet's STFT front end (the last frames see the padding), UtteranceMVN with
    ``norm_means`` and ``norm_vars`` (the variance sums the padded frames after mean removal),
    conv2d subsampling (its mask keeps frames whose receptive field reaches into padding) and the
    conformer convolution module (unmasked depthwise conv). The CIF encoder masks its convolutions
    and floors its lengths, so with features and no/global/means-only normalisation it is exact.
    """
    from espnet2.layers.global_mvn import GlobalMVN
    from espnet2.layers.utterance_mvn import UtteranceMVN

    from espnet_ext.asr.encoder.conformer_pooling_encoder import ConformerPoolingEncoder

    m = asr_model
    normalize_ok = m.normalize is None or isinstance(m.normalize, GlobalMVN) or (
        isinstance(m.normalize, UtteranceMVN) and not (m.normalize.norm_means and m.normalize.norm_vars))
    encoder_ok = isinstance(m.encoder, ConformerPoolingEncoder) and m.encoder.mask_conv_padding
    return (m.frontend is None and normalize_ok and encoder_ok
            and m.preencoder is None and m.postencoder is None)


class BatchSpeech2Text:
    """Loads an ESPnet ASR model (+ scorers) and decodes batches of utterances."""

    def __init__(self, args: argparse.Namespace, build_scorers: Callable = build_scorers):
        if args.ctc_weight != 0.0:
            raise ValueError("--ctc_weight: CTC prefix scoring is not supported by the batched "
                             "search (CIF decodes without it); use 0")
        if args.nbest > args.beam_size:
            raise ValueError(f"--nbest {args.nbest} > --beam_size {args.beam_size}")
        if args.ngpu > 0 and not torch.cuda.is_available():
            raise RuntimeError("--ngpu 1 but no CUDA device is available")
        self.device = "cuda" if args.ngpu > 0 else "cpu"
        self.dtype = getattr(torch, args.dtype)
        asr_model, asr_train_args = load_asr_model(args.asr_train_config, args.asr_model_file,
                                                   self.device, args.dtype)
        self.fixed_length = hasattr(asr_model, "cif_encode")
        if args.tail_threshold is not None:
            predictor = getattr(asr_model, "predictor", None)
            if not self.fixed_length or not hasattr(predictor, "tail_threshold"):
                raise ValueError("--tail_threshold applies to CIF models only")
            predictor.tail_threshold = args.tail_threshold
        if args.cif_count == "ctc" and (not self.fixed_length or getattr(asr_model, "ctc", None) is None):
            raise ValueError("--cif_count ctc needs a CIF model with a CTC branch")
        self.count_from_ctc = args.cif_count == "ctc"
        self.asr_model, self.asr_train_args = asr_model, asr_train_args

        # Every scorer built and its weight; the search runs those of nonzero weight
        # (set_fusion_weights changes the weights without loading the scorers again).
        self.scorers, self.scorer_weights = build_scorers(args, asr_model, self.device)
        for scorer in self.scorers.values():
            if isinstance(scorer, torch.nn.Module):
                scorer.to(device=self.device, dtype=self.dtype).eval()
        self.token_list = list(asr_model.token_list)
        self.search_options = dict(beam_size=args.beam_size, score_floor=args.score_floor,
                                   cached_scorers=getattr(args, "cached_scorers", True))
        self.beam_search = self._build_search()
        self.nbest = args.nbest
        self.maxlenratio, self.minlenratio = args.maxlenratio, args.minlenratio
        self.batch_encode = self._choose_encoder_batching(args.encoder_batching)
        self.converter, self.tokenizer = self._text_converters(args, asr_train_args, self.token_list)
        logger.info(f"decoding mode: {'fixed length (CIF)' if self.fixed_length else 'free length'}, "
                    f"beam {args.beam_size}, encoder batching: "
                    f"{'padded batch' if self.batch_encode else 'per utterance'}")

    def _build_search(self) -> UtteranceBatchBeamSearch:
        """The search over :attr:`scorers` with :attr:`scorer_weights` (weight 0: left out)."""
        return UtteranceBatchBeamSearch(
            scorers=self.scorers, weights=self.scorer_weights, vocab_size=len(self.token_list),
            sos=self.asr_model.sos, eos=self.asr_model.eos, token_list=self.token_list,
            **self.search_options,
        ).eval()

    def set_fusion_weights(self, lm_weight: Optional[float] = None,
                           ilm_weight: Optional[float] = None) -> None:
        """Decode from now on with these weights (None: unchanged): the LM's, and lambda_ILM >= 0
        (the internal LM enters with ``-ilm_weight``), with the scorers already loaded: the cells
        of a weight grid (espnet_ext.bin.tune_fusion) without loading any model again. Weight 0
        decodes exactly as without that scorer. A nonzero weight needs its scorer loaded, i.e.
        this decoder built with a nonzero weight (and an LM / an ``--ilm_type``)."""
        if ilm_weight is not None and ilm_weight < 0:
            raise ValueError(f"ilm_weight is lambda_ILM >= 0 (subtracted), got {ilm_weight}")
        weights = dict(self.scorer_weights)
        for name, weight, how in (("lm", lm_weight, "--lm_weight with an LM"),
                                  ("ilm", None if ilm_weight is None else -float(ilm_weight),
                                   "--ilm_weight with an --ilm_type")):
            if weight is None:
                continue
            if name in self.scorers:
                weights[name] = float(weight)
            elif weight != 0.0:
                raise ValueError(f"{name} weight {weight:g}: no {name} scorer is loaded (build the "
                                 f"decoder with a nonzero {how})")
        self.scorer_weights = weights
        self.beam_search = self._build_search()  # as at construction: weight 0 leaves a scorer out

    def _choose_encoder_batching(self, mode: str) -> bool:
        if mode != "auto":
            return mode == "batch"
        exact = padding_exact_encoding(self.asr_model)
        if not exact:
            logger.info("encoder batching: per utterance (the model's front end is not "
                        "padding-exact, see padding_exact_encoding)")
        return exact

    @staticmethod
    def _text_converters(args, asr_train_args, token_list):
        from espnet2.text.build_tokenizer import build_tokenizer
        from espnet2.text.token_id_converter import TokenIDConverter

        token_type = args.token_type or getattr(asr_train_args, "token_type", None)
        bpemodel = args.bpemodel or getattr(asr_train_args, "bpemodel", None)
        if token_type is None:
            tokenizer = None
        elif token_type == "bpe":
            tokenizer = build_tokenizer(token_type=token_type, bpemodel=bpemodel) if bpemodel else None
        elif token_type == "hugging_face":  # pieces -> words (ESPnet's keeps "don ' t" apart)
            from espnet_ext.utils.tokens import WordpieceTokenizer

            tokenizer = WordpieceTokenizer(bpemodel)
        else:
            tokenizer = build_tokenizer(token_type=token_type)
        return TokenIDConverter(token_list=token_list), tokenizer

    @torch.no_grad()
    def encode(self, speech: torch.Tensor, lengths: torch.Tensor, alignment: bool = False):
        """(xs (B, T, D), xlens (B,), fixed lengths (B,) or None) for the search.

        CIF: xs are the integrated vectors, xlens the fire counts N and the fixed lengths the
        tokens before EOS (N - 1, at least 0). With ``alignment`` a fourth value, for timestamps:
        CIF models (fire frames (B, N) padded with -1, first encoder frame of positive weight
        (B,), encoder lengths (B,)), None for the others."""
        speech = speech.to(device=self.device, dtype=self.dtype)
        lengths = lengths.to(self.device)
        if self.batch_encode:
            out = self._encode(speech, lengths)
            return out if alignment else out[:3]
        outs = [self._encode(speech[b:b + 1, : int(lengths[b])], lengths[b:b + 1])
                for b in range(speech.size(0))]
        xs = torch.nn.utils.rnn.pad_sequence([o[0][0, : int(o[1][0])] for o in outs], batch_first=True)
        xlens = torch.cat([o[1] for o in outs])
        fixed = torch.cat([o[2] for o in outs]) if self.fixed_length else None
        if not alignment:
            return xs, xlens, fixed
        align = None
        if self.fixed_length:
            fires = torch.nn.utils.rnn.pad_sequence([o[3][0][0, : int(o[1][0])] for o in outs],
                                                    batch_first=True, padding_value=-1)
            align = (fires, torch.cat([o[3][1] for o in outs]), torch.cat([o[3][2] for o in outs]))
        return xs, xlens, fixed, align

    def _encode(self, speech, lengths):
        if self.fixed_length:
            cif_out, _, enc_lens = self.asr_model.cif_encode(speech, lengths,
                                                             count_from_ctc=self.count_from_ctc)
            # The first frame of positive weight starts the first token (0 if none).
            return (cif_out.outputs, cif_out.lengths, tokens_before_eos(cif_out.lengths),
                    (cif_out.fire_positions, first_weighted_frames(cif_out.alphas), enc_lens))
        enc, enc_lens = self.asr_model.encode(speech, lengths)
        if isinstance(enc, tuple):  # encoders with intermediate outputs
            enc = enc[0]
        return enc, enc_lens, None, None

    @torch.no_grad()
    def __call__(self, speech: torch.Tensor, lengths: torch.Tensor) -> List[List[Result]]:
        """Decode a padded batch; per utterance up to ``nbest`` results, best first."""
        return self.decode_aligned(speech, lengths)[0]

    @torch.no_grad()
    def decode_aligned(self, speech: torch.Tensor, lengths: torch.Tensor):
        """(:meth:`__call__`'s results, the CIF alignment of :meth:`encode` or None)."""
        xs, xlens, fixed, align = self.encode(speech, lengths, alignment=True)
        nbest = self.beam_search(xs, xlens, fixed_lengths=fixed, maxlenratio=self.maxlenratio,
                                 minlenratio=self.minlenratio, nbest=self.nbest)
        return [[self._to_result(h) for h in hyps] for hyps in nbest], align

    def join_segments(self, nbests: Sequence[List[Result]]) -> List[Result]:
        """One utterance's 1-best from its segments' (in order): the token ids concatenated, the
        text converted from the joined tokens, the scores summed. Segments without a hypothesis
        contribute nothing; none at all gives no hypothesis."""
        best = [nbest[0] for nbest in nbests if nbest]
        if not best:
            return []
        token_int = [t for r in best for t in r[2]]
        token = self.converter.ids2tokens(token_int)
        text = self.tokenizer.tokens2text(token) if self.tokenizer is not None else None
        hyps = [r[3] for r in best]
        yseq = torch.cat([hyps[0].yseq[:1]] + [h.yseq[1:-1] for h in hyps] + [hyps[0].yseq[-1:]])
        hyp = Hypothesis(yseq=yseq, score=sum(float(h.score) for h in hyps),
                         scores={n: sum(float(h.scores[n]) for h in hyps) for n in hyps[0].scores})
        return [(text, token, token_int, hyp)]

    def _to_result(self, hyp) -> Result:
        token_int = hyp.yseq[1:-1].tolist()  # strip <sos> and the final <eos>
        token_int = [t for t in token_int if t != 0]  # blank, as ESPnet's Speech2Text
        token = self.converter.ids2tokens(token_int)
        text = self.tokenizer.tokens2text(token) if self.tokenizer is not None else None
        return text, token, token_int, hyp


def _length_file(path: str, loader_type: str) -> Optional[Path]:
    directory = Path(path).parent
    names = ["utt2num_frames", "speech_shape"] if loader_type == "kaldi_ark" else ["utt2num_samples"]
    for name in names:
        if (directory / name).exists():
            return directory / name
    return None


def utterance_lengths(dataset, keys: Sequence[str], speech_path: str, loader_type: str) -> Dict[str, int]:
    """Input length per utterance: from utt2num_frames/utt2num_samples/speech_shape next to the
    scp when it covers every key, else by reading each utterance once."""
    lengths: Dict[str, int] = {}
    length_file = _length_file(speech_path, loader_type)
    if length_file is not None:
        for utt, value in iter_table(length_file, allow_empty_value=False):
            lengths[utt] = int(value.split(",")[0])
        if all(k in lengths for k in keys):
            return {k: lengths[k] for k in keys}
        logger.info(f"{length_file} does not cover every utterance; reading the lengths")
    loader = dataset.loader_dict["speech"]
    return {k: len(loader[k]) for k in tqdm(keys, desc="reading input lengths", mininterval=5)}


class _UttErrors(torch.utils.data.Dataset):
    """Loads an item (utterance, or segment of one: its speech sliced); re-raises loading errors
    with the utterance id and the data files. Keeps the last utterance, whose other segments
    usually follow."""

    def __init__(self, dataset):
        self.dataset = dataset
        self._last = None

    def __getitem__(self, item: Item):
        uid = utterance_of(item)
        try:
            if isinstance(item, str):
                return self.dataset[uid]
            if self._last is None or self._last[0] != uid:
                self._last = self.dataset[uid]
            data = dict(self._last[1])
            data["speech"] = data["speech"][item[1]:item[2]]
            return _item_id(item), data
        except Exception as e:
            raise RuntimeError(f"cannot load utterance {uid!r} from {self.dataset.debug_info}: {e}") from e

    def __len__(self):  # pragma: no cover - batch_sampler drives the loader
        return 0


def utterance_of(item: Item) -> str:
    """The utterance an item (an utterance id, or a segment of one) belongs to."""
    return item if isinstance(item, str) else item[0]


def decoding_order(items: Dict[Item, int]) -> List[Item]:
    """Items ({item: length}) longest first, ties by utterance id and segment start: batches of
    similar length, in the same order on every run."""
    return sorted(items, key=lambda it: (-items[it], utterance_of(it), 0 if isinstance(it, str) else it[1]))


def _item_id(item: Item) -> str:
    """The item's name in a batch: the utterance id, or "<id> <start>:<end>" for a segment (ids
    hold no spaces)."""
    return item if isinstance(item, str) else f"{item[0]} {item[1]}:{item[2]}"


def _units_per_second(features: bool, args, asr_train_args) -> float:
    """Frames (2-D feature inputs, ``--frame_shift``) or samples (waveforms, the model's fs)."""
    if features:
        return 1.0 / args.frame_shift
    fs = (getattr(asr_train_args, "frontend_conf", None) or {}).get("fs", 16000)
    return float(humanfriendly.parse_size(fs) if isinstance(fs, str) else fs)


def _audio_seconds(speech_lengths: torch.Tensor, speech_dim: int, args, asr_train_args) -> float:
    if speech_dim == 3:  # (B, frames, dims): precomputed features
        return float(speech_lengths.sum()) * args.frame_shift
    return float(speech_lengths.sum()) / _units_per_second(False, args, asr_train_args)


def plan_segments(dataset, keys: Sequence[str], lengths: Dict[str, int], args,
                  asr_train_args) -> Tuple[Dict[Item, int], Dict[str, List[Item]]]:
    """Items to decode and their lengths, and each utterance's items in order.

    An utterance longer than ``--max_segment_seconds`` (in its own units: a 2-D input counts
    frames, a waveform samples) is read once here and cut by :mod:`espnet_ext.asr.segmentation`
    into (id, start, end) items; every other utterance is its own item (its id). One INFO line
    per cut utterance names it, its length and its segments.
    """
    items: Dict[Item, int] = {uid: lengths[uid] for uid in keys}
    parts: Dict[str, List[Item]] = {uid: [uid] for uid in keys}
    limit_s = args.max_segment_seconds
    if limit_s <= 0 or not keys or max(lengths[k] for k in keys) <= limit_s * min(
            _units_per_second(f, args, asr_train_args) for f in (True, False)):
        return items, parts  # nothing can be long: skip reading an input for its units
    # One input's dimensions tell the units of all (as ESPnet's collate assumes one format).
    features = dataset[keys[0]][1]["speech"].ndim == 2
    per_s = _units_per_second(features, args, asr_train_args)
    max_len = int(limit_s * per_s)
    if max_len < 1:
        raise ValueError(f"--max_segment_seconds {limit_s:g} is shorter than one input frame/sample")
    for uid in (k for k in keys if lengths[k] > max_len):
        speech = dataset[uid][1]["speech"]
        if len(speech) <= max_len:  # the length table was off; decode it whole
            continue
        hop = 1 if features else max(1, round(per_s * 0.01))
        points = split_points(frame_energy(speech, hop), hop, len(speech), max_len)
        parts[uid] = [(uid, start, end) for start, end in segment_bounds(points, len(speech))]
        del items[uid]
        items.update({item: item[2] - item[1] for item in parts[uid]})
        shown = ", ".join(map(str, points[:20])) + (", ..." if len(points) > 20 else "")
        logger.info(f"utterance {uid}: {len(speech) / per_s:.2f} s is longer than "
                    f"--max_segment_seconds {limit_s:g}: decoding {len(parts[uid])} segments, cut at "
                    f"{'frames' if features else 'samples'} {shown}")
        del speech
    return items, parts


def inference(args: argparse.Namespace, build_scorers: Callable = build_scorers,
              decoder: Optional[BatchSpeech2Text] = None) -> Dict[str, float]:
    """Decode every utterance of the input; returns the speed summary that is also logged.

    ``decoder``: models already loaded (another run's, e.g. the previous cell of a weight grid),
    used with this run's fusion weights (:func:`fusion_weights` of ``args``) instead of loading
    them again; its other decoding options are those it was built with."""
    from espnet2.tasks.asr import ASRTask
    from espnet2.torch_utils.set_all_random_seed import set_all_random_seed
    from espnet2.train.dataset import ESPnetDataset

    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    log_handler = logging.FileHandler(output_dir / "decode.log", mode="w")
    log_handler.setFormatter(logging.Formatter("%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s"))
    root_logger = logging.getLogger()
    root_logger.addHandler(log_handler)
    try:
        logger.info("command: " + " ".join(sys.argv))
        set_all_random_seed(args.seed)
        if decoder is None:
            t_load = time.perf_counter()
            s2t = BatchSpeech2Text(args, build_scorers)
            logger.info(f"models loaded in {time.perf_counter() - t_load:.1f} s")
        else:
            s2t = decoder
            lm_weight, ilm_weight = fusion_weights(args)
            logger.info(f"models already loaded; LM weight {lm_weight:g}, ILM weight {ilm_weight:g}")
            s2t.set_fusion_weights(lm_weight=lm_weight, ilm_weight=ilm_weight)

        speech = [t for t in args.data_path_and_name_and_type if t[1] == "speech"]
        if not speech:
            raise ValueError("--data_path_and_name_and_type needs an input named 'speech'")
        keys_to_load = None
        if args.key_file is not None:
            keys_to_load = [utt for utt, _ in iter_table(args.key_file)]
        dataset = ESPnetDataset(
            args.data_path_and_name_and_type,
            preprocess=ASRTask.build_preprocess_fn(s2t.asr_train_args, False),
            float_dtype=args.dtype,
            keys_to_load=set(keys_to_load) if keys_to_load is not None else None,
        )
        ASRTask.check_task_requirements(dataset, args.allow_variable_data_keys, train=False, inference=True)
        keys = keys_to_load if keys_to_load is not None else list(dataset)
        available = set(dataset)
        missing = [k for k in keys if k not in available]
        if missing:
            raise KeyError(f"{len(missing)} utterance(s) of {args.key_file} not in {speech[0][0]}: "
                           f"{', '.join(missing[:10])}")
        lengths = utterance_lengths(dataset, keys, speech[0][0], speech[0][2])
        items, parts = plan_segments(dataset, keys, lengths, args, s2t.asr_train_args)
        item_by_id = {_item_id(item): item for item in items}
        order = decoding_order(items)
        batches = [order[i:i + args.batch_size] for i in range(0, len(order), args.batch_size)]
        loader = torch.utils.data.DataLoader(
            _UttErrors(dataset), batch_sampler=batches, num_workers=args.num_workers,
            collate_fn=ASRTask.build_collate_fn(s2t.asr_train_args, False),
        )

        results: Dict[str, List[Result]] = {}
        pending: Dict[Item, List[Result]] = {}  # decoded segments of utterances not yet complete
        audio_s = 0.0
        t0 = time.perf_counter()
        with tqdm(total=len(keys), desc="decoding", unit="utt", mininterval=5) as progress:
            for i, (batch_ids, batch) in enumerate(loader, 1):
                audio_s += _audio_seconds(batch["speech_lengths"], batch["speech"].dim(), args,
                                          s2t.asr_train_args)
                done = 0
                try:
                    nbests = s2t(batch["speech"], batch["speech_lengths"])
                except (MemoryError, RuntimeError) as e:
                    if not isinstance(e, MemoryError) and "memory" not in str(e):
                        raise
                    longest = _audio_seconds(batch["speech_lengths"].max()[None], batch["speech"].dim(),
                                             args, s2t.asr_train_args)
                    raise MemoryError(
                        f"batch {i}/{len(batches)} ({len(batch_ids)} item(s): {', '.join(batch_ids[:10])}; "
                        f"longest {longest:.1f} s) ran out of memory: {str(e)[:300]}. Lower "
                        f"--max_segment_seconds (now {args.max_segment_seconds:g}; 0 never cuts "
                        f"long inputs) or --batch_size (now {args.batch_size})") from e
                for item_id, nbest in zip(batch_ids, nbests):
                    item = item_by_id[item_id]
                    uid = utterance_of(item)
                    if isinstance(item, str):
                        results[uid] = nbest
                        done += 1
                        continue
                    pending[item] = nbest
                    if all(p in pending for p in parts[uid]):
                        segs = [pending.pop(p) for p in parts[uid]]
                        empty = [j for j, nb in enumerate(segs, 1) if not nb]
                        if empty:
                            logger.warning(f"utterance {uid}: segment(s) {empty} of {len(segs)} "
                                           f"without any hypothesis; joined without them")
                        results[uid] = s2t.join_segments(segs)
                        done += 1
                progress.update(done)
                # One line per batch: progress in the job log (and evidence for resume tests).
                logger.info(f"batch {i}/{len(batches)} decoded: {len(results)}/{len(keys)} utterances")
        wall = time.perf_counter() - t0

        empty = sorted(k for k, v in results.items() if not v)
        if empty:
            logger.warning(f"{len(empty)} utterance(s) without any hypothesis (written as empty text, "
                           f"score -inf): {', '.join(empty[:20])}")
        if s2t.fixed_length:
            no_fire = sorted(k for k, v in results.items() if v and len(v[0][3].yseq) <= 2)
            if no_fire:
                logger.warning(f"{len(no_fire)} utterance(s) with fewer than two CIF fires (the last "
                               f"fire is <eos>; written as empty text): {', '.join(no_fire[:20])}")
        write_results(output_dir, results, args.nbest)
        speed = {"utterances": len(keys), "audio_seconds": audio_s, "wall_seconds": wall,
                 "rtf": wall / audio_s if audio_s > 0 else float("nan"),
                 "audio_seconds_per_second": audio_s / wall if wall > 0 else float("nan")}
        logger.info(
            f"decoding speed: {speed['utterances']} utterances, {audio_s:.2f} s of audio in {wall:.2f} s: "
            f"RTF {speed['rtf']:.4f}, {speed['audio_seconds_per_second']:.2f} audio-s/s "
            f"(batch {args.batch_size}, beam {args.beam_size}, {s2t.device}, {args.dtype})"
        )
        return speed
    finally:
        root_logger.removeHandler(log_handler)
        log_handler.close()


def write_results(output_dir: Path, results: Dict[str, List[Result]], nbest: int) -> None:
    """ESPnet's ``<n>best_recog/{text,token,token_int,score}``, sorted by utterance id."""
    for n in range(1, nbest + 1):
        d = Path(output_dir) / f"{n}best_recog"
        d.mkdir(parents=True, exist_ok=True)
        lines = {name: [] for name in ("text", "token", "token_int", "score")}
        for uid in sorted(results):
            hyps = results[uid]
            if len(hyps) < n:
                if n == 1:  # keep every utterance in the 1-best files, for scoring
                    lines["text"].append(f"{uid} \n")
                    lines["token"].append(f"{uid} \n")
                    lines["token_int"].append(f"{uid} \n")
                    lines["score"].append(f"{uid} -inf\n")
                continue
            text, token, token_int, hyp = hyps[n - 1]
            lines["text"].append(f"{uid} {text if text is not None else ' '.join(token)}\n")
            lines["token"].append(f"{uid} {' '.join(token)}\n")
            lines["token_int"].append(f"{uid} {' '.join(map(str, token_int))}\n")
            lines["score"].append(f"{uid} {float(hyp.score)}\n")
        for name, content in lines.items():
            tmp = d / f".{name}.tmp"  # tmp + rename: a killed job never leaves a partial file
            tmp.write_text("".join(content), encoding="utf-8")
            tmp.replace(d / name)


def main(cmd: Optional[Sequence[str]] = None, parser: Optional[argparse.ArgumentParser] = None,
         build_scorers: Callable = build_scorers) -> Dict[str, float]:
    parser = parser or get_parser()
    args = parser.parse_args(cmd)
    logging.basicConfig(level=args.log_level,
                        format="%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s")
    logging.getLogger().setLevel(args.log_level)
    return inference(args, build_scorers)


if __name__ == "__main__":
    main()
