"""Run a recipe: its passes chained on one model in one process, every step recorded.

    report = run_recipe(model, Recipe.load("examples/spquant.yaml"), PassContext(data=test, train_data=train))
    save_compressed(model, "out.safetensors")

The model is measured once on each side of every pass that changes it, in one instrumented pass
over the evaluation data each (:func:`snncompress.costing.measure.measure`: accuracy, loss, firing,
the hardware description, stored bits). The first measurement is the fp32 baseline, stored in
``CompressionState.baseline`` (unless the model already carries the baseline it was compressed
from); each pass receives the measurement of the model it is given as ``ctx.before``; the last one
gives the "after" figures and the hardware report, costed from its description without running the
model again. Analysis passes change nothing and are not re-measured. A PTQ recipe of one step
therefore runs over the evaluation data exactly twice.

Each step appends one record to ``CompressionState.history``: pass name, pass version, origin
(distribution), the full config and the metrics the pass returned, with the accuracy before and
after it. Wall-clock times are in the run report, never in the history (the file stays the same
bytes for the same seed). The single-pass commands run the same way, as one-step recipes
(:func:`run_single_pass`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from snncompress import __version__
from snncompress.costing.measure import Measurement, measure
from snncompress.errors import ConfigError, DomainError, SnnCompressError, did_you_mean
from snncompress.passes.base import PassConfig, PassContext, PassResult
from snncompress.passes.kit import SYMBOLIC_TARGETS, resolved_config
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
        before, after: :class:`~snncompress.costing.measure.Measurement` figures as dicts (accuracy in percent).
        baseline: the fp32 figures the compression started from (``CompressionState.baseline``).
        hardware: memory / ops / energy and their reductions against the baseline, when available.
        fidelity: the model as the run left it against the model the run was given, from the first and
            last measurements (no extra pass): agreement of predictions (percent) and each neuron layer's
            firing drift (:func:`snncompress.sim.fidelity.firing_drift`); None when not measured.
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
    fidelity: dict[str, Any] | None = None
    seconds: list[float] = field(default_factory=list)
    gates: list[dict[str, Any]] = field(default_factory=list)
    output: str | None = None
    measurements: list[Measurement] = field(default_factory=list, repr=False, compare=False)

    @property
    def last_measurement(self) -> Measurement | None:
        """The measurement of the model as the run left it (None when the run did not measure)."""
        return self.measurements[-1] if self.measurements else None

    @property
    def notes(self) -> list[str]:
        return [f"{s['pass']}: {note}" for s in self.steps for note in s.get("notes", [])]

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "measurements"}
        return jsonable(data)


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
    current: Measurement | None = None
    if options.measure:
        current = _measure(model, ctx, options, "accuracy before")
        report.measurements.append(current)
        report.before = current.to_dict()
        _record_baseline(model, ctx, current, options)
        if current.samples:
            log(f"before: {_accuracy(current)}, {current.storage_bits / 8192:.1f} KiB stored")
    report.baseline = {k: v for k, v in state.baseline.items() if k != "description"}
    last_transform = max((i for i, spec in enumerate(specs) if spec.kind == "transform"), default=-1)
    for index, (step, spec) in enumerate(zip(recipe.steps, specs, strict=True)):
        log(f"[{index + 1}/{len(recipe.steps)}] {step.name} ({spec.origin} {spec.version})")
        ctx.before = current
        config = resolved_config(model, step.config)
        start = time.perf_counter()
        result = _apply(spec, model, config, ctx, index)
        report.seconds.append(round(time.perf_counter() - start, 3))
        metrics = dict(result.metrics)
        notes = [str(n) for n in result.notes]
        if spec.kind == "transform" and options.measure:
            label = "accuracy after" if index == last_transform else f"accuracy after {step.name}"
            after = _measure(model, ctx, options, label)
            report.measurements.append(after)
            if current is not None:
                metrics.update(_fidelity_metrics(after, current))
                if "agreement_with_before" in metrics and (current.accuracy is None or after.accuracy is None):
                    notes.insert(0, f"accuracy n/a (unlabelled data); agreement with the model before: "
                                    f"{metrics['agreement_with_before']:.2f}% of predictions")
            if current is not None and current.accuracy is not None and after.accuracy is not None:
                metrics = {"accuracy_before": current.accuracy, "accuracy_after": after.accuracy,
                           "accuracy_drop": current.accuracy - after.accuracy, **metrics}
                notes.insert(0, f"accuracy {current.accuracy:.2f}% -> {after.accuracy:.2f}% "
                                f"({after.accuracy - current.accuracy:+.2f} points)")
                if spec.review is not None:
                    reviewed = spec.review(config, metrics)
                    metrics.update(reviewed.metrics)
                    notes.extend(str(n) for n in reviewed.notes)
            current = after
        if result.suggestions:
            ctx.suggestions[step.name] = dict(result.suggestions)
        record = {
            "pass": step.name,
            "version": spec.version,
            "origin": spec.origin,
            "snncompress_version": __version__,
            "config": step.config.model_dump(mode="json"),
            "metrics": jsonable(metrics),
            "notes": notes,
        }
        if result.suggestions:
            record["suggestions"] = jsonable(result.suggestions)
        state.history.append(record)
        report.steps.append({**record, **({"artifacts": dict(result.artifacts)} if result.artifacts else {})})
        for note in record["notes"]:
            log(f"    {note}")
    ctx.before = current
    if options.measure and current is not None:
        report.after = current.to_dict()
        if current.samples:
            log(f"after: {_accuracy(current)}, {current.storage_bits / 8192:.1f} KiB stored")
        if len(report.measurements) > 1:
            report.fidelity = _run_fidelity(report.measurements[-1], report.measurements[0])
            if report.fidelity is not None:
                log(f"after: {report.fidelity['summary']}")
        if options.hardware and current.description is not None:
            report.hardware = _costed(lambda: _hardware_figures(model, current, options), options.warn or _warn)
    return report


def _accuracy(measurement: Measurement) -> str:
    if measurement.accuracy is None:
        return "accuracy n/a (unlabelled data)"
    return f"accuracy {measurement.accuracy:.2f}%"


def _fidelity_metrics(after: Measurement, before: Measurement) -> dict[str, Any]:
    """A step's agreement with the model before it and each layer's firing drift (EMD), from the two
    measurements the run takes anyway; empty when they cannot be compared."""
    from snncompress.sim.fidelity import firing_drift

    if after.predictions is None or before.predictions is None or after.samples != before.samples:
        return {}
    fidelity = firing_drift(after, before)
    # to the 6 digits the file's history keeps, so that the run report and the file say the same
    return {"agreement_with_before": round(fidelity.agreement, 6),
            "firing_drift": {k: None if v.emd is None else round(v.emd, 6) for k, v in fidelity.layers.items()}}


def _run_fidelity(after: Measurement, before: Measurement) -> dict[str, Any] | None:
    """The run's output against its input (:attr:`RunReport.fidelity`)."""
    from snncompress.sim.fidelity import drift_summary, firing_drift

    if after.predictions is None or before.predictions is None or after.samples != before.samples:
        return None
    fidelity = firing_drift(after, before)
    out = {"reference": "the input model", **fidelity.to_dict(),
           "summary": drift_summary(fidelity, "the input model")}
    for layer in out["layers"].values():
        layer.pop("correlation", None)  # needs both models side by side: snncompress evaluate --reference
    return out


