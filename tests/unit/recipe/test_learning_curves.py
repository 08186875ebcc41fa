"""Learning curves for RESULTS.md: ESPnet's epoch lines -> table, series and PNG."""
from espnet_ext.recipe import learning_curves

LOG = """\
[vm:0/2] 2026-12-04 14:29:03,829 (trainer:394) INFO: 1epoch results: [train] loss_ce=4.621, \
loss_quantity=0.266, acc=0.148, cif_count_err=4.844, loss_ctc=5.050, loss=7.413, loss_scale=1.000, \
time=2 minutes and 22.75 seconds, total_count=142, [valid] loss_ce=4.282, acc=0.159, \
cif_count_err=6.215, loss=6.793, time=4.75 seconds, total_count=8
[vm:0/2] 2026-12-04 14:31:03,829 (trainer:394) INFO: 2epoch results: [train] loss_ce=3.5, \
loss_quantity=0.2, acc=0.25, cif_count_err=3.0, loss_ctc=4.0, loss=5.9, loss_scale=1.000, \
time=2 minutes and 0.25 seconds, total_count=284, [valid] loss_ce=3.9, acc=0.2, \
cif_count_err=4.5, loss=6.1, time=5.75 seconds, total_count=16
"""


def test_series_table_and_png(tmp_path):
    exp = tmp_path / "exp" / "asr_x"
    exp.mkdir(parents=True)
    (exp / "train.log").write_text(LOG)
    curves = learning_curves.series(exp / "train.log")
    assert list(curves) == ["loss", "accuracy", "CIF count error"]
    assert curves["loss"]["train loss"] == [(1, 7.413), (2, 5.9)]
    assert curves["loss"]["valid loss_ce"] == [(1, 4.282), (2, 3.9)]
    assert "train loss_scale" not in curves["loss"]  # AMP's scale is not a loss
    assert curves["accuracy"] == {"train acc": [(1, 0.148), (2, 0.25)], "valid acc": [(1, 0.159), (2, 0.2)]}
    assert curves["CIF count error"]["valid cif_count_err"] == [(1, 6.215), (2, 4.5)]
    lines = learning_curves.section([tmp_path / "exp"])
    png = tmp_path / "exp" / "asr_x" / "learning_curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert f"![learning curves of {exp}]({png})" in lines
    # epoch 1: 142.75 + 4.75 s, epoch 2: 120.25 + 5.75 s
    assert "|1|7.413|6.793|0.148|0.159|-|-|148|" in lines and "|2|5.900|6.100|0.250|0.200|-|-|126|" in lines


def test_a_log_without_epochs_gives_no_png(tmp_path):
    exp = tmp_path / "exp" / "lm_x"
    exp.mkdir(parents=True)
    (exp / "train.log").write_text("started\n")
    assert learning_curves.section([tmp_path / "exp"]) == []
    assert not (exp / "learning_curves.png").exists()
