"""``snncompress sweep``: evaluate a design space's points, select the best, write its model.

A thin layer over :func:`snncompress.sweep.run_sweep`: a progress bar with the best point so far
on stderr, the points (or the Pareto front) as a table on stdout, ``--json``, ``--plot``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from snncompress.cli import common as c
from snncompress.cli.compress import EnergyOpt, GateOpt, OutputOpt, QuietOpt, TrainDataOpt, note

EPILOG = """Example (tinySNN-style: weight schemes x precisions x rounding, best R for mu 0.5):

  snncompress sweep demo --data digits --space examples/sweep-tinysnn.yaml --mu 0.5
  --max-memory 8KiB --min-accuracy 0.9 -o best.safetensors --results sweep.jsonl --plot pareto.png

Resume an interrupted sweep (finished points are not redone):  add --storage sqlite:///sweep.db
Several machines: the same --storage URL (a database all can reach) and the same --study on each.

Exit codes: 0 success; 1 no point meets the constraints, or a worker failed; 2 bad usage, a bad
space file or bad input."""

SpaceOpt = Annotated[Path, typer.Option("--space", "-s", help="Space file (YAML): a base recipe and its choices.")]
MuOpt = Annotated[float, typer.Option("--mu", help="Memory weight of the reward R = acc - mu * M/M0 (tinySNN Eq. 3).")]
MaxMemoryOpt = Annotated[str | None, typer.Option(
    "--max-memory", help="Constraint: the model's memory (hardware report) at most this, e.g. 64KiB, 1.5MB, 4096.")]
MinAccuracyOpt = Annotated[float | None, typer.Option(
    "--min-accuracy", help="Constraint: accuracy at least this fraction (0.9 = 90%).")]
ObjectiveOpt = Annotated[str, typer.Option(
    "--objective", help="reward (highest R) or pareto (the front of accuracy, memory and energy; "
                        "the chosen point is its highest R).")]
SamplerOpt = Annotated[str, typer.Option(
    "--sampler", help="auto (grid when --trials covers the space, else TPE for reward, NSGA-II for pareto), "
                      "grid, tpe or nsga2.")]
TrialsOpt = Annotated[int | None, typer.Option("--trials", help="Points to evaluate in all (default: the whole grid).")]
JobsOpt = Annotated[int, typer.Option("--jobs", "-j", help="Worker processes on this machine (one torch thread each).")]
StorageOpt = Annotated[str | None, typer.Option(
    "--storage", help="Optuna storage URL, e.g. sqlite:///sweep.db: resume an interrupted sweep, share one.")]
StudyOpt = Annotated[str, typer.Option("--study", help="Study name in the storage (one per sweep).")]
ResultsOpt = Annotated[Path | None, typer.Option(
    "--results", help="JSONL file each finished point is appended to.")]
PlotOpt = Annotated[Path | None, typer.Option("--plot", help="Write the Pareto plot (PNG) here.")]


def register(app: typer.Typer) -> None:
    app.command("sweep", epilog=EPILOG)(sweep)


def sweep(
    model: c.ModelArg,
    data: c.DataOpt,
    space: SpaceOpt,
    output: OutputOpt,
    mu: MuOpt = 0.5,
    max_memory: MaxMemoryOpt = None,
    min_accuracy: MinAccuracyOpt = None,
    objective: ObjectiveOpt = "reward",
    sampler: SamplerOpt = "auto",
    trials: TrialsOpt = None,
    jobs: JobsOpt = 1,
    storage: StorageOpt = None,
    study: StudyOpt = "snncompress-sweep",
    results: ResultsOpt = None,
    plot: PlotOpt = None,
    json_file: c.JsonOpt = None,
    gates: GateOpt = None,
    train_data: TrainDataOpt = None,
    weights: c.WeightsOpt = None,
    trust_pickle: c.TrustPickleOpt = False,
    trust_code: c.TrustCodeOpt = False,
    encoding: c.EncodingOpt = "direct",
    time_steps: c.TimeStepsOpt = 8,
    batch_size: c.BatchSizeOpt = 128,
    limit: c.LimitOpt = None,
    seed: c.SeedOpt = 0,
    energy: EnergyOpt = "45nm",
    force: c.ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Compress MODEL with every point of a design space (each a recipe), measure accuracy, memory,
    operations and energy, and keep the best: the highest reward R = acc - mu * M/M0 within the
    constraints, or the Pareto front. Built on Optuna (pip install 'snncompress[sweep]')."""
    from snncompress.sweep import Constraints, SweepJob, parse_memory, run_sweep

    constraints = Constraints(max_memory_bytes=parse_memory(max_memory) if max_memory is not None else None,
                              min_accuracy=min_accuracy)
    c.check_json_target(json_file, force)
    if plot is not None:
        from snncompress.fileformat.atomic import check_output_path

        check_output_path(plot, force)
    from snncompress.refs import is_ref

    trusted = c.trust_code_requested(trust_code)
    typed = any(is_ref(x) for x in (model, data, train_data) if x is not None)
    # the user's own modules (MODEL, --data) are found in the working directory, as for every command
    with c.user_modules_importable(typed or trusted or trust_pickle), _ProgressBar(enabled=not quiet) as bar:
        result = run_sweep(SweepJob(
            model=model, data=data, space=space, output=output, train_data=train_data, weights=weights,
            trust_pickle=trust_pickle, trust_code=trusted, encoding=encoding, time_steps=time_steps,
            batch_size=batch_size,
            limit=limit, seed=seed, energy=energy, mu=mu, constraints=constraints, gates=gates or [],
            objective=objective, sampler=sampler, trials=trials, jobs=jobs, storage=storage, study=study,
            results=results, force=force, progress=bar.update, log=(lambda _l: None) if quiet else note))
    if plot is not None:
        _write_plot(result, plot)
    payload = result.to_dict()
    if c.json_to_stdout(json_file):
        c.print_json(payload)
    else:
        c.emit_json(json_file, payload)
        _print_tables(result)
    if result.best is None:
        from snncompress.errors import DomainError

        raise DomainError(f"no point of {len(result.points)} meets the constraints; nothing written"
                          + _closest(result))
    if not quiet:
        note(f"wrote {result.output}" + (f", {plot}" if plot else "") + (f", {results}" if results else ""))


