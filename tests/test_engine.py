"""Seed-batched training (`engine.SeedBatch`) equals independent single-seed Brevitas runs, bit for bit.

The reference for every seed is its own plain run: a Brevitas model trained by
`syn_loss`, autograd and `torch.optim.Adam(foreach=True)` on its own split in
its own shuffle order, measured by the monitor's hooked Brevitas pass.
"""

from __future__ import annotations

import copy
import io
import warnings

import pytest
import torch

from ib_brevitas.experiments import kernels
from ib_brevitas.experiments.data import stratified_split, syn_dataset
from ib_brevitas.experiments.engine import EngineMismatch, SeedBatch, relu_stats
from ib_brevitas.experiments.engine_check import brevitas_eval, brevitas_scales
from ib_brevitas.experiments.models import PaperMLP, SynMLP, syn_loss
from ib_brevitas.monitor import InformationPlane
from ib_brevitas.state import counters_state, load_counters_state

SEEDS = (3, 4, 5)


@pytest.fixture(scope="module")
def syn():
    x, y = syn_dataset()
    return torch.from_numpy(x).float(), torch.from_numpy(y)


def _seeds(x, y, make, seeds=SEEDS):
    """Per seed (as a single run builds it): model, train split, shuffle generator."""
    models, xs, ys = [], [], []
    for s in seeds:
        torch.manual_seed(s)
        models.append(make())
        train, _ = stratified_split(y.numpy(), 0.2, seed=s)
        xs.append(x[train])
        ys.append(y[train])
    gens = lambda: [torch.Generator().manual_seed(s) for s in seeds]
    return models, torch.stack(xs), torch.stack(ys), gens


def _plain_epoch(model, opt, x, y, gen, batch=256):
    """One epoch of a single-seed run through Brevitas and autograd; mean loss."""
    order = torch.randperm(x.shape[0], generator=gen)
    x, y = x[order], y[order]
    model.train()
    total = 0.0
    for start in range(0, x.shape[0], batch):
        opt.zero_grad(set_to_none=True)
        loss = syn_loss(model(x[start : start + batch]), y[start : start + batch])
        loss.backward()
        opt.step()
        total += loss.item() * x[start : start + batch].shape[0]
    return total / x.shape[0]


def _assert_same_model(a, b, what):
    for (name, u), v in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(u, v), f"{what}: {name}"
    assert counters_state(a) == counters_state(b), f"{what}: step counters"


def _mi(model, x, y, codes_fn=None):
    with InformationPlane(model, x, y, batch_size=len(x), codes_fn=codes_fn, verify_every=1) as plane:
        records = plane.measure(0)
        kept = plane.codes_fn is codes_fn
    return [(r.layer, r.i_xt, r.i_ty, r.h_t, r.n_distinct) for r in records], kept


@pytest.mark.parametrize("activation,bits", [("tanh", 8), ("relu", 8), ("tanh", 4), ("relu", 4)])
def test_batched_seeds_equal_independent_single_seed_runs(activation, bits, syn):
    """3 seeds, 3 epochs at a high learning rate (ties, clamps); the batch re-checks itself every epoch."""
    x, y = syn
    models, xs, ys, gens = _seeds(x, y, lambda: SynMLP(activation, bits))
    refs = [copy.deepcopy(m) for m in models]
    opts = [torch.optim.Adam(r.parameters(), lr=1e-2, foreach=True) for r in refs]
    batch = SeedBatch(models, lr=1e-2, verify_every=1, verify_seeds=2)
    assert batch.start(xs, ys, probe=x)
    ref_gens, my_gens = gens(), gens()
    for epoch in range(3):
        losses = batch.train_epoch(xs, ys, my_gens)
        for k in range(len(SEEDS)):
            assert losses[k].item() == _plain_epoch(refs[k], opts[k], xs[k], ys[k], ref_gens[k]), (epoch, k)
    for k, (m, r, opt) in enumerate(zip(models, refs, opts)):
        _assert_same_model(m, r, f"seed slot {k}")
        state = batch.state(k)["optimizer"]["state"]
        for i, p in enumerate(r.parameters()):
            for key in ("exp_avg", "exp_avg_sq", "step"):
                assert torch.equal(state[i][key], opt.state[p][key]), (k, i, key)
        probs, codes = brevitas_eval(r, x)
        mine = batch.codes_fn(k)(x)
        for i, c in enumerate(codes, start=1):
            assert mine[f"T{i}"].dtype == c.dtype and torch.equal(mine[f"T{i}"], c), (k, i)
        assert torch.equal(batch.probs(x.expand(len(SEEDS), -1, -1))[k], probs)
        assert batch.scales(k) == brevitas_scales(r)
        ref_mi, _ = _mi(r, x, y)
        my_mi, kept = _mi(m, x, y, codes_fn=batch.codes_fn(k))
        assert kept and my_mi == ref_mi, k
    assert len(mine["T1"].unique()) > 2  # the codes are not trivially constant
    assert len({tuple(m.fc1.weight.view(-1)[:3].tolist()) for m in models}) == len(SEEDS)  # the seeds differ


