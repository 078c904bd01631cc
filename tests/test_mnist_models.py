"""The paper's MNIST networks: shapes, bit widths and sizes against the issue's listing; MI checked independently."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from brevitas.quant_tensor import IntQuantTensor
from independent import mi_by_np_unique
from test_models import check_paper_initialisation

from ib_brevitas import InformationPlane
from ib_brevitas.experiments import data
from ib_brevitas.experiments.models import NETS, PaperConv, PaperMLP, build_net, syn_loss

MNIST_TEST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist-test"
# The listing of issue 12 (and the paper): input, hidden..., output.
MLP_LISTING = {
    "mnist-4x10": (784, 10, 10, 10, 10, 10),
    "mnist-bottleneck-2": (784, 16, 8, 4, 2, 10),
    "mnist-bottleneck-4": (784, 16, 12, 8, 4, 10),
    "mnist-hourglass": (784, 16, 8, 4, 2, 4, 8, 10),
}
# conv 2x3x3 -> 26x26, pool -> 13, conv 2x3x3 -> 11x11, pool -> 5, dense 16, dense 10
CONV_OUTPUT_WIDTHS = [2 * 26 * 26, 2 * 11 * 11, 16, 10]
CONV_PARAMS = (2 * 1 * 9 + 2) + (2 * 2 * 9 + 2) + (2 * 5 * 5 * 16 + 16) + (16 * 10 + 10)
N = 37  # no weight tensor has a leading dimension of 37


def _params(widths):
    return sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))


def _probe():
    g = torch.Generator().manual_seed(0)
    if MNIST_TEST.is_dir():
        base = torch.from_numpy(data.image_inputs(data.load_mnist_idx(MNIST_TEST)[0][:20]))
    else:
        base = torch.rand(20, 784, generator=g)
    x = base[torch.randint(0, 20, (N,), generator=g)]  # duplicated inputs -> duplicated codes
    return x, torch.randint(0, 10, (N,), generator=g)


def _independent_codes(model, x):
    """Every module output that is an IntQuantTensor with one row per sample, by owner path."""
    seen, handles = {}, []
    for name, module in model.named_modules():
        def hook(_m, _i, out, name=name):
            if isinstance(out, IntQuantTensor) and out.value.shape[0] == N:
                seen[name.rsplit(".", 1)[0]] = (out.int().reshape(N, -1).numpy().copy(), int(out.bit_width))
        handles.append(module.register_forward_hook(hook))
    with torch.no_grad():
        model.eval()(x)
    for h in handles:
        h.remove()
    return seen


def test_the_names_train_and_sweep_rely_on():
    assert list(NETS) == ["syn", "mnist-4x10", "mnist-bottleneck-2", "mnist-bottleneck-4", "mnist-hourglass", "mnist-conv"]
    assert build_net("syn").activation == "tanh" and build_net("mnist-4x10").activation == "tanh"
    assert all(build_net(n).activation == "relu" for n in ("mnist-bottleneck-2", "mnist-hourglass", "mnist-conv"))


@pytest.mark.parametrize("name", list(MLP_LISTING))
@pytest.mark.parametrize("bits", [8, 4, 32])
def test_mlp_widths_bits_and_parameter_count(name, bits):
    model = build_net(name, "relu", bits)
    listing = MLP_LISTING[name]
    assert isinstance(model, PaperMLP) and model.widths == listing
    fcs = [getattr(model, f"fc{i}") for i in range(1, len(listing))]
    assert [fcs[0].in_features] + [fc.out_features for fc in fcs] == list(listing)
    assert sum(p.numel() for p in model.parameters()) == _params(listing)
    assert model.layer_names == [f"T{i}" for i in range(1, len(listing))]
    if bits == 32:  # a float network: nothing of Brevitas in it
        assert not any(type(m).__module__.startswith("brevitas") for m in model.modules())
        return
    assert all(int(fc.quant_weight().bit_width) == bits for fc in fcs)
    codes = _independent_codes(model, torch.rand(N, 784))
    assert [codes[f"T{i}"][1] for i in range(1, len(listing))] == [bits] * (len(listing) - 1)
    assert [codes[f"T{i}"][0].shape[1] for i in range(1, len(listing))] == list(listing[1:])


@pytest.mark.parametrize("bits", [8, 4, 32])
def test_conv_layers_bits_and_parameter_count(bits):
    model = build_net("mnist-conv", bits=bits)
    assert isinstance(model, PaperConv)
    assert (model.conv1.in_channels, model.conv1.out_channels, model.conv1.kernel_size) == (1, 2, (3, 3))
    assert (model.conv2.in_channels, model.conv2.out_channels, model.conv2.kernel_size) == (2, 2, (3, 3))
    assert (model.fc3.in_features, model.fc3.out_features, model.fc4.out_features) == (50, 16, 10)
    assert sum(p.numel() for p in model.parameters()) == CONV_PARAMS == 1044
    assert model(torch.rand(3, 28, 28)).shape == (3, 10)
    if bits == 32:
        assert not any(type(m).__module__.startswith("brevitas") for m in model.modules())
        return
    for m in (model.conv1, model.conv2, model.fc3, model.fc4):
        assert int(m.quant_weight().bit_width) == bits
    codes = _independent_codes(model, torch.rand(N, 1, 28, 28))
    assert [codes[f"T{i}"][0].shape[1] for i in range(1, 5)] == CONV_OUTPUT_WIDTHS
    assert [codes[f"T{i}"][1] for i in range(1, 5)] == [bits] * 4


@pytest.mark.parametrize("name", [n for n in NETS if n != "syn"])
def test_found_layers_and_mi_match_independent_hooks(name):
    torch.manual_seed(0)
    model = build_net(name, bits=8)
    x, y = _probe()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)  # a few steps, so the ReLU ranges move off their start
    for _ in range(3):
        model.train()
        opt.zero_grad()
        syn_loss(model(x), y).backward()
        opt.step()
    expected = _independent_codes(copy.deepcopy(model), x)
    plane = InformationPlane(model, x, y, batch_size=16)
    assert plane.layer_names == model.layer_names
    assert set(expected) == set(model.layer_names)
    codes = plane.collect_codes()
    for r in plane.measure(epoch=0):
        want, bits = expected[r.layer]
        assert np.array_equal(codes[r.layer], want), r.layer
        h_t, i_ty = mi_by_np_unique(want, y.numpy())
        assert r.i_xt == pytest.approx(h_t, abs=1e-12) and r.i_ty == pytest.approx(i_ty, abs=1e-12)
        assert (r.width, r.bit_width, r.n_samples, r.estimator) == (want.shape[1], bits, N, "exact")


@pytest.mark.parametrize("name", ["mnist-bottleneck-2", "mnist-conv"])
def test_paper_initialisation_of_the_mnist_nets(name):
    pooled = check_paper_initialisation(lambda: build_net(name, bits=32), seeds=range(4))
    assert len(pooled) == (4 if name == "mnist-conv" else 5)


def test_build_net_errors():
    with pytest.raises(ValueError, match="unknown network 'mnist-5x5'.*mnist-bottleneck-2"):
        build_net("mnist-5x5")
    with pytest.raises(ValueError, match="activation"):
        build_net("mnist-conv", "tanh")
    with pytest.raises(ValueError, match="bits"):
        build_net("mnist-4x10", bits=1)
    with pytest.raises(ValueError, match="widths"):
        PaperMLP((784,), "relu", 8)


@pytest.mark.skipif(not MNIST_TEST.is_dir(), reason=f"reference folder {MNIST_TEST} not present")
def test_bottleneck_learns_mnist_a_little():
    images, labels = data.load_mnist_idx(MNIST_TEST)
    x, y = torch.from_numpy(data.image_inputs(images[:1024])), torch.from_numpy(labels[:1024])
    torch.manual_seed(0)
    model = build_net("mnist-bottleneck-4", bits=8)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)

    def loss():
        with torch.no_grad():
            return syn_loss(model.eval()(x), y).item()

    start = loss()
    for _ in range(3):
        for s in range(0, 1024, 256):
            model.train()
            opt.zero_grad()
            syn_loss(model(x[s:s + 256]), y[s:s + 256]).backward()
            opt.step()
    assert loss() < start - 0.1
