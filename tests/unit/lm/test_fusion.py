"""Internal LMs in the real ESPnet tasks and tools: the session fixture ``ilm_exp`` runs the
tasks in-process on a tiny data set (one import of ``espnet2.tasks.asr``): a LAS model (1 epoch),
a random-init CIF model saved like ESPnet does, the ILME-L context learner, DR-KD students with
CIF and LAS teachers, and a 2-gram. Then the DR-KD task and checkpoints, fusion scores with
negative weights, context-learner loading, the perplexity tool, token-list checks, decoding with
every ILM type and fusion-weight tuning.
"""
import math

import pytest
import torch
import yaml
from espnet2.lm.espnet_model import ESPnetLanguageModel
from tiny_asr_data import asr_data_args, make_tiny_asr_data
from toy_lm import EOS, SOS, TOKENS, V

import espnet_ext  # noqa: F401  (registers our classes)
from espnet_ext.lm.arpa import write_arpa
from espnet_ext.lm.kd_lm import KDLanguageModel
from espnet_ext.lm.kneser_ney import estimate_bigram_kn


@pytest.fixture(scope="session")
def ilm_exp(tmp_path_factory, repo_root):
    """Runs the real ESPnet tasks once: LAS (1 epoch), random-init CIF saved as ESPnet does,
    ILME-L learner on LAS, DR-KD students (CIF ILME-Z teacher, LAS ILME-L teacher), 2-gram."""
    from espnet2.tasks.asr import ASRTask
    from espnet2.tasks.lm import LMTask
    from espnet2.utils.yaml_no_alias_safe_dump import yaml_no_alias_safe_dump

    from espnet_ext.bin.ilm_context_train import main as ctx_train
    from espnet_ext.bin.kd_lm_train import main as kd_train
    from espnet_ext.bin.ngram_lm_train import main as ngram_train

    root = tmp_path_factory.mktemp("ilm_exp")
    paths = make_tiny_asr_data(root / "data", n_utts=8)
    conf = repo_root / "conf"
    exp = dict(root=root, paths=paths)

    ASRTask.main(cmd=["--config", str(conf / "train_las_tiny.yaml"), *asr_data_args(paths),
                      "--max_epoch", "1", "--fold_length", "1000", "--fold_length", "100",
                      "--output_dir", str(root / "las")])
    exp["las"] = (root / "las" / "config.yaml", root / "las" / "valid.acc.ave.pth")

    # Random-init tiny CIF model: the task parser's Namespace, dumped and saved like main_worker.
    cif_dir = root / "cif"
    cif_dir.mkdir()
    from espnet_ext.tasks.cif_asr import CIFASRTask

    args = CIFASRTask.get_parser().parse_args(
        ["--config", str(conf / "train_asr_cif_tiny.yaml"), *asr_data_args(paths),
         "--output_dir", str(cif_dir)])
    torch.manual_seed(0)
    cif_model = CIFASRTask.build_model(args)
    with open(cif_dir / "config.yaml", "w") as f:
        yaml_no_alias_safe_dump(vars(args), f, indent=4, sort_keys=False)
    torch.save(cif_model.state_dict(), cif_dir / "model.pth")
    exp["cif"] = (cif_dir / "config.yaml", cif_dir / "model.pth")

    lm_data = ["--token_list", str(paths["token_list"]), "--token_type", "char",
               "--train_data_path_and_name_and_type", f"{paths['train_text']},text,text",
               "--valid_data_path_and_name_and_type", f"{paths['valid_text']},text,text",
               "--train_shape_file", str(paths["train_text_shape"]),
               "--valid_shape_file", str(paths["valid_text_shape"]), "--fold_length", "150"]
    exp["lm_data"] = lm_data
    ctx_train(["--config", str(conf / "train_ilm_ctx_tiny.yaml"), *lm_data,
               "--asr_train_config", str(exp["las"][0]), "--asr_model_file", str(exp["las"][1]),
               "--output_dir", str(root / "ctx_las")])
    exp["ctx_las"] = root / "ctx_las" / "valid.loss.ave.pth"

    kd_train(["--config", str(conf / "train_drkd_lstm_tiny.yaml"), *lm_data,
              "--teacher_train_config", str(exp["cif"][0]),
              "--teacher_model_file", str(exp["cif"][1]), "--teacher_ilm_type", "zero",
              "--output_dir", str(root / "drkd_cif_z")])
    kd_train(["--config", str(conf / "train_drkd_lstm_tiny.yaml"), *lm_data,
              "--teacher_train_config", str(exp["las"][0]),
              "--teacher_model_file", str(exp["las"][1]), "--teacher_ilm_type", "label_ctx",
              "--teacher_ctx_file", str(exp["ctx_las"]), "--output_dir", str(root / "drkd_las_l")])
    ctx_train(["--config", str(conf / "train_ilm_ctx_tiny.yaml"), *lm_data,
               "--asr_train_config", str(exp["cif"][0]), "--asr_model_file", str(exp["cif"][1]),
               "--output_dir", str(root / "ctx_cif")])
    exp["ctx_cif"] = root / "ctx_cif" / "valid.loss.ave.pth"
    LMTask.main(cmd=["--config", str(conf / "train_drlm_lstm_tiny.yaml"), *lm_data,
                     "--output_dir", str(root / "drlm")])
    ngram_train(["--text", str(paths["train_text"]), "--token_list", str(paths["token_list"]),
                 "--output", str(root / "bigram" / "lm.arpa")])
    return exp


