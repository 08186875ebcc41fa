"""Split points of long inputs (espnet_ext.asr.segmentation), with hand-computed expectations."""
import numpy as np
import pytest

from espnet_ext.asr.segmentation import frame_energy, moving_average, segment_bounds, split_points


def test_moving_average_is_centred_with_edge_padding():
    # padded [0, 0, 0, 3, 0, 0, 0] -> windows of 3
    assert moving_average(np.array([0.0, 0, 3, 0, 0]), 3).tolist() == [0, 1, 1, 1, 0]
    assert moving_average(np.array([2.0, 4]), 1).tolist() == [2, 4]
    with pytest.raises(ValueError, match="odd"):
        moving_average(np.array([1.0, 2]), 2)


def test_frame_energy_of_features_is_the_mean_over_dims():
    feats = np.array([[1.0, 3.0], [-1.0, -3.0], [0.0, 4.0]])
    assert frame_energy(feats, smooth=1).tolist() == [2, -2, 2]


def test_frame_energy_of_waveforms_is_the_mean_square_per_hop():
    # power [1, 1, 4, 4, 0] in frames of 2 samples; the last frame has one sample
    assert frame_energy(np.array([1.0, -1, 2, 2, 0]), hop=2, smooth=1).tolist() == [1, 4, 0]
    # stereo: the mean over channels too, (1 + 9) / 2
    assert frame_energy(np.array([[1.0, 3], [1, -3]]), hop=2, smooth=1).tolist() == [5]


def test_features_are_cut_at_their_silent_frames():
    # 25 loud frames (mean 1) with silent frames 7 and 16 (mean -1); at most 10 frames per
    # segment, cuts searched in the last 30 % of each window:
    # from 0: frames 7..10 -> 7; from 7: frames 14..17 -> 16; 25 - 16 = 9 <= 10: done.
    feats = np.ones((25, 2))
    feats[[7, 16]] = -1.0
    points = split_points(frame_energy(feats, smooth=1), 1, 25, max_len=10, search=0.3)
    assert points == [7, 16]
    assert segment_bounds(points, 25) == [(0, 7), (7, 16), (16, 25)]


def test_without_a_quiet_frame_the_earliest_candidate_wins():
    # all frames equal: from 0 the window is frames 7..10 -> 7, then 14, then 21; 25 - 21 <= 10
    assert split_points(np.zeros(25), 1, 25, max_len=10, search=0.3) == [7, 14, 21]


def test_smoothing_prefers_a_pause_to_a_single_quiet_frame():
    # loud 1, one frame -2 at 3, a pause of -1 at 6..10. Averaged over 3 frames: frame 3 -> 0,
    # frames 7..9 -> -1 (the lowest). Window from 0 with max 12, search 0.9: frames 2..12 -> 7.
    feats = np.ones((19, 1))
    feats[3] = -2.0
    feats[6:11] = -1.0
    energy = frame_energy(feats, smooth=3)
    assert energy[3] == 0 and energy[7] == energy[8] == energy[9] == -1
    assert split_points(energy, 1, 19, max_len=12, search=0.9) == [7]
    # Unsmoothed the single frame wins: 0 -> 3; from 3, frames 5..15 -> 6 (first -1); from 6,
    # frames 8..18 -> 8; 19 - 8 = 11 <= 12: done.
    assert split_points(frame_energy(feats, smooth=1), 1, 19, max_len=12, search=0.9) == [3, 6, 8]


def test_waveform_cuts_are_at_frame_boundaries():
    # 40 samples in frames of 4; frame 4 (samples 16..19) is quiet. Max 18 samples, search 0.5:
    # from 0: positions 9..18 -> frames 3, 4 -> 4 (sample 16); from 16: positions 25..34 ->
    # frames 7, 8, equal -> 7 (sample 28); 40 - 28 = 12 <= 18: done.
    energy = np.full(10, 5.0)
    energy[4] = 1.0
    points = split_points(energy, 4, 40, max_len=18, search=0.5)
    assert points == [16, 28]
    assert all(e - s <= 18 for s, e in segment_bounds(points, 40))


def test_limit_shorter_than_a_frame_cuts_at_the_limit():
    assert split_points(np.zeros(4), 160, 500, max_len=100) == [100, 200, 300, 400]


def test_short_inputs_and_no_limit_are_not_cut():
    assert split_points(np.zeros(10), 1, 10, max_len=10) == []
    assert split_points(np.zeros(10), 1, 10, max_len=0) == []
    assert segment_bounds([], 10) == [(0, 10)]


def test_segments_respect_the_limit_on_random_input():
    rng = np.random.default_rng(0)
    energy = rng.standard_normal(1000)
    points = split_points(energy, 1, 1000, max_len=97, search=0.2)
    bounds = segment_bounds(points, 1000)
    assert all(0 < e - s <= 97 for s, e in bounds)
    assert all(e - s >= 97 - int(0.2 * 97) for s, e in bounds[:-1])
    assert bounds[0][0] == 0 and bounds[-1][1] == 1000
