"""Tiny fabricated AISHELL-1 and LibriSpeech corpora in the official directory layouts.

The recipes under egs/aishell and egs/librispeech cannot meet the real corpora here (15 GB and
60 GB, no network), so their data preparation and every later stage are verified on these:
a few real synthesised utterances (espeak-ng, 16 kHz mono) laid out exactly as the openslr
tarballs extract, with the irregularities the real corpora have (audio without a transcript,
transcripts without audio, several parts and chapters). Each builder returns what the recipe's
data preparation must produce, so tests compare against it.

    build_fake_aishell(root)      -> root/data_aishell/{wav/{train,dev,test}/<spk>/*.wav,
                                     transcript/aishell_transcript_v0.8.txt}
    build_fake_librispeech(root)  -> root/LibriSpeech/<part>/<reader>/<chapter>/{*.flac,
                                     <reader>-<chapter>.trans.txt}, SPEAKERS.TXT

Mandarin speech: ``espeak-ng -v cmn-latn-pinyin`` reading Chinese characters (the ``cmn`` voice is
broken in Debian's espeak-ng 1.51); sentences from the fortunes-zh package (ANSI colour escapes
stripped). English: espeak-ng voices, converted to FLAC with sox.
"""
import random
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

FORTUNES_ZH = Path("/usr/share/games/fortunes/chinese")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_HAN_ONLY = re.compile(r"[\u4e00-\u9fff]+")


@dataclass
class FakeCorpus:
    """What a recipe's data preparation must make of the fabricated corpus."""

    root: Path                                  # the value of AISHELL / LIBRISPEECH
    texts: Dict[str, Dict[str, str]]            # Kaldi set name -> {utt: expected data/<set>/text}
    speakers: Dict[str, str]                    # utt -> expected speaker
    audio: Dict[str, Path]                      # utt -> audio file
    no_transcript: Dict[str, List[str]] = field(default_factory=dict)  # set -> audio left out
    orphan_transcripts: List[str] = field(default_factory=list)  # transcript lines without audio
    # (train utt, dev/test utt) pairs with the same text
    leaked: List[Tuple[str, str]] = field(default_factory=list)


def have_tools() -> str:
    """'' when the builders can run, else the reason they cannot."""
    missing = [b for b in ("espeak-ng", "sox") if shutil.which(b) is None]
    if missing:
        return "missing " + ", ".join(missing)
    if not FORTUNES_ZH.is_file():
        return f"{FORTUNES_ZH} missing (Debian package fortunes-zh)"
    return ""


def _run(cmd: str) -> None:
    res = subprocess.run(["bash", "-c", "set -o pipefail; " + cmd], capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"command failed ({res.returncode}): {cmd}\n{res.stderr[-2000:]}")


def synthesize(text: str, voice: str, out: Path, rate: int = 170, pitch: int = 50) -> None:
    """espeak-ng -> 16 kHz 16-bit mono; the output format follows out's suffix (.wav, .flac)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    quoted = text.replace('"', "")
    _run(f'espeak-ng -v {voice} -s {rate} -p {pitch} --stdout "{quoted}" '
         f'| sox -G -t wav - -r 16000 -c 1 -b 16 {out}')


def _simplified(text: str) -> bool:
    # AISHELL-1 is simplified Chinese; GB2312 has no traditional-only characters.
    try:
        text.encode("gb2312")
        return True
    except UnicodeEncodeError:
        return False


def chinese_sentences(n: int, min_chars: int = 4, max_chars: int = 9, seed: int = 0) -> List[str]:
    """n distinct simplified pure-Han clauses from fortunes-zh, picked reproducibly."""
    raw = _ANSI.sub("", FORTUNES_ZH.read_text(encoding="utf-8", errors="replace"))
    pool = sorted({c for c in re.split(r"[^\u4e00-\u9fff]+", raw)
                   if _HAN_ONLY.fullmatch(c) and min_chars <= len(c) <= max_chars
                   and _simplified(c)})
    if len(pool) < n:
        raise ValueError(f"{FORTUNES_ZH}: only {len(pool)} clauses of "
                         f"{min_chars}-{max_chars} characters")
    return random.Random(seed).sample(pool, n)


def _segment(text: str, rng: random.Random) -> str:
    """Imitate the transcript's word segmentation: spaces between 1-3 character words."""
    words, i = [], 0
    while i < len(text):
        k = rng.choice((1, 2, 2, 3))
        words.append(text[i:i + k])
        i += k
    return " ".join(words)


