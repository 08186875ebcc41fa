"""HKD losses against naive loop implementations of the paper's equations (values and gradients),
negative sampling properties, and the distiller's token selection / misalignment policy."""
import itertools
import logging
import math

import pytest
import torch

from espnet_ext.distill.hkd import HierarchicalDistiller
from espnet_ext.distill.losses import (
    contrastive_loss,
    cosine_loss,
    effective_num_negatives,
    gathered_dot,
    mse_loss,
    sample_negatives,
)


# ----------------------------------------------------------------------------- naive references
def naive_contrastive(student, teacher, negatives, tau, token_ids=None):
    """Eq. 2 summed over anchors, one anchor at a time; negatives exclude the anchor itself (and,
    with token_ids, same-token rows). Returns (loss, #anchors whose positive wins)."""
    loss, correct = 0.0, 0
    for n in range(student.shape[0]):
        c = student[n] / student[n].norm().clamp(min=1e-6)

        def cos(j):
            return torch.dot(c, teacher[j] / teacher[j].norm().clamp(min=1e-6))

        pos = cos(n) / tau
        negs = [
            cos(j) / tau
            for j in negatives[n].tolist()
            if j != n and (token_ids is None or token_ids[j] != token_ids[n])
        ]
        denominator = torch.exp(pos) + sum((torch.exp(x) for x in negs), torch.zeros(()))
        loss = loss - torch.log(torch.exp(pos) / denominator)
        correct += int(all(pos >= x for x in negs))
    return loss, correct


def naive_mse(student, teacher, alpha=1.0, mean_dims=False):
    total = 0.0
    for n in range(student.shape[0]):
        token = sum((student[n, d] - teacher[n, d]) ** 2 for d in range(student.shape[1]))
        total = total + (token / student.shape[1] if mean_dims else token)
    return alpha * total


def naive_cos(student, teacher, alpha=1.0):
    total = 0.0
    for n in range(student.shape[0]):
        cos = torch.dot(student[n], teacher[n]) / (student[n].norm() * teacher[n].norm())
        total = total + (1 - cos)
    return alpha * total


def grads(fn, *tensors):
    ts = [t.detach().clone().double().requires_grad_(True) for t in tensors]
    value = fn(*ts)
    value.backward()
    return value.detach(), [t.grad for t in ts]


# ----------------------------------------------------------------------------- losses
@pytest.mark.parametrize("exclude_same_token", [False, True])
def test_contrastive_matches_eq2(exclude_same_token):
    torch.manual_seed(0)
    N, D, K, tau = 9, 6, 5, 0.07
    student, teacher = torch.randn(N, D), torch.randn(N, D)
    negatives = sample_negatives(N, K)
    negatives[0, 0] = 0  # make sure at least one anchor drew itself
    negatives[0, 1:] = torch.tensor([1, 2, 3, 4])
    token_ids = torch.tensor([3, 3, 1, 2, 1, 5, 3, 0, 2]) if exclude_same_token else None

    got, got_correct = contrastive_loss(student.requires_grad_(), teacher, negatives, tau, token_ids)
    got.backward()
    s_ref = student.detach().double().requires_grad_()
    ref, ref_correct = naive_contrastive(s_ref, teacher.double(), negatives, tau, token_ids)
    ref.backward()
    assert got.item() == pytest.approx(ref.item(), rel=1e-4)
    assert int(got_correct) == ref_correct
    torch.testing.assert_close(student.grad.double(), s_ref.grad, rtol=1e-3, atol=1e-5)


