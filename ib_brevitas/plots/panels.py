"""What a figure shows, independent of how it is drawn: one panel per run or per group of seeds.

Series are keyed by (layer, estimator), so an exact and a binned series of
one layer are never merged or averaged together; the mean +- s.d. comes from
`ib_brevitas.seedmean.mean_sd`, the same code as the TensorBoard tab's.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

from ib_brevitas.phases import shown_events
from ib_brevitas.records import EXACT, LayerMI
from ib_brevitas.rundir import RunData, load_run
from ib_brevitas.seedmean import group_of, mean_sd
from ib_brevitas.tensorboard.wire import series_label


@dataclass
class Series:
    """One layer's trajectory in one panel: values per epoch (means and s.d. with --mean)."""

    layer: str
    label: str
    index: int
    epochs: list[int]
    i_xt: list[float]
    i_ty: list[float]
    sd_xt: list[float] = field(default_factory=list)
    sd_ty: list[float] = field(default_factory=list)
    estimator: str = EXACT

    @property
    def exact(self) -> bool:
        return self.estimator == EXACT


@dataclass
class Panel:
    title: str
    series: list[Series]
    log2_n: float | None
    h_y: float | None
    events: list[dict[str, Any]]
    subtitle: str = ""


def _series(records: list[LayerMI]) -> list[Series]:
    by_key: dict[tuple[str, str], list[LayerMI]] = defaultdict(list)
    for r in records:
        by_key[(r.layer, r.estimator)].append(r)
    out = []
    for (layer, estimator), rs in by_key.items():
        rs.sort(key=lambda r: r.epoch)
        out.append(Series(layer, series_label(rs[0].layer_index, estimator), rs[0].layer_index,
                          [r.epoch for r in rs], [r.i_xt for r in rs], [r.i_ty for r in rs], estimator=estimator))
    return sorted(out, key=lambda s: (s.index, s.layer, s.estimator))


def mean_series(runs: list[list[LayerMI]]) -> list[Series]:
    """Average runs per (layer, estimator) and epoch, over the runs that measured it; spread = s.d."""
    first: dict[tuple[str, str], LayerMI] = {}
    per_run = []
    for records in runs:
        cols: dict[tuple[str, str], tuple[list, list, list]] = {}
        for r in records:
            first.setdefault((r.layer, r.estimator), r)
            e, x, y = cols.setdefault((r.layer, r.estimator), ([], [], []))
            e.append(r.epoch)
            x.append(r.i_xt)
            y.append(r.i_ty)
        per_run.append(cols)
    out = []
    for key, m in mean_sd(per_run).items():
        r = first[key]
        out.append(Series(r.layer, series_label(r.layer_index, r.estimator), r.layer_index, m.epoch.tolist(),
                          m.i_xt.tolist(), m.i_ty.tolist(), m.sd_xt.tolist(), m.sd_ty.tolist(), r.estimator))
    return sorted(out, key=lambda s: (s.index, s.layer, s.estimator))


def _bounds(records: list[LayerMI]) -> tuple[float | None, float | None]:
    if not records:
        return None, None
    return max(r.log2_n for r in records), max(r.h_y for r in records)


def describe(config: dict[str, Any] | None) -> str:
    """A title's second half from config.json: 'SYN, tanh, 8-bit, seed 0, 8000 epochs'."""
    if not config:
        return ""
    parts = []
    if config.get("dataset"):
        parts.append(str(config["dataset"]).upper())
    if config.get("net") and config.get("net") != config.get("dataset"):
        parts.append(str(config["net"]))
    if config.get("activation"):
        parts.append(str(config["activation"]))
    if config.get("bits"):
        parts.append(f"{config['bits']}-bit")
    if config.get("seed") is not None:
        parts.append(f"seed {config['seed']}")
    if config.get("epochs"):
        parts.append(f"{config['epochs']} epochs")
    return ", ".join(parts)


def load_runs(run_dirs: Sequence[str | Path | RunData], estimators: Sequence[str] | None = None) -> list[RunData]:
    """The runs (directories, or `RunData` already loaded), each cut to the series of `estimators`
    (labels such as "exact" or "binning-uniform-30-global"; None: all). A run holding none of them
    is an error that lists the labels it has, as `ib-brevitas phases --estimator` does."""
    if not run_dirs:
        raise ValueError("give at least one run directory")
    runs = [load_run(d) for d in run_dirs]
    if estimators is None:
        return runs
    wanted, out = set(estimators), []
    for run in runs:
        kept = [r for r in run.records if r.estimator in wanted]
        if not kept:
            have = sorted({r.estimator for r in run.records})
            raise ValueError(f"{run.path}: no records of --estimator {' '.join(estimators)} (it has "
                             f"{', '.join(have)}); pass --estimator with one of those")
        out.append(replace(run, records=kept))
    return out


def _one_estimate(panel: Panel) -> Panel:
    """A panel of one binning estimator's series only: plain T1..Tn labels, the estimator in the subtitle
    (said once, not after every layer); a panel that mixes estimators keeps the labelled names."""
    estimators = {s.estimator for s in panel.series}
    if len(estimators) != 1 or EXACT in estimators:
        return panel
    for s in panel.series:
        s.label = series_label(s.index, EXACT)
    est = estimators.pop()
    panel.subtitle = "\n".join(x for x in (panel.subtitle, f"{est}: an estimate, not exact MI") if x)
    return panel


def panels_for(run_dirs: Sequence[str | Path], mean: bool = False, runs: list[RunData] | None = None) -> list[Panel]:
    """What `plot_runs` draws: one panel per run, or per group of seeds with `mean`."""
    loaded = runs if runs is not None else load_runs(run_dirs)
    if not mean:
        return [_one_estimate(Panel(run.name, _series(run.records), *_bounds(run.records),
                                    [e.to_dict() for e in shown_events(run.events)], describe(run.config)))
                for run in loaded]
    groups: dict[str, list[RunData]] = defaultdict(list)
    for run in loaded:
        groups[group_of(run.name)].append(run)
    panels = []
    for name, members in groups.items():
        every = [r for m in members for r in m.records]
        n = len(members)
        config = {k: v for k, v in (members[0].config or {}).items() if k != "seed"}
        sub = ", ".join(x for x in (describe(config), f"mean \u00b1 s.d. of {n} run{'s' if n > 1 else ''}") if x)
        panels.append(_one_estimate(Panel(name, mean_series([m.records for m in members]), *_bounds(every), [], sub)))
    return panels
