"""The sweep on Optuna: the study, its storage, the queue of grid points and the worker loop.

* **Grid** (the whole space): the process that *creates* the study (creation is atomic in the
  storage: a study name is unique) queues every point as a waiting trial; workers take waiting
  trials one by one, and taking one is an atomic state change in the storage (WAITING -> RUNNING),
  so two workers -- processes on one machine, or machines on one storage -- never take the same
  point. Optuna's :class:`GridSampler` is the study's sampler; it never picks a point itself here.
* **TPE / NSGA-II** (a large space, ``--trials N``): workers sample; the study stops at N finished
  points in all. A point sampled again reuses the finished record instead of running again.
* **Resume**: a study in a storage keeps every finished point (its record is a trial user
  attribute). Re-running the sweep with the same storage and study name queues only the grid
  points that have no finished, waiting or running trial (those of an interrupted run: Ctrl-C marks
  its trial failed; a killed worker's trial is failed once its heartbeat is older than
  :data:`GRACE_S` seconds), so finished points are never redone.

Optuna is an optional dependency (``pip install 'snncompress[sweep]'``), imported here lazily.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from snncompress.errors import ConfigError, InputError
from snncompress.sweep.select import Constraints, reward
from snncompress.sweep.space import Space

HEARTBEAT_S = 10
GRACE_S = 60
RECORD = "snncompress.record"  # trial user attribute holding the point's record
FINGERPRINT = "snncompress.sweep"  # study user attribute: what the points were run on
QUEUED = "snncompress.queued"  # study user attribute: the grid has been queued
WAIT_FOR_CREATOR_S = 120


def optuna():  # noqa: ANN201 - the module
    """Optuna, or a one-line error naming the extra that installs it."""
    try:
        import optuna as _optuna
    except ImportError:
        raise InputError("snncompress sweep needs Optuna: pip install 'snncompress[sweep]'") from None
    _optuna.logging.set_verbosity(_optuna.logging.ERROR)  # our errors say it in one line
    import warnings

    warnings.filterwarnings("ignore", category=_optuna.exceptions.ExperimentalWarning)
    return _optuna


def open_storage(url: str | None):  # noqa: ANN201
    """An Optuna storage: in memory (None), or a relational one (``sqlite:///sweep.db``, a
    PostgreSQL / MySQL URL) with heartbeats so a killed worker's point is redone.

    Raises:
        InputError: a URL the storage cannot open.
    """
    op = optuna()
    if url is None:
        return op.storages.InMemoryStorage()
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        # workers write one row per trial event; wait for the file lock rather than fail
        kwargs["connect_args"] = {"timeout": 60}
        _check_sqlite_folder(url)
    for attempt in range(5):
        try:
            return op.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=HEARTBEAT_S,
                                          grace_period=GRACE_S)
        except Exception as exc:  # noqa: BLE001 - sqlalchemy's many error types: one line for the user
            # two workers creating a new storage's tables at once: the loser sees the winner's rows
            if type(exc).__name__ in ("IntegrityError", "OperationalError") and attempt < 4:
                time.sleep(0.5 * (attempt + 1))
                continue
            raise InputError(f"--storage {url}: cannot open: {type(exc).__name__}: "
                             f"{str(exc).splitlines()[0]}") from None
    raise AssertionError("unreachable")


def _check_sqlite_folder(url: str) -> None:
    path = url.split(":///", 1)[-1]
    if path and path != ":memory:" and not Path(path).resolve().parent.is_dir():
        raise InputError(f"--storage {url}: folder {Path(path).parent} does not exist")


def directions(objective: str) -> list[str]:
    """reward: maximise R; pareto: maximise accuracy, minimise memory and energy."""
    return ["maximize"] if objective == "reward" else ["maximize", "minimize", "minimize"]


def make_sampler(kind: str, space: Space, seed: int, constraints: Constraints):  # noqa: ANN201
    op = optuna()
    if kind == "grid":
        return op.samplers.GridSampler(space.search_space(), seed=seed)

    def constraint_values(trial) -> list[float]:  # noqa: ANN001
        return list(trial.user_attrs.get("snncompress.constraints", [1.0]))

    # Optuna >= 5 reads the constraints each trial sets (Objective); older ones ask a function
    options = {} if hasattr(op.trial.Trial, "set_constraint") else {"constraints_func": constraint_values}
    if kind == "tpe":
        return op.samplers.TPESampler(seed=seed, **options)
    if kind == "nsga2":
        return op.samplers.NSGAIISampler(seed=seed, **options)
    raise ConfigError(f"--sampler {kind}: must be grid, tpe or nsga2")


def prepare_study(storage: Any, name: str, objective: str, sampler: Any, space: Space,
                  fingerprint: Mapping[str, Any], grid: bool, log: Callable[[str], None]):  # noqa: ANN201
    """Create the study (and queue the grid), or load it and check it is the same sweep.

    Returns:
        ``(study, resumed_points)``: the study and how many finished points it held already.

    Raises:
        InputError: the study in the storage was made for another space, model, data or objective.
    """
    op = optuna()
    try:
        study = op.create_study(storage=storage, study_name=name, directions=directions(objective),
                                sampler=sampler, load_if_exists=False)
    except op.exceptions.DuplicatedStudyError:
        study = op.load_study(study_name=name, storage=storage, sampler=sampler)
        _check_same_sweep(study, name, objective, fingerprint)
        if grid:
            _wait_for(lambda: study.user_attrs.get(QUEUED), f"study '{name}': its creator never queued the grid")
            op.storages.fail_stale_trials(study)
            queued = queue_missing(study, space)
            done = len(finished_records(study))
            log(f"resuming study '{name}': {done} of {space.size} points done, {queued} queued again")
            return study, done
        done = len(finished_records(study))
        log(f"resuming study '{name}': {done} points done")
        return study, done
    study.set_user_attr(FINGERPRINT, dict(fingerprint))
    if grid:
        for point in space.grid():
            study.enqueue_trial(point, user_attrs={QUEUED: True})
        study.set_user_attr(QUEUED, True)
    return study, 0


def _check_same_sweep(study: Any, name: str, objective: str, fingerprint: Mapping[str, Any]) -> None:
    stored = _wait_for(lambda: study.user_attrs.get(FINGERPRINT), f"study '{name}' has no sweep settings")
    wanted = json.loads(json.dumps(dict(fingerprint), default=str))
    if [d.name.lower() for d in study.directions] != directions(objective):
        raise InputError(f"study '{name}' in the storage was made for another --objective; use another --study")
    differ = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
    if differ:
        raise InputError(f"study '{name}' in the storage was made for another sweep (different "
                         f"{', '.join(differ)}); use another --study or the same settings")


def _wait_for(get: Callable[[], Any], message: str) -> Any:
    """A study another process is creating right now: wait for what its creator writes next."""
    deadline = time.monotonic() + WAIT_FOR_CREATOR_S
    while True:
        value = get()
        if value:
            return value
        if time.monotonic() > deadline:
            raise InputError(message)
        time.sleep(0.5)


def queue_missing(study: Any, space: Space) -> int:
    """Queue the grid points that have no finished, waiting or running trial; returns how many."""
    op = optuna()
    live = set()
    for trial in study.get_trials(deepcopy=False):
        params = trial.system_attrs.get("fixed_params", trial.params)
        if trial.state in (op.trial.TrialState.WAITING, op.trial.TrialState.RUNNING) or RECORD in trial.user_attrs:
            live.add(_key(params))
    queued = 0
    for point in space.grid():
        if _key(point) not in live:
            study.enqueue_trial(point, user_attrs={QUEUED: True})
            queued += 1
    return queued


def _key(params: Mapping[str, Any]) -> str:
    return json.dumps(dict(params), sort_keys=True, default=str)


def finished_records(study: Any) -> list[dict[str, Any]]:
    """Every finished point's record, in trial order, each with its trial number."""
    out = []
    for trial in study.get_trials(deepcopy=False):
        record = trial.user_attrs.get(RECORD)
        if record is not None and trial.state.is_finished():
            out.append({**record, "trial": trial.number})
    return out