def test_contrastive_reference_temperature_and_teacher_grad():
    """τ = 0.02 gives logits up to ±50: still exact; gradients reach a teacher that wants them."""
    torch.manual_seed(1)
    N, D, K = 12, 8, 7
    s, t = torch.randn(N, D), torch.randn(N, D)
    negatives = sample_negatives(N, K)
    got, (gs, gt) = grads(lambda a, b: contrastive_loss(a, b, negatives, 0.02)[0], s, t)
    ref, (rs, rt) = grads(lambda a, b: naive_contrastive(a, b, negatives, 0.02)[0], s, t)
    assert got.item() == pytest.approx(ref.item(), rel=1e-4)
    torch.testing.assert_close(gs.double(), rs, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(gt.double(), rt, rtol=1e-3, atol=1e-4)


def test_gathered_dot_matches_dense_with_small_chunks():
    torch.manual_seed(2)
    z, e = torch.randn(10, 4, requires_grad=True), torch.randn(10, 4, requires_grad=True)
    idx = sample_negatives(10, 6)
    out = gathered_dot(z, e, idx, chunk=3)
    dense = (z @ e.t()).gather(1, idx)
    torch.testing.assert_close(out, dense)
    g = torch.randn_like(out)
    gz, ge = torch.autograd.grad(out, (z, e), g)
    rz, re = torch.autograd.grad(dense, (z, e), g)
    torch.testing.assert_close(gz, rz)
    torch.testing.assert_close(ge, re)


@pytest.mark.parametrize("mean_dims", [False, True])
def test_mse_matches_eq3_and_lrd(mean_dims):
    torch.manual_seed(3)
    s, t = torch.randn(5, 7), torch.randn(5, 7)
    got, (gs, _) = grads(lambda a, b: 0.01 * mse_loss(a, b, "mean" if mean_dims else "sum"), s, t)
    ref, (rs, _) = grads(lambda a, b: naive_mse(a, b, 0.01, mean_dims), s, t)
    assert got.item() == pytest.approx(ref.item(), rel=1e-6)
    torch.testing.assert_close(gs.double(), rs, rtol=1e-5, atol=1e-6)  # losses run in fp32


def test_cosine_matches_eq4():
    torch.manual_seed(4)
    s, t = torch.randn(6, 5), torch.randn(6, 5)
    got, (gs, _) = grads(lambda a, b: 10.0 * cosine_loss(a, b), s, t)
    ref, (rs, _) = grads(lambda a, b: naive_cos(a, b, 10.0), s, t)
    assert got.item() == pytest.approx(ref.item(), rel=1e-6)
    torch.testing.assert_close(gs.double(), rs, rtol=1e-5, atol=1e-6)  # losses run in fp32


# ----------------------------------------------------------------------------- negative sampling
@pytest.mark.parametrize(
    "n,k,expected_k", [(2000, 700, 700), (950, 700, 700), (700, 700, 560), (10, 700, 8), (1, 700, 0), (0, 5, 0)]
)
def test_sample_negatives_k_fallback_and_without_replacement(n, k, expected_k):
    assert effective_num_negatives(n, k) == expected_k
    idx = sample_negatives(n, k)
    assert idx.shape == (n, expected_k) and idx.dtype == torch.long
    if n and expected_k:
        assert int(idx.min()) >= 0 and int(idx.max()) < n
        s, _ = idx.sort(dim=1)
        assert not bool((s[:, 1:] == s[:, :-1]).any()), "an index was drawn twice in a row"


def test_sample_negatives_uniform_over_subsets():
    """Every K-subset equally likely (chi-square over all C(6,3) = 20 subsets)."""
    torch.manual_seed(5)
    n, k = 6, 3
    counts = dict.fromkeys(itertools.combinations(range(n), k), 0)
    rows = torch.cat([sample_negatives(n, k) for _ in range(3000)])
    for row in rows.sort(dim=1).values.tolist():
        counts[tuple(row)] += 1
    expected = rows.size(0) / len(counts)
    chi2 = sum((c - expected) ** 2 / expected for c in counts.values())
    assert chi2 < 50.0, counts  # 19 dof: P(chi2 > 50) ~ 1e-4


@pytest.mark.timeout(120)  # a hang guard, not a speed target: the old rejection loop never returned
def test_sample_negatives_returns_for_every_batch_just_above_k():
    """N = K+1 ... 1.1K (AISHELL batches of ~700-1,100 tokens with K = 700): exact K-subsets."""
    torch.manual_seed(8)
    K = 700
    for n in range(K + 1, int(1.1 * K) + 1):
        idx = sample_negatives(n, K)
        assert idx.shape == (n, K)
        s = idx.sort(dim=1).values
        assert int(s[:, 0].min()) >= 0 and int(s[:, -1].max()) < n
        assert not bool((s[:, 1:] == s[:, :-1]).any()), f"N={n}: an index drawn twice in a row"


@pytest.mark.parametrize("n,k", [(701, 700), (770, 700), (2000, 700), (3000, 50)])
def test_sample_negatives_inclusion_frequencies_are_uniform(n, k):
    """Each index is in a row with probability K/N (hypergeometric), whatever the regime.

    Over R independent rows the inclusion count of index i is Binomial(R, K/N); the statistic
    sum_i (c_i - R K/N)^2 / (R p (1 - p)) is chi-square with about N - 1 degrees of freedom
    (the counts sum to R*K). Rows must also be independent: the first and second halves of the
    rows give the same frequencies (a two-sample check, same statistic).
    """
    from scipy.stats import chi2

    gen = torch.Generator().manual_seed(9)
    p = k / n
    # Enough rows that every index is expected >= 100 times in and >= 100 times out.
    calls = math.ceil(100 / min(p, 1 - p) / n)
    halves = [torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)]
    for c in range(2 * calls):
        idx = sample_negatives(n, k, generator=gen)
        halves[c % 2] += torch.bincount(idx.view(-1), minlength=n).double()
    R = 2 * calls * n
    counts = halves[0] + halves[1]
    stat = float(((counts - R * p) ** 2).sum() / (R * p * (1 - p)))
    assert chi2.sf(stat, n - 1) > 1e-4, (stat, n - 1)
    stat2 = float(((halves[0] - halves[1]) ** 2).sum() / (R * p * (1 - p)))
    assert chi2.sf(stat2, n - 1) > 1e-4, (stat2, n - 1)


