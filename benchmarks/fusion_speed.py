#!/usr/bin/env python
"""Decoding cost of LM fusion with internal-LM estimation, at equal beam, in one run.

Methods: no LM, SF (shallow fusion), ILME-Z, ILME-L, DR (LSTM DR-LM), DR-2gram, DR-KD. Every
method decodes the same utterances with the batched CIF beam search
(``UtteranceBatchBeamSearch``); the ILM term is the scorer of ``espnet_ext.lm.fusion``.
Targets: DR-KD time <= 1.10x SF; the DR-KD paper measured ILME (decoder-based) 1.19x SF.

Two modes:
- synthetic (default): a random-init CIF decoder of the paper's AISHELL size (2 blocks, d 256,
  ffn 2048, 4233 chars), an ELM {2,1024} LSTM, a DR/DR-KD student {2,256} (the paper's student)
  and an ILME-L learner, decoding random CIF vectors (fixed token counts). Measures the search
  and scorers only: no encoder, no data loading. Throughput is reported in tokens/s and as audio
  seconds per second assuming ``--seconds_per_token`` (AISHELL: ~0.2 s per character).
- real (``--asr_exp`` etc.): ``espnet_ext.bin.asr_inference`` on a data set with trained models;
  throughput in audio seconds per second from the decoder's own speed log.
``--quick`` shrinks everything (checks the harness, not the timing).
"""
import contextlib
import copy
import os
import sys
import time
from typing import Dict, List

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import base_parser, emit  # noqa: E402

METHODS = ["no_lm", "sf", "ilme_z", "ilme_l", "dr", "dr_2gram", "dr_kd"]
PAPER_ILME_RATIO = 1.19
TARGET_DRKD_RATIO = 1.10


def synthetic_scorers(args) -> Dict[str, Dict]:
    """Random-init models of the requested sizes; returns per method (scorers, weights)."""
    from espnet2.lm.seq_rnn_lm import SequentialRNNLM

    from espnet_ext.asr.decoder.cif_decoder import CIFDecoder
    from espnet_ext.lm.arpa import write_arpa
    from espnet_ext.lm.bigram_lm import BigramLM
    from espnet_ext.lm.clamped_scorer import ClampedScorer
    from espnet_ext.lm.ilm_context import ContextLearner
    from espnet_ext.lm.internal_lm import InternalLM
    from espnet_ext.lm.kneser_ney import estimate_bigram_kn

    torch.manual_seed(0)
    V, D = args.vocab_size, args.dim
    decoder = CIFDecoder(V, D, attention_heads=4, linear_units=args.ffn,
                         num_blocks=args.dec_blocks).eval()
    elm = SequentialRNNLM(V, unit=args.elm_unit, nlayers=args.elm_layers).eval()
    student = SequentialRNNLM(V, unit=args.student_unit, nlayers=args.student_layers).eval()
    dr = copy.deepcopy(student)  # DR has the student's configuration (paper Table 3)
    learner = ContextLearner(V, (1, D), embed_size=args.student_unit,
                             hidden_size=args.student_unit).eval()
    torch.nn.init.normal_(learner.output.weight, std=0.01)
    g = torch.Generator().manual_seed(0)
    sentences = torch.randint(1, V - 1, (2000, 12), generator=g).tolist()
    tokens = [f"t{i}" for i in range(V - 1)] + ["<sos/eos>"]
    uni, bow, bi, _ = estimate_bigram_kn(sentences, V, V - 1)
    arpa = os.path.join(args.workdir, "bench_bigram.arpa")
    write_arpa(arpa, tokens, uni, bow, bi)
    ilms = {"ilme_z": InternalLM(decoder), "ilme_l": InternalLM(decoder, learner),
            "dr": dr, "dr_2gram": BigramLM(arpa, tokens), "dr_kd": student}
    out = {"no_lm": (dict(decoder=decoder), dict(decoder=1.0)),
           "sf": (dict(decoder=decoder, lm=elm), dict(decoder=1.0, lm=args.lm_weight))}
    for name, ilm in ilms.items():
        out[name] = (dict(decoder=decoder, lm=elm, ilm=ClampedScorer(ilm.eval())),
                     dict(decoder=1.0, lm=args.lm_weight, ilm=-args.ilm_weight))
    return out


