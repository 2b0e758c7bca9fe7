"""k-means weight clustering (weight sharing) for snncompress: k shared values per synaptic layer.

Deep Compression (Han et al., ICLR 2016, §3): the weights ``w`` of a layer are partitioned into
``k`` clusters minimising the within-cluster sum of squares

    argmin_C  sum_j sum_{w in c_j} |w - mu_j|^2

by Lloyd's algorithm in one dimension, and every weight is replaced by its centroid ``mu_j``.
Linear initialisation (``k`` points evenly spaced between the smallest and largest weight) keeps
the rare large weights, which Han et al. found to matter most; it is deterministic. ``random``
draws the initial centroids from the weights with a generator seeded from the run's seed.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from snncompress.errors import ConfigError, DomainError
from snncompress.passes.base import PassConfig, PassContext, PassResult, PassSpec
from snncompress.passes.kit import select_layers
from snncompress.state import get_state

__version__ = "0.1.0"


class ClusterConfig(PassConfig):
    """Config of the cluster pass (a recipe step ``pass: cluster``)."""

    clusters: int = Field(16, ge=2, le=256, description="Shared values (centroids) per layer: k.")
    iterations: int = Field(30, ge=1, le=1000, description="Lloyd iterations at most (stops when stable).")
    init: Literal["linear", "random"] = Field(
        "linear", description="Initial centroids: evenly spaced (deterministic) or drawn with the seed.")


def kmeans_1d(values: torch.Tensor, k: int, iterations: int, init: str = "linear",
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means on a 1-D tensor.

    Args:
        values: the values to cluster (any shape; flattened).
        k: number of clusters (fewer when there are fewer distinct values).
        iterations: maximum Lloyd iterations.
        init: ``linear`` or ``random`` (needs ``generator`` to be reproducible).

    Returns:
        ``(centroids [k'] sorted, assignment [n] in [0, k'))``.
    """
    x = values.detach().reshape(-1).to(torch.float64)
    distinct = torch.unique(x)
    if distinct.numel() <= k:
        return distinct.to(values.dtype), torch.bucketize(x, distinct)
    if init == "linear":
        centroids = torch.linspace(float(x.min()), float(x.max()), k, dtype=torch.float64)
    else:
        pick = torch.randperm(distinct.numel(), generator=generator)[:k]
        centroids = distinct[pick].sort().values
    assign = _nearest(x, centroids)
    for _ in range(iterations):
        sums = torch.zeros(k, dtype=torch.float64).index_add_(0, assign, x)
        counts = torch.zeros(k, dtype=torch.float64).index_add_(0, assign, torch.ones_like(x))
        # an empty cluster keeps its centroid (it may attract values again next round)
        centroids = torch.where(counts > 0, sums / counts.clamp(min=1), centroids).sort().values
        new_assign = _nearest(x, centroids)
        if torch.equal(new_assign, assign):
            break
        assign = new_assign
    used = torch.unique(assign)
    remap = torch.full((k,), -1, dtype=torch.long)
    remap[used] = torch.arange(used.numel())
    return centroids[used].to(values.dtype), remap[assign]


def _nearest(x: torch.Tensor, sorted_centroids: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centroid (ties to the lower one) via midpoints: O(n log k)."""
    midpoints = (sorted_centroids[1:] + sorted_centroids[:-1]) / 2
    return torch.bucketize(x, midpoints, right=False)


def apply(model: nn.Module, config: ClusterConfig, ctx: PassContext) -> PassResult:
    """Snap each targeted synaptic layer's weights to its k-means centroids, in place.

    Raises:
        ConfigError: a target names no synaptic layer.
        DomainError: a layer is already quantized (clustering would change its stored codes).
    """
    state = get_state(model)
    generator = torch.Generator().manual_seed(ctx.seed)
    layers: dict[str, dict] = {}
    codebook_bits = dense_bits = 0
    for layer in select_layers(model, config, "synaptic"):  # targets checked, overrides applied
        name, module, layer_cfg = layer.name, layer.module, layer.config
        key = f"{name}.weight"
        if key in state.tensors:
            kind = state.tensors[key].scheme.get("kind")
            raise DomainError(f"layer '{name}' is already quantized ({kind}); cluster before quantizing")
        weight = module.weight
        mask = state.masks.get(key)
        keep = mask.reshape(-1) if mask is not None else torch.ones(weight.numel(), dtype=torch.bool)
        flat = weight.detach().reshape(-1)
        centroids, assign = kmeans_1d(flat[keep], layer_cfg.clusters, layer_cfg.iterations, layer_cfg.init,
                                      generator)
        snapped = flat.clone()
        snapped[keep] = centroids[assign]
        error = float(((snapped - flat) ** 2).mean())
        with torch.no_grad():
            weight.copy_(snapped.view_as(weight))
        index_bits = max(1, math.ceil(math.log2(max(centroids.numel(), 2))))
        kept = int(keep.sum())
        layers[name] = {"clusters": int(centroids.numel()), "weights": kept, "index_bits": index_bits,
                        "mse": error}
        codebook_bits += kept * index_bits + centroids.numel() * 32
        dense_bits += kept * 32
    if not layers:
        raise ConfigError("no synaptic layer to cluster (check targets)")
    ratio = dense_bits / codebook_bits
    return PassResult(
        metrics={"layers": layers, "codebook_bits": codebook_bits, "fp32_bits": dense_bits,
                 "codebook_reduction": ratio},
        notes=[f"{len(layers)} layer(s) clustered to at most {config.clusters} shared values each; "
               f"a codebook would store their weights in {codebook_bits / 8192:.1f} KiB instead of "
               f"{dense_bits / 8192:.1f} KiB ({ratio:.1f}x), but this file stores them as float32"],
    )


CLUSTER_PASS = PassSpec(
    name="cluster",
    config_class=ClusterConfig,
    apply=apply,
    summary="k-means weight clustering: k shared values per synaptic layer (Deep Compression).",
    version=__version__,
    needs_data=False,
    before=("quantize",),
    max_per_recipe=1,
)
