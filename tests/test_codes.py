"""Packed code stores: exact round trip, same distinct-row structure, real memory savings."""

import numpy as np
import pytest
import torch

from ib_brevitas import functional as F
from ib_brevitas.codes import PackedCodes, container_bits


def _codes(bits: int, signed: bool, shape, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if signed and bits == 1:
        return torch.randint(0, 2, shape, generator=g) * 2 - 1  # bipolar {-1, +1}
    lo, hi = (-(1 << (bits - 1)), 1 << (bits - 1)) if signed else (0, 1 << bits)
    return torch.randint(lo, hi, shape, generator=g)


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 8, 12, 16])
@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("width", [1, 7, 33])
def test_round_trip_and_entropy(bits, signed, width):
    n = 300
    codes = _codes(bits, signed, (n, width), seed=bits * 100 + width)
    codes[150:] = codes[:150]  # duplicates
    store = PackedCodes("L", n, width, bits, signed)
    for start in range(0, n, 64):  # batches of uneven size
        store.append(codes[start : start + 64])
    assert np.array_equal(store.unpack(), codes.numpy())
    assert F.entropy(store.rows) == pytest.approx(F.entropy(codes.numpy()), abs=1e-12)


def test_bytes_per_sample_follow_bit_width():
    assert container_bits(1) == 1 and container_bits(3) == 4 and container_bits(9) == 16
    one_bit = PackedCodes("L", 10_000, 57_600, 1, True)  # a cnv_1w1a conv layer
    assert one_bit.nbytes == 10_000 * 57_600 // 8
    two_bit = PackedCodes("L", 100, 64, 2, True)
    assert two_bit.rows.shape == (100, 16)


def test_codes_outside_declared_range_are_refused():
    store = PackedCodes("fc1", 4, 3, 2, True)
    with pytest.raises(ValueError, match="fc1.*outside the 2-bit signed range"):
        store.append(torch.tensor([[0, 1, 2], [0, 0, 0], [1, 1, 1], [0, 0, 0]]))
    bipolar = PackedCodes("act", 2, 2, 1, True)
    with pytest.raises(ValueError, match="act"):
        bipolar.append(torch.tensor([[0, 1], [1, 1]]))


def test_shape_changes_are_refused():
    store = PackedCodes("L", 4, 3, 8, False)
    store.append(torch.zeros(2, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="units per sample"):
        store.append(torch.zeros(2, 4, dtype=torch.uint8))


def test_unpack_a_slice():
    codes = _codes(3, True, (50, 5), seed=9)
    store = PackedCodes("L", 50, 5, 3, True)
    store.append(codes)
    assert np.array_equal(store.unpack(10, 20), codes[10:20].numpy())


@pytest.mark.parametrize("bit_width, signed, bad", [
    (8, False, [300, 44]),  # 300 would wrap onto 44 in a uint8 container
    (8, False, [-1, 5]),
    (8, True, [200, 1]),  # 200 + 128 wraps onto 72 in uint8
    (8, True, [-129, 0]),
    (2, False, [256, 0]),  # 256 -> 0 in uint8, inside the 2-bit range
    (4, True, [8, 0]),
    (12, False, [4096, 0]),
])
def test_out_of_range_codes_are_refused_before_packing(bit_width, signed, bad):
    store = PackedCodes("T5", 2, 1, bit_width, signed)
    with pytest.raises(ValueError, match=f"layer 'T5': integer codes fall outside the {bit_width}-bit"):
        store.append(torch.tensor(bad).reshape(2, 1))
    assert store.filled == 0
