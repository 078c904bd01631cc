"""Exact fast path for the paper's SYN network (`models.SynMLP`): same numbers, far fewer calls.

A Brevitas training step of the 12-10-7-5-4-3-2 net is ~430 module calls and
several hundred tiny tensor ops, and autograd walks the same graph back; for a
net this small that overhead is the whole cost. Here the forward is the same
ATen ops on the model's own parameters and buffers, and the backward is written
out with the ATen ops autograd runs for it (torch's derivative formulas;
Brevitas' straight-through estimators for round and the weight clamp; Brevitas'
where-based activation clamp, which stops the gradient). Both are compiled once
with TorchScript, which calls the same ATen kernels without the Python
interpreter between them (plain Python if TorchScript is unavailable).

Nothing is approximated: forward outputs, integer codes, loss, every gradient
and the ReLU running maxima (with Brevitas' step counter) equal those of a
Brevitas forward/backward of the same model bit for bit. `check_against_brevitas`
verifies that on real data (the tests, and every `ib-brevitas train` run once
before it starts). The model stays a Brevitas model: the monitor, checkpoints
and export use it unchanged.

Two gradient masks Brevitas computes are left out because they provably never
act in training: the activation clamp of the ReLU layers (the batch maximum
maps to code 2^k - 1 up to rounding, everything else below it) and of the
softmax output (probabilities <= 1 map to <= 2^k - 1); tanh keeps its mask
(tanh near 1 reaches code 2^(k-1) and is clamped).
"""

from __future__ import annotations

import copy
import warnings
from typing import List, NamedTuple, Tuple

import torch
from torch import Tensor

from ib_brevitas.experiments.models import SynMLP, syn_loss

_SCALE_MIN = 1e-10  # Brevitas' scaling_min_val of the ReLU range (ScalarSignedClampMinSte)


class _Consts(NamedTuple):
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


