"""A whole sweep as one library call: evaluate the space's points, select, write the best model.

    from snncompress.sweep import SweepJob, run_sweep

    result = run_sweep(SweepJob(model="demo", data="digits", space="examples/sweep-tinysnn.yaml",
                                mu=0.5, output="best.safetensors", storage="sqlite:///sweep.db"))
    result.best["params"], result.best["reward"], result.front

Nothing is printed; ``progress`` is called after each finished point. With ``jobs > 1`` the points
run in that many worker processes (spawned, one torch thread each) sharing one Optuna storage
(a temporary SQLite file when no ``storage`` is given); several machines share a sweep by running
it with the same ``storage`` URL and ``study`` name. The best point's model is the best recipe run
again on a fresh copy of the model with the same seed (every point is deterministic for its seed),
so the output is the same bytes whichever worker found it.
"""

from __future__ import annotations

import math
import multiprocessing
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from torch import nn

from snncompress.data.loading import DataBundle
from snncompress.errors import ConfigError, DomainError, InputError
from snncompress.sweep import study as st
from snncompress.sweep.point import PointRunner, figures_of
from snncompress.sweep.select import Constraints, choose, pareto_front, reward
from snncompress.sweep.space import Space, format_point, load_space

MAX_GRID = 100_000  # points a grid sweep will queue; beyond it, give --trials for a sampled sweep


@dataclass
class SweepJob:
    """What a sweep needs (see the module docstring; the CLI's flags map one to one).

    Attributes:
        model: a MODEL reference or a loaded module (a reference when ``jobs > 1``).
        data: evaluation data (reference or bundle); train_data: for QAT points (default: as
            :class:`~snncompress.pipeline.job.CompressJob`).
        space: a space file or a :class:`Space`.
        mu: the memory weight of the reward R (tinySNN Eq. 3).
        constraints: max memory and min accuracy; gates: ``--gate`` strings every point must pass.
        objective: ``reward`` (highest R) or ``pareto`` (the front of accuracy, memory and energy).
        sampler: ``auto`` (grid when ``trials`` is None or covers the space, else TPE for reward and
            NSGA-II for pareto), ``grid``, ``tpe`` or ``nsga2``.
        trials: finished points the study should hold (None: the whole grid).
        jobs: worker processes on this machine.
        storage: an Optuna storage URL (``sqlite:///sweep.db``) to resume or share; study: its name.
        results: a JSONL file each finished point is appended to.
        callbacks: Optuna callbacks ``(study, trial)`` run after each point (in-process workers only).
        progress: called with a :class:`SweepProgress` after each finished point.
    """

    model: str | nn.Module
    data: str | DataBundle
    space: str | Path | Space
    output: str | Path | None = None
    train_data: str | DataBundle | None = None
    weights: str | Path | None = None
    trust_pickle: bool = False
    trust_code: bool = False
    encoding: str = "direct"
    time_steps: int = 8
    batch_size: int = 128
    limit: int | None = None
    seed: int = 0
    energy: str = "45nm"
    mu: float = 0.5
    constraints: Constraints = field(default_factory=Constraints)
    gates: Sequence[str] = ()
    objective: Literal["reward", "pareto"] = "reward"
    sampler: Literal["auto", "grid", "tpe", "nsga2"] = "auto"
    trials: int | None = None
    jobs: int = 1
    storage: str | None = None
    study: str = "snncompress-sweep"
    results: str | Path | None = None
    force: bool = False
    callbacks: Sequence[Callable[[Any, Any], None]] = ()
    progress: Callable[[SweepProgress], None] | None = None
    log: Callable[[str], None] | None = None


@dataclass
class SweepProgress:
    done: int
    total: int | None
    best: Mapping[str, Any] | None


