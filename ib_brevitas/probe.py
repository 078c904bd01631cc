"""The probe pass: a model's integer codes over the probe set, packed per layer.

Two sources of the same codes: the hooked Brevitas forward (`hooked_codes`,
hooks on the integer proxies reading `QuantTensor.int()`), and a faster
`codes_fn` a model may offer (`codes_fn_batches` + `pack_batches`), which the
monitor keeps checking against the hooked pass (`compare`). Nothing here
counts: counting is `functional`'s.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch
from brevitas.quant_tensor import IntQuantTensor

from ib_brevitas.codes import PackedCodes
from ib_brevitas.functional import as_code_rows
from ib_brevitas.layers import forward_with_proxy_hooks, quant_proxy
from ib_brevitas.state import observation

CodesFn = Callable[[torch.Tensor], Mapping[str, torch.Tensor]]
Layout = dict[str, tuple[int, int, bool]]  # name -> (width, bit width, signed)

# Codes are read from at most this many activation values at a time, so the
# float temporaries of QuantTensor.int() stay small next to the batch itself.
_CHUNK_VALUES = 1 << 20


# ------------------------------------------------------------ the probe set and arguments, checked


def as_inputs(inputs: Any) -> torch.Tensor:
    x = torch.as_tensor(inputs)
    if x.ndim == 0 or x.shape[0] == 0:
        raise ValueError("the probe set is empty: pass inputs of shape (N, ...) with N >= 1")
    if not torch.is_floating_point(x):
        x = x.to(torch.float32)
    if not torch.isfinite(x).all():
        raise ValueError("the probe inputs contain NaN or inf; clean them before measuring")
    return x


def as_labels(labels: Any, n: int) -> np.ndarray:
    arr = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if arr.dtype.kind == "f":
        raise TypeError(
            f"labels are {arr.dtype}: pass integer class labels (e.g. labels.long()), one per probe sample"
        )
    y = as_code_rows(arr, "labels")
    if y.shape[0] != n:
        raise ValueError(
            f"labels have {y.shape[0]} rows but inputs have {n}: pass exactly one label per "
            "probe sample, in the same order"
        )
    return y


def check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)


# ------------------------------------------------------------ the pass


def _sample_chunks(out: IntQuantTensor) -> Iterator[IntQuantTensor]:
    """Split an IntQuantTensor along the batch dimension (scale/zero point follow when batched)."""
    batch = out.value.shape[0]
    step = max(1, _CHUNK_VALUES // max(1, out.value[0].numel()))
    if step >= batch:
        yield out
        return

    def part(t, s):
        batched = t.dim() == out.value.dim() and t.shape[0] == batch and batch > 1
        return t[s : s + step] if batched else t

    for s in range(0, batch, step):
        yield IntQuantTensor(
            out.value[s : s + step], part(out.scale, s), part(out.zero_point, s),
            out.bit_width, out.signed, out.training,
        )


def batches(inputs: torch.Tensor, batch_size: int, device: torch.device) -> Iterator[torch.Tensor]:
    return (inputs[s : s + batch_size].to(device) for s in range(0, inputs.shape[0], batch_size))


def hooked_codes(
    model: torch.nn.Module, modules: Mapping[str, torch.nn.Module], inputs: torch.Tensor,
    batch_size: int, device: torch.device,
) -> dict[str, PackedCodes]:
    """One hooked forward pass of the model over `inputs`: packed codes per layer, in `modules` order."""
    stores: dict[str, PackedCodes] = {}
    n = inputs.shape[0]

    def hook_for(name: str):
        def hook(_module, _inputs, out):
            if not isinstance(out, IntQuantTensor):
                raise ValueError(
                    f"layer {name!r}: its quantizer returned {type(out).__name__}, not an "
                    "IntQuantTensor, so it has no integer codes to measure"
                )
            bit_width = float(out.bit_width)
            if bit_width != int(bit_width):
                raise ValueError(f"layer {name!r}: bit width {bit_width} is not an integer")
            store = stores.get(name)
            if store is None:
                width = int(out.value[0].numel())
                store = stores[name] = PackedCodes(name, n, width, int(bit_width), bool(out.signed))
            elif int(bit_width) != store.bit_width:
                raise ValueError(f"layer {name!r}: bit width changed within one probe pass")
            for chunk in _sample_chunks(out):
                if not torch.isfinite(chunk.value).all():
                    raise ValueError(
                        f"layer {name!r}: NaN or inf reached this quantized layer; the model "
                        "has diverged (check the learning rate and the inputs)"
                    )
                store.append(chunk.int())

        return hook

    forward_with_proxy_hooks(model, modules, hook_for, batches(inputs, batch_size, device))
    missing = [name for name in modules if name not in stores]
    if missing:
        raise ValueError(f"layers {missing} produced no codes during the probe pass")
    return complete(stores, list(modules), n)


def complete(stores: dict[str, PackedCodes], names: list[str], n: int) -> dict[str, PackedCodes]:
    for name, store in stores.items():
        if store.filled != n:
            raise ValueError(
                f"layer {name!r} produced {store.filled} code rows for {n} samples; a layer "
                "called more or less than once per sample cannot be measured"
            )
    return {name: stores[name] for name in names}


def codes_fn_batches(
    codes_fn: CodesFn, inputs: torch.Tensor, batch_size: int, device: torch.device
) -> list[Mapping[str, torch.Tensor]]:
    """The probe set through `codes_fn`: its raw output per batch."""
    with torch.no_grad():
        return [codes_fn(b) for b in batches(inputs, batch_size, device)]


def pack_batches(
    raw: list[Mapping[str, torch.Tensor]], layout: Layout, names: list[str], n: int
) -> dict[str, PackedCodes]:
    """Pack `codes_fn` output like the hooked pass packs its codes (same layout, same range checks)."""
    stores = {name: PackedCodes(name, n, *layout[name]) for name in names}
    for codes in raw:
        missing = [name for name in names if name not in codes]
        if missing:
            raise ValueError(
                f"codes_fn returned no codes for the layers {missing}; it must return "
                f"{{name: codes}} for every measured layer ({names})"
            )
        for name, store in stores.items():
            c = codes[name]
            if torch.is_floating_point(c) or torch.is_complex(c):
                raise TypeError(f"codes_fn returned {c.dtype} codes for layer {name!r}; return integer codes")
            store.append(c)
    return complete(stores, names, n)


def compare(mine: dict[str, PackedCodes], hooked: dict[str, PackedCodes]) -> str:
    """'' when every layer's codes are equal, else which layers differ in how many samples."""
    differ = {
        name: int((mine[name].rows != store.rows).any(axis=1).sum())
        for name, store in hooked.items()
        if not np.array_equal(mine[name].rows, store.rows)
    }
    n = next(iter(hooked.values())).n_samples if hooked else 0
    return ", ".join(f"{name!r} ({k} of {n} samples)" for name, k in differ.items())


