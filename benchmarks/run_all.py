#!/usr/bin/env python
"""Run every benchmark, collect their JSON, and write docs/benchmarks.md (+ docs/cif_speed.png).

    python benchmarks/run_all.py                      # full run (long), writes the doc and plot
    python benchmarks/run_all.py --quick --json       # harness check
    python benchmarks/run_all.py --reuse              # render from benchmarks/results/*.json
    python benchmarks/run_all.py --cuda --only cif_speed train_step decode_speed

Each script runs in its own subprocess (``python benchmarks/<name>.py --json ...``); its JSON goes
to ``<results_dir>/<name>.json`` with the command, wall and CPU seconds of the run (the machine is
shared: the CPU time of the child is the figure that does not depend on other users' load).
The speed and memory targets are checked against the collected rows in a "Targets" table.
"""
import datetime
import json
import os
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from common import base_parser, machine_info  # noqa: E402

# name -> extra CLI arguments of the full run (CPU); --cuda/--device is added per script
BENCHMARKS = {
    "cif_speed": ["--threads", "1"],
    "train_step": [],
    "decode_speed": [],
    "fusion_speed": [],
    "feature_speed": [],
    "recipe_times": [],
    "synth_speed": [],
}
DEFAULT = ["cif_speed", "train_step", "decode_speed", "fusion_speed", "feature_speed", "recipe_times"]
CUDA_FLAG = {"cif_speed": ["--cuda"], "train_step": ["--cuda"], "decode_speed": ["--device", "cuda"],
             "feature_speed": ["--device", "cuda"]}  # the others have no GPU path


def command(name: str, quick: bool, cuda: bool, recipe: str, extra: Optional[Dict[str, List[str]]] = None) -> List[str]:
    cmd = [sys.executable, str(HERE / f"{name}.py"), "--json"]
    if quick:
        cmd.append("--quick")
    else:
        cmd += BENCHMARKS[name]
    cmd += (extra or {}).get(name, [])
    if cuda:
        cmd += CUDA_FLAG.get(name, [])
    if name == "recipe_times" and not quick:
        cmd.append(recipe)
    return cmd


