"""What a compressed model carries in memory between passes and into the file.

A model being compressed stays an ordinary snnTorch ``nn.Module`` whose float parameters hold the
exact (dequantized) values it computes with. Beside it, :class:`CompressionState` (attribute
``snncompress_state`` on the model) records how those values are stored: each quantized tensor's
codes, each neuron layer's membrane quantizer, pruning masks, where the model came from and the
pass history. The file writer reads this; the passes update it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

ATTR = "snncompress_state"


@dataclass
class CompressionState:
    """Compression bookkeeping for one model.

    Attributes:
        source: how to rebuild the model: ``{"kind": "sequential", "architecture": ...}`` or
            ``{"kind": "factory", "factory": "pkg.mod:fn"}`` (plus ``style``).
        tensors: encoded (quantized) tensors by state-dict name; ``EncodedTensor`` objects.
        masks: boolean pruning masks by state-dict name (``True`` keeps the weight).
        neurons: per neuron-layer settings by module name, e.g. ``{"membrane": {...}}``.
        history: one record per pass: name, config, metrics.
        baseline: figures of the fp32 model the compression started from (accuracy, memory...).
    """

    source: dict[str, Any] = field(default_factory=dict)
    tensors: dict[str, Any] = field(default_factory=dict)
    masks: dict[str, torch.Tensor] = field(default_factory=dict)
    neurons: dict[str, dict[str, Any]] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    baseline: dict[str, Any] = field(default_factory=dict)
    hooks: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __deepcopy__(self, memo):
        # hook handles belong to one module instance; a copied model reinstalls its own
        clone = CompressionState(
            source=copy.deepcopy(self.source, memo),
            tensors=copy.deepcopy(self.tensors, memo),
            masks=copy.deepcopy(self.masks, memo),
            neurons=copy.deepcopy(self.neurons, memo),
            history=copy.deepcopy(self.history, memo),
            baseline=copy.deepcopy(self.baseline, memo),
        )
        return clone


def recorded_run(model: nn.Module) -> dict[str, Any]:
    """How the model was run when it was compressed, from its baseline record: ``time_steps``,
    ``encoding``, ``sample_shape`` (one sample, with time first when ``is_sequence``) and
    ``is_sequence``, each only where recorded. Files written before the ``run`` record existed give
    only the T of their baseline measurement."""
    if not has_state(model):
        return {}
    baseline = get_state(model).baseline
    run = dict(baseline.get("run") or {})
    if "time_steps" not in run:
        steps = baseline.get("time_steps") or (baseline.get("description") or {}).get("time_steps")
        if steps:
            run["time_steps"] = int(steps)
    return run


def get_state(model: nn.Module) -> CompressionState:
    """The model's compression state, created empty on first use."""
    state = model.__dict__.get(ATTR)
    if state is None:
        state = CompressionState()
        model.__dict__[ATTR] = state
    return state


def has_state(model: nn.Module) -> bool:
    return ATTR in model.__dict__