def ilm_params(scorers) -> int:
    from espnet_ext.lm.fusion import count_ilm_params

    return count_ilm_params(scorers["ilm"].scorer) if "ilm" in scorers else 0


def run_synthetic(args) -> List[Dict]:
    from espnet_ext.asr.cif import tokens_before_eos
    from espnet_ext.asr.utterance_batch_beam_search import UtteranceBatchBeamSearch

    setups = synthetic_scorers(args)
    g = torch.Generator().manual_seed(1)
    lengths = torch.randint(args.min_tokens, args.max_tokens + 1, (args.utterances,), generator=g)
    fires = lengths + 1  # CIF fires L + 1 vectors for L tokens: the last is the <eos> step
    xs = torch.randn(args.utterances, int(fires.max()), args.dim, generator=g)
    tokens = int(lengths.sum())
    searches = {}
    for method in args.methods:
        scorers, weights = setups[method]
        searches[method] = UtteranceBatchBeamSearch(
            scorers=scorers, weights=weights, beam_size=args.beam_size,
            vocab_size=args.vocab_size, sos=args.vocab_size - 1, eos=args.vocab_size - 1).eval()

    def decode(search):
        for start in range(0, args.utterances, args.batch_size):
            sl = slice(start, start + args.batch_size)
            search(xs[sl], fires[sl], fixed_lengths=tokens_before_eos(fires[sl]))

    # Repeats interleave the methods so that load changes on a shared machine hit all alike;
    # the minimum over repeats is kept, for wall and for process CPU time.
    wall = {m: float("inf") for m in args.methods}
    cpu = dict(wall)
    for rep in range(args.repeats + 1):
        for method in args.methods:
            t0, c0 = time.perf_counter(), time.process_time()
            decode(searches[method])
            if rep > 0:  # the first round warms up
                wall[method] = min(wall[method], time.perf_counter() - t0)
                cpu[method] = min(cpu[method], time.process_time() - c0)
    rows = [dict(method=m, seconds=wall[m], cpu_seconds=cpu[m], tokens_per_s=tokens / wall[m],
                 audio_s_per_s=tokens * args.seconds_per_token / wall[m],
                 ilm_params=ilm_params(setups[m][0])) for m in args.methods]
    return finish(rows, cpu if args.ratio_by == "cpu" else wall)


def run_real(args) -> List[Dict]:
    from espnet_ext.bin import asr_inference

    flags = {"no_lm": [], "sf": [], "ilme_z": ["--ilm_type", "zero"],
             "ilme_l": ["--ilm_type", "label_ctx", "--ilm_file", args.ctx_file or ""],
             "dr": ["--ilm_type", "dr", "--ilm_file", args.dr_file or ""],
             "dr_2gram": ["--ilm_type", "dr_2gram", "--ilm_file", args.bigram_file or ""],
             "dr_kd": ["--ilm_type", "dr_kd", "--ilm_file", args.drkd_file or ""]}
    rows, times = [], {}
    for method in args.methods:
        if "--ilm_file" in flags[method] and not flags[method][-1]:
            print(f"# skipping {method}: its model file option is not given", file=sys.stderr)
            continue
        cmd = ["--asr_train_config", args.asr_train_config, "--asr_model_file", args.asr_model_file,
               "--data_path_and_name_and_type", args.data, "--beam_size", str(args.beam_size),
               "--batch_size", str(args.batch_size),
               "--output_dir", os.path.join(args.workdir, f"decode_{method}"), *flags[method]]
        if args.decode_config:
            cmd = ["--config", args.decode_config] + cmd
        if method != "no_lm":
            cmd += ["--lm_train_config", args.lm_train_config, "--lm_file", args.lm_file,
                    "--lm_weight", str(args.lm_weight)]
        if method not in ("no_lm", "sf"):
            cmd += ["--ilm_weight", str(args.ilm_weight)]
        best = None
        for _ in range(args.repeats):
            speed = asr_inference.main(cmd)
            if best is None or speed["wall_seconds"] < best["wall_seconds"]:
                best = speed
        times[method] = best["wall_seconds"]
        rows.append(dict(method=method, seconds=best["wall_seconds"],
                         audio_s_per_s=best["audio_seconds_per_second"], rtf=best["rtf"]))
    return finish(rows, times)


