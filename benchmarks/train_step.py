#!/usr/bin/env python
"""Training-step cost of hierarchical distillation: CIF baseline vs +ACD (K=100/300/700) vs +LRD
vs +HKD, all on the same fixed batch and the same model weights.

The model is built by CIFASRTask from a CIF config (default: the AISHELL-1 paper model); one
batch of random fbank, random targets (L+1 tokens per utterance incl. EOS) and random teacher
features is fixed. The reference-like default is 124 utterances x 16 tokens = 1,984 tokens (the
official run's ~1.9k tokens per update) x 480 frames. Each variant swaps a
:class:`HierarchicalDistiller` into the model; a step is forward + backward + AdamW update.
Variants are timed round-robin (one step each per round), so machine load affects all alike.

Columns: step_ms (median), ratio (to the CIF baseline), distill_fwd_ms (the distiller's forward
inside the step, median), distill_fwd_bwd_ms (the distiller's forward + backward alone on the
inputs it saw in the step; low-noise) and ratio_from_alone = (baseline step + that) / baseline, peak memory: on CUDA ``max_memory_allocated`` per step, on CPU the bytes
of tensors autograd saves for backward during the forward (the activation memory).
Target: HKD at K=700 and N~2000 tokens <= 1.10x the baseline step.
"""
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import base_parser, emit  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

