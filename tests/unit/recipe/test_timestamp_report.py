"""Word timestamp accuracy: the error measure by hand, the CTC-alignment baseline on made-up
posteriors, and the report on a tiny model whose audio has known word times."""
import json

import pytest
import torch
from tiny_audio_asr import tiny_audio_cif_model

from espnet_ext.asr.timestamps import ctc_alignment_times
from espnet_ext.recipe.bin import timestamp_report
from espnet_ext.recipe.corpus.word_times import read_ctm
from espnet_ext.recipe.timestamp_eval import boundary_errors, expand_units, matched_pairs, summarize


def test_errors_over_correct_words_with_unknown_inner_unit_boundaries():
    hyp = [("a", 0.1, 0.5), ("x", 0.5, 0.9), ("c", 1.0, 1.4)]
    ref = [("a", 0.0, 0.4), ("b+c", 0.5, 1.5)]  # "b c" read as one unit: no b end, no c start
    assert expand_units(ref) == [("a", 0.0, 0.4), ("b", 0.5, None), ("c", None, 1.5)]
    assert matched_pairs(["a", "x", "c"], ["a", "b", "c"]) == [(0, 0), (2, 2)]
    starts, ends = boundary_errors(hyp, ref)
    assert starts == pytest.approx([0.1])
    assert ends == pytest.approx([0.1, 0.1])


def test_alignment_matches_words_across_insertions_and_deletions():
    assert matched_pairs(["the", "cat", "sat", "down"], ["a", "the", "cat", "down"]) == \
        [(0, 1), (1, 2), (3, 3)]
    assert matched_pairs([], ["a"]) == [] and matched_pairs(["a"], []) == []


def test_summary_statistics():
    # numpy's linear 90th percentile of 4 values: position 0.9 * 3 = 2.7 -> 0.3 + 0.7 * 0.1
    assert summarize([0.1, 0.2, 0.3, 0.4]) == {"n": 4, "mean": 0.25, "median": 0.25, "p90": 0.37}
    assert summarize([])["n"] == 0


def test_ctc_alignment_times_follow_the_posterior_peaks():
    best = [0, 1, 1, 0, 2, 0]  # frames 1-2 say token 1, frame 4 token 2, the rest blank
    log_probs = torch.full((6, 3), -10.0)
    log_probs[torch.arange(6), torch.tensor(best)] = 0.0
    times = ctc_alignment_times(log_probs.log_softmax(-1), [1, 2], shift=0.08)
    assert [t for span in times for t in span] == pytest.approx([0.08, 0.24, 0.32, 0.40])
    # Two equal tokens need a blank between them: 3 frames, not 2.
    assert ctc_alignment_times(log_probs[:2].log_softmax(-1), [1, 1], shift=0.08) is None


@pytest.fixture(scope="session")
def audio_model(tmp_path_factory):
    return tiny_audio_cif_model(tmp_path_factory.getbasetemp() / "audio_cif")


def test_report_on_audio_with_known_word_times(audio_model, tmp_path):
    """Every word of the tiny model's training utterances is recognised, and the CIF word times
    fall within half of the shortest letter (0.20 s) of the synthesised truth on average."""
    out = tmp_path / "ts"
    assert timestamp_report.main(["--asr_exp", str(audio_model.exp), "--model",
                                  audio_model.model_file.name, "--data_dir",
                                  str(audio_model.train["dir"]), "--ref_ctm",
                                  str(audio_model.train["word_times"]), "--output_dir", str(out)]) == 0
    summary = json.loads((out / "timestamps.json").read_text())
    words = sum(len(t.split()) for t in audio_model.texts.values())
    assert summary["reference_words"] == words and summary["without_ctc_alignment"] == 0
    for method in ("cif", "ctc"):
        assert summary[method]["start"]["n"] == summary[method]["end"]["n"] == words
    for boundary in ("start", "end"):
        assert summary["cif"][boundary]["mean"] < 0.10, summary["cif"]
    cif = read_ctm(out / "cif.ctm")
    assert {u: [w for w, _, _ in ws] for u, ws in cif.items()} == \
        {u: t.split() for u, t in audio_model.texts.items()}
    assert "CTC forced alignment" in (out / "timestamps.md").read_text()
