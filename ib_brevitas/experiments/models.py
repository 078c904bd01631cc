"""The paper's SYN network (12-10-7-5-4-3-2) as a Brevitas model.

Every measured layer output T1..T6 is a Brevitas activation quantizer, so its
integer codes come from `QuantTensor.int()`. Quantizers follow the paper's
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
- biases stay float; inputs are {0, 1} already, so there is no input quantizer.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from brevitas.inject.enum import ScalingImplType
from brevitas.nn import QuantIdentity, QuantLinear, QuantReLU, QuantTanh
from brevitas.quant.base import IntQuant, MaxStatsScaling, PerTensorFloatScaling8bit, UintQuant
from brevitas.quant.scaled_int import Int8WeightPerTensorFloat
from brevitas.quant.solver.act import ActQuantSolver

SYN_WIDTHS = (12, 10, 7, 5, 4, 3, 2)
MIN_BITS, MAX_BITS = 2, 16
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
        raise TypeError(f"bits must be an int in {MIN_BITS}..{MAX_BITS}, got {bits!r}")
    if not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"bits must lie in {MIN_BITS}..{MAX_BITS}, got {bits}")
    return bits


class SynMLP(nn.Module):
    """12-10-7-5-4-3-2 quantized MLP; Linear layers fc1..fc6, measured outputs T1..T6.

    `forward` returns the k-bit quantized softmax probabilities (N, 2) as floats;
    train it with `syn_loss`.
    """

    def __init__(self, activation: str = "tanh", bits: int = 8, widths=SYN_WIDTHS):
        super().__init__()
        if activation not in ("tanh", "relu"):
            raise ValueError(f"activation must be 'tanh' or 'relu', got {activation!r}")
        self.activation = activation
        self.bits = _check_bits(bits)
        self.widths = tuple(widths)
        n_layers = len(self.widths) - 1
        for i in range(n_layers):
            fc = QuantLinear(
                self.widths[i], self.widths[i + 1], bias=True,
                weight_quant=WeightPerTensorQuant, weight_bit_width=bits,
            )
            if i < n_layers - 1 and activation == "tanh":
                act = QuantTanh(act_quant=TanhFixedQuant, bit_width=bits)
            elif i < n_layers - 1:
                act = QuantReLU(act_quant=ReLURunningMaxQuant, bit_width=bits)
            else:
                act = QuantIdentity(act_quant=ProbabilityFixedQuant, bit_width=bits)
            setattr(self, f"fc{i + 1}", fc)
            setattr(self, f"T{i + 1}", act)
        self.n_layers = n_layers
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The paper's initialisation: truncated normal (at 2 std), std 1/sqrt(fan_out); zero biases."""
        for i in range(1, self.n_layers + 1):
            fc = getattr(self, f"fc{i}")
            std = 1.0 / math.sqrt(fc.out_features)
            nn.init.trunc_normal_(fc.weight, std=std, a=-2 * std, b=2 * std)
            nn.init.zeros_(fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        for i in range(1, self.n_layers):
            x = getattr(self, f"T{i}")(getattr(self, f"fc{i}")(x))
        logits = getattr(self, f"fc{self.n_layers}")(x)
        return getattr(self, f"T{self.n_layers}")(torch.softmax(logits, dim=1))


def syn_mlp(activation: str = "tanh", bits: int = 8) -> SynMLP:
    """The paper's SYN network with k-bit weights and activations (k = `bits`, 2..16).

    Deterministic given `torch.manual_seed`. Layer outputs to measure: T1..T6.
    """
    return SynMLP(activation=activation, bits=bits)


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
