"""Token-level distillation losses of hierarchical knowledge distillation (HKD).

Every loss returns a SUM over tokens (and dims where stated), the way the official CIF-HieraDist
criterion does; the caller divides by the number of target tokens (incl. EOS) of the batch
(docs/differences.md). Inputs are flattened to the N valid tokens of a batch:
``student`` (N, D) projected student vectors, ``teacher`` (N, D) teacher features of the same
tokens. Losses are computed in fp32 whatever the input dtype (the reference casts to float).

- :func:`contrastive_loss` (ACD, paper eq. 2, reference ``calculate_cif_contrastive_dis_cos_loss``)
- :func:`mse_loss` (paper eq. 3 and LRD eq. 5 / reference ``noscale``)
- :func:`cosine_loss` (paper eq. 4)
- :func:`sample_negatives`: K negatives per anchor, uniform without replacement, memory O(N*K).
"""
import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

#: Logit given to a removed negative (the anchor itself, or a same-token one); exp() of it is 0.
MASKED_LOGIT = -1e9
#: L2-normalisation epsilon of the reference (``F.normalize(..., eps=1e-6)``).
NORM_EPS = 1e-6


def effective_num_negatives(num_anchors: int, num_negatives: int, fallback_ratio: float = 0.8) -> int:
    """K actually used for a batch of ``num_anchors`` tokens.

    As the reference: when the batch has no more tokens than K, K becomes int(ratio * N).
    """
    if num_anchors <= num_negatives:
        return int(fallback_ratio * num_anchors)
    return num_negatives


