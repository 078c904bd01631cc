"""Seed-batched exact training of the paper's MLPs: S seeds of one configuration in one step.

`SeedBatch(models, lr=..., batch_size=...)` takes S Brevitas `PaperMLP`s of one
architecture, each initialised with its own seed, and stacks their weights
((S, out, in)), biases, ReLU running maxima and Adam states. The models stay
the home of the numbers: their parameters and running-max buffers become views
of the stacks, so each model always holds its seed's current weights (the
monitor's hooked Brevitas pass, `state_dict()` and export read them as usual).
Each seed keeps its own data order (its own generator) and Adam state; all
seeds of a batch step together (one step count, one Brevitas step counter).

Exactness contract: each seed trains exactly as its own single-seed Brevitas
run (`model.train()`, `syn_loss`, autograd, `torch.optim.Adam(foreach=True)`)
bit for bit: loss, gradients, Adam update, codes, running maxima, counters.
The kernels (`kernels.py`) only promise that if the platform's batched
kernels equal the per-seed ones, so `start()` checks it on the actual weights
(fresh or loaded) against Brevitas itself, and falls back to training each
seed through its Brevitas modules (exact, slower) with a warning where it
fails; `train_epoch` re-checks a rotating sample of seeds every
`verify_every` epochs and raises `EngineMismatch` if the batch ever drifts.
S = 1 is the plain single run (`fastpath.SynFastPath` is that case).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ib_brevitas.experiments import kernels
from ib_brevitas.experiments.engine_state import SeedState, _linears, relu_stats
from ib_brevitas.experiments.models import PaperMLP, syn_loss


class EngineMismatch(RuntimeError):
    """The batched kernels do not reproduce a seed's Brevitas run bit for bit on this platform."""


class _Stack:
    """The numbers of S seeds: weights, biases, running maxima, Adam moments, step counts."""

    def __init__(self, weights, biases, running, exp_avgs, exp_avg_sqs, step: int, counter: int):
        self.weights, self.biases, self.running = weights, biases, running
        self.exp_avgs, self.exp_avg_sqs = exp_avgs, exp_avg_sqs  # in model.parameters() order
        self.step, self.counter = step, counter

    @property
    def params(self) -> list[Tensor]:
        return [t for pair in zip(self.weights, self.biases) for t in pair]

    def clone(self) -> _Stack:
        c = lambda ts: [t.clone() for t in ts]
        return _Stack(c(self.weights), c(self.biases), c(self.running), c(self.exp_avgs), c(self.exp_avg_sqs),
                      self.step, self.counter)


def _code_dtype(bits: int, signed: bool) -> torch.dtype:
    """QuantTensor.int()'s dtype: int8/uint8 up to 8 bits, int32 above."""
    if bits > 8:
        return torch.int32
    return torch.int8 if signed else torch.uint8


