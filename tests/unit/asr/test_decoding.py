"""Utterance-batched beam search and the batched inference entry point.

Real ESPnet models trained for one epoch in-process (tiny CIF model, tiny transformer AED, tiny
LSTM LM) and real ESPnet searches as references. Models trained for one epoch emit <eos> almost
at once, so the free-length tests lower the <eos> output bias of the AED (saved as a checkpoint for
the entry point) to get long, varied hypotheses.
"""
import argparse
import math
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import torch
import yaml
from tiny_asr_data import asr_data_args, make_tiny_asr_data

REPO = Path(__file__).resolve().parents[3]
CIF_CONF = REPO / "conf" / "train_asr_cif_tiny.yaml"
DECODE_CONF = REPO / "conf" / "decode_cif.yaml"
AED_CONF = dict(
    encoder="transformer",
    encoder_conf=dict(output_size=16, attention_heads=2, linear_units=32, num_blocks=1,
                      input_layer="conv2d"),
    decoder="transformer",
    decoder_conf=dict(attention_heads=2, linear_units=32, num_blocks=2),
    model_conf=dict(ctc_weight=0.3),
    batch_type="folded", batch_size=4, fold_length=[1000, 100], max_epoch=1, seed=1, num_workers=0,
    num_att_plot=0,
    use_tensorboard=False, use_matplotlib=False,
)
LM_CONF = dict(lm="seq_rnn", lm_conf=dict(unit=16, nlayers=1), batch_type="unsorted", batch_size=4,
               max_epoch=1, seed=1, num_workers=0, use_tensorboard=False, use_matplotlib=False)
EOS_BIAS_SHIFT = 2.0  # makes the 1-epoch AED produce long hypotheses


# ---------------------------------------------------------------------------------------------
# fixtures (one session: importing espnet2.tasks.asr costs ~20 s)
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def tasks():
    from espnet2.tasks.asr import ASRTask
    from espnet2.tasks.lm import LMTask

    from espnet_ext.tasks.cif_asr import CIFASRTask

    return argparse.Namespace(asr=ASRTask, cif=CIFASRTask, lm=LMTask)


@pytest.fixture(scope="session")
def data(tmp_path_factory):
    """Tiny train/valid data plus a decode set: the valid utterances, some train ones and a
    7-frame utterance (no encoder frame after 8x subsampling, so CIF fires nothing)."""
    root = tmp_path_factory.mktemp("decode_data")
    paths = make_tiny_asr_data(root, n_utts=8, feat_dim=20, seed=0)
    feats = {**kaldiio.load_scp(str(paths["valid_feats_scp"])),
             **{k: v for k, v in list(kaldiio.load_scp(str(paths["train_feats_scp"])).items())[:3]}}
    feats = {k: np.asarray(v) for k, v in feats.items()}
    feats["zz_short"] = np.random.default_rng(0).standard_normal((7, 20)).astype(np.float32)
    d = root / "decode"
    d.mkdir()
    with kaldiio.WriteHelper(f"ark,scp:{d / 'feats.ark'},{d / 'feats.scp'}") as writer:
        for k in sorted(feats):
            writer(k, feats[k])
    paths["decode_scp"] = d / "feats.scp"
    paths["decode_keys"] = sorted(feats)
    paths["decode_frames"] = sum(len(v) for v in feats.values())
    return paths


def _write_yaml(path: Path, conf: dict) -> Path:
    path.write_text(yaml.safe_dump(conf))
    return path


