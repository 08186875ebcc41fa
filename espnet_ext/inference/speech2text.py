"""Transcribe waveforms or features in Python, with CIF token and word times.

    from espnet_ext.inference import Speech2Text
    s2t = Speech2Text(model_dir="exp/asr_train_cif", beam_size=10)
    result = s2t(wave, fs=44100)              # numpy/torch, (samples,) or (samples, channels)
    result.text, result.words                 # [("hello", 0.32, 0.71), ...]
    results = s2t([wave1, wave2], fs=16000)   # a list is decoded as a batch

The decoding is that of ``espnet_ext.bin.asr_inference`` (its option defaults, its
:class:`BatchSpeech2Text` and its long-input segmentation :func:`plan_segments`), so the API and
the recipe's decoding give the same 1-best for the same features. Waveforms become the recipe's
features (:func:`espnet_ext.recipe.fbank.fbank`: 80-d Kaldi fbank of 16-bit sample values), after
a mix-down to mono and a resampling to the model's rate.
"""
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from typeguard import typechecked

from espnet_ext.asr.timestamps import fire_times, word_spans
from espnet_ext.bin.asr_inference import (
    BatchSpeech2Text,
    _item_id,
    decoding_order,
    get_parser,
    plan_segments,
    utterance_of,
)
from espnet_ext.lm.fusion import ILM_TYPES

logger = logging.getLogger("espnet_ext.speech2text")

Array = Union[np.ndarray, torch.Tensor]
DEFAULT_CHECKPOINT = "valid.acc.ave.pth"


@dataclass
class Transcription:
    """One input's 1-best. Times are seconds from the input's start; ``token_times`` and
    ``words`` are None for models without CIF fires (stock ESPnet attention models)."""

    text: str
    tokens: List[str]
    token_ids: List[int]
    score: float
    token_times: Optional[List[Tuple[float, float]]]
    words: Optional[List[Tuple[str, float, float]]]


def find_model_files(model_dir: Union[str, Path]) -> Tuple[Path, Path]:
    """(config.yaml, checkpoint) of a training directory: ``valid.acc.ave.pth``, else the newest
    ``*.pth`` other than the trainer's resume state ``checkpoint.pth``."""
    model_dir = Path(model_dir)
    config = model_dir / "config.yaml"
    if not config.is_file():
        raise FileNotFoundError(f"model_dir {model_dir} has no config.yaml")
    model_file = model_dir / DEFAULT_CHECKPOINT
    if not model_file.is_file():
        candidates = [p for p in model_dir.glob("*.pth") if p.name != "checkpoint.pth" and p.is_file()]
        if not candidates:
            raise FileNotFoundError(f"model_dir {model_dir} has neither {DEFAULT_CHECKPOINT} nor "
                                    f"another *.pth parameter file")
        model_file = max(candidates, key=lambda p: p.stat().st_mtime)
        logger.info(f"{DEFAULT_CHECKPOINT} not in {model_dir}: using the newest {model_file.name}")
    return config, model_file


def resolve_model(asr_train_config: Optional[Union[str, Path]] = None,
                  asr_model_file: Optional[Union[str, Path]] = None,
                  model_dir: Optional[Union[str, Path]] = None,
                  packed_model: Optional[Union[str, Path]] = None,
                  unpack_dir: Optional[Union[str, Path]] = None) -> Dict[str, object]:
    """{asr_train_config, asr_model_file} of a model given one of three ways: ``packed_model``
    (unpacked by :func:`espnet_ext.inference.pack.unpack_model`, whose other entries: LM, feature
    settings, decode config, come along), ``model_dir`` (:func:`find_model_files`) or the two
    files. One resolution for the API, the transcription CLI and the perplexity tool."""
    if packed_model is not None:
        if model_dir is not None or asr_train_config is not None or asr_model_file is not None:
            raise ValueError("give either packed_model, model_dir or asr_train_config/asr_model_file")
        from espnet_ext.inference.pack import unpack_model

        return unpack_model(packed_model, unpack_dir)
    if model_dir is not None:
        if asr_train_config is not None or asr_model_file is not None:
            raise ValueError("give either model_dir or asr_train_config/asr_model_file")
        asr_train_config, asr_model_file = find_model_files(model_dir)
    if asr_train_config is None or asr_model_file is None:
        raise ValueError("the ASR model: give packed_model, model_dir, or asr_train_config and "
                         "asr_model_file")
    return {"asr_train_config": asr_train_config, "asr_model_file": asr_model_file}