def test_anchor_never_acts_as_negative():
    """The anchor's own index, when drawn, contributes nothing (reference ``rmvrpt``)."""
    torch.manual_seed(6)
    N, D = 5, 4
    s, t = torch.randn(N, D), torch.randn(N, D)
    with_self = torch.tensor([[0, 1, 2], [1, 0, 2], [2, 3, 4], [3, 4, 0], [4, 1, 2]])
    loss, _ = contrastive_loss(s, t, with_self, 0.1)
    # Each anchor scored by hand against its positive and its negatives minus itself.

    def normalize(x):
        return torch.nn.functional.normalize(x, dim=-1, eps=1e-6)

    expected = 0.0
    for n in range(N):
        others = [j for j in with_self[n].tolist() if j != n]
        logits = normalize(t[[n] + others]) @ normalize(s[n]) / 0.1
        expected += -torch.log_softmax(logits, dim=0)[0].item()
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def _largest_allocation(fn) -> int:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    return max(e.cpu_memory_usage for e in prof.events())


def test_sampling_and_loss_memory_is_o_nk_not_n_squared():
    """No single buffer of N x N: the largest allocation stays far below N*N*4 bytes."""
    torch.manual_seed(7)
    N, K, D = 3000, 50, 8
    n_squared_bytes = N * N * 4

    biggest_sampling = _largest_allocation(lambda: sample_negatives(N, K))
    assert biggest_sampling < n_squared_bytes / 8, biggest_sampling

    s = torch.randn(N, D, requires_grad=True)
    t = torch.randn(N, D)
    negatives = sample_negatives(N, K)

    def loss_fwd_bwd():
        loss, _ = contrastive_loss(s, t, negatives, 0.02)
        loss.backward()

    biggest_loss = _largest_allocation(loss_fwd_bwd)
    assert biggest_loss < n_squared_bytes / 8, biggest_loss


# ----------------------------------------------------------------------------- distiller
def make_batch(seed=0, B=4, N=9, D=16, Dd=12, Dt=8):
    g = torch.Generator().manual_seed(seed)
    target_lengths = torch.tensor([9, 7, 5, 3])
    ys_out = torch.randint(0, 6, (B, 9), generator=g)
    for b, n in enumerate(target_lengths.tolist()):
        ys_out[b, n:] = -1
    return dict(
        cif_out=torch.randn(B, N, D, generator=g),
        cif_lengths=torch.tensor([9, 6, 5, 3]),  # utt 1: CIF fired one token short
        decoder_states=torch.randn(B, N, Dd, generator=g),
        teacher=torch.randn(B, 9, Dt, generator=g),
        teacher_lengths=torch.tensor([9, 7, 5, 2]),  # utt 3: misaligned (2 rows for 3 targets)
        ys_out=ys_out,
        utt_id=["u0", "u1", "u2", "u3"],
    )


def selected_positions(batch):
    """(b, j) pairs the reference distils: aligned utterances, j < min(teacher rows, CIF tokens)."""
    pos = []
    for b in range(batch["ys_out"].size(0)):
        L1 = int((batch["ys_out"][b] != -1).sum())
        if int(batch["teacher_lengths"][b]) != L1:
            continue
        pos += [(b, j) for j in range(min(L1, int(batch["cif_lengths"][b])))]
    return pos