def _measure(model: nn.Module, ctx: PassContext, options: RunOptions, label: str) -> Measurement:
    return measure(model, ctx.data, name=options.model_name, describe=options.hardware,
                   show_progress=ctx.show_progress, description=label)


def _hardware_figures(model: nn.Module, current: Measurement, options: RunOptions) -> dict[str, Any] | None:
    """Memory, synaptic ops and energy per sample and their reductions, from the run's last measurement."""
    from snncompress.costing.report import ReportInputs, make_report

    if not get_state(model).baseline.get("description"):
        return None
    report = make_report(ReportInputs(model=model, name=options.model_name, energy=options.energy_table),
                         description=current.description, data_name=current.data)
    base, totals = report.baseline, report.totals
    return {
        "energy_table": options.energy_table,
        "memory_bits": totals.memory.total_bits,
        "synaptic_ops": totals.ops.synaptic_ops,
        "energy_pj": totals.energy.total_pj,
        "memory_reduction": base.memory_reduction if base else None,
        "ops_reduction": base.synaptic_ops_reduction if base else None,
        "ops_reduction_with_masks": base.ops_reduction_with_masks if base else None,
        "energy_reduction": base.energy_reduction if base else None,
        "warnings": list(report.warnings),
    }


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
    """Problems the recipe alone cannot show: missing data, needs no earlier pass meets, targets naming no
    layer, and what each pass's own ``check`` finds wrong with the model."""
    have = {"data"} if ctx.data is not None else set()
    if ctx.train_data is not None:
        have.add("train_data")
    have |= _model_provides(model)
    flags = {"data": "needs data; pass --data", "train_data": "needs training data; pass --train-data",
             "quantized_membrane": "needs a quantized membrane: quantize the membrane first (an earlier "
                                   "quantize step, or a model quantized already)",
             "ternary_membrane": "needs a ternary membrane: quantize with membrane_quant ternary first"}
    problems = []
    for i, (step, spec) in enumerate(zip(recipe.steps, specs, strict=True)):
        for need, reason in sorted(spec.requirements(step.config).items()):
            if need not in have:
                problems.append(f"passes[{i}] ({spec.name}): {reason or flags.get(need, f'needs {need}')}")
        have |= set(spec.provides(step.config))
    problems += _label_problems(recipe, specs, ctx)
    problems += target_problems(model, recipe)
    if not problems:  # a pass's own check may assume its targets exist
        for i, (step, spec) in enumerate(zip(recipe.steps, specs, strict=True)):
            problems += [f"passes[{i}] ({spec.name}): {p}" for p in spec.check(model, step.config)]
    if len(problems) == 1 and recipe.source is None:
        raise ConfigError(problems[0])  # a recipe built in code or by a command: one line
    if problems:
        raise RecipeError(problems, recipe.source)


