"""Offline synthetic English ASR corpus: text pools -> speakers -> wavs -> Kaldi data dirs.

Builds the data of the ``minisynth`` recipe (``egs/minisynth/asr1/local/data.sh``) from Debian
packages only: festival (kal, ked, slt) and espeak-ng voices read fortune sentences (in-domain)
and King James Bible clauses (cross-domain). Subsets:

- ``train``: training voice families (festival kal/ked and espeak-ng) with training settings;
- ``dev``, ``test_in``: the same families with unseen rate/pitch/variant settings (dev and test
  speakers are disjoint) and unseen sentences;
- ``test_unseen_voice``: a family absent from training (festival slt), unseen sentences;
- ``test_cross``: Bible clauses spoken by the ``test_in`` speakers;
- ``dev_cross``: Bible clauses spoken by the ``dev`` speakers (tuning set of the cross-domain
  condition, e.g. LM fusion weights). Drawn after everything else (its clauses from the end of
  the cross pool, its speaker shuffles last), so adding it leaves every other subset, LM text and
  speaker assignment of the same seed unchanged.

Every dev/test data dir also gets ``word_times.ctm``: the synthesiser's own word times
(:mod:`espnet_ext.recipe.corpus.word_times`), against which model timestamps are measured.

LM text (``data/local/lm_in/text``, ``data/local/lm_cross/text``) excludes every dev/test
sentence, which is checked after writing and reported in ``data/local/lm_leak_report.txt``.
Everything is a function of the config and the seed; wav names hash (speaker, text), so reruns
reuse finished wavs (resumable across presets too) and byte-identical inputs give identical files.
"""
import copy
import hashlib
import json
import logging
import os
import random
import shutil
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import yaml
from tqdm import tqdm

from espnet_ext.recipe.corpus import text as corpus_text
from espnet_ext.recipe.corpus.voices import (
    Voice,
    check_espeak_voices,
    synthesize_espeak,
    synthesize_festival,
    wav_seconds,
)
from espnet_ext.recipe.corpus.word_times import (
    EspeakTimer,
    WordTime,
    ctm_lines,
    festival_words_path,
    read_words_file,
    words_match,
)
from espnet_ext.utils.kaldi_table import read_table_dict

logger = logging.getLogger(__name__)

# dev_cross last: its random draws follow every other subset's (see make_plan).
SUBSETS = ("train", "dev", "test_in", "test_unseen_voice", "test_cross", "dev_cross")
EVAL_SUBSETS = SUBSETS[1:]
LM_SETS = ("lm_in", "lm_cross")
# Short codes make utterance ids unique across subsets that share speakers.
_SUBSET_CODE = {"train": "tr", "dev": "dv", "test_in": "ti", "test_unseen_voice": "tu",
                "test_cross": "tc", "dev_cross": "dc"}

# Expected config layout: leaf values are the accepted types (None = may be null).
_SCHEMA: Dict[str, Any] = {
    "sizes": {"train": int, "dev": int, "test_in": int, "test_unseen_voice": int,
              "test_cross": int, "dev_cross": int, "lm_in": (int, None),
              "lm_cross": (int, None)},
    "text": {"min_words": int, "max_words": int, "in_domain": list,
             "fortune_categories": (list, None), "fortune_exclude": list, "bible_range": str,
             "vocabulary_size": (int, None)},
    "voices": {
        "festival_fraction": (float, int),
        "festival": {"voices": list, "train": {"stretch": list, "f0_mean": list},
                     "heldout": {"stretch": list, "f0_mean": list}},
        "espeak": {"accents": list,
                   "train": {"variants": list, "rate": list, "pitch": list, "speakers": int},
                   "heldout": {"variants": list, "rate": list, "pitch": list, "speakers": int}},
        "unseen": list,
    },
    "synthesis": {"festival_chunk": int, "espeak_chunk": int, "timeout": (int, float),
                  "max_failure_rate": (float, int)},
}


