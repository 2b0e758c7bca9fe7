"""The hardware report of a real model: describe it, find its baseline, build, print and write the report.

The baseline is the fp32 model a compressed model came from. The pipeline records it before the
first pass (:func:`record_baseline`, kept in ``CompressionState.baseline`` and in the compressed
file's header); ``--baseline MODEL`` replaces it with a model the user names.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from torch import nn

from snncompress.costing.describe import describe_model, description_from_dict, description_to_dict
from snncompress.data.loading import DataBundle
from snncompress.errors import DataError, InputError
from snncompress.hardware import CostModelConfig, EnergyTable, HardwareReport, build_report, load_energy_table
from snncompress.hardware.description import ModelDescription, NeuronLayer
from snncompress.state import get_state, has_state

__all__ = [
    "ReportInputs",
    "make_report",
    "output_paths",
    "print_report",
    "record_baseline",
    "stored_baseline",
    "write_outputs",
]

PLOT_NAMES = ("memory", "ops", "energy", "baseline")


@dataclass(frozen=True)
class ReportInputs:
    """What a report is built from.

    Attributes:
        model: The model to report on (with its compression state, if any).
        name: Its name in the report (the CLI passes the MODEL argument).
        data: Data to measure activity and accuracy on; None: shapes only, dense upper bounds, from
            one sample of the data set recorded with the baseline.
        baseline: A model to compare against instead of the recorded baseline.
        baseline_name: Its name in the report.
        energy: Energy table: "45nm", "7nm", a YAML path, or a loaded table.
        config: Cost-model choices (defaults: :class:`CostModelConfig`).
    """

    model: nn.Module
    name: str = "model"
    data: DataBundle | None = None
    baseline: nn.Module | None = None
    baseline_name: str | None = None
    energy: str | Path | EnergyTable = "45nm"
    config: CostModelConfig | None = None


def record_baseline(
    model: nn.Module,
    data: DataBundle,
    accuracy: float | None = None,
    spec: str = "baseline",
    *,
    show_progress: bool = False,
) -> ModelDescription:
    """Measure the uncompressed model and keep its description in its state, for later reports.

    Call it once, before the first pass changes the model: the passes copy the state along and the
    compressed file stores it in its header, so ``snncompress report FILE`` finds the baseline.

    Args:
        model: The fp32 model before compression.
        data: The data the pipeline evaluates on (activity and accuracy are measured on it).
        accuracy: Its accuracy in percent if already measured (None: measured here, same pass).
        spec: The model's name (the MODEL argument).
        show_progress: Draw a progress bar on stderr.

    Returns:
        The recorded description.
    """
    desc = describe_model(model, data, accuracy=accuracy, name=spec, show_progress=show_progress)
    get_state(model).baseline = {
        "model": spec,
        "accuracy": None if desc.accuracy is None else desc.accuracy * 100.0,
        "data": data.name,
        "time_steps": desc.time_steps,
        "description": description_to_dict(desc),
    }
    return desc


def stored_baseline(model: nn.Module) -> dict[str, Any]:
    """The baseline record kept in the model's state ({} when there is none)."""
    return get_state(model).baseline if has_state(model) else {}


def make_report(inputs: ReportInputs, *, show_progress: bool = False,
                description: ModelDescription | None = None, data_name: str | None = None) -> HardwareReport:
    """Build the hardware report of ``inputs.model`` against its baseline.

    The baseline is ``inputs.baseline`` when given, else the one recorded in the model's state.
    With data, activity, synaptic ops and accuracy are measured in one pass per model; without,
    both models are costed at the dense upper bound (a stored baseline's measurements are dropped
    so that the two compare like with like).

    Args:
        description: the model's description from a measurement already made (a run's last
            :class:`~snncompress.costing.measure.Measurement`): the model is not run again.
        data_name: the data set ``description`` was measured on.

    Raises:
        InputError: A bad energy table.
        DataError: No data given and none recorded with the model (layer shapes need one input).
    """
    table = inputs.energy if isinstance(inputs.energy, EnergyTable) else load_energy_table(inputs.energy)
    stored = stored_baseline(inputs.model)
    notes: list[str] = []
    measured_on = data_name if description is not None else (inputs.data.name if inputs.data is not None else None)
    if description is not None:
        desc = description
    elif inputs.data is not None:
        desc = describe_model(inputs.model, inputs.data, name=inputs.name, show_progress=show_progress)
    else:
        desc = _describe_shapes(inputs.model, inputs.name, stored)
    baseline_desc = None
    if inputs.baseline is not None:
        base_name = inputs.baseline_name or "baseline"
        if inputs.data is not None:
            baseline_desc = describe_model(
                inputs.baseline, inputs.data, name=base_name, show_progress=show_progress
            )
        else:
            baseline_desc = _describe_shapes(
                inputs.baseline, base_name, stored or stored_baseline(inputs.baseline)
            )
    elif stored.get("description"):
        baseline_desc = description_from_dict(stored["description"])
        if measured_on is None:
            baseline_desc = _strip_measurements(baseline_desc)
        elif stored.get("data") and stored["data"] != measured_on:
            notes.append(
                f"the baseline was measured on {stored['data']} and this model on {measured_on}: "
                "activity-based figures (synaptic ops, energy, accuracy) compare different data"
            )
    report = build_report(desc, table, baseline_desc, inputs.config)
    report.warnings.extend(notes + _regressions(report))
    return report


