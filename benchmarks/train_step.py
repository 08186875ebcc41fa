#!/usr/bin/env python
"""Training-step cost of hierarchical distillation: CIF baseline vs +ACD (K=100/300/700) vs +LRD
vs +HKD, on the same fixed batch and the same model weights.

Two tables:

1. ``step``: full training steps (forward + backward + AdamW) of the CIF model built by
   CIFASRTask from ``--config`` (default: the AISHELL-1 paper model, 47 M parameters) on one fixed
   batch of ``--batch`` utterances x ``--frames`` fbank frames x ``--tokens`` targets (incl. EOS)
   with random teacher features. Each variant swaps into the model a distiller built as
   ``--distiller``/``--distiller_conf`` build it (espnet_ext.asr.cif_part_choices); variants are
   timed round-robin (one step each per round) so machine load hits all alike.
   ``ratio`` = step time / baseline step time, measured.
2. ``distiller``: the distiller alone (forward + backward) on ``--distill_batch`` utterances x
   ``--tokens`` (default: the step's batch), CIF outputs and decoder states of the model's sizes.
   ``ratio_est`` = (baseline step scaled to ``--distill_batch`` utterances + distiller) / scaled
   baseline step: the ratio a full step of that batch would show. On a GPU use the defaults (124
   utterances x 16 tokens = 1,984 tokens, the official run's ~1.9k per update; then both tables
   measure the same batch). On a small CPU the full batch does not fit (~60 GB of activations),
   so time a smaller step batch and keep ``--distill_batch 124``: the baseline step grows linearly
   with the number of utterances, the distiller depends only on the token count.

Time: on CUDA wall time (synchronised); on CPU the process's CPU time (all threads), because wall
time on shared cores mostly measures the neighbours. Memory: on CUDA peak ``max_memory_allocated``
per step / per distiller call; on CPU the bytes of tensors autograd keeps for backward (activation
memory). Target: HKD at K=700, N~2000 tokens
<= 1.10x the baseline step.
"""
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import base_parser, emit, machine_info  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

# benchmark variant -> (--distiller choice, --distiller_conf beyond teacher_dim); None: no distiller
VARIANTS = {
    "cif": None,
    "acd_k100": ("acd", dict(num_negatives=100)),
    "acd_k300": ("acd", dict(num_negatives=300)),
    "acd_k700": ("acd", dict(num_negatives=700)),
    "lrd": ("lrd", {}),
    "hkd": ("hkd", dict(num_negatives=700)),
}


class SavedBytes:
    """Bytes of distinct storages autograd keeps for backward (a CPU stand-in for peak memory)."""

    def __init__(self):
        self.storages = {}

    def pack(self, t):
        try:
            s = t.untyped_storage()
            self.storages[s.data_ptr()] = s.nbytes()
        except (RuntimeError, NotImplementedError):
            pass
        return t

    @property
    def total(self) -> int:
        return sum(self.storages.values())


def measure(fn, cuda: bool):
    """(seconds, peak bytes) of one call: wall time on CUDA; on CPU this process's CPU time (user
    + system, all threads), which other processes sharing the cores disturb far less than wall time."""
    saved = SavedBytes()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    clock = time.perf_counter if cuda else time.process_time
    t0 = clock()
    with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t):
        fn()
    if cuda:
        torch.cuda.synchronize()
    elapsed = clock() - t0
    return elapsed, torch.cuda.max_memory_allocated() if cuda else saved.total


def build_model(args, device):
    with contextlib.redirect_stdout(sys.stderr):  # ESPnet prints import notes on stdout; keep --json clean
        from espnet_ext.tasks.cif_asr import CIFASRTask

    tmp = Path(tempfile.mkdtemp(prefix="train_step_"))
    tokens = ["<blank>", "<unk>"] + [f"t{i}" for i in range(args.vocab - 3)] + ["<sos/eos>"]
    (tmp / "tokens.txt").write_text("\n".join(tokens) + "\n")
    cmd = ["--config", str(args.config), "--token_list", str(tmp / "tokens.txt"), "--input_size", "80",
           "--normalize", "utterance_mvn", "--specaug", "none"]
    torch.manual_seed(0)
    return CIFASRTask.build_model(CIFASRTask.get_parser().parse_args(cmd)).to(device)


