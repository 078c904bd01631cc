"""Counting binned rows: H(T), H(T,Y) of bin indices, exactly, cheaper than a general code row.

Bin indices differ from exact codes in what is known before counting: every
column's used index range (the bins of its smallest and largest value). Each
row is read as one mixed-radix number over those ranges (a bijection, so the
distinct rows and their counts are those of the rows themselves), and the
number plus its label is counted by the cheapest exact means its size allows:
a dense table (`np.bincount`), a 32-bit or a 64-bit sort (torch's CPU radix
sort). Rows too wide for 64 bits are renamed to dense ids over their leading
64 bits (`dense_ids`, one sort); a row alone there is alone in T and (T, Y),
so only the rows that share an id are counted on with their other columns
(`row_counts`). No hash is involved. `ib_brevitas.functional` remains the
home of exact counting of code rows and of the entropies; this module is the
binning estimators' counterpart, for bin indices whose ranges are known.
"""

from __future__ import annotations

import numpy as np

from ib_brevitas.functional import PlanePoint, _run_lengths, entropy_from_counts

_FLOAT_EXACT = 2.0**53  # float64 holds every integer below this exactly
_GROUP_SPACE = 1 << 40  # one column group's number space: a row id (< 2^24) times it still fits 64 bits


def dense_ids(keys: np.ndarray) -> tuple[np.ndarray, int]:
    """(ids, D): equal keys <=> equal ids, ids 0..D-1 in key order (one sort, `_sort`)."""
    values, order = _sort(np.ascontiguousarray(keys, dtype=np.uint64))
    new = np.empty(values.shape[0], dtype=np.int64)
    new[0] = 0
    np.not_equal(values[1:], values[:-1], out=new[1:])
    ids = np.empty_like(new)
    ids[order] = np.cumsum(new)
    return ids, int(new.sum()) + 1


def _column_groups(bases: np.ndarray, offsets: np.ndarray) -> list[tuple[int, int]]:
    """Consecutive column ranges whose numbers (first column least significant) fit `_GROUP_SPACE`,
    and whose un-offset sums (codes, not codes - offsets) stay exact in float64."""
    groups, start, space, off = [], 0, 1, 0
    for j, (b, lo) in enumerate(zip(bases.tolist(), offsets.tolist())):
        if j > start and (space * b > _GROUP_SPACE or off + lo * space + space * b > _FLOAT_EXACT):
            groups.append((start, j))
            start, space, off = j, 1, 0
        off += lo * space
        space *= b
    groups.append((start, bases.shape[0]))
    return groups


