"""The exportable form of a stepwise model: its leaf layers in order, with each one's per-step shapes.

Both exporters walk an ``nn.Sequential`` (nested Sequentials are flattened) one layer at a time. NIR
needs every node's shape and ONNX every neuron state's shape, so one probe step of a sample input
records them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import snntorch.utils
import torch
from torch import nn

from snncompress.errors import DataError, UnsupportedLayerError
from snncompress.models.neurons import is_neuron


@dataclass(frozen=True)
class Leaf:
    """One layer of the chain.

    Attributes:
        name: the qualified module name (``"3"``, ``"head.0"``).
        module: the module itself (shared, not copied).
        in_shape: its input for one time step, without the batch dimension.
        out_shape: its output (spikes for a neuron) likewise.
    """

    name: str
    module: nn.Module
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]


@dataclass
class ExportResult:
    """What an exporter wrote.

    Attributes:
        path: the file written.
        format: ``nir`` or ``onnx``.
        notes: what the user should know (what the format could not carry, how it was verified).
        details: format-specific facts (ONNX: the state inputs and outputs).
    """

    path: Path
    format: str
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "format": self.format, "notes": list(self.notes), **self.details}


def leaf_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The Sequential's layers in execution order, nested Sequentials flattened; a neuron is one leaf.

    A one-step user module gives the chain of its layers its source records
    (:func:`snncompress.export.chain.recorded_chain`; a flatten between two is a new ``nn.Flatten`` named
    ``flatten_<i>``), the modules themselves.
    """
    from snncompress.export.chain import recorded_chain

    chain = recorded_chain(model)
    if chain is not None:
        return [(name, model.get_submodule(name)) if name else (f"flatten_{i}", nn.Flatten())
                for i, name in enumerate(chain)]
    out: list[tuple[str, nn.Module]] = []

    def walk(prefix: str, module: nn.Module) -> None:
        for name, child in module.named_children():
            qual = f"{prefix}{name}"
            if isinstance(child, nn.Sequential):
                walk(qual + ".", child)
            else:
                out.append((qual, child))

    walk("", model)
    return out


def require_sequential(model: nn.Module, what: str) -> None:
    """Raise unless ``model`` is a stepwise ``nn.Sequential`` whose neurons keep their own state, or a one-step
    user module whose layers form a recorded chain.

    Raises:
        UnsupportedLayerError: a user module with its own time loop, one whose layers are no chain, or a
            neuron with ``init_hidden=False``.
    """
    from snncompress.export.chain import chain_reason, recorded_chain
    from snncompress.models.source import detect_style

    if not isinstance(model, nn.Sequential) and recorded_chain(model) is None:
        name = type(model).__name__
        if detect_style(model) == "stepwise":
            why = chain_reason(model) or "run it on data once to find out why"
            raise UnsupportedLayerError(
                f"{what} needs the model's layers in order; {name}'s forward(x) is one time step, but its layers "
                f"were not found to form a chain ({why})"
            )
        raise UnsupportedLayerError(
            f"{what} needs an nn.Sequential of supported layers run one step at a time; "
            f"{name} is a user module with its own forward, rebuild it as an nn.Sequential"
        )
    for name, module in leaf_layers(model):
        if is_neuron(module) and not module.init_hidden:
            raise UnsupportedLayerError(
                f"{what}: neuron layer '{name}' has init_hidden=False; "
                "a stepwise model needs init_hidden=True"
            )


def probe_shapes(model: nn.Module, sample: torch.Tensor) -> list[Leaf]:
    """Run one time step of ``sample`` (one input, no batch dimension) and record every leaf's shapes.

    The neuron states are reset before and after, so the model is left as it was.

    Raises:
        DataError: the sample does not fit the model.
    """
    leaves = leaf_layers(model)
    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}

    def hook_for(name: str):
        def hook(_module, inputs, output):
            out = output[0] if isinstance(output, tuple) else output
            shapes[name] = (tuple(inputs[0].shape[1:]), tuple(out.shape[1:]))

        return hook

    handles = [m.register_forward_hook(hook_for(n)) for n, m in leaves]
    was_training = model.training
    model.eval()  # a probe must not update BatchNorm statistics
    try:
        snntorch.utils.reset(model)
        with torch.no_grad():
            if isinstance(model, nn.Sequential):
                model(sample.unsqueeze(0).to(torch.float32))
            else:  # a one-step user module's recorded chain (its flattens are not its own modules): walk it
                x = sample.unsqueeze(0).to(torch.float32)
                for name, module in leaves:
                    out = module(x)
                    if name not in shapes:  # a leaf the model does not hold
                        shapes[name] = (tuple(x.shape[1:]), tuple(out.shape[1:]))
                    x = out[0] if isinstance(out, tuple) else out
    except (RuntimeError, ValueError, IndexError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(
            f"an input of shape {list(sample.shape)} (one sample, "
            f"no batch dimension) does not fit the model: {first}"
        ) from exc
    finally:
        for h in handles:
            h.remove()
        snntorch.utils.reset(model)
        model.train(was_training)
    return [Leaf(n, m, *shapes[n]) for n, m in leaves if n in shapes]


def infer_input_shape(model: nn.Module) -> tuple[int, ...] | None:
    """The per-step input shape when the model's source records it (a NIR file), its recorded baseline
    data set gives it (a compressed file), or its first layer fixes it (``Linear``), else None."""
    from snncompress.state import get_state, has_state

    recorded = get_state(model).source.get("input_shape") if has_state(model) else None
    if recorded:
        return tuple(int(s) for s in recorded)
    from snncompress.state import recorded_run

    run = recorded_run(model)
    if run.get("sample_shape"):
        shape = tuple(int(s) for s in run["sample_shape"])
        return shape[1:] if run.get("is_sequence") else shape
    data_name = get_state(model).baseline.get("data") if has_state(model) else None
    if data_name:
        from snncompress.data import DataOptions, load_data

        # recorded in the file: a data set it names is read, a function it names is never called
        sample = load_data(data_name, DataOptions(limit=1), allow_code=False).sample_input()
        return tuple(sample.shape)
    leaves = leaf_layers(model) if isinstance(model, nn.Sequential) else []
    if leaves and isinstance(leaves[0][1], nn.Linear):
        return (leaves[0][1].in_features,)
    return None
