"""Offline English text pools for the synthetic corpus: fortunes, WordNet examples, KJV Bible.

All pools go through one normaliser (:func:`normalize_sentence`) so that transcripts, LM text and
the LM/test leak check compare the same strings: lower case, words of letters with inner
apostrophes only, single spaces. Sentences with digits, symbols or non-ASCII letters are dropped
rather than rewritten, because a synthesiser would read them in ways the transcript cannot say.
"""
import re
import shutil
import subprocess
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

FORTUNE_DIR = Path("/usr/share/games/fortunes")
WORDNET_DIR = Path("/usr/share/wordnet")
BIBLE_RANGE = "Ge1:1-Re22:21"
# Fortune files that are not English prose (Chinese, ASCII art, source code, translations).
FORTUNE_EXCLUDE = ("ascii-art", "chinese", "song100", "tang300", "translate-me", "perl")

_DASHES = re.compile(r"[-\u2010-\u2015]+")
# Punctuation that separates or quotes words but is never spoken.
_SILENT_PUNCT = re.compile(r"[.,;:!?\"()\[\]{}`\u2018\u201c\u201d]")
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")
_CLAUSE_END = re.compile(r"[.!?;:]+")
# Written forms that synthesisers expand ("mr" -> "mister", "ii" -> "two"): the transcript would
# not say what is spoken, so sentences containing them are left out.
_EXPANDED_WORDS = frozenset("mr mrs ms dr st jr sr etc vs ii iii iv vi vii viii ix xi xii".split())
_VERSE = re.compile(r"^\s+\d+\s+(\S.*)$")
_WORDNET_EXAMPLE = re.compile(r'"([^"]+)"')


def normalize_sentence(text: str) -> Optional[str]:
    """Lower-cased words joined by single spaces, or None if any word is not plain letters.

    Hyphens become word breaks, quotes and punctuation vanish, a word keeps inner apostrophes
    ("don't"). Idempotent, so it also normalises already-normalised text for comparisons.
    """
    text = text.lower().replace("\u2019", "'")
    text = _SILENT_PUNCT.sub(" ", _DASHES.sub(" ", text))
    words = []
    for token in text.split():
        token = token.strip("'")
        if not token:
            continue
        if not _WORD.fullmatch(token):
            return None
        words.append(token)
    return " ".join(words)


def split_clauses(text: str) -> List[str]:
    """Split running text at sentence and clause ends (. ! ? ; :)."""
    return [c for c in _CLAUSE_END.split(text) if c.strip()]


def keep_sentences(candidates: Iterable[str], min_words: int, max_words: int) -> List[str]:
    """Normalise, keep ``min_words..max_words`` words, dedupe keeping the first occurrence.

    Sentences with written forms that synthesisers expand (abbreviations, roman numerals) are
    dropped too.
    """
    kept: Dict[str, None] = {}
    for candidate in candidates:
        sentence = normalize_sentence(candidate)
        if not sentence:
            continue
        words = sentence.split(" ")
        if min_words <= len(words) <= max_words and _EXPANDED_WORDS.isdisjoint(words):
            kept.setdefault(sentence, None)
    return list(kept)


def restrict_vocabulary(sentences: Sequence[str], size: Optional[int]) -> List[str]:
    """Sentences whose every word is among the ``size`` most frequent words of the pool.

    A closed vocabulary (like the 1k-word Resource Management or the WSJ 5k tasks) lets a model
    trained on a few hours of speech meet most test words in training; ``None`` keeps all.
    Frequency ties break alphabetically, so the result is deterministic.
    """
    if size is None:
        return list(sentences)
    if size < 1:
        raise ValueError(f"vocabulary size must be positive, got {size}")
    counts: Dict[str, int] = {}
    for sentence in sentences:
        for word in sentence.split(" "):
            counts[word] = counts.get(word, 0) + 1
    vocabulary = set(sorted(counts, key=lambda w: (-counts[w], w))[:size])
    return [s for s in sentences if vocabulary.issuperset(s.split(" "))]


