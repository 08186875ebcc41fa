"""A recording several minutes long decodes in bounded memory: ``asr_inference`` cuts it into
segments of at most ``--max_segment_seconds`` (default 30 s) in its quiet places, decodes them as
batch items and joins them. Run in a subprocess whose address space is limited
(``RLIMIT_AS``): the same limit stops the unsegmented decoding (``--max_segment_seconds 0``),
which is what a 3.4-minute recording did to a real job (22 GB, killed by the kernel).

Measured on the 2-core test machine (tiny CIF model, one thread, 180 s at 100 frames/s plus
three short utterances, ``--batch_size 16``), peak virtual size (VmPeak) / peak resident size
(ru_maxrss): the short utterances alone 4.0 GB / 0.9 GB (torch maps much more than it touches);
segmented (7 segments, one padded batch) 6.3 GB / 3.3 GB. The 180 s input alone (a batch of one)
unsegmented and without a limit: 12.8 GB / 9.6 GB, 8.7 GB of it in encoding: the tiny model's
cost is its encoder's self-attention, quadratic in the input length (30 s take about 0.25 GB).
With the short utterances padded to 180 s in the same batch it needs far more (one allocation
alone asks for 10.4 GB). The limit is the short decoding's virtual peak + 5 GiB (about 8.8 GiB
here): 2.5 GB above the segmented peak; the unsegmented decoding fails in the encoder within
seconds (``DefaultCPUAllocator: can't allocate memory``, re-raised naming the batch's items).
"""
import re
import resource
import subprocess
import sys
from pathlib import Path

import kaldiio
import numpy as np
import pytest
from reliability_helpers import ENV, one_thread, tail, tiny_cif_model

pytestmark = pytest.mark.slow

FRAMES = 18_000  # 180 s at 10 ms
GAP = 30  # frames of low-energy gap between the concatenated utterances
HEADROOM = 5 * 2 ** 30  # address space allowed above a short decoding's peak

# Runs the decoder and writes its peak virtual (VmPeak) and resident (ru_maxrss) size, in kB.
WRAPPER = """
import resource, sys
from espnet_ext.bin import asr_inference
try:
    asr_inference.main(sys.argv[2:])
finally:
    vm = open('/proc/self/status').read().split('VmPeak:')[1].split()[0]
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    open(sys.argv[1], 'w').write(f'{vm} {maxrss}')
"""


@pytest.fixture(scope="module")
def cif_model(tmp_path_factory):
    return tiny_cif_model(tmp_path_factory.getbasetemp() / "reliability_cif")


def _write_scp(directory: Path, feats: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    with kaldiio.WriteHelper(f"ark,scp:{directory / 'feats.ark'},{directory / 'feats.scp'}") as w:
        for k in sorted(feats):
            w(k, feats[k])
    (directory / "utt2num_frames").write_text("".join(f"{k} {len(feats[k])}\n" for k in sorted(feats)))
    return directory / "feats.scp"


def _decode_args(exp: Path, scp: Path, out: Path, *extra: str):
    return ["--asr_train_config", str(exp / "config.yaml"), "--asr_model_file",
            str(exp / "valid.acc.ave.pth"), "--data_path_and_name_and_type", f"{scp},speech,kaldi_ark",
            "--output_dir", str(out), *extra]


def _decode_limited(exp, scp, out, limit_bytes, *extra):
    """Decode in a subprocess (one thread) with the address space limited to ``limit_bytes``
    (None: unlimited). Returns (exit code, log, (VmPeak, ru_maxrss) in kB or None)."""
    out.mkdir(parents=True, exist_ok=True)
    peak, log = out / "peak", out / "stdout.log"

    def limit():
        if limit_bytes is not None:
            resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))

    with open(log, "wb") as f:
        rc = subprocess.run([sys.executable, "-c", WRAPPER, str(peak),
                             *_decode_args(exp, scp, out, *extra)], stdout=f,
                            stderr=subprocess.STDOUT, env=ENV, preexec_fn=limit, timeout=600).returncode
    measured = tuple(map(int, peak.read_text().split())) if peak.exists() else None
    return rc, tail(log, 10 ** 6), measured


def _table(path: Path) -> dict:
    lines = path.read_text().splitlines()
    ids = [line.split(" ", 1)[0] for line in lines]
    assert len(ids) == len(set(ids)), f"{path}: duplicate ids"
    return {line.split(" ", 1)[0]: (line.split(" ", 1) + [""])[1] for line in lines}