@dataclass
class SweepResult:
    """What :func:`run_sweep` found.

    Attributes:
        points: every finished point's record (trial order), with ``reward`` for this ``mu``.
        best: the chosen point (highest R within the constraints) or None when no point meets them.
        front: the Pareto front (feasible points, sorted by memory).
        sampler: the sampler that ran; resumed: finished points the study held before this run.
        output: the best model's file, when written; output_figures: its figures as re-run.
    """

    points: list[dict[str, Any]]
    best: dict[str, Any] | None
    front: list[dict[str, Any]]
    space: Space
    sampler: str
    mu: float
    objective: str
    constraints: Constraints
    study: str
    storage: str | None
    resumed: int = 0
    output: str | None = None
    output_figures: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        from snncompress.pipeline.run import jsonable

        return jsonable({
            "objective": self.objective, "mu": self.mu, "sampler": self.sampler,
            "constraints": self.constraints.to_dict(), "study": self.study, "storage": self.storage,
            "space": self.space.to_dict(), "resumed": self.resumed, "points": self.points,
            "front": [p["trial"] for p in self.front], "best": self.best, "output": self.output,
            "output_figures": self.output_figures,
        })


def run_sweep(job: SweepJob) -> SweepResult:
    """Run a sweep; see the module docstring.

    Raises:
        ConfigError, InputError: a bad space, option, storage or output (before any point runs);
            Optuna missing.
        DomainError: a worker process failed, or no point meets the constraints (the points are
            still in the result's storage and JSONL; ``SweepResult`` is not returned).
    """
    from snncompress.fileformat.atomic import check_output_path

    st.optuna()
    space = job.space if isinstance(job.space, Space) else load_space(job.space)
    _check_job(job, space)
    if job.output is not None:
        check_output_path(Path(job.output), job.force)
    results = _results_path(job.results)
    sampler_kind = pick_sampler(job, space)
    grid = sampler_kind == "grid"
    log = job.log or (lambda _line: None)
    runner = _runner(job)
    temp = tempfile.TemporaryDirectory(prefix="snncompress-sweep-") if job.jobs > 1 and not job.storage else None
    storage_url = job.storage or (f"sqlite:///{Path(temp.name) / 'sweep.db'}" if temp else None)
    try:
        storage = st.open_storage(storage_url)
        sampler = st.make_sampler(sampler_kind, space, job.seed, job.constraints)
        study, resumed = st.prepare_study(storage, job.study, job.objective, sampler, space,
                                          fingerprint(job, space), grid, log)
        total = space.size if grid and job.trials is None else job.trials
        if job.trials is not None and grid:
            total = min(job.trials, space.size)
        tracker = _Tracker(job, total, resumed, study)
        objective = st.Objective(space, runner, job.objective, job.mu, job.constraints, grid, results,
                                 tracker.record)
        if job.jobs <= 1:
            st.work(study, objective, grid, total, job.callbacks)
        else:
            _run_workers(job, space, storage_url, sampler_kind, total, results, tracker)
        st.wait_for_others(study, space, objective, grid, total, tracker.refresh)
        points = st.finished_records(study)
    finally:
        if temp is not None:
            temp.cleanup()
    for point in points:
        point["reward"] = reward(point, job.mu)
        point["violations"] = job.constraints.violations(point)
        point["feasible"] = not point["violations"]
    best = choose(points, job.mu, job.constraints)
    front = pareto_front(points, job.constraints)
    result = SweepResult(points=points, best=dict(best) if best else None, front=[dict(p) for p in front],
                         space=space, sampler=sampler_kind, mu=job.mu, objective=job.objective,
                         constraints=job.constraints, study=job.study, storage=job.storage, resumed=resumed)
    if best is not None and job.output is not None:
        log(f"best point [{format_point(best['params'])}]: writing {job.output}")
        rerun = runner.run(best["recipe"], output=job.output, force=job.force)
        result.output = rerun.output
        result.output_figures = figures_of(rerun)
        for key in ("accuracy", "memory_bits"):
            if result.output_figures.get(key) != best.get(key):
                log(f"warning: the best point re-run gave {key} {result.output_figures.get(key)} "
                    f"(the sweep measured {best.get(key)})")
    return result


