"""Weight quantization schemes: the discriminated union on ``kind`` and the CLI spec parser.

=========  =========================================  ==============================
spec       scheme                                     module
=========  =========================================  ==============================
pot2-8     power of two, PoT scale                    :mod:`snncompress.quant.pot`
apot3-8    additive power of two, PoT scale           :mod:`snncompress.quant.apot`
int2-16    symmetric integer, per-channel scales      :mod:`snncompress.quant.uniform`
fixedM.N   fixed point Q(m.n), 1 + m + n bits         :mod:`snncompress.quant.uniform`
ternary    {-alpha, 0, +alpha}                        :mod:`snncompress.quant.ternary`
fp32       no quantization                            here
=========  =========================================  ==============================
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal

import torch
from pydantic import Field, TypeAdapter

from snncompress.errors import ConfigError, did_you_mean
from snncompress.quant.apot import ApotScheme
from snncompress.quant.base import WeightScheme
from snncompress.quant.encoded import EncodedTensor
from snncompress.quant.fixed_point import check_fixed_format
from snncompress.quant.pot import PotScheme
from snncompress.quant.rounding import ROUNDING_MODES
from snncompress.quant.ternary import TernaryScheme
from snncompress.quant.uniform import FixedPointScheme, IntScheme

__all__ = [
    "AnyWeightScheme",
    "ApotScheme",
    "FixedPointScheme",
    "Fp32Scheme",
    "IntScheme",
    "PotScheme",
    "TernaryScheme",
    "WeightScheme",
    "parse_weight_scheme",
    "scheme_from_dict",
]


class Fp32Scheme(WeightScheme):
    """No quantization: weights stay float32. There are no codes to encode or decode."""

    kind: Literal["fp32"] = "fp32"
    is_identity: ClassVar[bool] = True

    @property
    def code_bits(self) -> int:
        return 32

    def describe(self) -> str:
        return "fp32"

    def encode(self, w: torch.Tensor, *, generator: torch.Generator | None = None) -> EncodedTensor:
        raise ConfigError(
            "fp32 weights are stored as they are; there are no codes to encode (check is_identity)"
        )

    def decode(self, enc: EncodedTensor) -> torch.Tensor:
        raise ConfigError("fp32 weights have no codes to decode (check is_identity)")

    def quantize(self, w: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        return w.detach().to(torch.float32).clone()

    def fake_quant(self, w: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        return w


AnyWeightScheme = Annotated[
    PotScheme | ApotScheme | IntScheme | TernaryScheme | FixedPointScheme | Fp32Scheme,
    Field(discriminator="kind"),
]
"""Field type for configs that hold a weight scheme (validated on ``kind``)."""

WEIGHT_SCHEME_ADAPTER: TypeAdapter = TypeAdapter(AnyWeightScheme)


def scheme_from_dict(data: dict[str, Any]) -> WeightScheme:
    """Rebuild a scheme from ``to_dict()`` output (same as ``WeightScheme.from_dict``)."""
    return WeightScheme.from_dict(data)


_BIT_RANGES = {"pot": (2, 8), "apot": (3, 8), "int": (2, 16)}
VALID_FORMS = "pot2..pot8, apot3..apot8, int2..int16, ternary, fixed<m>.<n> (e.g. fixed3.5), fp32"
_KNOWN = [f"{k}{b}" for k, (lo, hi) in _BIT_RANGES.items() for b in range(lo, hi + 1)] + [
    "ternary",
    "fp32",
    "fixed3.5",
    "fixed0.7",
    "fixed1.6",
]
_WITH_BITS = re.compile(r"^(pot|apot|int)(-?\d+)$")
_FIXED = re.compile(r"^fixed(-?\d+)(?:\.(-?\d+))?$")


def _unknown(text: str) -> ConfigError:
    return ConfigError(
        f"unknown weight scheme {text!r}: valid forms are {VALID_FORMS}{did_you_mean(text, _KNOWN)}"
    )


def parse_weight_scheme(text: str, rounding: str = "nearest") -> WeightScheme:
    """Parse a CLI weight spec: ``pot4``, ``apot4``, ``int8``, ``ternary``, ``fixed3.5``, ``fp32``.

    Args:
        text: The spec (case and surrounding spaces ignored).
        rounding: ``nearest``, ``truncate`` or ``stochastic``; applies to ``int`` and ``fixed``
            (PoT, APoT and ternary round to their nearest level).

    Returns:
        The scheme, with default options.

    Raises:
        ConfigError: unknown or impossible spec (one line naming the problem and the valid forms,
            with a "did you mean" when a valid spec is close), or a rounding that does not apply.
    """
    spec = text.strip().lower()
    if rounding not in ROUNDING_MODES:
        raise ConfigError(f"unknown rounding {rounding!r}: use one of {', '.join(ROUNDING_MODES)}")
    if match := _WITH_BITS.match(spec):
        kind, bits = match.group(1), int(match.group(2))
        low, high = _BIT_RANGES[kind]
        if not low <= bits <= high:
            raise ConfigError(
                f"{spec}: {kind} weights take {low} to {high} bits, not {bits}; valid forms are {VALID_FORMS}"
            )
        scheme: WeightScheme = {
            "pot": lambda: PotScheme(bits=bits),
            "apot": lambda: ApotScheme(bits=bits),
            "int": lambda: IntScheme(bits=bits, rounding=rounding),
        }[kind]()
    elif match := _FIXED.match(spec):
        if match.group(2) is None:
            raise ConfigError(
                f"{spec}: a fixed-point spec needs integer and fractional bits, fixed<m>.<n> "
                f"(e.g. fixed{match.group(1)}.5); valid forms are {VALID_FORMS}"
            )
        m, n = int(match.group(1)), int(match.group(2))
        try:
            check_fixed_format(m, n)
        except ConfigError as exc:
            raise ConfigError(f"{exc}; valid forms are {VALID_FORMS}") from None
        scheme = FixedPointScheme(integer_bits=m, fractional_bits=n, rounding=rounding)
    elif spec == "ternary":
        scheme = TernaryScheme()
    elif spec == "fp32":
        scheme = Fp32Scheme()
    else:
        raise _unknown(spec)
    if rounding != "nearest" and scheme.kind not in {"int", "fixed"}:
        raise ConfigError(
            f"{spec}: rounding {rounding!r} applies only to int and fixed weights; "
            f"{scheme.kind} rounds to its nearest level (drop the rounding option)"
        )
    return scheme
