"""Reference word times of synthetic speech, from the synthesisers themselves.

The corpus knows where every word is, so timestamps of a model can be measured instead of
assumed (``espnet_ext.recipe.bin.timestamp_report``):

- festival: the Segment items under each Word (its SylStructure relation), written by the
  synthesis script next to the wav as ``<wav>.words`` (:data:`FESTIVAL_WORD_TIMES_SCHEME`);
- espeak-ng: its library's phoneme events. A fresh ``libespeak-ng`` produces the samples of
  ``espeak-ng`` (the command) for the same voice, rate, pitch and text (the command appends a
  little silence), so the events of a library run time the command's wav (:class:`EspeakTimer`).
  A word starts at its first phoneme and ends where the next phoneme, pause or the end starts.

Times are seconds from the start of the wav; a word list must equal the transcript's words
(``words_match``), otherwise the utterance has no reference times (counted by the caller). Words
read as one unit are one entry ``there+are``: the start of its first and the end of its last
word are known, the boundary between them is not.
"""
import ctypes
import ctypes.util
import os
import pickle
import threading
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple

WordTime = Tuple[str, float, float]
_PUNCTUATION = ".,;:!?\"'"

# Scheme run once per festival script; (save_word_times utt "file") writes "word start end" lines:
# a word spans its segments; segment_start is the end of the segment before.
FESTIVAL_WORD_TIMES_SCHEME = """\
(define (save_word_times utt file)
  (let ((fd (fopen file "w")))
    (mapcar
     (lambda (w)
       (format fd "%s %f %f\\n" (item.name w)
               (item.feat w "R:SylStructure.daughter1.daughter1.R:Segment.segment_start")
               (item.feat w "R:SylStructure.daughtern.daughtern.R:Segment.segment_end")))
     (utt.relation.items utt 'Word))
    (fclose fd)))
"""

# libespeak-ng's API (speak_lib.h): output mode, init options, event types and parameters.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INIT_PHONEME_EVENTS, _INIT_DONT_EXIT = 0x0001, 0x8000
_EVENT_LIST_TERMINATED, _EVENT_WORD, _EVENT_END, _EVENT_PHONEME = 0, 1, 5, 7
_PARAM_RATE, _PARAM_PITCH = 1, 3
_POS_CHARACTER = 1


class _EspeakEvent(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint),
                ("text_position", ctypes.c_int), ("length", ctypes.c_int),
                ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", ctypes.c_char * 8)]


class _EspeakVoice(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("languages", ctypes.c_char_p),
                ("identifier", ctypes.c_char_p), ("gender", ctypes.c_ubyte),
                ("age", ctypes.c_ubyte), ("variant", ctypes.c_ubyte), ("xx1", ctypes.c_ubyte),
                ("score", ctypes.c_int), ("spare", ctypes.c_void_p)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.POINTER(_EspeakEvent))
Event = Tuple[int, int, int, int, bytes]  # type, text position, length, sample, phoneme/word id


class EspeakTimer:
    """Word times of espeak-ng speech from the library's events.

    The library keeps state from one synthesis to the next (the second reading of a sentence
    differs from the command's), so every synthesis runs in a child forked from a process whose
    library is initialised but unused: each reading starts as fresh as the command's."""

    _lock = threading.Lock()
    _lib = None
    _rate = 0

    @classmethod
    def _library(cls):
        if cls._lib is None:
            name = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
            try:
                lib = ctypes.CDLL(name)
            except OSError as e:
                raise RuntimeError(f"libespeak-ng not found ({e}); install espeak-ng "
                                   f"(tools/setup.sh)") from e
            rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None,
                                         _INIT_PHONEME_EVENTS | _INIT_DONT_EXIT)
            if rate <= 0:
                raise RuntimeError(f"espeak_Initialize failed ({rate})")
            cls._lib, cls._rate = lib, rate
        return cls._lib

    def synthesize(self, voice_name: str, rate: int, pitch: int, text: str,
                   samples: bool = False) -> Tuple[List[Event], Optional[List[int]], int]:
        """(events, samples if asked, sample rate) of ``espeak-ng -v voice_name -s rate -p pitch
        text``; the voice is chosen as the command does (by name, else by language)."""
        with self._lock:
            lib = self._library()
            read_fd, write_fd = os.pipe()
            pid = os.fork()
            if pid == 0:  # child: synthesise once, send the result, exit without cleanup
                status = 1
                try:
                    os.close(read_fd)
                    result = self._synthesize_here(lib, voice_name, rate, pitch, text, samples)
                    with os.fdopen(write_fd, "wb") as out:
                        pickle.dump(result, out)
                    status = 0
                finally:
                    os._exit(status)
            os.close(write_fd)
            with os.fdopen(read_fd, "rb") as inp:
                data = inp.read()
            _, status = os.waitpid(pid, 0)
        if status != 0 or not data:
            raise RuntimeError(f"espeak-ng library synthesis failed (status {status}) for "
                               f"{voice_name} on {text!r}")
        result = pickle.loads(data)
        if isinstance(result, str):
            raise ValueError(result)
        events, wave = result
        return events, wave, self._rate

    @staticmethod
    def _synthesize_here(lib, voice_name, rate, pitch, text, want_samples):
        events: List[Event] = []
        wave: List[int] = []

        def collect(wav, num_samples, event_list) -> int:
            if want_samples and num_samples > 0:
                wave.extend(wav[:num_samples])
            i = 0
            while event_list[i].type != _EVENT_LIST_TERMINATED:
                e = event_list[i]
                events.append((e.type, e.text_position, e.length, e.sample, bytes(e.id)))
                i += 1
            return 0

        callback = _CALLBACK(collect)
        lib.espeak_SetSynthCallback(callback)
        if lib.espeak_ng_SetVoiceByName(voice_name.encode()) != 0:
            spec = _EspeakVoice(languages=voice_name.encode())
            if lib.espeak_ng_SetVoiceByProperties(ctypes.byref(spec)) != 0:
                return f"espeak-ng has no voice {voice_name!r}"
        lib.espeak_SetParameter(_PARAM_RATE, rate, 0)
        lib.espeak_SetParameter(_PARAM_PITCH, pitch, 0)
        data = text.encode()
        if lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, 0, None, None) != 0:
            return f"espeak_Synth failed on {text!r}"
        lib.espeak_Synchronize()
        return events, (wave if want_samples else None)

    def word_times(self, voice_name: str, rate: int, pitch: int, text: str) -> List[WordTime]:
        """(word, start, end) of ``text`` read by ``espeak-ng -v voice_name -s rate -p pitch``."""
        events, _, sample_rate = self.synthesize(voice_name, rate, pitch, text)
        return espeak_words(text, events, sample_rate)


