"""PNG of the CIF fire positions over the fbank of one test utterance (asr.sh stage 16).

    python -m espnet_ext.recipe.bin.plot_cif_fires --asr_exp exp/asr_x --data_dir dump/fbank/test_in
        [--utt ID] [--model valid.acc.ave.pth] [--decode_dir DIR] [--output PNG]

Runs the trained model's encoder and CIF (inference mode: unscaled weights, tail threshold) on
one utterance and draws, over its 80-d log-mel fbank, a line at each fired token's frame, labelled
with the token the beam search chose there (from ``<decode_dir>/token`` when given and of the
same length), plus the CIF weights per 80 ms encoder frame and their running sum.
Default utterance: the first of ``<data_dir>/feats.scp``. Default output:
``<asr_exp>/cif_fires_<utt>.png``. A model without CIF (e.g. LAS) gets no plot, said so.
"""
import argparse
import logging
import sys
from pathlib import Path


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--asr_exp", type=Path, required=True, help="dir with config.yaml and the model")
    p.add_argument("--model", default="valid.acc.ave.pth", help="model file in --asr_exp")
    p.add_argument("--data_dir", type=Path, required=True, help="dir with feats.scp (and text)")
    p.add_argument("--utt", default=None, help="utterance id (default: the first one)")
    p.add_argument("--decode_dir", type=Path, default=None,
                   help="decoding output with a 'token' file, for the labels")
    p.add_argument("--output", type=Path, default=None, help="PNG path")
    return p


def read_table(path: Path) -> dict:
    table = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            key, _, value = line.partition(" ")
            if key:
                table[key] = value.strip()
    return table


def frame_span(encoder) -> tuple:
    """(stride, offset): encoder frame i covers fbank frames stride*i + [0, offset]."""
    stride = 2 * 2 ** len(encoder.pooling_layers)  # conv2d/2 front-end, then /2 per pooling
    return stride, stride + 2  # the 3x3 front-end kernel adds 2 frames to the receptive field


def main(cmd=None) -> int:
    args = get_parser().parse_args(cmd)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    import kaldiio
    import matplotlib
    import numpy as np
    import torch

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from espnet2.tasks.asr import ASRTask

    import espnet_ext  # noqa: F401  (registers the CIF model)

    feats_scp = read_table(args.data_dir / "feats.scp")
    if not feats_scp:
        print(f"plot_cif_fires: no utterances in {args.data_dir}/feats.scp", file=sys.stderr)
        return 1
    utt = args.utt or sorted(feats_scp)[0]
    if utt not in feats_scp:
        print(f"plot_cif_fires: utterance {utt} not in {args.data_dir}/feats.scp", file=sys.stderr)
        return 1
    model_file = args.asr_exp / args.model
    model, train_args = ASRTask.build_model_from_file(args.asr_exp / "config.yaml", model_file, "cpu")
    if not hasattr(model, "cif_encode"):
        print(f"plot_cif_fires: {model_file} is not a CIF model: no plot", file=sys.stderr)
        return 0
    model.eval()
    feats = np.asarray(kaldiio.load_mat(feats_scp[utt]), dtype=np.float32)
    with torch.no_grad():
        cif_out, _, enc_lens = model.cif_encode(torch.from_numpy(feats)[None],
                                                torch.tensor([feats.shape[0]]))
    n_fire = int(cif_out.lengths[0])
    fires = cif_out.fire_positions[0, :n_fire].tolist()
    alphas = cif_out.alphas[0, : int(enc_lens[0])].double().numpy()
    stride, span = frame_span(model.encoder)
    centre = lambda i: stride * i + span / 2  # noqa: E731  (fbank frame at the middle of enc frame i)

    tokens = []
    if args.decode_dir is not None:
        tokens = read_table(args.decode_dir / "token").get(utt, "").split()
    # N fires decode N - 1 tokens; the last fire is the <eos> step.
    labels = tokens + ["<eos>"] if n_fire > 0 and len(tokens) == n_fire - 1 else []
    ref = read_table(args.data_dir / "text").get(utt, "")
    hyp = read_table(args.decode_dir / "text").get(utt, "") if args.decode_dir else ""

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(8.0, feats.shape[0] / 40), 6), sharex=True,
                                   gridspec_kw=dict(height_ratios=[3, 1]))
    ax1.imshow(feats.T, origin="lower", aspect="auto", cmap="magma", interpolation="nearest")
    xs_fire = [centre(i) for i in fires]
    for x in xs_fire:
        ax1.axvline(x, color="cyan", linewidth=1.0)
    # The fired tokens as tick labels on top: the k-th fire emits the k-th decoded token and the
    # last fire emits <eos>.
    top = ax1.secondary_xaxis("top")
    top.set_xticks(xs_fire)
    top.set_xticklabels([labels[k] if k < len(labels) else "" for k in range(n_fire)],
                        rotation=90, fontsize=8)
    ax1.set_ylabel("mel bin")
    title = f"{utt}: {n_fire} CIF fires over {feats.shape[0]} fbank frames (80 ms encoder frames)"
    ax1.set_title(title + (f"\nREF: {ref}" if ref else "") + (f"\nHYP: {hyp}" if hyp else ""),
                  fontsize=9, loc="left")
    xs = [centre(i) for i in range(len(alphas))]
    ax2.bar(xs, alphas, width=stride * 0.8, color="tab:blue", label="CIF weight per encoder frame")
    ax2.plot(xs, np.cumsum(alphas) % 1.0, color="tab:orange", linewidth=1,
             label="accumulated weight mod threshold")
    for i in fires:
        ax2.axvline(centre(i), color="gray", linewidth=0.5)
    ax2.set_ylim(0, 1.05)
    ax2.set_xlabel("fbank frame (10 ms)")
    ax2.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    output = args.output or args.asr_exp / f"cif_fires_{utt}.png"
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=100)
    logging.info("wrote %s (%s, %d fires, %d tokens decoded)", output, utt, n_fire, len(tokens))
    print(output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