# set -> [(speaker, espeak voice, number of utterances)]; speaker ids in the real corpus's ranges
AISHELL_SPEAKERS = {
    "train": [("S0002", "cmn-latn-pinyin", 5), ("S0003", "cmn-latn-pinyin+f3", 5)],
    "dev": [("S0724", "cmn-latn-pinyin+m3", 3)],
    "test": [("S0764", "cmn-latn-pinyin+f2", 3)],
}


def build_fake_aishell(root: Path, seed: int = 0, speaker_tarballs: bool = True) -> FakeCorpus:
    """AISHELL-1 as data_aishell.tgz extracts: with ``speaker_tarballs`` the audio is one
    ``wav/<spk>.tar.gz`` per speaker holding ``<set>/<spk>/*.wav``, as distributed (the recipe
    extracts them); without, already extracted to ``wav/<set>/<spk>/``. ``audio`` names the
    extracted paths either way.

    Irregularities: one training wav has no transcript line (must be dropped and counted), one
    transcript line has no wav (ignored), and one training sentence equals a test sentence (the
    LM text must lose it; ASR training keeps it).
    """
    rng = random.Random(seed)
    corpus = root / "data_aishell"
    n_utts = sum(n for spks in AISHELL_SPEAKERS.values() for _, _, n in spks)
    sentences = chinese_sentences(n_utts, seed=seed)
    fake = FakeCorpus(root=root, texts={}, speakers={}, audio={})
    lines: List[str] = []
    k = 0
    for set_name, speakers in AISHELL_SPEAKERS.items():
        fake.texts[set_name] = {}
        for spk, voice, n in speakers:
            for i in range(n):
                utt = f"BAC009{spk}W{121 + i:04d}"
                text = sentences[k]
                k += 1
                wav = corpus / "wav" / set_name / spk / f"{utt}.wav"
                synthesize(text, voice, wav, rate=150 + 10 * i, pitch=40 + 5 * i)
                fake.texts[set_name][utt] = text
                fake.speakers[utt] = spk
                fake.audio[utt] = wav
                lines.append(f"{utt} {_segment(text, rng)}")
    # A training utterance that reads a test sentence (the LM-text leak the guard must catch).
    test_utt, test_text = sorted(fake.texts["test"].items())[0]
    leak_utt = "BAC009S0002W0130"
    synthesize(test_text, "cmn-latn-pinyin", corpus / "wav/train/S0002" / f"{leak_utt}.wav")
    fake.texts["train"][leak_utt] = test_text
    fake.speakers[leak_utt] = "S0002"
    fake.audio[leak_utt] = corpus / "wav/train/S0002" / f"{leak_utt}.wav"
    lines.append(f"{leak_utt} {_segment(test_text, rng)}")
    fake.leaked.append((leak_utt, test_utt))
    # A wav without transcript (the real corpus has some) ...
    lost = "BAC009S0003W0199"
    synthesize("你好", "cmn-latn-pinyin+f3", corpus / "wav/train/S0003" / f"{lost}.wav")
    fake.no_transcript["train"] = [lost]
    # ... and a transcript line without wav.
    fake.orphan_transcripts.append("BAC009S0005W0121")
    lines.append("BAC009S0005W0121 没有 音频")
    transcript = corpus / "transcript" / "aishell_transcript_v0.8.txt"
    transcript.parent.mkdir(parents=True, exist_ok=True)
    transcript.write_text("".join(line + "\n" for line in sorted(lines)), encoding="utf-8")
    if speaker_tarballs:
        wav_dir = corpus / "wav"
        for set_name, speakers in AISHELL_SPEAKERS.items():
            for spk, _, _ in speakers:
                _run(f"tar -czf {wav_dir}/{spk}.tar.gz -C {wav_dir} {set_name}/{spk}")
                shutil.rmtree(wav_dir / set_name / spk)
            (wav_dir / set_name).rmdir()
    return fake


ENGLISH_SENTENCES = [
    "the river ran quietly past the old mill",
    "she opened the window and the morning came in",
    "it's a long road that has no turning",
    "we waited by the gate until the carriage arrived",
    "the captain looked at the sky and said nothing",
    "he wrote a letter to his brother in the city",
    "the garden was full of roses and tall grass",
    "they walked together along the edge of the lake",
    "the children laughed at the little brown dog",
    "a cold wind blew across the empty field",
    "i don't believe the story he told us",
    "the lamp burned low as the night went on",
    "her voice was soft and her eyes were kind",
    "the train left the station before noon",
    "we found the key under a stone by the door",
    "the bells rang out over the sleeping town",
    "he kept his promise to the very end",
    "the ship sailed north through the grey water",
]
# part -> (reader, chapter, gender, espeak voice, number of utterances)
LIBRISPEECH_PARTS = {
    "train-clean-100": ("103", "1240", "F", "en-us+f3", 3),
    "train-clean-360": ("100", "121669", "F", "en-gb+f2", 3),
    "train-other-500": ("1006", "135212", "F", "en-us+f4", 2),
    "dev-clean": ("1272", "128104", "M", "en-us", 2),
    "dev-other": ("116", "288045", "M", "en-gb+m3", 2),
    "test-clean": ("1089", "134686", "M", "en-us+m3", 2),
    "test-other": ("1688", "142285", "M", "en-gb-scotland", 2),
}


