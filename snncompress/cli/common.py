"""Options shared by every command, and the helpers that turn them into library calls."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

console = Console()  # results: stdout
err_console = Console(stderr=True)  # progress, notes, errors

ModelArg = Annotated[str, typer.Argument(
    help="Model: package.module:factory, 'demo', a .nir graph, an snncompress .safetensors, "
         "or a pickled .pt module (with --trust-pickle).", metavar="MODEL")]
WeightsOpt = Annotated[Path | None, typer.Option(
    "--weights", help="State dict for a factory model (.safetensors, or .pt read with weights_only=True).")]
TrustPickleOpt = Annotated[bool, typer.Option(
    "--trust-pickle", help="Allow loading a pickled whole module (unpickling runs code from the file).")]
TrustCodeOpt = Annotated[bool, typer.Option(
    "--trust-code", help="Allow a compressed file of a user module to import and run the factory it names "
                         "(also SNNCOMPRESS_TRUST_CODE=1). Files of built-in layers need no code.")]
DATA_HELP = ("Data: 'digits', a .safetensors/.npz/.pt file with x and y (x alone: unlabelled), or "
             "package.module:function.")
DataOpt = Annotated[str, typer.Option("--data", help=DATA_HELP)]
OptionalDataOpt = Annotated[str | None, typer.Option("--data", help=DATA_HELP)]
EncodingOpt = Annotated[str, typer.Option("--encoding", help="Static inputs: direct (repeat) or rate (Poisson).")]
TimeStepsOpt = Annotated[int, typer.Option("--time-steps", "-T", help="Time steps to present static inputs for.")]
RecordedEncodingOpt = Annotated[str | None, typer.Option(
    "--encoding", help="Static inputs: direct (repeat) or rate (Poisson); default: as the compressed MODEL "
                       "records, else direct.")]
RecordedTimeStepsOpt = Annotated[int | None, typer.Option(
    "--time-steps", "-T", help="Time steps to present static inputs for; default: as the compressed MODEL "
                               "records, else 8.")]
RecordedSeedOpt = Annotated[int | None, typer.Option(
    "--seed", help="Random seed (same seed, same output); default: as the compressed MODEL records for its "
                   "rate coding, else 0.")]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", help="Batch size.")]
LimitOpt = Annotated[int | None, typer.Option("--limit", help="Use only the first N samples.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed (same seed, same output).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite an existing output file.")]
JSON_HELP = "Write the results as JSON to FILE; '-': to stdout (and nothing else on stdout)."
#: ``--json FILE`` on every command (``-``: stdout): one convention, see :func:`emit_json`.
JsonOpt = Annotated[Path | None, typer.Option("--json", metavar="FILE", help=JSON_HELP)]
JsonFileOpt = JsonOpt
DeviceOpt = Annotated[str, typer.Option(
    "--device", help="Where the model runs: auto (a CUDA GPU when there is one, else the CPU), cpu, cuda, cuda:N "
                     "or mps. Files written are the same whatever the device.")]


def trust_code_requested(flag: bool) -> bool:
    """``--trust-code``, or ``SNNCOMPRESS_TRUST_CODE=1`` in the environment (for scripts)."""
    from snncompress.models.source import TRUST_CODE_ENV

    return flag or os.environ.get(TRUST_CODE_ENV, "").strip() == "1"


@contextmanager
def user_modules_importable(active: bool = True) -> Iterator[None]:
    """Find the user's modules in the working directory while a reference they typed is imported.

    The installed ``snncompress`` script, unlike ``python -m``, does not have the working directory on
    ``sys.path``. The CLI adds it here, for references the user named (MODEL, ``--data``) or code they
    trusted (``--trust-code``), and takes it off again; the library never edits ``sys.path``.
    """
    cwd = os.getcwd()
    if not active or "" in sys.path or "." in sys.path or cwd in sys.path:
        yield
        return
    sys.path.insert(0, cwd)
    try:
        yield
    finally:
        if cwd in sys.path:
            sys.path.remove(cwd)


NirDtOpt = Annotated[float | None, typer.Option(
    "--nir-dt", help="A .nir MODEL: the time step its time constants are read with (default: the graph's "
                     "metadata, else 1e-4 with a note per node).")]
NirResetOpt = Annotated[str | None, typer.Option(
    "--nir-reset", help="A .nir MODEL: reset (zero, subtract, none) for neuron nodes that record none "
                        "(default: NIR's zero reset, with a note per node).")]
NirSpikeOpt = Annotated[str | None, typer.Option(
    "--nir-spike", help="A .nir MODEL: spikes per step of IF/LIF nodes that record none: single (NIR's), or "
                        "multi (sinabs's default: trunc(v/threshold) spikes, subtract reset).")]
NirProducerOpt = Annotated[str | None, typer.Option(
    "--nir-producer", help="A .nir MODEL: read it with its producer's own dynamics: rockpool (CubaLIF = LIFTorch: "
                           "exponential decay, multi-spike, dt from its r) or sinabs (IF/LIF as sinabs's default "
                           "multi-spike layers, time constants in steps); nir: NIR's own equations. Default: the "
                           "producer the file's metadata or node names show (Rockpool's are detected), else nir.")]


def nir_read_options(model: str, dt: float | None, reset: str | None, spike: str | None,
                     producer: str | None):
    """The ``--nir-*`` flags as read options (None when none is given); refused for a MODEL not ``.nir``."""
    if all(v is None for v in (dt, reset, spike, producer)):
        return None
    from snncompress.errors import InputError
    from snncompress.export.nir_io import NirReadOptions

    if not str(model).lower().endswith(".nir"):
        raise InputError("--nir-dt, --nir-reset, --nir-spike and --nir-producer apply to a .nir MODEL")
    return NirReadOptions(dt=dt, reset=reset, spike=spike, producer=producer)


def load_model_cli(model: str, weights: Path | None, trust_pickle: bool, trust_code: bool = False,
                   nir_dt: float | None = None, nir_reset: str | None = None, nir_spike: str | None = None,
                   nir_producer: str | None = None):
    from snncompress.fileformat.loading import load_model
    from snncompress.refs import is_ref

    options = nir_read_options(model, nir_dt, nir_reset, nir_spike, nir_producer)
    trusted = trust_code_requested(trust_code)
    with user_modules_importable(is_ref(model) or trusted or trust_pickle):  # a pickle names modules too
        return load_model(model, weights, trust_pickle=trust_pickle, trust_code=trusted, nir_options=options)


def use_device(model, device: str):
    """Move ``model`` to ``--device`` for a command that runs it (batches follow the model)."""
    from snncompress.sim.device import resolve_device

    return model.to(resolve_device(device))



def threads_for(model, data=None):
    """A ``with`` block running with torch's CPU threads chosen for ``model`` on ``data``
    (:mod:`snncompress.sim.threads`); the previous count is restored after it."""
    from snncompress.sim.threads import choose_threads, torch_threads

    return torch_threads(choose_threads(model, data))


def load_data_cli(data: str, encoding: str, time_steps: int, batch_size: int, limit: int | None, seed: int,
                  split: str = "test"):
    from snncompress.data import DataOptions, load_data
    from snncompress.refs import is_ref

    with user_modules_importable(is_ref(data)):
        return load_data(data, DataOptions(encoding=encoding, time_steps=time_steps, batch_size=batch_size,
                                           limit=limit, seed=seed, split=split))


def recorded_seed(net, model: str, seed: int | None, encoding: str) -> int:
    """The seed for presenting data to ``net``: as given, else the one its file records when the data is
    rate coded (the same Poisson draws as when it was compressed, with a note), else 0."""
    from snncompress.state import recorded_run

    if seed is not None:
        return seed
    recorded = recorded_run(net).get("seed")
    if encoding == "rate" and recorded is not None and recorded != 0:
        err_console.print(f"note: using --seed {recorded} recorded in {model} for the rate coding",
                          highlight=False, markup=False, soft_wrap=True)
        return int(recorded)
    return 0


_RUN_NOTES = "_snncompress_run_notes"  # notes recorded_defaults leaves for check_recorded_shape


def recorded_defaults(net, model: str, time_steps: int | None, encoding: str | None,
                      *, with_encoding: bool = True) -> tuple[int, str]:
    """T and encoding for running ``net``: as given, else as its compressed file records (so that
    ``evaluate`` reproduces what ``quantize`` printed), else 8 and direct; one note on stderr says
    which recorded values were used, or which given ones differ from the record (the encoding only
    ``with_encoding``: export presents no data, so it has none).

    A file compressed on the data's own sequences (event frames) ran their T, not ``--time-steps``: export
    takes that T; a command that presents data (``with_encoding``) says nothing of T and encoding until
    :func:`check_recorded_shape` knows whether its data are sequences too (they then run as they are, and
    the notes would not be true)."""
    from snncompress.state import recorded_run

    record = dict(recorded_run(net))
    if record.get("is_sequence") and record.get("encoding") != "rate":  # the data's own sequences ran
        record.pop("encoding", None)
        steps = (record.get("sample_shape") or [None])[0]
        if with_encoding or not steps:
            record.pop("time_steps", None)
        else:
            record["time_steps"] = int(steps)
    used, overridden = [], []
    chosen = {}
    for flag, key, value, default in (("--time-steps", "time_steps", time_steps, 8),
                                      ("--encoding", "encoding", encoding, "direct")):
        recorded = record.get(key) if with_encoding or key != "encoding" else None
        if value is None:
            chosen[key] = default if recorded is None else recorded
            if recorded is not None:
                used.append(f"{flag} {recorded}")
        else:
            chosen[key] = value
            if recorded is not None and value != recorded:
                overridden.append(f"{flag} {value} (compressed with {recorded})")
    notes = []
    if used:
        notes.append(f"note: {model} records how it was run; using {', '.join(used)}")
    if overridden:
        notes.append(f"note: running {model} with {', '.join(overridden)} as asked: figures may differ "
                     "from those measured when it was compressed")
    if with_encoding:
        # direct coding presents a sequence as it is, rate coding makes one: only -T can be given in vain
        net.__dict__[_RUN_NOTES] = (notes, [f"--time-steps {time_steps}"] if time_steps is not None else [])
    else:
        for note in notes:
            err_console.print(note, highlight=False, markup=False, soft_wrap=True)
    return int(chosen["time_steps"]), str(chosen["encoding"])


def check_recorded_shape(net, model: str, bundle) -> None:
    """The notes :func:`recorded_defaults` left, now that the data's layout is known (true only for samples
    snncompress presents over T steps), and a note when the data's samples differ in shape from those
    ``net`` was compressed with."""
    from snncompress.state import recorded_run

    from snncompress.models.source import detect_style

    notes, given = net.__dict__.pop(_RUN_NOTES, ([], []))
    coded = bundle.is_sequence  # rate coded here: presented over --time-steps
    if not coded:
        from snncompress.sim.evaluate import prepare

        prepare(net, bundle)  # whether the samples are sequences (remembered on the bundle)
    if not coded and not bundle.is_sequence and detect_style(net) == "sequence":
        pass  # a model with its own time loop gets each sample as it is: T is its own (evaluate says so)
    elif bundle.is_sequence and not coded:
        steps = int(bundle.sample_input().shape[0])
        if given:
            err_console.print(f"note: {', '.join(given)} does not apply: {bundle.name} holds sequences of {steps} "
                              "steps, which run as they are", highlight=False, markup=False, soft_wrap=True)
    else:
        for note in notes:
            err_console.print(note, highlight=False, markup=False, soft_wrap=True)
    record = recorded_run(net)
    recorded = record.get("sample_shape")
    shape = [int(s) for s in bundle.sample_input().shape]
    if not recorded:
        return
    if coded and record.get("is_sequence") and shape[1:] == list(recorded)[1:]:
        return  # rate coded here over another T: the T note says so
    if list(recorded) != shape:
        err_console.print(f"note: {bundle.name} has samples of shape {shape}; {model} was compressed on samples "
                          f"of shape {list(recorded)}", highlight=False, markup=False, soft_wrap=True)


def print_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, default=_default) + "\n")


def write_json(path: Path, payload: Any) -> None:
    from snncompress.fileformat.atomic import write_text_atomic

    write_text_atomic(path, json.dumps(payload, indent=2, default=_default) + "\n")


def _default(obj: Any) -> Any:
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def json_to_stdout(path: Path | None) -> bool:
    return path is not None and str(path) == "-"


def check_json_target(path: Path | None, force: bool) -> None:
    """Refuse a ``--json FILE`` that exists (without ``--force``) or whose folder is missing, before any work."""
    if path is not None and not json_to_stdout(path):
        from snncompress.fileformat.atomic import check_output_path

        check_output_path(path, force)


def emit_json(path: Path | None, payload: Any) -> None:
    """Write ``payload`` where ``--json`` asked: stdout for ``-``, else the file (atomically)."""
    if path is None:
        return
    if json_to_stdout(path):
        print_json(payload)
    else:
        write_json(path, payload)