def test_a_batched_seeds_codes_equal_the_hooked_brevitas_pass_through_the_monitor(syn):
    x, y = syn
    models, xs, ys, gens = _seeds(x, y, lambda: SynMLP("relu", 8))
    batch = SeedBatch(models, lr=1e-3)
    batch.train_epoch(xs, ys, gens())
    for k, m in enumerate(models):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a disagreeing codes_fn is a RuntimeWarning
            with InformationPlane(m, x, y, codes_fn=batch.codes_fn(k), verify_every=1) as plane:
                mine = plane.collect_codes()  # checked against the hooked pass
                assert plane.codes_fn is not None
            hooked = InformationPlane(m, x, y).collect_codes()
        assert all((mine[n] == hooked[n]).all() for n in hooked)


def _nudge(seed: int, grad_index: int):
    """A TRAIN_STEP that is one rounding off in one gradient of one seed of the batch."""
    true_step = kernels.TRAIN_STEP

    def step(*args):
        loss, g_w, g_b = true_step(*args)
        g = g_w[grad_index].clone()
        g[seed].view(-1)[0] = torch.nextafter(g[seed].view(-1)[0], torch.tensor(9.0))
        return loss, [g if i == grad_index else t for i, t in enumerate(g_w)], g_b

    return step


def test_a_perturbed_seed_inside_a_batch_is_caught(syn, monkeypatch):
    x, y = syn
    models, xs, ys, _ = _seeds(x, y, lambda: SynMLP("tanh", 8))
    batch = SeedBatch(models, lr=1e-3)
    batch.verify(xs, ys)  # the true kernels pass
    monkeypatch.setattr(kernels, "TRAIN_STEP", _nudge(seed=1, grad_index=2))
    with pytest.raises(EngineMismatch, match="seed slot 1, step at sample 0: gradient of fc3.weight") as e:
        batch.verify(xs, ys)
    assert "seed slot 0" not in str(e.value) and "seed slot 2" not in str(e.value)
    batch.verify(xs, ys, seeds=[0, 2])  # the other seeds are exact


def test_the_run_time_recheck_catches_a_seed_that_drifts_mid_run(syn, monkeypatch):
    x, y = syn
    models, xs, ys, gens = _seeds(x, y, lambda: SynMLP("relu", 8))
    batch = SeedBatch(models, lr=1e-3, verify_every=1, verify_seeds=1)
    g = gens()
    batch.train_epoch(xs, ys, g)  # the start-up check (all seeds) passes
    assert batch.mode == "batched"
    monkeypatch.setattr(kernels, "TRAIN_STEP", _nudge(seed=1, grad_index=4))
    batch.train_epoch(xs, ys, g)  # re-checks slot 0: exact
    with pytest.raises(EngineMismatch, match="seed slot 1, step at sample 0: gradient of fc5.weight"):
        batch.train_epoch(xs, ys, g)  # re-checks slot 1


