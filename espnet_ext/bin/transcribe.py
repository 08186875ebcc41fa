"""Transcribe audio files with a trained model: text, NIST CTM (word times) or JSON lines.

    python -m espnet_ext.bin.transcribe --model_dir exp/asr_train_cif a.wav b.flac
    python -m espnet_ext.bin.transcribe --model_dir exp/asr_train_cif --wav_scp data/test/wav.scp \
        --output ctm --output_file test.ctm [--lm_train_config ... --lm_weight 0.3 --ilm_type zero ...]

A thin command line over :class:`espnet_ext.inference.Speech2Text` (same decoding, same times).
Inputs are anything libsndfile reads, or ``wav.scp`` values as the recipe reads them (paths,
ark offsets, ``cmd |`` pipes); any channel count and sample rate. Outputs, one per input in input
order: ``text`` "<id> <text>"; ``ctm`` "<id> 1 <start> <duration> <word> 1.00" per word (seconds,
2 decimals; no confidence is estimated); ``json`` one object per line with id, text, score, tokens,
token_times and words (word, start, end). The id is the file as given or the wav.scp key.
An input that cannot be read or is too short stops the run (exit 1, naming it) unless
``--skip_bad``: then it is left out with a warning and the run ends with the count and list.
"""
import argparse
import contextlib
import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, TextIO, Tuple

from espnet2.utils.types import str_or_none

logger = logging.getLogger("espnet_ext.transcribe")


def get_parser() -> argparse.ArgumentParser:
    from espnet_ext.lm.fusion import add_ilm_arguments

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("audio", nargs="*", help="audio files (wav, flac, ...)")
    parser.add_argument("--wav_scp", type=str_or_none, default=None, help="Kaldi wav.scp of inputs")
    parser.add_argument("--packed_model", type=str_or_none, default=None,
                        help="a model packed by espnet_ext.bin.pack_model (zip or tar.gz)")
    parser.add_argument("--unpack_dir", type=str_or_none, default=None,
                        help="where a packed model is unpacked (default: <packed_model>.unpacked)")
    parser.add_argument("--model_dir", type=str_or_none, default=None,
                        help="training directory: config.yaml and valid.acc.ave.pth (else the newest *.pth)")
    parser.add_argument("--asr_train_config", type=str_or_none, default=None)
    parser.add_argument("--asr_model_file", type=str_or_none, default=None)
    parser.add_argument("--output", default="text", choices=["text", "ctm", "json"])
    parser.add_argument("--output_file", type=str_or_none, default=None, help="default: stdout")
    parser.add_argument("--skip_bad", action="store_true",
                        help="leave unreadable inputs out (warned, counted, listed) instead of failing")
    parser.add_argument("--log_level", type=lambda x: x.upper(), default="WARNING",
                        choices=("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"))
    group = parser.add_argument_group("Decoding (see espnet_ext.bin.asr_inference)")
    group.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    group.add_argument("--dtype", default="float32", choices=["float16", "float32", "float64"])
    group.add_argument("--beam_size", type=int, default=None,
                       help="default: a packed model's decode config, else 10")
    group.add_argument("--batch_size", type=int, default=16)
    group.add_argument("--lm_train_config", type=str_or_none, default=None)
    group.add_argument("--lm_file", type=str_or_none, default=None)
    group.add_argument("--lm_weight", type=float, default=None,
                       help="default: a packed model's decode config, else 0 (the LM is not used)")
    group.add_argument("--tail_threshold", type=float, default=None)
    group.add_argument("--max_segment_seconds", type=float, default=30.0,
                       help="longer inputs are cut in pauses and joined; 0: never cut")
    group.add_argument("--fs", type=int, default=None,
                       help="the model's sample rate (default: a packed model's, else 16000)")
    group.add_argument("--num_mel_bins", type=int, default=None,
                       help="the model's fbank size (default: a packed model's, else 80)")
    add_ilm_arguments(parser)
    return parser


class BadInput(Exception):
    """An input cannot be transcribed; the message names it."""


def list_inputs(args: argparse.Namespace) -> List[Tuple[str, str]]:
    """(id, wav.scp-style entry) of every input, files first."""
    from espnet_ext.utils.kaldi_table import iter_table

    inputs = [(path, path) for path in args.audio]
    if args.wav_scp is not None:
        inputs += list(iter_table(args.wav_scp, allow_empty_value=False))
    return inputs


