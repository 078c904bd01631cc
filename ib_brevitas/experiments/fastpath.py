"""The single-run face of the seed-batched engine: one Brevitas model trained in place (S = 1).

`SynFastPath(model)` runs `kernels.py` (the engine's kernels) on one seed whose
"stack" is a view of the model's own parameters and running maxima, so the
model is trained in place and `torch.optim.Adam` (through `adam_step`) updates
it as usual. `engine.SeedBatch` is the same computation for S seeds (S = 1
included) with its own stacked Adam; this module keeps the names
`ib-brevitas train` has used (`SynFastPath`, `adam_step`,
`check_against_brevitas`) until it trains through `SeedBatch`.

Forward outputs, integer codes, loss, every gradient and the ReLU running
maxima (with Brevitas' step counter) equal those of a Brevitas forward/backward
of the same model bit for bit; `check_against_brevitas` verifies that on real
data, Adam's update included.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor

from ib_brevitas.experiments import kernels
from ib_brevitas.experiments.engine import SeedBatch, _code_dtype, relu_stats
from ib_brevitas.experiments.models import PaperMLP


class SynFastPath:
    """Training step and eval forward of one quantized `PaperMLP` (e.g. `SynMLP`), equal to Brevitas' bit for bit.

    `train_step(x, y)` is `model.train(); loss = syn_loss(model(x), y);
    loss.backward()` with fresh gradients (as after `zero_grad(set_to_none=True)`):
    it sets every parameter's `.grad`, updates the ReLU running maxima and
    their step counters, and returns the loss. `forward(x)` is the eval-mode
    forward (changes nothing); `codes(x)` the eval-mode integer codes of T1..Tn.
    """

    compiled = kernels.COMPILED  # whether the kernels run as TorchScript

    def __init__(self, model: PaperMLP):
        if not isinstance(model, PaperMLP) or not model.quantized:
            raise TypeError(
                "the fast path reproduces quantized ib_brevitas.experiments.models.PaperMLP nets (SynMLP, the MNIST "
                f"MLPs) only, got {type(model).__name__}; train other models with their own Brevitas forward"
            )
        self.model = model
        self.relu = model.activation == "relu"
        self.fcs = [getattr(model, f"fc{i}") for i in range(1, model.n_layers + 1)]
        self.consts = kernels.consts(model.bits, self.relu)

    def _stacks(self) -> tuple[list[Tensor], list[Tensor], list[Tensor], list]:
        stats = relu_stats(self.model)  # looked up afresh: load_state_dict replaces them
        return ([fc.weight.unsqueeze(0) for fc in self.fcs], [fc.bias.unsqueeze(0) for fc in self.fcs],
                [rs.running_stats.view(1) for rs in stats], stats)

    def _eval(self, x: Tensor):
        weights, biases, running, _ = self._stacks()
        xs = x.float().reshape(x.shape[0], -1).unsqueeze(0)
        with torch.no_grad(), torch.jit.optimized_execution(False):
            outs, codes, _, _ = kernels.FORWARD(xs, weights, biases, self.relu, False, running, False, 0.0,
                                                self.consts)
        return [o[0] for o in outs], [c[0] for c in codes]

    def forward(self, x: Tensor) -> Tensor:
        """Eval-mode probabilities, as `model.eval(); model(x)` (changes no state)."""
        return self._eval(x)[0][-1]

    def codes(self, x: Tensor) -> dict[str, Tensor]:
        """Eval-mode integer codes {"T1": ..., "Tn": ...}, as QuantTensor.int() gives them.

        Same values and dtypes (int8 for signed, uint8 for unsigned codes of up
        to 8 bits, int32 above). Fit for `InformationPlane(codes_fn=...)`.
        Raises ValueError, as the monitor's probe pass does, when a layer's
        output is NaN or inf.
        """
        outs, codes = self._eval(x)
        n = self.model.n_layers
        for i, out in enumerate(outs, start=1):
            # A finite sum implies finite elements; only a non-finite sum needs the full check.
            if not torch.isfinite(out.sum()) and not torch.isfinite(out).all():
                raise ValueError(
                    f"layer 'T{i}': NaN or inf reached this quantized layer; the model has diverged "
                    "(check the learning rate and the inputs)"
                )
        return {f"T{i}": c.to(_code_dtype(self.model.bits, not self.relu and i < n))
                for i, c in enumerate(codes, start=1)}

    def train_step(self, x: Tensor, target: Tensor, eps: float = 1e-7) -> Tensor:
        """One Brevitas training forward/backward; sets .grad, returns the loss."""
        weights, biases, running, stats = self._stacks()
        counters = {rs.counter for rs in stats}
        if len(counters) > 1:
            raise ValueError(f"the ReLU layers' Brevitas step counters differ ({sorted(counters)})")
        momentum = float(stats[0].momentum) if stats else 0.0
        with torch.no_grad(), torch.jit.optimized_execution(False):
            loss, g_weights, g_biases = kernels.TRAIN_STEP(
                x.float().reshape(x.shape[0], -1).unsqueeze(0), target.long().unsqueeze(0), weights, biases,
                self.relu, running, counters == {0}, momentum, self.consts, eps,
            )
        for rs in stats:
            rs.counter += 1
        for fc, g_w, g_b in zip(self.fcs, g_weights, g_biases):
            fc.weight.grad = g_w[0]
            fc.bias.grad = g_b[0]
        return loss[0]


def check_against_brevitas(model: PaperMLP, x: Tensor, y: Tensor, batch: int = 256, lr: float = 1e-4) -> None:
    """Raise RuntimeError (`engine.EngineMismatch`) unless the engine equals Brevitas bit for bit on `model`.

    On a copy (the model is left untouched): the eval-mode outputs and codes
    over all of `x`, and the first two training steps on `x` plus its last
    short batch, each followed by Adam's update (learning rate `lr`).
    """
    SeedBatch([copy.deepcopy(model)], lr=lr, batch_size=batch).verify(x.unsqueeze(0), y.unsqueeze(0), probe=x)


def _plain_adam_group(opt: torch.optim.Optimizer) -> dict | None:
    """The single param group of a plain Adam (no weight decay, amsgrad, ...), else None."""
    if type(opt) is not torch.optim.Adam or len(opt.param_groups) != 1:
        return None
    g = opt.param_groups[0]
    plain = (
        g["weight_decay"] == 0 and not g["amsgrad"] and not g["maximize"] and not g["capturable"]
        and not g["differentiable"] and not g["fused"] and g.get("decoupled_weight_decay") is False
        and all(isinstance(v, float) for v in (g["lr"], g["eps"], *g["betas"]))
    )
    return g if plain else None


_ONE = torch.tensor(1.0)


@torch.no_grad()
def adam_step(opt: torch.optim.Optimizer) -> None:
    """`opt.step()` of a plain torch.optim.Adam, bit for bit, in eight multi-tensor calls.

    The engine's `kernels.adam_update` (torch's multi-tensor Adam without its
    per-call grouping and checks, which cost more than the arithmetic for the
    SYN net's 12 small tensors). Anything else (first step, other settings,
    missing gradients, parameters at different steps) goes through `opt.step()`.
    """
    group = _plain_adam_group(opt)
    params = group["params"] if group else ()
    states = [opt.state.get(p) for p in params]
    if not group or not all(states) or any(p.grad is None or p.grad.dtype != p.dtype for p in params):
        opt.step()
        return
    steps = [s["step"] for s in states]
    counts = {float(s) for s in steps}
    if len(counts) != 1:
        opt.step()
        return
    torch._foreach_add_(steps, _ONE, alpha=1.0)
    kernels.adam_update(list(params), [p.grad for p in params], [s["exp_avg"] for s in states],
                        [s["exp_avg_sq"] for s in states], int(counts.pop()) + 1, group["lr"], *group["betas"],
                        group["eps"])
