"""Continuous integrate-and-fire (CIF), exact and vectorised.

Weights are integrated along time in units of the threshold ``beta``: with ``c_t`` the running sum
of ``alpha / beta`` (fp64), token ``k`` owns the weight in the interval ``[k, k+1)``. A frame whose
interval ``(c_{t-1}, c_t]`` crosses one or more integers is split exactly among the tokens it
touches (no negative left-overs, several fires per frame allowed). Per frame there are at most three
kinds of share: the part that closes the token it started in (``first``), the part that opens the
token it ends in (``last``) and whole tokens strictly inside the frame (``middle``, weight 1 each).
``first`` is added with ``index_add`` over flattened rows; each token has at most one ``middle`` frame,
found by ``searchsorted``, and the frame holding a ``last`` share is the fire frame of the token
before. No Python loop over frames, one host sync (the output length).

Differences from the official HKD code (docs/differences.md), all deliberate:
- fires exactly at multiples of ``threshold`` and consumes ``threshold`` (the reference fires at
  0.99 but subtracts 1.0, leaving negative remainders); a frame may fire several times;
- accumulation in fp64 whatever the input dtype (the reference runs in fp16 under --fp16);
- in training the scaled cumulative sum ends at exactly ``target_lengths`` (computed as
  ``(cumsum / total) * L``), so the token count equals the target for every utterance;
- the tail is examined for every utterance after its own last valid frame, so an utterance gives
  the same result alone or as the longest of a batch (the reference drops the longest one's tail);
- the tail token is rescaled to weight ``threshold`` (``state * threshold / residual``, as
  torch-cif); with threshold 1.0 this equals the reference's ``state / residual``.
"""
from dataclasses import dataclass
from typing import Optional

import torch


@dataclass
class CIFOutput:
    """Result of :func:`cif`.

    outputs: (B, N, D) integrated vectors, zero beyond ``lengths``.
    lengths: (B,) number of emitted tokens (tail token included).
    alpha_sum: (B,) sum of the unscaled valid weights (for the quantity loss).
    fire_positions: (B, N) frame index at which each token fired, -1 beyond ``lengths``.
    alphas: (B, T) the weights actually integrated (scaled in training), zero on padding.
    """

    outputs: torch.Tensor
    lengths: torch.Tensor
    alpha_sum: torch.Tensor
    fire_positions: torch.Tensor
    alphas: torch.Tensor