def test_a_perturbed_code_is_caught(syn, monkeypatch):
    x, y = syn
    models, xs, ys, _ = _seeds(x, y, lambda: SynMLP("relu", 4))
    batch = SeedBatch(models, lr=1e-3)
    true_forward = kernels.FORWARD

    def forward(*args):
        outs, codes, ws, acts = true_forward(*args)
        codes[1] = codes[1].clone()
        codes[1][2, 7, 0] += 1
        return outs, codes, ws, acts

    monkeypatch.setattr(kernels, "FORWARD", forward)
    with pytest.raises(EngineMismatch, match="seed slot 2: integer codes of T2"):
        batch.verify(xs, ys, probe=x)


def test_start_falls_back_to_the_per_seed_brevitas_path_and_stays_exact(syn, monkeypatch):
    x, y = syn
    models, xs, ys, gens = _seeds(x, y, lambda: SynMLP("relu", 8), seeds=(0, 1))
    refs = [copy.deepcopy(m) for m in models]
    opts = [torch.optim.Adam(r.parameters(), lr=1e-2, foreach=True) for r in refs]
    batch = SeedBatch(models, lr=1e-2)
    batch.train_epoch(xs, ys, gens_b := gens())  # one batched epoch, then a broken platform
    ref_gens = gens()
    for r, o, xk, yk, g in zip(refs, opts, xs, ys, ref_gens):
        _plain_epoch(r, o, xk, yk, g)
    monkeypatch.setattr(kernels, "TRAIN_STEP", _nudge(seed=0, grad_index=0))
    with pytest.warns(RuntimeWarning, match="Training each seed through its Brevitas modules instead"):
        assert not batch.start(xs, ys)
    assert batch.mode == "brevitas" and batch.codes_fn(0) is None
    losses = batch.train_epoch(xs, ys, gens_b)
    for k, (m, r, o) in enumerate(zip(models, refs, opts)):
        assert losses[k].item() == _plain_epoch(r, o, xs[k], ys[k], ref_gens[k])
        _assert_same_model(m, r, f"seed slot {k}")
        assert int(batch.state(k)["optimizer"]["state"][0]["step"]) == 26


def test_each_seed_saves_as_a_plain_brevitas_checkpoint_and_resumes_exactly(syn):
    x, y = syn
    make = lambda: SynMLP("relu", 4)
    models, xs, ys, gens = _seeds(x, y, make, seeds=(0, 1))
    batch = SeedBatch(models, lr=1e-2)
    g = gens()
    batch.train_epoch(xs, ys, g)
    saved = []
    for k in range(2):
        buf = io.BytesIO()
        torch.save(batch.state(k), buf)
        saved.append(buf.getvalue())
        assert len(buf.getvalue()) < 40_000  # one seed's tensors, not views of the whole stack
    g_states = [t.get_state() for t in g]
    batch.train_epoch(xs, ys, g)  # the uninterrupted run
    # a plain Brevitas model from a seed's checkpoint
    state = torch.load(io.BytesIO(saved[1]), weights_only=False)
    plain = make()
    plain.load_state_dict(state["model"])
    load_counters_state(plain, state["counters"])
    assert relu_stats(plain)[0].counter == 13
    # resume both seeds in a fresh batch
    fresh = SeedBatch([make(), make()], lr=1e-2)
    for k in range(2):
        fresh.load_state(k, torch.load(io.BytesIO(saved[k]), weights_only=False))
    assert fresh.start(xs, ys, probe=x)  # the start-up check runs on the loaded weights
    g2 = [torch.Generator() for _ in range(2)]
    for t, st in zip(g2, g_states):
        t.set_state(st)
    fresh.train_epoch(xs, ys, g2)
    for k in range(2):
        _assert_same_model(fresh.models[k], batch.models[k], f"resumed slot {k}")
        a, b = fresh.state(k)["optimizer"]["state"], batch.state(k)["optimizer"]["state"]
        assert all(torch.equal(a[i][n], b[i][n]) for i in a for n in a[i])
    standalone = batch.model_copy(1)  # a plain model, detached from the stacks
    _assert_same_model(standalone, batch.models[1], "model_copy")
    batch.train_epoch(xs, ys, g)  # moves the batch, not the copy
    assert relu_stats(standalone)[0].counter == 26
    assert not torch.equal(standalone.fc1.weight, batch.models[1].fc1.weight)


