"""A tiny CIF ASR model trained on the recipe's fbank of real (synthesised) audio, for the tests of
the transcription API and CLI.

Every letter of "abcdef" is a tone (a fundamental and its octave, 15 ms fades) held for 0.20-0.28
s, a word gap ``<space>`` is 0.20-0.28 s of soft noise, and an utterance begins and ends with
near-silence. The 16-bit 16 kHz wavs go through the recipe's own feature extraction
(:func:`espnet_ext.recipe.fbank.extract_to_ark`: 80-d Kaldi fbank), and the tiny CIF config is
trained on them (400 updates, without dropout): enough to transcribe its training utterances (the
known transcripts) exactly, which tests/unit/inference/test_speech2text.py checks first.

    root = tmp_path_factory.getbasetemp() / "audio_cif"
    model = tiny_audio_cif_model(root)          # once per process and root
    model.exp, model.model_file, model.wavs, model.texts, model.feats_scp
    lm_dir, las_dir = tiny_audio_lm(root), tiny_audio_las(root)   # an LSTM LM, an ESPnet LAS
"""
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FS = 16000
LETTERS = "abcdef"
TONES = dict(zip(LETTERS, (310.0, 470.0, 690.0, 1010.0, 1450.0, 2100.0)))  # Hz
#: Training transcripts: two words each, every letter several times at each word position.
TEXTS = ["abc de", "fed cab", "bad fa", "ace bd", "ef dab", "cb efa", "da bce", "fab ed"]
VALID_TEXTS = ["be fac", "dc ab", "fa ced", "ad eb"]
TOKENS = ["<blank>", "<unk>", *LETTERS, "<space>", "<sos/eos>"]
FIT_EPOCHS = 5


