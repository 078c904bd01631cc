"""The end-of-run summary (`run_summary`) and the verdict table: one peak, saturation shown."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ib_brevitas.phases import PhaseTracker, format_verdicts, run_summary
from ib_brevitas.records import LayerMI

E = np.arange(120) * 5


def _run():
    """Three layers: saturated at log2 N, a fit-then-fall, a fall that recovers and falls again."""
    x = {
        "net.0": np.full(120, 12.0),
        "net.1": np.r_[np.linspace(3, 6, 20), np.full(30, 6.0), np.linspace(6, 5, 40), np.full(30, 5.0)],
        "net.2": np.r_[np.full(30, 8.0), np.full(30, 7.0), np.full(30, 7.6), np.full(30, 6.5)],
    }
    y = {"net.0": np.full(120, 1.0), "net.1": np.r_[np.linspace(0.1, 0.9, 20), np.full(100, 0.9)],
         "net.2": np.full(120, 0.7)}
    recs = [LayerMI(layer=k, epoch=int(e), step=None, i_xt=float(x[k][j]), i_ty=float(y[k][j]), h_t=float(x[k][j]),
                    n_distinct=1, n_samples=4096, bit_width=8, width=4, layer_index=i, h_y=1.0)
            for j, e in enumerate(E) for i, k in enumerate(x)]
    tracker = PhaseTracker.from_records(recs)
    tracker.finish()
    return recs, tracker.verdicts(), x, y


def test_run_summary_numbers_are_the_verdicts_and_the_curves():
    recs, verdicts, x, y = _run()
    data, text = run_summary(recs, verdicts)
    json.dumps(data, allow_nan=False)  # JSON-able as it is
    rows = {d["layer"]: d for d in data["layers"]}
    assert list(rows) == ["net.0", "net.1", "net.2"] and rows["net.1"]["label"] == "T2"
    # independent: the noiseless curves' first, highest and last values
    for k in x:
        assert rows[k]["i_xt"]["start"] == x[k][0] and rows[k]["i_xt"]["final"] == x[k][-1]
        assert rows[k]["i_xt"]["peak"] == x[k].max() and rows[k]["i_ty"]["peak"] == pytest.approx(y[k].max())
        assert rows[k]["drop_bits"] == pytest.approx(x[k].max() - x[k][-1])
    assert rows["net.0"]["saturated"] is True and rows["net.0"]["fitting"] is None
    assert rows["net.0"]["compression"] is False and rows["net.0"]["reason"] == "saturated"
    assert rows["net.1"]["fitting"] is True and rows["net.1"]["compression"] is True
    assert rows["net.1"]["onset_epoch"] == 250  # the last epoch at 6 bits (the fall starts from there)
    eps = rows["net.2"]["episodes"]
    assert [(e["start_epoch"], e["recovered"]) for e in eps] == [(145, True), (445, False)]
    assert eps[0]["depth_bits"] == pytest.approx(1.0) and eps[1]["depth_bits"] == pytest.approx(1.1)
    assert rows["net.2"]["onset_epoch"] == 145 and rows["net.2"]["drop_bits"] == pytest.approx(1.5)
    assert data["bounds"] == {"log2_n": 12.0, "h_y": 1.0}
    # the text: one row per layer, the verdicts, and the footnote that defines "peak"
    assert "not observable" in text and "yes (100%)" in text and "yes (compressed)" in text
    assert "145-150 -1.00 bit (recovered); 445-595 -1.10 bit" in text
    assert "global maximum" in text and "max" not in text.replace("maximum", "")
    assert "log2 N = 12.000" in text


def test_run_summary_needs_records_of_every_layer():
    recs, verdicts, _, _ = _run()
    with pytest.raises(ValueError, match=r"no records for the layers \['net.2'\]"):
        run_summary([r for r in recs if r.layer != "net.2"], verdicts)


def test_format_verdicts_shows_saturation_and_episodes():
    _, verdicts, _, _ = _run()
    text = format_verdicts(verdicts)
    line = next(row for row in text.splitlines() if row.startswith("net.0"))
    assert "yes (100%)" in line and "not observable (at log2 N)" in line and "no (saturated)" in line
    assert "net.2 episodes: 145-150 -1.00 bit (recovered); 445-595 -1.10 bit" in text
    md = format_verdicts(verdicts, markdown=True)
    assert md.splitlines()[1].startswith("|---") and "- net.2 episodes:" in md