# ----------------------------------------------------------------------------- config
def _deep_merge(base: Dict[str, Any], override: Dict[str, Any]) -> Dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _check_schema(cfg: Any, schema: Any, where: str, source: str) -> None:
    if isinstance(schema, dict):
        if not isinstance(cfg, dict):
            raise ValueError(f"{source}: {where or 'config'} must be a mapping")
        unknown = sorted(set(cfg) - set(schema))
        missing = sorted(set(schema) - set(cfg))
        if unknown or missing:
            raise ValueError(f"{source}: {where or 'config'}: unknown keys {unknown}, "
                             f"missing keys {missing}")
        for key, sub in schema.items():
            _check_schema(cfg[key], sub, f"{where}.{key}" if where else key, source)
        return
    types = schema if isinstance(schema, tuple) else (schema,)
    if cfg is None and None in types:
        return
    allowed = tuple(t for t in types if t is not None)
    if isinstance(cfg, bool) or not isinstance(cfg, allowed):
        expected = " or ".join(t.__name__ if t else "null" for t in types)
        raise ValueError(f"{source}: {where} = {cfg!r} should be {expected}")


def load_config(path: Path, overrides: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Read a corpus preset; ``base: other.yaml`` inherits from another preset (same dir).

    ``overrides`` is merged last (e.g. ``{"sizes": {"train": 12}}``). The result is checked
    against the expected layout so a typo fails with the key's name, not later.
    """
    cfg = _read_preset(Path(path))
    if overrides:
        cfg = _deep_merge(cfg, overrides)
    _check_schema(cfg, _SCHEMA, "", str(path))
    return cfg


def _read_preset(path: Path) -> Dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"corpus preset {path} not found")
    with open(path) as f:
        cfg = yaml.safe_load(f) or {}
    base = cfg.pop("base", None)
    return _deep_merge(_read_preset(path.parent / base), cfg) if base is not None else cfg


# ----------------------------------------------------------------------------- plan
@dataclass(frozen=True)
class Utterance:
    """One planned utterance: Kaldi id, subset, speaker, transcript and target wav."""

    utt_id: str
    subset: str
    voice: Voice
    text: str
    wav: Path


@dataclass
class CorpusPlan:
    """What to synthesise and write; a pure function of (config, text pools, seed, corpus_dir)."""

    utterances: List[Utterance]
    lm_text: Dict[str, List[str]]
    speakers: Dict[str, List[Voice]]
    notes: Dict[str, int] = field(default_factory=dict)


def festival_speakers(voices: Sequence[str], grid: Dict[str, list]) -> List[Voice]:
    return [Voice("festival", name, stretch=float(s), f0_mean=int(f))
            for name in voices for s in grid["stretch"] for f in grid["f0_mean"]]


def espeak_speakers(accents: Sequence[str], grid: Dict[str, Any], rng: random.Random,
                    exclude: Iterable[Voice] = ()) -> List[Voice]:
    """``grid['speakers']`` espeak speakers spread evenly over accent x variant pairs.

    Pairs are visited in a shuffled cycle and each visit draws an unused rate/pitch pair, so
    every accent and variant is used before any repeats.
    """
    exclude = set(exclude)
    pool = [Voice("espeak", a, variant=v, rate=int(r), pitch=int(p))
            for a in accents for v in grid["variants"] for r in grid["rate"] for p in grid["pitch"]]
    pool = [v for v in pool if v not in exclude]
    wanted = grid["speakers"]
    if wanted > len(pool):
        raise ValueError(f"asked for {wanted} espeak speakers but the grid has only {len(pool)}")
    by_pair: Dict[Tuple[str, str], List[Voice]] = defaultdict(list)
    for v in pool:
        by_pair[(v.name, v.variant)].append(v)
    pairs = sorted(by_pair)
    rng.shuffle(pairs)
    chosen: List[Voice] = []
    while len(chosen) < wanted:
        for pair in pairs:
            options = by_pair[pair]
            if options and len(chosen) < wanted:
                chosen.append(options.pop(rng.randrange(len(options))))
    return chosen


def split_alternating(voices: Sequence[Voice], rng: random.Random) -> Tuple[List[Voice], List[Voice]]:
    """Two disjoint halves that both cover every voice name (festival voice / espeak accent)."""
    ordered: List[Voice] = []
    for name in sorted({v.name for v in voices}):
        group = [v for v in voices if v.name == name]
        rng.shuffle(group)
        ordered.extend(group)
    return ordered[0::2], ordered[1::2]


def assign_speakers(sentences: Sequence[str], festival: Sequence[Voice], espeak: Sequence[Voice],
                    festival_fraction: float, rng: random.Random) -> List[Tuple[Voice, str]]:
    """Give ``festival_fraction`` of the sentences to festival speakers, the rest to espeak,
    cycling through each (shuffled) speaker list so speakers get equal shares."""
    n = len(sentences)
    if not espeak:
        n_festival = n
    elif not festival:
        n_festival = 0
    else:
        n_festival = round(n * festival_fraction)
    festival, espeak = list(festival), list(espeak)
    rng.shuffle(festival)
    rng.shuffle(espeak)
    voices = [festival[i % len(festival)] for i in range(n_festival)]
    voices += [espeak[i % len(espeak)] for i in range(n - n_festival)]
    return list(zip(voices, sentences))


def wav_path(corpus_dir: Path, voice: Voice, text: str) -> Path:
    """Content-addressed wav path: the same speaker and text always map to the same file."""
    digest = hashlib.sha1(f"{voice!r}|{text}".encode()).hexdigest()[:16]
    return corpus_dir / "wav" / voice.speaker_id / f"{digest}.wav"


def make_plan(cfg: Dict[str, Any], in_domain: Sequence[str], cross_domain: Sequence[str],
              seed: int, corpus_dir: Path) -> CorpusPlan:
    """Split the text pools and speakers into subsets and LM texts (deterministic in ``seed``)."""
    rng = random.Random(seed)
    sizes = cfg["sizes"]
    for key, value in sizes.items():
        if value is not None and value < (1 if key in SUBSETS else 0):
            raise ValueError(f"sizes.{key} = {value} must be positive")
    in_pool = list(in_domain)
    rng.shuffle(in_pool)
    in_set = set(in_pool)
    # A cross-domain clause that also occurs in-domain (fortunes quote the Bible) would blur the
    # domains and could leak between LM texts and tests: leave it out of the cross pool.
    cross_pool = [s for s in cross_domain if s not in in_set]
    rng.shuffle(cross_pool)

    order = ("test_in", "dev", "test_unseen_voice", "train")
    need = sum(sizes[s] for s in order)
    if need > len(in_pool):
        raise ValueError(f"in-domain pool has {len(in_pool)} sentences, the sizes need {need} "
                         f"({', '.join(f'{s}={sizes[s]}' for s in order)})")
    if sizes["test_cross"] + sizes["dev_cross"] > len(cross_pool):
        raise ValueError(f"cross-domain pool has {len(cross_pool)} sentences, sizes.test_cross + "
                         f"sizes.dev_cross = {sizes['test_cross'] + sizes['dev_cross']}")
    texts: Dict[str, List[str]] = {}
    start = 0
    for subset in order:
        texts[subset] = in_pool[start:start + sizes[subset]]
        start += sizes[subset]
    in_rest = in_pool[start:]
    texts["test_cross"] = cross_pool[:sizes["test_cross"]]
    # dev_cross from the end of the pool: lm_cross (a prefix of the rest) keeps its sentences.
    texts["dev_cross"] = cross_pool[len(cross_pool) - sizes["dev_cross"]:]
    cross_rest = cross_pool[sizes["test_cross"]:len(cross_pool) - sizes["dev_cross"]]

    lm_in = texts["train"] + in_rest
    if sizes["lm_in"] is not None:
        if sizes["lm_in"] < sizes["train"]:
            raise ValueError(f"sizes.lm_in = {sizes['lm_in']} < sizes.train = {sizes['train']}: "
                             "the in-domain LM text includes the training transcripts")
        lm_in = lm_in[:sizes["lm_in"]]
    lm_cross = cross_rest if sizes["lm_cross"] is None else cross_rest[:sizes["lm_cross"]]

    voices = cfg["voices"]
    fest, esp = voices["festival"], voices["espeak"]
    train_f = festival_speakers(fest["voices"], fest["train"])
    heldout_f = [v for v in festival_speakers(fest["voices"], fest["heldout"]) if v not in train_f]
    train_e = espeak_speakers(esp["accents"], esp["train"], rng)
    heldout_e = espeak_speakers(esp["accents"], esp["heldout"], rng, exclude=train_e)
    test_f, dev_f = split_alternating(heldout_f, rng)
    test_e, dev_e = split_alternating(heldout_e, rng)
    unseen = [Voice("festival", name) for name in voices["unseen"]]
    training_families = {v.family for v in train_f + train_e}
    if any(v.family in training_families for v in unseen):
        raise ValueError(f"voices.unseen {voices['unseen']} must not be a training voice family")
    speakers = {"train": train_f + train_e, "dev": dev_f + dev_e, "test_in": test_f + test_e,
                "test_unseen_voice": unseen, "test_cross": test_f + test_e,
                "dev_cross": dev_f + dev_e}
    groups = {"train": (train_f, train_e), "dev": (dev_f, dev_e), "test_in": (test_f, test_e),
              "test_unseen_voice": (unseen, []), "test_cross": (test_f, test_e),
              "dev_cross": (dev_f, dev_e)}

    utterances = []
    for subset in SUBSETS:
        pairs = assign_speakers(texts[subset], *groups[subset], voices["festival_fraction"], rng)
        for i, (voice, sentence) in enumerate(pairs):
            utterances.append(Utterance(f"{voice.speaker_id}-{_SUBSET_CODE[subset]}{i:05d}",
                                        subset, voice, sentence,
                                        wav_path(corpus_dir, voice, sentence)))
    notes = {"in_domain_pool": len(in_pool), "cross_domain_pool": len(cross_domain),
             "cross_removed_as_in_domain": len(cross_domain) - len(cross_pool)}
    return CorpusPlan(utterances, {"lm_in": lm_in, "lm_cross": lm_cross}, speakers, notes)


def load_text_pools(cfg: Dict[str, Any]) -> Tuple[List[str], List[str]]:
    """(in-domain sentences, cross-domain clauses), normalised and deduplicated."""
    t = cfg["text"]
    lo, hi = t["min_words"], t["max_words"]
    in_domain: List[str] = []
    for source in t["in_domain"]:
        if source == "fortunes":
            in_domain += corpus_text.fortune_sentences(lo, hi, t["fortune_categories"],
                                                       exclude=t["fortune_exclude"])
        elif source == "wordnet":
            in_domain += corpus_text.wordnet_examples(lo, hi)
        else:
            raise ValueError(f"text.in_domain: unknown source {source!r} (fortunes, wordnet)")
    in_domain = corpus_text.keep_sentences(in_domain, lo, hi)
    cross = corpus_text.bible_clauses(lo, hi, t["bible_range"])
    # Each pool keeps the sentences within its own most frequent words.
    size = t["vocabulary_size"]
    return corpus_text.restrict_vocabulary(in_domain, size), corpus_text.restrict_vocabulary(cross, size)


# ----------------------------------------------------------------------------- synthesis
def _chunks(items: Sequence, size: int) -> List[Sequence]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def synthesize(utterances: Sequence[Utterance], corpus_dir: Path, nj: int, synthesis: Dict[str, Any],
               progress: bool = True) -> Dict[Path, str]:
    """Synthesise ``utterances`` (whose wavs are missing) in ``nj`` parallel workers.

    festival works in batches (one process per chunk of one voice), espeak-ng one pipeline per
    utterance, chunked for progress. Returns {wav: reason} of the utterances that failed.
    """
    timeout = float(synthesis["timeout"])
    workdir = corpus_dir / "tmp"
    festival_items: Dict[str, List[Utterance]] = defaultdict(list)
    espeak_items = []
    # Sorted by utterance id, i.e. by speaker: festival re-selects the voice at each speaker change.
    for utt in sorted(utterances, key=lambda u: u.utt_id):
        utt.wav.parent.mkdir(parents=True, exist_ok=True)
        if utt.voice.engine == "festival":
            festival_items[utt.voice.name].append(utt)
        else:
            espeak_items.append(utt)
    utt_of = {utt.wav: utt.utt_id for utt in utterances}

    def espeak_chunk(chunk: Sequence[Utterance]):
        failed = []
        for utt in chunk:
            reason = synthesize_espeak(utt.voice, utt.text, utt.wav, timeout)
            if reason:
                failed.append((utt.wav, f"espeak {utt.voice.speaker_id}: {reason}"))
        return failed

    tasks: List[Tuple[int, Callable[[], list]]] = []
    # Slowest voices first so the last tasks are short and the workers finish together.
    speed = {"slt": 0, "ked": 1, "kal": 2}
    for name in sorted(festival_items, key=lambda n: (speed.get(n, 0), n)):
        for chunk in _chunks(festival_items[name], synthesis["festival_chunk"]):
            items = [(u.voice, u.text, u.wav) for u in chunk]
            tasks.append((len(chunk), lambda c=items: synthesize_festival(c, workdir, timeout)[1]))
    for chunk in _chunks(espeak_items, synthesis["espeak_chunk"]):
        tasks.append((len(chunk), lambda c=chunk: espeak_chunk(c)))

    failures: Dict[Path, str] = {}
    pool = ThreadPoolExecutor(max_workers=max(1, nj))
    try:
        with tqdm(total=len(utterances), desc="synthesis", unit="utt", disable=not progress,
                  mininterval=2.0) as bar:
            futures = {pool.submit(fn): n for n, fn in tasks}
            for future in as_completed(futures):
                for wav, reason in future.result():
                    failures[wav] = reason
                    logger.warning("synthesis of %s failed, skipping it: %s (%s)", utt_of[wav],
                                   reason, wav)
                bar.update(futures[future])
    finally:
        # On Ctrl-C or an error, do not start the queued chunks; running ones finish their
        # current process and leave only temporary files, which the next run removes.
        pool.shutdown(wait=True, cancel_futures=True)
    shutil.rmtree(workdir, ignore_errors=True)
    return failures


def reference_word_times(utts: Sequence[Utterance]) -> Tuple[Dict[str, List[WordTime]], List[str]]:
    """({utt: [(word, start, end)]}, untimed utt ids): festival's ``.words`` files written with
    the wavs, espeak-ng's from its library (the same samples as the command's wav)."""
    timer = EspeakTimer()
    times: Dict[str, List[WordTime]] = {}
    untimed: List[str] = []
    for u in utts:
        if u.voice.engine == "festival":
            words = read_words_file(festival_words_path(u.wav))
        else:
            words = timer.word_times(f"{u.voice.name}+{u.voice.variant}", u.voice.rate,
                                     u.voice.pitch, u.text)
        if words is not None and words_match(u.text, words):
            times[u.utt_id] = words
        else:
            untimed.append(u.utt_id)
    return times, untimed


# ----------------------------------------------------------------------------- writing
def _write_lines(path: Path, lines: Iterable[str]) -> None:
    """Write atomically, so an interrupted run never leaves a half-written Kaldi file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(line + "\n")
    os.replace(tmp, path)