def _closest(result) -> str:
    failed = [p for p in result.points if p.get("violations")]
    return f" (e.g. trial {failed[0]['trial']}: {failed[0]['violations'][0]})" if failed else ""


def _write_plot(result, path: Path) -> None:
    from snncompress.fileformat.atomic import write_atomic
    from snncompress.sweep.plot import pareto_png

    chosen = f"chosen: {_short(result.best['params'])}" if result.best else "no feasible point"
    title = f"{len(result.points)} points, mu = {result.mu:g}; {chosen}"
    png = pareto_png(result.points, result.front, result.best, result.constraints, title)
    write_atomic(path, lambda tmp: tmp.write_bytes(png))


def _short(params) -> str:
    from snncompress.sweep.space import format_point

    return format_point(params)


def _print_tables(result) -> None:
    front = {p["trial"] for p in result.front}
    best = result.best["trial"] if result.best else None
    rows = result.front if result.objective == "pareto" else sorted(
        result.points, key=lambda p: -(p["reward"] if p.get("reward") is not None else float("-inf")))
    title = ("Pareto front (accuracy up, memory and energy down)" if result.objective == "pareto"
             else f"points by reward R (mu = {result.mu:g})")
    table = Table(title=title)
    # the point as its labels only (a caption names the choices), so a row fits 80 columns
    caption = "point: " + "/".join(key.split(".", 1)[-1] for key in result.space.keys)
    table.caption = (caption + "; acc: accuracy, KiB: memory, nJ: energy per sample; meets: the constraints "
                     "(reasons in --json / --results)")
    columns = ("#", "point", "acc %", "KiB", "nJ", "R", *(("front",) if result.objective == "reward" else ()),
               "meets")
    for col in columns:
        if col == "point":  # labels joined without spaces: fold rather than cut
            table.add_column(col, min_width=min(18, max(len(_label(p)) for p in rows) if rows else 5),
                             overflow="fold")
        else:
            table.add_column(col, justify="left" if col == "meets" else "right")
    for p in rows:
        mark = " *" if p["trial"] == best else ""
        meets = "yes" if p.get("feasible") else "no"
        table.add_row(f"{p['trial']}{mark}", escape(_label(p)),
                      _f(p.get("accuracy")),
                      _f(p.get("memory_bits"), 8192), _f(p.get("energy_pj"), 1000, digits=1),
                      _f(p.get("reward"), digits=4),
                      *(("yes" if p["trial"] in front else "",) if result.objective == "reward" else ()), meets)
    c.console.print(table)
    if result.best is not None:
        b = result.best
        c.console.print(f"chosen (*): trial {b['trial']} [{_short(b['params'])}] R = {b['reward']:.4f}, "
                        f"accuracy {b['accuracy']:.2f}%, memory {b['memory_bits'] / 8192:.2f} KiB "
                        f"({b['memory_reduction']:.2f}x smaller), energy {b['energy_pj'] / 1000:.2f} nJ",
                        soft_wrap=True, highlight=False, markup=False)


def _label(point) -> str:
    return "/".join(str(v) for v in point["params"].values())


def _f(value, scale: float = 1.0, digits: int = 2) -> str:
    return "-" if value is None else f"{value / scale:,.{digits}f}"


class _ProgressBar:
    """The sweep's bar on stderr: points done and the best point so far."""

    def __init__(self, enabled: bool):
        self.enabled, self.bar, self.task = enabled, None, None

    def __enter__(self) -> _ProgressBar:
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self._context.__exit__(*exc)

    def update(self, progress) -> None:
        if not self.enabled:
            return
        if self.bar is None:  # started at the first point, so an error before any work prints alone
            from snncompress.sim.progress import progress_bar

            self._context = progress_bar(True)
            self.bar = self._context.__enter__()
        if self.task is None:
            self.task = self.bar.add_task("sweep", total=progress.total)
        best = progress.best
        info = ("best: -" if best is None else
                f"best R {best['reward']:.4f} ({best['accuracy']:.1f}%, {best['memory_bits'] / 8192:.1f} KiB) "
                f"{_short(best['params'])}")
        self.bar.update(self.task, completed=progress.done, total=progress.total, info=escape(info))
