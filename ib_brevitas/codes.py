"""Integer codes of one layer over the probe set, packed at their bit width.

A b-bit layer costs b bits per unit and sample (rounded up to 1, 2, 4 or 8 bits
per unit below a byte), so a probe pass over a large binarized network fits in
memory. Packing is injective per row, so the packed rows are themselves an
integer code array with the same distinct-row structure: the MI kernel counts
them directly, and `unpack` recovers the codes exactly.
"""

from __future__ import annotations

import numpy as np
import torch

_CONTAINER_DTYPES = {8: torch.uint8, 16: torch.int16, 32: torch.int32}


def container_bits(bit_width: int) -> int:
    """Bits stored per unit: the smallest of 1, 2, 4, 8, 16, 32 holding `bit_width`."""
    for c in (1, 2, 4, 8, 16, 32):
        if bit_width <= c:
            return c
    raise ValueError(f"bit width {bit_width} exceeds 32 bits; measure a narrower quantizer")


class PackedCodes:
    """Preallocated (N, bytes) store for one layer, filled batch by batch.

    `bit_width` and `signed` describe the codes as Brevitas reports them
    (`QuantTensor.bit_width`, `.signed`). Signed codes are offset by 2^(b-1)
    before packing; signed 1-bit (bipolar) codes {-1, +1} map to {0, 1}.
    """

    def __init__(self, layer: str, n_samples: int, width: int, bit_width: int, signed: bool):
        self.layer = layer
        self.n_samples = n_samples
        self.width = width
        self.bit_width = bit_width
        self.signed = signed
        self.bits = container_bits(bit_width)
        self.per_byte = 8 // self.bits if self.bits < 8 else 1
        padded = -(-width // self.per_byte) * self.per_byte
        self._pad = padded - width
        nbytes = padded // self.per_byte if self.bits < 8 else width * self.bits // 8
        self.rows = np.zeros((n_samples, nbytes), dtype=np.uint8)
        self.filled = 0

    @property
    def nbytes(self) -> int:
        return self.rows.nbytes

    def _unsigned(self, codes: torch.Tensor) -> torch.Tensor:
        """Map codes onto 0 .. 2^b - 1, refusing anything outside the declared range.

        The range is checked on the codes as given, before any cast (a cast to
        the uint8 container would wrap 300 onto 44). Up to 8 bits the mapping
        then works in uint8: c -> c + 2^(b-1) mod 256 sends the in-range signed
        codes to 0 .. 2^b - 1.
        """
        b = self.bit_width
        if codes.dtype == torch.bool:
            codes = codes.to(torch.uint8)
        if self.signed and b == 1:
            ok = bool((codes.abs() == 1).all())
            u = (codes > 0).to(torch.uint8)
        else:
            lo, hi = (-(1 << (b - 1)), (1 << (b - 1)) - 1) if self.signed else (0, (1 << b) - 1)
            if codes.numel():
                mn, mx = torch.aminmax(codes)
                ok = lo <= int(mn) and int(mx) <= hi
            else:
                ok = True
            if b <= 8:
                u = codes.to(torch.uint8)
                if self.signed:
                    u = u + (1 << (b - 1))  # wraps mod 256
            else:
                u = codes.to(torch.int64) - lo
        if not ok:
            raise ValueError(
                f"layer {self.layer!r}: integer codes fall outside the {b}-bit "
                f"{'signed' if self.signed else 'unsigned'} range Brevitas reports; "
                "the quantizer's bit width and its codes disagree, so MI cannot be exact."
            )
        return u

    def append(self, codes: torch.Tensor) -> None:
        """Add a batch of integer codes of shape (B, ...) (as from QuantTensor.int())."""
        batch = codes.shape[0]
        flat = codes.reshape(batch, -1)
        if flat.shape[1] != self.width:
            raise ValueError(
                f"layer {self.layer!r}: a batch has {flat.shape[1]} units per sample, "
                f"earlier batches had {self.width}; the probe inputs must all have one shape."
            )
        if self.filled + batch > self.n_samples:
            raise ValueError(f"layer {self.layer!r}: more samples than the probe set holds")
        u = self._unsigned(flat)
        if self.bits < 8:
            if self._pad:
                u = torch.nn.functional.pad(u, (0, self._pad))
            u = u.reshape(batch, -1, self.per_byte)
            packed = u[:, :, 0].clone()
            for k in range(1, self.per_byte):
                packed |= u[:, :, k] << (self.bits * k)
        elif self.bits == 8:
            packed = u
        else:
            packed = u.to(_CONTAINER_DTYPES[self.bits])
        view = packed.contiguous().cpu().numpy().view(np.uint8).reshape(batch, -1)
        self.rows[self.filled : self.filled + batch] = view
        self.filled += batch

    def unpack(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Codes of samples start..stop-1 exactly as Brevitas gave them: (n, width) int64."""
        stop = self.filled if stop is None else min(stop, self.filled)
        rows = self.rows[start:stop]
        if self.bits < 8:
            shifts = np.arange(self.per_byte, dtype=np.uint8) * self.bits
            mask = np.uint8((1 << self.bits) - 1)
            u = ((rows[:, :, None] >> shifts) & mask).reshape(rows.shape[0], -1)[:, : self.width]
            u = u.astype(np.int64)
        else:
            dt = {8: np.uint8, 16: np.int16, 32: np.int32}[self.bits]
            u = rows.view(dt).astype(np.int64)
            if self.bits == 16:  # stored from int16: undo the sign of the container
                u = u & 0xFFFF
            elif self.bits == 32:
                u = u & 0xFFFFFFFF
        if self.signed and self.bit_width == 1:
            return u * 2 - 1
        return u - ((1 << (self.bit_width - 1)) if self.signed else 0)