def make_batch(args, device):
    B, T, L1 = args.batch, args.frames, args.tokens
    g = torch.Generator().manual_seed(0)
    batch = dict(
        speech=torch.randn(B, T, 80, generator=g),
        speech_lengths=T - torch.randint(0, T // 10, (B,), generator=g),
        text=torch.randint(2, args.vocab - 1, (B, L1 - 1), generator=g),
        text_lengths=torch.full((B,), L1 - 1, dtype=torch.long),
        plm_feats=torch.randn(B, L1, args.teacher_dim, generator=g),
        plm_feats_lengths=torch.full((B,), L1, dtype=torch.long),
    )
    batch = {k: v.to(device) for k, v in batch.items()}
    batch["utt_id"] = [f"utt{i}" for i in range(B)]
    return batch


def make_distillers(names, model, args, device):
    """The distillers as the model builds them from ``--distiller``/``--distiller_conf``."""
    from espnet_ext.asr.cif_part_choices import distiller_choices

    distillers = {}
    for n in names:
        if VARIANTS[n] is None:
            distillers[n] = None
            continue
        choice, conf = VARIANTS[n]
        distillers[n] = distiller_choices.get_class(choice)(
            cif_dim=model.decoder.cif_dim, decoder_state_dim=model.decoder.state_dim,
            teacher_dim=args.teacher_dim, **conf).to(device)
    return distillers


def negatives(distiller) -> object:
    """K of a contrastive distiller, else "" (the tables' K column)."""
    if distiller is None or distiller.acoustic_loss != "contrastive":
        return ""
    return distiller.num_negatives


def step_table(args, model, distillers, device):
    names = list(distillers)
    batch = make_batch(args, device)
    params = list(model.parameters()) + [p for d in distillers.values() if d is not None for p in d.parameters()]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    model.train()

    def step(name):
        model.distiller = distillers[name]

        def run():
            loss, _, _ = model(**batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        return measure(run, args.cuda)

    for name in names[:1] if args.warmup == "first" else names:  # warm-up round
        step(name)
    times = {n: [] for n in names}
    peaks = dict.fromkeys(names, 0)
    for r in range(args.repeats):
        for name in names:
            t, peak = step(name)
            times[name].append(t)
            peaks[name] = max(peaks[name], peak)
        print(f"step round {r + 1}/{args.repeats}: " + ", ".join(f"{n} {times[n][-1]:.2f}s" for n in names),
              file=sys.stderr)
    model.distiller = None
    base = statistics.median(times[names[0]])
    rows = []
    for name in names:
        med = statistics.median(times[name])
        rows.append({
            "variant": name, "K": negatives(distillers[name]),
            "utts": args.batch, "N_tokens": args.batch * args.tokens, "step_ms": med * 1000,
            "ratio": med / base, "peak_MiB": peaks[name] / 2**20, "peak_ratio": peaks[name] / max(peaks[names[0]], 1),
        })
    return rows, base


def distiller_table(args, model, distillers, device, base_step_s):
    B, L1 = args.distill_batch, args.tokens
    g = torch.Generator().manual_seed(1)
    cif_out = torch.randn(B, L1, model.decoder.cif_dim, generator=g).to(device).requires_grad_(True)
    dec = torch.randn(B, L1, model.decoder.state_dim, generator=g).to(device).requires_grad_(True)
    ys_out = torch.randint(2, args.vocab - 1, (B, L1), generator=g).to(device)
    teacher = torch.randn(B, L1, args.teacher_dim, generator=g).to(device)
    lengths = torch.full((B,), L1, dtype=torch.long, device=device)
    scaled_base = base_step_s * B / args.batch
    rows = []
    for name, d in distillers.items():
        if d is None:
            continue
        d.train()

        def run():
            d(cif_out=cif_out, cif_lengths=lengths, decoder_states=dec, teacher=teacher,
              teacher_lengths=lengths, ys_out=ys_out)["loss_distill"].backward()

        samples = [measure(run, args.cuda) for _ in range(1 + args.distill_repeats)][1:]
        t = statistics.median(s[0] for s in samples)
        rows.append({
            "variant": name, "K": negatives(d),
            "utts": B, "N_tokens": B * L1, "distill_ms": t * 1000,
            "base_step_ms": scaled_base * 1000, "ratio_est": (scaled_base + t) / scaled_base,
            "peak_MiB": max(s[1] for s in samples) / 2**20,
        })
    return rows


def main():
    p = base_parser(__doc__)
    p.add_argument("--config", default=str(REPO / "conf" / "train_asr_cif_aishell.yaml"))
    p.add_argument("--batch", type=int, default=124, help="utterances in the timed step")
    p.add_argument("--frames", type=int, default=480, help="fbank frames per utterance")
    p.add_argument("--tokens", type=int, default=16, help="target tokens per utterance incl. EOS")
    p.add_argument("--distill_batch", type=int, default=0, help="utterances for the distiller table (0: --batch)")
    p.add_argument("--vocab", type=int, default=4234)
    p.add_argument("--teacher_dim", type=int, default=768)
    p.add_argument("--repeats", type=int, default=3, help="timed step rounds")
    p.add_argument("--distill_repeats", type=int, default=10)
    p.add_argument("--warmup", choices=["all", "first"], default="all",
                   help="untimed warm-up step of every variant, or of the first only (saves time on a "
                        "slow CPU: after one step the model's buffers and the allocator are warm)")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma list; the first is the ratio base")
    p.add_argument("--skip_steps", action="store_true", help="distiller table only (needs --base_step_ms)")
    p.add_argument("--base_step_ms", type=float, default=0.0, help="baseline step time for --skip_steps")
    p.add_argument("--cuda", action="store_true")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads (0: 1 on CPU, whose CPU-time clock is only stable single-threaded)")
    args = p.parse_args()
    if args.quick:
        args.config, args.batch, args.frames, args.tokens = str(REPO / "conf" / "train_asr_cif_tiny.yaml"), 8, 160, 6
        args.vocab, args.teacher_dim, args.repeats, args.distill_repeats = 50, 32, 2, 3
    args.distill_batch = args.distill_batch or args.batch
    torch.set_num_threads(args.threads or (torch.get_num_threads() if args.cuda else 1))
    device = torch.device("cuda" if args.cuda else "cpu")
    model = build_model(args, device)
    names = [v for v in args.variants.split(",") if v]
    distillers = make_distillers(names, model, args, device)
    if args.skip_steps:
        if args.base_step_ms <= 0:
            raise SystemExit("--skip_steps needs --base_step_ms")
        step_rows, base = [], args.base_step_ms / 1000
    else:
        step_rows, base = step_table(args, model, distillers, device)
    distill_rows = distiller_table(args, model, distillers, device, base)
    if args.json:  # one document with both tables
        print(json.dumps({"benchmark": "train_step", "machine": machine_info(), "config": args.config,
                          "frames": args.frames, "step": step_rows, "distiller": distill_rows}, indent=1))
        return
    if step_rows:
        emit("train_step", step_rows, args,
             ["variant", "K", "utts", "N_tokens", "step_ms", "ratio", "peak_MiB", "peak_ratio"])
    emit("train_step_distiller", distill_rows, args,
         ["variant", "K", "utts", "N_tokens", "distill_ms", "base_step_ms", "ratio_est", "peak_MiB"])


if __name__ == "__main__":
    main()
