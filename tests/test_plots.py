"""`ib-brevitas plot`: files are written and the drawn data are the records."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("matplotlib", reason="ib-brevitas plot needs the [plot] extra (matplotlib)")

from matplotlib.collections import PathCollection  # noqa: E402

from ib_brevitas import cli  # noqa: E402
from ib_brevitas.phases import FITTING_ENDED, PhaseEvent  # noqa: E402
from ib_brevitas.plots import plot_runs  # noqa: E402
from ib_brevitas.rundir import RunDir  # noqa: E402
from ib_brevitas.files import append_jsonl  # noqa: E402
from ib_brevitas.records import LayerMI  # noqa: E402
from ib_brevitas.tensorboard.summary import TensorBoardSink  # noqa: E402

LAYERS = ["body.0.act", "body.2.act", "head.act"]


def records(seed: int, epochs=range(0, 30, 3)) -> list[LayerMI]:
    rng = np.random.default_rng(seed)
    return [
        LayerMI(layer=name, epoch=e, step=e * 10, i_xt=float(8 - i - 3 * math.exp(-e / 9) + rng.normal(0, 0.2)),
                i_ty=float(0.9 - 0.5 * math.exp(-e / (5 + i)) + rng.normal(0, 0.01)), h_t=1.0, n_distinct=9,
                n_samples=512, bit_width=4, width=8, layer_index=i, h_y=0.95)
        for e in epochs for i, name in enumerate(LAYERS)
    ]


@pytest.fixture
def runs(tmp_path):
    dirs = []
    for seed in (0, 1):
        d = tmp_path / f"tiny-seed{seed}"
        d.mkdir()
        append_jsonl(d / "mi.jsonl", [r.to_dict() for r in records(seed)])
        dirs.append(d)
    append_jsonl(dirs[0] / "phases.jsonl", [{"layer": LAYERS[2], "epoch": 12, "kind": "compression_started",
                                              "i_xt": 4.0, "i_ty": 0.8, "detected_epoch": 18, "detail": {}}])
    return dirs


def drawn(fig):
    """Per axes row: {layer gid: data} from the figure's artists."""
    planes, epoch_lines = {}, {}
    for ax in fig.axes:
        for c in ax.collections:
            if isinstance(c, PathCollection) and c.get_gid():
                planes.setdefault(ax, {})[c.get_gid()] = (c.get_offsets().data.tolist(), c.get_array().tolist())
        for line in ax.get_lines():
            gid = line.get_gid() or ""
            if gid in LAYERS:
                epoch_lines.setdefault(ax, {})[gid] = (list(line.get_xdata()), list(line.get_ydata()))
    return list(planes.values()), list(epoch_lines.values())


def test_plotted_data_equal_the_records(runs, tmp_path):
    out = tmp_path / "fig.png"
    fig = plot_runs(runs, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    planes, epoch_lines = drawn(fig)
    assert len(planes) == 2 and len(epoch_lines) == 4  # a plane and two MI-vs-epoch plots per run
    for k, run in enumerate(runs):
        recs = records(k)
        for layer in LAYERS:
            mine = [r for r in recs if r.layer == layer]
            assert planes[k][layer] == ([[r.i_xt, r.i_ty] for r in mine], [r.epoch for r in mine])
            assert epoch_lines[2 * k][layer] == ([r.epoch for r in mine], [r.i_xt for r in mine])
            assert epoch_lines[2 * k + 1][layer] == ([r.epoch for r in mine], [r.i_ty for r in mine])
    plane_ax = fig.axes[0]
    bounds = {line.get_gid(): line for line in plane_ax.get_lines() if (line.get_gid() or "").startswith("bound")}
    assert bounds["bound:log2_n"].get_xdata()[0] == 9.0 and bounds["bound:h_y"].get_ydata()[0] == 0.95
    labels = sorted(t.get_text() for t in plane_ax.texts)
    assert labels == ["T1", "T2", "T3"]
    phase = [line for ax in fig.axes for line in ax.get_lines() if (line.get_gid() or "").startswith("phase:")]
    assert [(line.get_gid(), list(line.get_xdata()), list(line.get_ydata())) for line in phase] == [
        (f"phase:{LAYERS[2]}:compression_started", [12], [4.0]), (f"phase:{LAYERS[2]}:compression_started", [12], [0.8])]


def test_mean_over_seeds(runs):
    fig = plot_runs(runs, mean=True)
    planes, _ = drawn(fig)
    assert len(planes) == 1 and "mean" in fig.axes[0].get_title() and "2 runs" in fig.axes[0].get_title()
    a, b = records(0), records(1)
    for layer in LAYERS:
        xa = np.array([[r.i_xt, r.i_ty] for r in a if r.layer == layer])
        xb = np.array([[r.i_xt, r.i_ty] for r in b if r.layer == layer])
        np.testing.assert_allclose(planes[0][layer][0], (xa + xb) / 2, rtol=1e-12)


def test_event_files_when_there_is_no_mi_jsonl(tmp_path):
    run = tmp_path / "from-events"
    with TensorBoardSink(log_dir=run) as sink:
        for e in range(3):
            sink.write([r for r in records(3, range(3)) if r.epoch == e])
        event = PhaseEvent(LAYERS[0], FITTING_ENDED, 1, 1.0, 0.5, 2)
        sink.write_phase_events([event.to_dict()])
    loaded = RunDir(run).load()
    assert sorted(loaded.records, key=lambda r: (r.epoch, r.layer_index)) == records(3, range(3))
    assert loaded.events == [event]
    assert drawn(plot_runs([run]))[0][0][LAYERS[1]][1] == [0, 1, 2]


@pytest.mark.parametrize("suffix, magic", [(".svg", b"<svg"), (".pdf", b"%PDF")])
def test_cli_writes_svg_and_pdf(runs, tmp_path, capsys, suffix, magic):
    out = tmp_path / f"fig{suffix}"
    assert cli.main(["plot", *map(str, runs), "-o", str(out), "--mean"]) == 0
    assert magic in out.read_bytes()[:400]
    assert str(out) in capsys.readouterr().out


def test_cli_errors_name_the_problem(runs, tmp_path, capsys):
    assert cli.main(["plot", str(runs[0]), "-o", str(tmp_path / "fig.jpg")]) == 2
    assert "-o/--output" in capsys.readouterr().err
    assert cli.main(["plot", str(tmp_path / "missing"), "-o", str(tmp_path / "f.png")]) == 2
    assert "missing does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli.main(["plot", str(tmp_path / "empty"), "-o", str(tmp_path / "f.png")]) == 2
    assert "no mi.jsonl records" in capsys.readouterr().err