def test_lmkd_task_trains_and_checkpoint_is_student_only(ilm_exp):
    import re

    for name in ("drkd_cif_z", "drkd_las_l"):
        out = ilm_exp["root"] / name
        assert (out / "1epoch.pth").exists() and (out / "valid.loss.ave.pth").exists()
        state = torch.load(out / "valid.loss.ave.pth", map_location="cpu")
        assert state and all(k.startswith("lm.") for k in state)
        log = (out / "config.yaml").read_text()
        assert "teacher_model_file" in log
        train_log = (out / "checkpoint.pth")
        assert train_log.exists()
        reporter = torch.load(train_log, map_location="cpu", weights_only=False)["reporter"]
        stats = reporter["stats"][1]["train"]
        assert {"loss", "loss_gt", "loss_kd"} <= set(stats)
        assert all(math.isfinite(v) for v in stats.values() if isinstance(v, float))
        assert not re.search(r"teacher", " ".join(state))


def test_kd_student_loads_with_stock_lmtask_and_decodes(ilm_exp):
    """Stock LMTask.build_model_from_file rebuilds the student (teacher-less KDLanguageModel, and
    plain ESPnetLanguageModel from config.plain.yaml); its .lm works as a decoding LM."""
    from espnet2.tasks.lm import LMTask

    from espnet_ext.asr.utterance_batch_beam_search import UtteranceBatchBeamSearch

    out = ilm_exp["root"] / "drkd_cif_z"
    model, args = LMTask.build_model_from_file(out / "config.yaml", out / "valid.loss.ave.pth")
    assert isinstance(model, KDLanguageModel) and model.teacher is None
    plain, _ = LMTask.build_model_from_file(out / "config.plain.yaml", out / "valid.loss.ave.pth")
    assert type(plain) is ESPnetLanguageModel
    for a, b in zip(model.lm.parameters(), plain.lm.parameters()):
        assert torch.equal(a, b)

    from espnet2.tasks.asr import ASRTask

    asr, _ = ASRTask.build_model_from_file(*map(str, ilm_exp["cif"]))
    asr.eval()
    assert list(args.token_list) == list(asr.token_list)
    bs = UtteranceBatchBeamSearch(
        scorers=dict(decoder=asr.decoder, lm=model.lm), weights=dict(decoder=1.0, lm=0.3),
        beam_size=2, vocab_size=len(asr.token_list), sos=asr.sos, eos=asr.eos).eval()
    xs = torch.randn(2, 4, asr.decoder.cif_dim)
    hyps = bs(xs, torch.tensor([4, 3]), fixed_lengths=torch.tensor([4, 3]))
    assert [len(h[0].yseq) for h in hyps] == [6, 5]  # sos + N tokens + eos
    assert all(float(h[0].scores["lm"]) < 0 for h in hyps)


def _teacher_forced(scorer_logits, yseq):
    logp = torch.log_softmax(scorer_logits[0], dim=-1)
    return float(logp[torch.arange(len(yseq) - 1), yseq[1:]].sum())


