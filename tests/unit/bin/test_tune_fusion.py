"""The fusion-weight tuner on the tiny CIF model trained on real audio (tests/tiny_audio_asr.py),
its LSTM LM and ILME-Z: the grid is decoded in one process with the ASR model and the LM built
once, and every cell gives the 1-best (text, token ids, score) of a separate run of the decoding
CLI with that cell's weights, the peer; a rerun reuses the decoded cells.
"""
import json
from collections import Counter

import pytest
from tiny_audio_asr import tiny_audio_cif_model, tiny_audio_lm

from espnet_ext.bin import asr_inference, tune_fusion

ILM_WEIGHTS = (0.0, 0.6)
LM_WEIGHTS = (0.0, 0.8)
RECOG = ("text", "token_int", "score")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.getbasetemp() / "audio_cif"
    model, lm = tiny_audio_cif_model(root), tiny_audio_lm(root)
    # The valid utterances (unseen in training: not all right, so the weights matter).
    common = ["--asr_train_config", str(model.exp / "config.yaml"), "--asr_model_file", str(model.model_file),
              "--data_path_and_name_and_type", f"{model.valid['feats_scp']},speech,kaldi_ark",
              "--beam_size", "3", "--batch_size", "3", "--lm_train_config", str(lm / "config.yaml"),
              "--lm_file", str(lm / "valid.loss.ave.pth"), "--ilm_type", "zero"]
    return dict(model=model, common=common, work=tmp_path_factory.mktemp("tune"))


@pytest.fixture
def loads(monkeypatch):
    """Counts the ASR model and LM constructions (ESPnet's loaders, wrapped)."""
    from espnet2.tasks.asr import ASRTask
    from espnet2.tasks.lm import LMTask

    count = Counter()

    def counting(name, load):
        def wrapper(*args, **kwargs):
            count[name] += 1
            return load(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(ASRTask, "build_model_from_file", counting("asr", ASRTask.build_model_from_file))
    monkeypatch.setattr(LMTask, "build_model_from_file", counting("lm", LMTask.build_model_from_file))
    return count


def _recog(d):
    return {name: (d / "1best_recog" / name).read_text() for name in RECOG}


def _tune(setup, out):
    return tune_fusion.main(setup["common"] + [
        "--output_dir", str(out), "--ref_text", str(setup["model"].valid["text"]), "--score_type", "cer",
        "--ilm_weights", ",".join(map(str, ILM_WEIGHTS)), "--lm_weights", ",".join(map(str, LM_WEIGHTS))])


def test_grid_in_one_process_equals_the_decoding_cli_per_cell(setup, loads):
    from espnet_ext.recipe.scoring import score

    out = setup["work"] / "grid"
    summary = _tune(setup, out)
    assert loads == {"asr": 1, "lm": 1}  # not once per cell

    peers = {}
    for lm_w in LM_WEIGHTS:
        for ilm_w in ILM_WEIGHTS:
            name = f"ilm{ilm_w:g}_lm{lm_w:g}"
            peer = setup["work"] / "peer" / name
            asr_inference.main(setup["common"] + ["--lm_weight", str(lm_w), "--ilm_weight", str(ilm_w),
                                                  "--output_dir", str(peer)])
            peers[name] = _recog(peer)
            assert _recog(out / name) == peers[name], name
            cell = next(c for c in summary["grid"] if (c["ilm_weight"], c["lm_weight"]) == (ilm_w, lm_w))
            want = score(setup["model"].valid["text"], peer / "1best_recog" / "text", None, "char",
                         setup["work"] / "peer_score" / name)
            assert cell["err"] == want["err"]
    # Every weight changes the search: four different score files (a stuck weight would repeat one).
    assert len({p["score"] for p in peers.values()}) == 4
    # The decode log of a cell names the scorers it ran with: weight 0 leaves a scorer out.
    first_line = (out / "ilm0_lm0" / "decode.log").read_text().split("beam search scorers:")[-1].splitlines()[0]
    assert "decoder x 1" in first_line and "lm" not in first_line
    assert "ilm x -0.6" in (out / "ilm0.6_lm0.8" / "decode.log").read_text()
    grid = json.loads((out / "grid.json").read_text())
    assert len(grid["grid"]) == 4 and grid["best"] == summary["best"]
    assert (out / "heatmap.png").stat().st_size > 1000
    assert (out / "best.sh").read_text() == (f"ilm_weight={summary['best']['ilm_weight']:g}\n"
                                             f"lm_weight={summary['best']['lm_weight']:g}\n")


def test_rerun_reuses_cells_and_loads_models_only_for_missing_ones(setup, loads):
    import shutil

    out = setup["work"] / "grid"
    if not (out / "grid.json").exists():
        _tune(setup, out)
        loads.clear()
    before = {d.name: _recog(d) for d in out.iterdir() if d.is_dir()}
    first = json.loads((out / "grid.json").read_text())
    assert _tune(setup, out) == first
    assert loads == {}  # every cell reused: nothing loaded
    shutil.rmtree(out / "ilm0.6_lm0")
    assert _tune(setup, out) == first
    assert loads == {"asr": 1, "lm": 1}  # the LM too: the grid has an LM weight > 0
    assert {d.name: _recog(d) for d in out.iterdir() if d.is_dir()} == before


def test_decoder_refuses_a_weight_for_a_scorer_it_has_not_loaded(setup):
    args = asr_inference.get_parser().parse_args(
        setup["common"] + ["--output_dir", str(setup["work"] / "unused"), "--lm_weight", "0"])
    decoder = asr_inference.BatchSpeech2Text(args)  # LM weight 0, ILM weight 0: neither loaded
    assert set(decoder.beam_search.weights) == {"decoder"}
    decoder.set_fusion_weights(lm_weight=0.0, ilm_weight=0.0)
    with pytest.raises(ValueError, match="no lm scorer is loaded"):
        decoder.set_fusion_weights(lm_weight=0.5)
    with pytest.raises(ValueError, match="no ilm scorer is loaded"):
        decoder.set_fusion_weights(ilm_weight=0.5)
    with pytest.raises(ValueError, match="lambda_ILM >= 0"):
        decoder.set_fusion_weights(ilm_weight=-0.1)
