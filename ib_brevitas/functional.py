"""Exact entropies and mutual information of integer codes, in bits.

Pure functions: they see integer arrays, never models. A code array has shape
(N, ...) - one row per probe sample, flattened per sample - and any integer
or bool dtype, as numpy array or torch tensor. Two samples carry the same code
when their rows are equal element for element; entropies are those of the
empirical distribution of rows with X uniform over the N samples, so

    I(X;T) = H(T)                    (T is a deterministic function of X)
    I(T;Y) = H(T) + H(Y) - H(T,Y)

Nothing is binned and nothing is estimated: the only primitive is counting
distinct rows (`unique_rows`), which is exact.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

# Fixed odd 64-bit multipliers for the row fingerprint. Fixed so results and
# timings are reproducible; exactness never depends on them (see unique_rows).
_KEYS = np.random.default_rng(0x1B_B3E7).integers(0, 2**63, size=4096, dtype=np.uint64) * np.uint64(2) + np.uint64(1)


class PlanePoint(NamedTuple):
    """Everything a measurement needs from one layer's codes, from one count."""

    h_t: float  # H(T) = I(X;T)
    i_ty: float  # I(T;Y)
    h_y: float  # H(Y)
    n_distinct: int
    n_samples: int


def as_code_rows(codes: Any, name: str = "codes") -> np.ndarray:
    """Return `codes` as a C-contiguous 2-D integer array (N, width).

    Raises TypeError for non-integer input and ValueError for empty or NaN
    input, with a message that says what to pass instead.
    """
    if hasattr(codes, "detach") and hasattr(codes, "cpu"):  # torch.Tensor, without importing torch
        codes = codes.detach().cpu().numpy()
    arr = np.asarray(codes)
    if arr.dtype.kind == "f" or arr.dtype.kind == "c":
        if np.isnan(arr).any():
            raise ValueError(
                f"{name} contain NaN: a NaN reached the quantized layer. "
                "Check the inputs and the training (e.g. the learning rate) before measuring."
            )
        raise TypeError(
            f"{name} must be an integer array, got dtype {arr.dtype}. Pass integer codes "
            "(e.g. QuantTensor.int()); exact MI is defined on integers, floats are never binned."
        )
    if arr.dtype.kind not in "iub":
        raise TypeError(f"{name} must be an integer array, got dtype {arr.dtype}.")
    if arr.ndim == 0:
        raise ValueError(f"{name} must have shape (N, ...) with one row per sample, got a scalar.")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} are empty (N = 0): the probe set must hold at least one sample.")
    if arr.dtype.kind == "b":
        arr = arr.astype(np.uint8)
    return np.ascontiguousarray(arr.reshape(arr.shape[0], -1))


def _byte_rows(rows: np.ndarray) -> np.ndarray:
    """(N, width) integers -> (N, bytes) uint8; equal rows <=> equal byte rows."""
    n = rows.shape[0]
    return rows.view(np.uint8).reshape(n, -1)


def _narrow_keys(rows: np.ndarray) -> np.ndarray:
    """(N, b) uint8 rows with b <= 8 -> (N,) uint64: each row's bytes as one integer (a bijection)."""
    n, nbytes = rows.shape
    keys = np.zeros(n, dtype=np.uint64)
    keys.view(np.uint8).reshape(n, 8)[:, :nbytes] = rows
    return keys