def espeak_words(text: str, events: Sequence[Event],
                 sample_rate: int) -> List[WordTime]:
    """Word times from espeak events (type, text position (1-based), length, sample, id).

    A word event starts a reading unit at a position of ``text``; the phoneme events of the unit
    carry the same position. espeak-ng reads some word pairs as one unit ("there are", "for
    the"): the unit runs to the next word event and its words are joined by ``+`` (their inner
    boundary is not known). Pauses (phonemes ``_``, ``_:``, ``_!``) end the unit before."""
    starts = sorted({pos for kind, pos, length, _, _ in events if kind == _EVENT_WORD and length > 0})
    spans = {}
    for i, pos in enumerate(starts):
        stop = starts[i + 1] - 1 if i + 1 < len(starts) else len(text)
        spans[pos] = "+".join(w.strip(_PUNCTUATION) for w in text[pos - 1:stop].split())
    words: List[List] = []  # [word, start sample, end sample or None]
    current = None
    for kind, pos, _, sample, ident in events:
        if kind not in (_EVENT_PHONEME, _EVENT_END):
            continue
        if words and words[-1][2] is None:
            words[-1][2] = sample  # the next phoneme, pause or end closes the word's last phoneme
        is_pause = ident.split(b"\0")[0].startswith(b"_")
        if kind == _EVENT_PHONEME and not is_pause and pos in spans:
            if pos != current:
                words.append([spans[pos], sample, None])
                current = pos
            else:
                words[-1][2] = None  # the word goes on
        elif kind == _EVENT_END or is_pause:
            current = None
    return [(w, s / sample_rate, e / sample_rate) for w, s, e in words if e is not None]


def festival_words_path(wav: Path) -> Path:
    return wav.with_name(wav.name + ".words")


def read_words_file(path: Path) -> Optional[List[WordTime]]:
    """(word, start, end) lines of a ``.words`` file; None if it is missing or malformed."""
    try:
        rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
        return [(w, float(s), float(e)) for w, s, e in rows]
    except (OSError, ValueError):
        return None


def words_match(transcript: str, times: Sequence[WordTime]) -> bool:
    """The synthesiser read exactly the transcript's words (case and edge punctuation aside;
    a unit of words joined by ``+`` counts as its words)."""
    said = [w.lower().strip(_PUNCTUATION) for unit, _, _ in times for w in unit.split("+")]
    return said == transcript.split()


def ctm_lines(utt_id: str, times: Iterable[WordTime]) -> List[str]:
    """NIST CTM lines ``utt 1 start duration word`` (channel 1, no confidence)."""
    return [f"{utt_id} 1 {s:.3f} {max(e - s, 0.0):.3f} {w}" for w, s, e in times]


def read_ctm(path: Path) -> dict:
    """{utt: [(word, start, end)]} of a CTM file (``utt channel start duration word [conf]``)."""
    out: dict = {}
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip() or line.startswith(";;"):
            continue
        parts = line.split()
        if len(parts) < 5:
            raise ValueError(f"{path}:{n}: expected 'utt channel start duration word', got {line!r}")
        start, dur = float(parts[2]), float(parts[3])
        out.setdefault(parts[0], []).append((parts[4], start, start + dur))
    return out
