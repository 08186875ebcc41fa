"""Our trainer: CPU bf16 autocast of the forward passes (on, off, auto from the CPU's flags) on a
real CIF training step, with the loss terms that need fp32 kept in fp32; atomic saves only for the
duration of ``run``."""
from pathlib import Path

import kaldiio
import pytest
import torch
from tiny_asr_data import asr_data_args, make_tiny_asr_data

import espnet_ext.train.trainer as trainer_module
from espnet_ext.train.trainer import Trainer, cpu_bf16_flags, use_cpu_bf16

REPO = Path(__file__).resolve().parents[3]
TINY_CONF = REPO / "conf" / "train_asr_cif_tiny.yaml"


def test_cpu_bf16_flags_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 amx_tile amx_bf16\n\n"
                    "processor\t: 1\nflags\t\t: fpu sse avx512f avx512_bf16 amx_tile amx_bf16\n")
    assert cpu_bf16_flags(str(info)) == ("amx_bf16", "avx512_bf16")
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512bw\n")
    assert cpu_bf16_flags(str(info)) == ()
    assert cpu_bf16_flags(str(tmp_path / "missing")) == ()


def test_auto_follows_the_cpu_flags_and_gpus_turn_it_off(monkeypatch):
    monkeypatch.setattr(trainer_module, "cpu_bf16_flags", lambda: ())
    assert [use_cpu_bf16(s, 0) for s in ("auto", "true", "false")] == [False, True, False]
    monkeypatch.setattr(trainer_module, "cpu_bf16_flags", lambda: ("amx_bf16",))
    assert [use_cpu_bf16(s, 0) for s in ("auto", "true", "false")] == [True, True, False]
    assert [use_cpu_bf16(s, 1) for s in ("auto", "true", "false")] == [False, False, False]


@pytest.fixture(scope="module")
def cif(tmp_path_factory):
    """CIFASRTask, tiny data and one padded training batch as ESPnet collates it."""
    from espnet_ext.tasks.cif_asr import CIFASRTask

    data = make_tiny_asr_data(tmp_path_factory.mktemp("bf16"), n_utts=4, feat_dim=20)
    feats = kaldiio.load_scp(str(data["train_feats_scp"]))
    tokens = data["token_list"].read_text().split()
    texts = dict(line.split() for line in data["train_text"].read_text().splitlines())
    keys = sorted(feats)
    xs = [torch.tensor(feats[k]) for k in keys]
    ys = [torch.tensor([tokens.index(ch) for ch in texts[k]]) for k in keys]
    batch = dict(
        speech=torch.nn.utils.rnn.pad_sequence(xs, batch_first=True),
        speech_lengths=torch.tensor([len(x) for x in xs]),
        text=torch.nn.utils.rnn.pad_sequence(ys, batch_first=True, padding_value=-1),
        text_lengths=torch.tensor([len(y) for y in ys]),
    )
    return CIFASRTask, data, keys, batch


def _step(cif, setting: str):
    """One training step and one validation pass by the trainer; what the forward passes saw."""
    from espnet2.train.distributed_utils import DistributedOption
    from espnet2.train.reporter import Reporter

    task, data, keys, batch = cif
    args = task.get_parser().parse_args(["--config", str(TINY_CONF), *asr_data_args(data), "--cpu_bf16", setting])
    options = task.trainer.build_options(args)
    torch.manual_seed(0)
    model = task.build_model(args)
    seen = {"encoder_linear": set(), "loss": [], "stats": [], "cif": set(), "ctc_logits": set()}
    for m in model.encoder.modules():
        if isinstance(m, torch.nn.Linear):
            m.register_forward_hook(lambda mod, inp, out: seen["encoder_linear"].add(out.dtype))
    # CTC's output layer feeds its log-softmax, which autocast would leave in bf16
    model.ctc.ctc_lo.register_forward_hook(lambda mod, inp, out: seen["ctc_logits"].add(out.dtype))
    model.predictor.register_forward_hook(
        lambda mod, inp, out: seen["cif"].update({out.outputs.dtype, out.alpha_sum.dtype}))

    def record_output(mod, inp, out):
        seen["loss"].append(out[0])
        seen["stats"].append(out[1])

    model.register_forward_hook(record_output)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    reporter = Reporter()
    reporter.set_epoch(1)
    with reporter.observe("train") as sub:
        task.trainer.train_one_epoch(
            model=model, iterator=[(keys, dict(batch))], optimizers=[optimizer], schedulers=[None],
            scaler=None, reporter=sub, summary_writer=None, options=options,
            distributed_option=DistributedOption())
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters())), "no update"
    with reporter.observe("valid") as sub:
        task.trainer.validate_one_epoch(model=model, iterator=[(keys, dict(batch))], reporter=sub,
                                        options=options, distributed_option=DistributedOption())
    assert not torch.is_autocast_enabled("cpu")  # nothing left switched on
    assert len(seen["loss"]) == 2  # training and validation forward
    return seen


def _check_fp32_losses(seen):
    assert seen["cif"] == {torch.float32}  # CIF weights and integration
    assert seen["ctc_logits"] == {torch.float32}
    for loss, stats in zip(seen["loss"], seen["stats"]):
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
        for key in ("loss_ce", "nll", "loss_ctc", "loss_quantity"):
            assert stats[key].dtype == torch.float32 and torch.isfinite(stats[key]), key


def test_cpu_bf16_true_runs_encoder_matmuls_in_bf16_and_losses_in_fp32(cif):
    seen = _step(cif, "true")
    assert seen["encoder_linear"] == {torch.bfloat16}
    _check_fp32_losses(seen)


def test_cpu_bf16_false_and_auto_without_the_flags_stay_fp32(cif, monkeypatch):
    assert _step(cif, "false")["encoder_linear"] == {torch.float32}
    monkeypatch.setattr(trainer_module, "cpu_bf16_flags", lambda: ())
    seen = _step(cif, "auto")
    assert seen["encoder_linear"] == {torch.float32}
    _check_fp32_losses(seen)
    monkeypatch.setattr(trainer_module, "cpu_bf16_flags", lambda: ("avx512_bf16",))
    assert _step(cif, "auto")["encoder_linear"] == {torch.bfloat16}


def test_saves_are_atomic_during_run_only(monkeypatch, tmp_path):
    """Our run gives ESPnet's trainer and model averaging an atomic torch.save, and their torch
    back afterwards, also when training fails."""
    import espnet2.main_funcs.average_nbest_models as averaging
    import espnet2.train.trainer as espnet_trainer

    seen = []

    def espnet_run(cls, **kwargs):  # stands in for ESPnet's Trainer.run
        seen.append((espnet_trainer.torch.save, averaging.torch.save, espnet_trainer.torch.isfinite))
        if kwargs["trainer_options"].fail:
            raise RuntimeError("training failed")

    monkeypatch.setattr(espnet_trainer.Trainer, "run", classmethod(espnet_run))
    for fail in (False, True):
        options = type("Options", (), dict(cpu_bf16="false", ngpu=0, fail=fail))()
        call = dict(model=None, optimizers=[], schedulers=[], train_iter_factory=None,
                    valid_iter_factory=None, plot_attention_iter_factory=None,
                    trainer_options=options, distributed_option=None)
        if fail:
            with pytest.raises(RuntimeError, match="training failed"):
                Trainer.run(**call)
        else:
            Trainer.run(**call)
        assert espnet_trainer.torch is torch and averaging.torch is torch
    for save, avg_save, isfinite in seen:
        assert save is trainer_module.atomic_save and avg_save is trainer_module.atomic_save
        assert isfinite is torch.isfinite  # everything else is torch itself