def _regressions(report: HardwareReport) -> list[str]:
    """Say so plainly when the compressed model costs more than its baseline."""
    b = report.baseline
    if b is None:
        return []
    out = []
    mem = report.totals.memory
    causes = [why for bits, why in ((mem.index, "sparse-format indices"), (mem.masks, "stored masks"),
                                    (mem.gates, "channel gates' parameters")) if bits]
    because = f"; this model stores {', '.join(causes)} the baseline has not" if causes else ""
    for what, ratio in (("memory", b.memory_reduction), ("energy", b.energy_reduction)):
        if ratio is not None and ratio < 1.0:
            out.append(f"{what} is {(1 / ratio - 1) * 100:.0f}% higher than the baseline {b.name}'s{because}"
                       + (" (see the per-layer warnings)" if what == "energy" else ""))
    return out


def _describe_shapes(model: nn.Module, name: str, stored: dict[str, Any]) -> ModelDescription:
    """Describe without measuring: shapes need one input, taken from the recorded data set."""
    from snncompress.data import DataOptions, load_data

    data_name = stored.get("data")
    if not data_name:
        raise DataError(
            f"{name}: the report needs data to know layer shapes and activity, and this model has no "
            "recorded data set: pass --data"
        )
    steps = stored.get("time_steps") or (stored.get("description") or {}).get("time_steps") or 8
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 1 << 20:
        raise DataError(f"{name}: the recorded time steps {steps!r} are not a positive integer; pass --data")
    try:
        # recorded in the file: a data set it names is read, a function it names is never called
        data = load_data(data_name, DataOptions(limit=1, time_steps=int(steps)), allow_code=False)
    except InputError as exc:
        fix = "" if "pass --data" in str(exc) else "; pass --data"
        raise DataError(f"{name}: cannot load the recorded data set ({exc}){fix}") from exc
    return describe_model(model, data, measure=False, name=name)


def _strip_measurements(desc: ModelDescription) -> ModelDescription:
    layers = []
    for layer in desc.layers:
        if isinstance(layer, NeuronLayer):
            layers.append(replace(layer, spikes_per_sample=None))
        else:
            layers.append(replace(layer, input_spikes_per_sample=None, measured_synaptic_ops_per_sample=None))
    return replace(desc, layers=tuple(layers))


def print_report(
    model: nn.Module,
    data: DataBundle | None,
    console: Console,
    *,
    name: str = "model",
    baseline: nn.Module | None = None,
    energy: str | Path | EnergyTable = "45nm",
    show_progress: bool = False,
    description: ModelDescription | None = None,
) -> HardwareReport:
    """Build the report of ``model`` (against its recorded baseline) and print it on ``console``.

    With ``description`` (from a measurement already made) the model is not run again.

    What ``snncompress demo`` calls after compressing. Returns the report for further use
    (``report.totals``, ``report.baseline``, :func:`write_outputs`).
    """
    from snncompress.hardware.render import render_rich

    report = make_report(
        ReportInputs(model, name, data, baseline, None if baseline is None else "baseline", energy),
        show_progress=show_progress, description=description,
        data_name=data.name if data is not None else None,
    )
    render_rich(report, console)
    return report


def output_paths(
    *,
    json_path: Path | None = None,
    html: Path | None = None,
    markdown: Path | None = None,
    with_baseline: bool = True,
) -> list[Path]:
    """Every file :func:`write_outputs` would write: the Markdown's PNG plots beside it included."""
    paths = [p for p in (json_path, html) if p is not None]
    if markdown is not None:
        from snncompress.hardware.render import markdown_png_path

        markdown = Path(markdown)
        names = PLOT_NAMES if with_baseline else PLOT_NAMES[:-1]
        paths += [markdown] + [markdown_png_path(markdown, n) for n in names]
    return [Path(p) for p in paths]


def check_outputs(paths: list[Path], force: bool) -> None:
    """Refuse before any work when an output exists (without ``force``) or its folder is missing.

    Raises:
        InputError: naming the first offending path.
    """
    from snncompress.fileformat.atomic import check_output_path

    for path in paths:
        check_output_path(path, force)


def write_outputs(
    report: HardwareReport,
    *,
    json_path: Path | None = None,
    html: Path | None = None,
    markdown: Path | None = None,
    force: bool = False,
) -> list[Path]:
    """Write the report as JSON (``report_schema.json``), HTML and/or Markdown with PNG plots.

    Every file is written atomically; nothing is written when one of them exists without ``force``.

    Returns:
        Every file written.

    Raises:
        InputError: An output exists and ``force`` is False, or its folder does not exist.
    """
    from snncompress.fileformat.atomic import write_text_atomic
    from snncompress.hardware.render import write_html, write_markdown

    check_outputs(
        output_paths(
            json_path=json_path, html=html, markdown=markdown, with_baseline=report.baseline is not None
        ),
        force,
    )
    written: list[Path] = []
    if json_path is not None:
        write_text_atomic(json_path, report.model_dump_json(indent=2) + "\n")
        written.append(Path(json_path))
    if html is not None:
        written.append(write_html(report, html))
    if markdown is not None:
        written.extend(write_markdown(report, markdown))
    return written
