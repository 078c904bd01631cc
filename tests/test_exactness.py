"""The single-run face of the engine (`fastpath`) computes what Brevitas computes, bit for bit; runs are deterministic.

Every comparison here is against an independent computation: a Brevitas forward
of the same model with hooks on its quantizers (`QuantTensor.int()`), autograd's
backward through the Brevitas modules, and torch.optim.Adam itself.
"""

from __future__ import annotations

import copy
import json
import warnings

import pytest
import torch

from ib_brevitas.experiments import kernels
from ib_brevitas.experiments.data import syn_dataset
from ib_brevitas.experiments.fastpath import (
    SynFastPath,
    adam_step,
    check_against_brevitas,
)
from ib_brevitas.experiments.models import syn_loss, syn_mlp
from ib_brevitas.records import read_records

VARIANTS = [("tanh", 8), ("relu", 8), ("tanh", 4), ("relu", 4)]


@pytest.fixture(scope="module")
def syn():
    x, y = syn_dataset()
    return torch.from_numpy(x).float(), torch.from_numpy(y)


def _brevitas_eval(model, x):
    """Eval-mode probabilities and QuantTensor.int() of T1..T6, read by hooks on the quantizers."""
    codes = {}
    hooks = [
        getattr(model, f"T{i}").act_quant.register_forward_hook(
            lambda _m, _a, out, i=i: codes.__setitem__(i, out.int()))
        for i in range(1, 7)
    ]
    model.eval()
    try:
        with torch.no_grad():
            probs = model(x)
    finally:
        for h in hooks:
            h.remove()
    return probs, [codes[i] for i in range(1, 7)]


def _brevitas_step(model, opt, x, y):
    model.train()
    opt.zero_grad(set_to_none=True)
    loss = syn_loss(model(x), y)
    loss.backward()
    return loss


def _assert_same_state(a, b, what):
    for (name, u), v in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(u, v), f"{what}: {name}"
    counters = [m.__dict__.get("counter") for m in a.modules()]
    assert counters == [m.__dict__.get("counter") for m in b.modules()], f"{what}: step counters"


@pytest.mark.parametrize("activation,bits", VARIANTS)
def test_training_and_eval_equal_brevitas_bit_for_bit(activation, bits, syn):
    """60 steps at a high learning rate (ties, clamps, saturated codes), checked all along."""
    x, y = syn
    torch.manual_seed(0)
    ref = syn_mlp(activation, bits)
    model = copy.deepcopy(ref)
    ref_opt = torch.optim.Adam(ref.parameters(), lr=1e-2)  # torch's default per-tensor Adam
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, foreach=True)
    fast = SynFastPath(model)
    g = torch.Generator().manual_seed(1)
    for step in range(60):
        idx = torch.randperm(4096, generator=g)[:256]
        ref_loss = _brevitas_step(ref, ref_opt, x[idx], y[idx])
        loss = fast.train_step(x[idx], y[idx])
        assert torch.equal(loss, ref_loss), step
        for (name, p), q in zip(ref.named_parameters(), model.parameters()):
            assert torch.equal(p.grad, q.grad), f"step {step}: gradient of {name}"
        ref_opt.step()
        adam_step(opt)
        _assert_same_state(ref, model, f"step {step}")
        if step % 20 == 19:
            probs, codes = _brevitas_eval(ref, x)
            assert torch.equal(fast.forward(x), probs), step
            fast_codes = list(fast.codes(x).values())
            for i, (c, d) in enumerate(zip(fast_codes, codes), start=1):
                assert c.dtype == d.dtype and torch.equal(c, d), f"step {step}: codes of T{i}"
    assert len(fast_codes[0].unique()) > 2  # the codes are not trivially constant


def test_python_kernel_equals_compiled_kernel(syn):
    """The plain-Python fallback computes the same as the TorchScript kernel."""
    x, y = syn
    torch.manual_seed(2)
    model = syn_mlp("relu", 8)
    fast, twin = SynFastPath(model), SynFastPath(copy.deepcopy(model))
    assert SynFastPath.compiled  # TorchScript is available with the pinned torch
    loss = fast.train_step(x[:256], y[:256])
    weights, biases, running, _ = twin._stacks()
    with torch.no_grad():
        loss2, g_weights, g_biases = kernels.train_step(
            x[:256].unsqueeze(0), y[:256].unsqueeze(0), weights, biases, True, running, True, 0.1, twin.consts, 1e-7)
    assert torch.equal(loss, loss2[0])
    mine = [f.weight.grad for f in fast.fcs] + [f.bias.grad for f in fast.fcs]
    for i, (a, b) in enumerate(zip(g_weights + g_biases, mine)):
        assert torch.equal(a[0], b), i
    for a, b in zip(running, fast._stacks()[2]):
        assert torch.equal(a, b)


