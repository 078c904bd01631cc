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


def _set_training(module: torch.nn.Module, flag: bool) -> None:
    # What nn.Module.__setattr__ ends up doing for a bool, without its
    # parameter/buffer/submodule bookkeeping (Brevitas models have hundreds of
    # submodules, and a probe pass toggles every one twice).
    object.__setattr__(module, "training", flag)


def _counters(module: torch.nn.Module) -> list[tuple[str, int]]:
    # Read from __dict__: getattr on a Module that lacks the name goes through
    # Module.__getattr__ and an exception, which is slow over hundreds of modules.
    return [(a, v) for a in _COUNTER_ATTRS if isinstance(v := module.__dict__.get(a), int)]


def _module_tree(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules of `model.modules()`, each once (breadth-first), without building their name strings."""
    seen = {id(model)}
    out = [model]
    i = 0
    while i < len(out):
        for child in out[i]._modules.values():
            if child is not None and id(child) not in seen:
                seen.add(id(child))
                out.append(child)
        i += 1
    return out


@contextlib.contextmanager
def observation(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Eval mode + no_grad for the duration; everything restored afterwards.

    The module tree is walked afresh each time: `load_state_dict` can replace
    Brevitas submodules, so a list kept from an earlier pass may be stale.
    """
    modules = _module_tree(model)
    flags = [m.training for m in modules]
    buffers = [(b, b.detach().clone()) for m in modules for b in m._buffers.values() if b is not None]
    counters = [(m, a, v) for m in modules for a, v in _counters(m)]
    # A module that overrides train() may do more than set the flag: then use model.eval().
    custom_train = any(type(m).train is not torch.nn.Module.train for m in modules)
    rng = _rng_state()
    try:
        if custom_train:
            model.eval()
        else:
            for m in modules:
                _set_training(m, False)
        with torch.no_grad():
            yield model
    finally:
        for m, flag in zip(modules, flags):
            _set_training(m, flag)
        with torch.no_grad():
            for b, saved in buffers:
                if b.shape == saved.shape:
                    b.copy_(saved)
        for m, a, value in counters:
            setattr(m, a, value)
        _set_rng_state(rng)


def counters_state(model: torch.nn.Module) -> dict[str, dict[str, int]]:
    """The Python-int step counters that `state_dict()` leaves out, by module path.

    Brevitas' runtime statistics (`_RuntimeStats.counter`) decide how the next
    batch updates the running statistics; a checkpoint without them does not
    resume the same training. Save this next to `state_dict()`.
    """
    return {name: dict(c) for name, m in model.named_modules() if (c := _counters(m))}


def load_counters_state(model: torch.nn.Module, state: dict[str, dict[str, int]]) -> None:
    """Restore what `counters_state` saved; a module path the model lacks is an error."""
    modules = dict(model.named_modules())
    for name, attrs in state.items():
        if name not in modules:
            raise ValueError(f"checkpoint has step counters for {name!r}, which the model does not have")
        for a, value in attrs.items():
            setattr(modules[name], a, value)
