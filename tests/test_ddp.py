"""torch.distributed: two gloo ranks measure exactly what one process measures.

Each rank holds the full probe set and probes only its slice; rank zero gathers
the packed codes and counts. The reference is a single-process
InformationPlane on the same weights; records are compared field for field.
"""

from __future__ import annotations

import json
import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ib_brevitas import distributed
from ib_brevitas.monitor import InformationPlane
from ib_brevitas.rundir import RunDir

HERE = Path(__file__).parent
N_PROBE = 301  # odd: the ranks' slices differ in size (151 + 150)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _digits():
    from ib_brevitas.experiments.data import digits_as_mnist

    x, y = digits_as_mnist()
    return torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y)


def _tfc():
    from brevitas_examples.bnn_pynq.models import model_with_cfg

    return model_with_cfg("tfc_2w2a", pretrained=False)[0]


def _probe():
    x, y = _digits()
    return x[:N_PROBE], y[:N_PROBE]


def _trained_tfc(path: Path) -> None:
    """A TFC-2W2A after a few Adam steps (codes far from the initial ones), saved for every rank."""
    torch.manual_seed(0)
    model = _tfc()
    x, y = _digits()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for s in range(0, 640, 64):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x[s : s + 64]), y[s : s + 64]).backward()
        opt.step()
    torch.save(model.state_dict(), path)


def _model(weights: Path):
    model = _tfc()
    model.load_state_dict(torch.load(weights))
    return model


def exact_codes_fn(model, names, seen):
    """A codes_fn that is exact by construction (the hooked pass on its batch); logs the batch sizes it gets."""
    from ib_brevitas import probe
    from ib_brevitas.layers import select_layers

    modules = select_layers(model, names)

    def fn(batch):
        seen.append(len(batch))
        stores = probe.hooked_codes(model, modules, batch, len(batch), torch.device("cpu"))
        return {name: torch.from_numpy(s.unpack()) for name, s in stores.items()}

    return fn


def measure_twice(plane: InformationPlane, seen: list) -> tuple[list, list, list]:
    """Pass 1: hooked + codes_fn checked; pass 2 (async): codes_fn alone (verify_every=2)."""
    first = plane.measure(0)
    seen.clear()
    second = plane.measure_async(1, step=7).result()
    plane.flush()
    return first, second, list(seen)


