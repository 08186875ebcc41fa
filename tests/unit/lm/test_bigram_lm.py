"""The 2-gram DR-LM: Kneser-Ney estimation against a hand count, ARPA round trip, and the
scorer's rows as exact distributions, in beam search and through ESPnet's LM wrapper."""
import math

import torch
from espnet2.lm.espnet_model import ESPnetLanguageModel
from toy_lm import SOS, TOKENS, V

from espnet_ext.lm.arpa import read_arpa, write_arpa
from espnet_ext.lm.bigram_lm import BigramLM
from espnet_ext.lm.kneser_ney import estimate_bigram_kn


def _bigram(tmp_path, sentences, tokens=TOKENS):
    uni, bow, bi, info = estimate_bigram_kn(sentences, len(tokens), len(tokens) - 1)
    write_arpa(tmp_path / "lm.arpa", tokens, uni, bow, bi)
    return BigramLM(tmp_path / "lm.arpa", tokens), (uni, bow, bi, info)


def test_bigram_rows_sum_to_one(tmp_path):
    g = torch.Generator().manual_seed(0)
    sentences = [torch.randint(2, 8, (int(torch.randint(1, 9, (1,), generator=g)),),
                               generator=g).tolist() for _ in range(60)]
    sentences.append([2, 2, 2, 2, 2, 2, 3])  # count-of-counts with both n1 and n2
    lm, (_, _, _, info) = _bigram(tmp_path, sentences)
    histories = torch.arange(V)  # every id, incl. <sos/eos> (= <s>) and never-seen <blank>
    probs = lm.log_probs(histories).double().exp()
    torch.testing.assert_close(probs.sum(-1), torch.ones(V, dtype=torch.float64), rtol=0,
                               atol=1e-5)
    assert (probs > 0).all()  # smoothing: no -inf anywhere
    assert 0 < info["discount_bigram"] < 1
    # beam-search interface: last token of each prefix is the history
    ys = torch.tensor([[SOS, 2, 3], [SOS, 4, 0], [SOS, 6, 7]])
    scores, _ = lm.batch_score(ys, [None] * 3, torch.zeros(3, 1, 1))
    torch.testing.assert_close(scores, lm.log_probs(ys[:, -1]))


def test_bigram_kneser_ney_formula(tmp_path):
    """P(w|v) = max(c(v,w)-D,0)/c(v) + D*N1+(v.)/c(v) * P1(w) on a hand-countable corpus."""
    sentences = [[2, 3], [2, 3], [2, 4], [3]]
    d = 0.5
    uni, bow, bi, _ = estimate_bigram_kn(sentences, V, SOS, discount=d)
    # continuation counts: a<-{<s>}, b<-{a,<s>}, c<-{a}, </s><-{b,c}: N1+(..) = 6, 4 word types
    p1 = {w: (max(n - d, 0) + d * 4 / V) / 6 for w, n in {2: 1, 3: 2, 4: 1, SOS: 2}.items()}
    # c(a) = 3: a->b twice, a->c once; N1+(a.) = 2
    expected = (2 - d) / 3 + d * 2 / 3 * p1[3]
    assert math.isclose(math.exp(bi[(2, 3)]), expected, rel_tol=1e-9)
    assert math.isclose(math.exp(uni[5]), d * 4 / V / 6, rel_tol=1e-9)  # unseen: floor only
    write_arpa(tmp_path / "x.arpa", TOKENS, uni, bow, bi)
    u2, b2, bi2 = read_arpa(tmp_path / "x.arpa", TOKENS)
    assert math.isclose(bi2[(2, 3)], bi[(2, 3)], abs_tol=1e-5)
    assert math.isclose(float(u2[SOS]), uni[SOS], abs_tol=1e-5)


def test_bigram_perplexity_through_espnet_lm(tmp_path):
    sentences = [[2, 3, 4], [3, 2], [4, 4, 2, 3]]
    lm, _ = _bigram(tmp_path, sentences)
    text = torch.tensor([[2, 3, 4]])
    nll, _ = ESPnetLanguageModel(lm, V).nll(text, torch.tensor([3]))
    table = lm.log_probs(torch.arange(V))
    manual = -(table[SOS, 2] + table[2, 3] + table[3, 4] + table[4, SOS])
    assert math.isclose(float(nll.sum()), float(manual), rel_tol=1e-5)