def test_fused_score_is_decoder_plus_weighted_scorers(ilm_exp):
    """CIF decoding with ELM (+0.4) and ILME-Z (-0.3): the final score equals the decoder's
    teacher-forced log-prob plus the weighted LM and ILM teacher-forced log-probs."""
    from espnet2.tasks.asr import ASRTask
    from espnet2.tasks.lm import LMTask

    from espnet_ext.asr.utterance_batch_beam_search import UtteranceBatchBeamSearch
    from espnet_ext.lm.fusion import build_ilm_scorer

    asr, _ = ASRTask.build_model_from_file(*map(str, ilm_exp["cif"]))
    asr.eval()
    out = ilm_exp["root"] / "drkd_las_l"
    elm = LMTask.build_model_from_file(out / "config.yaml", out / "valid.loss.ave.pth")[0].lm.eval()
    ilm = build_ilm_scorer("zero", asr)
    weights = dict(decoder=1.0, lm=0.4, ilm=-0.3)
    bs = UtteranceBatchBeamSearch(scorers=dict(decoder=asr.decoder, lm=elm, ilm=ilm),
                                  weights=weights, beam_size=3, vocab_size=V, sos=SOS,
                                  eos=EOS).eval()
    torch.manual_seed(3)
    xs = torch.randn(1, 5, asr.decoder.cif_dim)
    with torch.no_grad():
        best = bs(xs, torch.tensor([5]), fixed_lengths=torch.tensor([5]))[0][0]
        y = best.yseq
        dec = _teacher_forced(asr.decoder(xs, torch.tensor([5]), y[None, :-1],
                                          torch.tensor([len(y) - 1]))[0], y)
        lm = _teacher_forced(elm(y[None, :-1], None)[0], y)
        il = _teacher_forced(ilm.scorer(y[None, :-1])[0], y)
    assert math.isclose(float(best.scores["decoder"]), dec, abs_tol=1e-4)
    assert math.isclose(float(best.scores["lm"]), lm, abs_tol=1e-4)
    assert math.isclose(float(best.scores["ilm"]), il, abs_tol=1e-4)
    assert math.isclose(float(best.score), dec + 0.4 * lm - 0.3 * il, abs_tol=1e-4)


def test_context_learner_checkpoint_and_loading(ilm_exp):
    from espnet_ext.lm.ilm_context import load_context_learner

    state = torch.load(ilm_exp["ctx_las"], map_location="cpu")
    assert state and all(k.startswith("learner.") for k in state)  # ASR decoder not saved
    learner, tokens = load_context_learner(None, ilm_exp["ctx_las"])
    assert tokens == TOKENS
    conf = yaml.safe_load((ilm_exp["ctx_las"].parent / "config.yaml").read_text())
    assert conf["learner_conf"]["context_shape"] == list(learner.context_shape)
    reporter = torch.load(ilm_exp["ctx_las"].parent / "checkpoint.pth", map_location="cpu",
                          weights_only=False)["reporter"]
    assert {"loss", "acc", "ppl"} <= set(reporter["stats"][1]["valid"])


def test_ilm_perplexity_tool(ilm_exp, capsys):
    from espnet_ext.bin.ilm_perplexity import main

    r, p = ilm_exp["root"], ilm_exp["paths"]
    rows = main(["--text", str(p["valid_text"]), "--token_list", str(p["token_list"]),
                 "--asr_train_config", str(ilm_exp["las"][0]),
                 "--asr_model_file", str(ilm_exp["las"][1]),
                 "--ilm", "ILME-Z=zero", "--ilm", f"ILME-L=label_ctx:{ilm_exp['ctx_las']}",
                 "--ilm", f"DR-2gram=dr_2gram:{r / 'bigram' / 'lm.arpa'}",
                 "--ilm", f"DR-KD-L=dr_kd:{r / 'drkd_las_l' / 'valid.loss.ave.pth'}",
                 "--output_dir", str(r / "ppl")])
    by_name = {row["name"]: row for row in rows}
    assert set(by_name) == {"ASR decoder (all)", "ILME-Z", "ILME-L", "DR-2gram", "DR-KD-L"}
    for name in ("ILME-Z", "ILME-L", "DR-2gram", "DR-KD-L"):
        assert 1.0 < by_name[name]["ppl"]["valid"] < 1e4
    assert by_name["ILME-Z"]["ilm_params"] < by_name["ASR decoder (all)"]["ilm_params"]
    assert by_name["ILME-L"]["ilm_params"] > by_name["ILME-Z"]["ilm_params"]
    assert "| ILME-Z | zero |" in capsys.readouterr().out
    assert (r / "ppl" / "perplexity.md").exists()


def test_token_list_mismatch_is_a_clear_error(ilm_exp, tmp_path):
    from espnet2.tasks.asr import ASRTask

    from espnet_ext.lm.fusion import load_ilm

    asr, _ = ASRTask.build_model_from_file(*map(str, ilm_exp["cif"]))
    other = tmp_path / "other.arpa"
    uni, bow, bi, _ = estimate_bigram_kn([[2, 3]], V + 1, V)
    write_arpa(other, TOKENS[:-1] + ["g", "<sos/eos>"], uni, bow, bi)
    with pytest.raises(ValueError, match="not in token list"):
        load_ilm("dr_2gram", asr, str(other))
    conf = yaml.safe_load((ilm_exp["root"] / "drkd_cif_z" / "config.yaml").read_text())
    conf["token_list"][7] = "x"  # same size, one token renamed
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(conf))
    with pytest.raises(ValueError, match="token list differs"):
        load_ilm("dr_kd", asr, str(ilm_exp["root"] / "drkd_cif_z" / "valid.loss.ave.pth"),
                 str(tmp_path / "config.yaml"))