def build_fake_librispeech(root: Path) -> FakeCorpus:
    """LibriSpeech as the openslr 12 part tarballs extract: root/LibriSpeech/<part>/...

    Transcripts are upper case as in the corpus. Irregularities: a flac without a transcript
    line in train-clean-100 (must be dropped and counted).
    """
    base = root / "LibriSpeech"
    fake = FakeCorpus(root=root, texts={}, speakers={}, audio={})
    speakers_txt = ["; ID  |SEX| SUBSET           |MINUTES| NAME"]
    k = 0
    for part, (reader, chapter, sex, voice, n) in LIBRISPEECH_PARTS.items():
        chapter_dir = base / part / reader / chapter
        set_name = part.replace("-", "_")
        fake.texts[set_name] = {}
        lines = []
        for i in range(n):
            utt = f"{reader}-{chapter}-{i:04d}"
            text = ENGLISH_SENTENCES[k % len(ENGLISH_SENTENCES)]
            k += 1
            flac = chapter_dir / f"{utt}.flac"
            synthesize(text, voice, flac, rate=160 + 10 * i)
            lines.append(f"{utt} {text.upper()}")
            fake.texts[set_name][utt] = text.upper()
            fake.speakers[utt] = f"{reader}-{chapter}"
            fake.audio[utt] = flac
        (chapter_dir / f"{reader}-{chapter}.trans.txt").write_text(
            "".join(line + "\n" for line in lines), encoding="utf-8")
        speakers_txt.append(f"{reader:<5}| {sex} | {part:<17}| 25.00 | Reader {reader}")
    stray = base / "train-clean-100/103/1240/103-1240-0099.flac"
    synthesize("an utterance nobody transcribed", "en-us", stray)
    fake.no_transcript["train_clean_100"] = [stray.stem]
    (base / "SPEAKERS.TXT").write_text("\n".join(speakers_txt) + "\n", encoding="utf-8")
    return fake


# Sizes of conf/train_asr_cif_tiny.yaml (seconds per epoch on a CPU).
TOY_SIZES = {
    "encoder_conf": ("output_size", "attention_heads", "linear_units", "num_blocks",
                     "frontend_channels", "cnn_module_kernel", "pooling_layers"),
    "decoder_conf": ("attention_heads", "linear_units", "num_blocks"),
}


def toy_size_config(src: Path, dest: Path, teacher_dim: Optional[int] = None) -> Path:
    """A recipe's ASR config at the sizes of conf/train_asr_cif_tiny.yaml, for running the
    recipe's own configuration on a fabricated corpus: model_conf (token symbols, loss weights),
    normalisation, augmentation, optimiser and batching stay as in ``src``; the encoder and
    decoder sizes and the CIF conv width (``predictor_conf.conv_channels``: the encoder size)
    change, with ``teacher_dim`` also ``distiller_conf.teacher_dim`` of a config that names a
    distiller (MiniLM: 384); ``fold_length`` is dropped (asr.sh passes its own, and ESPnet appends
    command-line values to a config's list)."""
    import yaml

    repo = Path(__file__).resolve().parents[1]
    tiny = yaml.safe_load((repo / "conf/train_asr_cif_tiny.yaml").read_text(encoding="utf-8"))
    conf = yaml.safe_load(Path(src).read_text(encoding="utf-8"))
    for section, keys in TOY_SIZES.items():
        conf[section].update({k: tiny[section][k] for k in keys})
    if "conv_channels" in conf.get("predictor_conf", {}):
        conf["predictor_conf"]["conv_channels"] = tiny["encoder_conf"]["output_size"]
    if teacher_dim is not None and "distiller_conf" in conf:
        conf["distiller_conf"]["teacher_dim"] = teacher_dim
    conf.pop("fold_length", None)
    dest = Path(dest)
    dest.write_text(yaml.safe_dump(conf, sort_keys=False), encoding="utf-8")
    return dest