def _label_problems(recipe: Recipe, specs: list, ctx: PassContext) -> list[str]:
    """A step that trains with a labelled loss (``ce``, ``tet``) on training data without labels."""
    train = ctx.train_data
    if train is None or getattr(train, "labelled", True):
        return []
    problems = []
    for i, (step, spec) in enumerate(zip(recipe.steps, specs, strict=True)):
        loss = getattr(step.config, "loss", None)
        if loss in ("ce", "tet") and "train_data" in spec.requirements(step.config):
            problems.append(f"passes[{i}] ({spec.name}): the training data {train.name} has no labels; loss {loss} "
                            "needs them: fine-tune with loss distill (--loss distill: against the model's own "
                            "outputs before the pass)")
    return problems


def _model_provides(model: nn.Module) -> set[str]:
    """Requirements the model meets as it is (a quantized membrane from an earlier run)."""
    from snncompress.state import has_state

    if not has_state(model):
        return set()
    out = set()
    for settings in get_state(model).neurons.values():
        membrane = settings.get("membrane")
        if membrane:
            out.add("quantized_membrane")
            if (membrane.get("levels_low"), membrane.get("levels_high")) == (-1, 1):
                out.add("ternary_membrane")
    return out


def check_targets(model: nn.Module, recipe: Recipe) -> None:
    """Raise RecipeError when a plain-name target or override names no module of ``model``."""
    problems = target_problems(model, recipe)
    if problems:
        raise RecipeError(problems, recipe.source)


def target_problems(model: nn.Module, recipe: Recipe) -> list[str]:
    """``passes[i]...targets[k]: the model has no module 'x'`` for every such name (``re:`` and the
    symbolic ``first`` / ``last`` aside). Each pass checks its own candidates again (synaptic or
    neuron layers) when it runs (:func:`snncompress.passes.kit.select_layers`)."""
    modules = [name for name, _ in model.named_modules() if name]
    problems = []
    for i, step in enumerate(recipe.steps):
        pools = [(f"passes[{i}].targets", step.config.targets or [])]
        pools += [(f"passes[{i}].overrides[{j}].targets", o.targets)
                  for j, o in enumerate(step.config.overrides)]
        for where, patterns in pools:
            for k, pattern in enumerate(patterns):
                if pattern.startswith("re:") or pattern in SYMBOLIC_TARGETS or pattern in modules:
                    continue
                hint = did_you_mean(pattern, modules, cutoff=0.6) or f"; modules: {', '.join(modules)}"
                problems.append(f"{where}[{k}]: the model has no module '{pattern}'{hint}")
    return problems


def _record_baseline(model: nn.Module, ctx: PassContext, before: Measurement, options: RunOptions) -> None:
    """Store the fp32 figures from the first measurement, unless the model carries the baseline it was
    compressed from."""
    state = get_state(model)
    if state.baseline:
        return
    if options.hardware and before.description is not None:
        from snncompress.costing.describe import description_to_dict

        state.baseline = {"model": options.model_name, "accuracy": before.accuracy, "data": before.data,
                          "time_steps": before.description.time_steps,
                          "description": description_to_dict(before.description)}
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
