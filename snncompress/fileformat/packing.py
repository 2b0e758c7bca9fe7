"""Dense packing of low-bit unsigned integer codes into bytes.

Codes of ``bits`` bits are packed little-endian within each byte: for 2-bit codes the first
code sits in bits 0-1 of byte 0, the second in bits 2-3, and so on. Widths that divide 8
(1, 2, 4, 8) pack whole codes per byte; other widths (3, 5, 6, 7, 9..16) are packed as a
continuous little-endian bit stream. The packed tensor is 1-D ``uint8`` of length
``ceil(n * bits / 8)``; shape and width travel in the file's metadata.
"""

from __future__ import annotations

import math

import torch

from snncompress.errors import FileFormatError

MAX_BITS = 16


def packed_nbytes(count: int, bits: int) -> int:
    """Bytes needed to hold ``count`` codes of ``bits`` bits each."""
    return math.ceil(count * bits / 8)


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack unsigned integer codes into a 1-D uint8 tensor.

    Args:
        codes: Integer tensor, any shape, every value in ``[0, 2**bits)``.
        bits: Bits per code, 1..16.

    Returns:
        A 1-D ``torch.uint8`` tensor of ``packed_nbytes(codes.numel(), bits)`` bytes.

    Raises:
        ValueError: ``bits`` out of range or a code does not fit in ``bits`` bits.
    """
    if not 1 <= bits <= MAX_BITS:
        raise ValueError(f"bits must be in 1..{MAX_BITS}, got {bits}")
    flat = codes.reshape(-1).to(torch.int64)
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= (1 << bits)):
        raise ValueError(f"codes out of range for {bits} bits: [{int(flat.min())}, {int(flat.max())}]")
    if bits == 8:
        return flat.to(torch.uint8)
    if 8 % bits == 0:
        per_byte = 8 // bits
        pad = (-flat.numel()) % per_byte
        if pad:
            flat = torch.cat([flat, flat.new_zeros(pad)])
        grouped = flat.view(-1, per_byte)
        shifts = torch.arange(per_byte, dtype=torch.int64) * bits
        return (grouped << shifts).sum(dim=1).to(torch.uint8)
    # General width: explode into bits, then regroup by 8.
    bit_idx = torch.arange(bits, dtype=torch.int64)
    bit_stream = ((flat.unsqueeze(1) >> bit_idx) & 1).reshape(-1)
    pad = (-bit_stream.numel()) % 8
    if pad:
        bit_stream = torch.cat([bit_stream, bit_stream.new_zeros(pad)])
    weights = torch.arange(8, dtype=torch.int64)
    return (bit_stream.view(-1, 8) << weights).sum(dim=1).to(torch.uint8)


def unpack_codes(packed: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """Inverse of :func:`pack_codes`: return ``count`` codes as an int64 1-D tensor.

    Raises:
        FileFormatError: the packed buffer is not the size ``count`` codes need.
    """
    if not 1 <= bits <= MAX_BITS:
        raise FileFormatError(f"unsupported code width {bits} bits")
    expected = packed_nbytes(count, bits)
    if packed.dtype != torch.uint8 or packed.dim() != 1 or packed.numel() != expected:
        raise FileFormatError(
            f"packed codes hold {packed.numel()} bytes of {packed.dtype}, expected {expected} uint8 bytes "
            f"for {count} codes of {bits} bits"
        )
    data = packed.to(torch.int64)
    if bits == 8:
        return data
    if 8 % bits == 0:
        per_byte = 8 // bits
        shifts = torch.arange(per_byte, dtype=torch.int64) * bits
        codes = (data.unsqueeze(1) >> shifts) & ((1 << bits) - 1)
        return codes.reshape(-1)[:count]
    bit_stream = ((data.unsqueeze(1) >> torch.arange(8, dtype=torch.int64)) & 1).reshape(-1)
    bit_stream = bit_stream[: count * bits].view(count, bits)
    return (bit_stream << torch.arange(bits, dtype=torch.int64)).sum(dim=1)


def pack_mask(mask: torch.Tensor) -> torch.Tensor:
    """Pack a boolean mask 8 entries per byte."""
    return pack_codes(mask.to(torch.int64), 1)


def unpack_mask(packed: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Inverse of :func:`pack_mask`."""
    count = math.prod(shape)
    return unpack_codes(packed, 1, count).view(shape).to(torch.bool)
