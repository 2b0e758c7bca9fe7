"""Fold BatchNorm into the Linear / Conv layer before it, as integer-only deployment flows do.

In evaluation a BatchNorm is an affine map per channel, ``y = (x - mean) / sqrt(var + eps) * gamma + beta``;
after a Linear or Conv with weight ``W`` and bias ``b`` it folds into that layer:

    g  = gamma / sqrt(var + eps)            (1 / sqrt(var + eps) without affine parameters)
    W' = W * g   (per output channel),      b' = (b - mean) * g + beta

computed in float64 and stored in float32, so the folded layer equals the pair up to float32 rounding.
The BatchNorm is replaced by ``nn.Identity`` (layer names stay as they were, so recipe targets and the
compression state still name the same layers); the file's architecture is recorded at save time and
rebuilds without it, and NIR export leaves the Identity out.
"""

from __future__ import annotations

import torch
from torch import nn

from snncompress.state import get_state, has_state

_FOLDABLE = {nn.BatchNorm1d: (nn.Linear, nn.Conv1d), nn.BatchNorm2d: (nn.Conv2d,)}


def fold_batchnorm(model: nn.Module) -> list[str]:
    """Fold every Linear/Conv + BatchNorm pair of the model's Sequentials, in place.

    A pair is folded when the BatchNorm directly follows the layer inside one ``nn.Sequential``, has
    running statistics, and the layer's weight is not already quantized (its codes would no longer
    match).

    Returns:
        The folded pairs as ``"layer+batchnorm"`` qualified names, in model order.
    """
    quantized = set(get_state(model).tensors) if has_state(model) else set()
    folded: list[str] = []
    for prefix, container in model.named_modules():
        if not isinstance(container, nn.Sequential):
            continue
        children = list(container.named_children())
        for (name, layer), (bn_name, bn) in zip(children, children[1:], strict=False):
            before = _FOLDABLE.get(type(bn))
            qual = f"{prefix}.{name}" if prefix else name
            if before is None or not isinstance(layer, before) or bn.running_mean is None:
                continue
            if f"{qual}.weight" in quantized or bn.num_features != layer.weight.shape[0]:
                continue
            _fold(layer, bn)
            setattr(container, bn_name, nn.Identity())
            folded.append(f"{qual}+{prefix + '.' if prefix else ''}{bn_name}")
    return folded


def _fold(layer: nn.Module, bn: nn.Module) -> None:
    with torch.no_grad():
        var = bn.running_var.detach().double()
        g = 1.0 / torch.sqrt(var + bn.eps)
        if bn.affine:
            g = g * bn.weight.detach().double()
        shift = -bn.running_mean.detach().double() * g
        if bn.affine:
            shift = shift + bn.bias.detach().double()
        weight = layer.weight.detach().double() * g.reshape((-1,) + (1,) * (layer.weight.dim() - 1))
        bias = layer.bias.detach().double() * g + shift if layer.bias is not None else shift
        layer.weight.copy_(weight.to(layer.weight.dtype))
        if layer.bias is None:
            layer.bias = nn.Parameter(bias.to(layer.weight.dtype))
        else:
            layer.bias.copy_(bias.to(layer.bias.dtype))
