"""Run a recipe: its passes chained on one model in one process, every step recorded.

    report = run_recipe(model, Recipe.load("examples/spquant.yaml"), PassContext(data=test, train_data=train))
    save_compressed(model, "out.safetensors")

Before the first pass the model's fp32 figures are measured and stored in
``CompressionState.baseline`` (unless the model already carries the baseline it was compressed
from); after the last pass they are measured again. Each step appends one record to
``CompressionState.history``: pass name, pass version, origin (distribution), the full config and
the metrics the pass returned. The single-pass commands run the same way, as one-step recipes
(:func:`run_single_pass`).
"""

from __future__ import annotations

import difflib
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from snncompress import __version__
from snncompress.errors import DomainError, SnnCompressError
from snncompress.pipeline.measure import (
    hardware_available,
    hardware_figures,
    measure_model,
    record_hardware_baseline,
)
from snncompress.passes.base import PassConfig, PassContext, PassResult
from snncompress.passes.registry import PassRegistry, default_registry
from snncompress.recipes import Recipe, RecipeError
from snncompress.state import get_state


@dataclass(frozen=True)
class RunOptions:
    """How :func:`run_recipe` measures and reports.

    Attributes:
        model_name: the model's name in the baseline and the hardware report.
        measure: measure accuracy and costs before and after (needs ``ctx.data`` for accuracy).
        hardware: also cost the model with the hardware model (memory, ops, energy) when available.
        energy_table: the energy table for the hardware figures (``45nm``, ``7nm`` or a YAML file).
        registry: where pass names are looked up (default: the process-wide registry).
        log: called with one line per step (the CLI prints it on stderr).
        warn: called with warnings, even when ``log`` is quiet (default: a line on stderr).
    """

    model_name: str = "model"
    measure: bool = True
    hardware: bool = True
    energy_table: str = "45nm"
    registry: PassRegistry | None = None
    log: Callable[[str], None] | None = None
    warn: Callable[[str], None] | None = None


@dataclass
class RunReport:
    """What a run did: the steps as recorded in the pass history, and the figures before and after.

    Attributes:
        recipe: the recipe that ran (``Recipe.to_dict()``).
        steps: this run's pass-history records.
        before, after: :class:`~snncompress.pipeline.measure.ModelFigures` as dicts (accuracy in percent).
        baseline: the fp32 figures the compression started from (``CompressionState.baseline``).
        hardware: memory / ops / energy and their reductions against the baseline, when available.
        seconds: wall time of each step.
        gates: quality-gate results (filled in by the CLI).
        output: the file written (filled in by the CLI).
    """

    recipe: dict[str, Any]
    steps: list[dict[str, Any]] = field(default_factory=list)
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)
    baseline: dict[str, Any] = field(default_factory=dict)
    hardware: dict[str, Any] | None = None
    seconds: list[float] = field(default_factory=list)
    gates: list[dict[str, Any]] = field(default_factory=list)
    output: str | None = None

    @property
    def notes(self) -> list[str]:
        return [f"{s['pass']}: {note}" for s in self.steps for note in s.get("notes", [])]

    def to_dict(self) -> dict[str, Any]:
        return jsonable(asdict(self))


