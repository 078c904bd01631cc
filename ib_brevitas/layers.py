"""Where a Brevitas model produces integers: the layers the monitor can measure.

A measurable point is a quantization proxy whose output is an IntQuantTensor:
the `act_quant` proxy of a quant activation (QuantReLU, QuantTanh,
QuantSigmoid, QuantHardTanh, QuantIdentity, ...) - it returns an
IntQuantTensor even when the module itself returns floats - or the enabled
`output_quant` of a QuantLinear/QuantConv. Points are named by the module
path the user sees in `print(model)`. Input quantizers of weight layers are not
points of their own: they re-quantize what the previous point already holds.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import torch
from brevitas.proxy.runtime_quant import ActQuantProxyFromInjector

from ib_brevitas.state import observation

# The one list of attribute names under which Brevitas keeps an integer-producing proxy.
PROXY_ATTRS = ("act_quant", "output_quant")


def quant_proxy(module: torch.nn.Module) -> ActQuantProxyFromInjector | None:
    """The enabled integer-producing proxy of `module`, or None."""
    for attr in PROXY_ATTRS:
        proxy = getattr(module, attr, None)
        if isinstance(proxy, ActQuantProxyFromInjector) and proxy.is_quant_enabled:
            return proxy
    return None


def quant_proxy_attr(module: torch.nn.Module) -> str:
    """Attribute name ('act_quant' or 'output_quant') of the module's enabled integer proxy."""
    for attr in PROXY_ATTRS:
        proxy = getattr(module, attr, None)
        if isinstance(proxy, ActQuantProxyFromInjector) and proxy.is_quant_enabled:
            return attr
    raise ValueError(f"{type(module).__name__} has no enabled {'/'.join(PROXY_ATTRS)} proxy")


def why_not_quant(name: str, module: torch.nn.Module) -> str:
    """A sentence saying why `module` has no integer representation."""
    for attr in PROXY_ATTRS:
        proxy = getattr(module, attr, None)
        if isinstance(proxy, ActQuantProxyFromInjector) and not proxy.is_quant_enabled:
            return (
                f"layer {name!r} ({type(module).__name__}) has its {attr} quantizer disabled, "
                "so its output is a float tensor with no integer representation; enable the "
                "quantizer or measure another layer"
            )
    return (
        f"layer {name!r} ({type(module).__name__}) has no integer representation: it is neither a "
        "Brevitas quant activation nor a quant layer with an output quantizer. Exact MI needs "
        "integer codes and the exact monitor never bins floats: estimate this layer with the binning "
        "estimators (ib_brevitas.binned.BinnedPlane, e.g. 'binning-uniform-30-global'), or measure one of "
        "the layers find_quant_layers() returns"
    )


def find_quant_layers(
    model: torch.nn.Module, example_input: Any = None
) -> dict[str, torch.nn.Module]:
    """Every point where `model` produces integer codes, by module path.

    Ordered by forward execution when `example_input` is given (one dry forward
    in eval mode, leaving no trace on the model's state), otherwise by module
    registration order. Points that the dry forward does not reach are dropped.
    """
    found = {name: m for name, m in model.named_modules() if name and quant_proxy(m) is not None}
    if example_input is None or not found:
        return found
    order: list[str] = []
    forward_with_proxy_hooks(model, found, lambda name: lambda *_: order.append(name), [example_input])
    seen = list(dict.fromkeys(order))
    return {name: found[name] for name in seen}


def select_layers(
    model: torch.nn.Module, layers: Any = "auto", example_input: Any = None
) -> dict[str, torch.nn.Module]:
    """Resolve a `layers` argument ("auto" or a list of names) to measurable modules."""
    available = find_quant_layers(model, example_input)
    if isinstance(layers, str) and layers == "auto":
        if not available:
            raise ValueError(
                "the model has no layer that produces integer codes (no enabled Brevitas "
                "activation or output quantizer); exact MI needs a quantized model"
            )
        return available
    if isinstance(layers, str):
        layers = [layers]
    modules = dict(model.named_modules())
    chosen = {}
    for name in layers:
        if name not in modules:
            raise ValueError(
                f"the model has no module named {name!r}; measurable layers are {list(available)}"
            )
        if quant_proxy(modules[name]) is None:
            raise ValueError(why_not_quant(name, modules[name]))
        if name not in available:
            raise ValueError(
                f"layer {name!r} is quantized but a forward pass of the probe inputs never "
                "reaches it, so it produces no codes to measure"
            )
        chosen[name] = modules[name]
    if not chosen:
        raise ValueError("`layers` is empty: pass 'auto' or at least one layer name")
    return {name: chosen[name] for name in available if name in chosen}


def forward_with_proxy_hooks(
    model: torch.nn.Module,
    modules: Mapping[str, torch.nn.Module],
    hook_for: Callable[[str], Callable],
    batches: Iterable[Any],
) -> None:
    """Run `model` on each batch with `hook_for(name)` on each module's integer proxy.

    In eval mode under no_grad, leaving no trace (`state.observation`); the
    hooks are removed whatever happens.
    """
    handles = []
    try:
        for name, module in modules.items():
            proxy = quant_proxy(module)
            if proxy is None:  # e.g. its quantizer was disabled after the layer was chosen
                raise ValueError(why_not_quant(name, module))
            handles.append(proxy.register_forward_hook(hook_for(name)))
        with observation(model):
            for batch in batches:
                model(batch)
    finally:
        for h in handles:
            h.remove()