class Objective:
    """Evaluate one trial's point, record it (storage and JSONL) and return Optuna's objective values."""

    def __init__(self, space: Space, runner: Any, objective: str, mu: float, constraints: Constraints,
                 grid: bool, results: Path | None, on_record: Callable[[dict[str, Any]], None] | None = None):
        self.space, self.runner, self.objective, self.mu = space, runner, objective, mu
        self.constraints, self.grid, self.results, self.on_record = constraints, grid, results, on_record

    def __call__(self, trial: Any) -> float | Sequence[float]:
        op = optuna()
        if self.grid and not trial.user_attrs.get(QUEUED):
            # the queue ran dry between a worker's check and its ask: no point left to take
            trial.study.stop()
            raise op.TrialPruned("the grid is done")
        point = {c.key: trial.suggest_categorical(c.key, c.labels) for c in self.space.choices}
        earlier = _finished_with(trial.study, point, trial.number)
        if earlier is not None:  # a sampler's repeat (TPE) or a point queued twice: reuse, do not rerun
            record = {**earlier, "reused_from": earlier.get("trial")}
            record.pop("trial", None)
        else:
            record = self.runner.evaluate(point, self.space.recipe_dict(point))
            record["reward"] = reward(record, self.mu)
            record["violations"] = self.constraints.violations(record)
            record["feasible"] = not record["violations"]
        values = self.constraints.optuna_values(record)
        trial.set_user_attr("snncompress.constraints", values)
        if hasattr(trial, "set_constraint"):
            for i, value in enumerate(values):
                trial.set_constraint(f"c{i}", value)
        trial.set_user_attr(RECORD, record)
        if earlier is None:
            append_jsonl(self.results, {**record, "trial": trial.number})
            if self.on_record is not None:
                self.on_record({**record, "trial": trial.number})
        if record.get("error") or record.get("reward") is None:
            raise op.TrialPruned(record.get("error") or "not measured")
        if self.objective == "reward":
            return record["reward"]
        return record["accuracy"] / 100, float(record["memory_bits"]), float(record["energy_pj"])


