"""The pass interface: a pass is a validated config plus a function (see STYLE.md).

    apply(model, config, ctx) -> PassResult

* ``config`` is a frozen pydantic model (``extra="forbid"``): plain data, no runtime state.
* ``ctx`` carries what the run provides: data, seed, progress output, figures already measured.
* The pass changes ``model`` in place (weights, hooks, its :class:`CompressionState`) and returns
  the metrics it measured; the pipeline records them in the pass history.

Per-layer targeting: ``targets`` (module names or ``re:`` patterns) limits a pass to some layers;
``overrides`` apply other config values to some layers, e.g. 8-bit weights for the first and last.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from snncompress.errors import ConfigError


class LayerOverride(BaseModel):
    """Config values for the layers matched by ``targets``; every other key is a config field."""

    model_config = ConfigDict(extra="allow", frozen=True)

    targets: list[str] = Field(min_length=1, description="Module names or 're:' regular expressions.")


class PassConfig(BaseModel):
    """Base class of every pass config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    targets: list[str] | None = Field(
        default=None, description="Limit the pass to these modules (names or 're:' patterns); all when absent.")
    overrides: list[LayerOverride] = Field(
        default_factory=list, description="Per-layer config values, first match wins.")

    def for_layer(self, layer: str) -> PassConfig:
        """This config with the first matching override applied (validated like the base config)."""
        for override in self.overrides:
            if matches(layer, override.targets):
                values = {k: v for k, v in (override.model_extra or {}).items()}
                merged = {**self.model_dump(exclude={"overrides"}), **values, "overrides": []}
                return type(self).model_validate(merged)
        return self

    def applies_to(self, layer: str) -> bool:
        return self.targets is None or matches(layer, self.targets)


def matches(layer: str, patterns: list[str]) -> bool:
    """True when ``layer`` equals a name in ``patterns`` or matches one of its ``re:`` patterns."""
    for pattern in patterns:
        if pattern.startswith("re:"):
            if re.search(pattern[3:], layer):
                return True
        elif pattern == layer:
            return True
    return False


def check_targets(model: nn.Module, config: PassConfig, candidates: list[str]) -> None:
    """Raise ConfigError when a plain-name target or override names no candidate layer."""
    pools = [("targets", config.targets or [])] + [("overrides", o.targets) for o in config.overrides]
    for where, patterns in pools:
        for pattern in patterns:
            if pattern.startswith("re:"):
                try:
                    re.compile(pattern[3:])
                except re.error as exc:
                    raise ConfigError(f"{where}: bad regular expression '{pattern}': {exc}") from exc
                continue
            if pattern not in candidates:
                import difflib

                close = difflib.get_close_matches(pattern, candidates, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else f"; layers: {', '.join(candidates)}"
                raise ConfigError(f"{where}: no layer named '{pattern}'{hint}")


@dataclass
class PassContext:
    """What a run gives each pass.

    Attributes:
        data: evaluation / calibration data (a :class:`~snncompress.data.DataBundle`), or None.
        train_data: training data for passes that fine-tune, or None.
        seed: random seed; a pass seeds its own generators from it.
        show_progress: draw progress bars on stderr.
        measured: figures measured earlier in the run (e.g. ``accuracy``), shared between passes.
    """

    data: Any = None
    train_data: Any = None
    seed: int = 0
    show_progress: bool = False
    measured: dict[str, Any] = field(default_factory=dict)


@dataclass
class PassResult:
    """What a pass measured. ``metrics`` go into the pass history; ``notes`` are shown to the user."""

    metrics: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PassSpec:
    """A registered pass.

    Attributes:
        name: the recipe and CLI name (``quantize``).
        config_class: its pydantic config.
        apply: ``apply(model, config, ctx) -> PassResult``.
        summary: one line for ``snncompress passes``.
        version: the pass's own version, recorded in the pass history.
        needs_data: the pass cannot run without ``ctx.data``.
        needs_training_data: the pass cannot run without ``ctx.train_data`` (for some configs;
            the pass checks).
        origin: the distribution that registered it (filled in by the registry).
        after: passes this one must follow when both are in a recipe (ordering rules are data,
            checked by :mod:`snncompress.recipes` before anything runs).
        before: passes this one must precede when both are in a recipe.
        max_per_recipe: how often the pass may appear in one recipe (None: no limit).
    """

    name: str
    config_class: type[PassConfig]
    apply: Callable[[nn.Module, PassConfig, PassContext], PassResult]
    summary: str
    version: str = "1"
    needs_data: bool = False
    origin: str = "snncompress"
    after: tuple[str, ...] = ()
    before: tuple[str, ...] = ()
    max_per_recipe: int | None = None
