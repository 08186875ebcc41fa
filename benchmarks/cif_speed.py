#!/usr/bin/env python
"""CIF op speed: espnet_ext's vectorised cif vs a frame loop vs torch_cif.cif_function.

All three run in one process on the same inputs (forward, and forward+backward); outputs are
checked to agree before timing. Ratios are loop/ours and ours/torch-cif (targets: >=100x faster
than the loop, <=1.0x torch-cif time), by median wall time and by median process CPU time (the
robust figure on a shared machine with --threads 1; on CUDA use the wall columns).
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import base_parser, emit, time_fn_cpu  # noqa: E402

from espnet_ext.asr.cif import cif  # noqa: E402


def cif_frame_loop(hidden, alphas, lengths, target_lengths=None, threshold=1.0):
    """Sequential integrate-and-fire over frames, vectorised over the batch (the official code's
    structure, with exact splitting). Supports at most one fire per frame. Fires 1e-4 early so that
    fp32 rounding of the scaled sum cannot lose the last token (the reference uses 0.99)."""
    B, T, D = hidden.shape
    valid = torch.arange(T, device=hidden.device)[None] < lengths[:, None]
    a = alphas.float() * valid
    if target_lengths is not None:
        a = a * (target_lengths.float() * threshold / a.sum(1).clamp_min(1e-8))[:, None]
    h = hidden.float()
    acc = h.new_zeros(B)
    state = h.new_zeros(B, D)
    fired, fire_mask = [], []
    for t in range(T):
        w = a[:, t]
        fire = acc + w >= threshold - 1e-4
        take = torch.where(fire, threshold - acc, w)
        out = state + take[:, None] * h[:, t]
        fired.append(torch.where(fire[:, None], out, torch.zeros_like(out)))
        fire_mask.append(fire)
        rest = torch.where(fire, w - take, torch.zeros_like(w))
        state = torch.where(fire[:, None], rest[:, None] * h[:, t], out)
        acc = torch.where(fire, rest, acc + w)
    fired = torch.stack(fired, 1)
    mask = torch.stack(fire_mask, 1)
    n = mask.sum(1)
    order = torch.sort((~mask).int(), dim=1, stable=True).indices[:, : int(n.max())]
    out = torch.gather(fired, 1, order[:, :, None].expand(-1, -1, D))
    return out, n


def run(args):
    torch.manual_seed(0)
    device = "cuda" if args.cuda else "cpu"
    sync = torch.cuda.synchronize if args.cuda else (lambda: None)
    import torch_cif

    grid = [(2, 50, 16)] if args.quick else [tuple(int(x) for x in g.split("x")) for g in args.grid]
    dtypes = [torch.float32] if args.quick else [getattr(torch, d) for d in args.dtypes]
    rows = []
    for (B, T, D) in grid:
        for dtype in dtypes:
            hidden = torch.randn(B, T, D, device=device, dtype=dtype)
            alphas = (torch.rand(B, T, device=device) * 0.5).to(dtype)
            lengths = torch.full((B,), T, device=device)
            lengths[1::2] = T * 3 // 4
            valid = torch.arange(T, device=device)[None] < lengths[:, None]
            target = torch.floor((alphas.float() * valid).sum(1)).long().clamp(min=1)

            def ours(backward):
                h = hidden.detach().requires_grad_(backward)
                a = alphas.detach().requires_grad_(backward)
                r = cif(h, a, lengths, target_lengths=target)
                if backward:
                    r.outputs.float().sum().backward()
                return r.outputs

            def loop(backward):
                h = hidden.detach().requires_grad_(backward)
                a = alphas.detach().requires_grad_(backward)
                out, _ = cif_frame_loop(h, a, lengths, target)
                if backward:
                    out.sum().backward()
                return out

            def peer(backward):
                h = hidden.detach().requires_grad_(backward)
                a = alphas.detach().requires_grad_(backward)
                r = torch_cif.cif_function(h, a, padding_mask=~valid, target_lengths=target)
                out = r["cif_out"][0]
                if backward:
                    out.float().sum().backward()
                return out

            with torch.no_grad():
                o_ours, o_loop, o_peer = ours(False), loop(False), peer(False)
            # Same tokens from all three (torch-cif adds eps=1e-4 to the target sum).
            n = o_ours.shape[1]
            max_diff_loop = (o_ours.float() - o_loop[:, :n].float()).abs().max().item()
            max_diff_peer = (o_ours.float() - o_peer[:, :n].float()).abs().max().item()
            tol = 1e-3 if dtype == torch.float32 else 0.1
            if max(max_diff_loop, max_diff_peer) > tol * max(1.0, o_ours.float().abs().max().item()):
                raise SystemExit(f"outputs differ: loop {max_diff_loop}, torch-cif {max_diff_peer}")
            reps = 2 if args.quick else args.repeats
            loop_reps = 1 if (B * T > 10000 and not args.quick) else reps
            for mode, bwd in (("fwd", False), ("fwd+bwd", True)):
                ctx = torch.no_grad() if not bwd else torch.enable_grad()
                with ctx:
                    t_ours, c_ours = time_fn_cpu(lambda: ours(bwd), reps, sync=sync)
                    t_peer, c_peer = time_fn_cpu(lambda: peer(bwd), reps, sync=sync)
                    t_loop, c_loop = time_fn_cpu(lambda: loop(bwd), loop_reps,
                                                 warmup=0 if loop_reps == 1 else 1, sync=sync)
                rows.append({
                    "B": B, "T": T, "D": D, "dtype": str(dtype).replace("torch.", ""), "mode": mode,
                    "ours_ms": t_ours, "loop_ms": t_loop, "torch_cif_ms": t_peer,
                    "loop/ours": t_loop / t_ours, "ours/torch_cif": t_ours / t_peer,
                    "ours_cpu_ms": c_ours, "loop_cpu_ms": c_loop, "torch_cif_cpu_ms": c_peer,
                    "loop/ours_cpu": c_loop / max(c_ours, 1e-6), "ours/torch_cif_cpu": c_ours / max(c_peer, 1e-6),
                    "max_abs_diff": max(max_diff_loop, max_diff_peer),
                })
    return rows


def main():
    p = base_parser(__doc__)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--grid", nargs="+", default=["16x100x256", "16x250x256", "16x500x256", "16x1000x256",
                                                  "1x500x256", "32x1000x256"],
                   help="BxTxD sizes (the B=16 T sweep feeds the plot in docs/benchmarks.md)")
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    p.add_argument("--cuda", action="store_true", help="run on the GPU")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="--device cuda = --cuda")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = p.parse_args()
    args.cuda = args.cuda or args.device == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = run(args)
    emit("cif_speed", rows, args, ["B", "T", "D", "dtype", "mode", "ours_ms", "loop_ms", "torch_cif_ms",
                                   "loop/ours", "ours/torch_cif", "ours_cpu_ms", "loop_cpu_ms",
                                   "torch_cif_cpu_ms", "loop/ours_cpu", "ours/torch_cif_cpu", "max_abs_diff"])


if __name__ == "__main__":
    main()