def run_recipe(model: nn.Module, recipe: Recipe | Mapping[str, Any] | str | Path, ctx: PassContext,
               options: RunOptions | None = None) -> RunReport:
    """Run every pass of ``recipe`` on ``model`` in place.

    Args:
        model: the model; it is changed in place (weights, hooks, compression state).
        recipe: a :class:`Recipe`, a parsed document, or a path to a YAML/TOML file.
        ctx: data, training data, seed and progress for the passes.
        options: naming, measurement and logging (:class:`RunOptions`).

    Returns:
        The run's report; the same step records are in ``get_state(model).history``.

    Raises:
        RecipeError: the recipe is invalid, or names layers the model does not have (before any pass).
        ConfigError: a pass needs data and ``ctx.data`` is None (before any pass).
        SnnCompressError: a pass failed; the message names the step.
    """
    options = options or RunOptions()
    registry = options.registry or default_registry()
    recipe = as_recipe(recipe, registry)
    specs = [registry.get(step.name) for step in recipe.steps]
    _check_before_run(model, recipe, specs, ctx)
    log = options.log or (lambda _line: None)
    report = RunReport(recipe=recipe.to_dict())
    state = get_state(model)
    if options.measure:
        before = measure_model(model, ctx.data, show_progress=ctx.show_progress,
                               description="accuracy before")
        report.before = {**before.to_dict(), "data": getattr(ctx.data, "name", None)}
        _record_baseline(model, ctx, before, options)
        if before.accuracy is not None:
            ctx.measured["accuracy"] = before.accuracy
            log(f"before: accuracy {before.accuracy:.2f}%, {before.storage_bits / 8192:.1f} KiB stored")
    report.baseline = {k: v for k, v in state.baseline.items() if k != "description"}
    for index, (step, spec) in enumerate(zip(recipe.steps, specs, strict=True)):
        log(f"[{index + 1}/{len(recipe.steps)}] {step.name} ({spec.origin} {spec.version})")
        accuracy_before = ctx.measured.get("accuracy")
        start = time.perf_counter()
        result = _apply(spec, model, step.config, ctx, index)
        report.seconds.append(round(time.perf_counter() - start, 3))
        if ctx.measured.get("accuracy") == accuracy_before:
            ctx.measured.pop("accuracy", None)  # the model changed; a stale figure must not be reused
        record = {
            "pass": step.name,
            "version": spec.version,
            "origin": spec.origin,
            "snncompress_version": __version__,
            "config": step.config.model_dump(mode="json"),
            "metrics": jsonable(result.metrics),
            "notes": [str(n) for n in result.notes],
        }
        state.history.append(record)
        report.steps.append(record)
        for note in record["notes"]:
            log(f"    {note}")
    if options.measure:
        after = measure_model(model, ctx.data, show_progress=ctx.show_progress, description="accuracy after")
        report.after = {**after.to_dict(), "data": getattr(ctx.data, "name", None)}
        if after.accuracy is not None:
            ctx.measured["accuracy"] = after.accuracy
            log(f"after: accuracy {after.accuracy:.2f}%, {after.storage_bits / 8192:.1f} KiB stored")
        if options.hardware and ctx.data is not None and hardware_available():
            report.hardware = _costed(lambda: hardware_figures(model, ctx.data, options.model_name,
                                                               options.energy_table), options.warn or _warn)
    return report


def _costed(compute: Callable[[], Any], log: Callable[[str], None]) -> Any:
    """Run a hardware-model step; its failure is reported, not fatal (the compression itself worked)."""
    try:
        return compute()
    except Exception as exc:  # noqa: BLE001 - reported on stderr and in the run report
        message = f"hardware figures unavailable: {type(exc).__name__}: {exc}"
        log(f"warning: {message}")
        return {"error": message}


def run_single_pass(name: str, model: nn.Module, config: Mapping[str, Any] | PassConfig, ctx: PassContext,
                    options: RunOptions | None = None) -> RunReport:
    """Run one pass as a one-step recipe (what ``snncompress quantize ...`` does).

    Config problems are named by CLI flag (``--weight-quant: ...``).
    """
    options = options or RunOptions()
    recipe = Recipe.single(name, config, registry=options.registry or default_registry())
    return run_recipe(model, recipe, ctx, options)


def as_recipe(recipe: Recipe | Mapping[str, Any] | str | Path, registry: PassRegistry) -> Recipe:
    if isinstance(recipe, Recipe):
        return recipe
    if isinstance(recipe, str | Path):
        return Recipe.load(recipe, registry=registry)
    if isinstance(recipe, Mapping):
        return Recipe.from_dict(recipe, registry=registry)
    raise TypeError(f"expected a Recipe, a mapping or a path, got {type(recipe).__name__}")