def sample_negatives(
    num_anchors: int,
    num_negatives: int,
    fallback_ratio: float = 0.8,
    device: Optional[torch.device] = None,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Indices (N, K) of K negatives per anchor, drawn uniformly WITHOUT replacement from [0, N).

    Same distribution as the reference's ``torch.multinomial(ones(N, N), K)`` (independent rows,
    the anchor's own index may be drawn and is masked later by the loss), exact, and bounded in
    time and memory for every N. K follows :func:`effective_num_negatives`. Two regimes:

    - dense (K > N/2, or small N): the K smallest of N i.i.d. uniform keys per row form a uniform
      K-subset. The (N, N) keys take no more memory than the (N, K) int64 result itself.
    - sparse (K <= N/2): each row draws M i.i.d. indices with replacement, M chosen so that the
      draws hold >= K distinct values with overwhelming probability; a uniform K-subset of the
      distinct values (random keys) is a uniform K-subset of [0, N), since the distinct values of
      i.i.d. draws form a uniformly random subset given its size. A row with too few distinct
      values is redrawn; after two redraws the remaining rows take the dense path, so the time is
      bounded. Memory and time O(N * M) with M < 1.4 N and M < 2.4 K + O(sqrt K).
    """
    n = num_anchors
    k = effective_num_negatives(n, num_negatives, fallback_ratio)
    if n == 0 or k <= 0:
        return torch.zeros(n, 0, dtype=torch.long, device=device)
    out = torch.empty(n, k, dtype=torch.long, device=device)
    rows = torch.arange(n, device=device)
    # Draws per row: E[#distinct of M draws] = n(1 - (1 - 1/n)^M) = n * p; aim 6 sd above K.
    p = (k + 6.0 * math.sqrt(k) + 1.0) / n
    if 2 * k <= n and p < 0.75:
        m = max(k, math.ceil(-n * math.log1p(-p)))
        for _ in range(3):
            if rows.numel() == 0:
                return out
            r = rows.numel()
            draws = torch.randint(n, (r, m), device=device, generator=generator, dtype=torch.int32)
            draws, _ = draws.sort(dim=1)
            duplicate = torch.zeros_like(draws, dtype=torch.bool)
            duplicate[:, 1:] = draws[:, 1:] == draws[:, :-1]
            keys = torch.rand(r, m, device=device, generator=generator)
            keys.masked_fill_(duplicate, 2.0)  # never chosen while a distinct value is left
            chosen_keys, pos = keys.topk(k, dim=1, largest=False, sorted=False)
            ok = chosen_keys.amax(dim=1) < 2.0
            out[rows[ok]] = draws.gather(1, pos)[ok].long()
            rows = rows[~ok]
    if rows.numel() > 0:
        keys = torch.rand(rows.numel(), n, device=device, generator=generator)
        out[rows] = keys.topk(k, dim=1, largest=False, sorted=False).indices
    return out


class _GatheredDot(torch.autograd.Function):
    """``out[n, k] = <z[n], e[idx[n, k]]>`` without an N x N or N x K x D tensor.

    Rows are processed in chunks of ``chunk`` anchors (chunk x N scores at a time); the backward
    pass scatters the (chunk, K) gradient into (chunk, N) and multiplies by ``e`` again, so
    only z, e and idx are kept for backward: O(N*K + N*D) memory.
    """

    @staticmethod
    def forward(ctx, z, e, idx, chunk: int):
        out = z.new_empty(idx.shape)
        for s in range(0, z.size(0), chunk):
            out[s : s + chunk] = (z[s : s + chunk] @ e.t()).gather(1, idx[s : s + chunk])
        ctx.save_for_backward(z, e, idx)
        ctx.chunk = chunk
        return out

    @staticmethod
    def backward(ctx, grad_out):
        z, e, idx = ctx.saved_tensors
        grad_z = torch.zeros_like(z) if ctx.needs_input_grad[0] else None
        grad_e = torch.zeros_like(e) if ctx.needs_input_grad[1] else None
        for s in range(0, z.size(0), ctx.chunk):
            g = grad_out[s : s + ctx.chunk]
            dense = g.new_zeros(g.size(0), e.size(0)).scatter_add_(1, idx[s : s + ctx.chunk], g)
            if grad_z is not None:
                grad_z[s : s + ctx.chunk] = dense @ e
            if grad_e is not None:
                grad_e += dense.t() @ z[s : s + ctx.chunk]
        return grad_z, grad_e, None, None


def gathered_dot(z: torch.Tensor, e: torch.Tensor, idx: torch.Tensor, chunk: Optional[int] = None):
    """(N, K) inner products of each z[n] with the rows ``e[idx[n]]`` (see :class:`_GatheredDot`)."""
    if chunk is None:
        # chunk x N scores per step, bounded by the (N, K) index tensor we hold anyway.
        chunk = max(64, idx.size(1))
    return _GatheredDot.apply(z, e, idx, chunk)


def contrastive_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    negatives: torch.Tensor,
    temperature: float = 0.02,
    token_ids: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Acoustic contrastive distillation (InfoNCE), summed over anchors.

    student, teacher: (N, D); negatives: (N, K) indices into the N teacher rows. Both sides are
    L2-normalised (eps 1e-6); logits are [cos(z_n, e_n), cos(z_n, e_neg)...] / temperature and
    the loss is CE with label 0. A negative equal to the anchor's own index is removed (the
    reference's ``rmvrpt``); with ``token_ids`` (N,), negatives of the same token id as the
    anchor are removed too (not done by the reference). Returns (loss_sum, num_correct) where
    num_correct counts anchors whose positive has the largest logit (contrastive accuracy).
    """
    z = F.normalize(student.float(), dim=-1, eps=NORM_EPS)
    e = F.normalize(teacher.float(), dim=-1, eps=NORM_EPS)
    pos = (z * e).sum(dim=-1, keepdim=True)
    neg = gathered_dot(z, e, negatives)
    removed = negatives == torch.arange(z.size(0), device=z.device).unsqueeze(1)
    if token_ids is not None:
        removed = removed | (token_ids[negatives] == token_ids.unsqueeze(1))
    logits = torch.cat([pos, neg], dim=1) / temperature
    logits = logits.masked_fill(F.pad(removed, (1, 0), value=False), MASKED_LOGIT)
    labels = torch.zeros(z.size(0), dtype=torch.long, device=z.device)
    loss = F.cross_entropy(logits, labels, reduction="sum")
    num_correct = (logits.detach().argmax(dim=1) == 0).sum()
    return loss, num_correct


def mse_loss(student: torch.Tensor, teacher: torch.Tensor, dim_reduction: str = "sum") -> torch.Tensor:
    """Squared error summed over tokens; over dims summed (reference ``noscale``) or averaged."""
    sq = (student.float() - teacher.float()).pow(2)
    if dim_reduction == "sum":
        return sq.sum()
    if dim_reduction == "mean":
        return sq.mean(dim=-1).sum()
    raise ValueError(f"dim_reduction must be 'sum' or 'mean', got {dim_reduction!r}")


def cosine_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Cosine-embedding loss with target 1, summed over tokens: sum(1 - cos(c_n, e_n))."""
    return (1.0 - F.cosine_similarity(student.float(), teacher.float(), dim=-1)).sum()
