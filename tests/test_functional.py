"""The exact MI core against brute-force counting with Python dicts."""

import math
import zlib
from collections import Counter

import numpy as np
import pytest
import torch

from ib_brevitas import functional as F


def brute_entropy(rows) -> float:
    counts = Counter(tuple(np.asarray(r).ravel().tolist()) for r in rows)
    n = sum(counts.values())
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def brute_joint(a, b) -> float:
    return brute_entropy([tuple(np.ravel(x).tolist()) + tuple(np.ravel(y).tolist()) for x, y in zip(a, b)])


def random_codes(rng, n, shape, dtype, n_prototypes):
    """Codes with many duplicates: n rows drawn from a few random prototypes."""
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    lo, hi = (0, 2) if info is None else (max(info.min, -1000), min(info.max, 1000))
    protos = rng.integers(lo, hi, size=(n_prototypes, *shape)).astype(dtype)
    return protos[rng.integers(0, n_prototypes, size=n)]


CASES = [
    (np.int8, (10,)),
    (np.uint8, (3, 4)),
    (np.int16, (40,)),  # 80 bytes: the fingerprint path
    (np.int32, (7,)),  # 28 bytes, not a multiple of 8
    (np.int64, (1,)),
    (np.bool_, (100,)),
    (np.uint8, ()),  # one value per sample
]


@pytest.mark.parametrize("dtype,shape", CASES)
@pytest.mark.parametrize("n_prototypes", [1, 5, 300])
def test_entropy_and_mi_equal_brute_force(dtype, shape, n_prototypes):
    # a stable seed per case (the built-in hash() of a str is salted per process)
    rng = np.random.default_rng(zlib.crc32(repr((np.dtype(dtype).str, shape, n_prototypes)).encode()))
    codes = random_codes(rng, 500, shape, dtype, n_prototypes)
    labels = rng.integers(0, 3, size=500)
    assert F.entropy(codes) == pytest.approx(brute_entropy(codes), abs=1e-12)
    h_ty = brute_joint(codes, labels)
    assert F.joint_entropy(codes, labels) == pytest.approx(h_ty, abs=1e-12)
    expected_mi = brute_entropy(codes) + brute_entropy(labels) - h_ty
    assert F.mutual_information(codes, labels) == pytest.approx(expected_mi, abs=1e-12)
    assert F.conditional_entropy(codes, labels) == pytest.approx(h_ty - brute_entropy(labels), abs=1e-12)
    point = F.information_plane_point(codes, labels)
    assert point.n_distinct == len({tuple(np.ravel(r).tolist()) for r in codes})
    assert point.n_samples == 500


@pytest.mark.parametrize("row_bytes", [1, 7, 8, 9])
@pytest.mark.parametrize("n_labels", [1, 2, 300, 500])
def test_plane_point_equals_brute_force_for_every_label_count(row_bytes, n_labels):
    """Rows and label ids sharing one 64-bit sort key, or not; dense or sorted pair counts."""
    rng = np.random.default_rng(row_bytes * 1000 + n_labels)
    codes = random_codes(rng, 500, (row_bytes,), np.uint8, 300)
    labels = rng.permutation(500) % n_labels
    point = F.information_plane_point(codes, labels)
    h_t, h_y, h_ty = brute_entropy(codes), brute_entropy(labels), brute_joint(codes, labels)
    assert point.h_t == pytest.approx(h_t, abs=1e-12)
    assert point.h_y == pytest.approx(h_y, abs=1e-12)
    assert point.i_ty == pytest.approx(h_t + h_y - h_ty, abs=1e-12)
    assert F.joint_entropy(codes, labels) == pytest.approx(h_ty, abs=1e-12)


def test_matches_np_unique_on_wide_codes():
    rng = np.random.default_rng(3)
    codes = rng.integers(-128, 128, size=(2000, 1024), dtype=np.int8)
    codes[1000:] = codes[rng.integers(0, 1000, size=1000)]  # half duplicates
    _, counts = np.unique(codes, axis=0, return_counts=True)
    assert F.entropy(codes) == pytest.approx(F.entropy_from_counts(counts), abs=1e-12)


def test_invariant_under_permutation_and_relabelling():
    rng = np.random.default_rng(4)
    codes = random_codes(rng, 800, (6,), np.int8, 40)
    labels = rng.integers(0, 4, size=800)
    perm = rng.permutation(800)
    relabel = rng.permutation(256).astype(np.int64)  # a bijection of code values
    recoded = relabel[codes.astype(np.int64) + 128]
    for c, y in [(codes[perm], labels[perm]), (recoded, labels), (codes, (labels + 7) * 3)]:
        assert F.entropy(c) == pytest.approx(F.entropy(codes), abs=1e-12)
        assert F.mutual_information(c, y) == pytest.approx(F.mutual_information(codes, labels), abs=1e-12)


def test_bounds():
    rng = np.random.default_rng(5)
    for k in (1, 10, 1000):
        codes = random_codes(rng, 1000, (3,), np.int16, k)
        labels = rng.integers(0, 2, size=1000)
        p = F.information_plane_point(codes, labels)
        assert 0.0 <= p.h_t <= math.log2(1000) + 1e-12
        assert 0.0 <= p.i_ty <= min(p.h_t, p.h_y) + 1e-12
    distinct = np.arange(1024)
    assert F.entropy(distinct) == pytest.approx(10.0, abs=1e-12)
    assert F.entropy(np.zeros((7, 3), dtype=np.int8)) == 0.0
    # T = Y exactly: I(T;Y) = H(Y)
    y = rng.integers(0, 5, size=300)
    assert F.mutual_information(y, y) == pytest.approx(F.entropy(y), abs=1e-12)


def test_torch_input_equals_numpy():
    rng = np.random.default_rng(6)
    codes = random_codes(rng, 300, (9,), np.int8, 20)
    labels = rng.integers(0, 2, size=300)
    assert F.mutual_information(torch.from_numpy(codes), torch.from_numpy(labels)) == F.mutual_information(codes, labels)


def test_fingerprint_collisions_are_caught():
    """Zero keys make every wide row collide; the exact fallback must still count right."""
    rng = np.random.default_rng(7)
    codes = random_codes(rng, 400, (40,), np.int8, 37)
    _, counts = F.unique_rows(codes, _keys=np.zeros(8, dtype=np.uint64))
    assert F.entropy_from_counts(counts) == pytest.approx(brute_entropy(codes), abs=1e-12)
    assert len(counts) == len({tuple(r.tolist()) for r in codes})


def test_errors_say_what_to_do():
    with pytest.raises(TypeError, match="integer"):
        F.entropy(np.zeros((4, 2), dtype=np.float32))
    with pytest.raises(TypeError, match="integer"):
        F.entropy(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="NaN"):
        F.entropy(np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match="empty"):
        F.entropy(np.zeros((0, 3), dtype=np.int8))
    with pytest.raises(ValueError, match="one label per sample"):
        F.mutual_information(np.zeros((5, 2), dtype=np.int8), np.zeros(4, dtype=np.int64))
    with pytest.raises(TypeError, match="labels must be an integer"):
        F.mutual_information(np.zeros((5, 2), dtype=np.int8), np.zeros(5))