def write_data_dir(data_dir: Path, utts: Sequence[Utterance], seconds: Dict[Path, float],
                   word_times: Optional[Dict[str, List[WordTime]]] = None) -> None:
    """Kaldi data dir: wav.scp (absolute paths), text, utt2spk, spk2utt, utt2dur; C-sorted.
    With ``word_times`` ({utt: [(word, start, end)]}) also ``word_times.ctm`` (NIST CTM)."""
    utts = sorted(utts, key=lambda u: u.utt_id)
    ids = [u.utt_id for u in utts]
    if len(set(ids)) != len(ids):
        raise RuntimeError(f"{data_dir}: duplicate utterance ids")
    spk2utt: Dict[str, List[str]] = defaultdict(list)
    for u in utts:
        spk2utt[u.voice.speaker_id].append(u.utt_id)
    _write_lines(data_dir / "wav.scp", (f"{u.utt_id} {u.wav.resolve()}" for u in utts))
    _write_lines(data_dir / "text", (f"{u.utt_id} {u.text}" for u in utts))
    _write_lines(data_dir / "utt2spk", (f"{u.utt_id} {u.voice.speaker_id}" for u in utts))
    _write_lines(data_dir / "spk2utt", (f"{s} {' '.join(us)}" for s, us in sorted(spk2utt.items())))
    _write_lines(data_dir / "utt2dur", (f"{u.utt_id} {seconds[u.wav]:.3f}" for u in utts))
    if word_times is not None:
        _write_lines(data_dir / "word_times.ctm",
                     (line for u in utts if u.utt_id in word_times
                      for line in ctm_lines(u.utt_id, word_times[u.utt_id])))


