"""What every compressing command does, once: ``snncompress run`` and each single-pass command.

Load the model and data, run the recipe (:func:`snncompress.pipeline.run.run_recipe`), save the
output atomically, write the JSON, print a summary, then enforce the quality gates — after the
output and the JSON are written, so a CI log can show them. A single-pass command is thin::

    def quantize(model: c.ModelArg, output: OutputOpt, gates: GateOpt = None, ..., mode: str = "ptq", ...):
        job = CompressJob(model=model, output=output, data=data, gates=gates or [], ...)
        run_pass_command("quantize", {"mode": mode, "weight_quant": weight_quant, ...}, job)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from snncompress.cli import common as c

OutputOpt = Annotated[Path, typer.Option(
    "--output", "-o", help="Where to write the compressed model (.safetensors).")]
GateOpt = Annotated[list[str] | None, typer.Option(
    "--gate", help="Quality gate NAME=VALUE, repeatable: max-accuracy-drop (points), min-agreement (percent of "
                   "predictions equal to the input model's; no labels needed), min-memory-reduction, "
                   "min-ops-reduction, min-energy-reduction (x); bit-exact (integer-only reference, "
                   "no value). A failed gate exits 1.")]
TrainDataOpt = Annotated[str | None, typer.Option(
    "--train-data", help="Training data for passes that fine-tune (default: the train split for "
                         "--data digits; other data sets need it given).")]
EnergyOpt = Annotated[str, typer.Option(
    "--energy", help="Energy table for ops/energy figures: 45nm, 7nm or a YAML file.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or notes on stderr.")]
RunJsonOpt = Annotated[Path | None, typer.Option(
    "--json", help="Also write the run report (steps, figures, gates) as JSON to this file ('-': stdout).")]


@dataclass
class JobOptions:
    """The options every compressing command shares (its flags, as data)."""

    model: str
    output: Path
    data: str | None = None
    train_data: str | None = None
    weights: Path | None = None
    trust_pickle: bool = False
    trust_code: bool = False
    encoding: str = "direct"
    time_steps: int = 8
    batch_size: int = 128
    limit: int | None = None
    seed: int = 0
    force: bool = False
    json_file: Path | None = None
    gates: list[str] = field(default_factory=list)
    energy: str = "45nm"
    quiet: bool = False
    device: str = "auto"
    nir_dt: float | None = None
    nir_reset: str | None = None
    nir_spike: str | None = None
    nir_producer: str | None = None


CompressJob = JobOptions  # the name single-pass commands and plugins used before the library job existed


def run_pass_command(name: str, config: Mapping[str, Any], job: JobOptions):
    """A single-pass command: the pass as a one-step recipe (problems named by flag)."""
    from snncompress.recipes import Recipe

    return run_job(lambda: Recipe.single(name, dict(config)), job)


def run_job(make_recipe: Callable[[], Any], job: JobOptions):
    """Run :func:`snncompress.pipeline.job.compress`, then write the JSON, print the summary and
    enforce the gates (GateFailure, exit 1, after the output and the JSON are written).

    Returns:
        The :class:`~snncompress.pipeline.job.JobResult`.
    """
    from snncompress.fileformat.atomic import check_output_path
    from snncompress.pipeline.job import CompressJob as LibraryJob
    from snncompress.pipeline.job import compress
    from snncompress.refs import is_ref

    to_stdout = str(job.json_file) == "-"
    if job.json_file is not None and not to_stdout:
        check_output_path(job.json_file, job.force)
    log = (lambda _line: None) if job.quiet else note
    trusted = c.trust_code_requested(job.trust_code)
    typed = any(is_ref(x) for x in (job.model, job.data, job.train_data) if x is not None)
    nir_options = c.nir_read_options(job.model, job.nir_dt, job.nir_reset, job.nir_spike, job.nir_producer)
    with c.user_modules_importable(typed or trusted or job.trust_pickle):  # the user's modules, never a file's say-so
        result = compress(LibraryJob(
            model=job.model, recipe=make_recipe, output=job.output, data=job.data, train_data=job.train_data,
            weights=job.weights, trust_pickle=job.trust_pickle, trust_code=trusted, encoding=job.encoding,
            time_steps=job.time_steps, batch_size=job.batch_size, limit=job.limit, seed=job.seed, force=job.force,
            gates=job.gates, energy=job.energy, show_progress=not job.quiet, log=log, warn=note,
            device=job.device, nir_options=nir_options))
    from snncompress.sim import distributed

    if not distributed.is_main():  # under torchrun: rank 0 prints and writes; the gates still set the exit code
        result.enforce()
        return result
    payload = result.to_dict()
    if to_stdout:
        c.print_json(payload)
    else:
        if job.json_file is not None:
            c.write_json(job.json_file, payload)
        print_summary(result.report, result.figures)
    log(f"wrote {result.output}" + (f" and {job.json_file}" if job.json_file and not to_stdout else ""))
    result.enforce()
    return result


def note(line: str) -> None:
    """One line of progress on stderr, not wrapped, brackets kept (``[1/2] quantize``)."""
    c.err_console.print(line, soft_wrap=True, markup=False, highlight=False)


def print_summary(report, metrics: Mapping[str, Any]) -> None:
    """Steps, before/after figures and gates as tables on stdout."""
    table = Table(title="passes")
    for col in ("#", "pass", "origin", "version", "seconds"):
        table.add_column(col, justify="right" if col in ("#", "seconds") else "left")
    for i, (step, seconds) in enumerate(zip(report.steps, report.seconds, strict=False)):
        table.add_row(str(i), step["pass"], step["origin"], step["version"], f"{seconds:.1f}")
    c.console.print(table)
    figures = Table(title="before -> after")
    for col in ("figure", "before", "after"):
        figures.add_column(col, justify="left" if col == "figure" else "right")
    figures.add_row("accuracy (%)", *(_fmt(side.get("accuracy")) if side.get("accuracy") is not None or
                                      not side.get("samples") else "n/a" for side in (report.before, report.after)))
    figures.add_row("stored KiB", _fmt(_kib(report.before.get("storage_bits"))),
                    _fmt(_kib(report.after.get("storage_bits"))))
    c.console.print(figures)
    if report.fidelity:
        c.console.print(report.fidelity["summary"], soft_wrap=True, highlight=False, markup=False)
    for key in ("memory_reduction", "ops_reduction", "energy_reduction"):
        if metrics.get(key) is not None:
            worse = " (worse)" if metrics[key] < 1 else ""
            masks = metrics.get("ops_reduction_with_masks") if key == "ops_reduction" else None
            extra = f"; {masks:.2f}x counting the runtime masks' own work" if masks is not None else ""
            c.console.print(f"{key.replace('_', ' ')}: {metrics[key]:.2f}x{worse}{extra}")
    for gate in report.gates:
        mark = "[green]PASS[/green]" if gate["passed"] else "[red]FAIL[/red]"
        c.console.print(f"{mark} {escape(gate['reason'])}", soft_wrap=True, highlight=False)


def _kib(bits: Any) -> float | None:
    return None if bits is None else bits / 8192


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:,.2f}"
