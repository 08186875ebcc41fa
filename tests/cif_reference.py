"""Plain sequential CIF: the specification the vectorised op is tested against.

Frame by frame, in fp64: the running position ``c`` (accumulated weight in threshold units)
advances by each frame's weight; every integer it reaches closes the current token, which fires
at that frame with the share of the frame up to the boundary. The position is tracked as a running
sum (not reset at each fire) so that rounding matches a cumulative sum.
"""
import torch


def cif_sequential(hidden, alphas, lengths, threshold=1.0, target_lengths=None, tail_threshold=None):
    """Returns (list of (n_b, D) fp64 tensors, list of fire-frame lists)."""
    B, T, D = hidden.shape
    outs, fires = [], []
    for b in range(B):
        n = int(lengths[b])
        a = alphas[b, :n].double()
        h = hidden[b, :n].double()
        total = 0.0
        for t in range(n):  # sequential, as the running position below
            total += float(a[t])
        running, c_prev, token = 0.0, 0.0, 0
        state = torch.zeros(D, dtype=torch.float64)
        toks, pos = [], []
        for t in range(n):
            running += float(a[t])
            if target_lengths is not None:
                c = running / total * float(target_lengths[b]) if total > 0 else 0.0
            else:
                c = running / threshold
            lo = c_prev
            while c >= token + 1:  # the frame reaches the next multiple of the threshold
                toks.append(state + (token + 1 - lo) * threshold * h[t])
                pos.append(t)
                lo, token = float(token + 1), token + 1
                state = torch.zeros(D, dtype=torch.float64)
            state = state + (c - lo) * threshold * h[t]
            c_prev = c
        residual = c_prev - token
        if (tail_threshold is not None and target_lengths is None and residual > 0
                and residual * threshold >= tail_threshold):
            toks.append(state / residual)
            pos.append(n - 1)
        outs.append(torch.stack(toks) if toks else torch.zeros(0, D, dtype=torch.float64))
        fires.append(pos)
    return outs, fires