def pick_sampler(job: SweepJob, space: Space) -> str:
    """The sampler ``auto`` means: the grid when it is covered, else TPE (reward) or NSGA-II (pareto)."""
    if job.sampler != "auto":
        return job.sampler
    if job.trials is None or job.trials >= space.size:
        return "grid"
    return "tpe" if job.objective == "reward" else "nsga2"


def fingerprint(job: SweepJob, space: Space) -> dict[str, Any]:
    """What a point's figures depend on: a resumed or shared study must have been run on the same."""

    def ref(value: Any) -> Any:
        return value if isinstance(value, str | int | float | type(None)) else getattr(value, "name", None) or \
            type(value).__name__

    return {"space": space.fingerprint(), "model": ref(job.model), "weights": str(job.weights or ""),
            "data": ref(job.data), "train_data": ref(job.train_data), "encoding": job.encoding,
            "time_steps": job.time_steps, "batch_size": job.batch_size, "limit": job.limit, "seed": job.seed,
            "energy": job.energy, "gates": sorted(job.gates), "objective": job.objective}


def _check_job(job: SweepJob, space: Space) -> None:
    if not (isinstance(job.mu, int | float) and math.isfinite(job.mu) and job.mu >= 0):
        raise ConfigError(f"--mu {job.mu}: must be a finite number >= 0")
    if job.objective not in ("reward", "pareto"):
        raise ConfigError(f"--objective {job.objective}: must be reward or pareto")
    if job.sampler not in ("auto", "grid", "tpe", "nsga2"):
        raise ConfigError(f"--sampler {job.sampler}: must be auto, grid, tpe or nsga2")
    if job.trials is not None and job.trials < 1:
        raise ConfigError(f"--trials {job.trials}: must be >= 1")
    if job.jobs < 1:
        raise ConfigError(f"--jobs {job.jobs}: must be >= 1")
    if job.jobs > 1 and not (isinstance(job.model, str) and isinstance(job.data, str)
                             and not isinstance(job.train_data, DataBundle)):
        raise ConfigError("jobs > 1 runs workers in other processes: give the model and data as references")
    if pick_sampler(job, space) == "grid" and space.size > MAX_GRID and job.trials is None:
        raise ConfigError(f"the space has {space.size:,} points; give --trials N for a sampled sweep")
    if job.sampler == "grid" and job.objective == "pareto":
        pass  # a grid covers both objectives
    if not job.study or not str(job.study).strip():
        raise ConfigError("--study: must not be empty")
    from snncompress.pipeline.gates import parse_gates

    parse_gates(job.gates, has_data=True)


def _results_path(results: str | Path | None) -> Path | None:
    if results is None:
        return None
    path = Path(results)
    if not path.parent.resolve().is_dir():
        raise InputError(f"--results {path}: folder {path.parent} does not exist")
    if path.is_dir():
        raise InputError(f"--results {path}: is a folder")
    return path


def _runner(job: SweepJob) -> PointRunner:
    from snncompress.fileformat.loading import load_model
    from snncompress.pipeline.job import CompressJob, load_job_data

    like = CompressJob(model=job.model, recipe={}, data=job.data, train_data=job.train_data, weights=job.weights,
                       trust_pickle=job.trust_pickle, encoding=job.encoding, time_steps=job.time_steps,
                       batch_size=job.batch_size, limit=job.limit, seed=job.seed)
    model = job.model if isinstance(job.model, nn.Module) else load_model(job.model, job.weights,
                                                                          trust_pickle=job.trust_pickle,
                                                                          trust_code=job.trust_code)
    data, train = load_job_data(like)
    from snncompress.sim.evaluate import prepare

    prepare(model, data)  # a model and data that do not fit: one error now, not one per point
    name = job.model if isinstance(job.model, str) else type(job.model).__name__
    return PointRunner(model=model, data=data, train_data=train, seed=job.seed, energy=job.energy,
                       gates=list(job.gates), model_name=name)


