"""The paper's networks as Brevitas models: SYN (12-10-7-5-4-3-2) and its MNIST nets.

`PaperMLP(widths, activation, bits)` is any MLP of the paper; `SynMLP` is its
12-10-7-5-4-3-2 case; `PaperConv` the MNIST conv net; `build_net(name, ...)`
builds each by the name `train` / `sweep` use (`NETS`). Layers are named
fc1/conv1.. and their measured outputs T1..Tn, so the information plane reads
T1..Tn. `bits=32` (`FLOAT_BITS`) builds the same network in float (torch.nn,
no quantizers): it has no integer codes, only the binning estimators
(`ib_brevitas.binned`) can measure it.

Every measured output of a quantized net is a Brevitas activation quantizer, so
its integer codes come from `QuantTensor.int()`. Quantizers follow the paper's
setting (Lorenzen, Igel & Nielsen 2022, built on TF-MOT), need no estimated
statistics where the range is known, and skip Brevitas' default percentile
statistics (a kthvalue per batch for 300 steps); see docs/data-and-models.md:

- tanh outputs: fixed scale 2^-(k-1), signed k-bit codes -2^(k-1)..2^(k-1)-1;
  tanh's range [-1, 1] is known, so nothing needs to be estimated.
- ReLU outputs: unsigned k-bit, scale = running max / (2^k - 1), the running
  max an exponential moving average (momentum 0.1) of batch maxima, as TF-MOT's
  MovingAverageQuantizer used in the paper's code.
- softmax output: fixed scale 1 / (2^k - 1), unsigned codes 0..2^k-1 covering
  the probability range [0, 1] exactly.
- weights: signed narrow-range k-bit, per-tensor scale max|W| / (2^(k-1) - 1),
  recomputed from the current weights (Brevitas' default weight quantizer, as
  TF-MOT's LastValueQuantizer in the paper but symmetric).
- biases stay float; inputs are not quantized (SYN's are {0, 1}, MNIST's k/255).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from brevitas.inject.enum import ScalingImplType
from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear, QuantReLU, QuantTanh
from brevitas.quant.base import IntQuant, MaxStatsScaling, PerTensorFloatScaling8bit, UintQuant
from brevitas.quant.scaled_int import Int8WeightPerTensorFloat
from brevitas.quant.solver.act import ActQuantSolver
from torch import nn

SYN_WIDTHS = (12, 10, 7, 5, 4, 3, 2)
MIN_BITS, MAX_BITS = 2, 16
FLOAT_BITS = 32  # `bits=32`: a float network, no quantizers
ACTIVATIONS = ("tanh", "relu")
# Brevitas' (and BatchNorm's) default. Brevitas trains on the batch maximum and only
# eval mode reads the average, so it must follow the batch maxima closely; TF-MOT's
# slower 0.999 decay works there because TF also trains on the average.
RELU_RANGE_MOMENTUM = 0.1


class TanhFixedQuant(IntQuant, PerTensorFloatScaling8bit, ActQuantSolver):
    """Signed k-bit codes for tanh outputs, constant scale 1 / 2^(k-1)."""

    scaling_impl_type = ScalingImplType.CONST
    min_val = -1.0
    max_val = 1.0


class ProbabilityFixedQuant(UintQuant, PerTensorFloatScaling8bit, ActQuantSolver):
    """Unsigned k-bit codes for probabilities, constant scale 1 / (2^k - 1)."""

    scaling_impl_type = ScalingImplType.CONST
    max_val = 1.0


class ReLURunningMaxQuant(UintQuant, MaxStatsScaling, PerTensorFloatScaling8bit, ActQuantSolver):
    """Unsigned k-bit codes for ReLU outputs, scale from a moving average of batch maxima.

    Training uses the batch maximum and updates the average; eval mode (every
    information-plane measurement) uses the average and changes nothing.
    """

    scaling_stats_momentum = RELU_RANGE_MOMENTUM


class WeightPerTensorQuant(Int8WeightPerTensorFloat):
    """Brevitas' default weight quantizer (narrow range, per-tensor max|W| scale).

    Without its 1e-10 floor on the scale, which only matters for an all-zero
    weight tensor and costs ~100 autograd ops per layer and step (~20 % of a step).
    """

    scaling_min_val = None


def _check_bits(bits) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise TypeError(f"bits must be an int in {MIN_BITS}..{MAX_BITS} or {FLOAT_BITS} (float), got {bits!r}")
    if not (MIN_BITS <= bits <= MAX_BITS or bits == FLOAT_BITS):
        raise ValueError(f"bits must lie in {MIN_BITS}..{MAX_BITS}, or be {FLOAT_BITS} for a float network, got {bits}")
    return bits


def _check_activation(activation, allowed=ACTIVATIONS) -> str:
    if activation not in allowed:
        raise ValueError(f"activation must be one of {', '.join(map(repr, allowed))}, got {activation!r}")
    return activation


def _hidden_act(activation: str, bits: int) -> nn.Module:
    if bits == FLOAT_BITS:
        return nn.Tanh() if activation == "tanh" else nn.ReLU()
    if activation == "tanh":
        return QuantTanh(act_quant=TanhFixedQuant, bit_width=bits)
    return QuantReLU(act_quant=ReLURunningMaxQuant, bit_width=bits)


def _output_act(bits: int) -> nn.Module:
    """Applied to softmax probabilities: the k-bit probability grid, or nothing for float."""
    if bits == FLOAT_BITS:
        return nn.Identity()
    return QuantIdentity(act_quant=ProbabilityFixedQuant, bit_width=bits)


def _linear(n_in: int, n_out: int, bits: int) -> nn.Module:
    if bits == FLOAT_BITS:
        return nn.Linear(n_in, n_out)
    return QuantLinear(n_in, n_out, bias=True, weight_quant=WeightPerTensorQuant, weight_bit_width=bits)


def _conv(c_in: int, c_out: int, bits: int) -> nn.Module:
    if bits == FLOAT_BITS:
        return nn.Conv2d(c_in, c_out, 3)
    return QuantConv2d(c_in, c_out, 3, bias=True, weight_quant=WeightPerTensorQuant, weight_bit_width=bits)


def paper_init_(weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    """The paper's initialisation: truncated normal (at 2 std), std 1/sqrt(units); zero bias.

    units = the layer's outputs: out_features (fan_out), or a conv's number of
    filters, as the paper's Keras code (TruncatedNormal(stddev=1/sqrt(width))).
    """
    std = 1.0 / math.sqrt(weight.shape[0])
    nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)
    if bias is not None:
        nn.init.zeros_(bias)


class _PaperNet(nn.Module):
    """Shared by the paper's nets: checked arguments, the init, the layer names."""

    def __init__(self, activation: str, bits: int, allowed=ACTIVATIONS):
        super().__init__()
        self.activation = _check_activation(activation, allowed)
        self.bits = _check_bits(bits)

    @property
    def quantized(self) -> bool:
        return self.bits != FLOAT_BITS

    @property
    def layer_names(self) -> list[str]:
        """The measured outputs, in forward order: T1..Tn."""
        return [f"T{i}" for i in range(1, self.n_layers + 1)]

    def _weight_layers(self) -> list[nn.Module]:
        return [m for m in self.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]

    def reset_parameters(self) -> None:
        """The paper's initialisation of every weight layer (`paper_init_`)."""
        for m in self._weight_layers():
            paper_init_(m.weight, m.bias)


