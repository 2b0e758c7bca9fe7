"""A model's layers, neuron parameters, shapes and parameter counts (``snncompress inspect``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from snncompress.models.layers import is_synaptic
from snncompress.models.neurons import is_neuron, neuron_params
from snncompress.state import get_state, has_state


@dataclass
class LayerSummary:
    name: str
    type: str
    parameters: int
    weight_shape: list[int] | None = None
    output_shape: list[int] | None = None
    neuron: dict[str, Any] | None = None
    storage: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelSummary:
    source: dict[str, Any]
    style: str  # stepwise, sequence, or unknown (a user module of init_hidden=True neurons not yet run)
    stepping: str  # how snncompress drives it (models.source.style_description)
    layers: list[LayerSummary]
    total_parameters: int
    neuron_layers: int
    history: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(model: nn.Module, sample: torch.Tensor | None = None, *, is_sequence: bool = False,
              time_steps: int = 1) -> ModelSummary:
    """Describe every leaf layer; with a ``sample`` (no batch dim) also each layer's output shape."""
    from snncompress.models.source import recorded_style, style_description
    from snncompress.sim.runner import SNNRunner

    shapes: dict[str, list[int]] = {}
    if sample is not None:
        handles = []
        for name, module in model.named_modules():
            if _is_leaf(module):
                def hook(mod, inputs, output, name=name):
                    out = output[0] if isinstance(output, tuple) else output
                    shapes[name] = list(out.shape[1:])
                handles.append(module.register_forward_hook(hook))
        try:
            with torch.no_grad():
                SNNRunner(model).run(sample.unsqueeze(0), is_sequence=is_sequence, time_steps=1)
        finally:
            for h in handles:
                h.remove()
    state = get_state(model) if has_state(model) else None
    layers = []
    for name, module in model.named_modules():
        if not _is_leaf(module):
            continue
        own = sum(p.numel() for p in module.parameters(recurse=True))
        weight = getattr(module, "weight", None)
        storage = {}
        if state is not None:
            # neuron parameters (threshold, beta) are buffers unless learnable, and may be stored encoded
            for pname, _ in [*module.named_parameters(), *module.named_buffers()]:
                key = f"{name}.{pname}" if name else pname
                if key in state.tensors:
                    storage[pname] = state.tensors[key].scheme
                if key in state.masks:
                    m = state.masks[key]
                    storage[f"{pname}_sparsity"] = round(1 - float(m.float().mean()), 4)
            if name in state.neurons and "membrane" in state.neurons[name]:
                storage["membrane"] = state.neurons[name]["membrane"]
        layers.append(LayerSummary(
            name=name,
            type=type(module).__name__,
            parameters=own,
            weight_shape=list(weight.shape) if isinstance(weight, torch.Tensor) and is_synaptic(module) else None,
            output_shape=shapes.get(name),
            neuron=neuron_params(module).to_dict() if is_neuron(module) else None,
            storage=storage,
        ))
    return ModelSummary(
        source=dict(state.source) if state else {},
        style=recorded_style(model) or "unknown",  # a user module of init_hidden neurons not yet run on data
        stepping=style_description(model),
        layers=layers,
        total_parameters=sum(p.numel() for p in model.parameters()),
        neuron_layers=sum(1 for layer in layers if layer.neuron),
        history=list(state.history) if state else [],
    )


def _is_leaf(module: nn.Module) -> bool:
    return is_neuron(module) or not any(True for _ in module.children())