class Speech2Text:
    """A trained ASR model (+ LM / internal-LM fusion) as a callable: audio in, text and times out.

    Built on the batch decoder of ``espnet_ext.bin.asr_inference`` so that there is one decoding
    to maintain and test; this class adds audio handling (mono, resampling, the recipe's fbank)
    and the conversion of CIF fires to times.

    The model: ``packed_model`` (a file of :func:`espnet_ext.inference.pack.pack_model`, unpacked
    into ``unpack_dir``, default ``<file>.unpacked``: it brings its feature settings, decode
    config and optional LM), ``model_dir`` (see :func:`find_model_files`) or
    ``asr_train_config`` + ``asr_model_file``. Decoding options are asr_inference's of the same
    names (``beam_size`` (default: the packed decode config's, else 10), ``batch_size``,
    ``tail_threshold``, ``max_segment_seconds``; LM fusion ``lm_*`` (``lm_weight`` default: the
    packed decode config's, else 0: an LM is used only with a weight), internal-LM subtraction
    ``ilm_*`` as in :mod:`espnet_ext.lm.fusion`: ``zero`` (ILME-Z) needs the ASR model only, the
    others an ``ilm_file``). ``fs`` and ``num_mel_bins`` describe the model's features (its sample
    rate, its fbank size: checked against the model's ``input_size``; default: the packed
    model's, else 16000 and 80).
    """

    @typechecked
    def __init__(
        self,
        asr_train_config: Optional[Union[str, Path]] = None,
        asr_model_file: Optional[Union[str, Path]] = None,
        model_dir: Optional[Union[str, Path]] = None,
        packed_model: Optional[Union[str, Path]] = None,
        unpack_dir: Optional[Union[str, Path]] = None,
        device: str = "cpu",
        dtype: str = "float32",
        beam_size: Optional[int] = None,
        batch_size: int = 16,
        lm_train_config: Optional[Union[str, Path]] = None,
        lm_file: Optional[Union[str, Path]] = None,
        lm_weight: Optional[float] = None,
        ilm_type: str = "none",
        ilm_weight: float = 0.0,
        ilm_file: Optional[Union[str, Path]] = None,
        ilm_train_config: Optional[Union[str, Path]] = None,
        tail_threshold: Optional[float] = None,
        max_segment_seconds: float = 30.0,
        fs: Optional[int] = None,
        num_mel_bins: Optional[int] = None,
    ):
        model = resolve_model(asr_train_config, asr_model_file, model_dir, packed_model, unpack_dir)
        asr_train_config, asr_model_file = model["asr_train_config"], model["asr_model_file"]
        decode_config = model.get("decode_config")
        if lm_train_config is None and lm_file is None and "lm_file" in model:
            lm_train_config, lm_file = model["lm_train_config"], model["lm_file"]
        feature = model.get("feature") or {}
        fs = feature.get("fs", 16000) if fs is None else fs
        num_mel_bins = feature.get("num_mel_bins", 80) if num_mel_bins is None else num_mel_bins
        if ilm_type not in ILM_TYPES:
            raise ValueError(f"ilm_type {ilm_type!r}: choose from {ILM_TYPES}")
        if dtype not in ("float16", "float32", "float64"):
            raise ValueError(f"dtype must be float16, float32 or float64, got {dtype!r}")
        if device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
        if device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' but no CUDA device is available")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")

        def path(p):
            return None if p is None else str(p)

        # asr_inference's option defaults (but LM weight 0: an LM is used only with a weight), a
        # packed model's decode config over them, then the arguments given here.
        parser = get_parser()
        parser.set_defaults(lm_weight=0.0)
        args = parser.parse_args([
            "--output_dir", "unused", "--data_path_and_name_and_type", "unused,speech,kaldi_ark",
            "--asr_train_config", str(asr_train_config), "--asr_model_file", str(asr_model_file),
            "--dtype", dtype, "--ilm_type", ilm_type] + (["--config", decode_config] if decode_config else []))
        given = dict(beam_size=beam_size, lm_weight=lm_weight, tail_threshold=tail_threshold)
        vars(args).update({k: v for k, v in given.items() if v is not None})
        vars(args).update(
            ngpu=0 if device == "cpu" else 1, batch_size=batch_size,
            lm_train_config=path(lm_train_config), lm_file=path(lm_file),
            ilm_weight=ilm_weight, ilm_file=path(ilm_file), ilm_train_config=path(ilm_train_config),
            max_segment_seconds=max_segment_seconds)
        self.args = args
        self.decoder = BatchSpeech2Text(args)
        self.asr_model = self.decoder.asr_model
        train_args = self.decoder.asr_train_args
        self.fs = fs
        self.num_mel_bins = num_mel_bins
        # Models without a front end take the recipe's features; check they are these.
        self.takes_features = self.asr_model.frontend is None
        input_size = getattr(train_args, "input_size", None)
        if self.takes_features and input_size != num_mel_bins:
            raise ValueError(f"the model {asr_model_file} takes {input_size}-dim features, but "
                             f"num_mel_bins is {num_mel_bins}: features of another kind cannot "
                             f"come from a waveform here (pass them with features=True)")
        self.input_size = input_size
        self.token_type = args.token_type or getattr(train_args, "token_type", None)
        self.space_symbol = "<space>" if "<space>" in self.asr_model.token_list else None
        self.unit_seconds = args.frame_shift if self.takes_features else 1.0 / fs
        self.encoder_shift = self._encoder_frame_shift() if self.decoder.fixed_length else None

    def set_fusion_weights(self, lm_weight: Optional[float] = None,
                           ilm_weight: Optional[float] = None) -> None:
        """Change the LM weight and lambda_ILM (None: unchanged) without loading anything again
        (:meth:`BatchSpeech2Text.set_fusion_weights`): weight 0 decodes as without the scorer; a
        nonzero one needs its scorer loaded, i.e. built here with a nonzero weight."""
        self.decoder.set_fusion_weights(lm_weight=lm_weight, ilm_weight=ilm_weight)
        if lm_weight is not None:
            self.args.lm_weight = lm_weight
        if ilm_weight is not None:
            self.args.ilm_weight = ilm_weight

    def _encoder_frame_shift(self) -> float:
        """Seconds per encoder frame: input unit (feature frame, or sample) x the subsampling,
        from the pooling config of this package's encoder, else measured on 20 s of zeros."""
        encoder = self.asr_model.encoder
        if self.takes_features and hasattr(encoder, "pooling_layers"):
            return self.unit_seconds * 2 * 2 ** len(encoder.pooling_layers)  # conv /2, pool /2 each
        n = int(round(20.0 / self.unit_seconds))
        shape = (1, n, self.input_size) if self.takes_features else (1, n)
        with torch.no_grad():
            _, enc_lens = self.asr_model.encode(torch.zeros(shape, dtype=self.decoder.dtype,
                                                            device=self.decoder.device),
                                                torch.tensor([n], device=self.decoder.device))
        return self.unit_seconds * round(n / max(int(enc_lens[0]), 1))

    def model_input(self, speech: Array, fs: Optional[int] = None) -> np.ndarray:
        """The model's input for one waveform: the recipe's fbank (models without a front end)
        or the mono waveform at the model's rate in [-1, 1] (models with one).

        Float samples are taken in [-1, 1], integer ones as 16-bit values: the recipe's
        ``read_audio`` gives ``float * 32768`` and Kaldi's fbank works in 16-bit units."""
        from espnet_ext.recipe.fbank import DEFAULT_OPTS, fbank

        x = speech.detach().cpu().numpy() if isinstance(speech, torch.Tensor) else np.asarray(speech)
        if x.dtype.kind not in "iuf":
            raise TypeError(f"waveform of dtype {x.dtype}: expected float or integer samples")
        scale = np.float32(1.0 if x.dtype.kind in "iu" else 32768.0)  # as read_audio: float32 x 32768
        if x.ndim == 2:
            if x.shape[1] > 8:
                raise ValueError(f"a 2-D waveform is (samples, channels), got shape {x.shape}; "
                                 f"for a feature matrix pass features=True")
            if x.shape[1] > 1:
                logger.info(f"mixing {x.shape[1]} channels down to mono")
            x = x.mean(axis=1, dtype=np.float64)
        elif x.ndim != 1:
            raise ValueError(f"a waveform is (samples,) or (samples, channels), got shape {x.shape}")
        wave = x.astype(np.float32) * scale
        fs = self.fs if fs is None else fs
        if fs != self.fs:
            import torchaudio.functional as AF

            wave = AF.resample(torch.from_numpy(wave), int(fs), int(self.fs)).numpy()
        if not self.takes_features:
            return wave / np.float32(32768.0)
        min_len = int(DEFAULT_OPTS["frame_length"] * self.fs / 1000)
        if len(wave) < min_len:
            raise ValueError(f"waveform too short: {len(wave)} samples at {self.fs} Hz, fewer than "
                             f"one {DEFAULT_OPTS['frame_length']:g} ms frame")
        return fbank(wave, {"num_mel_bins": self.num_mel_bins, "sample_frequency": float(self.fs)})

    def __call__(self, speech: Union[Array, Sequence[Array]], fs: Optional[int] = None,
                 features: bool = False) -> Union[Transcription, List[Transcription]]:
        """Transcribe one input, or a list of inputs decoded as batches (a list of results).

        ``speech``: a waveform (samples,) or (samples, channels) at ``fs`` Hz (default: the
        model's rate), or with ``features`` a (frames, dims) feature matrix of the model's kind."""
        single = not isinstance(speech, (list, tuple))
        inputs = [speech] if single else list(speech)
        if features:
            model_inputs = []
            for i, x in enumerate(inputs):
                x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
                if x.ndim != 2 or (self.input_size is not None and x.shape[1] != self.input_size):
                    raise ValueError(f"input {i}: features must be (frames, {self.input_size}), "
                                     f"got shape {x.shape}")
                model_inputs.append(x.astype(np.float32, copy=False))
        else:
            model_inputs = [self.model_input(x, fs) for x in inputs]
        results = self.decode(model_inputs)
        return results[0] if single else results

    def decode(self, model_inputs: Sequence[np.ndarray]) -> List[Transcription]:
        """Decode model inputs (see :meth:`model_input`) as asr_inference does: longer than
        ``max_segment_seconds`` cut by :func:`plan_segments`, longest first in batches of
        ``batch_size``, segments joined (times shifted by their segment's start)."""
        keys = [str(i) for i in range(len(model_inputs))]
        dataset = {k: (k, {"speech": x}) for k, x in zip(keys, model_inputs)}
        lengths = {k: len(x) for k, x in zip(keys, model_inputs)}
        items, parts = plan_segments(dataset, keys, lengths, self.args, self.decoder.asr_train_args)
        order = decoding_order(items)
        decoded = {}  # item -> (n-best, token times of the 1-best or None)
        for i in range(0, len(order), self.args.batch_size):
            batch = order[i:i + self.args.batch_size]
            speech = [self._slice(dataset[utterance_of(it)][1]["speech"], it) for it in batch]
            lens = torch.tensor([len(x) for x in speech])
            padded = torch.nn.utils.rnn.pad_sequence(
                [torch.from_numpy(x if x.flags.writeable else x.copy()) for x in speech], batch_first=True)
            nbests, align = self.decoder.decode_aligned(padded, lens)
            for b, (item, nbest) in enumerate(zip(batch, nbests)):
                decoded[item] = (nbest, self._times(nbest, align, b, item, int(lens[b])))
        return [self._join([decoded[p] for p in parts[k]]) for k in keys]

    @staticmethod
    def _slice(x: np.ndarray, item) -> np.ndarray:
        return x if isinstance(item, str) else np.ascontiguousarray(x[item[1]:item[2]])

    def _times(self, nbest, align, b: int, item, length: int) -> Optional[List[Tuple[float, float]]]:
        """(start, end) per token of the 1-best (blank dropped, as its tokens), in the input's
        time (a segment's start added)."""
        if align is None or not nbest:
            return None
        fires, first, _ = align
        yseq = nbest[0][3].yseq[1:-1].tolist()  # the tokens that fired, <blank> included
        offset = 0.0 if isinstance(item, str) else item[1] * self.unit_seconds
        times = fire_times(fires[b, :len(yseq)].tolist(), int(first[b]), self.encoder_shift,
                           offset=offset, limit=length * self.unit_seconds)
        if len(times) != len(yseq):
            raise RuntimeError(f"{_item_id(item)}: {len(yseq)} tokens but {len(times)} CIF fires")
        return [t for tok, t in zip(yseq, times) if tok != 0]

    def _join(self, segments) -> Transcription:
        nbests = [nbest for nbest, _ in segments]
        best = self.decoder.join_segments(nbests) if len(segments) > 1 else [n[0] for n in nbests if n]
        if not best:
            return Transcription("", [], [], float("-inf"), None if self.encoder_shift is None else [],
                                 None if self.encoder_shift is None else [])
        text, tokens, token_ids, hyp = best[0]
        if text is None:
            text = " ".join(tokens)
        token_times = words = None
        if self.encoder_shift is not None:
            token_times = [t for nbest, times in segments if nbest for t in times]
            words = word_spans(tokens, token_times, self.token_type, self.space_symbol)
        return Transcription(text, list(tokens), list(token_ids), float(hyp.score), token_times, words)
