"""The per-seed Brevitas reference of `engine.SeedBatch`: its run-time check and its fallback path.

Independent of the kernels: a seed's Brevitas model trained by `syn_loss`,
autograd and `torch.optim.Adam(foreach=True)`, with its codes read by hooks on
its quantizers (`QuantTensor.int()`). `compare` runs it on copies next to the
batch; `brevitas_epoch` is what the batch trains each seed with where the
check fails.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor

from ib_brevitas.experiments.models import syn_loss


def brevitas_scales(model) -> dict[str, float]:
    """Each layer quantizer's eval-mode scale, from Brevitas (`act_quant.scale()`)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return {f"T{i}": float(getattr(model, f"T{i}").act_quant.scale()) for i in range(1, model.n_layers + 1)}
    finally:
        model.train(was_training)


def brevitas_eval(model, x: Tensor) -> tuple[Tensor, list[Tensor]]:
    """Eval-mode probabilities and QuantTensor.int() of T1..Tn, read by hooks on the quantizers."""
    codes: dict[int, Tensor] = {}
    hooks = [
        getattr(model, f"T{i}").act_quant.register_forward_hook(
            lambda _m, _a, out, i=i: codes.__setitem__(i, out.int()))
        for i in range(1, model.n_layers + 1)
    ]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            probs = model(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return probs, [codes[i] for i in range(1, model.n_layers + 1)]


def brevitas_epoch(model, opt: torch.optim.Optimizer, x: Tensor, y: Tensor, batch: int) -> float:
    """One epoch of a single run through Brevitas and autograd on (x, y) in this order; the mean loss."""
    model.train()
    total = 0.0
    for start in range(0, x.shape[0], batch):
        xb, yb = x[start : start + batch], y[start : start + batch]
        opt.zero_grad(set_to_none=True)
        loss = syn_loss(model(xb), yb)
        loss.backward()
        opt.step()
        total += loss.item() * xb.shape[0]
    return total / x.shape[0]


def _batch_starts(n: int, batch: int, steps: int) -> list[int]:
    """The first `steps` batches, and the last one when it is shorter (its own matrix shapes)."""
    starts = list(range(0, n, batch))
    chosen = starts[:steps]
    if n % batch and starts[-1] not in chosen:
        chosen.append(starts[-1])
    return chosen


def compare(batch, x: Tensor, y: Tensor, probe: Tensor | None, seeds: Sequence[int], steps: int) -> list[str]:
    """What differs between the batch and the Brevitas runs of `seeds` ([] when nothing does)."""
    from ib_brevitas.experiments.engine import (
        relu_stats,  # engine imports this module lazily
    )

    seeds = list(seeds)
    bad = [s for s in seeds if not 0 <= s < batch.n_seeds]
    if bad:
        raise ValueError(f"seed slots {bad} are not in the batch (0..{batch.n_seeds - 1})")
    if batch.mode == "batched":
        batch._sync_counters()
    problems: list[str] = []
    refs = [copy.deepcopy(batch.models[s]) for s in seeds]
    opts = []
    for s, ref in zip(seeds, refs):
        opt = torch.optim.Adam(ref.parameters(), lr=batch.lr, betas=batch.betas, eps=batch.eps, foreach=True)
        if batch.stack.step:
            opt.load_state_dict(batch.state(s)["optimizer"])
        opts.append(opt)

    probe = x[0] if probe is None else probe
    codes = batch.codes(probe)
    last = f"T{batch.n_layers}"
    probs = [c[last].float() * batch.consts.p_scale for c in codes]  # the kernel's outputs: code x scale
    for k, (s, ref) in enumerate(zip(seeds, refs)):
        ref_probs, ref_codes = brevitas_eval(ref, probe)
        if not torch.equal(probs[s], ref_probs):
            problems.append(f"seed slot {s}: eval outputs")
        if batch.scales(s) != brevitas_scales(ref):
            problems.append(f"seed slot {s}: quantizer scales")
        for i, c in enumerate(ref_codes, start=1):
            mine = codes[s][f"T{i}"]
            if mine.dtype != c.dtype or not torch.equal(mine, c):
                problems.append(f"seed slot {s}: integer codes of T{i}")

    stack = batch.stack.clone()
    for start in _batch_starts(x.shape[1], batch.batch_size, steps):
        # Contiguous, as train_epoch's per-step gather hands them to train_step.
        xb = x[:, start : start + batch.batch_size].contiguous()
        yb = y[:, start : start + batch.batch_size].contiguous()
        losses, grads = batch.train_step(xb, yb, stack=stack)
        for s, ref, opt in zip(seeds, refs, opts):
            where = f"seed slot {s}, step at sample {start}"
            ref.train()
            opt.zero_grad(set_to_none=True)
            loss = syn_loss(ref(xb[s]), yb[s])
            loss.backward()
            if not torch.equal(loss, losses[s]):
                problems.append(f"{where}: loss")
            params = list(ref.parameters())
            names = [n for n, _ in ref.named_parameters()]
            for name, p, g in zip(names, params, grads):
                if not torch.equal(p.grad, g[s]):
                    problems.append(f"{where}: gradient of {name}")
            opt.step()
            for i, (name, p) in enumerate(zip(names, params)):
                st = opt.state[p]
                if not torch.equal(p, stack.params[i][s]):
                    problems.append(f"{where}: Adam's update of {name}")
                if not (torch.equal(st["exp_avg"], stack.exp_avgs[i][s])
                        and torch.equal(st["exp_avg_sq"], stack.exp_avg_sqs[i][s])
                        and int(st["step"]) == stack.step):
                    problems.append(f"{where}: Adam state of {name}")
            for layer, (rs, run) in enumerate(zip(relu_stats(ref), stack.running), start=1):
                if not torch.equal(rs.running_stats, run[s]):
                    problems.append(f"{where}: running maximum of T{layer}")
                if rs.counter != stack.counter:
                    problems.append(f"{where}: Brevitas step counter of T{layer}")
    return list(dict.fromkeys(problems))
