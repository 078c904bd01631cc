"""Run a model for observation without leaving a trace on training.

A probe pass must not change what training does next: same RNG streams, same
train/eval flags, same BatchNorm running statistics, same Brevitas runtime
statistics (buffers and their step counters). `Observer` saves all of that,
switches the model to eval mode under no_grad, and restores it exactly.
"""

from __future__ import annotations

import contextlib
import random
from typing import Iterator

import numpy as np
import torch

# Python-int attributes some Brevitas modules keep outside state_dict (e.g. the
# runtime-statistics step counter of ParameterFromRuntimeStatsScaling).
_COUNTER_ATTRS = ("counter",)


def _rng_state() -> tuple:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    return torch.get_rng_state(), cuda, np.random.get_state(), random.getstate()


def _set_rng_state(state: tuple) -> None:
    cpu, cuda, np_state, py_state = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)
    np.random.set_state(np_state)
    random.setstate(py_state)


def _set_training(module: torch.nn.Module, flag: bool) -> None:
    # What nn.Module.__setattr__ ends up doing for a bool, without its
    # parameter/buffer/submodule bookkeeping (Brevitas models have hundreds of
    # submodules, and a probe pass toggles every one twice).
    object.__setattr__(module, "training", flag)


class Observer:
    """Saves and restores one model's state around observation passes.

    The module tree and its buffers are listed once, at construction: a probe
    pass toggles hundreds of Brevitas submodules, and walking the tree anew
    each time would cost more than the pass over a small network.
    """

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.modules = list(model.modules())
        self.buffers = [b for m in self.modules for b in m.buffers(recurse=False)]
        # A module that overrides train() may do more than set the flag: then use model.eval().
        self.custom_train = any(type(m).train is not torch.nn.Module.train for m in self.modules)
        self.counter_owners = [
            (m, a) for m in self.modules for a in _COUNTER_ATTRS if isinstance(getattr(m, a, None), int)
        ]

    @contextlib.contextmanager
    def __call__(self) -> Iterator[torch.nn.Module]:
        """Eval mode + no_grad for the duration; everything restored afterwards."""
        flags = [m.training for m in self.modules]
        buffers = [(b, b.detach().clone()) for b in self.buffers]
        counters = [getattr(m, a) for m, a in self.counter_owners]
        rng = _rng_state()
        try:
            if self.custom_train:
                self.model.eval()
            else:
                for m in self.modules:
                    _set_training(m, False)
            with torch.no_grad():
                yield self.model
        finally:
            for m, flag in zip(self.modules, flags):
                _set_training(m, flag)
            with torch.no_grad():
                for b, saved in buffers:
                    if b.shape == saved.shape:
                        b.copy_(saved)
            for (m, a), value in zip(self.counter_owners, counters):
                setattr(m, a, value)
            _set_rng_state(rng)


def observation(model: torch.nn.Module):
    """One-off `Observer(model)()`; keep an Observer for repeated passes."""
    return Observer(model)()
