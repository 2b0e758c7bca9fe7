"""Number formats named by a scheme label ("fp32", "int8", "pot4", "ternary", "fixed3.5").

The label says how a value is stored and what a multiply by it costs: a multiply by a
power-of-two (PoT) weight is a shift, a multiply by a ternary/binary weight is a sign select
(SpQuant §4.2.2; METHODS.md "Power-of-two weights"). The ops model counts those as shifts,
and the energy model costs a shift as an add of the same width.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from snncompress.errors import InputError

Family = Literal["fp", "int"]

_FLOAT = re.compile(r"^(?:fp|float)(\d+)$")
_BF16 = re.compile(r"^bf16$")
_INT = re.compile(r"^u?int(\d+)$")
_POT = re.compile(r"^pot(\d+)$")
_APOT = re.compile(r"^apot(\d+)$")
_FIXED = re.compile(r"^fixed(\d+)\.(\d+)$")
_MULT_FREE_FIXED_BITS = {"ternary": None, "binary": 1}


@dataclass(frozen=True)
class NumberFormat:
    """How a stored value is represented and what multiplying by it costs.

    Attributes:
        label: The scheme label as given ("pot4").
        family: "fp" for floating point, "int" for every integer/fixed-point/PoT code.
        bits: Stored bit width.
        shifts_per_mult: Shifts that replace one multiply by this value (0: a real multiply).
        adds_per_mult: Extra adds that come with those shifts (APoT: two shifts, one add).
    """

    label: str
    family: Family
    bits: int
    shifts_per_mult: int = 0
    adds_per_mult: int = 0

    @property
    def multiply_free(self) -> bool:
        """True when a multiply by this value is done with shifts/adds, not a multiplier."""
        return self.shifts_per_mult > 0


def parse_scheme(label: str, bits: int, what: str) -> NumberFormat:
    """Parse a scheme label and check it against the stored bit width.

    Args:
        label: "fp32", "fp16", "bf16", "int8", "uint8", "pot4", "apot4", "ternary", "binary",
            "fixed3.5" (Q3.5: 1 sign, 3 integer and 5 fractional bits, 9 in all; tinySNN §2.3, read
            as :mod:`snncompress.quant.fixed_point` reads it).
        bits: Stored bits per value.
        what: Where the label came from, for the error message ("layer fc1 weight_scheme").

    Returns:
        The parsed format.

    Raises:
        InputError: Unknown label, or a label whose width disagrees with ``bits``.
    """
    if not isinstance(bits, int) or isinstance(bits, bool) or bits < 1:
        raise InputError(f"{what}: bits must be a positive integer, got {bits!r}")
    key = label.strip().lower()
    fmt = _parse(key, bits)
    if fmt is None:
        raise InputError(
            f"{what}: unknown scheme {label!r}; use fpN, bf16, intN, uintN, potN, apotN, ternary, binary "
            "or fixedM.N"
        )
    if fmt.bits != bits:
        raise InputError(f"{what}: scheme {label!r} is {fmt.bits} bits but {bits} bits are stored")
    return fmt


def _parse(key: str, bits: int) -> NumberFormat | None:
    if m := _FLOAT.match(key):
        return NumberFormat(key, "fp", int(m.group(1)))
    if _BF16.match(key):
        return NumberFormat(key, "fp", 16)
    if m := _INT.match(key):
        return NumberFormat(key, "int", int(m.group(1)))
    if m := _POT.match(key):
        return NumberFormat(key, "int", int(m.group(1)), shifts_per_mult=1)
    if m := _APOT.match(key):
        # An APoT level is a sum of two powers of two: x*w = (x << a) + (x << b).
        return NumberFormat(key, "int", int(m.group(1)), shifts_per_mult=2, adds_per_mult=1)
    if m := _FIXED.match(key):
        # One sign bit plus m integer and n fractional bits, as the quantizer stores it.
        return NumberFormat(key, "int", 1 + int(m.group(1)) + int(m.group(2)))
    if key in _MULT_FREE_FIXED_BITS:
        fixed = _MULT_FREE_FIXED_BITS[key]
        # Ternary is 1.58 bits of information; how many bits it is stored in is the caller's choice.
        return NumberFormat(key, "int", bits if fixed is None else fixed, shifts_per_mult=1)
    return None


def wider(a: NumberFormat, b: NumberFormat) -> tuple[Family, int]:
    """The arithmetic format two operands meet in: floating point if either is, at the wider width."""
    if a.family == "fp" or b.family == "fp":
        return "fp", max(x.bits for x in (a, b) if x.family == "fp")
    return "int", max(a.bits, b.bits)