def layer_scales(model: torch.nn.Module, modules: Mapping[str, torch.nn.Module]) -> dict[str, float | None]:
    """Each layer quantizer's eval-mode scale (None where it is not one number, e.g. per channel)."""
    out: dict[str, float | None] = {}
    with observation(model):
        for name, module in modules.items():
            proxy = quant_proxy(module)
            scale = proxy.scale() if proxy is not None else None
            out[name] = float(scale) if isinstance(scale, torch.Tensor) and scale.numel() == 1 else None
    return out


def checked_scales(model: torch.nn.Module, modules: Mapping[str, torch.nn.Module], scales_fn: Any,
                   use: bool) -> tuple[dict[str, float | None], Any]:
    """(scales, the scales_fn to keep): `scales_fn`'s when `use`, else the quantizers' own, compared with it."""
    if scales_fn is not None and use:
        return dict(scales_fn()), scales_fn
    scales = layer_scales(model, modules)
    if scales_fn is not None and dict(scales_fn()) != scales:
        warnings.warn(f"scales_fn disagrees with the quantizers' scale() ({dict(scales_fn())} vs {scales}); "
                      "using the quantizers' own from now on", RuntimeWarning, stacklevel=5)
        scales_fn = None
    return scales, scales_fn


def warn_if_all_injective(records: list, n_samples: int) -> None:
    """A probe set on which every layer is injective shows nothing: say so at the first measurement."""
    if records and all(r.saturated for r in records) and n_samples > 1:
        warnings.warn(
            f"every measured layer gives each of the {n_samples} probe samples its own code "
            f"(I(X;T) = log2 N = {math.log2(n_samples):.2f} bits in all layers): the probe set is too "
            "small to show any compression; use more probe samples (e.g. the whole data set)",
            RuntimeWarning,
            stacklevel=6,
        )
