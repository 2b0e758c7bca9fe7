"""Options shared by every command, and the helpers that turn them into library calls."""

from __future__ import annotations

import json
import sys
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
DataOpt = Annotated[str, typer.Option(
    "--data", help="Data: 'digits', a .safetensors/.npz/.pt file with x and y, or package.module:function.")]
OptionalDataOpt = Annotated[str | None, typer.Option(
    "--data", help="Data: 'digits', a .safetensors/.npz/.pt file with x and y, or package.module:function.")]
EncodingOpt = Annotated[str, typer.Option("--encoding", help="Static inputs: direct (repeat) or rate (Poisson).")]
TimeStepsOpt = Annotated[int, typer.Option("--time-steps", "-T", help="Time steps to present static inputs for.")]
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


def load_model_cli(model: str, weights: Path | None, trust_pickle: bool):
    from snncompress.fileformat.loading import load_model

    return load_model(model, weights, trust_pickle=trust_pickle)


def use_device(model, device: str):
    """Move ``model`` to ``--device`` for a command that runs it (batches follow the model)."""
    from snncompress.sim.device import resolve_device

    return model.to(resolve_device(device))


def use_threads(model, data=None) -> int:
    """Set torch's CPU threads for a command that runs ``model`` (see :mod:`snncompress.sim.threads`)."""
    import torch

    from snncompress.sim.threads import choose_threads

    count = choose_threads(model, data)
    torch.set_num_threads(count)
    return count


def load_data_cli(data: str, encoding: str, time_steps: int, batch_size: int, limit: int | None, seed: int,
                  split: str = "test"):
    from snncompress.data import DataOptions, load_data

    return load_data(data, DataOptions(encoding=encoding, time_steps=time_steps, batch_size=batch_size,
                                       limit=limit, seed=seed, split=split))


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