def _run_lengths(sorted_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(new, counts) of a sorted array: `new[i]` marks the first element of each run of equal keys."""
    n = sorted_keys.shape[0]
    new = np.empty(n, dtype=bool)
    new[0] = True
    np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=new[1:])
    bounds = np.flatnonzero(np.append(new, True))  # run starts, then n
    return new, bounds[1:] - bounds[:-1]


def _group(sorted_keys: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse ids and counts from keys sorted by `order` (equal key = same group)."""
    new, counts = _run_lengths(sorted_keys)
    inverse = np.empty(sorted_keys.shape[0], dtype=np.int64)
    inverse[order] = np.cumsum(new) - 1
    return inverse, counts


def unique_rows(codes: Any, *, _keys: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact grouping of equal rows: (inverse, counts).

    `inverse[i]` is the group id of row i (ids 0..K-1, K distinct rows, in the
    order of their sort keys) and `counts[k]` the number of rows in group k.
    Rows of at most 8 bytes are grouped by their bytes directly. Wider rows
    are grouped by a 64-bit multilinear fingerprint and every row is then
    compared byte for byte with one row of its group; if a fingerprint
    collision is found, the function falls back to sorting the raw bytes. The
    result is therefore exact whatever the fingerprint does; the fingerprint
    only makes it fast.
    """
    rows = _byte_rows(as_code_rows(codes))
    n, nbytes = rows.shape
    if nbytes <= 8:
        keys = _narrow_keys(rows)
        order = np.argsort(keys)
        return _group(keys[order], order)

    words = -(-nbytes // 8)
    if nbytes % 8:
        padded = np.zeros((n, words * 8), dtype=np.uint8)
        padded[:, :nbytes] = rows
        rows = padded
    w64 = rows.view(np.uint64)
    keys_src = _KEYS if _keys is None else _keys
    if keys_src.shape[0] < words:
        keys_src = np.resize(keys_src, words)
    fingerprint = w64 @ keys_src[:words]
    order = np.argsort(fingerprint)
    inverse, counts = _group(fingerprint[order], order)

    # Verify: every row equals the first sorted row of its group, byte for byte.
    starts = np.cumsum(counts) - counts
    first_of_group = order[starts]
    members = np.flatnonzero(first_of_group[inverse] != np.arange(n))
    if members.size:
        same = (w64[members] == w64[first_of_group[inverse[members]]]).all(axis=1)
        if not same.all():  # fingerprint collision: exact fallback
            void = np.ascontiguousarray(rows).view(np.dtype((np.void, rows.shape[1]))).ravel()
            _, inverse, counts = np.unique(void, return_inverse=True, return_counts=True)
            return inverse.astype(np.int64).ravel(), counts
    return inverse, counts


def _pair_counts(ids_a: np.ndarray, k_a: int, ids_b: np.ndarray, k_b: int) -> np.ndarray:
    """Counts of the distinct pairs (a, b) of group ids (a < k_a, b < k_b)."""
    joint = ids_a * k_b + ids_b
    if k_a * k_b <= 4 * joint.shape[0] + 1024:  # a dense table is cheaper than a sort
        counts = np.bincount(joint)
        return counts[counts > 0]
    return np.unique(joint, return_counts=True)[1]


def _plane_counts(rows: np.ndarray, y_ids: np.ndarray, k_y: int) -> tuple[np.ndarray, np.ndarray]:
    """Counts of the distinct rows T and of the distinct pairs (T, Y), from (N, b) byte rows.

    When a row and its label id fit one 64-bit key, one sort of (row, label)
    keys gives both: runs of equal keys are the (T, Y) groups, runs of equal
    keys without the label bits the T groups.
    """
    label_bits = (k_y - 1).bit_length()
    if 8 * rows.shape[1] + label_bits <= 64:
        shift = np.uint64(label_bits)
        joint = (_narrow_keys(rows) << shift) | y_ids.astype(np.uint64)
        joint.sort()
        return _run_lengths(joint >> shift)[1], _run_lengths(joint)[1]
    t_ids, t_counts = unique_rows(rows)
    return t_counts, _pair_counts(t_ids, t_counts.shape[0], y_ids, k_y)


def entropy_from_counts(counts: np.ndarray) -> float:
    """Shannon entropy in bits of the distribution given by positive counts.

    H = log2 n - sum_k c_k log2 c_k / n: codes seen once add nothing to the
    sum, so a probe set whose codes are mostly distinct costs little. The
    result lies in [0, log2 n] exactly (a single code gives 0).
    """
    counts = np.asarray(counts)
    if counts.shape[0] <= 1:
        return 0.0
    n = float(counts.sum())
    repeated = counts[counts > 1].astype(np.float64)
    h = np.log2(n) - float(np.dot(repeated, np.log2(repeated))) / n
    return float(min(max(h, 0.0), np.log2(n)))


def _check_same_n(a: np.ndarray, b: np.ndarray, a_name: str, b_name: str) -> None:
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"{b_name} have {b.shape[0]} rows but {a_name} have {a.shape[0]}: "
            f"pass exactly one {b_name[:-1] if b_name.endswith('s') else b_name} per sample, in the same order."
        )


def entropy(codes: Any) -> float:
    """H(T) in bits of the rows of `codes` (equals I(X;T) for X uniform on the samples)."""
    return entropy_from_counts(unique_rows(codes)[1])


def joint_entropy(a: Any, b: Any) -> float:
    """H(A, B) in bits: entropy of the rows of `a` and `b` side by side."""
    ra, rb = as_code_rows(a, "a"), as_code_rows(b, "b")
    _check_same_n(ra, rb, "a", "b")
    (ids_a, counts_a), (ids_b, counts_b) = unique_rows(ra), unique_rows(rb)
    return entropy_from_counts(_pair_counts(ids_a, counts_a.shape[0], ids_b, counts_b.shape[0]))


def conditional_entropy(codes: Any, labels: Any) -> float:
    """H(T | Y) = H(T, Y) - H(Y) in bits."""
    return joint_entropy(codes, labels) - entropy(labels)


def mutual_information(codes: Any, labels: Any) -> float:
    """I(T; Y) = H(T) + H(Y) - H(T, Y) in bits."""
    return information_plane_point(codes, labels).i_ty


def information_plane_point(
    codes: Any, labels: Any, *, label_groups: tuple[np.ndarray, np.ndarray] | None = None
) -> PlanePoint:
    """H(T), I(T;Y), H(Y) and the distinct-code count, sharing one grouping of the codes.

    `label_groups` may pass `unique_rows(labels)` computed once for many layers.
    """
    rows = as_code_rows(codes, "codes")
    lab = as_code_rows(labels, "labels")
    _check_same_n(rows, lab, "codes", "labels")
    y_ids, y_counts = unique_rows(lab) if label_groups is None else label_groups
    t_counts, ty_counts = _plane_counts(_byte_rows(rows), y_ids, y_counts.shape[0])
    h_t = entropy_from_counts(t_counts)
    h_y = entropy_from_counts(y_counts)
    i_ty = h_t + h_y - entropy_from_counts(ty_counts)
    # Rounding can leave -1e-16 or exceed H(T) by an ulp; the true value is in [0, min(H(T), H(Y))].
    i_ty = float(min(max(i_ty, 0.0), h_t, h_y))
    return PlanePoint(h_t, i_ty, h_y, int(t_counts.shape[0]), int(rows.shape[0]))