VARIANTS = {
    "cif": None,
    "acd_k100": dict(acoustic_loss="contrastive", linguistic_weight=0.0, num_negatives=100),
    "acd_k300": dict(acoustic_loss="contrastive", linguistic_weight=0.0, num_negatives=300),
    "acd_k700": dict(acoustic_loss="contrastive", linguistic_weight=0.0, num_negatives=700),
    "lrd": dict(acoustic_loss="none", linguistic_weight=0.01),
    "hkd": dict(acoustic_loss="contrastive", linguistic_weight=0.01, num_negatives=700),
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


def build(args, device):
    from espnet_ext.tasks.cif_asr import CIFASRTask

    tmp = Path(tempfile.mkdtemp(prefix="train_step_"))
    tokens = ["<blank>", "<unk>"] + [f"t{i}" for i in range(args.vocab - 3)] + ["<sos/eos>"]
    (tmp / "tokens.txt").write_text("\n".join(tokens) + "\n")
    cmd = ["--config", str(args.config), "--token_list", str(tmp / "tokens.txt"), "--input_size", "80",
           "--normalize", "utterance_mvn", "--specaug", "none"]
    model_args = CIFASRTask.get_parser().parse_args(cmd)
    torch.manual_seed(0)
    model = CIFASRTask.build_model(model_args).to(device)
    B, T, L1 = args.batch, args.frames, args.tokens
    g = torch.Generator().manual_seed(0)
    batch = dict(
        speech=torch.randn(B, T, 80, generator=g),
        speech_lengths=torch.full((B,), T, dtype=torch.long) - torch.randint(0, T // 10, (B,), generator=g),
        text=torch.randint(2, args.vocab - 1, (B, L1 - 1), generator=g),
        text_lengths=torch.full((B,), L1 - 1, dtype=torch.long),
        plm_feats=torch.randn(B, L1, args.teacher_dim, generator=g),
        plm_feats_lengths=torch.full((B,), L1, dtype=torch.long),
    )
    batch = {k: v.to(device) for k, v in batch.items()}
    batch["utt_id"] = [f"utt{i}" for i in range(B)]
    return model, batch


def run(args):
    from espnet_ext.distill.hkd import HierarchicalDistiller

    device = torch.device("cuda" if args.cuda else "cpu")
    sync = torch.cuda.synchronize if args.cuda else (lambda: None)
    model, batch = build(args, device)
    cif_dim = model.decoder.cif_dim
    names = [v for v in args.variants.split(",") if v]
    distillers = {}
    for name in names:
        conf = VARIANTS[name]
        distillers[name] = None if conf is None else HierarchicalDistiller(
            cif_dim=cif_dim, decoder_state_dim=model.decoder.state_dim, teacher_dim=args.teacher_dim, **conf
        ).to(device)
    params = list(model.parameters()) + [p for d in distillers.values() if d is not None for p in d.parameters()]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    model.train()

    distill_times = {n: [] for n in names}
    captured = {}

    def step(name):
        model.distiller = distillers[name]
        d = distillers[name]
        if d is not None:  # time the distiller's own forward inside the step
            original = d.forward

            def timed(*a, **k):
                captured.setdefault(name, {key: v.detach() if torch.is_tensor(v) else v for key, v in k.items()})
                sync()
                t0 = time.perf_counter()
                out = original(*a, **k)
                sync()
                timed.fwd = time.perf_counter() - t0
                return out

            d.forward = timed
        saved = SavedBytes()
        if args.cuda:
            torch.cuda.reset_peak_memory_stats()
        sync()
        t0 = time.perf_counter()
        with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t):
            loss, stats, _ = model(**batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sync()
        elapsed = time.perf_counter() - t0
        if d is not None:
            del d.forward  # back to the class method
            distill_times[name].append(timed.fwd)
        peak = torch.cuda.max_memory_allocated() if args.cuda else saved.total
        return elapsed, peak, stats

    for name in names:  # warm-up round
        step(name)
    times = {n: [] for n in names}
    peaks = {n: 0 for n in names}
    last_stats = {}
    for r in range(args.repeats):
        for name in names:
            t, peak, stats = step(name)
            times[name].append(t)
            peaks[name] = max(peaks[name], peak)
            last_stats[name] = stats
        print(f"round {r + 1}/{args.repeats}: " + ", ".join(f"{n} {times[n][-1]:.2f}s" for n in names),
              file=sys.stderr)

    # The distiller alone (forward + backward) on the inputs it saw in the step: a low-noise
    # measure of the added work.
    alone = {}
    for name, d in distillers.items():
        if d is None:
            continue
        inputs = dict(captured[name])
        for key in ("cif_out", "decoder_states"):
            inputs[key] = inputs[key].clone().requires_grad_(True)
        samples = []
        for i in range(1 + 3 * args.repeats):
            sync()
            t0 = time.perf_counter()
            d(**inputs)["loss_distill"].backward()
            sync()
            if i:
                samples.append(time.perf_counter() - t0)
        alone[name] = statistics.median(samples)

    base = statistics.median(times[names[0]])
    n_tokens = int((batch["text_lengths"] + 1).sum())
    rows = []
    for name in names:
        med = statistics.median(times[name])
        conf = VARIANTS[name] or {}
        rows.append({
            "variant": name,
            "K": conf.get("num_negatives", "") if conf.get("acoustic_loss") == "contrastive" else "",
            "N_tokens": n_tokens,
            "step_ms": med * 1000,
            "ratio": med / base,
            "distill_fwd_ms": statistics.median(distill_times[name]) * 1000 if distill_times[name] else 0.0,
            "distill_fwd_bwd_ms": alone.get(name, 0.0) * 1000,
            "ratio_from_alone": (base + alone.get(name, 0.0)) / base,
            "peak_MiB": peaks[name] / 2**20,
            "peak_ratio": peaks[name] / max(peaks[names[0]], 1),
        })
    return rows


def main():
    p = base_parser(__doc__)
    p.add_argument("--config", default=str(REPO / "conf" / "train_asr_cif_aishell.yaml"))
    p.add_argument("--batch", type=int, default=124, help="utterances")
    p.add_argument("--frames", type=int, default=480, help="fbank frames per utterance")
    p.add_argument("--tokens", type=int, default=16, help="target tokens per utterance incl. EOS")
    p.add_argument("--vocab", type=int, default=4234)
    p.add_argument("--teacher_dim", type=int, default=768)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma list; the first is the ratio base")
    p.add_argument("--cuda", action="store_true")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    if args.quick:
        args.config, args.batch, args.frames, args.tokens = str(REPO / "conf" / "train_asr_cif_tiny.yaml"), 8, 160, 6
        args.vocab, args.teacher_dim, args.repeats = 50, 32, 2
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = run(args)
    emit("train_step", rows, args,
         ["variant", "K", "N_tokens", "step_ms", "ratio", "distill_fwd_ms", "distill_fwd_bwd_ms",
          "ratio_from_alone", "peak_MiB", "peak_ratio"])


if __name__ == "__main__":
    main()
