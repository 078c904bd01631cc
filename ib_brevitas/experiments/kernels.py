"""The seed-batched kernels of the paper's MLPs: Brevitas' forward, backward and Adam on stacked seeds.

Every tensor holds S seeds along dim 0: weights (S, out, in), biases (S, out),
inputs (S, B, in), ReLU running maxima (S,). The ops are the ATen ops a
Brevitas forward of `models.PaperMLP` and autograd's backward run for one
seed (torch's derivative formulas; Brevitas' straight-through estimators for
round and the weight clamp; its where-based tanh clamp, which stops the
gradient), with each per-seed op replaced by its batched twin: `F.linear` by
`baddbmm`, `mm` by `bmm` (on and into 64-byte aligned blocks, see `_aligned`), a
full reduction by a reduction over the non-seed dims. Each seed's numbers are meant to equal its own single-seed Brevitas run
bit for bit; that is a property of the platform's kernels, not of the maths,
so `engine.SeedBatch.verify` checks it at run time against Brevitas itself.

Two gradient masks Brevitas computes are left out because they provably never
act in training: the activation clamp of the ReLU layers (the batch maximum
maps to code 2^k - 1 up to rounding, everything else below it) and of the
softmax output (probabilities <= 1 map to <= 2^k - 1).

The kernels are compiled once with TorchScript, which calls the same ATen
kernels without the Python interpreter between them (plain Python if
TorchScript is unavailable; same numbers).
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import torch
from torch import Tensor

_SCALE_MIN = 1e-10  # Brevitas' scaling_min_val of the ReLU range (ScalarSignedClampMinSte)


class Consts(NamedTuple):
    """Quantizer constants, as the float32 tensors Brevitas divides by."""

    w_thr: Tensor  # 2^(k-1) - 1: narrow signed weights
    w_hi: float
    a_scale: Tensor  # tanh: 1 / 2^(k-1)
    a_thr: Tensor  # relu: 2^k - 1
    a_min: float  # relu: smallest range (Brevitas' scaling_min_val)
    a_lo: float
    a_hi: float
    a_top: Tensor  # a_hi as a tensor (tanh's clamp mask)
    p_scale: Tensor  # softmax output: 1 / (2^k - 1)
    p_hi: float
    zero: Tensor


def consts(bits: int, relu: bool) -> Consts:
    k = bits
    a_lo, a_hi = (0.0, float(2**k - 1)) if relu else (-float(2 ** (k - 1)), float(2 ** (k - 1) - 1))
    return Consts(
        w_thr=torch.tensor(float(2 ** (k - 1) - 1)),
        w_hi=float(2 ** (k - 1) - 1),
        a_scale=torch.tensor(1.0) / torch.tensor(float(2 ** (k - 1))),  # ConstScaling: value / threshold
        a_thr=torch.tensor(float(2**k - 1)),
        a_min=_SCALE_MIN,
        a_lo=a_lo,
        a_hi=a_hi,
        a_top=torch.tensor(a_hi),
        p_scale=torch.tensor(1.0) / torch.tensor(float(2**k - 1)),
        p_hi=float(2**k - 1),
        zero=torch.zeros(()),
    )


def _quant_weight(w: Tensor, c: Consts) -> list[Tensor]:
    """Per seed: scale max|W| / (2^(k-1)-1), round, clamp. [w, wq, |w|, max, s, q, r]"""
    aw = w.abs()
    m = aw.amax(dim=[1, 2], keepdim=True)
    s = m / c.w_thr
    q = w / s
    r = q.round().clamp_(-c.w_hi, c.w_hi)
    return [w, r * s, aw, m, s, q, r]


def forward(
    x: Tensor, weights: list[Tensor], biases: list[Tensor], relu: bool, train: bool,
    running: list[Tensor], first: bool, momentum: float, c: Consts,
) -> tuple[list[Tensor], list[Tensor], list[list[Tensor]], list[list[Tensor]]]:
    """Outputs of T1..Tn (Tn: the probabilities), their codes, and what the backward needs."""
    h = x
    outs: list[Tensor] = []
    codes: list[Tensor] = []
    wsaved: list[list[Tensor]] = []
    asaved: list[list[Tensor]] = []
    last = len(weights) - 1
    z = x
    for i in range(last + 1):
        wq = _quant_weight(weights[i], c)
        h = _aligned(h)
        wsaved.append(wq + [h])
        z = _linear(biases[i], h, wq[1])  # F.linear, per seed
        if i == last:
            break
        if relu:
            y = torch.relu(z)
            ay = y
            if train:  # batch maximum for the scale; Brevitas' running-max update
                ay = y.abs()
                st = ay.amax(dim=[1, 2])
                if first:
                    running[i].mul_(st)
                else:
                    running[i].mul_(1 - momentum)
                    running[i].add_(momentum * st)
            else:
                st = running[i]
            s = (st.clamp_min(c.a_min) / c.a_thr).view(-1, 1, 1)
            q = y / s
            code = q.round().clamp(c.a_lo, c.a_hi)
            h = code * s
            asaved.append([y, ay, st.view(-1, 1, 1), s, q, code])
        else:
            y = torch.tanh(z)
            r = (y / c.a_scale).round()
            code = r.clamp(c.a_lo, c.a_hi)
            h = code * c.a_scale
            if train:
                asaved.append([y, r > c.a_top])  # tanh/scale >= -2^(k-1): only the top clamps
        codes.append(code)
        outs.append(h)
    p = torch.softmax(z, dim=2)
    code = (p / c.p_scale).round().clamp(0.0, c.p_hi)
    codes.append(code)
    outs.append(code * c.p_scale)
    asaved.append([p])
    return outs, codes, wsaved, asaved


def _aligned_empty(n: int, r: int, col: int, like: Tensor) -> Tensor:
    """An (n, r, col) tensor whose every seed's (r, col) block starts on a 64-byte boundary."""
    blk = (r * col + 15) // 16 * 16
    return torch.empty([n, blk], dtype=like.dtype).as_strided([n, r, col], [blk, col, 1])