class _Tracker:
    """Counts finished points and keeps the best so far, for the progress callback."""

    def __init__(self, job: SweepJob, total: int | None, resumed: int, study: Any):
        self.job, self.total, self.done, self.study = job, total, resumed, study
        self.best = choose(st.finished_records(study), job.mu, job.constraints) if resumed else None
        self.emit()

    def record(self, record: Mapping[str, Any]) -> None:
        self.done += 1
        self._consider(record)
        self.emit()

    def refresh(self) -> None:
        """Re-read the storage (workers in other processes)."""
        records = st.finished_records(self.study)
        if len(records) != self.done:
            self.done = len(records)
            self.best = choose(records, self.job.mu, self.job.constraints)
            self.emit()

    def _consider(self, record: Mapping[str, Any]) -> None:
        pool = [r for r in (self.best, record) if r is not None]
        self.best = choose(pool, self.job.mu, self.job.constraints)

    def emit(self) -> None:
        if self.job.progress is not None:
            self.job.progress(SweepProgress(self.done, self.total, self.best))


def _run_workers(job: SweepJob, space: Space, storage_url: str, sampler_kind: str, total: int | None,
                 results: Path | None, tracker: _Tracker) -> None:
    """``job.jobs`` spawned processes, each running the worker loop on the shared storage."""
    context = multiprocessing.get_context("spawn")
    errors = context.Queue()
    settings = {
        "model": job.model, "data": job.data, "train_data": job.train_data, "weights": job.weights,
        "trust_pickle": job.trust_pickle, "trust_code": job.trust_code, "encoding": job.encoding,
        "time_steps": job.time_steps,
        "batch_size": job.batch_size, "limit": job.limit, "seed": job.seed, "energy": job.energy,
        "gates": list(job.gates), "mu": job.mu, "constraints": job.constraints, "objective": job.objective,
        "space": space, "storage": storage_url, "study": job.study, "sampler": sampler_kind, "total": total,
        "results": results,
    }
    workers = [context.Process(target=_worker_main, args=(settings, errors, i), daemon=True)
               for i in range(job.jobs)]
    for worker in workers:
        worker.start()
    try:
        while any(w.is_alive() for w in workers):
            for w in workers:
                w.join(timeout=1.0 / len(workers))
            tracker.refresh()
    except BaseException:
        for w in workers:
            if w.is_alive():
                w.terminate()
        raise
    tracker.refresh()
    problems = []
    while not errors.empty():
        problems.append(errors.get())
    failed = [w.exitcode for w in workers if w.exitcode]
    if problems or failed:
        raise DomainError(f"a sweep worker failed: {problems[0] if problems else f'exit code {failed[0]}'}")


def _worker_main(settings: dict[str, Any], errors: Any, index: int) -> None:
    """A spawned worker: load the model and data, open the shared study, take points until done."""
    import torch

    torch.set_num_threads(1)  # one process per core: threads inside each would oversubscribe
    try:
        job = SweepJob(model=settings["model"], data=settings["data"], space=settings["space"],
                       train_data=settings["train_data"], weights=settings["weights"],
                       trust_pickle=settings["trust_pickle"], trust_code=settings["trust_code"],
                       encoding=settings["encoding"],
                       time_steps=settings["time_steps"], batch_size=settings["batch_size"], limit=settings["limit"],
                       seed=settings["seed"], energy=settings["energy"], gates=settings["gates"])
        space: Space = settings["space"]
        runner = _runner(job)
        storage = st.open_storage(settings["storage"])
        # each worker's sampler its own seed (TPE would otherwise propose the same points in every
        # worker); the points themselves all run with the sweep's seed
        sampler = st.make_sampler(settings["sampler"], space, settings["seed"] + index, settings["constraints"])
        study = st.optuna().load_study(study_name=settings["study"], storage=storage, sampler=sampler)
        grid = settings["sampler"] == "grid"
        objective = st.Objective(space, runner, settings["objective"], settings["mu"], settings["constraints"],
                                 grid, settings["results"])
        st.work(study, objective, grid, settings["total"])
    except Exception as exc:  # noqa: BLE001 - reported by the parent as one line
        errors.put(f"{type(exc).__name__}: {exc}")
        raise SystemExit(1) from None
