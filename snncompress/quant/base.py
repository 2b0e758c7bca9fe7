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

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description; ``WeightScheme.from_dict(to_dict())`` rebuilds an equal scheme."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WeightScheme:
        """Rebuild any scheme from its ``to_dict()`` (dispatch on ``kind``).

        Raises:
            ConfigError: unknown kind or invalid fields, with the offending field named.
        """
        from snncompress.quant.schemes import WEIGHT_SCHEME_ADAPTER

        try:
            scheme = WEIGHT_SCHEME_ADAPTER.validate_python(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "scheme"
            raise ConfigError(f"invalid weight scheme {data!r}: {where}: {first['msg']}") from None
        if cls is not WeightScheme and not isinstance(scheme, cls):
            raise ConfigError(f"expected a {cls.__name__} description, got kind {scheme.kind!r}")
        return scheme
