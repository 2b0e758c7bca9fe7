"""Base class of weight quantization schemes and the straight-through estimator they share.

A scheme is data (a frozen pydantic model, JSON round trip through ``to_dict`` /
``WeightScheme.from_dict``) plus pure tensor functions:

* ``encode(w) -> EncodedTensor``: integer codes and small parameters.
* ``decode(enc) -> Tensor``: float32 values; depends only on the codes, the parameters and the
  scheme fields, so decoding after a save/load gives the same bits.
* ``quantize(w) = decode(encode(w))``.
* ``fake_quant(w)``: for quantization-aware training. The forward value is bit-identical to
  ``quantize(w)``; the backward is straight-through: identity gradient where ``w`` lies inside the
  scheme's clip range, zero where it was saturated (Bengio et al. 2013; "clipped STE").
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, ValidationError

from snncompress.errors import ConfigError, InputError
from snncompress.quant.encoded import EncodedTensor


class _StraightThrough(torch.autograd.Function):
    """Forward: the precomputed quantized values; backward: ``grad * mask`` (or ``grad``)."""

    @staticmethod
    def forward(ctx, w, quantized, mask):
        ctx.save_for_backward(mask if mask is not None else torch.empty(0))
        ctx.has_mask = mask is not None
        return quantized

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        if ctx.has_mask:
            grad = grad * mask.to(grad.dtype)
        return grad, None, None


class WeightScheme(BaseModel):
    """A weight quantization scheme. Subclasses set ``kind`` and implement the hooks below."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str
    is_identity: ClassVar[bool] = False

    # --- to implement -------------------------------------------------------------------------
    @property
    def code_bits(self) -> int:
        """Bits per stored code."""
        raise NotImplementedError

    def describe(self) -> str:
        """Short label, e.g. ``"pot4"``."""
        raise NotImplementedError

    def _encode(self, w: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, dict]:
        """Codes (int64, any range check done by the caller) and params of float32 ``w``."""
        raise NotImplementedError

    def _decode(self, codes: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Float32 values of ``codes`` (int64)."""
        raise NotImplementedError

    def _ste_mask(self, w: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """Where the STE passes the gradient (inside the clip range); ``None`` means everywhere."""
        return None

    # --- shared -------------------------------------------------------------------------------
    def encode(self, w: torch.Tensor, *, generator: torch.Generator | None = None) -> EncodedTensor:
        """Quantize ``w`` to integer codes.

        Args:
            w: Float tensor (any shape); it is read as float32, detached.
            generator: Draws for stochastic rounding; ``None`` means one seeded with the scheme's
                ``seed``. Ignored by deterministic schemes.

        Returns:
            An :class:`EncodedTensor` with codes in ``[0, 2**code_bits)``.

        Raises:
            InputError: ``w`` is not a floating tensor or holds NaN or infinity.
        """
        codes, params = self._encode(self._checked(w), generator)
        bits = self.code_bits
        return EncodedTensor(
            codes=codes.to(torch.uint8 if bits <= 8 else torch.int32),
            bits=bits,
            params=params,
            scheme=self.to_dict(),
        )

    def decode(self, enc: EncodedTensor) -> torch.Tensor:
        """Float32 values of an encoded tensor.

        Raises:
            ConfigError: ``enc`` was encoded with another scheme.
        """
        if enc.scheme != self.to_dict() and WeightScheme.from_dict(enc.scheme) != self:
            raise ConfigError(f"cannot decode codes of scheme {enc.scheme} with {self.to_dict()}")
        return self._decode(enc.codes.to(torch.int64), enc.params)

    def quantize(self, w: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Quantized values of ``w``: ``decode(encode(w))`` (float32, no gradient)."""
        return self.decode(self.encode(w, generator=generator))

    def fake_quant(self, w: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """``quantize(w)`` in the forward pass, straight-through gradient in the backward pass.

        The forward value is bit-identical to :meth:`quantize`. The gradient is the identity where
        ``w`` lies inside the scheme's clip range and zero where the scheme saturated it.
        """
        w32 = self._checked(w)
        codes, params = self._encode(w32, generator)  # what encode + decode compute, minus the bookkeeping
        quantized = self._decode(codes, params).to(w.dtype)
        return _StraightThrough.apply(w, quantized, self._ste_mask(w32, params))

    def _checked(self, w: torch.Tensor) -> torch.Tensor:
        """``w`` detached as float32, after checking it is a finite floating tensor."""
        if not isinstance(w, torch.Tensor) or not w.is_floating_point():
            raise InputError(f"{self.describe()}: expected a floating-point tensor, got {type(w).__name__}")
        w32 = w.detach().to(torch.float32)
        if w32.numel() and not bool(torch.isfinite(w32).all()):
            raise InputError(f"{self.describe()}: the tensor holds NaN or infinity; fix the weights first")
        return w32

    def valid_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Which ``codes`` (integers) name a level of this scheme: the codes :meth:`encode` can emit.

        A stored code outside this set (a ternary 3, an 8-bit code under a 4-bit scheme) decodes to a
        value the scheme never produces, so a file holding one is corrupted.
        """
        codes = codes.to(torch.int64)
        valid = (codes >= 0) & (codes < (1 << self.code_bits))
        try:
            levels = self._level_codes()
        except NotImplementedError:  # a regular grid: every code in range is a level
            return valid
        return valid & torch.isin(codes, levels.to(torch.int64))

    # --- the grid, for calibrated rounding (AdaRound) ------------------------------------------
    def grid_params(self, w: torch.Tensor) -> dict[str, torch.Tensor]:
        """The decode parameters :meth:`encode` picks for ``w`` (PoT / APoT exponent, int scales,
        ternary alpha; none for fixed point): they fix the grid that calibrated rounding chooses on.

        Raises:
            InputError: ``w`` is not a finite floating tensor.
        """
        return self._grid_params(self._checked(w))

    def grid_neighbours(
        self, w: torch.Tensor, params: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The grid values next to each element of ``w`` on the grid of ``params``.

        ``lower`` is the largest level <= w and ``upper`` the smallest level >= w (both equal to w
        when it is a level; both the edge level when w is beyond the range). The scheme's own rounding
        always picks one of the two; adaptive rounding (Nagel et al. 2020) chooses between them.

        Returns:
            ``(lower, upper)``, float32, the shape of ``w``; exact grid values
            (``decode(encode_values(lower, params)) == lower``).

        Raises:
            InputError: ``w`` is not a finite floating tensor.
        """
        lower, upper = self._neighbours(self._checked(w), params)
        return lower + 0.0, upper + 0.0  # + 0.0: no -0.0 in the results

    def encode_values(self, values: torch.Tensor, params: dict[str, torch.Tensor]) -> EncodedTensor:
        """Encode values that lie exactly on the grid of ``params`` (e.g. from :meth:`grid_neighbours`).

        ``decode(encode_values(v, params))`` equals ``v``, and ``encode_values(decode(enc), enc.params)``
        gives ``enc``'s codes back (the codes :meth:`encode` emits for each level).

        Raises:
            InputError: ``values`` is not a finite floating tensor, or some value is not a level.
        """
        values32 = self._checked(values)
        codes = self._codes_of(values32, params)
        if not torch.equal(self._decode(codes, params), values32):
            off = int((self._decode(codes, params) != values32).sum())
            raise InputError(f"{self.describe()}: {off} value(s) are not levels of the grid; "
                             "round them with grid_neighbours first")
        return self._encoded(codes, params)

    def _encoded(self, codes: torch.Tensor, params: dict[str, torch.Tensor]) -> EncodedTensor:
        bits = self.code_bits
        return EncodedTensor(codes=codes.to(torch.uint8 if bits <= 8 else torch.int32), bits=bits,
                             params=params, scheme=self.to_dict())

    def _grid_params(self, w: torch.Tensor) -> dict[str, torch.Tensor]:
        return self._encode(w, None)[1]

    def _level_codes(self) -> torch.Tensor:
        """For table-based grids: one code per level, the code :meth:`encode` emits listed first."""
        raise NotImplementedError(f"{self.describe()} does not expose its grid")

    def _level_table(self, params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Sorted distinct level values and their codes (the first listed code of each value)."""
        codes = self._level_codes()
        values = self._decode(codes, params) + 0.0
        order = torch.sort(values, stable=True).indices
        values, codes = values[order], codes[order]
        first = torch.ones_like(values, dtype=torch.bool)
        first[1:] = values[1:] != values[:-1]
        return values[first], codes[first]

    def _neighbours(self, w: torch.Tensor, params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        levels, _ = self._level_table(params)
        last = len(levels) - 1
        below = (torch.searchsorted(levels, w, right=True) - 1).clamp(0, last)
        above = torch.searchsorted(levels, w, right=False).clamp(0, last)
        return levels[below], levels[above]

    def _codes_of(self, values: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        levels, codes = self._level_table(params)
        return codes[torch.searchsorted(levels, values).clamp(0, len(levels) - 1)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description; ``WeightScheme.from_dict(to_dict())`` rebuilds an equal scheme."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WeightScheme:
        """Rebuild any scheme from its ``to_dict()`` (dispatch on ``kind`` through the scheme registry).

        Raises:
            ConfigError: unknown kind or invalid fields, with the offending field named.
        """
        if not isinstance(data, dict):
            raise ConfigError(f"invalid weight scheme {data!r}: expected a mapping with a 'kind'")
        kind = data.get("kind")
        scheme_class = scheme_class_for(kind) if isinstance(kind, str) else None
        if scheme_class is None:
            known = ", ".join(sorted(registered_schemes()))
            raise ConfigError(f"invalid weight scheme {data!r}: kind: unknown kind {kind!r} (known: {known}); "
                              f"a plugin's scheme needs its package installed (entry-point group "
                              f"'{SCHEME_ENTRY_POINT_GROUP}')")
        try:
            scheme = scheme_class.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "scheme"
            raise ConfigError(f"invalid weight scheme {data!r}: {where}: {first['msg']}") from None
        if cls is not WeightScheme and not isinstance(scheme, cls):
            raise ConfigError(f"expected a {cls.__name__} description, got kind {scheme.kind!r}")
        return scheme

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        # every concrete scheme registers under its kind: built-ins and plugins alike
        super().__pydantic_init_subclass__(**kwargs)
        default = cls.model_fields["kind"].default
        if isinstance(default, str) and default:
            register_scheme(cls)


# -- the scheme registry: kind -> class (built-ins register on import, plugins through entry points) ----
SCHEME_ENTRY_POINT_GROUP = "snncompress.weight_schemes"
_SCHEMES: dict[str, type[WeightScheme]] = {}
_PLUGINS_LOADED = False


def register_scheme(scheme_class: type[WeightScheme]) -> type[WeightScheme]:
    """Register a scheme class under its ``kind`` (a subclass registers itself when it is defined).

    A plugin's scheme then survives save and load: the file records ``kind`` and the scheme's fields,
    and :meth:`WeightScheme.from_dict` finds the class again (importing the plugin through the
    ``snncompress.weight_schemes`` entry-point group when it is not imported yet).
    """
    kind = scheme_class.model_fields["kind"].default
    _SCHEMES[kind] = scheme_class
    return scheme_class


def registered_schemes() -> dict[str, type[WeightScheme]]:
    """Every registered scheme class by kind (the built-ins register when ``snncompress.quant`` is imported,
    which importing this module does first)."""
    return dict(_SCHEMES)


def scheme_class_for(kind: str) -> type[WeightScheme] | None:
    """The class registered for ``kind``; plugin entry points are loaded on the first miss."""
    global _PLUGINS_LOADED
    found = registered_schemes().get(kind)
    if found is None and not _PLUGINS_LOADED:
        _PLUGINS_LOADED = True
        _load_scheme_plugins()
        found = _SCHEMES.get(kind)
    return found


def _load_scheme_plugins() -> None:
    import sys
    from importlib.metadata import entry_points

    for ep in entry_points(group=SCHEME_ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as exc:  # noqa: BLE001 - reported, never fatal: one broken plugin must not hide the rest
            sys.stderr.write(f"warning: weight-scheme plugin '{ep.name} = {ep.value}' was not loaded: "
                             f"{type(exc).__name__}: {exc}\n")
            continue
        if isinstance(obj, type) and issubclass(obj, WeightScheme):
            register_scheme(obj)
