#!/usr/bin/env python
"""Decoding throughput: utterance-batched beam search vs ESPnet's per-utterance BatchBeamSearch.

Same model, same beam, same utterances; end to end from features (encoder + search, no file I/O):

- ``espnet``: what ``espnet2.bin.asr_inference`` does (one utterance at a time: encode, then
  ESPnet's ``BatchBeamSearch``, decoder scorer only). For the CIF model ESPnet gets a
  length-forcing scorer and ``maxlenratio=-(N+2)`` so that it decodes exactly N tokens + <eos>.
- ``ours``: :class:`espnet_ext.bin.asr_inference.BatchSpeech2Text` (the entry point's decoder)
  with ``--batch_size`` utterances decoded together (utterances sorted by length), including
  batch 1.

Models are random-init (stated in the output) and rebuilt from a written config.yaml + .pth like
the entry point does. Random models emit <eos> at random, so for the attention model (AED) the
<eos> logit is lowered and ``maxlenratio`` fixes the output length (steps = ratio x encoder
frames, the same for every method); the CIF model's random predictor fires ~0.5 per 80 ms frame
(~6 tokens/s). Inputs are random 80-d features, 2-8 s, frame shift 10 ms.
Reported: utterances/s, audio-s/s, RTF, speed-up vs ESPnet, and the share of utterances whose
1-best token sequence equals ESPnet's (target: >= 5x throughput with identical 1-best on CPU).
On CPU the ratios to read are the process-CPU-time ones (``speedup_cpu`` end to end,
``search_speedup_cpu`` for the search alone; one thread): wall time on shared cores measures the
neighbours. ``--encoder_batching utterance`` encodes without padding (the cheaper way on one CPU
thread; the search stays batched).
"""
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import torch
import yaml

from espnet_ext.asr.length_forcing_scorer import LengthForcingScorer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import base_parser, emit  # noqa: E402

FRAME_SHIFT = 0.01
TARGET_SPEEDUP = 5.0

MODELS = {
    # ESPnet transformer AED, small: ~10 M parameters at vocab 500
    "aed": ["--encoder", "transformer",
            "--encoder_conf", "output_size=256", "--encoder_conf", "attention_heads=4",
            "--encoder_conf", "linear_units=1024", "--encoder_conf", "num_blocks=6",
            "--encoder_conf", "input_layer=conv2d",
            "--decoder", "transformer", "--decoder_conf", "attention_heads=4",
            "--decoder_conf", "linear_units=1024", "--decoder_conf", "num_blocks=3",
            "--model_conf", "ctc_weight=0.3"],
    # CIF model, small: conformer-pooling encoder (8x), 2-block CIF decoder
    "cif": ["--model", "cif", "--encoder", "conformer_pooling", "--decoder", "cif_ar",
            "--encoder_conf", "output_size=256", "--encoder_conf", "attention_heads=4",
            "--encoder_conf", "linear_units=1024", "--encoder_conf", "num_blocks=6",
            "--encoder_conf", "pooling_layers=[2,4]", "--encoder_conf", "frontend_channels=32",
            "--decoder_conf", "attention_heads=4", "--decoder_conf", "linear_units=1024",
            "--decoder_conf", "num_blocks=2", "--normalize", "utterance_mvn",
            "--normalize_conf", "norm_vars=false"],
}
QUICK_SIZES = ["--encoder_conf", "output_size=32", "--encoder_conf", "linear_units=64",
               "--encoder_conf", "num_blocks=2", "--decoder_conf", "linear_units=64"]
QUICK_EXTRA = {"aed": [], "cif": ["--encoder_conf", "pooling_layers=[1,2]", "--encoder_conf", "frontend_channels=4"]}


def build_model_files(kind: str, vocab: int, out: Path, quick: bool, seed: int) -> Path:
    """Random-init model of ``kind`` written as ESPnet writes it: config.yaml + model.pth."""
    from espnet2.tasks.asr import ASRTask

    from espnet_ext.tasks.cif_asr import CIFASRTask

    tokens = ["<blank>", "<unk>"] + [f"t{i}" for i in range(vocab - 3)] + ["<sos/eos>"]
    (out / "tokens.txt").write_text("\n".join(tokens) + "\n")
    task = CIFASRTask if kind == "cif" else ASRTask
    cmd = (["--token_list", str(out / "tokens.txt"), "--token_type", "word", "--input_size", "80",
            "--output_dir", str(out)] + MODELS[kind] + (QUICK_SIZES + QUICK_EXTRA[kind] if quick else []))
    args = task.get_parser().parse_args(cmd)
    torch.manual_seed(seed)
    model = task.build_model(args)
    if kind == "aed":
        with torch.no_grad():  # no early <eos>: the length is set by maxlenratio
            model.decoder.output_layer.bias[model.eos] -= 10.0
    torch.save(model.state_dict(), out / "model.pth")
    with open(out / "config.yaml", "w") as f:
        yaml.safe_dump(vars(args), f)
    return out


