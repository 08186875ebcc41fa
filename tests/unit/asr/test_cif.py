"""The vectorised CIF op against the sequential specification (tests/cif_reference.py)."""
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from espnet_ext.asr.cif import cif
from tests.cif_reference import cif_sequential

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _batch(B, T, D, seed, high=0.6, device="cpu", dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, T, D, generator=g, dtype=torch.float64)
    alphas = torch.rand(B, T, generator=g, dtype=torch.float64) * high
    lengths = torch.randint(0, T + 1, (B,), generator=g)
    if B:
        lengths[0] = T  # the longest utterance spans the whole batch
    return hidden.to(device, dtype), alphas.to(device, dtype), lengths.to(device)


def _assert_matches(res, ref_outs, ref_fires, atol):
    assert res.lengths.tolist() == [len(o) for o in ref_outs]
    N = res.outputs.shape[1]
    for b, (o, f) in enumerate(zip(ref_outs, ref_fires)):
        n = len(o)
        torch.testing.assert_close(res.outputs[b, :n].double().cpu(), o, atol=atol, rtol=atol)
        assert torch.all(res.outputs[b, n:] == 0)
        assert res.fire_positions[b, :n].tolist() == f
        assert torch.all(res.fire_positions[b, n:] == -1)
    assert N == max([len(o) for o in ref_outs], default=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("tail", [None, 0.4])
@pytest.mark.parametrize("threshold", [1.0, 0.9])
def test_inference_matches_sequential(device, tail, threshold):
    hidden, alphas, lengths = _batch(6, 40, 5, seed=1, device=device, dtype=torch.float64)
    res = cif(hidden, alphas, lengths, threshold=threshold, tail_threshold=tail)
    ref, fires = cif_sequential(hidden.cpu(), alphas.cpu(), lengths.cpu(), threshold, None, tail)
    _assert_matches(res, ref, fires, atol=1e-9)
    valid = torch.arange(40, device=device)[None] < lengths[:, None]
    torch.testing.assert_close(res.alpha_sum.double(), (alphas * valid).sum(1))


@pytest.mark.parametrize("device", DEVICES)
def test_training_scaling_fires_exactly_target(device):
    hidden, alphas, lengths = _batch(8, 60, 4, seed=2, device=device)
    lengths = lengths.clamp(min=1)
    target = torch.randint(1, 25, (8,), device=device)
    res = cif(hidden, alphas, lengths, target_lengths=target)
    assert res.lengths.tolist() == target.tolist()
    ref, fires = cif_sequential(hidden.cpu(), alphas.cpu(), lengths.cpu(), 1.0, target.cpu(), None)
    _assert_matches(res, ref, fires, atol=1e-4)
    # Every token carries exactly one threshold of weight; the scaled weights sum to the target.
    valid = torch.arange(60, device=device)[None] < lengths[:, None]
    torch.testing.assert_close(res.alphas.sum(1), target.float(), rtol=1e-5, atol=1e-4)
    assert torch.all(res.alphas[~valid] == 0)


def test_exact_count_despite_rounding():
    # Weights like 0.1 do not sum exactly in binary; a rounding-prone sum must still fire L tokens.
    T = 1000
    alphas = torch.full((3, T), 0.1)
    hidden = torch.ones(3, T, 2)
    lengths = torch.tensor([T, 999, 7])
    target = torch.tensor([100, 37, 3])
    res = cif(hidden, alphas, lengths, target_lengths=target)
    assert res.lengths.tolist() == [100, 37, 3]
    # All-ones hidden: each token is its integrated weight (1.0).
    for b, n in enumerate(target.tolist()):
        torch.testing.assert_close(res.outputs[b, :n], torch.ones(n, 2), atol=1e-4, rtol=0)


def test_multi_fire_frame_splits_exactly():
    hidden = torch.tensor([[[1.0], [10.0], [100.0]]])
    alphas = torch.tensor([[0.5, 2.25, 0.25]])
    res = cif(hidden, alphas, torch.tensor([3]))
    # tokens: [0.5*1 + 0.5*10], [1*10], [0.75*10 + 0.25*100]; no negative left-over
    assert res.lengths.tolist() == [3]
    torch.testing.assert_close(res.outputs[0, :, 0], torch.tensor([5.5, 10.0, 32.5]))
    assert res.fire_positions[0].tolist() == [1, 1, 2]


def official_loop(hidden, alphas, beta=0.99):
    """The official CIF-HieraDist integrate-and-fire loop, one utterance, no tail handling
    (written from its description in docs/differences.md, "Reference implementation"): it fires
    when the accumulated weight reaches 0.99 but always consumes 1.0, and fires at most once per
    frame."""
    acc, state, outs = 0.0, torch.zeros(hidden.size(-1), dtype=torch.float64), []
    for a, h in zip(alphas.tolist(), hidden.double()):
        if acc + a >= beta:
            outs.append(state + (1.0 - acc) * h)
            acc = acc + a - 1.0
            state = acc * h
        else:
            acc += a
            state = state + a * h
    return torch.stack(outs) if outs else torch.zeros(0, hidden.size(-1), dtype=torch.float64)


def test_matches_the_official_loop_away_from_its_099_margin():
    """A peer implementation: where no running sum ends within 0.01 below an integer and no weight
    exceeds 1, firing at 0.99 (official) and at 1.0 (ours) split the frames identically."""
    g = torch.Generator().manual_seed(0)  # a seed whose running sums satisfy the precondition
    hidden = torch.randn(1, 60, 3, generator=g, dtype=torch.float64)
    alphas = torch.rand(1, 60, generator=g, dtype=torch.float64) * 0.5 + 0.05
    cum = alphas[0].cumsum(0)
    assert ((torch.ceil(cum) - cum)[cum % 1 != 0] > 0.01).all()  # the precondition holds
    res = cif(hidden, alphas, torch.tensor([60]))
    want = official_loop(hidden[0], alphas[0])
    assert res.lengths.item() == len(want) == int(cum[-1])
    torch.testing.assert_close(res.outputs[0], want, atol=1e-12, rtol=1e-12)
    # Inside the margin they differ, as documented: weights 0.995, 0.5, 0.505 on h0, h1, h2.
    # official: fires at frame 0 with (1 - 0)*h0 = h0 (leftover -0.005), then
    #           -0.005*h0 + 0.5*h1 + 0.505*h2 at frame 2 (acc -0.005 + 0.5 + 0.505 = 1.0);
    # ours:     0.995*h0 + 0.005*h1 at frame 1, then 0.495*h1 + 0.505*h2 at frame 2.
    h = torch.eye(3, dtype=torch.float64)[None]
    a = torch.tensor([[0.995, 0.5, 0.505]], dtype=torch.float64)
    torch.testing.assert_close(official_loop(h[0], a[0]),
                               torch.tensor([[1.0, 0, 0], [-0.005, 0.5, 0.505]], dtype=torch.float64))
    ours = cif(h, a, torch.tensor([3]))
    torch.testing.assert_close(ours.outputs[0], torch.tensor([[0.995, 0.005, 0], [0, 0.495, 0.505]],
                                                             dtype=torch.float64))
    assert ours.fire_positions[0].tolist() == [1, 2]


def test_tail_same_alone_or_longest_in_batch():
    g = torch.Generator().manual_seed(5)
    h = torch.randn(1, 30, 3, generator=g)
    a = torch.full((1, 30), 0.13)  # sum 3.9 -> three fires plus a 0.9 tail
    alone = cif(h, a, torch.tensor([30]), tail_threshold=0.4)
    other_h, other_a = torch.randn(1, 30, 3, generator=g), torch.rand(1, 30, generator=g) * 0.3
    batch = cif(torch.cat([h, other_h]), torch.cat([a, other_a]), torch.tensor([30, 20]),
                tail_threshold=0.4)
    assert alone.lengths.tolist() == [4] and batch.lengths[0].item() == 4
    n = alone.lengths[0]
    torch.testing.assert_close(batch.outputs[0, :n], alone.outputs[0, :n])
    assert alone.fire_positions[0, -1].item() == 29


def test_zero_fire_and_empty_batch():
    res = cif(torch.randn(3, 10, 4), torch.full((3, 10), 0.01), torch.tensor([10, 5, 0]))
    assert res.outputs.shape == (3, 0, 4) and res.lengths.tolist() == [0, 0, 0]
    res = cif(torch.randn(2, 10, 4), torch.zeros(2, 10), torch.tensor([10, 3]),
              target_lengths=torch.tensor([0, 0]))
    assert res.outputs.shape == (2, 0, 4)
    res = cif(torch.randn(0, 10, 4), torch.zeros(0, 10), torch.zeros(0, dtype=torch.long))
    assert res.outputs.shape == (0, 0, 4)
    for target in (None, torch.tensor([2, 0])):  # no frames at all (input shorter than subsampling)
        res = cif(torch.randn(2, 0, 4), torch.zeros(2, 0), torch.tensor([0, 0]), target_lengths=target,
                  tail_threshold=0.4)
        assert res.outputs.shape == (2, 0, 4) and res.lengths.tolist() == [0, 0]
    # A residual below the tail threshold is dropped, one above becomes a token.
    res = cif(torch.ones(2, 4, 1), torch.tensor([[0.1] * 4, [0.2] * 4]), torch.tensor([4, 4]),
              tail_threshold=0.5)
    assert res.lengths.tolist() == [0, 1]
    torch.testing.assert_close(res.outputs[1, 0, 0], torch.tensor(1.0))


@pytest.mark.parametrize("training", [False, True])
def test_gradcheck_fp64(training):
    g = torch.Generator().manual_seed(3)
    hidden = torch.randn(2, 7, 3, generator=g, dtype=torch.float64, requires_grad=True)
    alphas = (torch.rand(2, 7, generator=g, dtype=torch.float64) * 0.5 + 0.2).requires_grad_()
    lengths = torch.tensor([7, 5])
    target = torch.tensor([3, 2]) if training else None

    def f(h, a):
        return cif(h, a, lengths, target_lengths=target, tail_threshold=None if training else 0.3).outputs

    assert torch.autograd.gradcheck(f, (hidden, alphas), eps=1e-7, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_inputs(device, dtype):
    hidden, alphas, lengths = _batch(4, 200, 8, seed=4, device=device, dtype=dtype)
    lengths = lengths.clamp(min=1)
    hidden.requires_grad_()
    alphas.requires_grad_()
    target = torch.randint(20, 50, (4,), device=device)
    res = cif(hidden, alphas, lengths, target_lengths=target)
    assert res.outputs.dtype == dtype
    assert res.lengths.tolist() == target.tolist()  # exact count despite low-precision weights
    ref, _ = cif_sequential(hidden.detach().float().cpu(), alphas.detach().float().cpu(), lengths.cpu(),
                            1.0, target.cpu(), None)
    for b, o in enumerate(ref):
        torch.testing.assert_close(res.outputs[b, :len(o)].double().cpu(), o, atol=0.05, rtol=0.02)

    # Gradients of S = sum of every output, by hand. In training the valid frames' scaled weights
    # a'_t = a_t L / A (A = sum of the valid a_t) sum to exactly L and all of it lands in the L
    # tokens, so S = sum_t a'_t g_t with g_t = sum_d h_td, hence
    #   dS/dh_td = a'_t                                 (0 on padded frames)
    #   dS/da_t  = L/A g_t - sum_s a_s L g_s / A^2 = (L/A) (g_t - S/L)   (0 on padded frames)
    res.outputs.float().sum().backward()
    h, a = hidden.detach().double().cpu(), alphas.detach().double().cpu()
    valid = (torch.arange(200)[None] < lengths.cpu()[:, None]).double()
    a = a * valid
    L, A = target.cpu().double()[:, None], a.sum(1, keepdim=True)
    g = h.sum(-1)
    S = (a * L / A * g).sum(1, keepdim=True)
    want_h = (a * L / A)[:, :, None].expand_as(h)
    want_a = (L / A) * (g - S / L) * valid
    assert hidden.grad.dtype == dtype and alphas.grad.dtype == dtype
    torch.testing.assert_close(hidden.grad.double().cpu(), want_h, atol=5e-3, rtol=1e-2)
    torch.testing.assert_close(alphas.grad.double().cpu(), want_a, atol=0.05, rtol=1e-2)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    B=st.integers(1, 5), T=st.integers(1, 30), D=st.integers(1, 4),
    threshold=st.sampled_from([0.5, 0.8, 1.0, 1.3]),
    high=st.sampled_from([0.3, 1.0, 2.5]),  # 2.5 makes multi-fire frames common
    mode=st.sampled_from(["train", "infer", "infer_tail"]),
    tail=st.floats(0.05, 0.95), seed=st.integers(0, 2**16),
)
def test_property_matches_sequential(B, T, D, threshold, high, mode, tail, seed):
    hidden, alphas, lengths = _batch(B, T, D, seed, high=high, dtype=torch.float64)
    target = None
    if mode == "train":
        target = torch.randint(0, 3 * T, (B,), generator=torch.Generator().manual_seed(seed))
    tail_thr = tail * threshold if mode == "infer_tail" else None
    res = cif(hidden, alphas, lengths, threshold=threshold, target_lengths=target,
              tail_threshold=tail_thr)
    ref, fires = cif_sequential(hidden, alphas, lengths, threshold, target, tail_thr)
    _assert_matches(res, ref, fires, atol=1e-8)
    if target is not None:
        has_weight = (alphas * (torch.arange(T)[None] < lengths[:, None])).sum(1) > 0
        assert torch.equal(res.lengths[has_weight], target[has_weight])