def leak_report(data_dir: Path) -> Tuple[int, List[str]]:
    """Compare every LM/train sentence with every dev/test sentence (after normalisation).

    Reads the written files, so it checks what consumers will see. Returns (number of leaked
    sentences, report lines).
    """
    eval_text = {s: {corpus_text.normalize_sentence(t) for t in
                     read_table_dict(data_dir / s / "text").values()} for s in EVAL_SUBSETS}
    sources = {name: data_dir / "local" / name / "text" for name in LM_SETS}
    sources["train"] = data_dir / "train" / "text"
    lines = ["# Overlap of LM / ASR-training text with dev and test transcripts",
             "# (sentences equal after espnet_ext.recipe.corpus.text.normalize_sentence)",
             f"{'source':<10} {'sentences':>9} " + " ".join(f"{s:>17}" for s in EVAL_SUBSETS)]
    leaks = 0
    examples = []
    for name, path in sources.items():
        sentences = {corpus_text.normalize_sentence(t) for t in read_table_dict(path).values()}
        counts = []
        for subset in EVAL_SUBSETS:
            common = sentences & eval_text[subset]
            counts.append(len(common))
            examples += [f"LEAK {name} ~ {subset}: {s}" for s in sorted(common)[:5]]
        leaks += sum(counts)
        lines.append(f"{name:<10} {len(sentences):>9} " + " ".join(f"{c:>17}" for c in counts))
    lines.append(f"result: {'OK, no overlap' if leaks == 0 else f'{leaks} LEAKED SENTENCES'}")
    return leaks, lines + examples


