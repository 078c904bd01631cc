"""The plugin's tensors through TensorBoard's data provider, as arrays: one numpy call per series.

`provider.read_tensors` builds one `TensorDatum` and one numpy array per value
(`tensor_util.make_ndarray`): for a 50-seed sweep that is 50,000 calls, most
of the time of a first read. With the Rust data server (`--load_fast=true`,
a `GrpcDataProvider`) this module sends the same `ReadTensors` request over
the provider's own channel and decodes each series in one go: the steps and
wall times as two arrays, and the values, when they share one dtype and shape
(every v2 measurement of a layout does), as one array of shape (n, ...) from
their joined bytes. A value that does not fit (another dtype or shape, no
`tensor_content`) is decoded alone, as `read_tensors` would, and left to the
decoder to judge. Any other provider (the Python loader), or a data server
that answers unexpectedly, goes through the public `read_tensors`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np


@dataclass
class Series:
    """One tag's values as read: steps, wall times, and the values (a stacked array or a list)."""

    steps: np.ndarray  # int64 (n,)
    walls: np.ndarray  # float64 (n,)
    values: Any  # np.ndarray of shape (n, ...) or a list of n arrays

    def __len__(self) -> int:
        return len(self.steps)

    def take(self, index: np.ndarray) -> "Series":
        values = self.values[index] if isinstance(self.values, np.ndarray) else [self.values[i] for i in index]
        return Series(self.steps[index], self.walls[index], values)

    @classmethod
    def of_datums(cls, datums: Sequence[Any]) -> "Series":
        """From `TensorDatum`-like objects (step, wall_time, numpy)."""
        return cls(np.fromiter((d.step for d in datums), np.int64, len(datums)),
                   np.fromiter((d.wall_time for d in datums), np.float64, len(datums)),
                   [d.numpy for d in datums])


def read(data_provider: Any, ctx: Any, experiment_id: str, plugin_name: str,
         runs: Sequence[str], tags: Sequence[str], downsample: int) -> dict[str, dict[str, Series]]:
    """run -> tag -> Series of these runs and tags (all values: `downsample` bounds them)."""
    fast = _read_grpc(data_provider, experiment_id, plugin_name, runs, tags, downsample)
    if fast is not None:
        return fast
    from tensorboard.data import provider

    data = data_provider.read_tensors(ctx, experiment_id=experiment_id, plugin_name=plugin_name,
                                      downsample=downsample,
                                      run_tag_filter=provider.RunTagFilter(runs=runs, tags=tags))
    return {run: {tag: Series.of_datums(d) for tag, d in by_tag.items()} for run, by_tag in data.items()}


def _read_grpc(data_provider: Any, experiment_id: str, plugin_name: str, runs: Sequence[str],
               tags: Sequence[str], downsample: int) -> dict[str, dict[str, Series]] | None:
    try:
        from tensorboard.data import grpc_provider
        from tensorboard.data.proto import data_provider_pb2
    except ImportError:  # pragma: no cover - a TensorBoard without the data server
        return None
    stub = getattr(data_provider, "_stub", None)
    if not isinstance(data_provider, grpc_provider.GrpcDataProvider) or stub is None:
        return None
    import grpc

    req = data_provider_pb2.ReadTensorsRequest()
    req.experiment_id = experiment_id
    req.plugin_filter.plugin_name = plugin_name
    req.run_tag_filter.runs.names[:] = sorted(runs)
    req.run_tag_filter.tags.names[:] = sorted(tags)
    req.downsample.num_points = downsample
    try:
        res = stub.ReadTensors(req)
    except grpc.RpcError:
        return None  # the public path raises TensorBoard's own error for it
    return {r.run_name: {t.tag_name: _series(t.data) for t in r.tags} for r in res.runs}


def _series(d: Any) -> Series:
    from tensorboard.util import tensor_util

    steps = np.asarray(d.step, dtype=np.int64)
    walls = np.asarray(d.wall_time, dtype=np.float64)
    protos = d.value
    if not len(protos):
        return Series(steps, walls, [])
    first = protos[0]
    contents = [v.tensor_content for v in protos]
    uniform = (first.tensor_content and all(len(c) == len(contents[0]) for c in contents)
               and all(v.dtype == first.dtype and v.tensor_shape == first.tensor_shape for v in protos))
    if uniform:
        try:
            head = tensor_util.make_ndarray(first)
        except (TypeError, ValueError):
            head = None
        if head is not None and head.dtype.kind in "fiub" and head.nbytes == len(contents[0]):
            flat = np.frombuffer(b"".join(contents), dtype=head.dtype)
            return Series(steps, walls, flat.reshape((len(protos), *head.shape)))
    values = []
    for v in protos:
        try:
            values.append(tensor_util.make_ndarray(v))
        except (TypeError, ValueError):
            values.append(None)  # the decoder counts it as skipped
    return Series(steps, walls, values)


def current(series: Mapping[str, Series], layer_tags: Sequence[str]) -> dict[str, Series]:
    """Drop data orphaned by a resumed run; keep the newest value per step, in step order.

    A resumed run rewrites epochs from its checkpoint on (`SummaryWriter(purge_step=...)`).
    TensorBoard's Rust loader drops the old values of a re-written tag, but not
    of tags that are not re-written (e.g. phase events), and the Python loader
    purges nothing unless the run's first writer also logged a session start.
    So: a value at step s is orphaned when some measurement at a smaller step
    was written later (training time runs forward with the epoch).
    """
    marks = [series[t] for t in layer_tags if t in series]
    steps = np.concatenate([m.steps for m in marks]) if marks else np.zeros(0, np.int64)
    walls = np.concatenate([m.walls for m in marks]) if marks else np.zeros(0, np.float64)
    order = np.lexsort((walls, steps))
    steps, newest = steps[order], np.maximum.accumulate(walls[order]) if len(order) else walls
    out = {}
    for tag, s in series.items():
        if not len(s):
            out[tag] = s
            continue
        i = np.searchsorted(steps, s.steps, side="left")  # marks[:i] have a smaller step
        orphaned = (i > 0) & (newest[np.maximum(i - 1, 0)] > s.walls) if len(steps) else np.zeros(len(s), bool)
        keep = np.flatnonzero(~orphaned)
        keep = keep[np.lexsort((s.walls[keep], s.steps[keep]))]  # stable: equal wall times keep their order
        ks = s.steps[keep]
        last = np.ones(len(keep), bool)
        last[:-1] = ks[1:] != ks[:-1]  # the newest value per step (the last written on ties)
        out[tag] = s.take(keep[last])
    return out
