"""A tiny learnable ASR data set in ESPnet2's formats, for tests that train or decode in-process.

Each letter token has a fixed random feature prototype; an utterance is its letters' prototypes
held for 20-28 frames each (plus noise), with short low-energy silences at both ends. At the CIF
encoder's 8x subsampling every letter gets about 3 encoder frames, so CTC is feasible and a small
model learns the mapping in a few epochs.

    paths = make_tiny_asr_data(tmp_path)          # dict of Paths (see the function)
    cmd = asr_data_args(paths)                    # --token_list/--input_size/data/shape flags
"""
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import kaldiio
import numpy as np

LETTERS = "abcdef"
SPECIAL_FIRST = ["<blank>", "<unk>"]
SPECIAL_LAST = ["<sos/eos>"]


def _write_split(root: Path, name: str, utts: List[Tuple[str, str]], rng: np.random.Generator,
                 protos: np.ndarray, plm_dim: Optional[int]) -> Dict[str, Path]:
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    feat_dim = protos.shape[1]
    texts, shapes = {}, {}
    with kaldiio.WriteHelper(f"ark,scp:{d / 'feats.ark'},{d / 'feats.scp'}") as writer:
        for utt, text in utts:
            segments = [0.1 * rng.standard_normal((int(rng.integers(6, 12)), feat_dim))]
            for ch in text:
                n = int(rng.integers(20, 29))
                segments.append(protos[LETTERS.index(ch)] + 0.3 * rng.standard_normal((n, feat_dim)))
            segments.append(0.1 * rng.standard_normal((int(rng.integers(6, 12)), feat_dim)))
            feats = np.concatenate(segments).astype(np.float32)
            writer(utt, feats)
            texts[utt], shapes[utt] = text, feats.shape
    (d / "text").write_text("".join(f"{u} {t}\n" for u, t in texts.items()))
    (d / "speech_shape").write_text("".join(f"{u} {s[0]},{s[1]}\n" for u, s in shapes.items()))
    (d / "text_shape").write_text("".join(f"{u} {len(t)}\n" for u, t in texts.items()))
    out = {f"{name}_dir": d, f"{name}_feats_scp": d / "feats.scp", f"{name}_text": d / "text",
           f"{name}_speech_shape": d / "speech_shape", f"{name}_text_shape": d / "text_shape"}
    if plm_dim is not None:
        # Stand-in teacher features: one row per target token incl. EOS.
        with kaldiio.WriteHelper(f"ark,scp:{d / 'plm_feats.ark'},{d / 'plm_feats.scp'}") as writer:
            for utt, text in texts.items():
                writer(utt, rng.standard_normal((len(text) + 1, plm_dim)).astype(np.float32))
        out[f"{name}_plm_scp"] = d / "plm_feats.scp"
    return out


def make_tiny_asr_data(root: Path, n_utts: int = 8, feat_dim: int = 20, seed: int = 0,
                       plm_dim: Optional[int] = None) -> Dict[str, Path]:
    """Write train (``n_utts``) and valid (``max(2, n_utts // 2)``) sets under ``root``.

    Returns Paths: ``token_list`` and, for split in (train, valid), ``<split>_dir``,
    ``<split>_feats_scp`` (kaldi_ark, float32 (T, feat_dim)), ``<split>_text`` (char text, no
    spaces), ``<split>_speech_shape`` ("utt T,feat_dim"), ``<split>_text_shape`` ("utt L") and,
    with ``plm_dim``, ``<split>_plm_scp`` (kaldi_ark (L+1, plm_dim) random teacher features).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    protos = rng.standard_normal((len(LETTERS), feat_dim))

    def utterances(prefix: str, n: int):
        return [(f"{prefix}{i:03d}", "".join(rng.choice(list(LETTERS), int(rng.integers(3, 7)))))
                for i in range(n)]

    paths = {"token_list": root / "tokens.txt"}
    paths["token_list"].write_text("\n".join(SPECIAL_FIRST + list(LETTERS) + SPECIAL_LAST) + "\n")
    paths.update(_write_split(root, "train", utterances("tr", n_utts), rng, protos, plm_dim))
    paths.update(_write_split(root, "valid", utterances("dv", max(2, n_utts // 2)), rng, protos, plm_dim))
    return paths


def asr_data_args(paths: Dict[str, Path], with_plm: bool = False) -> List[str]:
    """ESPnet2 ASR task flags for the data of :func:`make_tiny_asr_data` (folded batches)."""
    feat_dim = int(paths["train_speech_shape"].read_text().split()[1].split(",")[1])
    args = ["--token_list", str(paths["token_list"]), "--token_type", "char",
            "--input_size", str(feat_dim)]
    for split in ("train", "valid"):
        args += [f"--{split}_data_path_and_name_and_type", f"{paths[f'{split}_feats_scp']},speech,kaldi_ark",
                 f"--{split}_data_path_and_name_and_type", f"{paths[f'{split}_text']},text,text",
                 f"--{split}_shape_file", str(paths[f"{split}_speech_shape"]),
                 f"--{split}_shape_file", str(paths[f"{split}_text_shape"])]
        if with_plm:
            args += [f"--{split}_data_path_and_name_and_type", f"{paths[f'{split}_plm_scp']},plm_feats,kaldi_ark"]
    return args
