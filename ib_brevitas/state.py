"""Run a model for observation without leaving a trace on training.

A probe pass must not change what training does next: same RNG streams, same
train/eval flags, same BatchNorm running statistics, same Brevitas runtime
statistics (buffers and their step counters). `observation` saves all of that,
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


@contextlib.contextmanager
def observation(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Eval mode + no_grad for the duration; everything restored afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    counters = [
        (m, a, getattr(m, a))
        for m in model.modules()
        for a in _COUNTER_ATTRS
        if isinstance(getattr(m, a, None), int)
    ]
    rng = _rng_state()
    try:
        model.eval()
        with torch.no_grad():
            yield model
    finally:
        for m, flag in flags:
            m.training = flag
        with torch.no_grad():
            for b, saved in buffers:
                if b.shape == saved.shape:
                    b.copy_(saved)
        for m, a, value in counters:
            setattr(m, a, value)
        _set_rng_state(rng)