def make_inputs(n: int, min_s: float, max_s: float, seed: int):
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(int(min_s / FRAME_SHIFT), int(max_s / FRAME_SHIFT) + 1, (n,), generator=g)
    return [torch.randn(int(t), 80, generator=g) for t in frames]


def decode_ours(s2t, feats: List[torch.Tensor], batch_size: int, sync=lambda: None):
    """1-best token ids per utterance and the seconds spent encoding (incl. CIF)."""
    order = sorted(range(len(feats)), key=lambda i: (-len(feats[i]), i))
    out: Dict[int, List[int]] = {}
    enc_s = enc_cpu = 0.0
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        speech = torch.nn.utils.rnn.pad_sequence([feats[i] for i in idx], batch_first=True)
        lengths = torch.tensor([len(feats[i]) for i in idx])
        t0, c0 = time.perf_counter(), time.process_time()
        xs, xlens, fixed = s2t.encode(speech, lengths)
        sync()
        enc_s += time.perf_counter() - t0
        enc_cpu += time.process_time() - c0
        nbest = s2t.beam_search(xs, xlens, fixed_lengths=fixed, maxlenratio=s2t.maxlenratio)
        for i, hyps in zip(idx, nbest):
            out[i] = hyps[0].yseq.tolist()
    return [out[i] for i in range(len(feats))], (enc_s, enc_cpu)


@torch.no_grad()
def decode_espnet(s2t, feats: List[torch.Tensor], beam: int, maxlenratio: float, sync=lambda: None):
    """ESPnet's way: per utterance encode, then BatchBeamSearch. Same returns as decode_ours."""
    from espnet.nets.batch_beam_search import BatchBeamSearch

    model = s2t.asr_model
    V = len(model.token_list)
    search = BatchBeamSearch(scorers={"decoder": model.decoder}, weights={"decoder": 1.0}, beam_size=beam,
                             vocab_size=V, sos=model.sos, eos=model.eos, pre_beam_score_key="full").eval()
    out, enc_s, enc_cpu = [], 0.0, 0.0
    for x in feats:
        speech, lengths = x[None].to(s2t.device), torch.tensor([len(x)], device=s2t.device)
        t0, c0 = time.perf_counter(), time.process_time()
        if s2t.fixed_length:
            cif_out, _, _ = model.cif_encode(speech, lengths)
        else:
            enc, _ = model.encode(speech, lengths)
        sync()
        enc_s += time.perf_counter() - t0
        enc_cpu += time.process_time() - c0
        if s2t.fixed_length:
            n = int(cif_out.lengths[0])  # fires: n - 1 tokens, then <eos> at the last fire
            search = BatchBeamSearch(
                scorers={"decoder": model.decoder, "length": LengthForcingScorer(max(n - 1, 0), V, model.eos)},
                weights={"decoder": 1.0, "length": 1.0}, beam_size=beam, vocab_size=V, sos=model.sos,
                eos=model.eos, pre_beam_score_key="full").eval()
            hyps = search(cif_out.outputs[0, : max(n, 1)], maxlenratio=-(n + 2))
        else:
            hyps = search(enc[0], maxlenratio=maxlenratio)
        out.append(hyps[0].yseq.tolist())
    return out, (enc_s, enc_cpu)