# ----------------------------------------------------------------------------- driver
def _require_tools(plan: CorpusPlan) -> None:
    engines = {u.voice.engine for u in plan.utterances}
    needed = ["sox"] + [tool for engine, tool in (("festival", "festival"), ("espeak", "espeak-ng"))
                        if engine in engines]
    missing = [t for t in needed if shutil.which(t) is None]
    if missing:
        raise FileNotFoundError(
            f"missing synthesis tools {missing}: install the Debian packages festival "
            "festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts espeak-ng sox")
    if "espeak" in engines:
        check_espeak_voices({u.voice for u in plan.utterances})


def build_corpus(cfg: Dict[str, Any], data_dir: Path, corpus_dir: Path, seed: int = 1, nj: int = 2,
                 log_dir: Optional[Path] = None, progress: bool = True) -> Dict[str, Any]:
    """Synthesise (or reuse) the corpus and write data dirs, LM texts and reports.

    Writes ``data_dir/{train,dev,test_in,test_unseen_voice,test_cross,dev_cross}``,
    ``data_dir/local/{lm_in,lm_cross}/text``, ``data_dir/local/lm_leak_report.txt``,
    ``data_dir/local/speakers.tsv``, ``data_dir/local/corpus_stats.json`` and logs under
    ``log_dir`` (default ``data_dir/local/log``). Returns the statistics.
    ``corpus_stats.json`` is written last and only when every check passed, so its presence
    tells a recipe stage that the corpus is complete.
    """
    data_dir, corpus_dir = Path(data_dir), Path(corpus_dir).resolve()
    log_dir = Path(log_dir) if log_dir else data_dir / "local" / "log"
    log_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_dir / "synth_corpus.log", mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    package_logger = logging.getLogger("espnet_ext.recipe.corpus")
    package_logger.addHandler(handler)
    if package_logger.getEffectiveLevel() > logging.INFO:
        package_logger.setLevel(logging.INFO)
    try:
        return _build(cfg, data_dir, corpus_dir, seed, nj, log_dir, progress)
    finally:
        package_logger.removeHandler(handler)
        handler.close()