def _aligned(t: Tensor) -> Tensor:
    """t (S, r, c) with each seed's block starting on a 64-byte boundary, as a lone seed's tensor does.

    BLAS picks its kernel by the operands' alignment. A seed's block of a contiguous (S, r, c)
    starts at s * r * c floats, off the boundary when r * c is no multiple of 16 (a short last
    minibatch: 157 rows x 10 units), and that seed's bmm then rounds unlike its single-seed mm
    (seen on MNIST-4x10's 157-row last batch, forward and backward, and the SYN weight gradients).
    """
    r, col = t.shape[1], t.shape[2]
    # Already so: rows contiguous, blocks 16 floats apart or one shared block (an expanded probe set,
    # never copied), offset aligned (CPU allocations start on 64 bytes).
    if (t.stride(2) == 1 and t.stride(1) == col and (t.stride(0) == 0 or t.stride(0) % 16 == 0)
            and t.storage_offset() % 16 == 0):
        return t
    return _aligned_empty(t.shape[0], r, col, t).copy_(t)


def _bmm_aligned(a: Tensor, b: Tensor) -> Tensor:
    """bmm into aligned per-seed blocks (operands aligned by the caller, see `_aligned`)."""
    return torch.bmm(a, b, out=_aligned_empty(a.shape[0], a.shape[1], b.shape[2], a))


def _linear(bias: Tensor, h: Tensor, w: Tensor) -> Tensor:
    """F.linear per seed, h aligned by the caller: baddbmm into aligned per-seed blocks (see `_aligned`)."""
    return torch.baddbmm(bias.unsqueeze(1), h, w.transpose(1, 2),
                         out=_aligned_empty(h.shape[0], h.shape[1], w.shape[1], h))


def _weight_backward(g_wq: Tensor, saved: list[Tensor], c: Consts) -> Tensor:
    w, aw, m, s, q, r = saved[0], saved[2], saved[3], saved[4], saved[5], saved[6]
    g_r = g_wq * s  # mul: r * s
    g_s = (g_wq * r).sum(dim=[1, 2], keepdim=True)
    g_w = g_r / s  # div: w / s (round and clamp are straight-through)
    g_s = g_s + (-g_r * (q / s)).sum(dim=[1, 2], keepdim=True)
    g_m = g_s / c.w_thr
    top = aw == m  # max(): the gradient evenly distributed over tied maxima, then abs()
    g_aw = torch.where(top, g_m / top.sum(dim=[1, 2], keepdim=True), c.zero)
    return g_w + g_aw * w.sgn()


