"""A quantized tensor as stored: unsigned integer codes, small parameters and its scheme."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from snncompress.errors import FileFormatError


@dataclass(frozen=True)
class EncodedTensor:
    """Integer codes of a quantized tensor plus what is needed to decode them.

    Attributes:
        codes: Unsigned integer codes in ``[0, 2**bits)``, same shape as the original tensor;
            ``torch.uint8`` when ``bits <= 8``, else ``torch.int32``.
        bits: Bits per code as stored (ternary: 2).
        params: Small decode parameters, e.g. ``{"scale": fp32}`` or ``{"exponent": int32}``.
        scheme: JSON-able scheme description; ``WeightScheme.from_dict(scheme)`` rebuilds the
            scheme that decodes these codes.

    Raises:
        FileFormatError: the codes' dtype or range does not fit ``bits`` (a corrupted file).
    """

    codes: torch.Tensor
    bits: int
    params: dict[str, torch.Tensor]
    scheme: dict[str, Any]

    def __post_init__(self) -> None:
        if not 1 <= self.bits <= 31:
            raise FileFormatError(f"encoded tensor has {self.bits} bits per code; expected 1..31")
        expected = torch.uint8 if self.bits <= 8 else torch.int32
        if self.codes.dtype != expected:
            raise FileFormatError(
                f"encoded tensor with {self.bits}-bit codes must hold {expected}, got {self.codes.dtype}"
            )
        if self.codes.numel():
            low, high = int(self.codes.min()), int(self.codes.max())
            if low < 0 or high >= 1 << self.bits:
                raise FileFormatError(
                    f"codes span [{low}, {high}], outside [0, {1 << self.bits}) for {self.bits} bits"
                )

    @property
    def shape(self) -> torch.Size:
        """Shape of the original tensor."""
        return self.codes.shape

    @property
    def code_storage_bits(self) -> int:
        """Bits taken by the codes when packed densely: ``numel * bits``."""
        return self.codes.numel() * self.bits

    @property
    def param_storage_bits(self) -> int:
        """Bits taken by the decode parameters at their stored dtypes."""
        return sum(p.numel() * p.element_size() * 8 for p in self.params.values())


def code_dtype(bits: int) -> torch.dtype:
    """The dtype codes of ``bits`` bits are kept in: uint8 up to 8 bits, else int32."""
    return torch.uint8 if bits <= 8 else torch.int32
