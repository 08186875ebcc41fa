"""CIF ASR model: modules, losses, part options, ESPnet training/resume/rebuild, size.

Everything runs in-process with real ESPnet components. One tiny training run (2 epochs, resumed
after the first) is shared by the training, resume and rebuild tests.
"""
import copy
import hashlib
import math
from pathlib import Path
from types import SimpleNamespace

import kaldiio
import numpy as np
import pytest
import torch
from tiny_asr_data import asr_data_args, make_tiny_asr_data

REPO = Path(__file__).resolve().parents[3]
TINY_CONF = REPO / "conf" / "train_asr_cif_tiny.yaml"
# The official AISHELL-1 baseline's parameter count, as its training log prints it
# (docs/differences.md, "Reference implementation").
REFERENCE_PARAMS = 47_208_587


def cif_model_params(V, d, ffn=2048, blocks=15, kernel=15, fe_channels=128,
                     n_mels=80, cif_channels=None, dec_blocks=2, dec_ffn=2048):
    """Parameters of the CIF model by hand, module by module (the reference's architecture:
    docs/differences.md). Returns {encoder, predictor, ctc, decoder}."""
    def lin(i, o, bias=True):
        return i * o + (o if bias else 0)

    ln = 2 * d
    cif_channels = cif_channels or d
    # front-end: Conv2d(1->C, 3x3) + Linear(C * floor((80-1)/2) -> d) + Linear(d -> d)
    frontend = fe_channels * 9 + fe_channels + lin(fe_channels * ((n_mels - 1) // 2), d) + lin(d, d)
    ffn_module = lin(d, ffn) + lin(ffn, d)
    # rel-pos MHSA: q, k, v, out with bias; linear_pos without; pos_bias_u and pos_bias_v
    mhsa = 4 * lin(d, d) + lin(d, d, bias=False) + 2 * d
    # conv module without biases: pointwise d->2d, depthwise k, BatchNorm (2d), pointwise d->d
    conv = lin(d, 2 * d, False) + d * kernel + 2 * d + lin(d, d, False)
    block = 2 * ffn_module + mhsa + conv + 5 * ln  # macaron FFN x2, 5 LayerNorms
    # CIF weights: Conv1d(d -> cif_channels, k 3) + Linear(cif_channels -> 1)
    predictor = d * cif_channels * 3 + cif_channels + lin(cif_channels, 1)
    ctc = lin(d, V)
    # decoder: embedding, W_in [emb; c] -> d (no bias), pre-LN self-attention + FFN blocks (no
    # cross-attention), final LN, W_out [state; c] -> d (no bias), vocabulary projection (no bias)
    dec_block = 4 * lin(d, d) + lin(d, dec_ffn) + lin(dec_ffn, d) + 2 * ln
    decoder = V * d + lin(2 * d, d, False) + dec_blocks * dec_block + ln + lin(2 * d, d, False) + lin(d, V, False)
    return dict(encoder=frontend + blocks * block, predictor=predictor, ctc=ctc, decoder=decoder)


def _module_params(model):
    return {name: sum(p.numel() for p in getattr(model, name).parameters())
            for name in ("encoder", "predictor", "ctc", "decoder")}


# ---------------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def cif_task():
    """CIFASRTask (importing espnet2.tasks.asr costs ~20 s, once per session)."""
    from espnet_ext.tasks.cif_asr import CIFASRTask

    return CIFASRTask


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    return make_tiny_asr_data(tmp_path_factory.mktemp("tiny_asr"), n_utts=8, feat_dim=20, plm_dim=16)


def _build(cif_task, data, *extra):
    args = cif_task.get_parser().parse_args(["--config", str(TINY_CONF)] + asr_data_args(data) + list(extra))
    return cif_task.build_model(args)


def _batch(data, split="train", n=4):
    """A padded batch as the ESPnet collate function makes it (-1 text padding)."""
    feats = kaldiio.load_scp(str(data[f"{split}_feats_scp"]))
    tokens = data["token_list"].read_text().split()
    texts = dict(line.split() for line in data[f"{split}_text"].read_text().splitlines())
    keys = sorted(feats)[:n]
    xs = [torch.tensor(feats[k]) for k in keys]
    ys = [torch.tensor([tokens.index(ch) for ch in texts[k]]) for k in keys]
    return dict(
        speech=torch.nn.utils.rnn.pad_sequence(xs, batch_first=True),
        speech_lengths=torch.tensor([len(x) for x in xs]),
        text=torch.nn.utils.rnn.pad_sequence(ys, batch_first=True, padding_value=-1),
        text_lengths=torch.tensor([len(y) for y in ys]),
        utt_id=keys,
    )


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


#: Non-default predictor settings (an architecture one and a decoding one) and a distiller for the
#: shared training run, so that rebuilding it exercises both.
RUN_PARTS = ["--predictor_conf", "conv_channels=24", "--predictor_conf", "tail_threshold=0.45",
             "--distiller", "lrd", "--distiller_conf", "teacher_dim=16"]


@pytest.fixture(scope="session")
def tiny_run(cif_task, tiny_data, tmp_path_factory):
    """Train 1 epoch, then rerun with --max_epoch 2 and --resume true (same output dir)."""
    out = tmp_path_factory.mktemp("cif_run") / "exp"
    cmd = (["--config", str(TINY_CONF), "--output_dir", str(out), "--resume", "true", *RUN_PARTS]
           + asr_data_args(tiny_data, with_plm=True))
    cif_task.main(cmd=cmd + ["--max_epoch", "1"])
    first = SimpleNamespace(
        reporter=torch.load(out / "checkpoint.pth", weights_only=False)["reporter"],
        epoch1_sha=_sha(out / "1epoch.pth"),
        epoch1_mtime=(out / "1epoch.pth").stat().st_mtime_ns,
    )
    cif_task.main(cmd=cmd + ["--max_epoch", "2"])
    return SimpleNamespace(out=out, first=first)


# ---------------------------------------------------------------------------------------------
# modules
# ---------------------------------------------------------------------------------------------
def _tiny_encoder(**kw):
    from espnet_ext.asr.encoder.conformer_pooling_encoder import ConformerPoolingEncoder

    conf = dict(output_size=32, attention_heads=4, linear_units=64, num_blocks=3,
                frontend_channels=8, cnn_module_kernel=5, pooling_layers=[1, 3])
    conf.update(kw)
    return ConformerPoolingEncoder(20, **conf)


def test_encoder_lengths_masks_and_padding_invariance():
    from espnet_ext.asr.encoder.conformer_pooling_encoder import ConformerPoolingEncoder

    torch.manual_seed(0)
    enc = _tiny_encoder().eval()
    lengths = torch.tensor([103, 80, 51, 8])
    x = torch.randn(4, 103, 20)
    out, out_lens, _ = enc(x, lengths)
    # front-end: floor((T-1)/2); each pooling floors: 103 -> 51 -> 25 -> 12
    expected = [ConformerPoolingEncoder.output_length(int(t), 2) for t in lengths]
    assert expected == [12, 9, 6, 0]
    assert out_lens.tolist() == expected and out.shape == (4, 12, 32)
    for b, n in enumerate(expected):
        assert torch.all(out[b, n:] == 0), "frames beyond the length must be zero"
    # garbage in the padding changes nothing; each utterance alone gives the same frames
    x_noisy = x.clone()
    for b, t in enumerate(lengths):
        x_noisy[b, t:] = 100.0
    out_noisy, _, _ = enc(x_noisy, lengths)
    torch.testing.assert_close(out_noisy, out, atol=1e-5, rtol=1e-5)
    for b, t in enumerate(lengths[:3]):
        alone, alone_lens, _ = enc(x[b: b + 1, :t], lengths[b: b + 1])
        assert alone_lens.item() == expected[b]
        torch.testing.assert_close(alone[0], out[b, : expected[b]], atol=1e-5, rtol=1e-5)

    tiny, tiny_lens, _ = enc(torch.randn(1, 2, 20), torch.tensor([2]))  # shorter than the kernel
    assert tiny_lens.tolist() == [0] and tiny.shape == (1, 0, 32)

    with pytest.raises(ValueError, match="pooling_layers"):
        _tiny_encoder(pooling_layers=[0, 4])


def test_predictor_weights_scaling_and_tail():
    from espnet_ext.asr.cif_predictor import CIFPredictor

    torch.manual_seed(0)
    pred = CIFPredictor(8, dropout_rate=0.2, tail_threshold=0.4)
    hidden = torch.randn(3, 10, 8)
    lengths = torch.tensor([10, 6, 3])
    pred.eval()
    alphas = pred.weights(hidden, lengths)
    assert torch.all(alphas[1, 6:] == 0) and torch.all(alphas[2, 3:] == 0)
    assert torch.all((alphas[0] > 0) & (alphas[0] < 1))
    # padding contents do not leak into the last valid frames' weights
    noisy = hidden.clone()
    noisy[1, 6:] = 50.0
    torch.testing.assert_close(pred.weights(noisy, lengths), alphas)

    pred.train()
    targets = torch.tensor([7, 2, 4])  # L+1 per utterance
    out = pred(hidden, lengths, target_lengths=targets)
    assert out.lengths.tolist() == targets.tolist()
    assert out.outputs.shape == (3, 7, 8)
    torch.testing.assert_close(out.alphas.sum(1), targets.float())
    assert torch.all(out.outputs[1, 2:] == 0)
    assert out.alpha_sum.requires_grad  # unscaled sum feeds the quantity loss

    pred.eval()
    out = pred(hidden, lengths)
    assert torch.equal(out.lengths, pred.count_tokens(out.alpha_sum))


def _tiny_decoder(vocab=11, cif_dim=16):
    from espnet_ext.asr.decoder.cif_decoder import CIFDecoder

    return CIFDecoder(vocab, cif_dim, attention_heads=2, linear_units=32, num_blocks=2)


def test_decoder_batch_score_equals_teacher_forced_forward():
    torch.manual_seed(0)
    dec = _tiny_decoder().eval()
    n_cif = torch.tensor([4, 2, 0])  # the last utterance fired nothing
    xs = torch.randn(3, 4, 16) * (torch.arange(4)[None, :] < n_cif[:, None])[:, :, None]
    ys = torch.randint(0, 11, (3, 6))  # <sos> + 5 tokens: steps beyond N (EOS step included)
    with torch.no_grad():
        logits, olens, states = dec(xs, n_cif, ys, torch.tensor([6, 6, 6]), return_states=True)
        full = torch.log_softmax(logits, -1)
        assert logits.shape == (3, 6, 11) and states.shape == (3, 6, 16)
        torch.testing.assert_close(dec.output_layer(states), logits)
        cache = [None] * 3
        for i in range(6):
            logp, cache = dec.batch_score(ys[:, : i + 1], cache, xs)
            torch.testing.assert_close(logp, full[:, i], atol=1e-5, rtol=1e-5)
            assert len(cache) == 3 and cache[0][0].shape == (i + 1, 16)
        # single-hypothesis scorer on one utterance's own (unpadded) CIF outputs
        state = dec.init_state(xs[1])
        for i in range(4):
            logp, state = dec.score(ys[1, : i + 1], state, xs[1, :2])
            torch.testing.assert_close(logp, full[1, i], atol=1e-5, rtol=1e-5)
        # ILME-Z: zero acoustic input is just another xs
        zeros_full = torch.log_softmax(dec(torch.zeros(3, 0, 16), torch.zeros(3, dtype=torch.long),
                                           ys, torch.tensor([6, 6, 6]))[0], -1)
        logp, _ = dec.batch_score(ys[:, :3], [None] * 3, torch.zeros(3, 5, 16))
        torch.testing.assert_close(logp, zeros_full[:, 2], atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# model
# ---------------------------------------------------------------------------------------------
def test_model_losses_stats_and_training_steps(cif_task, tiny_data):
    from espnet_ext.asr.cif_asr_model import CIFASRModel

    torch.manual_seed(0)
    model = _build(cif_task, tiny_data)
    assert isinstance(model, CIFASRModel)
    assert model.blank_id == 0 and model.token_list[model.eos] == "<sos/eos>" and model.sos == model.eos
    batch = _batch(tiny_data)
    n_tokens = int((batch["text_lengths"] + 1).sum())

    model.eval()
    loss, stats, weight = model(**batch)
    assert int(weight) == n_tokens  # ESPnet averages over GPUs by this weight
    for key in ("loss", "loss_ce", "nll", "loss_ctc", "loss_quantity", "acc", "cif_count_err", "cer"):
        assert key in stats and torch.isfinite(torch.as_tensor(stats[key])).all(), key
    expected = stats["loss_ce"] + 1.0 * stats["loss_quantity"] + 0.5 * stats["loss_ctc"]
    torch.testing.assert_close(loss.detach(), expected.reshape(loss.shape))
    # label smoothing as the reference: target 1-eps, each of the V-1 other classes eps/(V-1)
    logits = torch.randn(2, 3, model.vocab_size)
    ys_out = torch.tensor([[2, 3, -1], [4, 5, 6]])
    q = torch.full_like(logits, 0.1 / (model.vocab_size - 1))
    q.scatter_(-1, ys_out.clamp(min=0)[..., None], 0.9)
    manual = -(q * logits.log_softmax(-1)).sum(-1)[ys_out != -1].sum()
    torch.testing.assert_close(model._ce_loss(logits, ys_out)[0], manual)

    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        loss, stats, _ = model(**batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses
    assert float(stats["acc"]) > 0.5


def test_cif_encode_with_an_utterance_that_fires_nothing(cif_task, tiny_data):
    torch.manual_seed(0)
    model = _build(cif_task, tiny_data).eval()
    # Constant weight 0.05 per 80 ms frame: a 40-frame input (4 encoder frames) sums to 0.2,
    # below the tail threshold 0.4, so it fires nothing; a long one fires.
    with torch.no_grad():
        model.predictor.weight_proj.weight.zero_()
        model.predictor.weight_proj.bias.fill_(math.log(0.05 / 0.95))
    speech = torch.randn(2, 400, 20)
    lengths = torch.tensor([400, 40])
    with torch.no_grad():
        cif_out, enc, enc_lens = model.cif_encode(speech, lengths)
        assert enc_lens.tolist() == [49, 4]
        assert cif_out.lengths.tolist() == [3, 0]  # 49 x 0.05 = 2.45: 2 fires + tail (0.45 >= 0.4)
        assert cif_out.outputs.shape == (2, 3, 32) and torch.all(cif_out.outputs[1] == 0)
        alone, _, _ = model.cif_encode(speech[1:, :40], lengths[1:])
        assert alone.lengths.tolist() == [0] and alone.outputs.shape == (1, 0, 32)
        logp, _ = model.decoder.batch_score(torch.full((1, 1), model.sos), [None], alone.outputs)
        assert torch.isfinite(logp).all()
        # an input too short to leave any encoder frame
        empty, _, empty_lens = model.cif_encode(speech[:1, :5], torch.tensor([5]))
        assert empty_lens.tolist() == [0] and empty.lengths.tolist() == [0] and empty.outputs.shape == (1, 0, 32)
        # validation forward on a batch containing it: finite loss, token-count error reported
        text = torch.tensor([[2, 3], [4, -1]])
        loss, stats, _ = model(speech, lengths, text, torch.tensor([2, 1]), utt_id=["long", "short"])
    assert torch.isfinite(loss) and float(stats["cif_count_err"]) == pytest.approx((0 + 2) / 2)


def test_cif_count_from_the_ctc_greedy_path(cif_task, tiny_data):
    torch.manual_seed(0)
    model = _build(cif_task, tiny_data).eval()
    vocab = model.ctc.ctc_lo.out_features
    # Greedy CTC labels per encoder frame, forced through a CTC layer that copies a one-hot
    # "encoder output": [a a _ b _ b c c] = a, b, b, c = 4 tokens; the second utterance's
    # frames beyond its length (3: [a _ a]) = 2 tokens do not count.
    paths = [[2, 2, 0, 3, 0, 3, 4, 4], [2, 0, 2, 5, 5, 5, 5, 5]]
    enc_dim = model.ctc.ctc_lo.in_features
    with torch.no_grad():
        model.ctc.ctc_lo.weight.zero_()
        model.ctc.ctc_lo.bias.zero_()
        model.ctc.ctc_lo.weight[:, :vocab] = torch.eye(vocab)
        enc = torch.zeros(2, 8, enc_dim)
        for b, path in enumerate(paths):
            enc[b, torch.arange(8), torch.tensor(path)] = 10.0
        counts = model.ctc_token_counts(enc, torch.tensor([8, 3]))
    assert counts.tolist() == [4, 2]
    # cif_encode fires exactly the CTC count (+ EOS) whatever the weights sum to.
    speech, lengths = torch.randn(2, 400, 20), torch.tensor([400, 320])
    with torch.no_grad():
        cif_out, enc, enc_lens = model.cif_encode(speech, lengths, count_from_ctc=True)
        expected = model.ctc_token_counts(enc, enc_lens) + 1
    assert cif_out.lengths.tolist() == expected.tolist()
    assert cif_out.outputs.shape[:2] == (2, int(expected.max()))


def test_distillation_hook(cif_task, tiny_data):
    from espnet_ext.distill.hkd import HierarchicalDistiller

    torch.manual_seed(0)
    model = _build(cif_task, tiny_data, "--distiller", "hkd", "--distiller_conf", "teacher_dim=16",
                   "--distiller_conf", "num_negatives=4").eval()
    assert isinstance(model.distiller, HierarchicalDistiller)
    with torch.no_grad():  # lower the CIF weights: some utterances fire fewer than L+1 tokens
        model.predictor.weight_proj.bias -= 0.4
    batch = _batch(tiny_data)
    feats = kaldiio.load_scp(str(tiny_data["train_plm_scp"]))
    plm = [torch.tensor(feats[k]) for k in batch["utt_id"]]
    plm_feats = torch.nn.utils.rnn.pad_sequence(plm, batch_first=True)
    plm_lengths = torch.tensor([len(p) for p in plm])
    n_tokens = int((batch["text_lengths"] + 1).sum())
    with torch.no_grad():
        base, _, _ = model(**batch)
        torch.manual_seed(1)
        loss, stats, _ = model(**batch, plm_feats=plm_feats, plm_feats_lengths=plm_lengths)
    assert float(stats["loss_distill"]) > 0
    torch.testing.assert_close(loss, base + stats["loss_distill"].reshape(loss.shape))
    # HKD objective (paper eq. 1) with the reference run's weights: λ_AD 1.0 (ACD), λ_LD 0.01 (LRD)
    torch.testing.assert_close(stats["loss_distill"], stats["loss_acd"] + 0.01 * stats["loss_lrd"])
    # Distilled positions per utterance: min(teacher rows, CIF tokens); the tiny teacher has L+1
    # rows, and in eval mode the CIF count is the inference one.
    with torch.no_grad():
        n_cif = model.cif_encode(batch["speech"], batch["speech_lengths"])[0].lengths
    want_tokens = int(torch.minimum(plm_lengths, n_cif).sum())
    assert 0 < want_tokens < n_tokens  # the precondition: the minimum binds for some utterance
    assert int(stats["distill_tokens"]) == want_tokens
    trained = copy.deepcopy(model).train()  # a copy: training mode updates BatchNorm statistics
    loss, _, _ = trained(**batch, plm_feats=plm_feats, plm_feats_lengths=plm_lengths)
    loss.backward()
    assert trained.distiller.linguistic_proj.weight.grad.abs().sum() > 0
    assert trained.distiller.acoustic_proj.weight.grad.abs().sum() > 0

    model.strip_training_heads().eval()
    with torch.no_grad():
        stripped, stats, _ = model(**batch, plm_feats=plm_feats, plm_feats_lengths=plm_lengths)
    assert model.distiller is None and "loss_distill" not in stats
    torch.testing.assert_close(stripped, base)


# ---------------------------------------------------------------------------------------------
# ESPnet task: training, resume, rebuild
# ---------------------------------------------------------------------------------------------
def test_task_data_names_and_entry_point(cif_task):
    from espnet_ext.bin import cif_asr_train

    assert cif_asr_train.get_parser().parse_args(["--config", str(TINY_CONF)]).model == "cif"
    assert "plm_feats" in cif_task.optional_data_names(train=True)
    assert "plm_feats" in cif_task.optional_data_names(train=False)
    assert "plm_feats" not in cif_task.optional_data_names(train=False, inference=True)
    args = cif_task.get_parser().parse_args(["--token_list", "x"])
    assert (args.model, args.encoder, args.decoder) == ("cif", "conformer_pooling", "cif_ar")
    assert (args.predictor, args.predictor_conf, args.distiller, args.distiller_conf) == ("cif", {}, None, {})
    assert cif_task.trainer.__module__ == "espnet_ext.train.trainer"


def test_part_options_build_the_chosen_parts(cif_task, tiny_data):
    """A paper variant is one option; repeated --distiller_conf merge; the task hands the parts to
    the model through model_conf and refuses a model_conf that disagrees."""
    from espnet_ext.distill.variants import ACDDistiller

    model = _build(cif_task, tiny_data, "--distiller", "acd", "--distiller_conf", "teacher_dim=384",
                   "--distiller_conf", "temperature=0.05", "--predictor_conf", "kernel_size=5")
    d = model.distiller
    assert type(d) is ACDDistiller and d.teacher_dim == 384 and d.acoustic_proj.out_features == 384
    # paper §3.2 / reference run: ACD λ 1.0, K 700, no LRD; τ from the second --distiller_conf
    assert (d.acoustic_loss, d.acoustic_weight, d.num_negatives, d.temperature) == ("contrastive", 1.0, 700, 0.05)
    assert d.linguistic_proj is None and d.acoustic_proj.in_features == model.encoder.output_size()
    # tiny config's predictor_conf (dropout 0.1) plus the option
    assert model.predictor.conv.kernel_size == (5,) and model.predictor.dropout.p == 0.1
    assert _build(cif_task, tiny_data, "--distiller", "none").distiller is None

    args = cif_task.get_parser().parse_args(["--config", str(TINY_CONF), *asr_data_args(tiny_data),
                                             "--model_conf", "predictor_conf={threshold: 0.9}"])
    with pytest.raises(ValueError, match="predictor_conf.*--predictor_conf"):
        cif_task.build_model(args)
    with pytest.raises(SystemExit):  # not a registered distiller
        _build(cif_task, tiny_data, "--distiller", "kd")


def test_training_run_resumes_from_checkpoint(tiny_run):
    out = tiny_run.out
    ckpt = torch.load(out / "checkpoint.pth", weights_only=False)
    reporter = ckpt["reporter"]
    assert tiny_run.first.reporter["epoch"] == 1 and reporter["epoch"] == 2
    # epoch 1 was restored, not retrained: its record (wall times included) and file are unchanged
    assert reporter["stats"][1] == tiny_run.first.reporter["stats"][1]
    assert _sha(out / "1epoch.pth") == tiny_run.first.epoch1_sha
    assert (out / "1epoch.pth").stat().st_mtime_ns == tiny_run.first.epoch1_mtime
    e1 = torch.load(out / "1epoch.pth", weights_only=False)
    e2 = torch.load(out / "2epoch.pth", weights_only=False)
    assert any(not torch.equal(e1[k], e2[k]) for k in e1 if e1[k].is_floating_point())
    for phase in ("train", "valid"):
        for key in ("loss", "loss_ce", "loss_ctc", "loss_quantity", "acc", "cif_count_err"):
            assert math.isfinite(reporter["stats"][2][phase][key]), (phase, key)
    assert reporter["stats"][2]["train"]["loss"] < reporter["stats"][1]["train"]["loss"]
    assert (out / "valid.acc.ave.pth").exists()


def test_rebuild_from_config_with_our_task_and_stock_task(tiny_run, tiny_data):
    from espnet2.tasks.asr import ASRTask

    from espnet_ext.asr.cif_asr_model import CIFASRModel
    from espnet_ext.distill.variants import LRDDistiller
    from espnet_ext.tasks.cif_asr import CIFASRTask

    out = tiny_run.out
    model_file = out / "valid.acc.ave.pth"
    stored = torch.load(model_file, map_location="cpu", weights_only=False)
    assert stored["predictor.conv.weight"].shape == (24, 32, 3)  # the run's conv_channels
    batch = _batch(tiny_data, "valid", n=2)
    results = []
    for task in (CIFASRTask, ASRTask):
        model, _ = task.build_model_from_file(out / "config.yaml", model_file, "cpu")
        assert isinstance(model, CIFASRModel)
        # build_model_from_file loads with strict=False: check that every key matched
        assert set(model.state_dict()) == set(stored)
        assert model.predictor.tail_threshold == 0.45 and type(model.distiller) is LRDDistiller
        model.eval()
        with torch.no_grad():
            cif_out, _, _ = model.cif_encode(batch["speech"], batch["speech_lengths"])
            ys = torch.full((2, 1), model.sos)
            logits, _ = model.decoder(cif_out.outputs, cif_out.lengths, ys, torch.tensor([1, 1]))
        results.append((cif_out.outputs, cif_out.lengths, logits))
    for a, b in zip(*results):
        assert torch.equal(a, b)
    # Decoding needs no teacher: without plm_feats the validation forward has no distillation.
    with torch.no_grad():
        _, stats, _ = model(**batch)
    assert "loss_distill" not in stats and torch.isfinite(stats["loss"])

    # batched = per utterance (padding invariance of the whole CIF front half); input untouched
    speech = batch["speech"].clone()
    outputs, lengths, _ = results[0]
    with torch.no_grad():
        for b in range(2):
            n = int(batch["speech_lengths"][b])
            alone, _, _ = model.cif_encode(batch["speech"][b: b + 1, :n], batch["speech_lengths"][b: b + 1])
            assert alone.lengths.item() == lengths[b].item()
            torch.testing.assert_close(alone.outputs[0], outputs[b, : lengths[b]], atol=1e-4, rtol=1e-4)
    assert torch.equal(batch["speech"], speech)


def _global_mvn_stats(path: Path, dim: int = 80) -> str:
    """A feats_stats.npz as ESPnet's collect-stats stage writes it."""
    np.savez(path, count=np.array(10), sum=np.zeros(dim), sum_square=np.full(dim, 10.0))
    return f"stats_file={path}"


def test_aishell_config_parameter_count(cif_task, tmp_path, capsys):
    """With the reference's 4,234 outputs the AISHELL-1 config has exactly the reference's
    parameter count, and each module the hand count of its architecture."""
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("\n".join(["<blank>", "<unk>"] + [f"c{i}" for i in range(4231)] + ["<sos/eos>"]) + "\n")
    args = cif_task.get_parser().parse_args(
        ["--config", str(REPO / "conf" / "train_asr_cif_aishell.yaml"), "--token_list", str(tokens),
         "--input_size", "80", "--normalize_conf", _global_mvn_stats(tmp_path / "feats_stats.npz")])
    model = cif_task.build_model(args)
    n_params = sum(p.numel() for p in model.parameters())
    with capsys.disabled():
        print(f"\nAISHELL-1 CIF model, V=4234: {n_params:,} parameters (reference {REFERENCE_PARAMS:,})")
    want = cif_model_params(V=4234, d=256)
    # by hand: encoder 1,345,280 (front-end) + 15 x 2,634,496 = 40,862,720; CIF 197,121;
    # CTC 1,088,138; decoder 5,060,608
    assert want == dict(encoder=40_862_720, predictor=197_121, ctc=1_088_138, decoder=5_060_608)
    assert _module_params(model) == want
    assert n_params == sum(want.values()) == REFERENCE_PARAMS
    assert model.encoder.pooling_layers == [5, 10] and len(model.encoder.encoders) == 15
    assert args.optim == "adamw" and args.scheduler == "tristagelr" and args.grad_clip == 1.0


def test_librispeech_config_builds(cif_task, tmp_path):
    # The recipe's hugging_face list: the 30,522 WordPieces at their PLM ids, [PAD] (0) and
    # [unused0] (1) renamed <blank> and <unk>, <sos/eos> appended as id 30,522.
    vocab = [f"w{i}" for i in range(30522)] + ["<sos/eos>"]
    vocab[0], vocab[1], vocab[100], vocab[101], vocab[102] = "<blank>", "<unk>", "[UNK]", "[CLS]", "[SEP]"
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("\n".join(vocab) + "\n")
    args = cif_task.get_parser().parse_args(
        ["--config", str(REPO / "conf" / "train_asr_cif_librispeech.yaml"), "--token_list", str(tokens),
         "--normalize_conf", _global_mvn_stats(tmp_path / "feats_stats.npz")])
    model = cif_task.build_model(args)
    assert (model.blank_id, model.sos, model.eos) == (0, 30522, 30522)
    # d 512, 8 heads, CIF conv 512, 30,523 outputs: by hand encoder 97,522,432, CIF 787,457,
    # CTC 15,658,299, decoder 38,609,920 = 152,578,108 parameters
    want = cif_model_params(V=30523, d=512, cif_channels=512)
    assert want == dict(encoder=97_522_432, predictor=787_457, ctc=15_658_299, decoder=38_609_920)
    assert _module_params(model) == want and sum(want.values()) == 152_578_108
    assert model.encoder.output_size() == 512 and model.decoder.state_dim == 512
    assert model.predictor.conv.out_channels == 512
