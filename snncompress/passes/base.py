"""The pass interface: a pass is a validated config plus a function (``../shared/STYLE.md``).

    apply(model, config, ctx) -> PassResult

* ``config`` is a frozen pydantic model (``extra="forbid"``): plain data, no runtime state.
* ``ctx`` carries what the run provides: data, training data, seed, progress output, the typed
  measurement of the model as it is before this pass (``ctx.before``) and the suggestions of
  earlier passes (``ctx.suggestion(...)``).
* A *transform* pass changes ``model`` in place (weights, hooks, its :class:`CompressionState`);
  the pipeline measures the model after it (accuracy, hardware figures) -- the pass does not
  evaluate on the evaluation data itself. An *analysis* pass changes nothing and is not re-measured
  after; it returns figures and suggestions (e.g. a clipping boundary) that later passes read.
* A pass declares what it needs per config (:attr:`PassSpec.requires`): the pipeline checks every
  step's needs against the data given and the passes before it, before anything runs.
* Layer selection is the kit's job (:func:`snncompress.passes.kit.select_layers`).

Per-layer targeting: ``targets`` (module names or ``re:`` patterns) limits a pass to some layers;
``overrides`` apply other config values to some layers, e.g. 8-bit weights for the first and last.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from snncompress.errors import ConfigError, did_you_mean

if TYPE_CHECKING:
    from snncompress.costing.measure import Measurement
    from snncompress.data.loading import DataBundle

#: What a pass can require of a run, per config (checked before anything runs):
#: ``data`` (evaluation data), ``train_data`` (training data), ``quantized_membrane`` (a neuron
#: layer whose stored membrane is quantized, by an earlier pass or already in the model),
#: ``ternary_membrane`` (a ternary one).
REQUIREMENTS = ("data", "train_data", "quantized_membrane", "ternary_membrane")
PassKind = Literal["transform", "analysis"]


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
                hint = did_you_mean(pattern, candidates) or f"; layers: {', '.join(candidates)}"
                raise ConfigError(f"{where}: no layer named '{pattern}'{hint}")


@dataclass
class PassContext:
    """What a run gives each pass.

    Attributes:
        data: evaluation / calibration data (a :class:`~snncompress.data.DataBundle`), or None.
        train_data: training data for passes that fine-tune, or None.
        seed: random seed; a pass seeds its own generators from it.
        show_progress: draw progress bars on stderr.
        before: the measurement of the model as this pass receives it (accuracy, firing, hardware
            description), or None when the run does not measure.
        suggestions: what earlier passes of the run suggested, by pass name (``{"analyze": {"clip": -2.0}}``).
    """

    data: DataBundle | None = None
    train_data: DataBundle | None = None
    seed: int = 0
    show_progress: bool = False
    before: Measurement | None = None
    suggestions: dict[str, dict[str, Any]] = field(default_factory=dict)

    def suggestion(self, key: str) -> Any:
        """The latest value an earlier pass suggested for ``key`` (None when none did)."""
        for values in reversed(list(self.suggestions.values())):
            if key in values:
                return values[key]
        return None


@dataclass
class PassResult:
    """What a pass measured.

    Attributes:
        metrics: go into the pass history (JSON-able values).
        notes: shown to the user, one line each.
        suggestions: values later passes of the recipe may take (``clip: auto`` reads ``clip``).
        artifacts: files the pass wrote (figures), by kind.
    """

    metrics: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    suggestions: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)


def _nothing(_config: Any) -> tuple[str, ...]:
    return ()


def _no_problems(_model: Any, _config: Any) -> tuple[str, ...]:
    return ()


@dataclass(frozen=True)
class PassSpec:
    """A registered pass.

    Attributes:
        name: the recipe and CLI name (``quantize``).
        config_class: its pydantic config.
        apply: ``apply(model, config, ctx) -> PassResult``.
        summary: one line for ``snncompress passes``.
        version: the pass's own version, recorded in the pass history and checked when a file's
            history is read back into a recipe.
        kind: ``transform`` (changes the model; measured after) or ``analysis`` (changes nothing).
        requires: ``requires(config)`` -> the :data:`REQUIREMENTS` this config needs.
        provides: ``provides(config)`` -> the requirements a later pass may count on after this one
            (e.g. ``quantized_membrane``).
        needs_data: shorthand for a pass that always requires ``data`` (plugins written before
            ``requires`` existed).
        origin: the distribution that registered it (filled in by the registry).
        after: passes this one must follow when both are in a recipe (ordering rules are data,
            checked by :mod:`snncompress.recipes` before anything runs).
        before: passes this one must precede when both are in a recipe.
        max_per_recipe: how often the pass may appear in one recipe (None: no limit).
        check: ``check(model, config)`` -> problems (one line each) that make this config impossible
            on ``model`` as the recipe receives it (a layer of the wrong kind, a model style the pass
            cannot handle). The pipeline calls it for every step before anything runs, so such a
            mistake is one error line instead of a failure after minutes of earlier passes. Check only
            what no earlier pass can change (layer names, types, the model's structure).
        review: ``review(config, metrics) -> PassResult``, called once the accuracy after the pass is
            measured (``metrics`` holds ``accuracy_before/after/drop`` and the pass's own metrics): its
            metrics and notes are added to the step's (e.g. the quantize pass saying PTQ lost too much).
    """

    name: str
    config_class: type[PassConfig]
    apply: Callable[[nn.Module, PassConfig, PassContext], PassResult]
    summary: str
    version: str = "1"
    kind: PassKind = "transform"
    requires: Callable[[PassConfig], Iterable[str]] = _nothing
    provides: Callable[[PassConfig], Iterable[str]] = _nothing
    needs_data: bool = False
    origin: str = "snncompress"
    after: tuple[str, ...] = ()
    before: tuple[str, ...] = ()
    max_per_recipe: int | None = None
    check: Callable[[nn.Module, PassConfig], Iterable[str]] = _no_problems
    review: Callable[[PassConfig, dict[str, Any]], PassResult] | None = None

    def requirements(self, config: PassConfig) -> dict[str, str | None]:
        """What this pass needs for ``config``, each with the pass's own reason (None: the generic one).

        ``requires`` may return names, or a mapping of names to the message a user sees when the
        need is not met (``{"train_data": "QAT needs training data: pass --train-data"}``).
        """
        raw = self.requires(config)
        needs = dict(raw) if isinstance(raw, Mapping) else dict.fromkeys(raw)
        if self.needs_data:
            needs.setdefault("data", None)
        return needs
