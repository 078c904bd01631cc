"""`ib-brevitas plot`: files are written and the drawn data are the records."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("matplotlib", reason="ib-brevitas plot needs the [plot] extra (matplotlib)")

from matplotlib.collections import PathCollection  # noqa: E402

from ib_brevitas import cli  # noqa: E402
from ib_brevitas.files import append_jsonl  # noqa: E402
from ib_brevitas.phases import EVENT_KINDS, FITTING_ENDED, PhaseEvent  # noqa: E402
from ib_brevitas.plots import plot_runs  # noqa: E402
from ib_brevitas.records import LayerMI  # noqa: E402
from ib_brevitas.rundir import RunDir  # noqa: E402
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
    labels = sorted(t.get_text() for t in plane_ax.texts if (t.get_gid() or "").startswith("label:"))
    assert labels == ["T1", "T2", "T3"]
    named = sorted(t.get_gid() for t in plane_ax.texts if (t.get_gid() or "").startswith("bound-label:"))
    assert named == ["bound-label:h_y", "bound-label:log2_n"]  # the bounds say what they are
    phase = [line for ax in fig.axes for line in ax.get_lines() if (line.get_gid() or "").startswith("phase:")]
    assert [(line.get_gid(), list(line.get_xdata()), list(line.get_ydata())) for line in phase] == [
        (f"phase:{LAYERS[2]}:compression_started", [12], [4.0]), (f"phase:{LAYERS[2]}:compression_started", [12], [0.8])]


def test_mean_over_seeds(runs):
    fig = plot_runs(runs, mean=True)
    planes, _ = drawn(fig)
    assert len(planes) == 1 and "mean \u00b1 s.d. of 2 runs" in fig.axes[0].get_title()
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
        sink.write_phase_events([event])
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


def write_run(d, recs, config=None, events=()):
    d.mkdir(parents=True)
    append_jsonl(d / "mi.jsonl", [r.to_dict() for r in recs])
    if config is not None:
        RunDir(d).write_config(config)
    if events:
        append_jsonl(d / "phases.jsonl", [e.to_dict() for e in events])
    return d


def coincident_records(epochs=range(0, 40, 4), estimator="exact"):
    """Four layers that end on one point (like T1-T4 on SYN at (12, 1)), a fifth elsewhere."""
    return [LayerMI(layer=f"l{i}", epoch=e, step=e, i_xt=12.0 if i < 4 else 4 + e / 10, i_ty=1.0 if i < 4 else 0.5,
                    h_t=1.0, n_distinct=4096, n_samples=4096, bit_width=8, width=12 - i, layer_index=i, h_y=1.0,
                    estimator=estimator)
            for e in epochs for i in range(5)]


def boxes_apart(fig, texts):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in texts]
    return all(not a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def test_coincident_layers_labelled_once_without_overlap(tmp_path):
    kinds = [k for k in EVENT_KINDS]
    events = [PhaseEvent("l4", k, 4 * (j + 1), 4.4, 0.5, 4 * (j + 2)) for j, k in enumerate(kinds)]
    run = write_run(tmp_path / "syn-tanh-8b-s0", coincident_records(),
                    {"dataset": "syn", "activation": "tanh", "bits": 8, "seed": 0, "epochs": 36}, events)
    fig = plot_runs([run], tmp_path / "f.png")
    plane, ax_xt = fig.axes[0], fig.axes[2]
    labels = [t for t in plane.texts if (t.get_gid() or "").startswith("label:")]
    assert sorted(t.get_text() for t in labels) == ["T1\u2013T4", "T5"]
    assert boxes_apart(fig, labels)
    # The epoch plots draw and list the four coinciding lines once.
    legend = [t.get_text() for t in ax_xt.get_legend().get_texts()] if ax_xt.get_legend() else []
    lines = {line.get_label() for line in ax_xt.get_lines() if line.get_gid() in {f"l{i}" for i in range(5)}}
    assert lines == {"T1\u2013T4", "T5"}
    legends = [c for c in ax_xt.get_children() if type(c).__name__ == "Legend"]
    entries = sorted(t.get_text() for lg in legends for t in lg.get_texts())
    assert "T1\u2013T4" in entries and "T1" not in entries and legend
    # One marker shape per phase event kind, and a legend of them.
    markers = {line.get_gid().split(":")[2]: line.get_marker() for line in ax_xt.get_lines()
               if (line.get_gid() or "").startswith("phase:")}
    assert sorted(markers) == sorted(kinds) and len(set(markers.values())) == len(kinds)
    assert {"fitting ended", "compression started", "compression confirmed", "compression retracted"} <= set(entries)
    title = plane.get_title()
    assert "syn-tanh-8b-s0" in title and "SYN, tanh, 8-bit, seed 0" in title


def test_exact_and_binned_series_are_never_mixed(tmp_path):
    """A binned estimate of a layer is its own series, labelled, and not averaged with the exact one."""
    a = write_run(tmp_path / "x-seed0", coincident_records(range(0, 12, 4)))
    b = write_run(tmp_path / "x-seed1", coincident_records(range(0, 12, 4), estimator="binned-30"))
    fig = plot_runs([a, b], mean=True)
    planes, _ = drawn(fig)
    plane = fig.axes[0]
    labels = sorted(c.get_label() for c in plane.collections if c.get_gid() in {f"l{i}" for i in range(5)})
    assert "T1 (binned-30)" in labels and "T1" in labels
    offsets = {c.get_label(): c.get_offsets().data.tolist() for c in plane.collections if c.get_gid() == "l4"}
    assert offsets["T5"] == [[4.0, 0.5], [4.4, 0.5], [4.8, 0.5]]  # not mixed with the binned one


def test_estimator_filter_keeps_only_those_series(tmp_path, capsys):
    """plot --estimator draws only the named series (a float run holds one per estimator); a label the
    run lacks is a one-line error that lists the labels it has."""
    run = write_run(tmp_path / "float-s0", coincident_records(range(0, 12, 4), estimator="binning-uniform-30-global")
                    + coincident_records(range(0, 12, 4), estimator="binning-uniform-256-global"))
    every = {c.get_label() for c in plot_runs([run]).axes[0].collections if c.get_gid()}
    assert "T1 (binning-uniform-30-global)" in every and "T1 (binning-uniform-256-global)" in every
    fig = plot_runs([run], estimators=["binning-uniform-256-global"])
    kept = {c.get_label() for c in fig.axes[0].collections if c.get_gid()}
    # one estimator in the panel: plain layer labels, the estimator said once in the title
    assert kept == {f"T{i + 1}" for i in range(5)}
    assert "binning-uniform-256-global: an estimate, not exact MI" in fig.axes[0].get_title()
    texts = [t.get_text() for t in fig.axes[0].texts if (t.get_gid() or "").startswith("label:")]
    assert sorted(texts) == ["T1\u2013T4", "T5"]
    offsets = {c.get_gid(): c.get_offsets().data.tolist() for c in fig.axes[0].collections if c.get_gid()}
    assert offsets["l4"] == [[4.0, 0.5], [4.4, 0.5], [4.8, 0.5]]
    out = tmp_path / "f.png"
    assert cli.main(["plot", str(run), "-o", str(out), "--estimator", "binning-uniform-30-global"]) == 0
    assert out.stat().st_size > 0
    capsys.readouterr()
    assert cli.main(["plot", str(run), "-o", str(out), "--estimator", "exact"]) == 2
    err = capsys.readouterr().err
    assert "float-s0" in err and "binning-uniform-256-global, binning-uniform-30-global" in err
    assert len(err.strip().splitlines()) == 1


def test_mean_comes_from_the_shared_module(runs):
    """plot --mean and the tab's mean route call the same function."""
    from ib_brevitas.plots import panels as panels_module
    from ib_brevitas.tensorboard import views

    assert panels_module.mean_sd is views.mean_sd


def test_long_runs_get_a_log_epoch_axis(tmp_path):
    run = write_run(tmp_path / "long", [r for r in records(0, range(0, 2001, 100))])
    fig = plot_runs([run])
    assert fig.axes[2].get_xscale() == "symlog"
    assert plot_runs([run], log_epoch=False).axes[2].get_xscale() == "linear"


def test_a_long_title_stays_inside_its_panel(tmp_path):
    """A mean panel of a long configuration (Fashion-MNIST, a 3000-epoch MNIST net) was cut at both edges."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    config = {"net": "mnist-bottleneck-2", "dataset": "fashion-mnist", "activation": "relu", "bits": 8,
              "epochs": 3000, "seed": 0}
    runs = [write_run(tmp_path / f"mnist-bottleneck-2-fashion-mnist-relu-8b-s{s}", coincident_records(),
                      {**config, "seed": s}) for s in range(5)]
    fig = plot_runs(runs, tmp_path / "f.png", mean=True)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    plane = fig.axes[0]
    title = plane.title.get_window_extent(canvas.get_renderer())
    assert "mean \u00b1 s.d. of 5 runs" in plane.get_title()
    assert fig.bbox.x0 <= title.x0 and title.x1 <= fig.bbox.x1, (title, fig.bbox)