def run_one(name: str, cmd: List[str], timeout: Optional[float]) -> Dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    try:
        result = json.loads(proc.stdout[proc.stdout.index("{"):])
    except ValueError as e:
        raise RuntimeError(f"{name}: no JSON on stdout: {proc.stdout[-2000:]}") from e
    result["run"] = {"command": " ".join(["python", os.path.relpath(cmd[1], REPO)] + cmd[2:]),
                     "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
                     "date": datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M UTC")}
    return result


def rows_of(result: Dict) -> Dict[str, List[Dict]]:
    """Tables of one result: {"": rows} or, for train_step, {"step": ..., "distiller": ...}."""
    if "rows" in result:
        return {"": result["rows"]}
    return {k: v for k, v in result.items() if isinstance(v, list) and v and isinstance(v[0], dict)}


# ----------------------------------------------------------------------------- targets
def targets(results: Dict[str, Dict]) -> List[Dict]:
    out: List[Dict] = []

    def add(what, value, target, ok, note=""):
        out.append({"target": what, "measured": value, "goal": target,
                     "met": ok if isinstance(ok, str) else ("pending" if ok is None else ("yes" if ok else "NO")),
                    "note": note})

    cif = results.get("cif_speed")
    if cif:
        for dtype in ("float32", "bfloat16"):
            r = [x for x in cif["rows"] if (x["B"], x["T"], x["D"], x["mode"], x["dtype"]) ==
                 (16, 500, 256, "fwd+bwd", dtype)]
            if r:
                r = r[0]
                # CPU: process CPU time (robust on a shared machine); GPU: wall time
                by_cpu = "loop/ours_cpu" in r and not cif.get("cuda")
                sfx, how = ("_cpu", "CPU time") if by_cpu else ("", "wall time")
                loop, peer = r["loop/ours" + sfx], r["ours/torch_cif" + sfx]
                add(f"CIF op vs frame loop, fwd+bwd B=16 T=500 D=256 {dtype}", f"{loop:.0f}x faster",
                    ">= 100x", loop >= 100, f"by {how}; wall: {r['loop/ours']:.0f}x")
                add(f"CIF op vs torch-cif, fwd+bwd B=16 T=500 D=256 {dtype}", f"{peer:.2f}x its time",
                    "<= 1.0x", peer <= 1.0, f"by {how}; wall: {r['ours/torch_cif']:.2f}x")
    ts = results.get("train_step")
    if ts:
        step = {r["variant"]: r for r in ts.get("step", [])}
        if "hkd" in step:
            h = step["hkd"]
            add("HKD (K=700) training step vs CIF baseline", f"{h['ratio']:.3f}x", "<= 1.10x",
                h["ratio"] <= 1.10, f"{'wall' if ts.get('cuda') else 'CPU'} time, same fixed batch of "
                f"{h['utts']} utts, N={h['N_tokens']} tokens, {ts.get('frames', '?')} frames, "
                f"{Path(ts.get('config', '?')).name}")
        dist = {r["variant"]: r for r in ts.get("distiller", [])}
        if "hkd" in dist and "ratio_est" in dist["hkd"]:
            add("HKD (K=700) distiller alone, estimated step ratio", f"{dist['hkd']['ratio_est']:.3f}x",
                "<= 1.10x", dist["hkd"]["ratio_est"] <= 1.10)
    dec = results.get("decode_speed")
    if dec:
        for model in sorted({r["model"] for r in dec["rows"]}):
            ours = [r for r in dec["rows"] if r["model"] == model and r["method"] == "ours"]
            if ours:
                by_cpu = "speedup_cpu" in ours[0] and not dec.get("cuda")
                key = "speedup_cpu" if by_cpu else "speedup"
                best = max(ours, key=lambda r: r[key])
                add(f"batched decoding vs ESPnet per-utterance, {model} model",
                    f"{best[key]:.1f}x (batch {best['batch']}), same 1-best {best['same_1best']:.0%}",
                    ">= 5x, identical 1-best", best[key] >= 5 and best["same_1best"] == 1.0,
                    f"end to end (encoder + search), by {'CPU' if by_cpu else 'wall'} time; wall: "
                    f"{best['speedup']:.1f}x"
                    + (f"; beam {best['beam']}, {best['utts']} utts" if "beam" in best else ""))
                skey = "search_speedup_cpu" if by_cpu and "search_speedup_cpu" in ours[0] else "search_speedup"
                sbest = max(ours, key=lambda r: r[skey])
                add(f"batched beam search alone vs ESPnet BatchBeamSearch, {model} model",
                    f"{sbest[skey]:.1f}x (batch {sbest['batch']}), same 1-best {sbest['same_1best']:.0%}",
                    ">= 5x, identical 1-best", sbest[skey] >= 5 and sbest["same_1best"] == 1.0,
                    f"search time (total minus encoder), by {'CPU' if skey.endswith('_cpu') else 'wall'} time")
    fus = results.get("fusion_speed")
    if fus:
        m = {r["method"]: r for r in fus["rows"]}
        if "dr_kd" in m:
            add("DR-KD decoding time vs shallow fusion", f"{m['dr_kd']['x_sf']:.3f}x", "<= 1.10x",
                m["dr_kd"]["x_sf"] <= 1.10)
        if "ilme_z" in m:
            add("ILME-Z decoding time vs shallow fusion", f"{m['ilme_z']['x_sf']:.3f}x", "paper: 1.19x", "n/a",
                "reported next to the paper, no target")
    missing = {"train_step": ("HKD (K=700) training step vs CIF baseline", "<= 1.10x"),
               "decode_speed": ("batched decoding vs ESPnet per-utterance", ">= 5x, identical 1-best"),
               "fusion_speed": ("DR-KD vs shallow fusion; ILME-Z ratio", "<= 1.10x; paper 1.19x")}
    for name, (what, goal) in missing.items():
        if name not in results:
            add(what, "-", goal, None, f"no full {name} result in this run (see notes)")
    if cif:
        add("CIF op / decoding on GPU", "-", "figures on CUDA", None,
            "no GPU in this session: run `python benchmarks/run_all.py --cuda --only cif_speed train_step "
            "decode_speed` on a GPU machine")
    return out


# ----------------------------------------------------------------------------- rendering
def fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v).replace("|", "/")