@pytest.fixture(scope="session")
def cif_exp(tasks, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("cif_exp")
    tasks.cif.main(cmd=["--config", str(CIF_CONF), "--output_dir", str(out), "--max_epoch", "1"]
                   + asr_data_args(data))
    return out


@pytest.fixture(scope="session")
def aed_exp(tasks, data, tmp_path_factory):
    """Transformer AED, 1 epoch; ``eos_shifted.pth`` has the <eos> output bias lowered."""
    out = tmp_path_factory.mktemp("aed_exp")
    conf = _write_yaml(out.parent / "aed.yaml", AED_CONF)
    tasks.asr.main(cmd=["--config", str(conf), "--output_dir", str(out)] + asr_data_args(data))
    state = torch.load(out / "1epoch.pth", map_location="cpu")
    eos = len(data["token_list"].read_text().split()) - 1
    state["decoder.output_layer.bias"][eos] -= EOS_BIAS_SHIFT
    torch.save(state, out / "eos_shifted.pth")
    return out


@pytest.fixture(scope="session")
def lm_exp(tasks, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("lm_exp")
    conf = _write_yaml(out.parent / "lm.yaml", LM_CONF)
    text, shape = data["train_text"], data["train_text_shape"]
    tasks.lm.main(cmd=["--config", str(conf), "--output_dir", str(out), "--token_type", "char",
                       "--token_list", str(data["token_list"]),
                       "--train_data_path_and_name_and_type", f"{text},text,text",
                       "--valid_data_path_and_name_and_type", f"{text},text,text",
                       "--train_shape_file", str(shape), "--valid_shape_file", str(shape)])
    return out


def _decode_cmd(exp: Path, data, out: Path, model="1epoch.pth", *extra):
    return ["--asr_train_config", str(exp / "config.yaml"), "--asr_model_file", str(exp / model),
            "--data_path_and_name_and_type", f"{data['decode_scp']},speech,kaldi_ark",
            "--output_dir", str(out)] + list(extra)


def _read(out: Path, name: str):
    return (out / "1best_recog" / name).read_text().splitlines()


def _s2t(exp, data, tmp_path, model="1epoch.pth", *extra):
    from espnet_ext.bin.asr_inference import BatchSpeech2Text, get_parser

    args = get_parser().parse_args(_decode_cmd(exp, data, tmp_path, model, *extra))
    return BatchSpeech2Text(args)


def _batch(data, keys):
    feats = kaldiio.load_scp(str(data["decode_scp"]))
    xs = [torch.tensor(np.asarray(feats[k])) for k in keys]
    return torch.nn.utils.rnn.pad_sequence(xs, batch_first=True), torch.tensor([len(x) for x in xs])


# ---------------------------------------------------------------------------------------------
# search mechanics
# ---------------------------------------------------------------------------------------------
def test_topk_breaks_ties_by_lower_index():
    from espnet_ext.asr.utterance_batch_beam_search import topk_deterministic

    scores = torch.tensor([[0.0, 1.0, 1.0, 1.0, -math.inf], [2.0, 2.0, 2.0, 3.0, 2.0]])
    vals, idx = topk_deterministic(scores, 3)
    assert idx.tolist() == [[1, 2, 3], [3, 0, 1]]
    assert vals.tolist() == [[1.0, 1.0, 1.0], [3.0, 2.0, 2.0]]
    vals, idx = topk_deterministic(torch.full((1, 4), -math.inf), 2)  # all impossible
    assert idx.tolist() == [[0, 1]]
    with pytest.raises(FloatingPointError):
        topk_deterministic(torch.tensor([[0.0, math.nan]]), 1)


def test_negative_weight_on_minus_inf_scores_stays_finite(tasks):
    """A scorer with -inf log-probs under a negative weight: clamped, so no +inf/NaN, and the
    masked token gets the finite bonus -w * floor instead of winning with +inf."""
    from espnet.nets.scorer_interface import BatchScorerInterface
    from espnet2.lm.seq_rnn_lm import SequentialRNNLM

    from espnet_ext.asr.utterance_batch_beam_search import UtteranceBatchBeamSearch

    class MaskedLM(SequentialRNNLM):
        """ESPnet LSTM LM whose token 3 has probability 0."""

        def batch_score(self, ys, states, xs):
            logp, states = super().batch_score(ys, states, xs)
            return logp.index_fill(1, torch.tensor([3]), -math.inf), states

    torch.manual_seed(0)
    V = 8
    lm, masked = SequentialRNNLM(V, unit=8).eval(), MaskedLM(V, unit=8).eval()
    assert isinstance(masked, BatchScorerInterface)
    search = UtteranceBatchBeamSearch({"lm": lm, "ilm": masked}, {"lm": 1.0, "ilm": -0.5},
                                      beam_size=3, vocab_size=V, sos=V - 1, eos=V - 1)
    xs, xlens = torch.zeros(2, 4, 1), torch.tensor([4, 2])
    hyps = search(xs, xlens, fixed_lengths=torch.tensor([4, 2]), nbest=3)
    for per_utt, n in zip(hyps, [4, 2]):
        assert len(per_utt) == 3
        for h in per_utt:
            assert math.isfinite(float(h.score)) and len(h.yseq) == n + 2
            assert math.isclose(float(h.score), float(h.scores["lm"]) - 0.5 * float(h.scores["ilm"]),
                                rel_tol=1e-5, abs_tol=1e-4)
    # the clamped -inf makes token 3 attractive (-0.5 * -1e4), deterministically, never NaN
    assert all(t == 3 for t in hyps[0][0].yseq[1:-1].tolist())


def test_fixed_length_zero_gives_scored_eos_only(tasks):
    from espnet2.lm.seq_rnn_lm import SequentialRNNLM

    from espnet_ext.asr.utterance_batch_beam_search import UtteranceBatchBeamSearch

    torch.manual_seed(0)
    lm = SequentialRNNLM(6, unit=8).eval()
    search = UtteranceBatchBeamSearch({"lm": lm}, {"lm": 1.0}, beam_size=4, vocab_size=6, sos=5, eos=5)
    hyps = search(torch.zeros(3, 3, 1), torch.tensor([3, 0, 2]), fixed_lengths=torch.tensor([3, 0, 2]),
                  nbest=4)
    assert [len(h) for h in hyps] == [4, 1, 4]  # N=0: one hypothesis, [sos, eos]
    empty = hyps[1][0]
    assert empty.yseq.tolist() == [5, 5]
    first_eos = lm.batch_score(torch.tensor([[5]]), [None], None)[0][0, 5]
    assert torch.isclose(empty.score, first_eos)  # the EOS step was scored


# ---------------------------------------------------------------------------------------------
# free length: stock ESPnet attention encoder-decoders
# ---------------------------------------------------------------------------------------------
def _per_utt_encodings(model, speech, lengths):
    with torch.no_grad():
        return [model.encode(speech[b:b + 1, : int(lengths[b])], lengths[b:b + 1])[0][0]
                for b in range(speech.size(0))]


def _compare_with_espnet(model, espnet_search, encs, beam, maxlenratio=0.0):
    from espnet_ext.asr.utterance_batch_beam_search import UtteranceBatchBeamSearch

    V = len(model.token_list)
    ours = UtteranceBatchBeamSearch({"decoder": model.decoder}, {"decoder": 1.0}, beam, V,
                                    model.sos, model.eos).eval()
    xs = torch.nn.utils.rnn.pad_sequence(encs, batch_first=True)
    xlens = torch.tensor([len(e) for e in encs])
    batched = ours(xs, xlens, maxlenratio=maxlenratio)
    lengths = []
    for b, enc in enumerate(encs):
        with torch.no_grad():
            ref = espnet_search(enc, maxlenratio=maxlenratio)[0]
        alone = ours(enc[None], xlens[b:b + 1], maxlenratio=maxlenratio)[0][0]
        assert batched[b][0].yseq.tolist() == alone.yseq.tolist() == ref.yseq.tolist(), b
        assert math.isclose(float(batched[b][0].score), float(ref.score), rel_tol=1e-4, abs_tol=1e-4)
        lengths.append(len(ref.yseq))
    return lengths


def test_transformer_aed_batched_equals_espnet_per_utterance(tasks, aed_exp, data):
    """Same 1-best as ESPnet's BatchBeamSearch (one utterance at a time) and as our search with
    one utterance, for utterances of different encoder lengths decoded together."""
    from espnet.nets.batch_beam_search import BatchBeamSearch

    model, _ = tasks.asr.build_model_from_file(aed_exp / "config.yaml", aed_exp / "eos_shifted.pth", "cpu")
    model.eval()
    speech, lengths = _batch(data, data["decode_keys"][:-1])
    encs = _per_utt_encodings(model, speech, lengths)
    assert len({len(e) for e in encs}) > 2
    beam = 4
    espnet = BatchBeamSearch(scorers={"decoder": model.decoder}, weights={"decoder": 1.0},
                             beam_size=beam, vocab_size=len(model.token_list), sos=model.sos,
                             eos=model.eos, pre_beam_score_key="full").eval()
    out_lengths = _compare_with_espnet(model, espnet, encs, beam)
    assert len(set(out_lengths)) > 1  # hypotheses of different lengths, some ended by <eos>


def test_rnn_decoder_per_hypothesis_scoring_equals_espnet(tasks, data):
    """Non-batch scorers (espnet2 RNNDecoder, the LAS baseline) go through per-hypothesis scoring
    with each utterance's own encoder output: same 1-best as ESPnet's BeamSearch."""
    from espnet.nets.beam_search import BeamSearch

    args = tasks.asr.get_parser().parse_args(
        ["--config", str(REPO / "conf" / "train_las_tiny.yaml"), "--output_dir", "unused"]
        + asr_data_args(data))
    torch.manual_seed(0)
    model = tasks.asr.build_model(args).eval()
    with torch.no_grad():
        model.decoder.output.bias[model.eos] -= EOS_BIAS_SHIFT
    speech, lengths = _batch(data, data["decode_keys"][:4])
    encs = _per_utt_encodings(model, speech, lengths)
    beam = 3
    espnet = BeamSearch(scorers={"decoder": model.decoder}, weights={"decoder": 1.0}, beam_size=beam,
                        vocab_size=len(model.token_list), sos=model.sos, eos=model.eos,
                        pre_beam_score_key="full").eval()
    _compare_with_espnet(model, espnet, encs, beam, maxlenratio=0.5)


def test_entry_point_aed_batched_equals_per_utterance(tasks, aed_exp, data, tmp_path):
    from espnet_ext.bin.asr_inference import main

    outs = {}
    for bs in (1, 4):
        outs[bs] = tmp_path / f"bs{bs}"
        main(_decode_cmd(aed_exp, data, outs[bs], "eos_shifted.pth", "--batch_size", str(bs),
                         "--beam_size", "3"))
    for name in ("token_int", "token", "text"):
        assert _read(outs[1], name) == _read(outs[4], name)
    assert len({len(line.split()) for line in _read(outs[4], "token_int")}) > 1
    for a, b in zip(_read(outs[1], "score"), _read(outs[4], "score")):
        assert a.split()[0] == b.split()[0]
        assert math.isclose(float(a.split()[1]), float(b.split()[1]), rel_tol=1e-4, abs_tol=1e-4)


# ---------------------------------------------------------------------------------------------
# fixed length: the CIF model
# ---------------------------------------------------------------------------------------------
def test_cif_decoding_fires_exact_lengths_and_is_batch_invariant(cif_exp, data, tmp_path):
    s2t = _s2t(cif_exp, data, tmp_path, "1epoch.pth", "--beam_size", "4", "--nbest", "2")
    assert s2t.fixed_length
    keys = data["decode_keys"]
    speech, lengths = _batch(data, keys)
    with torch.no_grad():  # fire counts straight from the model, one utterance at a time
        n_fired = {k: int(s2t.asr_model.cif_encode(speech[b:b + 1, : int(lengths[b])],
                                                   lengths[b:b + 1])[0].lengths[0])
                   for b, k in enumerate(keys)}
    assert n_fired["zz_short"] == 0 and len(set(n_fired.values())) > 2
    batched = dict(zip(keys, s2t(speech, lengths)))
    eos = s2t.asr_model.eos
    for b, k in enumerate(keys):
        alone = s2t(speech[b:b + 1, : int(lengths[b])], lengths[b:b + 1])[0]
        assert [r[3].yseq.tolist() for r in alone] == [r[3].yseq.tolist() for r in batched[k]], k
        for text, token, token_int, hyp in batched[k]:
            yseq = hyp.yseq.tolist()
            # Training aligns the (L+1)-th integrated vector with <eos>: N fires are N decoder
            # steps, N - 1 tokens then <eos> (N = 0: <eos> alone), plus <sos> in front.
            assert len(yseq) == max(n_fired[k], 1) + 1, (k, n_fired[k], yseq)
            assert yseq[-1] == eos and eos not in yseq[1:-1]
            assert math.isfinite(float(hyp.score)) and float(hyp.scores["decoder"]) < 0
    empty = batched["zz_short"]
    assert len(empty) == 1 and empty[0][2] == [] and empty[0][0] == ""


def test_cif_matches_espnet_beam_search_with_a_length_forcing_scorer(tasks, cif_exp, data, tmp_path):
    """Independent reference: ESPnet's BatchBeamSearch per utterance over the N integrated vectors
    with a scorer that forbids <eos> before step N - 1 and forces it there (the step training
    aligns with <eos>)."""
    from espnet.nets.batch_beam_search import BatchBeamSearch

    from espnet_ext.asr.length_forcing_scorer import LengthForcingScorer

    s2t = _s2t(cif_exp, data, tmp_path, "1epoch.pth", "--beam_size", "3")
    model = s2t.asr_model
    keys = data["decode_keys"]
    speech, lengths = _batch(data, keys)
    batched = s2t(speech, lengths)
    xs, n_fired, _ = s2t.encode(speech, lengths)
    V = len(model.token_list)
    for b in range(len(keys)):
        n = int(n_fired[b])
        search = BatchBeamSearch(scorers={"decoder": model.decoder,
                                          "len": LengthForcingScorer(max(n - 1, 0), V, model.eos)},
                                 weights={"decoder": 1.0, "len": 1.0}, beam_size=3, vocab_size=V,
                                 sos=model.sos, eos=model.eos, pre_beam_score_key="full").eval()
        with torch.no_grad():
            ref = search(xs[b, : max(n, 1)], maxlenratio=-(n + 2))[0]
        assert batched[b][0][3].yseq.tolist() == ref.yseq.tolist(), keys[b]
        assert math.isclose(float(batched[b][0][3].score), float(ref.score), rel_tol=1e-4, abs_tol=1e-4)


def test_entry_point_writes_espnet_layout_for_cif(cif_exp, data, tmp_path):
    """The model is rebuilt from config.yaml + checkpoint; files sorted, every utterance present,
    plain-float scores, the speed line in the log; batch 1 gives the same files."""
    from espnet_ext.bin.asr_inference import main

    out = tmp_path / "bs16"
    speed = main(_decode_cmd(cif_exp, data, out, "1epoch.pth", "--config", str(DECODE_CONF)))
    keys = data["decode_keys"]
    tokens = set(data["token_list"].read_text().split())
    for name in ("text", "token", "token_int", "score"):
        assert [line.split(maxsplit=1)[0] for line in _read(out, name)] == keys, name
    scores = dict(line.split() for line in _read(out, "score"))
    assert all(math.isfinite(float(v)) for v in scores.values())
    for line in _read(out, "token"):
        assert set(line.split()[1:]) <= tokens
    assert _read(out, "token_int")[keys.index("zz_short")] == "zz_short "
    assert math.isclose(speed["audio_seconds"], data["decode_frames"] * 0.01)
    assert speed["rtf"] > 0 and "RTF" in (out / "decode.log").read_text()

    out1 = tmp_path / "bs1"
    main(_decode_cmd(cif_exp, data, out1, "1epoch.pth", "--config", str(DECODE_CONF), "--batch_size", "1"))
    for name in ("token_int", "text"):
        assert _read(out1, name) == _read(out, name)


def test_lm_weight_zero_equals_no_lm(cif_exp, lm_exp, data, tmp_path):
    from espnet_ext.bin.asr_inference import main

    lm = ["--lm_train_config", str(lm_exp / "config.yaml"), "--lm_file", str(lm_exp / "1epoch.pth")]
    runs = {"none": [], "w0": lm + ["--lm_weight", "0"], "w1": lm + ["--lm_weight", "1.0"]}
    for tag, extra in runs.items():
        main(_decode_cmd(cif_exp, data, tmp_path / tag, "1epoch.pth", "--beam_size", "3", *extra))
    for name in ("token_int", "score"):
        assert _read(tmp_path / "none", name) == _read(tmp_path / "w0", name)
    # the LM is really fused when its weight is not zero: every score changes
    s_none = [float(x.split()[1]) for x in _read(tmp_path / "none", "score")]
    s_w1 = [float(x.split()[1]) for x in _read(tmp_path / "w1", "score")]
    assert all(a != b for a, b in zip(s_none, s_w1))


def test_lm_scorer_is_fused_with_its_weight(cif_exp, lm_exp, data, tmp_path):
    s2t = _s2t(cif_exp, data, tmp_path, "1epoch.pth", "--beam_size", "3", "--lm_weight", "0.7",
               "--lm_train_config", str(lm_exp / "config.yaml"), "--lm_file", str(lm_exp / "1epoch.pth"))
    assert s2t.beam_search.weights == {"decoder": 1.0, "lm": 0.7}
    speech, lengths = _batch(data, data["decode_keys"][:3])
    for (_, _, _, hyp), in s2t(speech, lengths):
        expected = float(hyp.scores["decoder"]) + 0.7 * float(hyp.scores["lm"])
        assert math.isclose(float(hyp.score), expected, rel_tol=1e-5, abs_tol=1e-4)


def test_bad_options_are_clear_errors(cif_exp, aed_exp, data, tmp_path):
    with pytest.raises(ValueError, match="ctc_weight"):
        _s2t(cif_exp, data, tmp_path, "1epoch.pth", "--ctc_weight", "0.3")
    with pytest.raises(ValueError, match="tail_threshold"):
        _s2t(aed_exp, data, tmp_path, "1epoch.pth", "--tail_threshold", "0.5")
    from espnet_ext.bin.asr_inference import main

    keys = tmp_path / "keys"
    keys.write_text("no_such_utt\n")
    with pytest.raises(KeyError, match="no_such_utt"):
        main(_decode_cmd(cif_exp, data, tmp_path / "o", "1epoch.pth", "--key_file", str(keys)))


def test_padding_exact_encoding_claim_holds(tasks, data):
    """``auto`` encoder batching trusts padding_exact_encoding: check it against real encodings
    (CIF model with mean-only utterance_mvn: exact; utterance_mvn with norm_vars: detected as not
    exact, and indeed padding-dependent)."""
    from espnet_ext.bin.asr_inference import padding_exact_encoding

    keys = data["decode_keys"][:-1]
    speech, lengths = _batch(data, keys)
    for norm_vars, exact in (("false", True), ("true", False)):
        args = tasks.cif.get_parser().parse_args(
            ["--config", str(CIF_CONF), "--output_dir", "unused", "--normalize", "utterance_mvn",
             "--normalize_conf", f"norm_vars={norm_vars}"] + asr_data_args(data))
        torch.manual_seed(0)
        model = tasks.cif.build_model(args).eval()
        assert padding_exact_encoding(model) is exact
        with torch.no_grad():
            cif_b, _, _ = model.cif_encode(speech, lengths)
            diffs = []
            for b in range(len(keys)):
                cif_1, _, _ = model.cif_encode(speech[b:b + 1, : int(lengths[b])], lengths[b:b + 1])
                n = int(cif_1.lengths[0])
                assert not exact or int(cif_b.lengths[b]) == n
                diffs.append(float((cif_b.outputs[b, :n] - cif_1.outputs[0, :n]).abs().max()) if n else 0.0)
        assert (max(diffs) < 1e-4) is exact, diffs


@pytest.mark.parametrize("kind", ["aed", "cif"])
def test_cached_decoders_equal_their_own_batch_score(tasks, aed_exp, cif_exp, data, tmp_path, kind):
    """The incremental (cached key/value) decoder step gives the decoder's own batch_score
    results: same n-best and scores with ``cached_scorers`` on and off."""
    from espnet_ext.asr.incremental_decoding import (
        CachedCIFDecoderScorer,
        CachedTransformerDecoderScorer,
        step_scorer,
    )
    from espnet_ext.asr.utterance_batch_beam_search import UtteranceBatchBeamSearch

    exp, model_file = (aed_exp, "eos_shifted.pth") if kind == "aed" else (cif_exp, "1epoch.pth")
    s2t = _s2t(exp, data, tmp_path, model_file)
    model = s2t.asr_model
    expected = CachedTransformerDecoderScorer if kind == "aed" else CachedCIFDecoderScorer
    assert isinstance(step_scorer(model.decoder), expected)
    speech, lengths = _batch(data, data["decode_keys"])
    xs, xlens, fixed = s2t.encode(speech, lengths)
    out = {}
    for cached in (True, False):
        search = UtteranceBatchBeamSearch({"decoder": model.decoder}, {"decoder": 1.0}, 4,
                                          len(model.token_list), model.sos, model.eos,
                                          cached_scorers=cached)
        out[cached] = search(xs, xlens, fixed_lengths=fixed, maxlenratio=0.5, nbest=4)
    for hyps_c, hyps_u in zip(out[True], out[False]):
        assert [h.yseq.tolist() for h in hyps_c] == [h.yseq.tolist() for h in hyps_u]
        for hc, hu in zip(hyps_c, hyps_u):
            assert math.isclose(float(hc.score), float(hu.score), rel_tol=1e-5, abs_tol=1e-4)


def test_transformer_lm_fusion_is_batch_invariant(cif_exp, data, tmp_path):
    """Shallow fusion with an ESPnet TransformerLM (list-state scorer next to the cached CIF
    decoder): batched and per-utterance n-best equal, score = decoder + w * LM."""
    from espnet2.lm.transformer_lm import TransformerLM

    from espnet_ext.asr.utterance_batch_beam_search import UtteranceBatchBeamSearch

    s2t = _s2t(cif_exp, data, tmp_path, "1epoch.pth")
    model = s2t.asr_model
    torch.manual_seed(0)
    lm = TransformerLM(len(model.token_list), pos_enc=None, embed_unit=16, att_unit=16, head=2,
                       unit=32, layer=2).eval()
    search = UtteranceBatchBeamSearch({"decoder": model.decoder, "lm": lm}, {"decoder": 1.0, "lm": 0.5},
                                      4, len(model.token_list), model.sos, model.eos).eval()
    speech, lengths = _batch(data, data["decode_keys"])
    xs, xlens, fixed = s2t.encode(speech, lengths)
    batched = search(xs, xlens, fixed_lengths=fixed, nbest=3)
    for b in range(len(lengths)):
        n = int(xlens[b])
        alone = search(xs[b:b + 1, :n], xlens[b:b + 1], fixed_lengths=fixed[b:b + 1], nbest=3)[0]
        assert [h.yseq.tolist() for h in alone] == [h.yseq.tolist() for h in batched[b]]
        for h in batched[b]:
            expected = float(h.scores["decoder"]) + 0.5 * float(h.scores["lm"])
            assert math.isclose(float(h.score), expected, rel_tol=1e-5, abs_tol=1e-4)