def _worker(rank: int, world: int, port: int, weights: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    result: dict = {"rank": rank, "world": distributed.rank_and_world()}
    try:
        model = _model(Path(weights))
        x, y = _probe()
        seen: list = []
        plane = InformationPlane(model, x, y, batch_size=64, verify_every=2)
        plane.codes_fn = exact_codes_fn(model, plane.layer_names, seen)
        plane.record_to(Path(out) / "run", phases=True)
        result["first"], result["second"], result["seen"] = measure_twice(plane, seen)
        result["verdicts"] = sorted(plane.finish_phases())
        result["codes"] = plane.collect_codes()  # row order matters here (every record is injective)
        plane.close()
        result["history"] = len(plane.history)
        # Then a probe set that differs on rank 1 (same samples, another order): every rank must refuse.
        if rank == 1:
            x, y = x.flip(0), y.flip(0)
        try:
            InformationPlane(model, x, y).measure(0)
        except ValueError as e:
            result["mismatch"] = str(e)
    except Exception as e:  # noqa: BLE001 - reported to the test
        result["error"] = f"{type(e).__name__}: {e}"
    finally:
        dist.destroy_process_group()
    with open(Path(out) / f"rank{rank}.pkl", "wb") as f:
        pickle.dump(result, f)


def _spawn(tmp_path: Path) -> list[dict]:
    weights = tmp_path / "weights.pt"
    _trained_tfc(weights)
    mp.spawn(_worker, args=(2, _free_port(), str(weights), str(tmp_path)), nprocs=2, join=True)
    return [pickle.loads((tmp_path / f"rank{r}.pkl").read_bytes()) for r in range(2)]


def test_slice_bounds_cover_the_probe_set_once():
    for n in (2, 3, 7, 301, 1024):
        for world in (1, 2, 3, 8):
            if n < world:
                continue
            bounds = [distributed.slice_bounds(n, r, world) for r in range(world)]
            assert bounds[0][0] == 0 and bounds[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
            sizes = [b - a for a, b in bounds]
            assert max(sizes) - min(sizes) <= 1
    assert distributed.share(10) is None  # no process group: the monitor probes everything itself
    with pytest.raises(ValueError, match="rank 2 is outside"):
        distributed.slice_bounds(10, 2, 2)


def test_share_follows_the_process_group(monkeypatch):
    monkeypatch.setattr(distributed, "rank_and_world", lambda: (1, 4))
    assert distributed.share(10) == distributed.Share(rank=1, world=4, start=3, stop=6, n=10)
    with pytest.raises(ValueError, match="the probe set has 3 samples for 4 processes"):
        distributed.share(3)
    monkeypatch.setattr(distributed, "rank_and_world", lambda: (0, 1))
    assert distributed.share(3) is None


def test_two_gloo_ranks_give_the_single_process_records(tmp_path):
    ranks = _spawn(tmp_path)
    assert [r.get("error") for r in ranks] == [None, None]
    assert [r["world"] for r in ranks] == [(0, 2), (1, 2)]
    # The reference: one process, the same weights, the same probe set, no codes_fn.
    single = InformationPlane(_model(tmp_path / "weights.pt"), *_probe(), batch_size=64)
    want_first, want_second = single.measure(0), single.measure(1, step=7)
    zero, one = ranks
    assert zero["first"] == want_first and zero["second"] == want_second  # dataclass ==: every field
    assert all(r.n_samples == N_PROBE for r in want_first)
    # TFC-2W2A's 64-wide layers give every probe sample its own code, so the records alone would not see
    # rows put back in the wrong order: the gathered codes must equal the single process's, row for row.
    want_codes = single.collect_codes()
    assert list(zero["codes"]) == list(want_codes) and one["codes"] == {}
    for name, codes in want_codes.items():
        assert np.array_equal(zero["codes"][name], codes), name
    # The codes_fn pass ran over this rank's slice only (151 + 150 samples, batches of 64).
    assert zero["seen"] == [64, 64, 23] and one["seen"] == [64, 64, 22]
    # Other ranks: empty records, empty history; only rank zero wrote the run directory.
    assert one["first"] == [] and one["second"] == [] and one["history"] == 0 and one["verdicts"] == []
    assert zero["history"] == 2 * len(want_first) and zero["verdicts"] == sorted(single.layer_names)
    assert RunDir(tmp_path / "run").read_records() == want_first + want_second
    # Ranks holding different probe sets: a clear error on every rank, none left waiting in a collective.
    for r in ranks:
        assert r.get("mismatch", "").startswith("ranks [1] hold another probe set than rank 0"), r


def test_lightning_ddp_strategy_measures_once_on_rank_zero(tmp_path):
    """strategy="ddp" on 2 CPU processes with the callback: one record per layer and epoch, from rank zero."""
    pytest.importorskip("lightning")
    sys.path.insert(0, str(HERE))
    import lightning_tfc as lit
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(HERE / "lightning_tfc.py"), "ddp", str(tmp_path), "2"],
                          env=env, capture_output=True, text=True, timeout=200)
    assert done.returncode == 0, done.stderr[-3000:]
    rd = RunDir(tmp_path / "lit" / "version_0")
    records = rd.read_records()
    x, y = lit.probe_set()
    names = InformationPlane(lit.LitTFC(), x, y).layer_names
    assert [(r.epoch, r.layer) for r in records] == [(e, n) for e in range(3) for n in names]
    # Epoch 0: the fresh module's weights; epoch 2: the weights DDP left (the callback's checkpoints/last.pt).
    assert records[: len(names)] == InformationPlane(lit.LitTFC(), x, y).measure(0, step=0)
    model = lit.LitTFC()
    model.load_state_dict(rd.load_checkpoint()["model"])
    assert records[-len(names):] == InformationPlane(model, x, y).measure(2, step=records[-1].step)
    assert json.loads(rd.config_path.read_text())["model"]["factory"] == "lightning_tfc:LitTFC"