def test_one_engine_s1_equals_the_single_run_face(syn):
    """SeedBatch with S = 1 and fastpath.SynFastPath + adam_step train the same weights."""
    from ib_brevitas.experiments.fastpath import SynFastPath, adam_step

    x, y = syn
    models, xs, ys, gens = _seeds(x, y, lambda: SynMLP("tanh", 4), seeds=(9,))
    twin = copy.deepcopy(models[0])
    opt = torch.optim.Adam(twin.parameters(), lr=1e-2, foreach=True)
    fast = SynFastPath(twin)
    batch = SeedBatch(models, lr=1e-2)
    batch.train_epoch(xs, ys, gens())
    order = torch.randperm(xs.shape[1], generator=gens()[0])
    xo, yo = xs[0][order], ys[0][order]
    for start in range(0, xo.shape[0], 256):
        fast.train_step(xo[start : start + 256], yo[start : start + 256])
        adam_step(opt)
    _assert_same_model(models[0], twin, "S = 1")


@pytest.mark.parametrize("widths,activation,bits", [
    ((784, 16, 8, 4, 2, 10), "relu", 8),  # Bottleneck-2
    ((784, 10, 10, 10, 10, 10), "tanh", 4),  # MNIST-4x10
    ((784, 16, 8, 4, 2, 4, 8, 10), "relu", 6),  # HourGlass
    ((784, 16, 12, 8, 4, 10), "relu", 2),  # Bottleneck-4 at 2 bits
    ((784, 10, 10, 10, 10, 10), "tanh", 12),  # int32 codes
])
def test_the_paper_mlp_family_is_exact(widths, activation, bits):
    """The MNIST MLPs on image-like inputs (k/255), with the short last batch, after two epochs."""
    g = torch.Generator().manual_seed(0)
    n = 600
    xs = torch.randint(0, 256, (3, n, 784), generator=g).float() / 255
    ys = torch.randint(0, 10, (3, n), generator=g)
    models = []
    for s in range(3):
        torch.manual_seed(s)
        models.append(PaperMLP(widths, activation, bits))
    batch = SeedBatch(models, lr=1e-2)
    gens = [torch.Generator().manual_seed(s) for s in range(3)]
    assert batch.start(xs, ys, probe=xs[0, :300])
    for _ in range(2):
        batch.train_epoch(xs, ys, gens)
    batch.verify(xs, ys, probe=xs[1, :300])


def test_bad_input_is_refused(syn):
    x, y = syn
    with pytest.raises(TypeError, match="PaperMLP"):
        SeedBatch([torch.nn.Linear(12, 2)], lr=1e-3)
    with pytest.raises(TypeError, match="quantized"):
        SeedBatch([SynMLP("tanh", 32)], lr=1e-3)
    with pytest.raises(ValueError, match="share widths, activation and bits"):
        SeedBatch([SynMLP("tanh", 8), SynMLP("relu", 8)], lr=1e-3)
    with pytest.raises(ValueError, match="at least one model"):
        SeedBatch([], lr=1e-3)
    models, xs, ys, gens = _seeds(x, y, lambda: SynMLP("relu", 8), seeds=(0, 1))
    batch = SeedBatch(models, lr=1e-3)
    with pytest.raises(ValueError, match=r"\(S=2, n, \.\.\.\)"):
        batch.train_epoch(xs[:1], ys[:1], gens())
    with pytest.raises(ValueError, match="one shuffle generator per seed"):
        batch.train_epoch(xs, ys, gens()[:1])
    trained = SeedBatch([copy.deepcopy(models[0])], lr=1e-3)
    trained.train_epoch(xs[:1], ys[:1], gens()[:1])
    with pytest.raises(ValueError, match="Adam settings"):
        SeedBatch([copy.deepcopy(models[0])], lr=1e-2).load_state(0, trained.state(0))
    batch.load_state(1, trained.state(0))
    with pytest.raises(ValueError, match="different steps"):
        batch.train_epoch(xs, ys, gens())