def _finished_with(study: Any, point: Mapping[str, Any], number: int) -> dict[str, Any] | None:
    key = _key(point)
    for trial in study.get_trials(deepcopy=False):
        if trial.number != number and RECORD in trial.user_attrs and _key(trial.params) == key:
            record = trial.user_attrs[RECORD]
            if "reused_from" not in record:
                return {**record, "trial": trial.number}
    return None


def append_jsonl(path: Path | None, record: Mapping[str, Any]) -> None:
    """Append one JSON line; an exclusive lock keeps lines of concurrent workers whole."""
    if path is None:
        return
    from snncompress.pipeline.run import jsonable

    line = (json.dumps(jsonable(dict(record)), sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX)
        except ImportError:  # Windows: O_APPEND alone
            pass
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def work(study: Any, objective: Objective, grid: bool, trials: int | None,
         callbacks: Sequence[Callable[[Any, Any], None]] = ()) -> None:
    """One worker: take points until the grid is done or the study holds ``trials`` finished points."""
    op = optuna()

    def enough(study: Any, _trial: Any = None) -> bool:
        if trials is not None and len(finished_records(study)) >= trials:
            return True
        if grid:
            waiting = study.get_trials(deepcopy=False, states=(op.trial.TrialState.WAITING,))
            return not waiting
        return False

    def stop_when_done(study: Any, trial: Any) -> None:
        if enough(study, trial):
            study.stop()

    if enough(study):
        return
    study.optimize(objective, n_trials=None if grid else trials, callbacks=[*callbacks, stop_when_done],
                   catch=(), gc_after_trial=False)


def wait_for_others(study: Any, space: Space, objective: Objective, grid: bool, trials: int | None,
                    on_poll: Callable[[], None] = lambda: None, poll_s: float = 1.0) -> None:
    """Wait until no point of the study is running elsewhere (other machines' workers), so the
    selection sees the whole study. A running point whose worker died (its heartbeat older than
    :data:`GRACE_S`) is failed and, in a grid, queued again and taken here."""
    op = optuna()
    running = (op.trial.TrialState.RUNNING,)
    while study.get_trials(deepcopy=False, states=running):
        time.sleep(poll_s)
        on_poll()
        op.storages.fail_stale_trials(study)
        if grid and queue_missing(study, space):
            work(study, objective, grid, trials)
