"""Synthetic multi-phase I(X;T) / I(T;Y) curves with known episodes, shared by the phase tests."""

from __future__ import annotations

import numpy as np

N = 400  # measurements (epochs 0, 5, ..., 1995)
EPOCHS = np.arange(N) * 5.0
SPAN = EPOCHS[-1]
LOG2_N, N_SAMPLES, H_Y = 12.0, 4096, 1.0


def _ramp(t0: float, t1: float) -> np.ndarray:
    """0 before t0, rising linearly to 1 at t1, 1 after."""
    return np.clip((EPOCHS - t0) / (t1 - t0), 0, 1)


def family(kind: str, rng: np.random.Generator, sigma: float):
    """(x, y, truth) of one curve; truth: onset (epoch), drop (bits), episodes [(onset, depth, recovered)].

    fall_recover_fall: rise to 6 bits by 10-20 %, fall 1.2 bit from 25-35 % (over 10 %), recover 0.6
      bit, fall 1.0 bit again from 60-70 %: two episodes, the first recovered; drop 1.6.
    held_peak: at its peak (8 bits) from the first measurement, falls 1.5 bit from 20-40 % (over 30 %).
    saturated: at log2 N = 12 bits all run (a few collisions: up to 0.004 bit below), I(T;Y) = H(Y).
    slow_late_fall: rise to 6 bits by 10 %, flat, then a slow linear fall of 0.6 bit over the last 25-30 %.
    plateau: rise to 6 bits by 10-25 %, then flat: no episode.
    Gaussian noise of sd `sigma` on I(X;T) (sigma / 5 on I(T;Y)), none on the saturated line.
    """
    u = rng.uniform
    y = 0.9 * _ramp(0, u(0.10, 0.20) * SPAN)
    if kind == "fall_recover_fall":
        t_up, t_a, t_b = u(0.10, 0.20) * SPAN, u(0.25, 0.35) * SPAN, u(0.60, 0.70) * SPAN
        y = 0.9 * _ramp(0, t_up)
        x = 6 * _ramp(0, t_up) - 1.2 * _ramp(t_a, t_a + 0.1 * SPAN) + 0.6 * _ramp(t_a + 0.15 * SPAN, t_a + 0.2 * SPAN)
        x = x - 1.0 * _ramp(t_b, t_b + 0.1 * SPAN)
        truth = dict(onset=t_a, drop=1.6, episodes=[(t_a, 1.2, True), (t_b, 1.0, False)])
    elif kind == "held_peak":
        t_a = u(0.20, 0.40) * SPAN
        x = 8 - 1.5 * _ramp(t_a, t_a + 0.3 * SPAN)
        truth = dict(onset=t_a, drop=1.5, episodes=[(t_a, 1.5, False)])
    elif kind == "saturated":
        x = LOG2_N - 0.004 * (rng.random(N) < 0.2)  # occasional collisions, never above log2 N
        y = np.full(N, H_Y)
        return x, y, dict(onset=None, drop=0.0, episodes=[])
    elif kind == "slow_late_fall":
        t_a = u(0.70, 0.75) * SPAN
        x = 6 * _ramp(0, 0.1 * SPAN) - 0.6 * _ramp(t_a, SPAN)
        truth = dict(onset=t_a, drop=0.6, episodes=[(t_a, 0.6, False)])
    else:
        assert kind == "plateau"
        x = 6 * _ramp(0, u(0.10, 0.25) * SPAN)
        truth = dict(onset=None, drop=0.0, episodes=[])
    return x + rng.normal(0, sigma, N), y + rng.normal(0, sigma / 5, N), truth
