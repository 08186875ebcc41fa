#!/usr/bin/env python
"""Synthesis speed of the minisynth corpus: per voice (one worker) and a whole preset.

Per-voice rows synthesise the same fortune sentences with one festival batch process (kal, ked,
slt) or one espeak-ng|sox pipeline per utterance, and report utterances/s, audio seconds per wall
second and CPU seconds per utterance (children's user+sys, so other load on the machine does not
inflate it). The preset row builds a corpus preset (local/data.sh's work) into a temporary dir.
"""
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import base_parser, emit  # noqa: E402

from espnet_ext.recipe.corpus import synth, text  # noqa: E402
from espnet_ext.recipe.corpus.voices import Voice, synthesize_espeak, synthesize_festival, wav_seconds  # noqa: E402

RECIPE = Path(__file__).resolve().parents[1] / "egs" / "minisynth" / "asr1"
VOICES = [
    Voice("festival", "kal", stretch=1.0, f0_mean=110),
    Voice("festival", "ked", stretch=1.0, f0_mean=110),
    Voice("festival", "slt"),
    Voice("espeak", "en-us", variant="m3", rate=160, pitch=50),
    Voice("espeak", "en-gb-x-rp", variant="f2", rate=160, pitch=50),
]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def bench_voice(voice: Voice, sentences, workdir: Path) -> dict:
    wavs = [workdir / voice.speaker_id / f"{i}.wav" for i in range(len(sentences))]
    wavs[0].parent.mkdir(parents=True)
    cpu0, t0 = _children_cpu(), time.perf_counter()
    if voice.engine == "festival":
        _, failed = synthesize_festival(list(zip([voice] * len(wavs), sentences, wavs)),
                                        workdir / "tmp", timeout=600)
    else:
        failed = [w for s, w in zip(sentences, wavs) if synthesize_espeak(voice, s, w, 60)]
    wall, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
    audio = sum(wav_seconds(w) or 0.0 for w in wavs)
    return {"what": f"{voice.engine} {voice.speaker_id}", "utts": len(wavs), "failed": len(failed),
            "utt_per_s": len(wavs) / wall, "audio_x_realtime": audio / wall,
            "cpu_s_per_utt": cpu / len(wavs), "wall_s": wall, "hours": audio / 3600}


def bench_preset(preset: str, nj: int, workdir: Path) -> dict:
    cfg = synth.load_config(RECIPE / "conf" / f"{preset}.yaml")
    cpu0 = _children_cpu()
    stats = synth.build_corpus(cfg, workdir / "data", workdir / "corpus", seed=1, nj=nj,
                               progress=False)
    cpu = _children_cpu() - cpu0
    utts = sum(s["utterances"] for s in stats["subsets"].values())
    return {"what": f"preset {preset} (nj={nj})", "utts": utts, "failed": stats["failed"],
            "utt_per_s": utts / stats["synthesis_seconds"], "cpu_s_per_utt": cpu / utts,
            "wall_s": stats["wall_seconds"], "synthesis_s": stats["synthesis_seconds"],
            "hours": sum(s["hours"] for s in stats["subsets"].values()),
            "train_hours": stats["subsets"]["train"]["hours"]}


def main():
    parser = base_parser(__doc__)
    parser.add_argument("--utts", type=int, default=40, help="sentences per voice")
    parser.add_argument("--preset", default="corpus_fast",
                        help="corpus preset in egs/minisynth/asr1/conf (corpus, corpus_fast), or none")
    parser.add_argument("--nj", type=int, default=2)
    args = parser.parse_args()
    n = 5 if args.quick else args.utts
    sentences = text.fortune_sentences(5, 15)[:n]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for voice in VOICES:
            rows.append(bench_voice(voice, sentences, Path(tmp) / "voices"))
        if args.preset != "none" and not args.quick:
            rows.append(bench_preset(args.preset, args.nj, Path(tmp) / "preset"))
    emit("minisynth synthesis speed", rows, args,
         ["what", "utts", "failed", "utt_per_s", "audio_x_realtime", "cpu_s_per_utt", "wall_s",
          "synthesis_s", "hours", "train_hours"])


if __name__ == "__main__":
    main()
