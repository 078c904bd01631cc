"""Binning estimators against a brute-force reference (np.digitize + dict counts), and BinnedPlane on models."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch

from ib_brevitas import bincount, binning
from ib_brevitas.binned import BinnedPlane, default_layers, measure_snapshots
from ib_brevitas.binning import BinningEstimator, parse_estimator
from ib_brevitas.experiments.models import PaperMLP, build_net
from ib_brevitas.functional import unique_rows
from ib_brevitas.records import record_from_dict

UNIFORM_BOUNDS = ["global", "layer", "neuron", (-1.0, 1.0)]
BIN_COUNTS = [3, 30, 100, 256]


def _reference_codes(values, est, global_range=None):
    """Bin indices by np.digitize on edges from np.linspace, column by column."""
    v = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    codes = np.zeros(v.shape, dtype=np.int64)
    for j in range(v.shape[1]):
        col = v[:, j]
        if est.strategy == "adaptive":
            pool = np.sort(col if est.bounds == "neuron" else v.ravel())
            m, n = len(pool), est.n_bins
            sizes = [m // n + (1 if i < m % n else 0) for i in range(n)]
            cuts, edges, total = set(), [], 0
            for size in sizes[:-1]:
                total += size
                if 0 < total < m and total not in cuts:
                    cuts.add(total)
                    edges.append((pool[total - 1] + pool[total]) / 2)
            codes[:, j] = np.digitize(col, edges)
            continue
        if est.fixed:
            lo, hi = est.bounds
        elif est.bounds == "global":
            lo, hi = global_range
        elif est.bounds == "layer":
            lo, hi = v.min(), v.max()
        else:
            lo, hi = col.min(), col.max()
        if hi > lo:
            codes[:, j] = np.digitize(col, np.linspace(lo, hi, est.n_bins + 1)[1:-1])
    return codes


def _reference_mi(codes, y):
    """H(T) and I(T;Y) in bits from dict counts of the rows."""
    n = len(y)

    def h(counter):
        return -sum(c / n * math.log2(c / n) for c in counter.values())

    rows = [tuple(r) for r in np.asarray(codes).tolist()]
    h_t = h(Counter(rows))
    return h_t, h_t + h(Counter(y.tolist())) - h(Counter(zip(rows, y.tolist())))


def _activations(seed=0, n=500, width=6):
    """ReLU-like and tanh-like columns, ties, a constant column and duplicated rows."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, width)).astype(np.float32)
    a[:, 0] = np.maximum(a[:, 0], 0)  # many exact zeros
    a[:, 1] = np.tanh(3 * a[:, 1])
    a[:, 2] = 0.25  # constant neuron
    a[: n // 5] = a[n // 5 : 2 * (n // 5)]  # repeated rows
    return a, rng.integers(0, 4, n)


def _check(est, acts, y, global_range=None):
    codes = est.codes(acts, global_range)
    expected = _reference_codes(acts, est, global_range)
    np.testing.assert_array_equal(codes.astype(np.int64), expected)
    assert codes.min() >= 0 and codes.max() < est.n_bins
    point = est.plane_point(acts, y, global_range)
    h_t, i_ty = _reference_mi(expected, y)
    assert point.h_t == pytest.approx(h_t, abs=1e-9)
    assert point.i_ty == pytest.approx(i_ty, abs=1e-9)
    assert point.n_distinct == len({tuple(r) for r in expected.tolist()})


@pytest.mark.parametrize("bounds", UNIFORM_BOUNDS)
@pytest.mark.parametrize("n_bins", BIN_COUNTS)
def test_uniform_binning_equals_digitize_and_dict_counts(bounds, n_bins):
    acts, y = _activations()
    _check(BinningEstimator("uniform", n_bins, bounds), acts, y, global_range=(-4.5, 5.0))


@pytest.mark.parametrize("bounds", ["layer", "neuron"])
@pytest.mark.parametrize("n_bins", [2, 7, 30, 256])
def test_adaptive_binning_equals_equal_mass_reference(bounds, n_bins):
    acts, y = _activations(seed=1)
    _check(BinningEstimator("adaptive", n_bins, bounds), acts, y)


def test_adaptive_bins_hold_equal_mass():
    values = np.random.default_rng(2).normal(size=(1000, 1))
    counts = np.bincount(binning.adaptive_codes(values, 30).ravel(), minlength=30)
    assert counts.tolist() == [34] * 10 + [33] * 20  # 1000 = 10 x 34 + 20 x 33, the first bins one larger


@pytest.mark.parametrize("est", [BinningEstimator("uniform", 30, b) for b in UNIFORM_BOUNDS]
                         + [BinningEstimator("adaptive", 30, b) for b in ("layer", "neuron")])
def test_constant_activations_and_a_single_sample(est):
    y = np.array([0, 1, 1, 0, 1])
    point = est.plane_point(np.full((5, 3), 0.7, dtype=np.float32), y, global_range=(0.0, 1.0))
    assert (point.h_t, point.i_ty, point.n_distinct) == (0.0, 0.0, 1)
    assert point.h_y == pytest.approx(-(0.4 * math.log2(0.4) + 0.6 * math.log2(0.6)), abs=1e-12)
    one = est.plane_point(np.array([[0.3, -0.2]]), np.array([2]), global_range=(-1.0, 1.0))
    assert (one.h_t, one.i_ty, one.n_distinct, one.n_samples) == (0.0, 0.0, 1, 1)


def test_nan_and_bad_input_are_clear_errors():
    acts = np.zeros((4, 2), dtype=np.float32)
    acts[2, 1] = np.nan
    est = BinningEstimator("uniform", 30, "layer")
    with pytest.raises(ValueError, match=r"layer 'T3'.*NaN"):
        est.plane_point(acts, np.zeros(4, dtype=int), name="layer 'T3'")
    acts[2, 1] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        est.codes(acts)
    with pytest.raises(ValueError, match="N >= 1"):
        est.codes(np.zeros((0, 3)))
    with pytest.raises(TypeError, match="numeric"):
        est.codes(np.array([["a"]]))
    with pytest.raises(ValueError, match="global range"):
        BinningEstimator("uniform", 30, "global").codes(np.zeros((3, 1)))


def test_edges_values_at_and_outside_the_bounds():
    est = BinningEstimator("uniform", 4, (0.0, 1.0))
    values = np.array([[-0.5], [0.0], [0.2499], [0.25], [0.5], [0.75], [1.0], [2.0]])
    assert est.codes(values).ravel().tolist() == [0, 0, 0, 1, 2, 3, 3, 3]  # an edge belongs to the upper bin
    assert est.codes(values).ravel().tolist() == _reference_codes(values, est).ravel().tolist()


def test_doubling_the_bins_refines_them():
    """Same bounds, 2n bins: every bin splits in two, so H(T) cannot fall (a property, no reference)."""
    acts, y = _activations(seed=3)
    for n in (15, 50, 128):
        coarse = BinningEstimator("uniform", n, "neuron")
        fine = BinningEstimator("uniform", 2 * n, "neuron")
        np.testing.assert_array_equal(fine.codes(acts) // 2, coarse.codes(acts))
        assert fine.plane_point(acts, y).h_t >= coarse.plane_point(acts, y).h_t


def test_labels_never_say_exact_and_round_trip():
    labels = {
        BinningEstimator(): "binning-uniform-30-global",
        BinningEstimator("uniform", 256, "neuron"): "binning-uniform-256-neuron",
        BinningEstimator("uniform", 100, (-1, 1)): "binning-uniform-100-fixed[-1,1]",
        BinningEstimator("adaptive", 30, "layer"): "binning-adaptive-30-layer",
        BinningEstimator("uniform", 30, (0.1234567, 2.5)): "binning-uniform-30-fixed[0.1234567,2.5]",
        BinningEstimator("uniform", 30, (-1e-07, 1e20)): "binning-uniform-30-fixed[-1e-07,1e+20]",
    }
    for est, label in labels.items():
        assert est.label == label and "exact" not in label
        assert parse_estimator(label) == est
    assert [e.label for e in binning.PAPER_ESTIMATORS] == [f"binning-uniform-{n}-global" for n in (30, 100, 256)]
    with pytest.raises(ValueError, match="not a binning estimator"):
        parse_estimator("exact")
    with pytest.raises(ValueError, match="strategy"):
        BinningEstimator("kde")
    with pytest.raises(ValueError, match="n_bins"):
        BinningEstimator("uniform", 0)
    with pytest.raises(ValueError, match="adaptive"):
        BinningEstimator("adaptive", 30, "global")
    with pytest.raises(ValueError, match="lo < hi"):
        BinningEstimator("uniform", 30, (1.0, 1.0))


def test_global_range():
    assert binning.global_range([(0.0, 1.0), (-2.0, 0.5)]) == (-2.0, 1.0)
    with pytest.raises(ValueError, match="at least one"):
        binning.global_range([])


# ---------------------------------------------------------------- BinnedPlane on models

def _float_net_activations(model, x):
    """T1..Tn of a float PaperMLP recomputed by hand from its weights (no hooks)."""
    outs, h = {}, x
    for i in range(1, model.n_layers + 1):
        fc = getattr(model, f"fc{i}")
        z = h @ fc.weight.T + fc.bias
        h = torch.softmax(z, 1) if i == model.n_layers else (torch.tanh(z) if model.activation == "tanh" else torch.relu(z))
        outs[f"T{i}"] = h.detach().numpy()
    return outs


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_binned_plane_on_a_float_network_matches_hand_computation(activation):
    torch.manual_seed(0)
    model = PaperMLP((12, 10, 7, 5, 4, 3, 2), activation, bits=32).train()
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 2, (300, 12), generator=g).float()
    y = torch.randint(0, 2, (300,), generator=g).numpy()
    plane = BinnedPlane(model, x, y, layers="auto", batch_size=128)
    assert plane.layer_names == [f"T{i}" for i in range(1, 7)]
    expected = _float_net_activations(model, x)
    rng_before = torch.get_rng_state()
    acts = plane.activations()
    assert model.training and torch.equal(torch.get_rng_state(), rng_before)
    for name in plane.layer_names:
        np.testing.assert_allclose(acts[name], expected[name], rtol=1e-5, atol=1e-6)
    run_range = plane.value_range(acts)
    records = plane.measure(epoch=4, step=40, global_range=run_range, activations=acts)
    assert [(r.estimator, r.layer) for r in records] == [
        (e.label, n) for e in binning.PAPER_ESTIMATORS for n in plane.layer_names]
    for r in records:
        est = parse_estimator(r.estimator)
        h_t, i_ty = _reference_mi(_reference_codes(acts[r.layer], est, run_range), y)
        assert (r.i_xt, r.h_t) == (pytest.approx(h_t, abs=1e-9), pytest.approx(h_t, abs=1e-9))
        assert r.i_ty == pytest.approx(i_ty, abs=1e-9)
        assert not r.exact and r.bit_width == 32 and r.epoch == 4 and r.step == 40
        assert r.layer_index == int(r.layer[1:]) - 1 and r.label == r.layer
        assert r.width == expected[r.layer].shape[1]
        assert record_from_dict(r.to_dict()) == r  # a valid v2 record; the label survives mi.jsonl


def test_binned_plane_on_a_quantized_network_bins_its_dequantized_outputs():
    torch.manual_seed(1)
    model = build_net("mnist-bottleneck-2", bits=8)
    x = torch.rand(64, 784)
    y = np.arange(64) % 10
    est = BinningEstimator("uniform", 256, "neuron")
    plane = BinnedPlane(model, x, y, estimators=[est])
    assert plane.layer_names == [f"T{i}" for i in range(1, 6)] == default_layers(model)
    codes, scales = {}, {}

    def keep(name):
        def hook(_m, _a, out):
            codes[name], scales[name] = out.int().numpy(), out.scale
        return hook

    hooks = [getattr(model, n).act_quant.register_forward_hook(keep(n)) for n in plane.layer_names]
    with torch.no_grad():
        model.eval()(x)
    for h in hooks:
        h.remove()
    acts = plane.activations()
    for name in plane.layer_names:
        np.testing.assert_allclose(acts[name], codes[name] * scales[name].numpy(), rtol=1e-6, atol=1e-7)
    for records in (plane.measure(epoch=0), BinnedPlane(model, x, y, estimators=[est]).measure(0, activations=acts)):
        assert all(r.bit_width == 8 and r.estimator == est.label for r in records)


def test_measure_snapshots_uses_the_range_of_the_whole_run_and_restores_the_model():
    torch.manual_seed(2)
    model = PaperMLP((12, 8, 2), "tanh", bits=32)
    x = torch.randint(0, 2, (200, 12)).float()
    y = np.arange(200) % 2
    plane = BinnedPlane(model, x, y)
    snapshots = []
    for epoch in range(3):
        with torch.no_grad():
            model.fc1.weight.mul_(1.5)
        snapshots.append((epoch, epoch * 10, {k: v.clone() for k, v in model.state_dict().items()}))
    final = {k: v.clone() for k, v in model.state_dict().items()}
    records = measure_snapshots(plane, snapshots)
    for k, v in model.state_dict().items():
        assert torch.equal(v, final[k]), k
    ranges = []
    for _, _, state in snapshots:
        model.load_state_dict(state)
        ranges.append(plane.value_range())
    run_range = (min(r[0] for r in ranges), max(r[1] for r in ranges))
    for epoch, step, state in snapshots:
        model.load_state_dict(state)
        got = [r for r in records if r.epoch == epoch]
        assert got == plane.measure(epoch, step, global_range=run_range)
    assert len(records) == 3 * 3 * 2


def test_binned_plane_errors():
    model = PaperMLP((4, 3, 2), "relu", bits=32)
    x, y = torch.rand(10, 4), np.zeros(10, dtype=int)
    with pytest.raises(ValueError, match="no module named"):
        BinnedPlane(model, x, y, layers=["T9"])
    with pytest.raises(ValueError, match="9 labels for 10"):
        BinnedPlane(model, x, y[:9])
    with pytest.raises(ValueError, match="repeat"):
        BinnedPlane(model, x, y, estimators=["binning-uniform-30-layer", "binning-uniform-30-layer"])
    with pytest.raises(ValueError, match="layer_names"):
        default_layers(torch.nn.Sequential(torch.nn.Linear(4, 2)))
    with pytest.raises(ValueError, match="global range"):
        BinnedPlane(model, x, y).measure(0)
    with torch.no_grad():
        model.fc1.weight.fill_(float("nan"))
    with pytest.raises(ValueError, match="layer 'T1'.*NaN"):
        BinnedPlane(model, x, y, estimators=["binning-uniform-30-layer"]).measure(0)


def test_exact_monitor_refuses_a_float_layer_and_names_the_binning_estimators():
    from ib_brevitas import InformationPlane

    model = PaperMLP((4, 3, 2), "relu", bits=32)
    with pytest.raises(ValueError, match=r"'T1'.*no integer representation.*binning.*BinnedPlane"):
        InformationPlane(model, torch.rand(5, 4), np.zeros(5, dtype=int), layers=["T1"])


def _unique_counts(rows, y):
    """Sorted counts of the distinct rows and of the distinct (row, label) pairs, by np.unique."""
    rows = np.asarray(rows).reshape(len(y), -1)
    t = np.unique(rows, axis=0, return_counts=True)[1]
    ty = np.unique(np.column_stack([rows, y]), axis=0, return_counts=True)[1]
    return sorted(t.tolist()), sorted(ty.tolist())


@pytest.mark.parametrize("n,width,n_bins,low", [
    (3000, 2, 30, 0),      # dense table
    (3000, 4, 256, 100),   # 32-bit sort
    (3000, 6, 256, 0),     # 64-bit sort
    (3000, 16, 256, 0),    # 128 bits: rows alone in their leading 64 bits are counted without the rest
    (3000, 40, 3, 1),      # 40 x 1 bit: the leading 64 bits shared by many rows, the rest decides
    (3000, 10, 100, 90),   # narrow used ranges: fits one key though 100^10 does not
    (1, 5, 30, 0),         # a single sample
    (50, 3, 7, 6),         # every column constant (used range one bin)
])
def test_binned_row_keys_and_counts_equal_np_unique(n, width, n_bins, low):
    rng = np.random.default_rng(n + width)
    codes = rng.integers(low, n_bins, (n, width)).astype(np.float64)
    codes[: n // 3] = codes[n // 3: 2 * (n // 3)]  # repeated rows
    y = rng.integers(0, 10, n)
    weights, offsets, spaces = bincount.key_layout(*binning.column_ranges(codes))
    parts = codes @ weights - offsets
    assert all(0 <= parts[:, g].min() and parts[:, g].max() < s for g, s in enumerate(spaces))
    y_ids, y_counts = unique_rows(y)
    t, ty = bincount.row_counts([parts[:, g] for g in range(len(spaces))], spaces, y_ids, 10)
    assert (sorted(t.tolist()), sorted(ty.tolist())) == _unique_counts(codes, y)
    point = bincount.plane_point(codes, *binning.column_ranges(codes), y_ids, y_counts)
    h_t, i_ty = _reference_mi(codes.astype(int), y)
    assert point.h_t == pytest.approx(h_t, abs=1e-9) and point.i_ty == pytest.approx(i_ty, abs=1e-9)


def test_dense_ids_are_a_partition_in_key_order():
    keys = np.array([2**63 + 5, 7, 2**64 - 1, 7, 0, 2**63 + 5], dtype=np.uint64)
    ids, d = bincount.dense_ids(keys)
    assert d == 4 and sorted(set(ids.tolist())) == [0, 1, 2, 3]
    assert all((ids[i] == ids[j]) == (keys[i] == keys[j]) for i in range(6) for j in range(6))


def test_column_ranges_equal_numpy():
    rng = np.random.default_rng(7)
    for shape in [(1, 1), (7, 3), (1025, 2), (70001, 16), (300, 600)]:
        a = rng.normal(size=shape).astype(np.float32)
        lo, hi = binning.column_ranges(a)
        np.testing.assert_array_equal(lo, a.min(axis=0))
        np.testing.assert_array_equal(hi, a.max(axis=0))


def _edge_values(lo, hi, n):
    """Every linspace edge, its float32 and float64 neighbours, the bounds, beyond them and 0."""
    e = np.linspace(lo, hi, n + 1)
    vals = [e, np.nextafter(e, -np.inf), np.nextafter(e, np.inf), e.astype(np.float32).astype(np.float64),
            np.nextafter(e.astype(np.float32), np.float32(-np.inf)).astype(np.float64),
            np.nextafter(e.astype(np.float32), np.float32(np.inf)).astype(np.float64),
            [0.0, -0.0, lo - 1, hi + 1, 1e-300, -1e-300]]
    return np.concatenate([np.asarray(v, dtype=np.float64).ravel() for v in vals])


@pytest.mark.parametrize("lo,hi", [(0.0, 1.0), (-1.0, 1.0), (0.0, 34.13892364501953), (-3.7, 0.1),
                                   (1e6, 1e6 + 1.0), (1e12, 1e12 + 1.0)])  # the last at float64's resolution
@pytest.mark.parametrize("n_bins", [3, 4, 30, 100, 256])
def test_uniform_codes_at_edges_equal_digitize_exactly(lo, hi, n_bins):
    v = _edge_values(lo, hi, n_bins)[:, None]
    expected = np.digitize(v[:, 0], np.linspace(lo, hi, n_bins + 1)[1:-1])
    got = binning.uniform_codes(v, n_bins, lo, hi).ravel()
    np.testing.assert_array_equal(got, expected)
    # the same values as one row per sample of a 3-neuron layer, counted through the keys
    rows = np.column_stack([v[:, 0], v[::-1, 0], np.roll(v[:, 0], 5)])
    y = np.arange(rows.shape[0]) % 3
    est = BinningEstimator("uniform", n_bins, (lo, hi))
    ref = _reference_codes(rows, est)
    np.testing.assert_array_equal(est.codes(rows).astype(np.int64), ref)
    point = est.plane_point(rows, y)
    h_t, i_ty = _reference_mi(ref, y)
    assert point.h_t == pytest.approx(h_t, abs=1e-9) and point.i_ty == pytest.approx(i_ty, abs=1e-9)


def test_neuron_bounds_edges_with_a_constant_neuron_equal_per_column_linspace():
    """np.linspace on arrays switches every column to its denormal formula when one column is constant."""
    rows = np.array([[0.0, 5.0, -1.0], [1.0, 5.0, 0.0], [0.1 * 3, 5.0, 2.0 / 3], [0.7, 5.0, 1.0]])
    for n in (3, 10, 30):
        est = BinningEstimator("uniform", n, "neuron")
        np.testing.assert_array_equal(est.codes(rows).astype(np.int64), _reference_codes(rows, est))
        lo, hi = rows.min(axis=0), rows.max(axis=0)
        edges = binning.linspace_edges(lo, hi, n)
        for j in (0, 2):
            np.testing.assert_array_equal(edges[:, j], np.linspace(lo[j], hi[j], n + 1))
