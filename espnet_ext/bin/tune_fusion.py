"""Grid search of the fusion weights lambda_ILM x lambda_ELM on a dev set (DR-KD paper Fig. 3).

    python -m espnet_ext.bin.tune_fusion <asr_inference options: model, data, --lm_*, --ilm_*> \\
        --ref_text data/dev/text [--utt2spk data/dev/utt2spk] --score_type cer \\
        --ilm_weights 0,0.1,0.2,0.3 --lm_weights 0,0.2,0.4,0.6 --output_dir exp/.../tune_dev

Every grid cell is decoded by ``espnet_ext.bin.asr_inference`` (cells already decoded are reused,
so a rerun resumes) into ``<output_dir>/ilm<a>_lm<b>/`` and scored with sclite. The ASR model, the
LM and the internal LM are loaded once, for the first cell to decode; between cells only the
fusion weights change (:meth:`~espnet_ext.bin.asr_inference.BatchSpeech2Text.set_fusion_weights`:
a cell of weight 0 decodes as without that scorer). Writes
``grid.md`` (error rates; rows lambda_ELM, columns lambda_ILM), ``grid.json``, ``heatmap.png``
and the best pair (lowest error, ties to smaller weights) as ``best.json`` and ``best.sh``
(``ilm_weight=...``/``lm_weight=...``, for recipes to source).
"""
import argparse
import copy
import json
import logging
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from espnet_ext.bin import asr_inference


def _floats(text: str) -> List[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}")
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"weights must be >= 0, got {text!r}")
    return values


def get_parser() -> argparse.ArgumentParser:
    parser = asr_inference.get_parser()
    group = parser.add_argument_group("Fusion weight tuning")
    group.add_argument("--ref_text", required=True, help="reference text of the dev set")
    group.add_argument("--utt2spk", default=None, help="utt2spk for sclite (optional)")
    group.add_argument("--score_type", default="cer", choices=["cer", "wer", "ter"])
    group.add_argument("--score_bpemodel", default=None, help="sentencepiece model for ter")
    group.add_argument("--ilm_weights", type=_floats, required=True, help="lambda_ILM grid")
    group.add_argument("--lm_weights", type=_floats, required=True, help="lambda_ELM grid")
    return parser


def _cell_name(ilm_w: float, lm_w: float) -> str:
    return f"ilm{ilm_w:g}_lm{lm_w:g}"


def grid_decoder(args: argparse.Namespace) -> asr_inference.BatchSpeech2Text:
    """The models of the whole grid, loaded once: built with the grid's largest weights, so that
    the LM / internal LM is loaded when some cell weights it (not when all its weights are 0)."""
    build_args = copy.copy(args)
    build_args.lm_weight, build_args.ilm_weight = max(args.lm_weights), max(args.ilm_weights)
    return asr_inference.BatchSpeech2Text(build_args)


def tune(args: argparse.Namespace) -> Dict:
    from espnet_ext.recipe.scoring import score, score_types_to_units

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (_, unit), = score_types_to_units([args.score_type])
    if args.ilm_type == "none" and any(w > 0 for w in args.ilm_weights):
        raise ValueError("--ilm_weights > 0 need an --ilm_type")
    if args.lm_train_config is None and args.lm_file is None and any(w > 0 for w in args.lm_weights):
        raise ValueError("--lm_weights > 0 need --lm_train_config/--lm_file")
    grid: Dict[str, Dict] = {}
    decoder = None  # loaded for the first cell to decode (none when all are reused)
    for lm_w in args.lm_weights:
        for ilm_w in args.ilm_weights:
            cell = out / _cell_name(ilm_w, lm_w)
            hyp = cell / "1best_recog" / "text"
            if not hyp.exists():
                cell_args = copy.copy(args)
                cell_args.output_dir, cell_args.lm_weight, cell_args.ilm_weight = str(cell), lm_w, ilm_w
                if decoder is None:
                    decoder = grid_decoder(args)
                logging.info(f"decoding lambda_ILM={ilm_w:g} lambda_ELM={lm_w:g} -> {cell}")
                asr_inference.inference(cell_args, decoder=decoder)
            else:
                logging.info(f"reusing {hyp}")
            result = score(args.ref_text, hyp, args.utt2spk, unit,
                           cell / f"score_{args.score_type}", args.score_bpemodel)
            grid[_cell_name(ilm_w, lm_w)] = dict(ilm_weight=ilm_w, lm_weight=lm_w,
                                                 err=result["err"])
    best = min(grid.values(), key=lambda c: (c["err"], c["ilm_weight"] + c["lm_weight"]))
    summary = dict(score_type=args.score_type, ilm_type=args.ilm_type, grid=list(grid.values()),
                   best=best)
    (out / "grid.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "best.json").write_text(json.dumps(best) + "\n")
    (out / "best.sh").write_text(f"ilm_weight={best['ilm_weight']:g}\n"
                                 f"lm_weight={best['lm_weight']:g}\n")
    table = format_grid(grid, args.ilm_weights, args.lm_weights, args.score_type.upper())
    (out / "grid.md").write_text(table + "\n")
    plot_heatmap(grid, args.ilm_weights, args.lm_weights, out / "heatmap.png",
                 f"{args.score_type.upper()} (%), ILM: {args.ilm_type}")
    print(table)
    print(f"best: lambda_ILM={best['ilm_weight']:g} lambda_ELM={best['lm_weight']:g} "
          f"{args.score_type.upper()}={best['err']:.2f}")
    return summary


def format_grid(grid: Dict[str, Dict], ilm_ws: Sequence[float], lm_ws: Sequence[float],
                metric: str) -> str:
    lines = [f"| {metric} % (rows lambda_ELM, cols lambda_ILM) | "
             + " | ".join(f"{w:g}" for w in ilm_ws) + " |",
             "|---|" + "---|" * len(ilm_ws)]
    for lm_w in lm_ws:
        cells = [f"{grid[_cell_name(i, lm_w)]['err']:.2f}" for i in ilm_ws]
        lines.append(f"| {lm_w:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_heatmap(grid: Dict[str, Dict], ilm_ws: Sequence[float], lm_ws: Sequence[float],
                 path: Path, title: str) -> None:
    """Fig. 3 layout: lambda_ILM on the x axis, lambda_ELM on the y axis, darker = higher error."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    err = np.array([[grid[_cell_name(i, lm)]["err"] for i in ilm_ws] for lm in lm_ws])
    fig, ax = plt.subplots(figsize=(1.2 + 0.8 * len(ilm_ws), 1.0 + 0.6 * len(lm_ws)))
    image = ax.imshow(err, cmap="Blues", origin="lower", aspect="auto")
    ax.set_xticks(range(len(ilm_ws)), [f"{w:g}" for w in ilm_ws])
    ax.set_yticks(range(len(lm_ws)), [f"{w:g}" for w in lm_ws])
    ax.set_xlabel("lambda_ILM")
    ax.set_ylabel("lambda_ELM")
    for y in range(err.shape[0]):
        for x in range(err.shape[1]):
            ax.text(x, y, f"{err[y, x]:.1f}", ha="center", va="center", fontsize=7,
                    color="white" if err[y, x] > err.mean() else "black")
    fig.colorbar(image, ax=ax)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(cmd: Optional[Sequence[str]] = None) -> Dict:
    args = get_parser().parse_args(cmd)
    logging.basicConfig(level=args.log_level,
                        format="%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s")
    logging.getLogger().setLevel(args.log_level)  # as asr_inference: also when logging is set up
    return tune(args)


if __name__ == "__main__":
    main()