def synthesize(text: str, rng: np.random.Generator, word_times: Optional[list] = None) -> np.ndarray:
    """int16 waveform of ``text`` (letters of LETTERS and spaces) at FS; ``word_times`` (a list)
    receives (word, start, end) in seconds: a word runs from its first tone's start to its last
    tone's end."""

    def seconds(lo: float, hi: float) -> int:
        return int(rng.uniform(lo, hi) * FS)

    parts = [rng.normal(0, 8, seconds(0.08, 0.15))]
    for ch in text:
        n = seconds(0.20, 0.28)
        if ch == " ":
            parts.append(rng.normal(0, 400, n))
            continue
        t = np.arange(n) / FS
        f0 = TONES[ch]
        tone = 5000 * np.sin(2 * np.pi * f0 * t) + 2500 * np.sin(2 * np.pi * 2 * f0 * t)
        ramp = min(n // 2, int(0.015 * FS))
        env = np.ones(n)
        env[:ramp] = env[-ramp:][::-1] = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
        parts.append(tone * env + rng.normal(0, 8, n))
    parts.append(rng.normal(0, 8, seconds(0.08, 0.15)))
    if word_times is not None:
        edges = np.cumsum([0] + [len(p) for p in parts]) / FS  # part i spans edges[i]..edges[i+1]
        start = 1  # parts[0] is the leading near-silence; part k + 1 is character k
        for word in text.split(" "):
            word_times.append((word, float(edges[start]), float(edges[start + len(word)])))
            start += len(word) + 1
    return np.clip(np.round(np.concatenate(parts)), -32768, 32767).astype(np.int16)


def _write_split(root: Path, name: str, texts: List[str], rng: np.random.Generator) -> Dict[str, Path]:
    import soundfile

    from espnet_ext.recipe.fbank import extract_to_ark

    d = root / name
    (d / "wav").mkdir(parents=True, exist_ok=True)
    utts = {f"{name}{i:02d}": text for i, text in enumerate(texts)}
    ctm = []
    for utt, text in utts.items():
        times: list = []
        soundfile.write(str(d / "wav" / f"{utt}.wav"), synthesize(text, rng, times), FS,
                        subtype="PCM_16")
        ctm += [f"{utt} 1 {start:.3f} {end - start:.3f} {word}\n" for word, start, end in times]
    (d / "word_times.ctm").write_text("".join(ctm))
    (d / "wav.scp").write_text("".join(f"{u} {d / 'wav' / u}.wav\n" for u in utts))
    (d / "text").write_text("".join(f"{u} {t}\n" for u, t in utts.items()))
    extract_to_ark(str(d / "wav.scp"), str(d / "feats.ark"), str(d / "feats.scp"),
                   str(d / "utt2num_frames"), progress=False)
    frames = dict(line.split() for line in (d / "utt2num_frames").read_text().splitlines())
    (d / "speech_shape").write_text("".join(f"{u} {frames[u]},80\n" for u in utts))
    (d / "text_shape").write_text("".join(f"{u} {len(t)}\n" for u, t in utts.items()))
    return {"dir": d, "wav_scp": d / "wav.scp", "text": d / "text", "feats_scp": d / "feats.scp",
            "speech_shape": d / "speech_shape", "text_shape": d / "text_shape",
            "word_times": d / "word_times.ctm"}


def _data_args(train: Dict[str, Path], valid: Dict[str, Path]) -> List[str]:
    args = []
    for name, split in (("train", train), ("valid", valid)):
        args += [f"--{name}_data_path_and_name_and_type", f"{split['feats_scp']},speech,kaldi_ark",
                 f"--{name}_data_path_and_name_and_type", f"{split['text']},text,text",
                 f"--{name}_shape_file", str(split["speech_shape"]),
                 f"--{name}_shape_file", str(split["text_shape"])]
    return args


@dataclass
class AudioModel:
    exp: Path  # config.yaml + checkpoints
    model_file: Path  # the last epoch's parameters (the most fitted)
    wavs: Dict[str, Path]  # training utterance -> 16 kHz 16-bit wav
    texts: Dict[str, str]  # training utterance -> transcript
    feats_scp: Path  # the recipe's fbank of the training wavs
    valid: Dict[str, Path]  # the valid split's paths
    token_list: Path
    train: Dict[str, Path]  # the train split's paths


@functools.lru_cache(maxsize=None)
def tiny_audio_cif_model(root: Path) -> AudioModel:
    """Synthesise, extract and train once per process and root (about 40 s on one core)."""
    from reliability_helpers import CIF_CONF, one_thread

    from espnet_ext.tasks.cif_asr import CIFASRTask

    root = Path(root)
    rng = np.random.default_rng(3)
    train = _write_split(root / "data", "train", TEXTS, rng)
    valid = _write_split(root / "data", "valid", VALID_TEXTS, rng)
    token_list = root / "data" / "tokens.txt"
    token_list.write_text("\n".join(TOKENS) + "\n")
    exp = root / "exp"
    args = ["--config", str(CIF_CONF), "--token_list", str(token_list), "--token_type", "char",
            "--input_size", "80", "--output_dir", str(exp), "--num_iters_per_epoch", "80",
            "--max_epoch", str(FIT_EPOCHS), "--scheduler_conf", "max_steps=400", "--resume", "true",
            # Without dropout the weights CIF sums at inference are those trained to sum to L+1
            # (with it, eval-mode sums came out ~0.45 higher: a tail token too many).
            *[f"--{part}_conf=dropout_rate=0.0" for part in ("encoder", "predictor", "decoder")],
            "--encoder_conf=attention_dropout_rate=0.0", "--decoder_conf=attention_dropout_rate=0.0"]
    args += _data_args(train, valid)
    with one_thread():
        CIFASRTask.main(cmd=args)
    texts = dict(line.split(" ", 1) for line in train["text"].read_text().splitlines())
    wavs = {u: train["dir"] / "wav" / f"{u}.wav" for u in texts}
    return AudioModel(exp=exp, model_file=exp / f"{FIT_EPOCHS}epoch.pth", wavs=wavs, texts=texts,
                      feats_scp=train["feats_scp"], valid=valid, token_list=token_list, train=train)


@functools.lru_cache(maxsize=None)
def tiny_audio_lm(root: Path) -> Path:
    """An LSTM LM trained on the transcripts of :func:`tiny_audio_cif_model` (its token list):
    the LM's directory (config.yaml, valid.loss.ave.pth)."""
    from espnet2.tasks.lm import LMTask
    from reliability_helpers import one_thread

    model = tiny_audio_cif_model(Path(root))
    out = model.exp.parent / "lm"
    args = ["--config", str(REPO / "conf" / "train_lm_lstm_tiny.yaml"), "--token_list",
            str(model.token_list), "--token_type", "char", "--output_dir", str(out), "--fold_length", "150",
            "--resume", "true"]
    for name, split in (("train", model.train), ("valid", model.valid)):
        args += [f"--{name}_data_path_and_name_and_type", f"{split['text']},text,text",
                 f"--{name}_shape_file", str(split["text_shape"])]
    with one_thread():
        LMTask.main(cmd=args)
    return out



@functools.lru_cache(maxsize=None)
def tiny_audio_las(root: Path) -> Path:
    """A stock ESPnet attention model (LAS) on the same features, barely trained (2 updates):
    for what needs a model without CIF fires. Its directory (config.yaml, 1epoch.pth)."""
    from espnet2.tasks.asr import ASRTask
    from reliability_helpers import one_thread

    model = tiny_audio_cif_model(Path(root))
    out = model.exp.parent / "las"
    with one_thread():
        ASRTask.main(cmd=["--config", str(REPO / "conf" / "train_las_tiny.yaml"), "--token_list",
                          str(model.token_list), "--token_type", "char", "--input_size", "80",
                          "--output_dir", str(out), "--max_epoch", "1", "--num_iters_per_epoch", "2",
                          "--fold_length", "1000", "--fold_length", "100", "--resume", "true",
                          *_data_args(model.train, model.valid)])
    return out
