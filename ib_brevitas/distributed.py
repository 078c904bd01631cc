"""One probe pass shared by the ranks of a `torch.distributed` process group.

Every rank holds the same full probe set (as one process would); under an
initialised process group each rank runs the probe pass over its own
contiguous slice (`share`), and `gather_stores` brings the packed code rows to
rank zero. Packing is per row, so the slices laid end to end in rank order are
exactly the single process's store: rank zero counts the very records one
process would. Other ranks get `{}` (their `measure` returns `[]`); labels are
not sent, every rank has them all.

The collectives run on the caller's thread (the probe pass, never the
background counting thread), so they keep their order against the training
loop's own collectives. Objects travel with `all_gather_object` /
`gather_object`: gloo on CPU; with NCCL set the rank's CUDA device first (as
DDP and Lightning do).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from ib_brevitas.codes import PackedCodes

# Probe rows hashed per rank to check that all ranks hold the same probe set.
_FINGERPRINT_ROWS = 64


@dataclass(frozen=True)
class Share:
    """This rank's part of a probe set of `n` samples: rows start..stop-1."""

    rank: int
    world: int
    start: int
    stop: int
    n: int


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of the default process group; (0, 1) outside one."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return 0, 1
    return torch.distributed.get_rank(), torch.distributed.get_world_size()


def is_rank_zero() -> bool:
    return rank_and_world()[0] == 0


def slice_bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    """Contiguous near-equal slices: the first n % world ranks get one row more."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is outside a world of {world} processes")
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


def share(n: int) -> Share | None:
    """This rank's slice of an n-sample probe set; None outside a process group (or with one rank)."""
    rank, world = rank_and_world()
    if world == 1:
        return None
    if n < world:
        raise ValueError(
            f"the probe set has {n} samples for {world} processes; give every rank at least one probe sample"
        )
    return Share(rank, world, *slice_bounds(n, rank, world), n)


def fingerprint(inputs: torch.Tensor, labels: np.ndarray) -> str:
    """A cheap hash of a probe set: shapes, every label, and up to 64 evenly spaced input rows."""
    h = hashlib.sha1(repr((tuple(inputs.shape), str(inputs.dtype), labels.shape)).encode())
    h.update(np.ascontiguousarray(labels).tobytes())
    rows = torch.linspace(0, inputs.shape[0] - 1, min(_FINGERPRINT_ROWS, inputs.shape[0])).long()
    h.update(inputs[rows].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def gather_stores(local: Callable[[], dict[str, PackedCodes]], part: Share, names: list[str],
                  probe_id: str) -> dict[str, PackedCodes]:
    """Run `local()` (this rank's slice) and gather every rank's rows on rank zero.

    Every rank first learns whether all ranks hold the same probe set
    (`probe_id`) and whether any slice failed, and raises if so: no rank is
    left waiting in a collective the others skipped. Returns the full stores on
    rank zero, `{}` elsewhere.
    """
    error = None
    try:
        stores = local()
    except (ValueError, TypeError, RuntimeError) as e:
        stores, error = {}, e
    layout = {name: (s.width, s.bit_width, s.signed) for name, s in stores.items()}
    meta = [None] * part.world
    torch.distributed.all_gather_object(meta, (probe_id, layout, None if error is None else f"{type(error).__name__}: {error}"))
    if error is not None:
        raise error
    failed = [(rank, m[2]) for rank, m in enumerate(meta) if m[2] is not None]
    if failed:
        raise RuntimeError(f"rank {failed[0][0]} failed its slice of the probe pass ({failed[0][1]})")
    if any(m[0] != probe_id for m in meta):
        ranks = [rank for rank, m in enumerate(meta) if m[0] != meta[0][0]]
        raise ValueError(
            f"ranks {ranks} hold another probe set than rank 0; build InformationPlane(model, x, y) with the "
            "same full probe set (same samples, same order) on every rank"
        )
    if any(m[1] != layout for m in meta):
        raise ValueError("the ranks' models give different layer widths or bit widths; build the same model on every rank")
    received: list[Any] | None = [None] * part.world if part.rank == 0 else None
    torch.distributed.gather_object({name: s.rows for name, s in stores.items()}, received, dst=0)
    if received is None:
        return {}
    full = {}
    for name in names:
        store = full[name] = PackedCodes(name, part.n, *layout[name])
        for rank, rows in enumerate(received):
            start, stop = slice_bounds(part.n, rank, part.world)
            if rows[name].shape != store.rows[start:stop].shape:
                raise ValueError(f"layer {name!r}: rank {rank} sent {rows[name].shape[0]} code rows for {stop - start} samples")
            store.rows[start:stop] = rows[name]
        store.filled = part.n
    return full