def _check_before_run(model: nn.Module, recipe: Recipe, specs: list, ctx: PassContext) -> None:
    """Problems the recipe alone cannot show: missing data, targets naming no module."""
    problems = [f"passes[{i}] ({spec.name}): needs data; pass --data"
                for i, spec in enumerate(specs) if spec.needs_data and ctx.data is None]
    problems += target_problems(model, recipe)
    if problems:
        raise RecipeError(problems, recipe.source)


def check_targets(model: nn.Module, recipe: Recipe) -> None:
    """Raise RecipeError when a plain-name target or override names no module of ``model``."""
    problems = target_problems(model, recipe)
    if problems:
        raise RecipeError(problems, recipe.source)


def target_problems(model: nn.Module, recipe: Recipe) -> list[str]:
    """``passes[i]...targets[k]: the model has no module 'x'`` for every such name (``re:`` aside).

    Each pass checks its own candidates again (synaptic or neuron layers) when it runs.
    """
    modules = [name for name, _ in model.named_modules() if name]
    problems = []
    for i, step in enumerate(recipe.steps):
        pools = [(f"passes[{i}].targets", step.config.targets or [])]
        pools += [(f"passes[{i}].overrides[{j}].targets", o.targets)
                  for j, o in enumerate(step.config.overrides)]
        for where, patterns in pools:
            for k, pattern in enumerate(patterns):
                if not pattern.startswith("re:") and pattern not in modules:
                    close = difflib.get_close_matches(pattern, modules, n=1)
                    hint = f"did you mean '{close[0]}'?" if close else f"modules: {', '.join(modules)}"
                    problems.append(f"{where}[{k}]: the model has no module '{pattern}'; {hint}")
    return problems


def _record_baseline(model: nn.Module, ctx: PassContext, before: Any, options: RunOptions) -> None:
    """Store the fp32 figures, unless the model carries the baseline it was compressed from."""
    state = get_state(model)
    if state.baseline:
        return
    if options.hardware and ctx.data is not None and hardware_available():
        error = _costed(
            lambda: record_hardware_baseline(model, ctx.data, before.accuracy, options.model_name),
            options.warn or _warn)
        if error:
            state.baseline.clear()
    if state.history:
        state.baseline["note"] = "measured on an already compressed input: no fp32 baseline was recorded"
    state.baseline.update(
        model=options.model_name,
        accuracy=before.accuracy,
        samples=before.samples,
        data=getattr(ctx.data, "name", None),
        parameters=before.parameters,
        storage_bits=before.storage_bits,
    )
    if ctx.data is not None and hasattr(ctx.data, "options"):
        from snncompress.data.loading import run_settings

        state.baseline["run"] = run_settings(ctx.data)  # later commands run the file the same way


def _apply(spec: Any, model: nn.Module, config: PassConfig, ctx: PassContext, index: int) -> PassResult:
    """Run one pass; errors name the step (``passes[1] (quantize): ...``)."""
    where = f"passes[{index}] ({spec.name})"
    try:
        result = spec.apply(model, config, ctx)
    except SnnCompressError as exc:
        if any("__init__" in vars(k) for k in type(exc).__mro__ if issubclass(k, SnnCompressError)):
            raise  # an error type with its own fields: keep it as it is
        raise type(exc)(f"{where}: {exc}") from exc
    except Exception as exc:
        raise DomainError(f"{where} from {spec.origin} failed: {type(exc).__name__}: {exc}") from exc
    if result is None:
        result = PassResult()
    if not isinstance(result, PassResult):
        raise DomainError(f"{where} from {spec.origin} returned {type(result).__name__}, not a PassResult")
    return result


def _warn(message: str) -> None:
    import sys

    sys.stderr.write(message + "\n")


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON types (tensors, numpy scalars, tuples, paths, dataclasses, pydantic)."""
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, set | frozenset):
        return sorted(jsonable(v) for v in value)
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return jsonable(value.detach().cpu().tolist())
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "model_dump"):
        return jsonable(value.model_dump(mode="json"))
    if is_dataclass(value) and not isinstance(value, type):
        return jsonable(asdict(value))
    if hasattr(value, "item"):  # numpy scalars
        return jsonable(value.item())
    return str(value)
