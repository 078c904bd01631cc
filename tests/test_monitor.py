"""Layer discovery and the monitor on real Brevitas models, checked independently."""

import copy

import numpy as np
import pytest
import torch
from brevitas.nn import QuantIdentity, QuantLinear, QuantReLU
from brevitas.quant_tensor import IntQuantTensor
from brevitas_examples.bnn_pynq.models import model_with_cfg
from independent import mi_by_np_unique

from ib_brevitas import InformationPlane, find_quant_layers
from ib_brevitas.experiments.data import digits_as_mnist
from ib_brevitas.experiments.paper_run import build_run, train_epoch

BNN_PYNQ = ["tfc_1w1a", "tfc_2w2a", "sfc_1w1a", "lfc_1w1a", "cnv_1w1a", "cnv_2w2a"]
N = 37  # no weight tensor has a leading dimension of 37


def _probe(name: str):
    g = torch.Generator().manual_seed(0)
    if name.startswith("cnv"):
        base = torch.rand(20, 3, 32, 32, generator=g)
    else:
        base = torch.from_numpy(digits_as_mnist()[0][:20]).unsqueeze(1)
    x = base[torch.randint(0, 20, (N,), generator=g)]  # duplicated inputs -> duplicated codes
    y = torch.randint(0, 10, (N,), generator=g)
    return x, y


def _independent_codes(model, x):
    """Every module output that is an IntQuantTensor with one row per sample, by owner path."""
    seen = {}
    handles = []
    for name, module in model.named_modules():
        def hook(_m, _i, out, name=name):
            if isinstance(out, IntQuantTensor) and out.value.shape[0] == N:
                seen[name.rsplit(".", 1)[0]] = out.int().reshape(N, -1).numpy().copy()
        handles.append(module.register_forward_hook(hook))
    model.eval()
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return seen


@pytest.mark.parametrize("name", BNN_PYNQ)
def test_bnn_pynq_layers_and_mi_match_independent_hooks(name):
    torch.manual_seed(0)
    model, _ = model_with_cfg(name, pretrained=False)
    x, y = _probe(name)
    plane = InformationPlane(model, x, y, batch_size=16)
    expected = _independent_codes(copy.deepcopy(model), x)
    assert plane.layer_names == list(find_quant_layers(model))
    assert set(plane.layer_names) == set(expected)
    codes = plane.collect_codes()
    records = plane.measure(epoch=0)
    for r in records:
        assert np.array_equal(codes[r.layer], expected[r.layer]), r.layer
        h_t, i_ty = mi_by_np_unique(expected[r.layer], y.numpy())
        assert r.i_xt == pytest.approx(h_t, abs=1e-12)
        assert r.i_ty == pytest.approx(i_ty, abs=1e-12)
        assert r.width == expected[r.layer].shape[1]
        assert r.n_samples == N
    assert [r.layer_index for r in records] == list(range(len(records)))