def train_step(
    x: Tensor, target: Tensor, weights: list[Tensor], biases: list[Tensor], relu: bool,
    running: list[Tensor], first: bool, momentum: float, c: Consts, eps: float, with_loss: bool = True,
) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """Per seed syn_loss(model(x), target) in train mode, and its gradients (weights, biases).

    with_loss=False skips the loss values (an empty tensor): the gradients never depend on them.
    """
    outs, _, wsaved, asaved = forward(x, weights, biases, relu, True, running, first, momentum, c)
    probs = outs[-1]
    # syn_loss forward, kept for its backward
    sm = probs.sum(dim=2, keepdim=True)
    den = sm.clamp_min(eps)
    pn = probs / den
    pc = pn.clamp(eps, 1.0 - eps)
    lg = pc.log()
    n_seeds, batch = lg.shape[0], lg.shape[1]
    losses: list[Tensor] = []
    if with_loss:
        for s in range(n_seeds):  # nll_loss sums in its own (cascaded) order: one call per seed
            losses.append(torch.ops.aten.nll_loss_forward(lg[s], target[s], None, 1, -100)[0])
    loss = torch.stack(losses) if with_loss else torch.empty(0)
    # nll_loss backward (mean): -grad_output / total_weight at each target
    g_t = -float((torch.ones(()) / float(batch)).item())  # the float32 quotient, exactly
    g = torch.zeros_like(lg).scatter_(2, target.unsqueeze(2), g_t)
    g = g / pc
    g = torch.where((pn >= eps).logical_and_(pn <= 1.0 - eps), g, c.zero)
    g_probs = g / den
    g_den = (-g * ((probs / den) / den)).sum([2], keepdim=True)
    g_sm = torch.where(sm >= eps, g_den, c.zero)
    g = g_probs + g_sm.expand_as(probs)
    # Tn: dequantize, (clamp never active), STE round, scale; softmax
    g = (g * c.p_scale) / c.p_scale
    gz = torch.ops.aten._softmax_backward_data(g, asaved[-1][0], 2, torch.float32)
    n = len(weights)
    g_weights: list[Tensor] = []
    g_biases: list[Tensor] = []
    for j in range(n):
        i = n - 1 - j
        # F.linear = addmm(b, h, wq.t()): autograd's sum_to and mm_mat1/mm_mat2 backward
        gz = _aligned(gz)
        g_biases.append(gz.sum([1]))
        g_weights.append(_weight_backward(_bmm_aligned(gz.transpose(1, 2), wsaved[i][7]), wsaved[i], c))
        if i == 0:
            break
        g_h = _bmm_aligned(gz, wsaved[i][1])
        a = asaved[i - 1]
        if relu:
            y, ay, st, s, q, code = a[0], a[1], a[2], a[3], a[4], a[5]
            g_c = g_h * s  # (clamp never active in training)
            g_s = (g_h * code).sum(dim=[1, 2], keepdim=True)
            g_y = g_c / s
            g_s = g_s + (-g_c * (q / s)).sum(dim=[1, 2], keepdim=True)
            g_st = g_s / c.a_thr  # the min-clamps and abs of the scale pass it unchanged
            top = ay == st
            g_ay = torch.where(top, g_st / top.sum(dim=[1, 2], keepdim=True), c.zero)
            g_y = g_y + g_ay * y.sgn()
            gz = torch.ops.aten.threshold_backward(g_y, y, 0)
        else:
            g_y = torch.where(a[1], c.zero, g_h * c.a_scale) / c.a_scale
            gz = torch.ops.aten.tanh_backward(g_y, a[0])
    g_weights.reverse()
    g_biases.reverse()
    return loss, g_weights, g_biases


_ONE = torch.tensor(1.0)


@torch.no_grad()
def adam_update(
    params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor], exp_avg_sqs: list[Tensor],
    step: int, lr: float, beta1: float, beta2: float, eps: float,
) -> None:
    """torch.optim.Adam's multi-tensor update (no weight decay, amsgrad, ...) at step `step` (1-based).

    Elementwise, so stacking seeds changes nothing per element; the same
    `_foreach` kernels with the same scalars as torch's `_multi_tensor_adam`.
    """
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
    n = float(step)
    step_size = (lr / (1 - beta1**n)) * -1
    denom = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_div_(denom, (1 - beta2**n) ** 0.5)
    torch._foreach_add_(denom, eps)
    torch._foreach_addcdiv_(params, exp_avgs, denom, step_size)


def _script(fn):
    """TorchScript `fn` (same ATen kernels, no interpreter between them); `fn` itself if that fails.

    torch.jit.script is deprecated in favour of torch.compile, whose generated
    kernels round differently; nothing else replays ATen ops exactly without
    Python, so the warning is silenced here and the plain function is the fallback.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.script(fn), True
    except Exception:  # noqa: BLE001 - TorchScript missing or unable: the Python kernel is exact too
        return fn, False


TRAIN_STEP, COMPILED = _script(train_step)
FORWARD = _script(forward)[0] if COMPILED else forward