def _consts(bits: int, relu: bool) -> _Consts:
    k = bits
    a_lo, a_hi = (0.0, float(2**k - 1)) if relu else (-float(2 ** (k - 1)), float(2 ** (k - 1) - 1))
    return _Consts(
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


# -- kernels (TorchScript-compatible) ---------------------------------------------------


def _quant_weight(w: Tensor, c: _Consts) -> List[Tensor]:
    """Int8WeightPerTensorFloat: scale max|W| / (2^(k-1)-1), round, clamp. [w, wq, |w|, max, s, q, r]"""
    aw = w.abs()
    m = aw.max()
    s = m / c.w_thr
    q = w / s
    r = q.round().clamp_(-c.w_hi, c.w_hi)
    return [w, r * s, aw, m, s, q, r]


def _forward(
    x: Tensor, weights: List[Tensor], biases: List[Tensor], relu: bool, train: bool,
    running: List[Tensor], first: List[bool], momentum: List[float], c: _Consts,
) -> Tuple[List[Tensor], List[Tensor], List[List[Tensor]], List[List[Tensor]]]:
    """Outputs of T1..T6 (T6: the probabilities), their codes, and what the backward needs."""
    h = x
    outs: List[Tensor] = []
    codes: List[Tensor] = []
    wsaved: List[List[Tensor]] = []
    asaved: List[List[Tensor]] = []
    last = len(weights) - 1
    z = x
    for i in range(last + 1):
        wq = _quant_weight(weights[i], c)
        wsaved.append(wq + [h])
        z = torch.nn.functional.linear(h, wq[1], biases[i])
        if i == last:
            break
        if relu:
            y = torch.relu(z)
            ay = y
            if train:  # batch maximum for the scale; Brevitas' running-max update
                ay = y.abs()
                st = ay.max()
                if first[i]:
                    running[i].mul_(st)
                else:
                    running[i].mul_(1 - momentum[i])
                    running[i].add_(momentum[i] * st)
            else:
                st = running[i]
            s = st.clamp_min(c.a_min) / c.a_thr
            q = y / s
            code = q.round().clamp(c.a_lo, c.a_hi)
            h = code * s
            asaved.append([y, ay, st, s, q, code])
        else:
            y = torch.tanh(z)
            r = (y / c.a_scale).round()
            code = r.clamp(c.a_lo, c.a_hi)
            h = code * c.a_scale
            if train:
                asaved.append([y, r > c.a_top])  # tanh/scale >= -2^(k-1): only the top clamps
        codes.append(code)
        outs.append(h)
    p = torch.softmax(z, dim=1)
    code = (p / c.p_scale).round().clamp(0.0, c.p_hi)
    codes.append(code)
    outs.append(code * c.p_scale)
    asaved.append([p])
    return outs, codes, wsaved, asaved


def _weight_backward(g_wq: Tensor, saved: List[Tensor], c: _Consts) -> Tensor:
    w, aw, m, s, q, r = saved[0], saved[2], saved[3], saved[4], saved[5], saved[6]
    g_r = g_wq * s  # mul: r * s
    g_s = (g_wq * r).sum()
    g_w = g_r / s  # div: w / s (round and clamp are straight-through)
    g_s = g_s + (-g_r * (q / s)).sum()
    g_m = g_s / c.w_thr
    top = aw == m  # max(): the gradient evenly distributed over tied maxima, then abs()
    g_aw = torch.where(top, g_m / torch.count_nonzero(top), c.zero)  # = top.sum(), int64
    return g_w + g_aw * w.sgn()


def _train_step(
    x: Tensor, target: Tensor, weights: List[Tensor], biases: List[Tensor], relu: bool,
    running: List[Tensor], first: List[bool], momentum: List[float], c: _Consts, eps: float,
) -> Tuple[Tensor, List[Tensor], List[Tensor]]:
    """syn_loss(model(x), target) in train mode and its gradients (weights, biases; layer order)."""
    outs, _, wsaved, asaved = _forward(x, weights, biases, relu, True, running, first, momentum, c)
    probs = outs[-1]
    # syn_loss forward, kept for its backward
    sm = probs.sum(dim=1, keepdim=True)
    den = sm.clamp_min(eps)
    pn = probs / den
    pc = pn.clamp(eps, 1.0 - eps)
    lg = pc.log()
    loss, total_weight = torch.ops.aten.nll_loss_forward(lg, target, None, 1, -100)  # mean
    # syn_loss backward
    g = torch.ops.aten.nll_loss_backward(torch.ones_like(loss), lg, target, None, 1, -100, total_weight)
    g = g / pc
    g = torch.where((pn >= eps).logical_and_(pn <= 1.0 - eps), g, c.zero)
    g_probs = g / den
    g_den = (-g * ((probs / den) / den)).sum([1], keepdim=True)
    g_sm = torch.where(sm >= eps, g_den, c.zero)
    g = g_probs + g_sm.expand_as(probs)
    # T6: dequantize, (clamp never active), STE round, scale; softmax
    g = (g * c.p_scale) / c.p_scale
    gz = torch.ops.aten._softmax_backward_data(g, asaved[-1][0], 1, torch.float32)
    n = len(weights)
    g_weights: List[Tensor] = []
    g_biases: List[Tensor] = []
    for j in range(n):
        i = n - 1 - j
        # F.linear = addmm(b, h, wq.t()): autograd's sum_to and mm_mat1/mm_mat2 backward
        g_biases.append(gz.sum([0], keepdim=True).view(-1))
        g_weights.append(_weight_backward(gz.t().mm(wsaved[i][7]), wsaved[i], c))
        if i == 0:
            break
        g_h = gz.mm(wsaved[i][1])
        a = asaved[i - 1]
        if relu:
            y, ay, st, s, q, code = a[0], a[1], a[2], a[3], a[4], a[5]
            g_c = g_h * s  # (clamp never active in training)
            g_s = (g_h * code).sum()
            g_y = g_c / s
            g_s = g_s + (-g_c * (q / s)).sum()
            g_st = g_s / c.a_thr  # the min-clamps and abs of the scale pass it unchanged
            top = ay == st
            g_ay = torch.where(top, g_st / torch.count_nonzero(top), c.zero)
            g_y = g_y + g_ay * y.sgn()
            gz = torch.ops.aten.threshold_backward(g_y, y, 0)
        else:
            g_y = torch.where(a[1], c.zero, g_h * c.a_scale) / c.a_scale
            gz = torch.ops.aten.tanh_backward(g_y, a[0])
    g_weights.reverse()
    g_biases.reverse()
    return loss, g_weights, g_biases


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


_TRAIN_STEP, _COMPILED = _script(_train_step)
_FORWARD, _ = _script(_forward) if _COMPILED else (_forward, False)


class SynFastPath:
    """Training step and eval forward of a `SynMLP`, equal to Brevitas' bit for bit.

    `train_step(x, y)` is `model.train(); loss = syn_loss(model(x), y);
    loss.backward()` with fresh gradients (as after `zero_grad(set_to_none=True)`):
    it sets every parameter's `.grad`, updates the ReLU running maxima and
    their step counters, and returns the loss. `forward(x)` is the eval-mode
    forward (changes nothing); `codes(x)` the eval-mode integer codes of T1..T6.
    """

    compiled = _COMPILED  # whether the kernels run as TorchScript

    def __init__(self, model: SynMLP):
        if type(model) is not SynMLP:
            raise TypeError(
                f"the fast path reproduces ib_brevitas.experiments.models.SynMLP only, got {type(model).__name__}; "
                "train other models with their own Brevitas forward"
            )
        self.model = model
        self.relu = model.activation == "relu"
        self.fcs = [getattr(model, f"fc{i}") for i in range(1, model.n_layers + 1)]
        self.consts = _consts(model.bits, self.relu)

    def _stats(self) -> list:
        """The ReLU layers' Brevitas _RuntimeStats, looked up afresh (load_state_dict replaces them)."""
        if not self.relu:
            return []
        return [
            getattr(self.model, f"T{i}").act_quant.fused_activation_quant_proxy.tensor_quant.scaling_impl.runtime_stats
            for i in range(1, self.model.n_layers)
        ]

    def _eval(self, x: Tensor):
        stats = self._stats()
        with torch.no_grad(), torch.jit.optimized_execution(False):
            return _FORWARD(
                x.float(), [fc.weight for fc in self.fcs], [fc.bias for fc in self.fcs], self.relu, False,
                [rs.running_stats for rs in stats], [False] * len(stats), [0.0] * len(stats), self.consts,
            )

    def forward(self, x: Tensor) -> Tensor:
        """Eval-mode probabilities, as `model.eval(); model(x)` (changes no state)."""
        return self._eval(x)[0][-1]

    def codes(self, x: Tensor) -> dict[str, Tensor]:
        """Eval-mode integer codes {"T1": ..., "T6": ...}, as QuantTensor.int() gives them.

        Same values and dtypes (int8 for signed, uint8 for unsigned codes of up
        to 8 bits, int32 above). Fit for `InformationPlane(codes_fn=...)`.
        Raises ValueError, as the monitor's probe pass does, when a layer's
        output is NaN or inf.
        """
        outs, codes, _, _ = self._eval(x)
        for i, out in enumerate(outs, start=1):
            # A finite sum implies finite elements; only a non-finite sum needs the full check.
            if not torch.isfinite(out.sum()) and not torch.isfinite(out).all():
                raise ValueError(
                    f"layer 'T{i}': NaN or inf reached this quantized layer; the model has diverged "
                    "(check the learning rate and the inputs)"
                )
        return {f"T{i}": c.to(self._code_dtype(i)) for i, c in enumerate(codes, start=1)}

    def _code_dtype(self, layer: int) -> torch.dtype:
        if self.model.bits > 8:
            return torch.int32
        signed = not self.relu and layer < self.model.n_layers  # tanh layers; softmax output is unsigned
        return torch.int8 if signed else torch.uint8

    def train_step(self, x: Tensor, target: Tensor, eps: float = 1e-7) -> Tensor:
        """One Brevitas training forward/backward; sets .grad, returns the loss."""
        stats = self._stats()
        with torch.no_grad(), torch.jit.optimized_execution(False):
            loss, g_weights, g_biases = _TRAIN_STEP(
                x.float(), target.long(), [fc.weight for fc in self.fcs], [fc.bias for fc in self.fcs],
                self.relu, [rs.running_stats for rs in stats], [rs.counter == 0 for rs in stats],
                [float(rs.momentum) for rs in stats], self.consts, eps,
            )
        for rs in stats:
            rs.counter += 1
        for fc, g_w, g_b in zip(self.fcs, g_weights, g_biases):
            fc.weight.grad = g_w
            fc.bias.grad = g_b
        return loss


def check_against_brevitas(model: SynMLP, x: Tensor, y: Tensor, batch: int = 256) -> None:
    """Raise RuntimeError unless the fast path equals Brevitas bit for bit on `model`.

    Compares, on copies (the model is left untouched): the eval-mode outputs
    and codes over all of `x`, and two training steps on its first batches
    (loss, gradients, running statistics and counters).
    """
    ref, fast_model = copy.deepcopy(model), copy.deepcopy(model)
    fast = SynFastPath(fast_model)
    problems = []
    codes = {}
    hooks = [
        getattr(ref, f"T{i}").act_quant.register_forward_hook(
            lambda _m, _a, out, i=i: codes.__setitem__(i, out.int())
        )
        for i in range(1, ref.n_layers + 1)
    ]
    ref.eval()
    with torch.no_grad():
        probs = ref(x)
    for hk in hooks:
        hk.remove()
    if not torch.equal(probs, fast.forward(x)):
        problems.append("eval outputs")
    fast_codes = fast.codes(x)
    if not all(codes[i].dtype == c.dtype and torch.equal(codes[i], c) for i, c in enumerate(fast_codes.values(), 1)):
        problems.append("integer codes")
    ref.train()
    for start in (0, batch):
        xb, yb = x[start : start + batch], y[start : start + batch]
        for p in ref.parameters():
            p.grad = None
        loss = syn_loss(ref(xb), yb)
        loss.backward()
        if not torch.equal(loss, fast.train_step(xb, yb)):
            problems.append("loss")
        for (name, a), b in zip(ref.named_parameters(), fast_model.parameters()):
            if not torch.equal(a.grad, b.grad):
                problems.append(f"gradient of {name}")
        for (name, a), b in zip(ref.named_buffers(), fast_model.buffers()):
            if not torch.equal(a, b):
                problems.append(f"buffer {name}")
    counters = [getattr(m, "counter", None) for m in ref.modules()]
    if counters != [getattr(m, "counter", None) for m in fast_model.modules()]:
        problems.append("runtime-statistics counters")
    if problems:
        raise RuntimeError(
            "the fast SYN training path does not match Brevitas bit for bit with torch "
            f"{torch.__version__} and Brevitas {_brevitas_version()} ("
            + ", ".join(dict.fromkeys(problems))
            + "); please report this"
        )


def _brevitas_version() -> str:
    import brevitas

    return brevitas.__version__


_ONE = torch.tensor(1.0)


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


@torch.no_grad()
def adam_step(opt: torch.optim.Optimizer) -> None:
    """`opt.step()` of a plain torch.optim.Adam, bit for bit, in eight multi-tensor calls.

    The same `_foreach` kernels with the same scalars as torch's multi-tensor
    Adam (itself bit-identical to the default per-tensor loop), without its
    per-call grouping and checks, which cost more than the arithmetic for the
    SYN net's 12 small tensors. Anything else (first step, other settings,
    missing gradients) goes through `opt.step()`.
    """
    group = _plain_adam_group(opt)
    params = group["params"] if group else ()
    states = [opt.state.get(p) for p in params]
    if not group or not all(states) or any(p.grad is None or p.grad.dtype != p.dtype for p in params):
        opt.step()
        return
    lr, eps, (beta1, beta2) = group["lr"], group["eps"], group["betas"]
    grads = [p.grad for p in params]
    exp_avgs = [s["exp_avg"] for s in states]
    exp_avg_sqs = [s["exp_avg_sq"] for s in states]
    steps = [s["step"] for s in states]
    torch._foreach_add_(steps, _ONE, alpha=1.0)
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
    counts = [s.item() for s in steps]
    step_size = [(lr / (1 - beta1**n)) * -1 for n in counts]
    bias_correction2_sqrt = [(1 - beta2**n) ** 0.5 for n in counts]
    denom = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_div_(denom, bias_correction2_sqrt)
    torch._foreach_add_(denom, eps)
    torch._foreach_addcdiv_(params, exp_avgs, denom, step_size)