def _decode_args(exp, model, out, *extra):
    p = exp["paths"]
    config, model_file = exp[model]
    return ["--asr_train_config", str(config), "--asr_model_file", str(model_file),
            "--data_path_and_name_and_type", f"{p['valid_feats_scp']},speech,kaldi_ark",
            "--beam_size", "3", "--batch_size", "3", "--output_dir", str(out), *extra]


def _ilm_flags(exp, kind, model="cif"):
    r = exp["root"]
    return {"zero": ["--ilm_type", "zero"],
            "label_ctx": ["--ilm_type", "label_ctx", "--ilm_file", str(exp[f"ctx_{model}"])],
            "dr": ["--ilm_type", "dr", "--ilm_file", str(r / "drlm" / "valid.loss.ave.pth")],
            "dr_2gram": ["--ilm_type", "dr_2gram", "--ilm_file", str(r / "bigram" / "lm.arpa")],
            "dr_kd": ["--ilm_type", "dr_kd",
                      "--ilm_file", str(r / "drkd_cif_z" / "valid.loss.ave.pth")]}[kind]


@pytest.mark.parametrize("kind", ["zero", "label_ctx", "dr", "dr_2gram", "dr_kd"])
def test_asr_inference_with_each_ilm_type(ilm_exp, kind):
    """``espnet_ext.bin.asr_inference --ilm_type ... --ilm_weight 0.3`` on the CIF model:
    the ILM enters the beam search with weight -0.3 next to the ELM, every utterance decoded."""
    from espnet_ext.bin.asr_inference import main

    out = ilm_exp["root"] / f"decode_{kind}"
    elm = ilm_exp["root"] / "drkd_las_l"
    main(_decode_args(ilm_exp, "cif", out, "--lm_train_config", str(elm / "config.yaml"),
                      "--lm_file", str(elm / "valid.loss.ave.pth"), "--lm_weight", "0.3",
                      "--ilm_weight", "0.3", *_ilm_flags(ilm_exp, kind)))
    log = (out / "decode.log").read_text()
    assert "ilm x -0.3" in log and "lm x 0.3" in log
    ref = ilm_exp["paths"]["valid_text"].read_text().split("\n")
    hyp = (out / "1best_recog" / "score").read_text().splitlines()
    assert len(hyp) == len([r for r in ref if r.strip()])
    assert all(math.isfinite(float(line.split()[1])) for line in hyp)


def test_las_free_length_decoding_with_ilme_l(ilm_exp):
    from espnet_ext.bin.asr_inference import main

    out = ilm_exp["root"] / "decode_las_l"
    main(_decode_args(ilm_exp, "las", out, "--maxlenratio", "-8", "--ilm_weight", "0.2",
                      *_ilm_flags(ilm_exp, "label_ctx", model="las")))
    assert "ilm x -0.2" in (out / "decode.log").read_text()
    assert len((out / "1best_recog" / "text").read_text().splitlines()) == 4


def test_tune_fusion_grid(ilm_exp):
    from espnet_ext.bin.tune_fusion import main

    out = ilm_exp["root"] / "tune"
    r = ilm_exp["root"]
    summary = main(_decode_args(ilm_exp, "cif", out, "--lm_train_config",
                                str(r / "drlm" / "config.yaml"), "--lm_file",
                                str(r / "drlm" / "valid.loss.ave.pth"),
                                *_ilm_flags(ilm_exp, "dr_kd"),
                                "--ref_text", str(ilm_exp["paths"]["valid_text"]),
                                "--ilm_weights", "0,0.5", "--lm_weights", "0.5"))
    assert len(summary["grid"]) == 2
    best = summary["best"]
    assert best["err"] == min(c["err"] for c in summary["grid"])
    assert (out / "heatmap.png").stat().st_size > 1000
    assert (out / "best.sh").read_text() == (f"ilm_weight={best['ilm_weight']:g}\n"
                                             f"lm_weight={best['lm_weight']:g}\n")
    assert (out / "ilm0.5_lm0.5" / "score_cer" / "result.txt").exists()  # real sclite ran
    assert "ilm x -0.5" in (out / "ilm0.5_lm0.5" / "decode.log").read_text()
    scorers_line = (out / "ilm0_lm0.5" / "decode.log").read_text().split("scorers:")[1]
    assert "lm x 0.5" in scorers_line.splitlines()[0] and "ilm" not in scorers_line.splitlines()[0]
    assert "| 0.5 |" in (out / "grid.md").read_text()