def test_distiller_mse_cos_lrd_match_naive_selection():
    batch = make_batch()
    pos = selected_positions(batch)
    for acoustic, weight in (("mse", 1.0), ("cos", 0.2)):
        torch.manual_seed(0)
        d = HierarchicalDistiller(cif_dim=16, decoder_state_dim=12, teacher_dim=8, acoustic_loss=acoustic,
                                  acoustic_weight=weight, linguistic_weight=0.01)
        cif = batch["cif_out"].clone().requires_grad_()
        dec = batch["decoder_states"].clone().requires_grad_()
        out = d(**{**batch, "cif_out": cif, "decoder_states": dec})
        out["loss_distill"].backward()

        cif_r = batch["cif_out"].clone().double().requires_grad_()
        dec_r = batch["decoder_states"].clone().double().requires_grad_()
        A = {k: v.detach().double() for k, v in d.acoustic_proj.state_dict().items()}
        Lp = {k: v.detach().double() for k, v in d.linguistic_proj.state_dict().items()}
        c_hat = torch.stack([A["weight"] @ cif_r[b, j] + A["bias"] for b, j in pos])
        s_hat = torch.stack([Lp["weight"] @ dec_r[b, j] + Lp["bias"] for b, j in pos])
        e = torch.stack([batch["teacher"][b, j].double() for b, j in pos])
        ad = naive_mse(c_hat, e, 0.01) if acoustic == "mse" else naive_cos(c_hat, e, 10.0)
        ld = naive_mse(s_hat, e)
        ref_total = weight * ad + 0.01 * ld
        ref_total.backward()

        key = "loss_ad_mse" if acoustic == "mse" else "loss_ad_cos"
        assert out[key].item() == pytest.approx(ad.item(), rel=1e-5)
        assert out["loss_lrd"].item() == pytest.approx(ld.item(), rel=1e-5)
        assert out["loss_distill"].item() == pytest.approx(ref_total.item(), rel=1e-5)
        assert out["distill_tokens"].item() == len(pos) and out["distill_skipped"].item() == 1
        torch.testing.assert_close(cif.grad.double(), cif_r.grad, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(dec.grad.double(), dec_r.grad, rtol=1e-4, atol=1e-6)


def test_distiller_contrastive_uses_batch_wide_negatives():
    batch = make_batch(seed=1)
    pos = selected_positions(batch)
    d = HierarchicalDistiller(cif_dim=16, decoder_state_dim=12, teacher_dim=8, num_negatives=700,
                              temperature=0.02, linguistic_weight=0.0)
    assert d.linguistic_proj is None
    torch.manual_seed(11)
    out = d(**batch)
    # Same RNG stream: the sampler draws first inside the distiller.
    torch.manual_seed(11)
    negatives = sample_negatives(len(pos), 700)
    assert negatives.size(1) == int(0.8 * len(pos))  # fallback: batch smaller than K
    with torch.no_grad():
        c_hat = torch.stack([d.acoustic_proj(batch["cif_out"][b, j]) for b, j in pos])
    e = torch.stack([batch["teacher"][b, j] for b, j in pos])
    ref, correct = naive_contrastive(c_hat.double(), e.double(), negatives, 0.02)
    assert out["loss_acd"].item() == pytest.approx(ref.item(), rel=1e-4)
    assert out["acc_contrastive"].item() == pytest.approx(correct / len(pos))
    assert out["loss_distill"].item() == pytest.approx(ref.item(), rel=1e-4)


def test_misaligned_policy_skip_logs_once_and_fail_names_utterance(caplog):
    batch = make_batch()
    d = HierarchicalDistiller(cif_dim=16, decoder_state_dim=12, teacher_dim=8)
    with caplog.at_level(logging.WARNING):
        d(**batch)
        d(**batch)
    messages = [r.getMessage() for r in caplog.records if "u3" in r.getMessage()]
    assert len(messages) == 1 and "2 rows, expected 3" in messages[0]

    strict = HierarchicalDistiller(cif_dim=16, decoder_state_dim=12, teacher_dim=8, misaligned_policy="fail")
    with pytest.raises(ValueError, match="u3"):
        strict(**batch)


def test_only_projection_weights_are_state():
    d = HierarchicalDistiller(cif_dim=16, decoder_state_dim=12, teacher_dim=8, acoustic_loss="none")
    assert list(d.state_dict()) == ["linguistic_proj.weight", "linguistic_proj.bias"]
    d = HierarchicalDistiller(cif_dim=16, decoder_state_dim=12, teacher_dim=8, linguistic_weight=0.0)
    assert sorted(d.state_dict()) == ["acoustic_proj.bias", "acoustic_proj.weight"]
    with pytest.raises(ValueError):
        HierarchicalDistiller(cif_dim=4, decoder_state_dim=4, acoustic_loss="l1")