def md_table(rows: List[Dict]) -> List[str]:
    cols: List[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return lines


def plot_cif(cif: Dict, png: Path) -> bool:
    """CIF op fwd+bwd time vs T (largest batch with >= 2 lengths) for ours / loop / torch-cif."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in cif["rows"] if r["mode"] == "fwd+bwd"]
    by_b: Dict[int, set] = {}
    for r in rows:
        by_b.setdefault(r["B"], set()).add(r["T"])
    sweep = [b for b, ts in by_b.items() if len(ts) >= 2]
    B = max(sweep) if sweep else max(by_b)
    # CPU: process CPU time (one thread; robust on a shared machine); GPU: wall time
    sfx, how = ("_cpu_ms", "CPU time") if rows and "ours_cpu_ms" in rows[0] and not cif.get("cuda") \
        else ("_ms", "wall time")
    fig, ax = plt.subplots(figsize=(6, 4))
    for dtype, style in (("float32", "-"), ("bfloat16", "--")):
        sel = sorted((r for r in rows if r["B"] == B and r["dtype"] == dtype), key=lambda r: r["T"])
        if not sel:
            continue
        T = [r["T"] for r in sel]
        for key, label, color in (("ours", "espnet_ext cif", "C0"), ("loop", "frame loop", "C1"),
                                  ("torch_cif", "torch_cif", "C2")):
            ax.plot(T, [r[key + sfx] for r in sel], style, marker="o", color=color, label=f"{label} ({dtype})")
    ax.set_xlabel("sequence length T (frames)")
    ax.set_ylabel(f"fwd+bwd {how} (ms, median)")
    ax.set_yscale("log")
    dev = cif["machine"].get("gpu", "none")
    ax.set_title(f"CIF op, B={B}, D={rows[0]['D'] if rows else '?'}, "
                 f"{'GPU ' + dev if dev != 'none' and cif.get('cuda') else 'CPU'}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return True


def render(results: Dict[str, Dict], png: Optional[Path], notes: str = "") -> str:
    m = machine_info()
    lines = ["# Benchmarks", "",
             f"Rendered {datetime.datetime.utcnow().strftime('%Y-%m-%d %H:%M UTC')} by "
             "`python benchmarks/run_all.py` (per-benchmark command, date and machine below).", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, GPU: {m['gpu']}, torch {m['torch']}, "
             f"python {m['python']}, git {m.get('git', '?')}.", ""]
    if notes:
        lines += [notes, ""]
    t = targets(results)
    if t:
        lines += ["## Targets", ""] + md_table(t) + [""]
    if png is not None and "cif_speed" in results:
        lines += [f"![CIF op time vs sequence length]({png.name})", ""]
    for name, res in results.items():
        run = res.get("run", {})
        lines += [f"## {res.get('benchmark', name)}", "",
                  f"- command: `{run.get('command', '?')}`",
                  f"- date: {run.get('date', '?')}; run took {run.get('wall_s', '?')} s wall, "
                  f"{run.get('cpu_s', '?')} s CPU",
                  "- machine: " + ", ".join(f"{k}={v}" for k, v in res.get("machine", {}).items()), ""]
        for table, rows in rows_of(res).items():
            if table:
                lines += [f"### {table}", ""]
            lines += md_table(rows) + [""]
    return "\n".join(lines) + "\n"


def main(argv=None) -> Dict:
    p = base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="+", choices=list(BENCHMARKS), help="subset (default: all but synth_speed)")
    p.add_argument("--cuda", action="store_true", help="pass the GPU flag to the scripts that have one")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="--device cuda = --cuda")
    p.add_argument("--results_dir", default=str(HERE / "results"))
    p.add_argument("--reuse", action="store_true", help="do not rerun benchmarks whose JSON exists")
    p.add_argument("--doc", default=str(REPO / "docs" / "benchmarks.md"), help="'' to skip")
    p.add_argument("--plot", default=str(REPO / "docs" / "cif_speed.png"), help="'' to skip")
    p.add_argument("--notes", default=str(HERE / "notes.md"),
                   help="markdown file whose text goes under the header (if it exists)")
    p.add_argument("--recipe", default="egs/minisynth/asr1", help="recipe for recipe_times")
    p.add_argument("--timeout", type=float, default=None, help="seconds per benchmark")
    p.add_argument("--extra", action="append", default=[], metavar="NAME=ARGS",
                   help="more arguments for one script, e.g. 'decode_speed=--models cif --num_utts 32' "
                        "(sizes for a slow machine; recorded in the command line)")
    args = p.parse_args(argv)
    extra: Dict[str, List[str]] = {}
    for item in args.extra:
        name, _, rest = item.partition("=")
        if name not in BENCHMARKS:
            p.error(f"--extra {item!r}: unknown benchmark {name!r}")
        extra.setdefault(name, []).extend(shlex.split(rest))
    cuda = args.cuda or args.device == "cuda"
    names = args.only or DEFAULT
    out_dir = Path(args.results_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: Dict[str, Dict] = {}
    for name in names:
        path = out_dir / f"{name}.json"
        if args.reuse and path.is_file() and path.stat().st_size:
            text = path.read_text()
            results[name] = json.loads(text[text.index("{"):])  # a script run by hand may print notices first
            continue
        if name == "recipe_times" and not args.quick and not (REPO / args.recipe / "exp" / "stage_times.tsv").is_file():
            print(f"run_all: {args.recipe}/exp/stage_times.tsv missing; recipe_times skipped", file=sys.stderr)
            continue
        cmd = command(name, args.quick, cuda, args.recipe, extra)
        print(f"run_all: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
        results[name] = run_one(name, cmd, args.timeout)
        if cuda:
            results[name]["cuda"] = True
        path.write_text(json.dumps(results[name], indent=1))
    png = Path(args.plot) if args.plot and "cif_speed" in results else None
    if png is not None:
        plot_cif(results["cif_speed"], png)
    if args.doc:
        notes = Path(args.notes).read_text() if args.notes and Path(args.notes).is_file() else ""
        Path(args.doc).parent.mkdir(parents=True, exist_ok=True)
        Path(args.doc).write_text(render(results, png, notes))
    summary = {"benchmark": "run_all", "machine": machine_info(), "results": results, "targets": targets(results)}
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        print("\n".join(md_table(summary["targets"])) if summary["targets"] else "no targets measured")
    return summary


if __name__ == "__main__":
    main()