def cif(
    hidden: torch.Tensor,
    alphas: torch.Tensor,
    lengths: torch.Tensor,
    threshold: float = 1.0,
    target_lengths: Optional[torch.Tensor] = None,
    tail_threshold: Optional[float] = None,
) -> CIFOutput:
    """Integrate ``hidden`` (B, T, D) with weights ``alphas`` (B, T) over ``lengths`` valid frames.

    ``target_lengths`` (training): scale each utterance's weights to sum to
    ``target_lengths * threshold``; exactly ``target_lengths`` tokens are emitted when the
    utterance has any positive weight. ``tail_threshold`` (inference): a residual weight
    ``>= tail_threshold`` emits one more token, rescaled to weight ``threshold``.
    """
    if hidden.dim() != 3 or alphas.shape != hidden.shape[:2]:
        raise ValueError(f"cif: hidden (B,T,D) and alphas (B,T) expected, got {tuple(hidden.shape)} "
                         f"and {tuple(alphas.shape)}")
    if threshold <= 0:
        raise ValueError(f"cif: threshold must be positive, got {threshold}")
    B, T, D = hidden.shape
    device = hidden.device
    lengths = lengths.to(device=device, dtype=torch.long)
    valid = torch.arange(T, device=device)[None, :] < lengths[:, None]
    a32 = alphas.to(torch.promote_types(alphas.dtype, torch.float32)).masked_fill(~valid, 0.0)
    alpha_sum = a32.sum(1)

    cum = torch.cumsum(a32.double(), dim=1)
    total = cum[:, -1:] if T > 0 else cum.new_zeros(B, 1)
    if target_lengths is not None:
        target = target_lengths.to(device=device, dtype=torch.float64)[:, None]
        # (cum / total) * L: x / x == 1 exactly in IEEE, so the last value is exactly L.
        c = torch.where(total > 0, cum / total.clamp_min(1e-300) * target, torch.zeros_like(cum))
        scaled = a32 * torch.where(total > 0, target / total.clamp_min(1e-300), 0.0).to(a32.dtype)
    else:
        c = cum / threshold
        scaled = a32
    prev = torch.cat([c.new_zeros(B, 1), c[:, :-1]], dim=1)[:, :T]

    c_last = c[:, -1] if T > 0 else c.new_zeros(B)
    n_fire = torch.floor(c_last.detach()).long()
    residual = c_last - n_fire  # in threshold units; differentiable (the tail is divided by it)
    if tail_threshold is not None and target_lengths is None:
        has_tail = (residual.detach() * threshold >= tail_threshold) & (residual.detach() > 0)
    else:
        has_tail = torch.zeros_like(n_fire, dtype=torch.bool)
    out_lengths = n_fire + has_tail.long()
    N = int(out_lengths.max()) if B > 0 else 0  # the one host sync: the output size

    start_tok = torch.floor(prev.detach()).long()
    end_tok = torch.floor(c.detach()).long()
    w_first = torch.minimum(c, start_tok + 1.0) - prev
    # Slot N collects the residual of utterances whose residual does not become a token.
    start_idx = start_tok.clamp(0, N)

    compute = torch.promote_types(hidden.dtype, torch.float32)
    rows = torch.arange(B, device=device)[:, None] * (N + 1)  # flat row of token 0 per utterance
    # index_add over flattened rows: one index per frame, vectorised over D (cheaper than a
    # scatter_add whose index is expanded to (B, T, D)).
    out = hidden.new_zeros(B * (N + 1), D, dtype=compute)
    h_flat = hidden.to(compute).reshape(B * T, D)
    out = out.index_add(0, (rows + start_idx).reshape(-1),
                        h_flat * (w_first * threshold).to(compute).reshape(-1, 1))

    fire_positions = torch.full((B, N), -1, dtype=torch.long, device=device)
    token = torch.arange(N, device=device)
    fired = token[None, :] < n_fire[:, None]
    is_tail = has_tail[:, None] & (token[None, :] == n_fire[:, None])
    if N > 0 and T > 0:
        # First frame whose cumulative weight reaches k+1 fires token k.
        bounds = (token.to(torch.float64) + 1.0).expand(B, N).contiguous()
        fire = torch.searchsorted(c.detach().contiguous(), bounds).clamp(max=T - 1)
        # Token k lies wholly inside its fire frame when that frame started before k.
        middle = fired & (torch.gather(start_tok, 1, fire) < token[None, :])
        frame_rows = (torch.arange(B, device=device)[:, None] * T + fire).reshape(-1)
        fire_h = h_flat.index_select(0, frame_rows)  # (B*N, D): only fire frames carry more shares
        token_rows = rows + token[None, :]
        out = out.index_add(0, token_rows.reshape(-1),
                            fire_h * (middle.to(compute) * threshold).reshape(-1, 1))
        # The part of a frame beyond its last crossed integer e opens token e; that frame is the
        # fire frame of token e-1, so the `last` shares need B*N rows, not B*T.
        next_token = token[None, :] + 1
        opens = fired & (torch.gather(end_tok, 1, fire) == next_token)
        c_fire = torch.gather(c, 1, fire)
        w_last = torch.where(opens, c_fire - next_token.to(c.dtype), torch.zeros_like(c_fire))
        out = out.index_add(0, (token_rows + 1).reshape(-1),
                            fire_h * (w_last * threshold).to(compute).reshape(-1, 1))
        last_valid = (lengths - 1).clamp(min=0)[:, None].expand(B, N)
        fire_positions = torch.where(fired, fire, fire_positions)
        fire_positions = torch.where(is_tail, last_valid, fire_positions)
    # One pass: rescale the tail token to weight `threshold` (residual is in threshold units) and
    # zero the residual slots that did not become tokens.
    inv_residual = 1.0 / residual.clamp_min(1e-12)[:, None]
    scale = torch.where(is_tail, inv_residual, fired.to(inv_residual.dtype)).to(compute)
    outputs = (out.view(B, N + 1, D)[:, :N] * scale[:, :, None]).to(hidden.dtype)
    return CIFOutput(outputs=outputs, lengths=out_lengths, alpha_sum=alpha_sum,
                     fire_positions=fire_positions, alphas=scaled)


def tokens_before_eos(num_fires: torch.Tensor) -> torch.Tensor:
    """Tokens a CIF hypothesis holds before its ``<eos>``: ``max(N - 1, 0)`` for ``N`` fires.

    Training scales the weights to ``L + 1`` fires and the decoder predicts ``<eos>`` from the
    ``(L+1)``-th integrated vector, so decoding takes ``N`` steps, the last of which is ``<eos>``.
    ``N = 0`` or ``1`` gives an empty hypothesis (``<eos>`` at step 0).
    """
    return (num_fires - 1).clamp(min=0)