def test_a_seed_batch_equals_the_single_runs_of_its_seeds():
    """syn_seed_batch slot k == paper_run.build_run(seed=seeds[k]): same split, init, epochs, metrics."""
    try:  # the lead is moving it out of train.py
        from ib_brevitas.experiments import paper_run as single
    except ImportError:
        from ib_brevitas.experiments import train as single
    from ib_brevitas.experiments.seeds import syn_seed_batch

    runs = syn_seed_batch("relu", 8, [0, 7], lr=1e-2)
    config = {"seed": 7, "test_fraction": 0.2, "activation": "relu", "bits": 8, "lr": 1e-2, "batch_size": 256}
    run = single.build_run(config)
    assert torch.equal(runs.x_train[1], run.x_train) and torch.equal(runs.y_test[1], run.y_test)
    _assert_same_model(runs.batch.models[1], run.model, "initialisation")
    for _ in range(2):
        losses = runs.train_epoch()
        assert losses[1].item() == single.train_epoch(run)
    _assert_same_model(runs.batch.models[1], run.model, "after two epochs")
    assert runs.evaluate()[1] == single.evaluate(run)
    # a single run's checkpoint (model, counters, optimizer) resumes in a seed slot of a fresh batch
    resumed = syn_seed_batch("relu", 8, [7], lr=1e-2)
    resumed.batch.load_state(0, {"model": run.model.state_dict(), "counters": counters_state(run.model),
                                 "optimizer": run.optimizer.state_dict()})
    resumed.shuffles[0].set_state(run.shuffle.get_state())
    assert resumed.train_epoch()[0].item() == single.train_epoch(run)
    _assert_same_model(resumed.batch.models[0], run.model, "resumed from a single run's checkpoint")


def test_one_batched_forward_serves_every_seeds_codes_fn(syn, monkeypatch):
    """S planes measuring in probe batches cost one batched forward per batch, not S."""
    x, y = syn
    models, xs, ys, gens = _seeds(x, y, lambda: SynMLP("relu", 8))
    batch = SeedBatch(models, lr=1e-3)
    batch.train_epoch(xs, ys, gens())
    calls = []
    true_codes = batch.codes
    monkeypatch.setattr(batch, "codes", lambda inputs: calls.append(len(inputs)) or true_codes(inputs))
    planes = [InformationPlane(m, x, y, batch_size=1024, codes_fn=batch.codes_fn(k), verify_every=50)
              for k, m in enumerate(models)]
    for p in planes:
        p.measure(1)  # the first pass also runs the hooked Brevitas check
    assert calls == [1024] * 4 and all(p.codes_fn is not None for p in planes)
    batch.train_epoch(xs, ys, gens())  # new weights: new codes
    for p in planes:
        p.measure(2)
    assert calls == [1024] * 8


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_epochs_without_their_loss_train_the_same(syn, activation):
    """train_epoch(losses=False) skips only the loss values: weights, maxima and Adam moments stay bit for bit."""
    x, y = syn
    batches = []
    for losses in (True, False):
        models, xs, ys, gens = _seeds(x, y, lambda: SynMLP(activation, 8))
        batch, g = SeedBatch(models, lr=1e-2), gens()
        out = [batch.train_epoch(xs, ys, g, losses=losses) for _ in range(2)]
        assert all(o is None for o in out) if not losses else all(o.shape == (len(SEEDS),) for o in out)
        batches.append(batch)
    a, b = (bt.stack for bt in batches)
    for ta, tb in zip(a.params + a.running + a.exp_avgs + a.exp_avg_sqs, b.params + b.running + b.exp_avgs +
                      b.exp_avg_sqs):
        assert torch.equal(ta, tb)
    assert (a.step, a.counter) == (b.step, b.counter) and a.step > 0