def _build(cfg, data_dir: Path, corpus_dir: Path, seed: int, nj: int, log_dir: Path,
           progress: bool) -> Dict[str, Any]:
    t0 = time.time()
    done_marker = data_dir / "local" / "corpus_stats.json"  # written last, on success only
    done_marker.unlink(missing_ok=True)
    logger.info("corpus config (seed %d): %s", seed, json.dumps(cfg, sort_keys=True))
    in_domain, cross = load_text_pools(cfg)
    plan = make_plan(cfg, in_domain, cross, seed, corpus_dir)
    logger.info("text pools: %d in-domain sentences, %d cross-domain clauses (%d dropped as also "
                "in-domain)", len(in_domain), len(cross), plan.notes["cross_removed_as_in_domain"])
    _require_tools(plan)

    # Temporary files are only ever partial outputs of an interrupted run.
    stale = list((corpus_dir / "wav").rglob("*.tmp")) if (corpus_dir / "wav").is_dir() else []
    for path in stale:
        path.unlink()
    if stale:
        logger.info("removed %d partial files of an interrupted run", len(stale))

    seconds: Dict[Path, float] = {}
    pending: Dict[Path, Utterance] = {}
    for utt in plan.utterances:
        if utt.wav in seconds or utt.wav in pending:
            continue
        if utt.wav.exists():
            duration = wav_seconds(utt.wav)
            if duration is not None:
                seconds[utt.wav] = duration
                continue
            logger.warning("unreadable wav %s (utt %s): regenerating", utt.wav, utt.utt_id)
            utt.wav.unlink()
        pending[utt.wav] = utt
    reused = len(seconds)
    logger.info("%d wavs to synthesise, %d reused from %s", len(pending), reused, corpus_dir)
    t_synth = time.time()
    failures = {}
    if pending:
        failures = synthesize(list(pending.values()), corpus_dir, nj, cfg["synthesis"], progress)
    synth_seconds = time.time() - t_synth
    for wav in pending:
        if wav not in failures:
            duration = wav_seconds(wav)
            if duration is None:
                failures[wav] = "written but unreadable"
            else:
                seconds[wav] = duration

    by_subset: Dict[str, List[Utterance]] = defaultdict(list)
    failed_utts: List[Tuple[Utterance, str]] = []
    for utt in plan.utterances:
        if utt.wav in seconds:
            by_subset[utt.subset].append(utt)
        else:
            failed_utts.append((utt, failures.get(utt.wav, "no wav")))
    _write_lines(log_dir / "synth_failures.txt",
                 (f"{u.utt_id}\t{u.wav}\t{reason}" for u, reason in failed_utts))
    word_times, untimed = reference_word_times([u for s in EVAL_SUBSETS for u in by_subset[s]])
    for subset in SUBSETS:
        write_data_dir(data_dir / subset, by_subset[subset], seconds,
                       word_times if subset in EVAL_SUBSETS else None)
    if untimed:
        logger.warning("%d dev/test utterances have no reference word times (the synthesiser's "
                       "words differ from the transcript's, or a reused festival wav has no "
                       ".words file): %s%s", len(untimed), " ".join(untimed[:10]),
                       " ..." if len(untimed) > 10 else "")
    for name, sentences in plan.lm_text.items():
        _write_lines(data_dir / "local" / name / "text",
                     (f"{name}_{i:06d} {s}" for i, s in enumerate(sentences)))
    _write_lines(data_dir / "local" / "speakers.tsv", _speaker_table(plan))

    leaks, report = leak_report(data_dir)
    _write_lines(data_dir / "local" / "lm_leak_report.txt", report)
    for line in report:
        logger.info("leak check: %s", line)

    stats = _statistics(plan, by_subset, seconds, failed_utts)
    stats["word_times"] = {"timed": len(word_times), "untimed": len(untimed)}
    stats.update(seed=seed, nj=nj, wall_seconds=round(time.time() - t0, 1),
                 synthesis_seconds=round(synth_seconds, 1), synthesised=len(pending) - len(failures),
                 reused=reused, failed=len(failed_utts), corpus_dir=str(corpus_dir))
    for line in format_stats(stats):
        logger.info("%s", line)
    if failed_utts:
        logger.warning("skipped %d utterances whose synthesis failed; list in %s",
                       len(failed_utts), log_dir / "synth_failures.txt")

    if leaks:
        raise RuntimeError(f"{leaks} LM/train sentences equal dev/test sentences; see "
                           f"{data_dir / 'local' / 'lm_leak_report.txt'}")
    planned = Counter(u.subset for u in plan.utterances)
    for subset in SUBSETS:
        rate = 1.0 - len(by_subset[subset]) / planned[subset]
        if rate > cfg["synthesis"]["max_failure_rate"]:
            raise RuntimeError(f"{subset}: {rate:.1%} of utterances failed to synthesise (more than "
                               f"synthesis.max_failure_rate); see {log_dir / 'synth_failures.txt'}")
    done_marker.write_text(json.dumps(stats, indent=1, sort_keys=True) + "\n")
    return stats