def key_layout(cmin: np.ndarray, cmax: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """How rows with column ranges cmin..cmax become numbers: (weights (w, G), offsets (G,), spaces).

    Column group g's number is `codes @ weights[:, g] - offsets[g]`, < spaces[g]
    (mixed radix over the used ranges, first column least significant), exact
    in float64; `row_counts` counts rows so given.
    """
    cmin = np.asarray(cmin, dtype=np.int64).reshape(-1)
    bases = np.asarray(cmax, dtype=np.int64).reshape(-1) - cmin + 1
    groups = _column_groups(bases, cmin) if bases.shape[0] else [(0, 0)]
    weights = np.zeros((bases.shape[0], len(groups)))
    offsets, spaces = np.zeros(len(groups)), []
    for g, (a, b) in enumerate(groups):
        mult = np.cumprod(np.concatenate(([1], bases[a:b - 1]))).astype(np.float64)[: b - a]
        weights[a:b, g] = mult
        offsets[g] = float(np.dot(cmin[a:b].astype(np.float64), mult))
        spaces.append(int(np.prod(bases[a:b], dtype=object)))
    return weights, offsets, spaces


def row_counts(parts: list[np.ndarray], spaces: list[int], y_ids: np.ndarray,
               k_y: int) -> tuple[np.ndarray, np.ndarray]:
    """Counts of the distinct rows T and (T, Y) pairs of rows given as column groups' numbers.

    `parts[g]` (N,) is group g's number (< spaces[g]) of every row. When a row
    and its label fit one 64-bit key, `key_counts` counts it. Otherwise the
    leading groups that fit 64 bits are renamed to dense ids (one sort): a row
    alone in its id group is alone in T and in (T, Y) whatever its other
    columns hold, so only the rows that share their id with others go on, with
    the id as their first group.
    """
    n = parts[0].shape[0]
    label_bits = (k_y - 1).bit_length()
    key, space, g = parts[0], spaces[0], 1
    while g < len(parts) and (space * spaces[g]) << label_bits <= 1 << 64:
        key = np.asarray(key, dtype=np.uint64) * np.uint64(spaces[g]) + np.asarray(parts[g], dtype=np.uint64)
        space *= spaces[g]
        g += 1
    if g == len(parts):
        return key_counts(key, space, y_ids, k_y)
    while g < len(parts) and space * spaces[g] <= 1 << 64:  # the label no longer fits: the rows alone
        key = np.asarray(key, dtype=np.uint64) * np.uint64(spaces[g]) + np.asarray(parts[g], dtype=np.uint64)
        space *= spaces[g]
        g += 1
    ids, d = dense_ids(key)
    shared = np.bincount(ids, minlength=d)[ids] > 1
    rows = np.flatnonzero(shared)
    alone = np.ones(n - rows.shape[0], dtype=np.int64)
    if rows.shape[0] == 0:
        return alone, alone
    rest = [ids[rows]] + [np.asarray(p)[rows] for p in parts[g:]]
    t, ty = row_counts(rest, [d] + spaces[g:], y_ids[rows], k_y)
    return np.concatenate([alone, t]), np.concatenate([alone, ty])


def key_counts(keys: np.ndarray, space: int, y_ids: np.ndarray, k_y: int) -> tuple[np.ndarray, np.ndarray]:
    """Counts of the distinct keys T and of the distinct (T, Y) pairs; keys < space, label ids < k_y."""
    n = keys.shape[0]
    if space * k_y <= 4 * n + 4096:  # a dense table beats a sort
        ty = np.bincount(np.asarray(keys, dtype=np.intp) * k_y + y_ids, minlength=space * k_y)
        t = ty.reshape(space, k_y).sum(axis=1)
        return t[t > 0], ty[ty > 0]
    label_bits = (k_y - 1).bit_length()
    if space << label_bits > 1 << 64:
        keys, space = dense_ids(keys)
    dtype = np.uint32 if space << label_bits <= 1 << 32 else np.uint64
    shift = dtype(label_bits)
    joint = (np.asarray(keys, dtype=dtype) << shift) | y_ids.astype(dtype)
    joint = _sort(joint)[0]
    return _run_lengths(joint >> shift)[1], _run_lengths(joint)[1]


def _sort(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(keys sorted so that equal keys are adjacent, the permutation): torch's CPU sort, ~3x numpy's.

    uint32/uint64 keys are sorted as the signed integers of the same width:
    the order differs from the unsigned one, but equal keys - and keys with
    equal high bits - are still adjacent, which is all run lengths need.
    """
    import torch  # here, so that importing the binning estimators stays light

    signed = np.int32 if keys.dtype == np.uint32 else np.int64
    values, order = torch.sort(torch.from_numpy(keys.view(signed)))
    return values.numpy().view(keys.dtype), order.numpy()


def plane_point(codes: np.ndarray, cmin: np.ndarray, cmax: np.ndarray, y_ids: np.ndarray,
                y_counts: np.ndarray) -> PlanePoint:
    """H(T) (= I(X;T)), I(T;Y), H(Y) and the distinct-row count of binned rows, as `functional` defines them.

    codes: (N, w) non-negative integer-valued bin indices; cmin, cmax: each
    column's smallest and largest index (or bounds of them).
    """
    weights, offsets, spaces = key_layout(cmin, cmax)
    return parts_point(np.asarray(codes, dtype=np.float64) @ weights, offsets, spaces, y_ids, y_counts)


def parts_point(parts: np.ndarray, offsets: np.ndarray, spaces: list[int], y_ids: np.ndarray,
                y_counts: np.ndarray) -> PlanePoint:
    """`plane_point` from the rows' column-group products `codes @ weights` (N, G) of `key_layout`."""
    t_counts, ty_counts = row_counts([parts[:, g] - offsets[g] for g in range(len(spaces))], spaces, y_ids,
                                     y_counts.shape[0])
    h_t = entropy_from_counts(t_counts)
    h_y = entropy_from_counts(y_counts)
    i_ty = float(min(max(h_t + h_y - entropy_from_counts(ty_counts), 0.0), h_t, h_y))
    return PlanePoint(h_t, i_ty, h_y, int(t_counts.shape[0]), int(parts.shape[0]))
