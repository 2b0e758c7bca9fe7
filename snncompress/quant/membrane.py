"""Integer-only membrane quantization (SpQuant §4.2.1, Eq. 7-13).

The stored membrane is snapped to integer levels in units of the layer's threshold, with no
dequantization scale:

    Q(u) = Vth * clip(round(u / Vth), c, gamma)          c = levels_low <= 0 <= gamma = levels_high

so at Vth = 1 (the SpQuant authors' setting, or after normalising a layer's incoming weights by
Vth) the stored values are the integers themselves. Ternary is ``c = -1, gamma = +1``: three
levels, 1.58 bits of information, stored in 2 bits. ``round`` is round-half-to-even
(``torch.round``); integer-only executors must use the same rule (see :meth:`MembraneQuantizer.codes`).

The backward pass is Stacked Gradient Surrogation (:mod:`snncompress.quant.sgs`):
``dQ/du ~ sum_k (1/T_s) * sigmoid'((u/Vth - b_k) / T_s)``, ``b_k = k + 0.5`` for ``k`` in
``[c, gamma - 1]``. Default ``T_s = 0.5``: the SpQuant authors' code uses
``T * sigmoid(T * x)`` with ``T = 2.0``, i.e. ``1/T_s = 2``.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from snncompress.errors import ConfigError, InputError, did_you_mean
from snncompress.quant.sgs import SgsQuantize, SgsTable, sgs_table

DEFAULT_SMOOTHNESS = 0.5
MAX_MEMBRANE_BITS = 16
_INT_SPEC = re.compile(r"^int(-?\d+)$")


class MembraneQuantizer(BaseModel):
    """Integer membrane levels ``[levels_low, levels_high]`` in units of Vth, SGS backward.

    Attributes:
        levels_low: The negative clipping boundary c (<= 0), e.g. -1 for ternary.
        levels_high: The top level gamma (>= 0), e.g. +1 for ternary.
        smoothness: SGS temperature T_s in [0.01, 10]; smaller is closer to the staircase.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    levels_low: int = Field(le=0, description="negative clipping boundary c, in units of Vth")
    levels_high: int = Field(ge=0, description="top level gamma, in units of Vth")
    smoothness: float = Field(DEFAULT_SMOOTHNESS, ge=0.01, le=10.0, description="SGS temperature T_s")

    @model_validator(mode="after")
    def _check_levels(self) -> MembraneQuantizer:
        if self.levels_low >= self.levels_high:
            raise ValueError(f"levels_low {self.levels_low} must be below levels_high {self.levels_high}")
        if self.num_levels > 1 << MAX_MEMBRANE_BITS:
            raise ValueError(f"{self.num_levels} levels need more than {MAX_MEMBRANE_BITS} bits")
        return self

    # --- constructors -------------------------------------------------------------------------
    @classmethod
    def ternary(cls, smoothness: float = DEFAULT_SMOOTHNESS) -> MembraneQuantizer:
        """Levels {-1, 0, +1} (SpQuant's choice)."""
        return cls.from_dict({"levels_low": -1, "levels_high": 1, "smoothness": smoothness})

    @classmethod
    def from_bits(
        cls,
        bits: int,
        clip: float | None = None,
        smoothness: float = DEFAULT_SMOOTHNESS,
        top: int | None = None,
    ) -> MembraneQuantizer:
        """``bits``-bit integer levels: ``[-2**(bits-1), 2**(bits-1) - 1]`` by default.

        Args:
            bits: 2..16.
            clip: Negative clipping boundary c (an integer level, e.g. -3 or -3.0) that replaces
                the bottom of the range; ``None`` keeps the full range.
            smoothness: SGS temperature.
            top: Top level gamma instead of ``2**(bits-1) - 1``; the ``2**bits`` codes then span
                ``[top - 2**bits + 1, top]``. ``top=1`` is the SpQuant authors' layout (levels
                clipped to ``[lb, Vth]``), e.g. 2 bits -> {-2, -1, 0, 1}.

        Raises:
            ConfigError: ``bits`` out of range, ``top`` not in ``0 .. 2**(bits-1) - 1``, or ``clip``
                not a negative integer level inside the representable range.
        """
        if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= MAX_MEMBRANE_BITS:
            raise ConfigError(f"membrane bits must be an integer in 2..{MAX_MEMBRANE_BITS}, got {bits!r}")
        high = (1 << (bits - 1)) - 1
        if top is not None:
            if isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= high:
                raise ConfigError(f"top level must be an integer in 0..{high} for int{bits}, got {top!r}")
            high = top
        low = high - (1 << bits) + 1
        if clip is not None:
            low = _check_clip(clip, low, f"int{bits}")
        return cls.from_dict({"levels_low": low, "levels_high": high, "smoothness": smoothness})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MembraneQuantizer:
        """Rebuild from :meth:`to_dict` output.

        Raises:
            ConfigError: missing or invalid fields, naming the field.
        """
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "membrane"
            raise ConfigError(f"invalid membrane quantizer {data!r}: {where}: {first['msg']}") from None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description; ``from_dict(to_dict())`` gives an equal quantizer."""
        return self.model_dump(mode="json")

    # --- description --------------------------------------------------------------------------
    @property
    def num_levels(self) -> int:
        return self.levels_high - self.levels_low + 1

    @property
    def bits(self) -> int:
        """Bits per stored level: ``ceil(log2(num_levels))`` (ternary: 2, though it holds 1.58 bits)."""
        return level_bits(self.levels_low, self.levels_high)

    @property
    def information_bits(self) -> float:
        """``log2(num_levels)``: 1.58 for ternary."""
        return math.log2(self.num_levels)

    def describe(self) -> str:
        """``"ternary"``, ``"int4"`` (full symmetric-offset range), else ``"int4[-3..7]"``."""
        if (self.levels_low, self.levels_high) == (-1, 1):
            return "ternary"
        half = 1 << (self.bits - 1)
        if (self.levels_low, self.levels_high) == (-half, half - 1):
            return f"int{self.bits}"
        return f"int{self.bits}[{self.levels_low}..{self.levels_high}]"

    # --- tensor functions ---------------------------------------------------------------------
    @property
    def surrogate_table(self) -> SgsTable:
        return sgs_table(self.levels_low, self.levels_high, float(self.smoothness))

    @property
    def max_surrogate_error(self) -> float:
        """Worst-case ``|G_table - G_exact|`` of the tabulated SGS gradient (see ``sgs`` module)."""
        return self.surrogate_table.max_error

    def quantize(self, u: torch.Tensor, threshold: float | torch.Tensor = 1.0) -> torch.Tensor:
        """``Vth * clip(round(u / Vth), c, gamma)``, differentiable with the SGS surrogate.

        Args:
            u: Membrane potential (floating tensor).
            threshold: Vth, a positive Python number or a tensor broadcastable to ``u``
                (a threshold that requires grad gets ``Q(t) - t * G(t)``, ``t = u / Vth``).

        Returns:
            The quantized membrane, same dtype as ``u``.

        Raises:
            InputError: ``u`` is not a floating tensor.
            ConfigError: the threshold is not positive and finite.
        """
        _check_membrane(u)
        scalar, tensor = _split_threshold(threshold)
        return SgsQuantize.apply(u, tensor, scalar, self.surrogate_table)

    def codes(self, u: torch.Tensor, threshold: float | torch.Tensor = 1.0) -> torch.Tensor:
        """The integer levels ``clip(round(u / Vth), c, gamma)``: the integer-only view.

        Returns:
            ``torch.int8`` when the levels fit in 8 bits, else ``torch.int16``.
        """
        _check_membrane(u)
        scalar, tensor = _split_threshold(threshold)
        divisor = scalar if tensor is None else tensor
        levels = torch.div(u.detach(), divisor).round_().clamp_(self.levels_low, self.levels_high)
        return levels.to(torch.int8 if self.levels_low >= -128 and self.levels_high <= 127 else torch.int16)

    def dequantize(self, codes: torch.Tensor, threshold: float | torch.Tensor = 1.0) -> torch.Tensor:
        """``Vth * codes`` as float32 (equals :meth:`quantize` of the same membrane)."""
        return codes.to(torch.float32) * threshold

    def surrogate_gradient(self, u: torch.Tensor, threshold: float = 1.0) -> torch.Tensor:
        """The SGS ``dQ/du`` at ``u`` (tabulated; within :attr:`max_surrogate_error` of the full sum)."""
        return self.surrogate_table.lookup(u.detach(), 1.0 / float(threshold))


def _check_membrane(u: torch.Tensor) -> None:
    if not isinstance(u, torch.Tensor) or not u.is_floating_point():
        raise InputError(f"membrane quantization needs a floating-point tensor, got {type(u).__name__}")


def _split_threshold(threshold: float | torch.Tensor) -> tuple[float | None, torch.Tensor | None]:
    """(scalar, None) for a number or a 0-d tensor without grad; (None, tensor) otherwise."""
    if isinstance(threshold, torch.Tensor):
        if threshold.requires_grad or threshold.numel() != 1 or threshold.dim() > 0:
            if not bool((threshold > 0).all()) or not bool(torch.isfinite(threshold).all()):
                raise ConfigError("membrane threshold must be positive and finite everywhere")
            return None, threshold
        threshold = float(threshold)
    if not (math.isfinite(threshold) and threshold > 0):
        raise ConfigError(f"membrane threshold must be positive and finite, got {threshold}")
    return float(threshold), None


def _check_clip(clip: float, full_low: int, label: str) -> int:
    if isinstance(clip, bool) or not isinstance(clip, int | float) or not math.isfinite(clip):
        raise ConfigError(f"clip must be a negative integer level such as -1 or -3, got {clip!r}")
    if clip != int(clip):
        raise ConfigError(
            f"clip {clip} is not an integer level; membrane levels are integers in units of Vth, "
            f"use {math.floor(clip)} or {math.ceil(clip)}"
        )
    if not full_low <= clip < 0:
        raise ConfigError(f"clip {clip:g} is outside {label}'s negative levels: use {full_low} .. -1")
    return int(clip)


def parse_membrane_quant(
    text: str,
    clip: float | None = None,
    smoothness: float = DEFAULT_SMOOTHNESS,
    top: int | None = None,
) -> MembraneQuantizer | None:
    """Parse a CLI membrane spec: ``ternary``, ``int<k>`` (k = 2..16) or ``fp32`` (returns None).

    ``clip`` and ``top`` are passed to :meth:`MembraneQuantizer.from_bits` for ``int<k>``; for
    ternary the only valid clip is -1.

    Raises:
        ConfigError: unknown spec (with a "did you mean"), bits out of range, a clip that is not
            a representable negative level, or a clip given with ``fp32``.
    """
    spec = text.strip().lower()
    if spec == "fp32":
        if clip is not None:
            raise ConfigError(
                "a membrane clip needs quantized levels: use ternary or int<k> with clip, or drop clip"
            )
        return None
    if spec == "ternary":
        if top not in (None, 1):
            raise ConfigError(f"ternary membrane levels are -1, 0, +1; top {top} applies to int<k> only")
        if clip is not None:
            _check_clip(clip, -1, "ternary")
        return MembraneQuantizer.ternary(smoothness=smoothness)
    if match := _INT_SPEC.match(spec):
        bits = int(match.group(1))
        if not 2 <= bits <= MAX_MEMBRANE_BITS:
            raise ConfigError(
                f"{spec}: membrane levels take 2 to {MAX_MEMBRANE_BITS} bits, not {bits}; "
                "valid forms are ternary, int2..int16, fp32"
            )
        return MembraneQuantizer.from_bits(bits, clip=clip, smoothness=smoothness, top=top)
    known = ["ternary", "fp32"] + [f"int{k}" for k in range(2, MAX_MEMBRANE_BITS + 1)]
    hint = did_you_mean(spec, known)
    raise ConfigError(
        f"unknown membrane quantization {text!r}: valid forms are ternary, int2..int16, fp32{hint}"
    )


def level_bits(low: int, high: int) -> int:
    """Bits to store one of the integer levels ``low .. high``: ``ceil(log2(levels))`` (the one rule)."""
    return max(1, math.ceil(math.log2(int(high) - int(low) + 1)))


def membrane_bits(quantizer: dict[str, Any] | None) -> int:
    """Bits per stored membrane value of a quantizer's settings (:meth:`MembraneQuantizer.to_dict`); 32 for fp32."""
    if not quantizer:
        return 32
    if "bits" in quantizer:
        return int(quantizer["bits"])
    low, high = quantizer.get("levels_low"), quantizer.get("levels_high")
    if low is None or high is None:
        return 32
    return level_bits(low, high)