class PaperMLP(_PaperNet):
    """An MLP of the paper, widths[0] inputs; Linear layers fc1..fcn, measured outputs T1..Tn.

    Hidden layers use `activation` (tanh or relu); the last layer is a softmax
    whose probabilities T_n quantizes to k bits. `forward` takes (N, widths[0])
    or images (flattened) and returns the probabilities (N, widths[-1]) as
    floats; train it with `syn_loss`. `bits=32` is the float network.
    """

    def __init__(self, widths, activation: str = "tanh", bits: int = 8):
        super().__init__(activation, bits)
        widths = tuple(widths)
        if len(widths) < 2 or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths):
            raise ValueError(f"widths must be at least two positive ints (inputs, ..., classes), got {widths!r}")
        self.widths = widths
        n_layers = len(widths) - 1
        for i in range(n_layers):
            setattr(self, f"fc{i + 1}", _linear(widths[i], widths[i + 1], bits))
            act = _hidden_act(activation, bits) if i < n_layers - 1 else _output_act(bits)
            setattr(self, f"T{i + 1}", act)
        self.n_layers = n_layers
        self.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float().reshape(x.shape[0], -1)
        for i in range(1, self.n_layers):
            x = getattr(self, f"T{i}")(getattr(self, f"fc{i}")(x))
        logits = getattr(self, f"fc{self.n_layers}")(x)
        return getattr(self, f"T{self.n_layers}")(torch.softmax(logits, dim=1))


class SynMLP(PaperMLP):
    """12-10-7-5-4-3-2 quantized MLP; Linear layers fc1..fc6, measured outputs T1..T6."""

    def __init__(self, activation: str = "tanh", bits: int = 8, widths=SYN_WIDTHS):
        super().__init__(widths, activation, bits)