def run(args) -> List[Dict]:
    from espnet_ext.bin.asr_inference import BatchSpeech2Text, get_parser

    torch.set_num_threads(args.threads)
    feats = make_inputs(args.num_utts, args.min_seconds, args.max_seconds, args.seed)
    audio_s = sum(len(x) for x in feats) * FRAME_SHIFT
    rows = []
    for kind in args.models:
        with tempfile.TemporaryDirectory() as tmp:
            exp = build_model_files(kind, args.vocab, Path(tmp), args.quick, args.seed)
            dec_args = get_parser().parse_args([
                "--asr_train_config", str(exp / "config.yaml"), "--asr_model_file", str(exp / "model.pth"),
                "--data_path_and_name_and_type", "unused,speech,kaldi_ark", "--output_dir", tmp,
                "--beam_size", str(args.beam_size), "--maxlenratio", str(args.maxlenratio),
                "--ngpu", "1" if args.device == "cuda" else "0", "--encoder_batching", args.encoder_batching])
            s2t = BatchSpeech2Text(dec_args)
        n_params = sum(p.numel() for p in s2t.asr_model.parameters())
        sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
        decode_ours(s2t, feats[:2], 2)  # warm-up
        runs = [("espnet BatchBeamSearch", 1,
                 lambda: decode_espnet(s2t, feats, args.beam_size, args.maxlenratio, sync))]
        runs += [("ours", bs, lambda bs=bs: decode_ours(s2t, feats, bs, sync)) for bs in args.batch_sizes]
        reference = None
        for method, bs, fn in runs:
            sync()
            t0, c0 = time.perf_counter(), time.process_time()
            hyps, (enc_s, enc_cpu) = fn()
            sync()
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            if reference is None:
                reference, ref_wall, ref_search, ref_cpu = hyps, wall, wall - enc_s, cpu
                ref_search_cpu = cpu - enc_cpu
            rows.append({
                "model": kind, "params_M": n_params / 1e6, "init": "random", "method": method,
                "batch": bs, "beam": args.beam_size, "utts": len(feats), "audio_s": audio_s,
                "wall_s": wall, "encode_s": enc_s, "search_s": wall - enc_s,
                "utt_per_s": len(feats) / wall, "audio_s_per_s": audio_s / wall,
                "rtf": wall / audio_s, "speedup": ref_wall / wall,
                # process CPU time (one thread): robust to other users of a shared CPU
                "cpu_s": cpu, "speedup_cpu": ref_cpu / cpu, "encode_cpu_s": enc_cpu,
                "search_cpu_s": cpu - enc_cpu, "search_speedup_cpu": ref_search_cpu / (cpu - enc_cpu),
                "search_speedup": ref_search / (wall - enc_s),
                "same_1best": sum(h == r for h, r in zip(hyps, reference)) / len(feats),
                "tokens_per_utt": sum(len(h) - 2 for h in hyps) / len(feats),
                "encoder_batching": "per utterance" if method.startswith("espnet") or not s2t.batch_encode
                else "padded batch",
            })
    return rows


def main(argv=None):
    p = base_parser(__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["aed", "cif"], choices=list(MODELS))
    p.add_argument("--num_utts", type=int, default=64)
    p.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 16, 32])
    p.add_argument("--beam_size", type=int, default=10)
    p.add_argument("--vocab", type=int, default=500)
    p.add_argument("--maxlenratio", type=float, default=0.3,
                   help="AED: output tokens = ratio x encoder frames (40 ms) -> 7.5 tokens/s at 0.3")
    p.add_argument("--min_seconds", type=float, default=2.0)
    p.add_argument("--max_seconds", type=float, default=8.0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--encoder_batching", default="auto", choices=["auto", "batch", "utterance"],
                   help="ours: the entry point's --encoder_batching (utterance: no padding, the cheaper "
                        "choice on a single CPU thread)")
    args = p.parse_args(argv)
    if args.quick:
        args.num_utts, args.batch_sizes, args.beam_size, args.vocab = 6, [1, 4], 3, 20
        args.min_seconds, args.max_seconds = 0.5, 1.5
    with contextlib.redirect_stdout(sys.stderr):  # ESPnet prints import notices to stdout
        rows = run(args)
    emit("decode_speed", rows, args, ["model", "params_M", "init", "method", "batch", "beam", "utts",
                                      "audio_s", "wall_s", "encode_s", "search_s", "utt_per_s",
                                      "audio_s_per_s", "rtf", "speedup", "cpu_s", "speedup_cpu", "encode_cpu_s",
                                      "search_cpu_s", "search_speedup_cpu", "search_speedup", "same_1best",
                                      "tokens_per_utt", "encoder_batching"])
    if not args.json:
        for kind in args.models:
            key = "speedup" if args.device == "cuda" else "speedup_cpu"  # CPU: by process CPU time
            best = max((r for r in rows if r["model"] == kind and r["method"] == "ours"), key=lambda r: r[key])
            ok = best[key] >= TARGET_SPEEDUP and best["same_1best"] == 1.0
            print(f"# {kind}: best end-to-end speed-up {best[key]:.1f}x ({key}) at batch {best['batch']} "
                  f"(wall {best['speedup']:.1f}x, search alone {best['search_speedup']:.1f}x wall; target >= "
                  f"{TARGET_SPEEDUP:g}x with identical 1-best): {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
