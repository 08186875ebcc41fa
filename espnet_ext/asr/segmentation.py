"""Split points for long inputs: cut a recording into segments of bounded length in its quietest
places, so that decoding memory depends on the segment length, not on the recording's.

    energy = frame_energy(speech, hop)                 # one value per frame
    points = split_points(energy, hop, len(speech), max_len)
    for start, end in segment_bounds(points, len(speech)): ...

A frame is ``hop`` input units (1 for features, e.g. 160 samples for 16 kHz audio). Each segment
ends at a frame boundary chosen, among the last ``search`` share of the allowed window, where the
smoothed energy is lowest, so a cut falls into a pause when there is one near the limit.
"""
import math
from typing import List, Tuple

import numpy as np


def frame_energy(speech: np.ndarray, hop: int = 1, smooth: int = 11) -> np.ndarray:
    """Loudness per frame of ``hop`` units, moving-averaged over ``smooth`` frames (centred).

    2-D features (frames, dims), ``hop`` 1: the mean over the feature dims (for log-mel
    filterbanks the frame's log energy). Waveforms (samples,) or (samples, channels): the mean
    square of the samples of each ``hop`` (the last frame may be shorter). The average over a
    short window (0.11 s at 10 ms frames) makes a pause win over a single quiet frame in speech.
    """
    x = np.asarray(speech, dtype=np.float64)
    if hop == 1 and x.ndim == 2:
        energy = x.mean(axis=1)
    else:
        power = (x ** 2).reshape(len(x), -1).mean(axis=1)
        n = math.ceil(len(power) / hop)
        sums = np.add.reduceat(power, np.arange(n) * hop) if n else power[:0]
        counts = np.minimum(hop, len(power) - np.arange(n) * hop)
        energy = sums / counts
    return moving_average(energy, smooth)


def moving_average(values: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average of odd ``width``; the ends are padded with the edge values."""
    if width <= 1 or len(values) == 0:
        return np.asarray(values, dtype=np.float64)
    if width % 2 == 0:
        raise ValueError(f"moving average width must be odd, got {width}")
    padded = np.pad(np.asarray(values, dtype=np.float64), width // 2, mode="edge")
    cumsum = np.concatenate([[0.0], np.cumsum(padded)])
    return (cumsum[width:] - cumsum[:-width]) / width


def split_points(energy: np.ndarray, hop: int, length: int, max_len: int,
                 search: float = 0.2) -> List[int]:
    """Positions (input units, increasing) where ``length`` units are cut into segments of at
    most ``max_len``. Empty when ``length <= max_len`` or ``max_len <= 0`` (no limit).

    From a segment's start s, the cut goes to the frame boundary j*hop in
    [max(s + 1, s + max_len - floor(search*max_len)), s + max_len] whose frame j has the lowest ``energy``
    (the first on ties); that frame begins the next segment. Without a frame boundary in that
    range (``max_len`` shorter than a frame) the cut is at s + max_len.
    """
    if max_len <= 0:
        return []
    points: List[int] = []
    start = 0
    while length - start > max_len:
        hi = start + max_len
        lo = max(start + 1, hi - int(search * max_len))
        first, last = -(-lo // hop), min(hi // hop, len(energy) - 1)
        if first > last:
            cut = hi
        else:
            cut = (first + int(np.argmin(energy[first:last + 1]))) * hop
        points.append(cut)
        start = cut
    return points


def segment_bounds(points: List[int], length: int) -> List[Tuple[int, int]]:
    """(start, end) of the segments that ``points`` cut ``length`` units into."""
    edges = [0] + list(points) + [length]
    return list(zip(edges[:-1], edges[1:]))