class PaperConv(_PaperNet):
    """The paper's MNIST conv net: (conv 2x3x3, ReLU, max-pool 2x2) x 2, dense 16 ReLU, dense 10 softmax.

    Layers conv1, T1, pool1, conv2, T2, pool2, fc3, T3, fc4, T4 ('valid' 3x3
    convolutions as Keras' default: 28 -> 26 -> 13 -> 11 -> 5, so fc3 sees
    2*5*5 = 50 inputs). T1, T2 are measured before pooling. Takes (N, 784),
    (N, 28, 28) or (N, 1, 28, 28).
    """

    def __init__(self, activation: str = "relu", bits: int = 8, side: int = 28, classes: int = 10):
        super().__init__(activation, bits, allowed=("relu",))
        self.side = side
        self.conv1, self.T1, self.pool1 = _conv(1, 2, bits), _hidden_act("relu", bits), nn.MaxPool2d(2)
        self.conv2, self.T2, self.pool2 = _conv(2, 2, bits), _hidden_act("relu", bits), nn.MaxPool2d(2)
        flat = 2 * (((side - 2) // 2 - 2) // 2) ** 2
        self.fc3, self.T3 = _linear(flat, 16, bits), _hidden_act("relu", bits)
        self.fc4, self.T4 = _linear(16, classes, bits), _output_act(bits)
        self.n_layers = 4
        self.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float().reshape(x.shape[0], 1, self.side, self.side)
        x = self.pool1(self.T1(self.conv1(x)))
        x = self.pool2(self.T2(self.conv2(x)))
        x = self.T3(self.fc3(x.flatten(1)))
        return self.T4(torch.softmax(self.fc4(x), dim=1))


def syn_mlp(activation: str = "tanh", bits: int = 8) -> SynMLP:
    """The paper's SYN network with k-bit weights and activations (k = `bits`, 2..16; 32 = float).

    Deterministic given `torch.manual_seed`. Layer outputs to measure: T1..T6.
    """
    return SynMLP(activation=activation, bits=bits)


@dataclass(frozen=True)
class NetSpec:
    """One network `build_net` knows: its listing, input shape and activations."""

    name: str
    widths: tuple[int, ...] | None  # None for the conv net
    activations: tuple[str, ...]
    default_activation: str
    inputs: int  # input features per sample (flattened)


NETS: dict[str, NetSpec] = {
    s.name: s for s in (
        NetSpec("syn", SYN_WIDTHS, ACTIVATIONS, "tanh", 12),
        NetSpec("mnist-4x10", (784, 10, 10, 10, 10, 10), ACTIVATIONS, "tanh", 784),
        NetSpec("mnist-bottleneck-2", (784, 16, 8, 4, 2, 10), ACTIVATIONS, "relu", 784),
        NetSpec("mnist-bottleneck-4", (784, 16, 12, 8, 4, 10), ACTIVATIONS, "relu", 784),
        NetSpec("mnist-hourglass", (784, 16, 8, 4, 2, 4, 8, 10), ACTIVATIONS, "relu", 784),
        NetSpec("mnist-conv", None, ("relu",), "relu", 784),
    )
}


def build_net(name: str, activation: str | None = None, bits: int = 8) -> nn.Module:
    """The network `name` of `NETS` (activation None = the paper's for that net); seeded by torch's RNG."""
    if name not in NETS:
        raise ValueError(f"unknown network {name!r}; choose one of {', '.join(NETS)}")
    spec = NETS[name]
    activation = spec.default_activation if activation is None else activation
    _check_activation(activation, spec.activations)
    if name == "syn":
        return SynMLP(activation, bits)
    if spec.widths is None:
        return PaperConv(activation, bits)
    return PaperMLP(spec.widths, activation, bits)


def syn_loss(probs: torch.Tensor, target: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Cross-entropy on quantized probabilities, as Keras' CategoricalCrossentropy in the paper.

    Probabilities are renormalised and clipped to [eps, 1 - eps] before the log, so
    a probability quantized to 0 gives a finite loss (log(eps)) instead of inf.
    """
    if probs.dim() != 2 or target.dim() != 1 or probs.shape[0] != target.shape[0]:
        raise ValueError(
            f"syn_loss expects probs (N, C) and integer targets (N,), "
            f"got {tuple(probs.shape)} and {tuple(target.shape)}"
        )
    p = probs / probs.sum(dim=1, keepdim=True).clamp_min(eps)
    return F.nll_loss(p.clamp(eps, 1.0 - eps).log(), target.long())


def freeze_relu_ranges(model: nn.Module) -> list[str]:
    """Freeze the ReLU quantizers' calibrated ranges; returns the layers frozen.

    A ReLU layer's eval-mode grid (the one every measurement uses) is its running
    maximum / (2^k - 1). While it trains that maximum can grow several-fold, and a
    coarser grid alone lowers I(X;T). Freezing the running maximum (momentum 0:
    Brevitas' update then leaves it exactly as it is) keeps the measured grid where
    calibration left it, so a later fall of I(X;T) is the representation's own.
    Training still quantizes each batch on its batch maximum, as Brevitas does.
    The momentum is not part of `state_dict()`: apply again after loading a checkpoint.
    The fast engine replays the unfrozen update, so train a frozen model through Brevitas.
    """
    frozen = []
    for name, module in model.named_modules():
        stats = getattr(getattr(getattr(getattr(module, "act_quant", None), "fused_activation_quant_proxy", None),
                                "tensor_quant", None), "scaling_impl", None)
        runtime = getattr(stats, "runtime_stats", None)
        if isinstance(module, QuantReLU) and runtime is not None and hasattr(runtime, "momentum"):
            runtime.momentum = 0.0
            frozen.append(name)
    return frozen
