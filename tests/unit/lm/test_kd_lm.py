"""DR-KD student loss against the formula computed by hand, and the hidden frozen teacher."""
import math

import pytest
import torch
from espnet2.lm.espnet_model import ESPnetLanguageModel
from espnet2.lm.seq_rnn_lm import SequentialRNNLM
from toy_lm import EOS, SOS, V

from espnet_ext.lm.kd_lm import KDLanguageModel


def _kd_pair(alpha):
    torch.manual_seed(0)
    student = SequentialRNNLM(V, unit=8, nlayers=1)
    teacher = SequentialRNNLM(V, unit=6, nlayers=1)
    model = KDLanguageModel(student, V, kd_alpha=alpha)
    model.set_teacher(teacher)
    return model, student, teacher


def _manual_kd(student, teacher, text, lengths, alpha):
    ce_gt, ce_kd, ntok = 0.0, 0.0, 0
    for row, n in zip(text, lengths.tolist()):
        x = torch.cat([torch.tensor([SOS]), row[:n]])[None]
        target = torch.cat([row[:n], torch.tensor([EOS])])
        logp_s = torch.log_softmax(student(x, None)[0][0], -1)
        p_t = torch.softmax(teacher(x, None)[0][0], -1)
        ce_gt += float(-logp_s[torch.arange(n + 1), target].sum())
        ce_kd += float(-(p_t * logp_s).sum())
        ntok += n + 1
    return alpha * ce_gt / ntok + (1 - alpha) * ce_kd / ntok, ce_gt / ntok, ce_kd / ntok


@pytest.mark.parametrize("alpha", [0.0, 0.2, 1.0])
def test_drkd_loss_equals_formula(alpha):
    model, student, teacher = _kd_pair(alpha)
    text = torch.tensor([[2, 3, 4, 5], [6, 2, 0, 0]])
    lengths = torch.tensor([4, 2])
    loss, stats, weight = model(text, lengths)
    expected, ce_gt, ce_kd = _manual_kd(student, teacher, text, lengths, alpha)
    assert math.isclose(float(loss), expected, rel_tol=1e-5)
    assert int(weight) == 4 + 2 + 2  # tokens incl. one <eos> per sentence
    if alpha == 1.0:  # pure CE: ESPnet's own LM loss
        stock, _, _ = ESPnetLanguageModel(student, V)(text, lengths)
        assert math.isclose(float(loss), float(stock), rel_tol=1e-5)
    if alpha == 0.0:  # pure KD
        assert math.isclose(float(loss), ce_kd, rel_tol=1e-5)
        assert math.isclose(float(stats["loss_gt"]), ce_gt, rel_tol=1e-5)


def test_drkd_teacher_hidden_and_frozen():
    model, student, teacher = _kd_pair(0.2)
    assert all(k.startswith("lm.") for k in model.state_dict())
    assert {id(p) for p in model.parameters()} == {id(p) for p in student.parameters()}
    model.train()
    assert model.lm.training and not teacher.training  # Trainer's model.train() spares it
    model.to(torch.float64)
    assert next(teacher.parameters()).dtype == torch.float64  # but .to() moves it
    loss, _, _ = model(torch.tensor([[2, 3]]), torch.tensor([2]))
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    with pytest.raises(ValueError, match="kd_alpha"):
        KDLanguageModel(student, V, kd_alpha=1.5)