def fortune_categories(
    fortune_dir: Path = FORTUNE_DIR, exclude: Sequence[str] = FORTUNE_EXCLUDE
) -> List[str]:
    """English category files (those with a ``.dat`` index), sorted for reproducibility."""
    if not Path(fortune_dir).is_dir():
        raise FileNotFoundError(
            f"{fortune_dir} not found: install the Debian packages fortunes and fortunes-min"
        )
    return sorted(
        p.stem for p in Path(fortune_dir).glob("*.dat")
        if p.stem not in exclude and (Path(fortune_dir) / p.stem).is_file()
    )


def read_fortune_cookies(path: Path) -> List[str]:
    """Cookies of one fortune file (``%``-separated), each joined into one line.

    An attribution line (``-- author``) ends the cookie's prose; indented lines after it
    continue the attribution and are dropped with it.
    """
    text = Path(path).read_bytes().decode("utf-8", errors="replace")
    cookies, lines, in_attribution = [], [], False
    for line in text.splitlines() + ["%"]:
        if line.strip() == "%":
            if lines:
                cookies.append(" ".join(lines))
            lines, in_attribution = [], False
        elif in_attribution or line.lstrip().startswith("--"):
            in_attribution = True
        else:
            lines.append(line.strip())
    return cookies


def fortune_sentences(
    min_words: int,
    max_words: int,
    categories: Optional[Sequence[str]] = None,
    fortune_dir: Path = FORTUNE_DIR,
    exclude: Sequence[str] = FORTUNE_EXCLUDE,
) -> List[str]:
    """Normalised, unique fortune sentences/clauses of ``min_words..max_words`` words."""
    fortune_dir = Path(fortune_dir)
    names = list(categories) if categories else fortune_categories(fortune_dir, exclude)
    candidates: List[str] = []
    for name in names:
        path = fortune_dir / name
        if not path.is_file():
            raise FileNotFoundError(f"fortune category file {path} not found")
        for cookie in read_fortune_cookies(path):
            candidates.extend(split_clauses(cookie))
    return keep_sentences(candidates, min_words, max_words)


def wordnet_examples(min_words: int, max_words: int, wordnet_dir: Path = WORDNET_DIR) -> List[str]:
    """Normalised, unique quoted usage examples from WordNet's ``data.{noun,verb,adj,adv}``."""
    candidates: List[str] = []
    for pos in ("noun", "verb", "adj", "adv"):
        path = Path(wordnet_dir) / f"data.{pos}"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: install the Debian package wordnet-base")
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("  ") or " | " not in line:  # licence header / no gloss
                continue
            gloss = line.split(" | ", 1)[1]
            candidates.extend(_WORDNET_EXAMPLE.findall(gloss))
    return keep_sentences(candidates, min_words, max_words)


def bible_verses(verse_range: str = BIBLE_RANGE) -> List[str]:
    """Verse texts of the King James Bible via the Debian ``bible`` program (bible-kjv)."""
    program = shutil.which("bible")
    if program is None:
        raise FileNotFoundError("`bible` not found: install the Debian packages bible-kjv bible-kjv-text")
    dump = subprocess.run(
        [program, "-l0", verse_range], check=True, capture_output=True, text=True
    ).stdout
    verses = [m.group(1) for m in map(_VERSE.match, dump.splitlines()) if m]
    if not verses:
        raise RuntimeError(f"`bible -l0 {verse_range}` printed no verses")
    return verses


def bible_clauses(min_words: int, max_words: int, verse_range: str = BIBLE_RANGE) -> List[str]:
    """Normalised, unique KJV clauses (verses split at . ! ? ; :) of ``min_words..max_words``."""
    clauses: List[str] = []
    for verse in bible_verses(verse_range):
        clauses.extend(split_clauses(verse))
    return keep_sentences(clauses, min_words, max_words)
