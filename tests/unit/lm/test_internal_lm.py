"""Decoder-based internal LM (ILME-Z / ILME-L) on real ESPnet decoders and our CIF decoder:
equal to the decoder with a zero context, incremental scoring equal to teacher forcing, the
context learner starting at ILME-Z, and the ILM parameter counts."""
import copy

import pytest
import torch
from toy_lm import D, V, prefixes, tiny_decoders

from espnet_ext.lm.ilm_context import ContextLearner
from espnet_ext.lm.internal_lm import InternalLM


@pytest.mark.parametrize("kind", ["rnn", "transformer", "cif"])
def test_ilme_z_equals_decoder_with_zeroed_context(kind):
    """ILME-Z logits equal a direct forward of the decoder whose context is zero: zero encoder
    output for LAS (the attention context is a weighted sum of it), cross-attention output
    projection zeroed for the transformer, zero CIF vectors for the CIF decoder."""
    dec = tiny_decoders()[kind]
    ys = prefixes()
    lens = torch.full((ys.size(0),), ys.size(1))
    with torch.no_grad():
        ilm_logits, _ = InternalLM(dec)(ys)
        if kind == "rnn":
            ref, _ = dec(torch.zeros(3, 7, D), torch.full((3,), 7), ys, lens)
        elif kind == "transformer":
            zeroed = copy.deepcopy(dec)
            for layer in zeroed.decoders:
                torch.nn.init.zeros_(layer.src_attn.linear_out.weight)
                torch.nn.init.zeros_(layer.src_attn.linear_out.bias)
            ref, _ = zeroed(torch.randn(3, 7, D), torch.full((3,), 7), ys, lens)
        else:
            ref, _ = dec(torch.zeros(3, 4, D), torch.full((3,), 4), ys, lens)
        with_ctx, _ = (dec(torch.randn(3, 4, D), torch.full((3,), 4), ys, lens) if kind == "cif"
                       else dec(torch.randn(3, 7, D), torch.full((3,), 7), ys, lens))
    torch.testing.assert_close(ilm_logits, ref, rtol=0, atol=1e-6)
    assert not torch.allclose(ilm_logits, with_ctx, atol=1e-3)  # the context does matter


@pytest.mark.parametrize("kind", ["rnn", "transformer", "cif"])
@pytest.mark.parametrize("learned", [False, True])
def test_ilm_incremental_scores_match_teacher_forcing(kind, learned):
    """batch_score step by step (beam search) gives the same log-probs as one forward."""
    dec = tiny_decoders()[kind]
    learner = None
    if learned:
        shape = InternalLM(dec).adapter.context_shape
        learner = ContextLearner(V, shape, embed_size=8, hidden_size=8).eval()
        torch.nn.init.normal_(learner.output.weight)  # non-zero contexts
    ilm = InternalLM(dec, learner)
    ys = prefixes()
    with torch.no_grad():
        full = torch.log_softmax(ilm(ys)[0], dim=-1)
        states, steps = [None] * ys.size(0), []
        for length in range(1, ys.size(1) + 1):
            logp, states = ilm.batch_score(ys[:, :length], states, torch.zeros(3, 2, D))
            steps.append(logp)
        single, _ = ilm.score(ys[1, :2], None, torch.zeros(2, D))
    torch.testing.assert_close(torch.stack(steps, dim=1), full, rtol=0, atol=1e-5)
    torch.testing.assert_close(single, full[1, 1], rtol=0, atol=1e-5)


def test_context_learner_starts_at_ilme_z():
    """The learner's output layer starts at zero: untrained ILME-L is exactly ILME-Z."""
    dec = tiny_decoders()["transformer"]
    shape = InternalLM(dec).adapter.context_shape
    assert shape == (2, D)  # one context per transformer block
    ys = prefixes()
    with torch.no_grad():
        z = InternalLM(dec)(ys)[0]
        l0 = InternalLM(dec, ContextLearner(V, shape, embed_size=8, hidden_size=8))(ys)[0]
    torch.testing.assert_close(l0, z, rtol=0, atol=0)


def test_ilm_param_counts_exclude_unused_attention():
    decs = tiny_decoders()
    rnn = decs["rnn"]
    att = sum(p.numel() for p in rnn.att_list.parameters())
    assert InternalLM(rnn).num_ilm_params() == sum(p.numel() for p in rnn.parameters()) - att
    cif = decs["cif"]
    assert InternalLM(cif).num_ilm_params() == sum(p.numel() for p in cif.parameters())
