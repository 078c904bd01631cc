"""Exact fast path for the paper's SYN network (`models.SynMLP`): same numbers, fewer ops.

A Brevitas training step of the 12-10-7-5-4-3-2 net is ~430 module calls and
several hundred tiny tensor ops, and autograd walks the same graph back; for a
net this small that overhead is the whole cost. `SynFastPath` runs the same
forward with the same ATen ops, on the model's own parameters and buffers, and
writes the backward by hand with the ATen ops autograd would run for it (torch's
derivative formulas; Brevitas' straight-through estimators for round and the
weight clamp; Brevitas' where-based activation clamp, which stops the gradient).

Nothing is approximated: forward outputs, integer codes, loss, every gradient
and the ReLU running maxima (with Brevitas' step counter) equal those of a
Brevitas forward/backward of the same model bit for bit. `check_against_brevitas`
verifies that on real data (the tests, and every `ib-brevitas train` run once
before it starts). The model stays a Brevitas model: the monitor, checkpoints
and export use it unchanged.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor

from ib_brevitas.models import SynMLP, syn_loss

_aten = torch.ops.aten
_MEAN = 1  # at::Reduction::Mean, syn_loss's nll_loss reduction
_IGNORE = -100  # nll_loss's default ignore_index
_SCALE_MIN = 1e-10  # Brevitas' scaling_min_val of the ReLU range (ScalarSignedClampMinSte)


# Flat weight slots start at multiples of 16 floats (64 bytes, PyTorch's CPU
# allocation alignment), so each layer's quantized weights are a view laid out
# like a freshly allocated tensor for the matrix products.
_ALIGN = 16


class SynFastPath:
    """Forward, backward and eval forward of a `SynMLP`, equal to Brevitas' bit for bit.

    `train_step(x, y)` is `model.train(); loss = syn_loss(model(x), y);
    loss.backward()` with fresh gradients (as after `zero_grad(set_to_none=True)`):
    it sets every parameter's `.grad`, updates the ReLU running maxima and
    their counters, and returns the loss. `forward(x)` is the eval-mode forward
    (no state changes); `codes(x)` the integer codes of T1..T6 in eval mode.

    The six weight quantizers run together on one flat copy of the weights:
    their element-wise steps are the same IEEE operations on the same values,
    the per-layer maxima are order-free, and each per-layer gradient sum runs
    over that layer's slice alone, in the order Brevitas' autograd sums it.
    """

    def __init__(self, model: SynMLP):
        if type(model) is not SynMLP:
            raise TypeError(
                f"the fast path reproduces ib_brevitas.models.SynMLP only, got {type(model).__name__}; "
                "train other models with their own Brevitas forward"
            )
        k = model.bits
        self.model = model
        self.fcs = [getattr(model, f"fc{i}") for i in range(1, model.n_layers + 1)]
        self.relu = model.activation == "relu"
        self._zero = torch.zeros(())
        # Brevitas' int thresholds are float32 tensors; the scales divide by them.
        self.w_thr = torch.tensor(float(2 ** (k - 1) - 1))  # narrow signed weights
        self.w_lo, self.w_hi = -float(2 ** (k - 1) - 1), float(2 ** (k - 1) - 1)
        self.p_scale = torch.tensor(1.0) / torch.tensor(float(2**k - 1))  # ConstScaling 1/(2^k-1)
        self.p_hi = torch.tensor(float(2**k - 1))
        self.p_hi_f = float(2**k - 1)
        if self.relu:
            self.a_thr = torch.tensor(float(2**k - 1))
            self.a_hi = torch.tensor(float(2**k - 1))
            self.a_lo_f, self.a_hi_f = 0.0, float(2**k - 1)
        else:
            self.a_scale = torch.tensor(1.0) / torch.tensor(float(2 ** (k - 1)))  # ConstScaling 1/2^(k-1)
            self.a_hi = torch.tensor(float(2 ** (k - 1) - 1))
            self.a_lo_f, self.a_hi_f = -float(2 ** (k - 1)), float(2 ** (k - 1) - 1)
        self._layout()

    def _layout(self) -> None:
        """Flat slots of the six weight matrices: offsets, padding, owner of each element."""
        self.shapes = [tuple(fc.weight.shape) for fc in self.fcs]
        self.slots, self.pads, owner, valid = [], [], [], []
        offset = 0
        for i, shape in enumerate(self.shapes):
            n = shape[0] * shape[1]
            end = -(-(offset + n) // _ALIGN) * _ALIGN
            self.slots.append((offset, offset + n))
            self.pads.append(torch.zeros(end - offset - n))
            owner += [i] * (end - offset)
            valid += [True] * n + [False] * (end - offset - n)
            offset = end
        self.owner = torch.tensor(owner)
        self.valid = torch.tensor(valid)
        self.slot_lengths = torch.tensor([e - s for s, e in self.slots]) + torch.tensor(
            [p.numel() for p in self.pads]
        )

    def _flat(self, mats: list[Tensor]) -> Tensor:
        parts = []
        for m, pad in zip(mats, self.pads):
            parts.append(m.reshape(-1))
            parts.append(pad)
        return torch.cat(parts)

    # -- forward pieces (each mirrors one Brevitas quantizer) ----------------------

    def _weights(self):
        """Int8WeightPerTensorFloat of every layer: scale max|W| / (2^(k-1)-1), round, clamp."""
        w = self._flat([fc.weight for fc in self.fcs])
        aw = w.abs()
        m = torch.segment_reduce(aw, "max", lengths=self.slot_lengths)  # padding 0 <= max
        s = m / self.w_thr
        s_e = s.index_select(0, self.owner)
        q = w / s_e
        r = q.round().clamp_(self.w_lo, self.w_hi)
        wq = r * s_e
        mats = [wq[a:b].view(shape) for (a, b), shape in zip(self.slots, self.shapes)]
        return mats, (w, aw, m, s_e, q, r)

    def _runtime_stats(self) -> list:
        # Looked up per pass: Brevitas' load_state_dict replaces these modules.
        return [
            getattr(self.model, f"T{i}").act_quant.fused_activation_quant_proxy.tensor_quant.scaling_impl.runtime_stats
            for i in range(1, self.model.n_layers)
        ]

    def _act(self, z: Tensor, rs, train: bool):
        """T_i for i < 6: tanh with fixed scale, or ReLU with the running-max scale."""
        if not self.relu:
            y = torch.tanh(z)
            r = (y / self.a_scale).round()
            over = r > self.a_hi  # tanh/scale >= -2^(k-1): only the top clamps
            c = r.clamp(self.a_lo_f, self.a_hi_f)
            return c * self.a_scale, c, (y, over)
        y = torch.relu(z)
        if train:
            ay = y.abs()
            st = ay.max()
            if rs.counter == 0:
                rs.running_stats.mul_(st)
            else:
                rs.running_stats.mul_(1 - rs.momentum)
                rs.running_stats.add_(rs.momentum * st)
            rs.counter += 1
        else:
            ay, st = None, rs.running_stats
        s = st.clamp_min(_SCALE_MIN) / self.a_thr
        q = y / s
        r = q.round()
        over = r > self.a_hi  # relu/scale >= 0: only the top clamps
        c = r.clamp(self.a_lo_f, self.a_hi_f)
        return c * s, c, (y, ay, st, s, q, c, over)

    def _output(self, z: Tensor):
        """T6: softmax probabilities on the unsigned k-bit grid, fixed scale 1/(2^k-1)."""
        p = torch.softmax(z, dim=1)
        r = (p / self.p_scale).round()
        over = r > self.p_hi  # probabilities >= 0: only the top clamps
        c = r.clamp(0.0, self.p_hi_f)
        return c * self.p_scale, c, (p, over)

    def _forward(self, x: Tensor, train: bool, keep: bool):
        h = x.float()
        wqs, wsaved = self._weights()
        saved, codes = [], []
        last = len(self.fcs) - 1
        stats = self._runtime_stats() if self.relu else [None] * last
        for i, fc in enumerate(self.fcs):
            z = torch.nn.functional.linear(h, wqs[i], fc.bias)
            if i < last:
                out, c, asaved = self._act(z, stats[i], train)
            else:
                out, c, asaved = self._output(z)
            if keep:
                saved.append((h, asaved))
            codes.append(c)
            h = out
        return h, (saved, wqs, wsaved), codes

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        """Eval-mode probabilities, as `model.eval(); model(x)` (changes no state)."""
        return self._forward(x, train=False, keep=False)[0]

    @torch.no_grad()
    def codes(self, x: Tensor) -> list[Tensor]:
        """Eval-mode integer codes of T1..T6 (int64), as QuantTensor.int() gives them."""
        return [c.to(torch.int64) for c in self._forward(x, train=False, keep=False)[2]]

    # -- training step --------------------------------------------------------------

    @torch.no_grad()
    def train_step(self, x: Tensor, target: Tensor, eps: float = 1e-7) -> Tensor:
        probs, (saved, wqs, wsaved), _ = self._forward(x, train=True, keep=True)
        # syn_loss forward, kept for its backward
        sm = probs.sum(dim=1, keepdim=True)
        den = sm.clamp_min(eps)
        pn = probs / den
        pc = pn.clamp(eps, 1.0 - eps)
        lg = pc.log()
        target = target.long()
        loss, total_weight = _aten.nll_loss_forward(lg, target, None, _MEAN, _IGNORE)
        zero = self._zero
        # syn_loss backward
        g = _aten.nll_loss_backward(torch.ones_like(loss), lg, target, None, _MEAN, _IGNORE, total_weight)
        g = g / pc
        g = torch.where((pn >= eps).logical_and_(pn <= 1.0 - eps), g, zero)
        g_probs = g / den
        g_den = (-g * ((probs / den) / den)).sum([1], keepdim=True)
        g_sm = torch.where(sm >= eps, g_den, zero)
        g = g_probs + g_sm.expand_as(probs)
        # T6 backward: dequantize, where-clamp, STE round, scale; softmax
        p, over = saved[-1][1]
        g = torch.where(over, zero, g * self.p_scale) / self.p_scale
        gz = _aten._softmax_backward_data(g, p, 1, torch.float32)
        g_wqs = [None] * len(self.fcs)
        for i in range(len(self.fcs) - 1, -1, -1):
            h = saved[i][0]
            # F.linear = addmm(b, h, wq.t()): autograd's mm_mat1/mm_mat2 backward and sum_to
            self.fcs[i].bias.grad = gz.sum([0], keepdim=True).view(-1)
            g_wqs[i] = gz.t().mm(h)
            if i == 0:
                break
            g_h = gz.mm(wqs[i])
            gz = self._act_backward(g_h, saved[i - 1][1])
        g_w = self._weights_backward(g_wqs, wsaved)
        for fc, (a, b), shape in zip(self.fcs, self.slots, self.shapes):
            fc.weight.grad = g_w[a:b].view(shape)
        return loss

    def _weights_backward(self, g_wqs: list[Tensor], wsaved) -> Tensor:
        w, aw, m, s_e, q, r = wsaved
        g_wq = self._flat(g_wqs)
        g_r = g_wq * s_e  # mul: r * s
        t_mul = g_wq * r
        g_w = g_r / s_e  # div: w / s (round and clamp are straight-through)
        t_div = -g_r * (q / s_e)
        # sum_to(scale): each layer's own sum, as autograd reduces its (out, in) tensor
        g_s = torch.stack([t_mul[a:b].sum() for a, b in self.slots]) + torch.stack(
            [t_div[a:b].sum() for a, b in self.slots]
        )
        g_m = g_s / self.w_thr
        top = (aw == m.index_select(0, self.owner)).logical_and_(self.valid)
        ties = torch.segment_reduce(top.float(), "sum", lengths=self.slot_lengths)
        # max(): the gradient evenly distributed over the tied maxima, then abs()
        g_aw = torch.where(top, (g_m / ties).index_select(0, self.owner), self._zero)
        return g_w + g_aw * w.sgn()

    def _act_backward(self, g_h: Tensor, asaved) -> Tensor:
        zero = self._zero
        if not self.relu:
            y, over = asaved
            g = torch.where(over, zero, g_h * self.a_scale) / self.a_scale
            return _aten.tanh_backward(g, y)
        y, ay, st, s, q, c, over = asaved
        g_c = g_h * s
        g_s = (g_h * c).sum()
        g_c = torch.where(over, zero, g_c)
        g_y = g_c / s
        g_s = g_s + (-g_c * (q / s)).sum()
        g_st = g_s / self.a_thr  # the min-clamps and abs of the scale pass it unchanged
        top = ay == st
        g_ay = torch.where(top, g_st / top.sum(), zero)
        g_y = g_y + g_ay * y.sgn()
        return _aten.threshold_backward(g_y, y, 0)


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
            lambda _m, _a, out, i=i: codes.__setitem__(i, out.int().to(torch.int64))
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
    if not all(torch.equal(codes[i], c) for i, c in enumerate(fast.codes(x), start=1)):
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
            "the fast SYN training path no longer matches Brevitas bit for bit ("
            + ", ".join(dict.fromkeys(problems))
            + "); the installed torch/Brevitas computes differently. Train with --engine brevitas "
            "and report this"
        )


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