def format_result(uid: str, result, output: str) -> str:
    """The output lines of one input."""
    if output == "text":
        return f"{uid} {result.text}\n"
    if output == "ctm":
        return "".join(f"{uid} 1 {start:.2f} {end - start:.2f} {word} 1.00\n"
                       for word, start, end in result.words)
    record = {"id": uid, "text": result.text,
              "score": result.score if math.isfinite(result.score) else None,
              "tokens": result.tokens, "token_times": result.token_times,
              "words": None if result.words is None else
              [{"word": w, "start": s, "end": e} for w, s, e in result.words]}
    return json.dumps(record, ensure_ascii=False) + "\n"


def transcribe(args: argparse.Namespace, out: TextIO) -> Dict[str, object]:
    """Decode every input into ``out``; returns {"decoded": n, "skipped": [(id, why), ...]}."""
    from tqdm import tqdm

    from espnet_ext.inference import Speech2Text
    from espnet_ext.recipe.fbank import read_audio

    inputs = list_inputs(args)
    if not inputs:
        raise ValueError("no input: give audio files or --wav_scp")
    if args.packed_model:
        model = dict(packed_model=args.packed_model, unpack_dir=args.unpack_dir)
    elif args.model_dir:
        model = dict(model_dir=args.model_dir)
    else:
        model = dict(asr_train_config=args.asr_train_config, asr_model_file=args.asr_model_file)
    s2t = Speech2Text(**model, device=args.device, dtype=args.dtype, beam_size=args.beam_size,
                      batch_size=args.batch_size, lm_train_config=args.lm_train_config,
                      lm_file=args.lm_file, lm_weight=args.lm_weight, ilm_type=args.ilm_type,
                      ilm_weight=args.ilm_weight, ilm_file=args.ilm_file,
                      ilm_train_config=args.ilm_train_config, tail_threshold=args.tail_threshold,
                      max_segment_seconds=args.max_segment_seconds, fs=args.fs,
                      num_mel_bins=args.num_mel_bins)
    if args.output == "ctm" and s2t.encoder_shift is None:
        raise ValueError("--output ctm needs word times: the model has no CIF fires (use text or json)")
    skipped: List[Tuple[str, str]] = []
    decoded = 0
    with tqdm(total=len(inputs), desc="transcribing", unit="file", disable=len(inputs) < 2,
              file=sys.stderr) as progress:
        # One batch of inputs in memory at a time.
        for i in range(0, len(inputs), args.batch_size):
            ids, model_inputs = [], []
            for uid, entry in inputs[i:i + args.batch_size]:
                try:
                    data, rate = read_audio(entry)  # 16-bit units, as the recipe
                    model_inputs.append(s2t.model_input(data / 32768.0, fs=rate))
                    ids.append(uid)
                except Exception as e:  # noqa: BLE001 - any reader error is this input's
                    why = str(e).replace("\n", " ")
                    if not args.skip_bad:
                        raise BadInput(f"{uid}: {why} (--skip_bad leaves such inputs out)") from e
                    logger.warning(f"skipping {uid}: {why}")
                    skipped.append((uid, why))
            for uid, result in zip(ids, s2t.decode(model_inputs) if model_inputs else []):
                out.write(format_result(uid, result, args.output))
                decoded += 1
            progress.update(len(inputs[i:i + args.batch_size]))
    if skipped:
        logger.warning(f"skipped {len(skipped)} of {len(inputs)} files: "
                       f"{', '.join(uid for uid, _ in skipped)}")
    return {"decoded": decoded, "skipped": skipped}


def main(cmd: Optional[Sequence[str]] = None) -> Dict[str, object]:
    parser = get_parser()
    args = parser.parse_intermixed_args(cmd)  # files may follow options
    logging.basicConfig(level=args.log_level,
                        format="%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s")
    logging.getLogger().setLevel(args.log_level)
    if not (args.packed_model or args.model_dir or (args.asr_train_config and args.asr_model_file)):
        parser.error("give --packed_model, --model_dir, or --asr_train_config and --asr_model_file")
    if not args.audio and args.wav_scp is None:
        parser.error("give audio files or --wav_scp")
    output = sys.stdout
    try:
        # Whatever a library prints (ESPnet's "Failed to import Flash Attention") goes to stderr:
        # stdout carries the transcripts only.
        with contextlib.redirect_stdout(sys.stderr):
            if args.output_file is None:
                return transcribe(args, output)
            # Written under a temporary name: a failed run leaves no partial output.
            tmp = Path(args.output_file).with_name(f".{Path(args.output_file).name}.tmp")
            tmp.parent.mkdir(parents=True, exist_ok=True)
            try:
                with open(tmp, "w", encoding="utf-8") as f:
                    summary = transcribe(args, f)
                os.replace(tmp, args.output_file)
            finally:
                tmp.unlink(missing_ok=True)
            return summary
    except (BadInput, ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")

if __name__ == "__main__":
    main()