class _Mixed(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = QuantLinear(4, 6, bias=True)
        self.act1 = QuantReLU(bit_width=4)
        self.fc2 = torch.nn.Linear(6, 5)
        self.off = QuantReLU(act_quant=None)
        self.out = QuantIdentity(bit_width=3)

    def forward(self, x):
        return self.out(self.off(self.fc2(self.act1(self.fc1(x)))))


def test_forward_order_and_names():
    m = _Mixed()
    assert list(find_quant_layers(m, torch.rand(2, 4))) == ["act1", "out"]


def test_errors_name_the_layer_and_say_why():
    m, x, y = _Mixed(), torch.rand(10, 4), torch.randint(0, 2, (10,))
    with pytest.raises(ValueError, match="'fc2' .*no integer representation"):
        InformationPlane(m, x, y, layers=["fc2"])
    with pytest.raises(ValueError, match="'off' .*disabled"):
        InformationPlane(m, x, y, layers=["off"])
    with pytest.raises(ValueError, match="no module named 'nope'"):
        InformationPlane(m, x, y, layers=["nope"])
    with pytest.raises(ValueError, match="one label per"):
        InformationPlane(m, x, y[:9])
    with pytest.raises(ValueError, match="empty"):
        InformationPlane(m, x[:0], y[:0])
    with pytest.raises(ValueError, match="NaN"):
        InformationPlane(m, x.masked_fill(x > 0.5, float("nan")), y)
    with pytest.raises(ValueError, match="no layer that produces integer codes"):
        InformationPlane(torch.nn.Linear(4, 2), x, y)
    plane = InformationPlane(m, x, y)
    with torch.no_grad():
        m.fc1.bias.fill_(float("nan"))
    with pytest.raises(ValueError, match="'act1': NaN or inf"):
        plane.measure(0)


def test_flags_and_rng_restored():
    m = _Mixed()
    m.train()
    m.act1.eval()
    plane = InformationPlane(m, torch.rand(10, 4), torch.randint(0, 2, (10,)))
    before = [mod.training for mod in m.modules()]
    rng = torch.get_rng_state()
    plane.measure(0)
    assert [mod.training for mod in m.modules()] == before
    assert torch.equal(torch.get_rng_state(), rng)


@pytest.mark.parametrize("engine", ["fast", "brevitas"])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_training_is_bit_identical_with_and_without_monitor(activation, engine):
    """With the Brevitas engine the monitor's hooked pass runs the very modules training uses
    (running statistics, step counters, train flags, RNG): all must come back as they were."""
    from ib_brevitas.state import counters_state

    config = dict(seed=3, test_fraction=0.2, activation=activation, bits=8, lr=1e-3, batch_size=256, engine=engine)
    watched, plain = build_run(config), build_run(config)
    assert (watched.fast is None) == (engine == "brevitas")
    watched.plane.measure(0)
    for epoch in range(1, 4):
        train_epoch(watched)
        watched.plane.measure(epoch)
        train_epoch(plain)
    a, b = watched.model.state_dict(), plain.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert counters_state(watched.model) == counters_state(plain.model)
    assert len(watched.plane.history) == 4 * len(watched.plane.layer_names)


def test_measuring_after_load_state_dict_leaves_no_trace():
    """load_state_dict can replace Brevitas submodules: the monitor must not keep stale ones."""
    from ib_brevitas.state import counters_state, load_counters_state

    config = dict(seed=1, test_fraction=0.2, activation="relu", bits=8, lr=1e-3, batch_size=256)
    reference, resumed = build_run(config), build_run(config)
    train_epoch(reference)
    resumed.model.load_state_dict(copy.deepcopy(reference.model.state_dict()))
    load_counters_state(resumed.model, counters_state(reference.model))
    resumed.optimizer.load_state_dict(copy.deepcopy(reference.optimizer.state_dict()))
    resumed.shuffle.set_state(reference.shuffle.get_state())
    resumed.plane.measure(1)
    train_epoch(reference)
    train_epoch(resumed)
    a, b = reference.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def _syn_run(activation="tanh"):
    run = build_run(dict(seed=2, test_fraction=0.2, activation=activation, bits=8, lr=1e-2, batch_size=256,
                         engine="brevitas"))
    for _ in range(2):  # away from the initial weights
        train_epoch(run)
    return run


def _plane(run, **kwargs):
    """A plane on the run's model and probe set, built with `kwargs` (e.g. codes_fn)."""
    return InformationPlane(run.model, run.plane.inputs, run.plane.labels, batch_size=1000, **kwargs)


def _values(records):
    return [(r.layer, r.epoch, r.i_xt, r.i_ty, r.h_t, r.n_distinct, r.bit_width, r.width) for r in records]


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_codes_fn_gives_the_records_of_the_hooked_pass(activation):
    from ib_brevitas.experiments.fastpath import SynFastPath

    run = _syn_run(activation)
    hooked, fast = _plane(run), _plane(run, codes_fn=SynFastPath(run.model).codes, verify_every=3)
    checks = []
    for epoch in range(7):
        calls = []
        handle = run.model.register_forward_pre_hook(lambda *_: calls.append(1))
        records = fast.measure(epoch)
        handle.remove()
        checks.append(len(calls) > 0)  # the model ran: a check against the hooked pass
        assert _values(records) == _values(hooked.measure(epoch))
        train_epoch(run)
    assert checks == [True, False, False, True, False, False, True]
    assert fast.codes_fn is not None


def test_a_wrong_codes_fn_is_caught_and_dropped():
    from ib_brevitas.experiments.fastpath import SynFastPath

    run = _syn_run()
    hooked, right = _plane(run), SynFastPath(run.model).codes

    def off_by_one(x):
        codes = right(x)
        codes["T3"] = codes["T3"].clone()
        codes["T3"][0, 0] += 1
        return codes

    plane = _plane(run, codes_fn=off_by_one)
    with pytest.warns(RuntimeWarning, match=r"'T3' \(\d+ of 4096 samples\)"):
        records = plane.measure(0)
    assert _values(records) == _values(hooked.measure(0))
    assert plane.codes_fn is None  # later measurements use the hooked pass


@pytest.mark.parametrize("bad, match", [
    (lambda codes: {k: v for k, v in codes.items() if k != "T5"}, r"no codes for the layers \['T5'\]"),
    (lambda codes: {k: v.float() for k, v in codes.items()}, "return integer codes"),
])
def test_codes_fn_with_missing_or_float_codes_is_dropped(bad, match):
    from ib_brevitas.experiments.fastpath import SynFastPath

    run = _syn_run()
    fast = SynFastPath(run.model)
    hooked, plane = _plane(run), _plane(run, codes_fn=lambda x: bad(fast.codes(x)))
    with pytest.warns(RuntimeWarning, match=match):
        assert _values(plane.measure(0)) == _values(hooked.measure(0))


def test_codes_fn_arguments_are_checked():
    x, y = torch.rand(10, 4), torch.randint(0, 2, (10,))
    with pytest.raises(TypeError, match="codes_fn must be callable"):
        InformationPlane(_Mixed(), x, y, codes_fn="T1")
    with pytest.raises(ValueError, match="verify_every must be >= 1"):
        InformationPlane(_Mixed(), x, y, verify_every=0)


def test_measure_async_records_the_same_in_order():
    run = _syn_run()
    sync, background = _plane(run), _plane(run)
    seen = []
    background.add_sink(lambda records: seen.append(records[0].epoch))
    futures = []
    for epoch in range(6):
        futures.append(background.measure_async(epoch))  # codes taken now, before training goes on
        sync.measure(epoch)
        train_epoch(run)
    background.flush()
    assert seen == list(range(6))
    assert _values(background.history) == _values(sync.history)
    assert _values(futures[2].result()) == _values(sync.history[12:18])


def test_measure_async_failure_is_raised_and_leaves_no_gap():
    plane = _plane(_syn_run())
    written = []

    def sink(records):
        if records[0].epoch == 1:
            raise OSError("disk full")
        written.append(records[0].epoch)

    plane.add_sink(sink)
    plane.measure_async(0)
    plane.measure_async(1)
    with pytest.raises(OSError, match="disk full"):
        plane.flush()
    with pytest.raises(RuntimeError, match="failed earlier"):
        plane.measure_async(2)
        plane.flush()
    assert written == [0]


@pytest.mark.parametrize("engine", ["fast", "brevitas"])
def test_training_is_bit_identical_with_and_without_measure_async(engine):
    config = dict(seed=4, test_fraction=0.2, activation="relu", bits=8, lr=1e-3, batch_size=256, engine=engine)
    watched, plain = build_run(config), build_run(config)
    for epoch in range(4):
        watched.plane.measure_async(epoch)
        train_epoch(watched)
        train_epoch(plain)
    watched.plane.flush()
    a, b = watched.model.state_dict(), plain.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r.epoch for r in watched.plane.history] == [e for e in range(4) for _ in watched.plane.layer_names]
