"""The SYN network: names, integer codes recomputed independently, loss, training."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from brevitas.nn.quant_layer import QuantNonLinearActLayer
from brevitas.quant_tensor import IntQuantTensor

from ib_brevitas.experiments.data import syn_dataset
from ib_brevitas.experiments.models import SYN_WIDTHS, syn_loss, syn_mlp

VARIANTS = [("tanh", 8), ("relu", 8), ("tanh", 4), ("relu", 4), ("tanh", 2)]


@pytest.fixture(scope="module")
def syn():
    x, y = syn_dataset()
    return torch.from_numpy(x).float(), torch.from_numpy(y)


def _trained_a_little(activation, bits, syn, steps=3):
    torch.manual_seed(0)
    model = syn_mlp(activation, bits)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = syn
    for i in range(steps):
        idx = slice(256 * i, 256 * (i + 1))
        opt.zero_grad()
        syn_loss(model(x[idx]), y[idx]).backward()
        opt.step()
    return model.eval()


def _capture(model, x):
    """Eval forward recording each fc output (pre-activation) and each act_quant output."""
    pre, quant = {}, {}
    hooks = []
    for i in range(1, 7):
        hooks.append(getattr(model, f"fc{i}").register_forward_hook(
            lambda m, a, out, i=i: pre.__setitem__(i, out.detach())))
        hooks.append(getattr(model, f"T{i}").act_quant.register_forward_hook(
            lambda m, a, out, i=i: quant.__setitem__(i, out)))
    with torch.no_grad():
        probs = model(x)
    for h in hooks:
        h.remove()
    return pre, quant, probs


def test_layer_names_and_shapes():
    model = syn_mlp()
    acts = [n for n, m in model.named_modules() if isinstance(m, QuantNonLinearActLayer)]
    assert acts == [f"T{i}" for i in range(1, 7)]
    linears = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    assert linears == [f"fc{i}" for i in range(1, 7)]
    widths = [12] + [getattr(model, f"fc{i}").out_features for i in range(1, 7)]
    assert tuple(widths) == SYN_WIDTHS == (12, 10, 7, 5, 4, 3, 2)
    # only weights and biases are trained: the activation scales are fixed or running statistics
    assert len(list(model.parameters())) == 12


@pytest.mark.parametrize("activation,bits", VARIANTS)
def test_codes_equal_independent_quantization(activation, bits, syn):
    model = _trained_a_little(activation, bits, syn)
    x, _ = syn
    pre, quant, probs = _capture(model, x)
    assert probs.shape == (4096, 2)
    for i in range(1, 6):
        qt = quant[i]
        assert isinstance(qt, IntQuantTensor), f"T{i}"
        assert int(qt.bit_width) == bits
        codes = qt.int()
        if activation == "tanh":
            # fixed scale 2^-(k-1): codes -2^(k-1) .. 2^(k-1)-1
            expected = torch.clamp(torch.round(torch.tanh(pre[i]) * 2 ** (bits - 1)),
                                   -(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
        else:
            running_max = dict(getattr(model, f"T{i}").named_buffers())[
                "act_quant.fused_activation_quant_proxy.tensor_quant.scaling_impl."
                "runtime_stats.running_stats"]
            scale = running_max.clamp_min(1e-10) / (2**bits - 1)
            assert torch.allclose(qt.scale, scale)
            expected = torch.clamp(torch.round(torch.relu(pre[i]) / scale), 0, 2**bits - 1)
        assert torch.equal(codes.to(torch.int64), expected.to(torch.int64)), f"T{i}"
    # output: softmax probabilities on the unsigned k-bit grid 0, 1/(2^k-1), ..., 1
    levels = 2**bits - 1
    out_codes = quant[6].int().to(torch.int64)
    assert torch.equal(out_codes, torch.round(torch.softmax(pre[6], dim=1) * levels).to(torch.int64))
    assert out_codes.min() >= 0 and out_codes.max() <= levels
    assert torch.allclose(probs * levels, out_codes.to(probs.dtype), atol=1e-4)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_weights_are_k_bit_narrow_range(activation):
    for bits in (8, 4, 2):
        model = syn_mlp(activation, bits)
        for i in range(1, 7):
            qw = getattr(model, f"fc{i}").quant_weight()
            codes = qw.int()
            top = 2 ** (bits - 1) - 1
            assert int(codes.abs().max()) == top  # per-tensor max|W| maps to the top code
            w = getattr(model, f"fc{i}").weight.detach()
            assert torch.allclose(qw.scale, w.abs().max() / top)


def test_relu_running_max_tracks_batch_maxima(syn):
    """Training updates the ReLU range with the batch maximum (EMA); eval leaves it alone."""
    torch.manual_seed(1)
    model = syn_mlp("relu", 8).train()
    x, y = syn
    pre = {}
    model.fc1.register_forward_hook(lambda m, a, out: pre.__setitem__("fc1", out.detach()))
    key = "act_quant.fused_activation_quant_proxy.tensor_quant.scaling_impl.runtime_stats.running_stats"
    buf = dict(model.T1.named_buffers())[key]
    model(x[:256])
    first = torch.relu(pre["fc1"]).max()
    assert torch.allclose(buf, first)
    model(x[256:512])
    second = torch.relu(pre["fc1"]).max()
    assert torch.allclose(buf, 0.9 * first + 0.1 * second)
    before = buf.clone()
    model.eval()
    with torch.no_grad():
        model(x)
    assert torch.equal(buf, before)


def test_seeded_construction_is_deterministic(syn):
    x, _ = syn
    outs = []
    for _ in range(2):
        torch.manual_seed(7)
        model = syn_mlp("relu", 4).eval()
        with torch.no_grad():
            outs.append((model(x), model.state_dict()))
    assert torch.equal(outs[0][0], outs[1][0])
    for k, v in outs[0][1].items():
        assert torch.equal(v, outs[1][1][k]), k
    torch.manual_seed(8)
    assert not torch.equal(syn_mlp("relu", 4).fc1.weight, outs[0][1]["fc1.weight"])


def _truncated_sd(bound: float = 2.0) -> float:
    """Standard deviation of a standard normal truncated at +-bound."""
    phi = math.exp(-bound * bound / 2) / math.sqrt(2 * math.pi)
    mass = math.erf(bound / math.sqrt(2))
    return math.sqrt(1 - 2 * bound * phi / mass)


def check_paper_initialisation(build, seeds=range(30)):
    """Per layer, pooled over seeds: weights / (1/sqrt(units)) follow a normal truncated at 2.

    A fan-in/fan-out swap changes the scale by sqrt(units / fan_in): the
    pooled maximum then falls short of 1.8 (checked on 400+ weights) or the spread misses 0.880 by more
    than three standard errors (every layer tested here has fan_in != units).
    """
    pooled: dict[str, list[torch.Tensor]] = {}
    for seed in seeds:
        torch.manual_seed(seed)
        model = build()
        for name, m in model.named_modules():
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
                units = m.weight.shape[0]  # out_features, or a conv's filters (the paper's Keras code)
                pooled.setdefault(name, []).append(m.weight.detach().flatten() * math.sqrt(units))
                assert torch.count_nonzero(m.bias) == 0, name
    for name, parts in pooled.items():
        z = torch.cat(parts).double()
        assert z.abs().max() <= 2.0, name
        if z.numel() >= 400:  # P(no |z| above 1.8 in 400 draws) = 0.972^400 ~ 1e-5
            assert z.abs().max() >= 1.8, name
        sd = _truncated_sd()
        assert abs(z.std().item() - sd) <= 3 * sd / math.sqrt(2 * z.numel()), name
        assert abs(z.mean().item()) <= 3 * sd / math.sqrt(z.numel()), name
    return pooled


def test_paper_initialisation():
    pooled = check_paper_initialisation(lambda: syn_mlp())
    assert list(pooled) == [f"fc{i}" for i in range(1, 7)]


def test_syn_loss_matches_keras_formula_and_survives_zero_probabilities():
    probs = torch.tensor([[0.0, 1.0], [0.25, 0.75], [1.0, 0.0], [0.6, 0.4]], requires_grad=True)
    target = torch.tensor([0, 1, 0, 1])
    loss = syn_loss(probs, target)
    eps = 1e-7
    p = probs.detach().numpy()
    p = np.clip(p / p.sum(1, keepdims=True), eps, 1 - eps)
    expected = -np.mean(np.log(p[np.arange(4), target.numpy()]))
    assert math.isfinite(loss.item())
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert torch.isfinite(probs.grad).all()
    with pytest.raises(ValueError, match="probs"):
        syn_loss(probs[:, 0], target)


def test_bad_arguments():
    with pytest.raises(ValueError, match="activation"):
        syn_mlp("sigmoid")
    with pytest.raises(ValueError, match="bits"):
        syn_mlp("tanh", 1)
    with pytest.raises(TypeError, match="bits"):
        syn_mlp("tanh", 8.0)


@pytest.mark.parametrize("activation,bits", [("tanh", 8), ("relu", 4)])
def test_training_reduces_the_loss(activation, bits, syn):
    torch.manual_seed(0)
    model = syn_mlp(activation, bits)
    x, y = syn
    opt = opt_for(model)

    def full_loss():
        model.eval()
        with torch.no_grad():
            return syn_loss(model(x), y).item()

    start = full_loss()
    g = torch.Generator().manual_seed(0)
    for _ in range(4):
        model.train()
        perm = torch.randperm(4096, generator=g)
        for s in range(0, 4096, 256):
            idx = perm[s:s + 256]
            opt.zero_grad()
            syn_loss(model(x[idx]), y[idx]).backward()
            opt.step()
    assert full_loss() < start - 0.02


def opt_for(model):
    return torch.optim.Adam(model.parameters(), lr=1e-2)


def epoch_of(model, opt, x, y):
    from ib_brevitas.experiments.models import syn_loss

    model.train()
    for s in range(0, 4096, 256):
        opt.zero_grad()
        syn_loss(model(x[s:s + 256]), y[s:s + 256]).backward()
        opt.step()


def test_frozen_relu_ranges_keep_the_measured_grid_while_training_goes_on():
    from ib_brevitas import InformationPlane
    from ib_brevitas.experiments.data import syn_dataset
    from ib_brevitas.experiments.models import freeze_relu_ranges, syn_mlp

    torch.manual_seed(0)
    x, y = (torch.from_numpy(a) for a in syn_dataset())
    x = x.float()
    model = syn_mlp("relu", 8)
    opt = opt_for(model)

    def epoch():
        epoch_of(model, opt, x, y)

    plane = InformationPlane(model, x, y)
    epoch()  # calibrate
    assert freeze_relu_ranges(model) == ["T1", "T2", "T3", "T4", "T5"]
    before = plane.measure(1)
    w0 = next(model.parameters()).detach().clone()
    epoch()
    epoch()
    after = plane.measure(3)
    assert not torch.equal(w0, next(model.parameters()))  # it trained
    for b, a in zip(before[:5], after[:5]):
        assert a.scale == b.scale, a.layer  # the measured grid did not move
    unfrozen = syn_mlp("relu", 8)
    unfrozen.load_state_dict(model.state_dict())  # the momentum is no part of the state: not frozen
    scales = []
    for e in range(2):
        epoch_of(unfrozen, opt_for(unfrozen), x, y)
        scales.append(InformationPlane(unfrozen, x, y).measure(e)[0].scale)
    assert scales[0] != scales[1]
    assert freeze_relu_ranges(syn_mlp("tanh", 8)) == []  # tanh's grid is fixed already
