"""The offline synthetic corpus (egs/minisynth/asr1/local/data.sh) with real festival/espeak-ng.

One tiny corpus is built through the recipe's data.sh (session fixture); determinism and
resumption are checked with in-process rebuilds of the same tiny configuration.
"""
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from espnet_ext.recipe.corpus import synth
from espnet_ext.recipe.corpus.text import normalize_sentence
from espnet_ext.recipe.corpus.voices import Voice, synthesize_espeak, synthesize_festival
from espnet_ext.recipe.corpus.word_times import EspeakTimer, espeak_words, read_ctm

RECIPE = Path(__file__).resolve().parents[3] / "egs" / "minisynth" / "asr1"
SEED = 3
TINY = {"train": 12, "dev": 4, "test_in": 4, "test_unseen_voice": 3, "test_cross": 4,
        "dev_cross": 3, "lm_in": 200, "lm_cross": 150}
FILES = ("wav.scp", "text", "utt2spk", "utt2dur")

pytestmark = pytest.mark.skipif(
    any(shutil.which(t) is None for t in ("festival", "espeak-ng", "sox", "bible")),
    reason="needs the Debian packages festival, espeak-ng, sox and bible-kjv",
)


def tiny_config():
    return synth.load_config(RECIPE / "conf" / "corpus_fast.yaml", {"sizes": TINY})