def test_adam_step_equals_torch_adam():
    torch.manual_seed(3)
    ref = syn_mlp("tanh", 8)
    model = copy.deepcopy(ref)
    a = torch.optim.Adam(ref.parameters(), lr=1e-3)
    b = torch.optim.Adam(model.parameters(), lr=1e-3, foreach=True)
    g = torch.Generator().manual_seed(4)
    for i in range(200):  # gradients over many magnitudes
        for p, q in zip(ref.parameters(), model.parameters()):
            p.grad = torch.randn(p.shape, generator=g) * 10.0 ** (i % 9 - 6)
            q.grad = p.grad.clone()
        a.step()
        adam_step(b)
    for p, q in zip(ref.parameters(), model.parameters()):
        assert torch.equal(p, q)
        for k in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(a.state[p][k], b.state[q][k]), k


def test_a_wrong_fast_path_is_caught_and_training_falls_back(syn, monkeypatch):
    """The start-up check compares with Brevitas; a kernel off by one rounding is refused."""
    x, y = syn
    torch.manual_seed(5)
    model = syn_mlp("tanh", 8)
    check_against_brevitas(model, x, y)  # the real kernel passes
    true_consts = kernels.consts

    def off_by_one_ulp(bits, relu):
        c = true_consts(bits, relu)
        return c._replace(p_scale=torch.nextafter(c.p_scale, torch.tensor(1.0)))

    monkeypatch.setattr(kernels, "consts", off_by_one_ulp)
    with pytest.raises(RuntimeError, match="does not match Brevitas bit for bit"):
        check_against_brevitas(model, x, y)
    try:  # the lead is moving it out of train.py
        from ib_brevitas.experiments.paper_run import build_run
    except ImportError:
        from ib_brevitas.experiments.train import build_run

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = {"seed": 0, "test_fraction": 0.2, "activation": "tanh", "bits": 8, "lr": 1e-4, "batch_size": 256}
        run = build_run(config)
    assert run.fast is None
    assert any("Brevitas modules instead" in str(w.message) for w in caught)


def test_the_check_covers_adam(syn, monkeypatch):
    """An Adam update off by one rounding is caught too (the old check never ran Adam)."""
    x, y = syn
    torch.manual_seed(6)
    model = syn_mlp("relu", 8)
    true_update = kernels.adam_update

    def skewed(params, grads, *rest):
        true_update(params, grads, *rest)
        params[3].view(-1)[0] = torch.nextafter(params[3].view(-1)[0], torch.tensor(9.0))

    monkeypatch.setattr(kernels, "adam_update", skewed)
    with pytest.raises(RuntimeError, match="Adam's update of fc2.bias"):
        check_against_brevitas(model, x, y)


def test_fast_path_only_takes_the_paper_network():
    with pytest.raises(TypeError, match="PaperMLP"):
        SynFastPath(torch.nn.Linear(12, 2))


def _train(tmp_path, name, *extra):
    from ib_brevitas.cli import main

    run_dir = tmp_path / name
    assert main(["train", "--activation", "relu", "--bits", "4", "--epochs", "6", "--mi-every", "3",
                 "--seed", "7", "--lr", "1e-2", "--no-progress", "--run-dir", str(run_dir), *extra]) == 0
    return run_dir


def _mi_values(run_dir):
    return [(r.layer, r.epoch, r.i_xt, r.i_ty, r.h_t, r.n_distinct) for r in read_records(run_dir / "mi.jsonl")]


def test_same_seed_same_run_and_both_engines_agree(tmp_path, capsys):
    """Two runs with one seed: identical mi.jsonl and weights; the Brevitas engine gives the same."""
    runs = [_train(tmp_path, "a"), _train(tmp_path, "b"), _train(tmp_path, "brevitas", "--engine", "brevitas")]
    capsys.readouterr()
    values = [_mi_values(r) for r in runs]
    assert values[0] == values[1] == values[2]
    assert sorted({v[1] for v in values[0]}) == [0, 3, 6]
    assert len({v[2] for v in values[0]}) > 3  # MI actually moves
    states = [torch.load(r / "checkpoints" / "last.pt", weights_only=False) for r in runs]
    assert all(s["epoch"] == 6 for s in states)  # the last checkpoint is the finished run
    for s in states[1:]:
        for k, v in states[0]["model"].items():
            assert torch.equal(v, s["model"][k]), k
        assert s["counters"] == states[0]["counters"]
    assert json.loads((runs[2] / "config.json").read_text())["engine"] == "brevitas"


def test_codes_of_a_diverged_model_are_an_error_naming_the_layer(syn):
    x, _ = syn
    model = syn_mlp("relu", 8)
    with torch.no_grad():
        model.fc2.bias[0] = float("nan")
    with pytest.raises(ValueError, match="'T2': NaN or inf"):
        SynFastPath(model).codes(x)
