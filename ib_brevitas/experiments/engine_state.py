"""Per-seed state of `engine.SeedBatch`: checkpoints in a single run's format, the per-seed fallback.

A seed's checkpoint is what a single run saves (the Brevitas model's
`state_dict()`, its step counters, a `torch.optim.Adam` state dict), as
copies, so it loads into a plain Brevitas model and a plain optimizer; and
a single run's checkpoint loads into a seed slot.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor

from ib_brevitas.experiments.models import PaperMLP
from ib_brevitas.state import counters_state, load_counters_state


def relu_stats(model: PaperMLP) -> list:
    """The ReLU layers' Brevitas _RuntimeStats (running maximum, momentum, counter), looked up afresh."""
    if model.activation != "relu":
        return []
    return [
        getattr(model, f"T{i}").act_quant.fused_activation_quant_proxy.tensor_quant.scaling_impl.runtime_stats
        for i in range(1, model.n_layers)
    ]


def _linears(model: PaperMLP) -> list:
    return [getattr(model, f"fc{i}") for i in range(1, model.n_layers + 1)]


class SeedState:
    """SeedBatch's per-seed state methods (a mixin: the batch's stacks, models and mode)."""

    def state(self, s: int) -> dict:
        """Seed `s` as train.py checkpoints a single run: {"model", "counters", "optimizer"} (copies)."""
        if self.mode == "batched":
            self._sync_counters()
        m = self.models[s]
        opt = self._optimizers[s] if self.mode == "brevitas" else self._adam(s)
        if self.mode == "batched" and self.stack.step:
            for i, p in enumerate(m.parameters()):
                opt.state[p] = {"step": torch.tensor(float(self.stack.step)),
                                "exp_avg": self.stack.exp_avgs[i][s], "exp_avg_sq": self.stack.exp_avg_sqs[i][s]}
        clone = lambda v: v.clone() if isinstance(v, Tensor) else v
        osd = opt.state_dict()
        osd["state"] = {k: {n: clone(v) for n, v in d.items()} for k, d in osd["state"].items()}
        return {"model": {k: v.clone() for k, v in m.state_dict().items()}, "counters": counters_state(m),
                "optimizer": osd}

    def model_copy(self, s: int) -> PaperMLP:
        """Seed `s` as a standalone Brevitas model (own tensors and step counters), e.g. for export."""
        if self.mode == "batched":
            self._sync_counters()
        return copy.deepcopy(self.models[s])

    def load_state(self, s: int, state: dict) -> None:
        """Load what `state(s)` (or a single run's checkpoint) holds into seed `s`."""
        m = self.models[s]
        self._checked = False  # start() checks the loaded weights
        m.load_state_dict(state["model"])
        st = self.stack
        with torch.no_grad():  # into the stacks, whether or not it copied into the views
            for fc, w, b in zip(_linears(m), st.weights, st.biases):
                w[s].copy_(fc.weight)
                b[s].copy_(fc.bias)
            for rs, r in zip(relu_stats(m), st.running):
                r[s].copy_(rs.running_stats)
        self._bind()
        load_counters_state(m, state["counters"])
        opt = self._adam(s)
        opt.load_state_dict(state["optimizer"])
        group = opt.param_groups[0]
        if (group["lr"], tuple(group["betas"]), group["eps"]) != (self.lr, self.betas, self.eps):
            raise ValueError(f"seed slot {s}: the checkpoint's Adam settings (lr {group['lr']}, betas "
                             f"{tuple(group['betas'])}, eps {group['eps']}) differ from the batch's (lr {self.lr}, "
                             f"betas {self.betas}, eps {self.eps}); build the batch with the run's settings")
        states = [opt.state.get(p) for p in m.parameters()]
        steps = {int(d["step"]) if d else 0 for d in states}
        if len(steps) > 1:
            raise ValueError(f"seed slot {s}: the optimizer state holds different step counts {sorted(steps)}")
        self._seed_steps[s] = (steps.pop(), self._counter_of(m))
        self.stack.step, self.stack.counter = self._seed_steps[s]
        with torch.no_grad():
            for i, d in enumerate(states):
                self.stack.exp_avgs[i][s].copy_(d["exp_avg"] if d else torch.zeros(()))
                self.stack.exp_avg_sqs[i][s].copy_(d["exp_avg_sq"] if d else torch.zeros(()))
        if self.mode == "brevitas":
            self._optimizers[s] = opt

    def use_brevitas(self) -> None:
        """Train each seed through its Brevitas modules from now on (exact, ~8x slower per seed)."""
        if self.mode == "brevitas":
            return
        self._optimizers = [self._adam(s) for s in range(self.n_seeds)]
        for s, opt in enumerate(self._optimizers):  # torch's Adam states, as views of the stacks
            for i, p in enumerate(self.models[s].parameters()):
                if self.stack.step:
                    opt.state[p] = {"step": torch.tensor(float(self.stack.step)),
                                    "exp_avg": self.stack.exp_avgs[i][s], "exp_avg_sq": self.stack.exp_avg_sqs[i][s]}
        self._sync_counters()
        self.mode = "brevitas"
        self._codes_cache = None

    def _adam(self, s: int) -> torch.optim.Adam:
        return torch.optim.Adam(self.models[s].parameters(), lr=self.lr, betas=self.betas, eps=self.eps,
                                foreach=True)
