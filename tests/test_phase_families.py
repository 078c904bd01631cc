"""The detector and the tracker on synthetic multi-phase curves with known episodes (tests/phase_curves.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from phase_curves import EPOCHS, H_Y, N_SAMPLES, SPAN, family

from ib_brevitas.phases import (
    COMPRESSION_CONFIRMED,
    COMPRESSION_RETRACTED,
    FITTING_ENDED,
    PhaseTracker,
    detect,
)
from ib_brevitas.records import LayerMI

DROPS = {"fall_recover_fall": 1.6, "held_peak": 1.5, "slow_late_fall": 0.6}
TRIALS = 25


def _curves(kind, rel_noise, seed=0):
    rng = np.random.default_rng(seed)
    sigma = rel_noise * DROPS.get(kind, 1.0)
    return [family(kind, rng, sigma) for _ in range(TRIALS)]


@pytest.mark.parametrize("kind", sorted(DROPS))
@pytest.mark.parametrize("rel_noise", [0.0, 0.01, 0.025])  # noise sd as a share of the drop
def test_onsets_within_2_percent_and_drops_within_10_percent(kind, rel_noise):
    for x, y, truth in _curves(kind, rel_noise):
        v = detect(EPOCHS, x, y, n_samples=N_SAMPLES)
        assert v.compression is True and v.reason == "compressed"
        assert abs(v.onset_epoch - truth["onset"]) <= 0.02 * SPAN, (v.onset_epoch, truth)
        assert v.drop_bits == pytest.approx(truth["drop"], rel=0.10)
        assert v.drop_bits == pytest.approx(v.peak_i_xt - v.final_i_xt)  # one peak: the global one
        assert v.peak_i_xt == pytest.approx(x.max(), abs=6 * rel_noise * truth["drop"] + 1e-9)
        # every episode, with its onset, depth and whether it recovered
        assert len(v.episodes) == len(truth["episodes"])
        for got, (onset, depth, recovered) in zip(v.episodes, truth["episodes"]):
            assert abs(got.start_epoch - onset) <= 0.02 * SPAN
            # a closed episode's depth runs to its lowest point: noise extremes add a few smoothed sd
            assert got.depth_bits == pytest.approx(depth, rel=0.10, abs=4 * rel_noise * truth["drop"] + 1e-9)
            assert got.recovered is recovered
        assert v.onset_epoch == v.episodes[0].start_epoch  # the headline is the fall from the global peak


@pytest.mark.parametrize("rel_noise, tol", [(0.05, 0.02), (0.1, 0.05)])
def test_onsets_at_higher_noise(rel_noise, tol):
    # noise sd 1/20 of the drop: onsets within 2 % of the run for the fast falls; 1/10: within 5 %
    for kind in ("fall_recover_fall", "held_peak"):
        for x, y, truth in _curves(kind, rel_noise, seed=1):
            v = detect(EPOCHS, x, y, n_samples=N_SAMPLES)
            assert v.compression is True and abs(v.onset_epoch - truth["onset"]) <= tol * SPAN


def test_a_peak_held_from_the_first_measurement_has_its_onset_at_the_fall():
    for x, y, truth in _curves("held_peak", 0.0):
        v = detect(EPOCHS, x, y)
        assert v.peak_epoch == 0 and v.onset_epoch > 0.15 * SPAN  # not at the first measurement
        assert abs(v.onset_epoch - truth["onset"]) <= 0.01 * SPAN


def test_a_saturated_line_is_saturated_with_fitting_not_observable():
    for x, y, _ in _curves("saturated", 0.0):
        v = detect(EPOCHS, x, y, n_samples=N_SAMPLES)
        assert v.saturated and v.saturated_frac == 1.0 and v.log2_n == 12.0
        assert v.fitting is None and v.fitting_text == "not observable"
        assert v.compression is False and v.reason == "saturated" and not v.episodes
        # without the probe set's size nothing is known about saturation: plain "no"
        v = detect(EPOCHS, x, y)
        assert not v.saturated and v.fitting is False and v.reason == "no_drop"
    # injective at the start only: not saturated, but fitting is still not observable
    x = np.r_[np.full(100, 12.0), np.linspace(12.0, 11.0, 300)]
    v = detect(EPOCHS, x, np.full(400, H_Y), n_samples=N_SAMPLES)
    assert not v.saturated and v.saturated_frac == pytest.approx(101 / 400, abs=0.01) and v.fitting is None
    assert v.compression is True and abs(v.onset_epoch - EPOCHS[100]) <= 0.01 * SPAN
    # the tolerance is a threshold: 0.02 bit below log2 N is outside the default 0.01
    v = detect(EPOCHS, np.full(400, 11.98), np.full(400, H_Y), n_samples=N_SAMPLES)
    assert not v.saturated and v.fitting is False
    assert detect(EPOCHS, np.full(400, 11.98), np.full(400, H_Y), n_samples=N_SAMPLES,
                  saturation_tol_bits=0.03).saturated


@pytest.mark.parametrize("sigma", [0.0, 0.02, 0.05, 0.1, 0.2])
def test_noisy_plateaus_have_no_episode(sigma):
    rng = np.random.default_rng(2)
    for _ in range(TRIALS):
        x, y, _ = family("plateau", rng, sigma)
        v = detect(EPOCHS, x, y, n_samples=N_SAMPLES)
        assert v.compression is not True and not v.episodes


def test_n_samples_is_checked():
    with pytest.raises(ValueError, match="n_samples of layer 'T1' must be a positive integer"):
        detect([0, 1], [1.0, 1.0], [0, 0], layer="T1", n_samples=0)


# ---------------------------------------------------------------- the tracker on the same curves


def records(layer, x, y, index=0):
    return [LayerMI(layer=layer, epoch=int(e), step=None, i_xt=float(a), i_ty=float(b), h_t=float(a),
                    n_distinct=1, n_samples=N_SAMPLES, bit_width=8, width=4, layer_index=index, h_y=H_Y)
            for e, a, b in zip(EPOCHS, x, y)]


KINDS = ["fall_recover_fall", "held_peak", "saturated", "slow_late_fall", "plateau"]
# live events per layer: a fitting end and at most two compression cycles (started, confirmed, retracted;
# a noise dip on a long plateau before the real fall can cost one cycle), see docs/phases.md
LIVE_BOUND = 7
FINAL_BOUND = 3  # finish(): a retraction, the fitting end, the confirmed compression


@pytest.mark.parametrize("rel_noise", [0.0, 0.025, 0.1])
def test_tracker_bounded_events_and_final_events_equal_detect(rel_noise):
    for kind in KINDS:
        for k, (x, y, _) in enumerate(_curves(kind, rel_noise, seed=3)[:8]):
            tracker = PhaseTracker()
            for r in records("T", x, y):
                tracker.update([r])
            live = list(tracker.events)
            final = tracker.finish()
            assert tracker.finish() == []  # once per series: no duplicate final events
            assert all(e.provisional for e in live) and not any(e.provisional for e in final)
            assert len(live) <= LIVE_BOUND and len(final) <= FINAL_BOUND, (kind, [e.kind for e in live])
            v = detect(EPOCHS, x, y, n_samples=N_SAMPLES)
            assert tracker.verdicts()["T"] == v
            # the final events are the offline verdict's: its fitting end and its onset, nothing else
            want = ([(FITTING_ENDED, v.fit_end_epoch)] if v.fitting else []) + (
                [(COMPRESSION_CONFIRMED, v.onset_epoch)] if v.compression else [])
            assert [(e.kind, e.epoch) for e in final if e.kind != COMPRESSION_RETRACTED] == want
            assert all(e.detected_epoch == EPOCHS[-1] for e in final)
            # nothing after the final verdict contradicts it: the last compression event agrees
            comp = [e.kind for e in tracker.events if e.kind != FITTING_ENDED]
            assert (comp[-1] == COMPRESSION_CONFIRMED) == (v.compression is True) if comp else not v.compression
            if kind in ("saturated", "plateau"):
                assert not comp


def test_dwell_and_hysteresis_bound_the_flapping():
    """A fall to right at the threshold with noise: one start at most, and without dwell and
    hysteresis the same series flaps (so the bound is the tracker's doing)."""
    rng = np.random.default_rng(7)
    x = np.r_[np.full(100, 6.0), np.full(300, 5.9)] + rng.normal(0, 0.02, 400)
    y = np.full(400, 0.8)

    def kinds(**th):
        tracker = PhaseTracker(noise_k=0, **th)
        for r in records("T", x, y):
            tracker.update([r])
        return [e.kind for e in tracker.events]

    assert len(kinds()) <= 2
    assert kinds(release_frac=1.0, min_dwell=1).count(COMPRESSION_RETRACTED) >= 3


def test_state_dict_round_trips_through_json_and_resumes_exactly():
    x, y, _ = _curves("fall_recover_fall", 0.025, seed=4)[0]
    recs = records("T", x, y)
    whole = PhaseTracker(min_dwell=2)
    for r in recs:
        whole.update([r])
    half = PhaseTracker(min_dwell=2)
    for r in recs[:173]:
        half.update([r])
    state = json.loads(json.dumps(half.state_dict(), allow_nan=False))
    resumed = PhaseTracker()
    resumed.load_state_dict(state)
    assert resumed.thresholds == whole.thresholds
    for r in recs[173:]:
        resumed.update([r])
    assert resumed.events == whole.events and resumed.verdicts() == whole.verdicts()
    assert resumed.finish() == whole.finish()
    with pytest.raises(ValueError, match="not a PhaseTracker state"):
        PhaseTracker().load_state_dict({"version": 99})
    del state["layers"]["T"]["i_ty"]
    with pytest.raises(ValueError, match="not a valid PhaseTracker state.*i_ty.*from_records"):
        PhaseTracker().load_state_dict(state)