def default_grid(spec: str) -> int:
    """Levels per threshold: 1 for ternary (SpQuant), ``2^(k-2)`` for int<k> (int4: Vth/4 steps over
    [-2, 1.75] Vth; int8: Vth/64 steps over [-2, 2) Vth) -- our choice, configurable."""
    spec = spec.strip().lower()
    if spec.startswith("int") and spec[3:].isdigit():
        return max(1, 1 << max(0, int(spec[3:]) - 2))
    return 1


def membrane_quantizer(spec: str, clip: float | None, smoothness: float | None, grid: int | None = None):
    """The membrane quantizer for a spec (None for fp32) and its grid (levels per threshold).

    Raises:
        ConfigError: a bad spec, a grid given for ternary / fp32, or a clip (in units of Vth) that is
            not a level of the grid inside the representable range.
    """
    spec_l = spec.strip().lower()
    if grid is not None and grid != 1 and not spec_l.startswith("int"):
        why = ("an fp32 membrane is not stored on a grid" if spec_l == "fp32"
               else f"{spec} has one level per threshold")
        raise ConfigError(f"membrane_grid applies to int<k> membranes; {why}")
    grid = grid or default_grid(spec_l)
    level_clip = None
    if clip is not None:
        if spec_l == "fp32":
            raise ConfigError("a membrane clip needs quantized levels (ternary or int<k>)")
        bits = 2 if spec_l == "ternary" else int(spec_l[3:]) if spec_l[3:].isdigit() else None
        lowest = -1.0 if spec_l == "ternary" else (-(1 << (bits - 1)) / grid if bits else None)
        if lowest is not None and not lowest <= clip < 0:
            raise ConfigError(f"clip {clip:g} x Vth does not fit {spec_l} at {grid} levels per threshold: "
                              f"use a value in {lowest:g} .. {-1 / grid:g}")
        level_clip = clip * grid
        if level_clip != int(level_clip):
            raise ConfigError(f"clip {clip:g} x Vth is not on the membrane grid (steps of Vth/{grid})")
        level_clip = int(level_clip)
    kwargs = {"smoothness": smoothness} if smoothness is not None else {}
    quantizer = parse_membrane_quant(spec, clip=level_clip, **kwargs)
    return quantizer, grid
