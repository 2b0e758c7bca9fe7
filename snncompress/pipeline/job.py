"""A whole compression as one library call: load, run the recipe, save, figures, gates.

    from snncompress.pipeline.job import CompressJob, compress

    result = compress(CompressJob(model="demo", recipe="examples/spquant.yaml", data="digits",
                                  output="out.safetensors", gates=["max-accuracy-drop=2"]))
    result.report.after["accuracy"], result.figures["memory_reduction"], result.passed
    result.enforce()          # raises GateFailure naming every failed gate

Nothing is printed (progress bars only when ``show_progress``); the CLI's ``run``, every single-pass
command and ``snncompress demo`` are thin layers over :func:`compress`. Everything that can be
checked before work is checked first (gates, the output path, the recipe, then the model and the
data), so a bad input costs no compute and writes nothing. The output is written atomically after
the recipe ran and before the gates are judged, so a CI log can show a failed gate's file.

``device`` moves the model there for the run (batches follow it) and back to the CPU before it is
saved. Under a distributed launch (``torchrun``) every rank runs the job, fine-tuning is
data-parallel (:mod:`snncompress.sim.distributed`) and only rank 0 logs, shows progress and writes
the output; the others return the same result with ``report.output`` None.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from snncompress.data.loading import DataBundle
from snncompress.errors import DataError
from snncompress.passes.base import PassContext
from snncompress.pipeline.gates import (
    GateResult,
    check_gates,
    enforce,
    gate_metrics,
    model_gate_metrics,
    parse_gates,
)
from snncompress.pipeline.run import RunOptions, RunReport, as_recipe, run_recipe
from snncompress.recipes import Recipe
from snncompress.sim import distributed
from snncompress.sim.device import resolve_device
from snncompress.sim.threads import choose_threads, torch_threads

RecipeLike = Recipe | Mapping[str, Any] | str | Path


@dataclass
class CompressJob:
    """What a compression needs: the model, the recipe, the data and where the output goes.

    Attributes:
        model: a MODEL reference (``pkg.mod:factory``, ``demo``, a ``.nir`` or compressed file) or a
            loaded ``nn.Module``.
        recipe: a :class:`Recipe`, a parsed document, a YAML/TOML path, or a no-argument callable
            returning one (called before the model loads, so recipe errors come first).
        output: the compressed file to write (None: write nothing).
        data: evaluation data reference (``digits``, a tensor file, ``module:function``) or a
            loaded :class:`DataBundle`; None: accuracy is not measured.
        train_data: training data for passes that fine-tune; default: the train split of ``digits``
            when ``data`` is digits, else none (never the evaluation data, silently).
        model_name: the model's name in the baseline and report (default: the MODEL reference).
        threads: torch CPU threads for the run (None: chosen from the work,
            :func:`snncompress.sim.threads.choose_threads`; ``SNNCOMPRESS_THREADS`` also sets it).
        train_batch_size: the training data's batch size (default: ``batch_size``).
        trust_pickle, trust_code: allow a pickled module, or a compressed file that names a factory, to run
            its code (:func:`snncompress.fileformat.loading.load_model`).
        nir_options: how a ``.nir`` MODEL is read (:class:`snncompress.export.nir_io.NirReadOptions`:
            time step, reset, spike mode, producer); None: the graph's own metadata and NIR's defaults.
        device: where the model runs: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:N``,
            ``mps`` (:func:`snncompress.sim.device.resolve_device`). Under a launcher, ``cuda`` means
            each rank's own GPU (``LOCAL_RANK``).
        log: called with one line per step (default: quiet).
        warn: called with warnings (default: a line on stderr).
    """

    model: str | nn.Module
    recipe: RecipeLike | Callable[[], RecipeLike]
    output: str | Path | None = None
    data: str | DataBundle | None = None
    train_data: str | DataBundle | None = None
    weights: str | Path | None = None
    trust_pickle: bool = False
    trust_code: bool = False
    encoding: str = "direct"
    time_steps: int = 8
    batch_size: int = 128
    train_batch_size: int | None = None
    limit: int | None = None
    seed: int = 0
    force: bool = False
    gates: Sequence[str] = ()
    energy: str = "45nm"
    model_name: str | None = None
    show_progress: bool = False
    log: Callable[[str], None] | None = None
    warn: Callable[[str], None] | None = None
    extra_outputs: Sequence[str | Path] = field(default_factory=tuple)
    threads: int | None = None
    nir_options: Any | None = None
    device: str = "auto"


@dataclass
class JobResult:
    """What :func:`compress` did.

    Attributes:
        model: the compressed model (in memory, with its compression state).
        report: the run report (steps, before / after figures, hardware figures, gates, output).
        figures: the figures the gates compare (:func:`~snncompress.pipeline.gates.gate_metrics`).
        gates: each gate's result.
        data: the evaluation data the run measured on (None without data).
    """

    model: nn.Module
    report: RunReport
    figures: dict[str, Any]
    gates: list[GateResult]
    data: DataBundle | None = None

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    @property
    def output(self) -> str | None:
        return self.report.output

    def enforce(self) -> None:
        """Raise :class:`~snncompress.errors.GateFailure` when any gate failed."""
        enforce(self.gates)

    def to_dict(self) -> dict[str, Any]:
        """The run report with the gate figures, as ``--json`` writes it."""
        return {**self.report.to_dict(), "figures": self.figures}


def compress(job: CompressJob) -> JobResult:
    """Run a whole compression; see the module docstring.

    Raises:
        ConfigError, RecipeError: bad gates, recipe or pass options (before any work).
        InputError: the output exists without ``force``, or its folder is missing (before any work).
        ModelLoadError, DataError: the model or data cannot be loaded or do not fit each other.
        SnnCompressError: a pass failed; the message names the step. A failed gate does not raise:
            see :meth:`JobResult.enforce`.
    """
    from snncompress.fileformat.atomic import check_output_path
    from snncompress.fileformat.compressed import save_compressed

    device = resolve_device(job.device)
    gates = parse_gates(job.gates, has_data=job.data is not None)
    for path in ([job.output] if job.output is not None else []) + list(job.extra_outputs):
        if str(path) != "-":
            check_output_path(Path(path), job.force)
    recipe_like = job.recipe() if callable(job.recipe) else job.recipe
    distributed.init_from_env(device)
    device = distributed.local_device(device)
    main = distributed.is_main()  # the other ranks stay quiet and write nothing
    options = RunOptions(model_name=job.model_name or _name(job.model), energy_table=job.energy,
                         log=job.log if main else None, warn=job.warn if main else _silent)
    recipe = as_recipe(recipe_like, _registry(options))
    model = _load_model(job)
    data, train = load_job_data(job)
    if data is None and options.log is not None:
        options.log("no --data: accuracy is not measured")
    ctx = PassContext(data=data, train_data=train, seed=job.seed, show_progress=job.show_progress and main)
    model.to(device)
    try:
        with torch_threads(choose_threads(model, data, job.threads)):
            report = run_recipe(model, recipe, ctx, options)
    finally:
        _to_cpu(model)  # the result (and the file) in CPU memory, whatever the device
    if job.output is not None and main:
        report.output = str(save_compressed(model, job.output, force=job.force))
    distributed.barrier()  # the file is complete before any rank returns
    figures = {**gate_metrics(report), **model_gate_metrics(gates, model, data)}
    results = check_gates(gates, figures)
    report.gates = [r.to_dict() for r in results]
    return JobResult(model=model, report=report, figures=figures, gates=results, data=data)


def _to_cpu(model: nn.Module) -> None:
    """Move the model and its compression state (stored codes, pruning masks) to the CPU."""
    from dataclasses import replace

    from snncompress.state import get_state

    model.to("cpu")
    state = get_state(model)
    for name, enc in list(state.tensors.items()):
        if enc.codes.device.type != "cpu" or any(p.device.type != "cpu" for p in enc.params.values()):
            params = {k: p.cpu() for k, p in enc.params.items()}
            state.tensors[name] = replace(enc, codes=enc.codes.cpu(), params=params)
    for name, mask in list(state.masks.items()):
        state.masks[name] = mask.cpu()


def _silent(_line: str) -> None:
    pass


def _registry(options: RunOptions):
    from snncompress.passes.registry import default_registry

    return options.registry or default_registry()


def _name(model: str | nn.Module) -> str:
    return model if isinstance(model, str) else type(model).__name__


def _load_model(job: CompressJob) -> nn.Module:
    if isinstance(job.model, nn.Module):
        return job.model
    from snncompress.fileformat.loading import load_model

    return load_model(job.model, job.weights, trust_pickle=job.trust_pickle, trust_code=job.trust_code,
                      nir_options=job.nir_options)


def load_job_data(job: CompressJob) -> tuple[DataBundle | None, DataBundle | None]:
    """The evaluation and training data of a job (see :class:`CompressJob` for the defaults).

    Raises:
        DataError: training data without evaluation data, or data that cannot be loaded.
    """
    if job.data is None:
        if job.train_data is not None:
            raise DataError("--train-data needs --data (the evaluation data) as well")
        return None, None
    data = _bundle(job, job.data, "test", job.batch_size)
    train_batch = job.train_batch_size or job.batch_size
    if job.train_data is not None:
        train = _bundle(job, job.train_data, "train", train_batch)
    elif isinstance(job.data, str) and job.data in ("digits", "digits:test"):
        train = _bundle(job, "digits:train", "train", train_batch)
    else:
        train = None  # never train on the evaluation data silently; QAT asks for --train-data
    return data, train


def _bundle(job: CompressJob, spec: str | DataBundle, split: str, batch_size: int) -> DataBundle:
    if isinstance(spec, DataBundle):
        return spec
    from snncompress.data import DataOptions, load_data

    return load_data(spec, DataOptions(encoding=job.encoding, time_steps=job.time_steps, batch_size=batch_size,
                                       limit=job.limit, seed=job.seed, split=split))