def finish(rows: List[Dict], times: Dict[str, float]) -> List[Dict]:
    sf = times.get("sf")
    for r in rows:
        if sf:
            r["x_sf"] = times[r["method"]] / sf
        if r["method"] == "ilme_z" and sf:
            r["note"] = f"paper ILME: {PAPER_ILME_RATIO:.2f}x SF"
        if r["method"] == "dr_kd" and sf:
            ok = r["x_sf"] <= TARGET_DRKD_RATIO
            r["note"] = f"target <= {TARGET_DRKD_RATIO:.2f}x SF: {'met' if ok else 'MISSED'}"
    return rows


def main(argv=None) -> List[Dict]:
    p = base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--beam_size", type=int, default=10)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--ratio_by", default="cpu", choices=["cpu", "wall"],
                   help="time behind x_sf (synthetic mode): process CPU time (robust on a shared "
                        "machine with --threads 1) or wall time")
    p.add_argument("--lm_weight", type=float, default=0.3)
    p.add_argument("--ilm_weight", type=float, default=0.2)
    p.add_argument("--workdir", default="/tmp/fusion_speed")
    g = p.add_argument_group("synthetic mode sizes (defaults: DR-KD paper / AISHELL CIF)")
    g.add_argument("--utterances", type=int, default=32)
    g.add_argument("--min_tokens", type=int, default=8)
    g.add_argument("--max_tokens", type=int, default=20)
    g.add_argument("--vocab_size", type=int, default=4233)
    g.add_argument("--dim", type=int, default=256)
    g.add_argument("--ffn", type=int, default=2048)
    g.add_argument("--dec_blocks", type=int, default=2)
    g.add_argument("--elm_unit", type=int, default=1024)
    g.add_argument("--elm_layers", type=int, default=2)
    g.add_argument("--student_unit", type=int, default=256)
    g.add_argument("--student_layers", type=int, default=2)
    g.add_argument("--seconds_per_token", type=float, default=0.2)
    g = p.add_argument_group("real mode (trained models; asr_inference on --data)")
    g.add_argument("--asr_train_config")
    g.add_argument("--asr_model_file")
    g.add_argument("--data", help="e.g. dump/fbank/test/feats.scp,speech,kaldi_ark")
    g.add_argument("--decode_config")
    g.add_argument("--lm_train_config")
    g.add_argument("--lm_file")
    g.add_argument("--ctx_file")
    g.add_argument("--dr_file")
    g.add_argument("--bigram_file")
    g.add_argument("--drkd_file")
    args = p.parse_args(argv)
    args.methods = [m for m in args.methods.split(",") if m]
    unknown = set(args.methods) - set(METHODS)
    if unknown:
        p.error(f"unknown methods {sorted(unknown)}; choose from {METHODS}")
    if args.quick:
        args.utterances, args.vocab_size, args.dim, args.ffn = 8, 60, 32, 64
        args.elm_unit, args.student_unit, args.repeats, args.beam_size = 64, 16, 1, 4
        args.min_tokens, args.max_tokens = 3, 6
    torch.set_num_threads(args.threads)
    os.makedirs(args.workdir, exist_ok=True)
    with contextlib.redirect_stdout(sys.stderr):  # ESPnet prints a flash-attn notice at import
        import espnet.nets.pytorch_backend.transformer.attention  # noqa: F401
    with torch.no_grad():
        rows = run_real(args) if args.asr_train_config else run_synthetic(args)
    if args.quick:
        for r in rows:
            if "note" in r:
                r["note"] += " (--quick: harness check, not a timing)"
    columns = ["method", "seconds", "x_sf", "audio_s_per_s", "ilm_params", "note"]
    if not args.asr_train_config:
        columns[2:2] = ["cpu_seconds"]
        columns.insert(4, "tokens_per_s")
    mode = "real, x_sf by wall" if args.asr_train_config else f"synthetic, x_sf by {args.ratio_by}"
    emit(f"fusion_speed ({mode}, beam {args.beam_size}, batch {args.batch_size}, "
         f"{args.threads} thread(s))", rows, args, columns)
    return rows


if __name__ == "__main__":
    main()
