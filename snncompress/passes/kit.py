"""The pass authoring kit: layer selection with targets checked, in one place for every pass.

    for layer in select_layers(model, config, "synaptic"):
        layer.name, layer.module, layer.config      # config: the pass config with overrides applied

``targets`` and ``overrides`` name layers by module name, by ``re:`` pattern, or symbolically:
``first`` and ``last`` are the first and last synaptic layer in forward (registration) order, so a
recipe that keeps the first and last layer at 8 bits fits any model.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from torch import nn

from snncompress.errors import ConfigError, did_you_mean
from snncompress.models.layers import synaptic_layers
from snncompress.models.neurons import neuron_layers
from snncompress.passes.base import PassConfig

LayerKind = Literal["synaptic", "neuron"]
SYMBOLIC_TARGETS = ("first", "last")


@dataclass(frozen=True)
class LayerSelection:
    """One layer a pass may touch, with its per-layer config."""

    name: str
    module: nn.Module
    config: PassConfig
    kind: LayerKind


def layer_candidates(model: nn.Module) -> dict[LayerKind, list[tuple[str, nn.Module]]]:
    """The layers passes act on: synaptic (Linear / conv outside neurons) and neuron layers."""
    return {"synaptic": synaptic_layers(model), "neuron": neuron_layers(model)}


def resolve_symbolic(model: nn.Module, patterns: Iterable[str]) -> list[str]:
    """``first`` / ``last`` replaced by the model's first / last synaptic layer name."""
    syn = [n for n, _ in synaptic_layers(model)]
    out = []
    for pattern in patterns:
        if pattern in SYMBOLIC_TARGETS:
            if not syn:
                raise ConfigError(f"target '{pattern}' names a synaptic layer, and the model has none")
            out.append(syn[0] if pattern == "first" else syn[-1])
        else:
            out.append(pattern)
    return out


def resolved_config(model: nn.Module, config: PassConfig) -> PassConfig:
    """``config`` with symbolic targets (``first``, ``last``) replaced by this model's layer names."""
    changed = False
    targets = config.targets
    if targets is not None and any(t in SYMBOLIC_TARGETS for t in targets):
        targets, changed = resolve_symbolic(model, targets), True
    overrides = []
    for override in config.overrides:
        if any(t in SYMBOLIC_TARGETS for t in override.targets):
            override = override.model_copy(update={"targets": resolve_symbolic(model, override.targets)})
            changed = True
        overrides.append(override)
    if not changed:
        return config
    return config.model_copy(update={"targets": targets, "overrides": overrides})


def target_problems(model: nn.Module, config: PassConfig, where: str = "") -> list[str]:
    """Every plain-name target or override of ``config`` that names no layer a pass acts on, and every bad regex."""
    candidates = [n for group in layer_candidates(model).values() for n, _ in group]
    prefix = f"{where}." if where else ""
    pools = [(f"{prefix}targets", config.targets or [])]
    pools += [(f"{prefix}overrides", o.targets) for o in config.overrides]
    problems = []
    for place, patterns in pools:
        for pattern in patterns:
            if pattern in SYMBOLIC_TARGETS:
                continue
            if pattern.startswith("re:"):
                try:
                    re.compile(pattern[3:])
                except re.error as exc:
                    problems.append(f"{place}: bad regular expression '{pattern}': {exc}")
                continue
            if pattern not in candidates:
                hint = did_you_mean(pattern, candidates, cutoff=0.6) or f"; layers: {', '.join(candidates)}"
                problems.append(f"{place}: no layer named '{pattern}'{hint}")
    return problems


def select_layers(model: nn.Module, config: PassConfig, kind: LayerKind | Iterable[LayerKind] = "synaptic",
                  ) -> list[LayerSelection]:
    """The layers of ``kind`` that ``config`` targets, each with its per-layer config.

    Raises:
        ConfigError: a target or override names no layer of the model (with a did-you-mean).
    """
    config = resolved_config(model, config)
    problems = target_problems(model, config)
    if problems:
        raise ConfigError(problems[0])
    kinds = [kind] if isinstance(kind, str) else list(kind)
    groups = layer_candidates(model)
    return [LayerSelection(name, module, config.for_layer(name), k)
            for k in kinds for name, module in groups[k] if config.applies_to(name)]
