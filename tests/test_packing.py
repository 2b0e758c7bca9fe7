"""Bit packing of low-bit codes and pruning masks (``snncompress.fileformat.packing``)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from snncompress.errors import FileFormatError
from snncompress.fileformat.packing import (
    MAX_BITS,
    pack_codes,
    pack_mask,
    packed_nbytes,
    unpack_codes,
    unpack_mask,
)


@st.composite
def codes_and_bits(draw) -> tuple[torch.Tensor, int]:
    bits = draw(st.integers(1, MAX_BITS))
    values = draw(st.lists(st.integers(0, (1 << bits) - 1), min_size=0, max_size=70))
    return torch.tensor(values, dtype=torch.int64), bits


@settings(max_examples=300, deadline=None)
@given(codes_and_bits())
def test_pack_unpack_is_identity_and_dense(case):
    codes, bits = case
    packed = pack_codes(codes, bits)
    assert packed.dtype == torch.uint8 and packed.dim() == 1
    assert packed.numel() == math.ceil(codes.numel() * bits / 8) == packed_nbytes(codes.numel(), bits)
    assert torch.equal(unpack_codes(packed, bits, codes.numel()), codes)


@settings(max_examples=60, deadline=None)
@given(codes_and_bits(), st.sampled_from([torch.uint8, torch.int32, torch.int16]))
def test_pack_accepts_any_integer_dtype_and_shape(case, dtype):
    codes, bits = case
    if bits > 8 and dtype == torch.uint8 or bits == 16 and dtype == torch.int16:
        return  # the codes do not fit this storage dtype
    shaped = codes.to(dtype).reshape(-1, 1) if codes.numel() else codes.to(dtype)
    assert torch.equal(unpack_codes(pack_codes(shaped, bits), bits, codes.numel()), codes)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, MAX_BITS), st.integers(1, 20), st.data())
def test_out_of_range_codes_are_rejected(bits, n, data):
    codes = torch.tensor(data.draw(st.lists(st.integers(0, (1 << bits) - 1), min_size=n, max_size=n)))
    position = data.draw(st.integers(0, n - 1))
    too_big = codes.clone()
    too_big[position] = 1 << bits
    with pytest.raises(ValueError, match=f"out of range for {bits} bits"):
        pack_codes(too_big, bits)
    negative = codes.clone()
    negative[position] = -1
    with pytest.raises(ValueError, match="out of range"):
        pack_codes(negative, bits)


@pytest.mark.parametrize("bits", [0, 17, -1])
def test_code_width_outside_1_to_16_is_rejected(bits):
    with pytest.raises(ValueError, match="bits must be in 1..16"):
        pack_codes(torch.zeros(4, dtype=torch.int64), bits)
    with pytest.raises(FileFormatError, match="unsupported code width"):
        unpack_codes(torch.zeros(4, dtype=torch.uint8), bits, 4)


def test_layout_is_little_endian_within_each_byte():
    # 2-bit codes 1, 2, 3, 0 -> 0b00_11_10_01
    assert pack_codes(torch.tensor([1, 2, 3, 0]), 2).tolist() == [0b00111001]
    # 4-bit: first code in the low nibble
    assert pack_codes(torch.tensor([0xA, 0x5, 0x3]), 4).tolist() == [0x5A, 0x03]
    # 3-bit stream: 0b101, 0b011, 0b111 -> bits 101 110 111 (LSB first) -> 0b11_011_101, 0b0000000_1
    assert pack_codes(torch.tensor([5, 3, 7]), 3).tolist() == [0b11011101, 0b00000001]
    # 12-bit: 0xABC, 0x123 -> bytes BC, 3A, 12
    assert pack_codes(torch.tensor([0xABC, 0x123]), 12).tolist() == [0xBC, 0x3A, 0x12]


@pytest.mark.parametrize("bits,count,nbytes",
                         [(1, 9, 2), (2, 5, 2), (3, 8, 3), (5, 3, 2), (16, 3, 6), (7, 0, 0)])
def test_packed_nbytes(bits, count, nbytes):
    assert packed_nbytes(count, bits) == nbytes
    assert pack_codes(torch.zeros(count, dtype=torch.int64), bits).numel() == nbytes


@pytest.mark.parametrize(
    "packed",
    [torch.zeros(3, dtype=torch.uint8), torch.zeros(5, dtype=torch.uint8), torch.zeros(4, dtype=torch.int32),
     torch.zeros(2, 2, dtype=torch.uint8)],
    ids=["short", "long", "wrong-dtype", "2-d"],
)
def test_unpack_rejects_a_buffer_of_the_wrong_size_or_type(packed):
    # 10 codes of 3 bits need exactly 4 uint8 bytes
    with pytest.raises(FileFormatError, match="expected 4 uint8 bytes for 10 codes of 3 bits"):
        unpack_codes(packed, 3, 10)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 5), min_size=1, max_size=3), st.data())
def test_mask_round_trip(shape, data):
    n = math.prod(shape)
    bits = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
    mask = torch.tensor(bits, dtype=torch.bool).reshape(shape)
    packed = pack_mask(mask)
    assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(n / 8)
    restored = unpack_mask(packed, tuple(shape))
    assert restored.dtype == torch.bool and restored.shape == mask.shape
    assert torch.equal(restored, mask)


def test_mask_packs_eight_entries_per_byte():
    mask = torch.tensor([True, False, False, False, False, False, False, True, True])
    assert pack_mask(mask).tolist() == [0b10000001, 0b00000001]