def _speaker_table(plan: CorpusPlan) -> List[str]:
    roles: Dict[Voice, List[str]] = defaultdict(list)
    for subset, voices in plan.speakers.items():
        for v in voices:
            roles[v].append(subset)
    lines = ["speaker\tengine\tvoice\tvariant\trate\tpitch\tstretch\tf0_mean\tsubsets"]
    for v in sorted(roles, key=lambda v: v.speaker_id):
        lines.append(f"{v.speaker_id}\t{v.engine}\t{v.name}\t{v.variant or '-'}\t{v.rate or '-'}\t"
                     f"{v.pitch or '-'}\t{v.stretch or '-'}\t{v.f0_mean or '-'}\t{','.join(roles[v])}")
    return lines


def _statistics(plan: CorpusPlan, by_subset, seconds, failed_utts) -> Dict[str, Any]:
    subsets = {}
    for subset in SUBSETS:
        utts = by_subset[subset]
        total = sum(seconds[u.wav] for u in utts)
        subsets[subset] = {
            "utterances": len(utts),
            "speakers": len({u.voice.speaker_id for u in utts}),
            "hours": round(total / 3600, 3),
            "words": sum(len(u.text.split()) for u in utts),
            "festival_utterances": sum(u.voice.engine == "festival" for u in utts),
            "families": sorted({u.voice.family for u in utts}),
        }
    lm = {name: len(s) for name, s in plan.lm_text.items()}
    return {"subsets": subsets, "lm_sentences": lm, "pools": plan.notes}


def format_stats(stats: Dict[str, Any]) -> List[str]:
    """A small table of the corpus for logs and reports."""
    lines = [f"{'subset':<18} {'utts':>6} {'spk':>4} {'hours':>7} {'words':>7}  families"]
    for subset, s in stats["subsets"].items():
        lines.append(f"{subset:<18} {s['utterances']:>6} {s['speakers']:>4} {s['hours']:>7.3f} "
                     f"{s['words']:>7}  {','.join(s['families'])}")
    lines.append("LM text: " + ", ".join(f"{k} {v} sentences" for k, v in stats["lm_sentences"].items()))
    lines.append(f"synthesised {stats['synthesised']}, reused {stats['reused']}, failed {stats['failed']}; "
                 f"synthesis {stats['synthesis_seconds']} s, total {stats['wall_seconds']} s "
                 f"(nj={stats['nj']})")
    if "word_times" in stats:
        lines.append(f"reference word times: {stats['word_times']['timed']} dev/test utterances "
                     f"({stats['word_times']['untimed']} without)")
    return lines