def read_kv(path: Path):
    lines = path.read_text().splitlines()
    return [tuple(line.split(" ", 1)) for line in lines]


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """The tiny corpus built by local/data.sh, as (data_dir, corpus_dir)."""
    root = tmp_path_factory.mktemp("minisynth")
    sizes = [a for k, v in TINY.items() for a in (f"--num_{k}", str(v))]
    proc = subprocess.run(
        ["bash", "local/data.sh", "--fast", "true", "--seed", str(SEED), "--nj", "2",
         "--data_dir", str(root / "data"), "--corpus_dir", str(root / "corpus"), *sizes],
        cwd=RECIPE, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return root / "data", root / "corpus"


@pytest.fixture(scope="session")
def rebuilt(tiny, tmp_path_factory):
    """The same tiny corpus built again in-process into a fresh corpus dir."""
    root = tmp_path_factory.mktemp("minisynth_again")
    stats = synth.build_corpus(tiny_config(), root / "data", root / "corpus", seed=SEED, nj=2,
                               progress=False)
    return root / "data", root / "corpus", stats


def test_data_dirs_are_valid_kaldi_dirs(tiny):
    data, _ = tiny
    for subset in synth.SUBSETS:
        d = data / subset
        keys = None
        for name in FILES:
            rows = read_kv(d / name)
            ids = [r[0] for r in rows]
            assert ids == sorted(ids), f"{d / name} not sorted"
            assert len(set(ids)) == len(ids), f"{d / name} has duplicate ids"
            keys = keys or ids
            assert ids == keys, f"{d / name} ids differ from wav.scp"
        assert len(keys) == TINY[subset], f"{subset}: utterances missing"
        utt2spk = dict(read_kv(d / "utt2spk"))
        for utt, spk in utt2spk.items():
            assert utt.startswith(spk + "-") and "-" not in spk
        spk2utt = {line.split()[0]: line.split()[1:] for line in (d / "spk2utt").read_text().splitlines()}
        assert list(spk2utt) == sorted(spk2utt)
        assert {(u, s) for s, us in spk2utt.items() for u in us} == set(utt2spk.items())
        for utt, sentence in read_kv(d / "text"):
            assert re.fullmatch(r"[a-z']+( [a-z']+)*", sentence), (utt, sentence)
            assert 5 <= len(sentence.split()) <= 15
            assert normalize_sentence(sentence) == sentence
        for utt, wav in read_kv(d / "wav.scp"):
            assert os.path.isabs(wav) and Path(wav).is_file(), (utt, wav)
    assert not (data / "local" / "log" / "synth_failures.txt").read_text().strip()
    assert "synthesised" in (data / "local" / "log" / "synth_corpus.log").read_text()
    stats = json.loads((data / "local" / "corpus_stats.json").read_text())  # the done marker
    assert {s: v["utterances"] for s, v in stats["subsets"].items()} == {s: TINY[s] for s in synth.SUBSETS}
    assert stats["failed"] == 0
    for subset in synth.SUBSETS:  # the statistics describe the data files
        d, v = data / subset, stats["subsets"][subset]
        seconds = sum(float(x) for _, x in read_kv(d / "utt2dur"))
        assert v["hours"] == pytest.approx(seconds / 3600, abs=6e-4), subset  # rounded to 3 places
        assert v["words"] == sum(len(t.split()) for _, t in read_kv(d / "text")), subset
        assert v["speakers"] == len(set(dict(read_kv(d / "utt2spk")).values())), subset


def test_wavs_are_16k_mono_speech_of_plausible_length(tiny):
    data, _ = tiny
    for subset in synth.SUBSETS:
        texts = dict(read_kv(data / subset / "text"))
        durations = {u: float(d) for u, d in read_kv(data / subset / "utt2dur")}
        for utt, wav in read_kv(data / subset / "wav.scp"):
            info = sf.info(wav)
            assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16"), wav
            audio, _ = sf.read(wav, dtype="float32")
            assert np.sqrt(np.mean(audio**2)) > 0.01, f"{utt} is (nearly) silent"
            seconds = len(audio) / 16000
            assert abs(seconds - durations[utt]) < 0.002
            words = len(texts[utt].split())
            assert 0.12 * words < seconds < 1.0 * words + 1.5, (utt, words, seconds)


def _speech_edges(audio: np.ndarray, rate: int = 16000):
    """(first, last) second at which 10 ms frames exceed 0.5 % of the utterance's peak level."""
    frames = audio[: len(audio) // 160 * 160].reshape(-1, 160)
    level = np.abs(frames).max(axis=1)
    loud = np.nonzero(level > 0.005 * level.max())[0]
    return loud[0] * 0.01, (loud[-1] + 1) * 0.01


def test_dev_and_test_sets_have_the_synthesisers_word_times(tiny):
    """word_times.ctm of every dev/test utterance: the transcript's words, in order, inside the
    wav; the first word starts and the last ends where the audio itself starts and stops."""
    data, _ = tiny
    stats = json.loads((data / "local" / "corpus_stats.json").read_text())
    n_eval = sum(TINY[s] for s in synth.EVAL_SUBSETS)
    assert stats["word_times"] == {"timed": n_eval, "untimed": 0}
    assert not (data / "train" / "word_times.ctm").exists()
    engines = set()
    for subset in synth.EVAL_SUBSETS:
        ctm = read_ctm(data / subset / "word_times.ctm")
        texts, wavs = dict(read_kv(data / subset / "text")), dict(read_kv(data / subset / "wav.scp"))
        assert sorted(ctm) == sorted(texts)
        for utt, words in ctm.items():
            assert [w for u, _, _ in words for w in u.split("+")] == texts[utt].split(), utt
            audio, _ = sf.read(wavs[utt], dtype="float32")
            ends = [0.0] + [e for _, _, e in words]
            for (w, start, end), before in zip(words, ends):
                assert before - 2e-3 <= start < end <= len(audio) / 16000 + 2e-3, (utt, w)  # ms rounding
            onset, offset = _speech_edges(audio)
            assert abs(words[0][1] - onset) < 0.06, (utt, words[0], onset)
            assert abs(words[-1][2] - offset) < 0.08, (utt, words[-1], offset)
            engines.add("espeak" if utt.startswith("en") else "festival")  # espeak ids: accent first
    assert engines == {"espeak", "festival"}


def test_espeak_library_reads_as_the_command_does():
    """The premise of espeak-ng's word times: the library's samples are the command's (which
    appends silence), for several readings in a row and for voices found by language."""
    timer = EspeakTimer()
    text = "the quick brown fox jumps over it, said he"
    for voice, rate, pitch in [("en-gb+m5", 170, 55), ("en-us+m7", 140, 35), ("en-gb+m5", 170, 55),
                               ("en-gb-x-rp+f2", 185, 65)]:
        events, samples, sample_rate = timer.synthesize(voice, rate, pitch, text, samples=True)
        wav = subprocess.run(["espeak-ng", "-v", voice, "-s", str(rate), "-p", str(pitch),
                              "--stdout", text], capture_output=True, check=True).stdout
        command = np.frombuffer(wav[44:], dtype="<i2")  # 44-byte RIFF header, 22.05 kHz
        assert sample_rate == 22050
        assert np.array_equal(command[:len(samples)], np.array(samples, dtype=np.int16)), voice
        assert np.abs(command[len(samples):].astype(np.int32)).max(initial=0) < 0.03 * 32768
        words = espeak_words(text, events, sample_rate)
        assert [w for u, _, _ in words for w in u.split("+")] == text.replace(",", "").split()
        assert words[-1][2] <= len(samples) / sample_rate


def test_espeak_word_times_from_events():
    # Events as libespeak-ng reports them for "go on, there are" (type, text position, length,
    # sample, phoneme): a word starts at its first phoneme and ends at the next phoneme, pause or
    # end; "there are" is read as one unit (no word event of its own for "are").
    word, phoneme, end = 1, 7, 5
    events = [(word, 1, 2, 0, b"\x01"), (phoneme, 1, 0, 100, b"g"), (phoneme, 1, 0, 300, b"oU"),
              (word, 4, 2, 800, b"\x02"), (phoneme, 4, 0, 800, b"0"), (phoneme, 4, 0, 1000, b"n"),
              (phoneme, 6, 0, 1200, b"_:"), (end, 6, 0, 1500, b"\x01"),
              (word, 8, 5, 1500, b"\x03"), (phoneme, 8, 0, 1600, b"D"), (phoneme, 8, 0, 1700, b"e@"),
              (phoneme, 8, 0, 1800, b"r"), (phoneme, 8, 0, 1900, b"A@"),
              (phoneme, 17, 0, 2100, b"_"), (end, 17, 0, 2200, b"\x01")]
    assert espeak_words("go on, there are", events, 1000) == [
        ("go", 0.1, 0.8), ("on", 0.8, 1.2), ("there+are", 1.6, 2.1)]


def test_speaker_design(tiny):
    data, _ = tiny
    spk = {s: set(dict(read_kv(data / s / "utt2spk")).values()) for s in synth.SUBSETS}
    assert spk["test_unseen_voice"] == {"slt"}

    def families(ids):
        return {"kal" if i.startswith("kal_") else "ked" if i.startswith("ked_") else
                "slt" if i == "slt" else "espeak" for i in ids}

    assert families(spk["train"]) == {"kal", "ked", "espeak"}
    assert families(spk["test_in"]) <= families(spk["train"])
    assert not spk["train"] & (spk["dev"] | spk["test_in"] | spk["test_cross"])
    assert not spk["dev"] & spk["test_in"]
    # The cross-domain tuning set: Bible clauses read by the dev speaker pool.
    dev_pool = {line.split("\t")[0] for line in
                (data / "local" / "speakers.tsv").read_text().splitlines() if "\tdev" in line}
    assert spk["dev"] <= dev_pool and spk["dev_cross"] <= dev_pool
    assert not spk["dev_cross"] & (spk["train"] | spk["test_in"] | spk["test_cross"])
    assert spk["test_cross"] <= set(
        line.split("\t")[0] for line in (data / "local" / "speakers.tsv").read_text().splitlines()
        if "test_in" in line)


def test_lm_text_never_contains_dev_or_test_sentences(tiny):
    data, _ = tiny
    evaluation = {normalize_sentence(t) for s in synth.EVAL_SUBSETS
                  for _, t in read_kv(data / s / "text")}
    train = [t for _, t in read_kv(data / "train" / "text")]
    lm_in = [t for _, t in read_kv(data / "local" / "lm_in" / "text")]
    lm_cross = [t for _, t in read_kv(data / "local" / "lm_cross" / "text")]
    assert len(lm_in) == TINY["lm_in"] and len(lm_cross) == TINY["lm_cross"]
    assert set(train) <= set(lm_in) and len(lm_in) > len(train)
    for name, sentences in (("train", train), ("lm_in", lm_in), ("lm_cross", lm_cross)):
        assert not {normalize_sentence(t) for t in sentences} & evaluation, name
    cross_test = {t for _, t in read_kv(data / "test_cross" / "text")}
    assert not cross_test & set(lm_in), "a cross-domain test sentence is in the in-domain LM text"
    cross_dev = {t for _, t in read_kv(data / "dev_cross" / "text")}
    assert len(cross_dev) == TINY["dev_cross"]
    assert not cross_dev & (cross_test | set(lm_cross) | set(lm_in))
    assert cross_dev <= set(synth.load_text_pools(tiny_config())[1])  # Bible clauses
    report = (data / "local" / "lm_leak_report.txt").read_text()
    assert "OK, no overlap" in report and "lm_cross" in report


def test_same_seed_gives_identical_corpus(tiny, rebuilt):
    (data_a, corpus_a), (data_b, corpus_b, _) = tiny, rebuilt
    for subset in synth.SUBSETS:
        for name in ("text", "utt2spk", "spk2utt", "utt2dur"):
            assert (data_a / subset / name).read_bytes() == (data_b / subset / name).read_bytes()
        scp_a = (data_a / subset / "wav.scp").read_text()
        scp_b = (data_b / subset / "wav.scp").read_text()
        assert scp_a.replace(str(corpus_a.resolve()), "") == scp_b.replace(str(corpus_b.resolve()), "")
        for (_, wav_a), (_, wav_b) in zip(read_kv(data_a / subset / "wav.scp"),
                                           read_kv(data_b / subset / "wav.scp")):
            assert Path(wav_a).read_bytes() == Path(wav_b).read_bytes(), (wav_a, wav_b)
    for name in ("lm_in", "lm_cross"):
        assert ((data_a / "local" / name / "text").read_bytes()
                == (data_b / "local" / name / "text").read_bytes())
    other = synth.make_plan(tiny_config(), *synth.load_text_pools(tiny_config()), SEED + 1, corpus_b)
    assert [u.text for u in other.utterances] != [t for s in synth.SUBSETS
                                                  for _, t in read_kv(data_b / s / "text")]


def test_rerun_regenerates_only_missing_or_partial_wavs(rebuilt):
    data, corpus, first = rebuilt
    assert first["synthesised"] == sum(TINY[s] for s in synth.SUBSETS) and first["reused"] == 0
    wavs = [Path(w) for s in synth.SUBSETS for _, w in read_kv(data / s / "wav.scp")]
    deleted, truncated = wavs[0], wavs[-1]
    original = {w: w.read_bytes() for w in (deleted, truncated)}
    deleted.unlink()
    # What a killed run leaves: a partial temporary file, and (e.g. copied by hand) a cut wav.
    deleted.with_name(deleted.name + ".tmp").write_bytes(original[deleted][:1000])
    truncated.write_bytes(original[truncated][: len(original[truncated]) // 2])
    untouched = {w: w.stat().st_mtime_ns for w in wavs if w not in original}

    stats = synth.build_corpus(tiny_config(), data, corpus, seed=SEED, nj=2, progress=False)
    assert (stats["synthesised"], stats["reused"], stats["failed"]) == (2, len(wavs) - 2, 0)
    for wav, content in original.items():
        assert wav.read_bytes() == content, f"{wav} not regenerated identically"
    assert all(w.stat().st_mtime_ns == t for w, t in untouched.items())
    assert not list(corpus.rglob("*.tmp"))


def test_synthesis_failures_are_reported_not_hidden(tmp_path):
    # festival segfaults on an empty text: the chunk must still yield the other utterances.
    kal = Voice("festival", "kal", stretch=1.0, f0_mean=110)
    items = [(kal, text, tmp_path / f"{i}.wav")
             for i, text in enumerate(["the first sentence is fine", "", "and so is the third one"])]
    done, failed = synthesize_festival(items, tmp_path / "work", timeout=60)
    assert done == [items[0][2], items[2][2]]
    assert [w for w, _ in failed] == [items[1][2]] and "no output" in failed[0][1]
    bogus = Voice("espeak", "xx-nonexistent", variant="m3", rate=150, pitch=50)
    reason = synthesize_espeak(bogus, "a sentence that cannot be spoken", tmp_path / "e.wav", 60)
    assert reason and "espeak-ng exit" in reason
    assert not list(tmp_path.glob("*.tmp")) and not (tmp_path / "e.wav").exists()


def test_dev_cross_leaves_every_other_subset_unchanged(tmp_path):
    """dev_cross is drawn after everything else: its size changes no other subset, speaker or LM
    text of the same seed (corpora built before it existed stay valid)."""
    pools = synth.load_text_pools(tiny_config())
    plans = [synth.make_plan(synth.load_config(RECIPE / "conf" / "corpus_fast.yaml",
                                               {"sizes": dict(TINY, dev_cross=n)}),
                             *pools, SEED, tmp_path) for n in (1, 6)]
    rows = [[(u.utt_id, u.text, u.wav) for u in plan.utterances if u.subset != "dev_cross"]
            for plan in plans]
    assert rows[0] == rows[1]
    assert plans[0].lm_text == plans[1].lm_text
    assert [len([u for u in p.utterances if u.subset == "dev_cross"]) for p in plans] == [1, 6]


def test_config_errors_name_the_problem(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: " + str(RECIPE / "conf" / "corpus.yaml") + "\nsizes: {trian: 3}\n")
    with pytest.raises(ValueError, match="trian"):
        synth.load_config(bad)
    cfg = synth.load_config(RECIPE / "conf" / "corpus.yaml", {"sizes": {"train": 10**6}})
    with pytest.raises(ValueError, match="in-domain pool has"):
        synth.make_plan(cfg, ["a b c d e"] * 10, ["f g h i j"], 1, tmp_path)
    cfg = synth.load_config(RECIPE / "conf" / "corpus.yaml",
                            {"voices": {"espeak": {"train": {"variants": ["m3", "mm3"], "speakers": 8}}}})
    with pytest.raises(ValueError, match="mm3"):
        synth.build_corpus(cfg, tmp_path / "data", tmp_path / "corpus", progress=False)


@pytest.mark.parametrize("raw, expected", [
    ("Don't PANIC -- it's only a test!", "don't panic it's only a test"),
    ("``Well,'' she said, 'the well-known cat.'", "well she said the well known cat"),
    ("Version 2.0 is out", None),
    ("Mail me @ home", None),
    ("caf\u00e9 society", None),
])
def test_normalize_sentence(raw, expected):
    assert normalize_sentence(raw) == expected


def test_restrict_vocabulary_keeps_sentences_of_the_most_frequent_words():
    from espnet_ext.recipe.corpus.text import restrict_vocabulary

    pool = ["the cat sat", "the dog sat", "a cat ran", "the zebra sat", "the cat sat down"]
    # counts: the 4, sat 3, cat 3, dog/a/ran/zebra/down 1 -> top 4 = the, cat, sat, a (ties: alphabetic)
    assert restrict_vocabulary(pool, 4) == ["the cat sat"]
    assert restrict_vocabulary(pool, None) == pool
    assert restrict_vocabulary(pool, 100) == pool
    with pytest.raises(ValueError, match="positive"):
        restrict_vocabulary(pool, 0)


def test_default_preset_has_a_closed_vocabulary():
    cfg = synth.load_config(RECIPE / "conf" / "corpus.yaml")
    in_domain, cross = synth.load_text_pools(cfg)
    size = cfg["text"]["vocabulary_size"]
    for pool in (in_domain, cross):
        assert len({w for s in pool for w in s.split()}) <= size
    assert len(in_domain) >= sum(cfg["sizes"][s] for s in ("train", "dev", "test_in", "test_unseen_voice"))