def test_several_minute_recording_decodes_in_bounded_memory(cif_model, tmp_path):
    exp, data = cif_model
    rng = np.random.default_rng(11)
    pieces = [np.asarray(v) for _, v in sorted(kaldiio.load_scp(str(data["train_feats_scp"])).items())]
    long, gaps, n, i = [], np.zeros(0, dtype=bool), 0, 0
    while n < FRAMES:  # utterances separated by gaps far below any speech frame's mean
        piece = pieces[i % len(pieces)]
        gap = (-3.0 + 0.1 * rng.standard_normal((GAP, 20))).astype(np.float32)
        long += [piece, gap]
        gaps = np.concatenate([gaps, np.zeros(len(piece), bool), np.ones(GAP, bool)])
        n, i = n + len(piece) + GAP, i + 1
    long = np.concatenate(long)[:FRAMES]
    normal = {k: np.asarray(v) for k, v in list(kaldiio.load_scp(str(data["valid_feats_scp"])).items())[:3]}
    scp = _write_scp(tmp_path / "with_long", {**normal, "long": long})

    # A short decoding (also the reference without the long recording) sets the limit.
    rc, log, short_peak = _decode_limited(exp, _write_scp(tmp_path / "short", normal),
                                          tmp_path / "dec_short", None)
    assert rc == 0, log
    limit = short_peak[0] * 1024 + HEADROOM

    rc, log, seg_peak = _decode_limited(exp, scp, tmp_path / "dec_seg", limit)
    assert rc == 0, f"segmented decoding failed under a {limit / 2 ** 30:.1f} GiB limit:\n{log}"
    cuts = re.search(r"utterance long: 180\.00 s is longer than --max_segment_seconds 30: "
                     r"decoding (\d+) segments, cut at frames ([\d, ]+)\n", log)
    assert cuts, log
    points = [int(p) for p in cuts.group(2).split(", ")]
    assert int(cuts.group(1)) == len(points) + 1 >= 6
    bounds = list(zip([0] + points, points + [FRAMES]))
    # At most 30 s each, cut in the last 20 % of the window, and always inside a gap.
    assert all(e - s <= 3000 for s, e in bounds) and all(e - s >= 2400 for s, e in bounds[:-1])
    assert all(gaps[p] for p in points), [p for p in points if not gaps[p]]

    text, token_int = (_table(tmp_path / "dec_seg" / "1best_recog" / name) for name in ("text", "token_int"))
    for name in ("token", "score"):
        assert sorted(_table(tmp_path / "dec_seg" / "1best_recog" / name)) == sorted([*normal, "long"])
    assert sorted(text) == sorted(token_int) == sorted([*normal, "long"])
    short_text = _table(tmp_path / "dec_short" / "1best_recog" / "text")
    assert {k: text[k] for k in normal} == short_text and all(short_text.values())

    # The long recording's tokens are its segments' decoded one by one, concatenated.
    from espnet_ext.bin import asr_inference

    segs = {f"seg{j:02d}": long[s:e] for j, (s, e) in enumerate(bounds)}
    with one_thread():
        asr_inference.main(_decode_args(exp, _write_scp(tmp_path / "segments", segs), tmp_path / "dec_parts",
                                        "--log_level", "WARNING"))
    parts = _table(tmp_path / "dec_parts" / "1best_recog" / "token_int")
    expected = " ".join(filter(None, (parts[k] for k in sorted(segs))))
    assert token_int["long"] == expected and len(expected.split()) > 300

    # The same limit stops the unsegmented decoding: the limit binds.
    rc, log, _ = _decode_limited(exp, scp, tmp_path / "dec_whole", limit, "--max_segment_seconds", "0")
    assert rc != 0 and "can't allocate memory" in log, log[-3000:]
    assert re.search(r"MemoryError: batch 1/1 \(4 item\(s\): long, .*; longest 180\.0 s\) ran out of "
                     r"memory: .*Lower --max_segment_seconds \(now 0; 0 never cuts long inputs\)", log), log[-3000:]
    assert not (tmp_path / "dec_whole" / "1best_recog" / "text").exists()
    print(f"limit {limit / 2 ** 30:.2f} GiB; VmPeak/maxrss kB: short {short_peak}, segmented {seg_peak}",
          file=sys.stderr)
