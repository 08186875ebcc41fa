"""Negative fusion weights: the clamped scorer keeps every score finite, alone and inside
ESPnet's BatchBeamSearch."""
import math

import torch
from espnet2.lm.seq_rnn_lm import SequentialRNNLM
from toy_lm import EOS, SOS, TOKENS, D, V, prefixes, tiny_decoders

from espnet_ext.lm.clamped_scorer import LOGP_FLOOR, ClampedScorer


def _masked_lm():
    """A real ESPnet LSTM LM whose output bias forbids token 'c' (log-prob -inf)."""
    torch.manual_seed(0)
    lm = SequentialRNNLM(V, unit=8, nlayers=1).eval()
    with torch.no_grad():
        lm.decoder.bias[4] = -float("inf")
    return lm


def test_clamped_scorer_keeps_negative_weight_finite():
    lm = _masked_lm()
    ys = prefixes()
    raw, _ = lm.batch_score(ys, [None] * 3, torch.zeros(3, 1, 1))
    assert torch.isneginf(raw[:, 4]).all()
    assert torch.isposinf(-0.5 * raw).any()  # what an unclamped negative weight does
    clamped, _ = ClampedScorer(lm).batch_score(ys, [None] * 3, torch.zeros(3, 1, 1))
    assert torch.isfinite(-0.5 * clamped).all()
    assert (clamped[:, 4] == LOGP_FLOOR).all()
    torch.testing.assert_close(clamped[:, :4], raw[:, :4])


def test_negative_weight_with_masked_token_in_espnet_beam_search():
    """Stock ESPnet BatchBeamSearch with a transformer decoder and an ILM scorer at weight -0.5
    that assigns -inf to a token: clamped, every hypothesis score stays finite."""
    from espnet.nets.batch_beam_search import BatchBeamSearch

    dec = tiny_decoders()["transformer"]
    torch.manual_seed(1)
    x = torch.randn(6, D)

    def search(ilm):
        bs = BatchBeamSearch(scorers=dict(decoder=dec, ilm=ilm), weights=dict(decoder=1.0, ilm=-0.5),
                             beam_size=3, vocab_size=V, sos=SOS, eos=EOS, token_list=TOKENS,
                             pre_beam_score_key="full").eval()
        with torch.no_grad():
            return bs(x, maxlenratio=-4.0, minlenratio=0.0)

    hyps = search(ClampedScorer(_masked_lm()))
    assert hyps and all(math.isfinite(float(h.score)) for h in hyps)
    for h in hyps:
        total = float(h.scores["decoder"]) - 0.5 * float(h.scores["ilm"])
        assert math.isclose(float(h.score), total, rel_tol=1e-5, abs_tol=1e-3)
