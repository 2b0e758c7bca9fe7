"""Signed fixed-point Q(m.n) quantization (tinySNN §2.3), for weights and neuron parameters.

Q(m.n) has one sign bit, ``m`` integer bits and ``n`` fractional bits: ``1 + m + n`` bits in all
(two's complement). Its values are ``k * 2**-n`` for integers

    k in [-2**(m+n), 2**(m+n) - 1],   so   x_q in [-2**m, 2**m - 2**-n].

Quantization: ``k = clip(R(x * 2**n), -2**(m+n), 2**(m+n) - 1)`` with ``R`` the rounding scheme
(``nearest``, ``truncate`` or ``stochastic``, see :mod:`snncompress.quant.rounding`); values
outside the range saturate. tinySNN picks ``m`` from the observed range of a parameter
(:func:`integer_bits_for_range`) and ``n`` by a sweep. Totals are capped at 24 bits so that every
value is exact in float32.
"""

from __future__ import annotations

import math
import re

import torch

from snncompress.errors import ConfigError
from snncompress.quant.rounding import Rounding, round_to_grid, seeded_generator

MAX_FIXED_BITS = 24
_FORMAT = re.compile(r"^(?:fixed|q)(-?\d+)\.(-?\d+)$")


def check_fixed_format(integer_bits: int, fractional_bits: int) -> None:
    """Raise ConfigError unless Q(m.n) is representable here (m, n >= 0, 2 <= 1+m+n <= 24)."""
    m, n = integer_bits, fractional_bits
    if m < 0 or n < 0:
        raise ConfigError(f"fixed{m}.{n}: integer and fractional bits must be >= 0, e.g. fixed3.5")
    if not 2 <= 1 + m + n <= MAX_FIXED_BITS:
        raise ConfigError(
            f"fixed{m}.{n}: 1 sign + {m} integer + {n} fractional bits = {1 + m + n} bits; "
            f"use 2 to {MAX_FIXED_BITS} bits in all, e.g. fixed3.5"
        )


def parse_fixed_format(text: str) -> tuple[int, int]:
    """Parse ``"fixed<m>.<n>"`` (or ``"Q<m>.<n>"``) into ``(m, n)``.

    Raises:
        ConfigError: not of that form, or an impossible format.
    """
    match = _FORMAT.match(text.strip().lower())
    if match is None:
        raise ConfigError(
            f"{text!r} is not a fixed-point format; write fixed<m>.<n> with m integer and n fractional "
            "bits (one sign bit added), e.g. fixed3.5"
        )
    m, n = int(match.group(1)), int(match.group(2))
    check_fixed_format(m, n)
    return m, n


def fixed_point_integers(
    x: torch.Tensor,
    integer_bits: int,
    fractional_bits: int,
    rounding: Rounding = "nearest",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The integers ``k`` of ``x`` in Q(m.n): ``clip(R(x * 2**n), -2**(m+n), 2**(m+n) - 1)``, int32.

    A ``stochastic`` call without a generator uses one seeded with 0.
    """
    check_fixed_format(integer_bits, fractional_bits)
    if rounding == "stochastic" and generator is None:
        generator = seeded_generator(0, x.device)
    limit = 1 << (integer_bits + fractional_bits)
    scaled = torch.ldexp(x.detach().to(torch.float32), torch.tensor(fractional_bits, dtype=torch.int32))
    k = round_to_grid(scaled, rounding, generator).clamp_(-limit, limit - 1)
    return k.to(torch.int32)


def quantize_fixed(
    x: torch.Tensor | float,
    integer_bits: int,
    fractional_bits: int,
    rounding: Rounding = "nearest",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Quantize ``x`` to signed Q(m.n) and return the values (float32).

    ``x_q = 2**-n * clip(R(x * 2**n), -2**(m+n), 2**(m+n) - 1)`` (tinySNN §2.3). Used for weights
    and for neuron parameters (threshold, beta) alike.

    Args:
        x: Tensor or Python number.
        integer_bits: m, integer bits besides the sign bit (>= 0).
        fractional_bits: n, fractional bits (>= 0).
        rounding: ``"nearest"`` (ties to even), ``"truncate"`` (floor) or ``"stochastic"``.
        generator: Draws for stochastic rounding; ``None`` means a generator seeded with 0.

    Returns:
        Float32 tensor of representable values, same shape as ``x``.

    Raises:
        ConfigError: m or n negative, or more than 24 bits in all.
    """
    x = torch.as_tensor(x, dtype=torch.float32)
    k = fixed_point_integers(x, integer_bits, fractional_bits, rounding, generator)
    return torch.ldexp(k.to(torch.float32), torch.tensor(-fractional_bits, dtype=torch.int32))


def integer_bits_for_range(max_abs: float, fractional_bits: int = 0) -> int:
    """Smallest m >= 0 such that Q(m.n) holds ``[-max_abs, max_abs]`` without saturating.

    That is the smallest m with ``max_abs <= 2**m - 2**-n`` (tinySNN: integer bits from the observed
    range of the parameter).

    Raises:
        ConfigError: ``max_abs`` is negative or not finite.
    """
    if not math.isfinite(max_abs) or max_abs < 0:
        raise ConfigError(f"max_abs must be a finite number >= 0, got {max_abs}")
    m = 0
    while max_abs > 2.0**m - 2.0**-fractional_bits:
        m += 1
    return m