class SeedBatch(SeedState):
    """S seeds of one `PaperMLP` configuration, trained and measured together.

    models: S Brevitas models of one architecture, activation and bit width
        (each initialised, or loaded, by the caller); their parameters and
        running-max buffers are rebound to views of the stacked tensors.
    lr, betas, eps: torch.optim.Adam's (no weight decay); batch_size: the minibatch.
    verify_every: epochs between two run-time re-checks of a sample of
        `verify_seeds` seeds (rotating, so every seed is covered); 0: never.
    The checks compare under the current torch thread count: train with the
    one the single runs use (1, as `ib-brevitas train`).
    """

    def __init__(self, models: Sequence[PaperMLP], lr: float, batch_size: int = 256,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 verify_every: int = 200, verify_seeds: int = 5):
        models = list(models)
        if not models:
            raise ValueError("SeedBatch needs at least one model")
        for m in models:
            if not isinstance(m, PaperMLP) or not m.quantized:
                raise TypeError(f"SeedBatch trains quantized ib_brevitas.experiments.models.PaperMLP nets only, "
                                f"got {type(m).__name__}; train other models with their own Brevitas forward")
        key = lambda m: (m.widths, m.activation, m.bits)
        if any(key(m) != key(models[0]) for m in models):
            raise ValueError("all models of a SeedBatch must share widths, activation and bits; "
                             f"got {sorted(set(map(key, models)))}")
        if batch_size < 1 or verify_every < 0 or verify_seeds < 1:
            raise ValueError("batch_size and verify_seeds must be >= 1, verify_every >= 0")
        self.models = models
        self.lr, self.betas, self.eps, self.batch_size = float(lr), tuple(map(float, betas)), float(eps), batch_size
        self.verify_every, self.verify_seeds = verify_every, verify_seeds
        m0 = models[0]
        self.relu, self.bits, self.n_layers = m0.activation == "relu", m0.bits, m0.n_layers
        self.consts = kernels.consts(self.bits, self.relu)
        moms = {float(rs.momentum) for m in models for rs in relu_stats(m)}
        if len(moms) > 1:
            raise ValueError(f"the ReLU layers' running-max momenta differ ({sorted(moms)})")
        self.momentum = moms.pop() if moms else 0.0
        with torch.no_grad():
            weights = [torch.stack([_linears(m)[i].weight.detach() for m in models]) for i in range(self.n_layers)]
            biases = [torch.stack([_linears(m)[i].bias.detach() for m in models]) for i in range(self.n_layers)]
            running = [torch.stack([relu_stats(m)[i].running_stats.detach() for m in models])
                       for i in range(self.n_layers - 1)] if self.relu else []
        params = [t for pair in zip(weights, biases) for t in pair]
        self.stack = _Stack(weights, biases, running, [torch.zeros_like(p) for p in params],
                            [torch.zeros_like(p) for p in params], 0, 0)
        counters = {self._counter_of(m) for m in models}
        if len(counters) > 1:
            raise ValueError(f"the models' Brevitas step counters differ ({sorted(counters)}); "
                             "batch seeds that stand at the same step")
        self.stack.counter = counters.pop()
        self._bind()
        self.mode = "batched"  # or "brevitas": each seed through its Brevitas modules and torch Adam
        self._optimizers: list[torch.optim.Adam] | None = None
        self._epochs = 0  # epochs trained by this object (the re-check cadence)
        self._next_check = 0  # first seed of the next re-check sample
        self._codes_cache: tuple | None = None
        self._seed_steps = [(0, self.stack.counter)] * self.n_seeds  # (Adam step, counter) per seed
        self._checked = False  # whether start() has checked the current weights

    @property
    def n_seeds(self) -> int:
        return len(self.models)

    def _counter_of(self, model: PaperMLP) -> int:
        return relu_stats(model)[0].counter if self.relu else 0

    def _bind(self) -> None:
        """Rebind each model's parameters and running maxima to views of the stacks."""
        st = self.stack
        for s, m in enumerate(self.models):
            for fc, w, b in zip(_linears(m), st.weights, st.biases):
                fc.weight = torch.nn.Parameter(w[s], requires_grad=True)
                fc.bias = torch.nn.Parameter(b[s], requires_grad=True)
            for rs, r in zip(relu_stats(m), st.running):
                rs.running_stats = r[s]

    def _sync_counters(self) -> None:
        for m in self.models:
            for rs in relu_stats(m):
                rs.counter = self.stack.counter

    # -- training --------------------------------------------------------------------

    def train_step(self, x: Tensor, target: Tensor, stack: _Stack | None = None,
                   with_loss: bool = True) -> tuple[Tensor, list[Tensor]]:
        """One batched Brevitas step and Adam update of every seed; (losses (S,) or empty, gradients)."""
        st = self.stack if stack is None else stack
        with torch.no_grad(), torch.jit.optimized_execution(False):
            loss, g_w, g_b = kernels.TRAIN_STEP(
                x, target, st.weights, st.biases, self.relu, st.running, st.counter == 0, self.momentum,
                self.consts, 1e-7, with_loss)
            grads = [t for pair in zip(g_w, g_b) for t in pair]
            st.step += 1
            st.counter += 1 if self.relu else 0
            kernels.adam_update(st.params, grads, st.exp_avgs, st.exp_avg_sqs, st.step, self.lr, *self.betas,
                                self.eps)
        return loss, grads

    def train_epoch(self, x: Tensor, y: Tensor, generators: Sequence[torch.Generator],
                    losses: bool = True) -> Tensor | None:
        """One epoch of minibatch Adam for every seed; returns each seed's mean training loss (S,).

        losses=False: None instead (the loss values are not computed; the
        training is the same).
        x (S, n, ...), y (S, n): each seed's training split; generators: each
        seed's shuffle generator (one randperm(n) per epoch, as a single run).
        The first epoch after construction or `load_state` runs `start()` on
        (x, y) unless it ran; every `verify_every` epochs a sample of seeds is
        re-checked first.
        """
        x, y = self._check_data(x, y)
        self._check_lockstep()
        if len(generators) != self.n_seeds:
            raise ValueError(f"need one shuffle generator per seed ({self.n_seeds}), got {len(generators)}")
        if not self._checked:
            self.start(x, y)
        if self.verify_every and self._epochs and self._epochs % self.verify_every == 0 and self.mode == "batched":
            k = min(self.verify_seeds, self.n_seeds)
            seeds = [(self._next_check + i) % self.n_seeds for i in range(k)]
            self._next_check = (self._next_check + k) % self.n_seeds
            self.verify(x, y, seeds=seeds)
        self._epochs += 1
        n = x.shape[1]
        orders = [torch.randperm(n, generator=g) for g in generators]
        self._codes_cache = None
        if self.mode == "brevitas":
            mean_losses = self._brevitas_epoch(x, y, orders)
            self._seed_steps = [(self.stack.step, self.stack.counter)] * self.n_seeds
            return mean_losses if losses else None
        # Each step gathers only its own rows (a whole epoch's gather would copy S x the data set each
        # epoch); from one copy where all seeds share the data (expanded, stride 0), else seed s's rows at s * n.
        # Inputs and labels apart: a prefit shares the images but permutes each seed's labels.
        order = torch.stack(orders)
        own = order + torch.arange(self.n_seeds).view(-1, 1) * n
        flat_x, idx_x = (x[0], order) if x.stride(0) == 0 else (x.reshape(self.n_seeds * n, -1), own)
        flat_y, idx_y = (y[0], order) if y.stride(0) == 0 else (y.reshape(-1), own)
        total = torch.zeros(self.n_seeds, dtype=torch.float64)
        for start in range(0, n, self.batch_size):
            rows_x, rows_y = idx_x[:, start : start + self.batch_size], idx_y[:, start : start + self.batch_size]
            b = rows_x.shape[1]
            xb = flat_x.index_select(0, rows_x.reshape(-1)).view(self.n_seeds, b, -1)
            yb = flat_y.index_select(0, rows_y.reshape(-1)).view(self.n_seeds, b)
            loss, _ = self.train_step(xb, yb, with_loss=losses)
            if losses:
                total += loss.double() * xb.shape[1]
        self._sync_counters()
        self._seed_steps = [(self.stack.step, self.stack.counter)] * self.n_seeds
        return total / n if losses else None

    def _brevitas_epoch(self, x: Tensor, y: Tensor, orders: list[Tensor]) -> Tensor:
        from ib_brevitas.experiments.engine_check import brevitas_epoch

        losses = [brevitas_epoch(m, opt, xs[o], ys[o], self.batch_size)
                  for m, opt, xs, ys, o in zip(self.models, self._optimizers, x, y, orders)]
        self.stack.step = int(self._optimizers[0].state[self.models[0].fc1.weight]["step"])
        self.stack.counter = self._counter_of(self.models[0])
        return torch.tensor(losses, dtype=torch.float64)

    def _check_lockstep(self) -> None:
        if len(set(self._seed_steps)) > 1:
            raise ValueError("the seeds of one batch stand at different steps (Adam step, Brevitas counter): "
                             f"{self._seed_steps}; batch only seeds resumed from the same epoch")

    def _check_data(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        if x.dim() < 2 or x.shape[0] != self.n_seeds or y.shape != x.shape[:2]:
            raise ValueError(f"training data must be (S={self.n_seeds}, n, ...) inputs and (S, n) labels, "
                             f"got {tuple(x.shape)} and {tuple(y.shape)}")
        return x.float().reshape(self.n_seeds, x.shape[1], -1), y.long()

    # -- evaluation and codes -----------------------------------------------------------

    def _forward(self, xs: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Eval-mode outputs and codes of every seed on xs (S, N, inputs)."""
        st = self.stack
        with torch.no_grad(), torch.jit.optimized_execution(False):
            outs, codes, _, _ = kernels.FORWARD(xs, st.weights, st.biases, self.relu, False, st.running, False, 0.0,
                                                self.consts)
        return outs, codes

    def _shared(self, x: Tensor) -> Tensor:
        """A probe batch (N, ...) shared by every seed, as (S, N, inputs) without a copy."""
        return x.float().reshape(x.shape[0], -1).unsqueeze(0).expand(self.n_seeds, -1, -1)

    def probs(self, x: Tensor) -> Tensor:
        """Eval-mode probabilities (S, N, classes) of each seed's own inputs x (S, N, ...)."""
        if x.dim() < 2 or x.shape[0] != self.n_seeds:
            raise ValueError(f"probs takes each seed's inputs (S={self.n_seeds}, N, ...), got {tuple(x.shape)}")
        return self._forward(x.float().reshape(self.n_seeds, x.shape[1], -1))[0][-1]

    def evaluate(self, splits: dict[str, tuple[Tensor, Tensor]]) -> list[dict[str, float]]:
        """Per seed {f"{split}_loss", f"{split}_acc"} for splits {name: (x (S, n, ...), y (S, n))}."""
        out: list[dict[str, float]] = [{} for _ in range(self.n_seeds)]
        for split, (x, y) in splits.items():
            x, y = self._check_data(x, y)
            self._metrics(split, self.probs(x), y, out)
        return out

    def _metrics(self, split: str, probs: Tensor, y: Tensor, out: list[dict[str, float]]) -> None:
        """syn_loss per seed (its own reduction order) and the accuracy, as `paper_run.evaluate` computes them."""
        losses = torch.stack([syn_loss(probs[s], y[s]) for s in range(self.n_seeds)])
        accs = (probs.argmax(dim=2) == y).float().mean(dim=1)  # exact counts, then one division per seed
        for s, (loss, acc) in enumerate(zip(losses.tolist(), accs.tolist())):
            out[s][f"{split}_loss"] = loss
            out[s][f"{split}_acc"] = acc

    def codes(self, x: Tensor) -> list[dict[str, Tensor]]:
        """Eval-mode integer codes of every seed on the probe batch x (N, ...): {"T1": (N, width), ...}.

        As QuantTensor.int() gives them (int8/uint8 up to 8 bits, int32 above).
        """
        outs, codes = self._forward(self._shared(x))
        for i, out in enumerate(outs, start=1):
            if not torch.isfinite(out.sum()) and not torch.isfinite(out).all():
                bad = [s for s in range(self.n_seeds) if not torch.isfinite(out[s]).all()]
                raise ValueError(f"layer 'T{i}': NaN or inf reached this quantized layer in seed(s) {bad}; the "
                                 "model has diverged (check the learning rate and the inputs)")
        n = self.n_layers
        dtypes = [_code_dtype(self.bits, not self.relu and i < n) for i in range(1, n + 1)]
        cast = [c.to(d) for c, d in zip(codes, dtypes)]  # one cast for all seeds; each seed gets its slice
        return [{f"T{i}": c[s] for i, c in enumerate(cast, start=1)} for s in range(self.n_seeds)]

    def codes_fn(self, s: int) -> Callable[[Tensor], dict[str, Tensor]] | None:
        """Seed `s`'s codes function for `InformationPlane(model, x, y, codes_fn=...)`.

        One batched forward serves every seed: it is cached on the input, the
        weights' version counters (any in-place change invalidates it) and the
        running maxima's values (a probe pass may restore them in place).
        None on the Brevitas fallback: the monitor's hooked pass.
        """
        if self.mode == "brevitas":
            return None

        def fn(x: Tensor) -> dict[str, Tensor]:
            st = self.stack
            key = tuple(t._version for t in st.weights + st.biases)
            c = self._codes_cache
            if c is None or c[0] != key or not all(torch.equal(a, b) for a, b in zip(c[1], st.running)):
                self._codes_cache = c = (key, [r.clone() for r in st.running], [])
            for seen, codes in c[2]:  # one entry per probe batch (the monitor may split the probe set)
                if seen is x or (seen.shape == x.shape and torch.equal(seen, x)):
                    return codes[s]
            c[2].append((x, self.codes(x)))
            return c[2][-1][1][s]

        return fn

    def scales(self, s: int) -> dict[str, float]:
        """Seed `s`'s eval-mode quantizer scales {"T1": ..., "Tn": ...}, as each act_quant.scale() gives them."""
        c = self.consts
        hidden = [float((r[s].clamp_min(c.a_min) / c.a_thr)) for r in self.stack.running] if self.relu else \
            [float(c.a_scale)] * (self.n_layers - 1)
        return {f"T{i}": v for i, v in enumerate([*hidden, float(c.p_scale)], start=1)}

    # -- the exactness check -------------------------------------------------------------

    def start(self, x: Tensor, y: Tensor, probe: Tensor | None = None) -> bool:
        """Check every seed against Brevitas on the current weights; fall back (with a warning) if any differs.

        Call once before training (after loading states on resume). Returns
        whether the batched kernels are in use.
        """
        self._checked = True
        if self.mode == "brevitas":
            return False
        try:
            self.verify(x, y, probe=probe)
            return True
        except EngineMismatch as e:
            warnings.warn(f"{e}. Training each seed through its Brevitas modules instead (same results, slower).",
                          RuntimeWarning, stacklevel=2)
            self.use_brevitas()
            return False

    def verify(self, x: Tensor, y: Tensor, probe: Tensor | None = None, seeds: Sequence[int] | None = None,
               steps: int = 2) -> None:
        """Raise EngineMismatch unless the batch equals each seed's Brevitas run bit for bit.

        From copies of the current state (nothing is changed): the eval-mode
        probabilities and codes on `probe` (default: the first seed's training
        inputs), and `steps` training steps on each seed's first batches of
        (x, y) - losses, gradients, Adam's update and moments, running maxima
        and counters - for `seeds` (default all), each against a copy of its
        Brevitas model trained by autograd and torch.optim.Adam(foreach=True).
        """
        from ib_brevitas.experiments.engine_check import compare

        problems = compare(self, *self._check_data(x, y), probe, range(self.n_seeds) if seeds is None else seeds,
                           steps)
        if problems:
            raise EngineMismatch(
                f"the seed-batched training path (S = {self.n_seeds}) does not match Brevitas bit for bit with torch "
                f"{torch.__version__} and Brevitas {__import__('brevitas').__version__}: " + "; ".join(problems))
