"""Integer weight levels from a quantized tensor's stored codes, read from the format's definition.

This re-reads each scheme's code layout (``snncompress.quant``'s module docstrings) with numpy integer
arithmetic, independently of the schemes' torch ``decode``: a weight is ``q * step`` with ``q`` an
integer level and ``step`` a dyadic number (a power of two, or a float32 scale times one):

=========  ==================================================  =================================
scheme     level ``q`` of a code                               step
=========  ==================================================  =================================
pot<b>     ``+-2**(E - e)`` (``e`` = exponent index, 0 = zero)  ``2**(exponent - (E - 1))``
apot<b>    table value ``* 2**k`` (the float32 level table)    ``2**(exponent - k)``
int<b>     ``code - 2**(b-1)``                                 the stored float32 scale (per channel)
fixedM.N   ``code - 2**(m+n)``                                 ``2**-n``
ternary    ``code - 1``                                        the stored float32 alpha
=========  ==================================================  =================================

``E`` is the largest exponent index the tensor uses (so a PoT level is a shift of at most ``E - 1``
bits), ``k`` the fraction bits of the finest APoT level it uses.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from snncompress.errors import UnsupportedLayerError

MAX_LEVEL_BITS = 62  # |q| < 2**62: products with spikes and sums stay in int64 (checked again per layer)


def apot_level_table(bits: int) -> np.ndarray:
    """APoT's sorted signed levels in units of alpha, as float32 (the table the codes index).

    Two power-of-two terms from interleaved exponent sets (Li et al. 2020), exact sums rounded to
    float32 and de-duplicated, negated below zero (see :mod:`snncompress.quant.apot`).
    """
    magnitude_bits = bits - 1
    k0, k1 = (magnitude_bits + 1) // 2, magnitude_bits // 2
    p0 = [Fraction(0)] + [Fraction(1, 2 ** (2 * i)) for i in range(2**k0 - 1)]
    p1 = [Fraction(0)] + [Fraction(1, 2 ** (2 * i + 1)) for i in range(2**k1 - 1)]
    exact = sorted({a + b for a in p0 for b in p1})
    mags = np.unique(np.array([float(v) for v in exact], dtype=np.float64).astype(np.float32))
    return np.concatenate([-mags[1:][::-1], mags])


def fraction_bits(values: np.ndarray, limit: int = 200) -> int:
    """The fewest fraction bits ``f`` with every value an integer multiple of ``2**-f``.

    Raises:
        UnsupportedLayerError: a value is not finite or needs more than ``limit`` bits.
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(v)):
        raise UnsupportedLayerError("a value is NaN or infinite")
    for f in range(limit + 1):
        scaled = np.ldexp(v, f)
        if np.all(scaled == np.floor(scaled)):
            return f
    raise UnsupportedLayerError(f"a value needs more than {limit} fraction bits")


def to_fixed(values: np.ndarray, frac: int, what: str) -> np.ndarray:
    """``values * 2**frac`` as int64, exactly.

    Raises:
        UnsupportedLayerError: some value is not a multiple of ``2**-frac`` or does not fit 62 bits.
    """
    scaled = np.ldexp(np.asarray(values, dtype=np.float64), frac)
    if not np.all(scaled == np.floor(scaled)):
        raise UnsupportedLayerError(f"{what} is not a multiple of 2^-{frac}")
    if scaled.size and float(np.abs(scaled).max()) >= 2.0**MAX_LEVEL_BITS:
        raise UnsupportedLayerError(f"{what} needs more than {MAX_LEVEL_BITS} bits at 2^-{frac} fixed point")
    return scaled.astype(np.int64)


def integer_levels(scheme: dict, codes: np.ndarray, params: dict[str, np.ndarray],
                   what: str) -> tuple[np.ndarray, np.ndarray]:
    """Integer levels ``q`` (int64, the codes' shape) and each output channel's step (float64, exact).

    ``step`` has shape ``(C,)`` for per-channel scales (dim 0) and ``()`` for a per-tensor one; the
    weight's value is ``q * step`` exactly (float64 holds every step: a float32 times a power of two).

    Raises:
        UnsupportedLayerError: an unknown scheme, a code outside its table, or levels beyond 62 bits.
    """
    kind = scheme.get("kind")
    c = codes.astype(np.int64)
    if kind == "pot":
        bits = int(scheme["bits"])
        index = c & ((1 << (bits - 1)) - 1)
        negative = (c >> (bits - 1)) & 1
        top = int(index.max()) if index.size else 0  # the finest level used: the shift budget
        if top - 1 > MAX_LEVEL_BITS - 2:
            raise UnsupportedLayerError(f"{what}: power-of-two levels span {top} exponents, beyond a 62-bit level")
        shift = np.maximum(top - index, 0)
        q = np.where(index == 0, 0, np.left_shift(np.int64(1), shift))
        q = np.where(negative == 1, -q, q)
        step = np.ldexp(1.0, int(params["exponent"]) - max(top - 1, 0))
        return q, np.asarray(step, dtype=np.float64)
    if kind == "apot":
        table = apot_level_table(int(scheme["bits"]))
        if c.size and int(c.max()) >= len(table):
            raise UnsupportedLayerError(f"{what}: APoT code {int(c.max())} beyond the {len(table)}-level table")
        used = table[np.unique(c)].astype(np.float64)
        k = fraction_bits(used)
        q = to_fixed(table.astype(np.float64), k, what)[c]
        return q, np.asarray(np.ldexp(1.0, int(params["exponent"]) - k), dtype=np.float64)
    if kind == "int":
        q = c - (1 << (int(scheme["bits"]) - 1))
        scale = np.asarray(params["scale"], dtype=np.float32).astype(np.float64)
        return q, (scale.reshape(-1) if scale.ndim else scale)
    if kind == "fixed":
        q = c - (1 << (int(scheme["integer_bits"]) + int(scheme["fractional_bits"])))
        return q, np.asarray(np.ldexp(1.0, -int(scheme["fractional_bits"])), dtype=np.float64)
    if kind == "ternary":
        alpha = np.asarray(params["alpha"], dtype=np.float32).astype(np.float64).reshape(())
        return c - 1, alpha
    raise UnsupportedLayerError(f"{what}: weight scheme '{kind}' has no integer reading here")
