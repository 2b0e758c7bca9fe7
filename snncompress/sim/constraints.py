"""Training constraints: what any fine-tuning must keep or learn, attached to one training run.

A constraint has a small lifecycle (after llm-compressor's modifiers, without a global session)::

    attach(model)        before the first step: install parametrizations, turn buffers into parameters
    step_context()       entered around each step's forward and backward (e.g. a fake-quant cache)
    loss_term()          after each step's forward: a term added to the loss (None: nothing)
    after_step(model)    after each optimizer step: re-apply masks, clamp values
    detach(model)        after the last step (also on error): remove what attach installed, convert back

:func:`snncompress.sim.training.train` runs every constraint it is given, plus
:func:`state_constraints` -- the constraints of every compression already applied to the model,
read from its :class:`~snncompress.state.CompressionState`. So *any* later fine-tuning keeps earlier
compressions: pruned weights stay zero (their mask is re-applied after each step), stored codes stay
on their grid (the weight is fake-quantized with its stored scheme during training and re-encoded at
the end). A constraint given explicitly takes over the parameters it names from the state's
(a QAT re-quantizing an already quantized weight uses its own scheme).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager

import torch
from torch import nn
from torch.nn.utils import parametrize

from snncompress.state import get_state, has_state

__all__ = [
    "ChannelGateCost",
    "Constraint",
    "FakeQuantWeights",
    "KeepMasks",
    "LearnableThresholds",
    "constraints_for_training",
    "raw_parameter",
    "state_constraints",
]


class Constraint:
    """Base class: every hook is optional.

    Attributes:
        name: shown in the training log and the pass history.
    """

    name = "constraint"

    def parameters(self) -> set[str]:
        """State-dict names of the tensors this constraint governs (to resolve overlaps)."""
        return set()

    def lr_scale(self) -> dict[str, float]:
        """Learning-rate multipliers by parameter name, for parameters this constraint creates."""
        return {}

    def attach(self, model: nn.Module) -> None:
        """Called once before training."""

    def step_context(self) -> AbstractContextManager:
        """Entered around each step's forward and backward."""
        return contextlib.nullcontext()

    def loss_term(self) -> torch.Tensor | None:
        """Called after each step's forward: a term added to the loss it backpropagates (None: nothing)."""
        return None

    def after_step(self, model: nn.Module) -> None:
        """Called after each optimizer step."""

    def detach(self, model: nn.Module) -> None:
        """Called once after training, also when training failed."""


def _split(name: str) -> tuple[str, str]:
    module, _, attr = name.rpartition(".")
    return module, attr


def raw_parameter(model: nn.Module, name: str) -> torch.Tensor:
    """The tensor the optimizer updates for state-dict name ``name``: a parametrized weight's ``original``."""
    module_name, attr = _split(name)
    module = model.get_submodule(module_name) if module_name else model
    if parametrize.is_parametrized(module, attr):
        return getattr(module.parametrizations, attr).original
    return getattr(module, attr)


class _FakeQuant(nn.Module):
    """Parametrization: the weight as its scheme quantizes it, straight-through gradient."""

    def __init__(self, scheme):
        super().__init__()
        self.scheme = scheme

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return self.scheme.fake_quant(w)


class FakeQuantWeights(Constraint):
    """Fake-quantize weights during training (straight-through estimator), encode them at the end.

    Args:
        schemes: weight scheme by state-dict name (``"0.weight"``); identity schemes are skipped.
        encode: store each weight's codes in the model's compression state when training ends
            (with the trained weight replaced by exactly what its codes decode to). QAT converts
            itself after choosing the best epoch, so it passes False.
        seed: seed of the generator used for stochastic rounding when encoding.
    """

    name = "fake-quant"

    def __init__(self, schemes: Mapping[str, object], *, encode: bool = True, seed: int = 0):
        self.schemes = {k: s for k, s in schemes.items() if not getattr(s, "is_identity", False)}
        self.encode = encode
        self.seed = seed

    def parameters(self) -> set[str]:
        return set(self.schemes)

    def attach(self, model: nn.Module) -> None:
        for name, scheme in self.schemes.items():
            module_name, attr = _split(name)
            parametrize.register_parametrization(model.get_submodule(module_name), attr, _FakeQuant(scheme))

    def step_context(self) -> AbstractContextManager:
        return parametrize.cached()  # fake-quantize once per step, not once per time step

    def detach(self, model: nn.Module) -> None:
        for name in self.schemes:
            module_name, attr = _split(name)
            module = model.get_submodule(module_name)
            if parametrize.is_parametrized(module, attr):
                parametrize.remove_parametrizations(module, attr, leave_parametrized=False)
        if self.encode:
            encode_weights(model, self.schemes, self.seed)


def encode_weights(model: nn.Module, schemes: Mapping[str, object], seed: int = 0) -> None:
    """Encode each named tensor with its scheme, store the codes and set the tensor to their values."""
    state = get_state(model)
    gen = torch.Generator().manual_seed(seed)
    masks = state.masks
    for name, scheme in schemes.items():
        module_name, attr = _split(name)
        tensor = getattr(model.get_submodule(module_name), attr)
        with torch.no_grad():
            if name in masks:  # a pruned weight stays zero (every scheme has a zero level)
                tensor.mul_(masks[name].reshape(tensor.shape).to(tensor.dtype))
            enc = scheme.encode(tensor.detach(), generator=gen)
            tensor.copy_(scheme.decode(enc).reshape(tensor.shape))
        state.tensors[name] = enc


class KeepMasks(Constraint):
    """Pruned weights stay zero: the mask is applied before training and after every optimizer step.

    Args:
        masks: boolean keep-masks by state-dict name (``True`` keeps the weight).
    """

    name = "masks"

    def __init__(self, masks: Mapping[str, torch.Tensor]):
        self.masks = dict(masks)

    def parameters(self) -> set[str]:
        return set()  # a mask composes with any other constraint on the same weight

    def _apply(self, model: nn.Module) -> None:
        with torch.no_grad():
            for name, mask in self.masks.items():
                tensor = raw_parameter(model, name)
                tensor.mul_(mask.reshape(tensor.shape).to(device=tensor.device, dtype=tensor.dtype))

    def attach(self, model: nn.Module) -> None:
        self._apply(model)

    def after_step(self, model: nn.Module) -> None:
        self._apply(model)

    def detach(self, model: nn.Module) -> None:
        self._apply(model)


class LearnableThresholds(Constraint):
    """Train each named neuron layer's threshold; it becomes a buffer again when training ends.

    The architecture stays as the user wrote it: a threshold that was a buffer is a parameter only
    during training. A threshold the user already made learnable (snnTorch ``learn_threshold=True``)
    is trained with everything else and left alone here.

    Args:
        layers: neuron layer names.
        lr_scale: the thresholds' learning rate as a multiple of the base learning rate.
    """

    name = "thresholds"

    def __init__(self, layers: Iterable[str], lr_scale: float = 1.0):
        self.layers = list(layers)
        self.scale = lr_scale
        self.learned: list[str] = []
        self.before: dict[str, float | list] = {}
        self.after: dict[str, float | list] = {}

    def parameters(self) -> set[str]:
        return {f"{n}.threshold" for n in self.layers}

    def lr_scale(self) -> dict[str, float]:
        return {f"{n}.threshold": self.scale for n in self.learned}

    def attach(self, model: nn.Module) -> None:
        self.learned = []
        for name in self.layers:
            module = model.get_submodule(name)
            self.before[name] = threshold_value(module)
            if isinstance(module.threshold, nn.Parameter):
                continue
            value = module.threshold.detach().clone()
            del module.threshold
            module.threshold = nn.Parameter(value)
            self.learned.append(name)

    def detach(self, model: nn.Module) -> None:
        for name in self.learned:
            module = model.get_submodule(name)
            value = module.threshold.detach().clone()
            del module.threshold
            module.register_buffer("threshold", value)
        for name in self.layers:
            self.after[name] = threshold_value(model.get_submodule(name))


class ChannelGateCost(Constraint):
    """Train channel gates (SpQuant Eq. 23, :mod:`snncompress.models.channel_gate`) with their sparsity cost.

    Each gated layer's gate learns at ``GATE_LR_SCALE`` times the learning rate, and ``cost * mean(p)`` --
    the mean keep probability over the gated layers' channels, samples and steps of the step -- is added to
    the loss: without it the task loss alone would keep every channel.

    Args:
        costs: the cost by gated neuron layer (the layers' mean is weighted by these).
    """

    name = "channel-gate-cost"

    def __init__(self, costs: Mapping[str, float]):
        self.costs = dict(costs)
        self.gates: dict = {}

    def parameters(self) -> set[str]:
        return {f"{n}.channel_gate.{p}" for n in self.costs for p in ("weight", "bias")}

    def lr_scale(self) -> dict[str, float]:
        from snncompress.models.channel_gate import GATE_LR_SCALE

        return dict.fromkeys(self.parameters(), GATE_LR_SCALE)

    def attach(self, model: nn.Module) -> None:
        from snncompress.models.channel_gate import gates

        self.gates = {n: g for n, g in gates(model).items() if n in self.costs}
        for gate in self.gates.values():
            gate.recorded = []

    def loss_term(self) -> torch.Tensor | None:
        terms = []
        for layer, gate in self.gates.items():
            if gate.recorded:
                terms.append(self.costs[layer] * torch.stack([p.mean() for p in gate.recorded]).mean())
            gate.recorded = []
        return torch.stack(terms).mean() if terms else None

    def detach(self, model: nn.Module) -> None:
        for gate in self.gates.values():
            gate.recorded = None
        self.gates = {}


def threshold_value(module: nn.Module) -> float | list:
    """A neuron's threshold as JSON (a float, or a list for per-neuron thresholds)."""
    value = module.threshold.detach()
    return round(float(value), 6) if value.numel() == 1 else [round(float(v), 6) for v in value.reshape(-1)]


def state_constraints(model: nn.Module) -> list[Constraint]:
    """The constraints of every compression already applied to ``model`` (its compression state).

    * pruning masks -> :class:`KeepMasks`;
    * encoded weights of synaptic layers -> :class:`FakeQuantWeights` with the stored scheme, re-encoded
      when training ends (codes stay on their grid; the scale may follow the trained weights);
    * channel gates -> :class:`ChannelGateCost` with their stored cost (a later fine-tuning keeps training
      them against it, rather than letting the task loss alone reopen every channel).

    Membrane quantizers need no constraint: their forward hooks stay installed and train through SGS.
    Encoded neuron parameters (threshold, beta in fixed point) are not trainable buffers and stay as stored.
    """
    if not has_state(model):
        return []
    state = get_state(model)
    from snncompress.quant.base import WeightScheme

    out: list[Constraint] = []
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    schemes = {name: WeightScheme.from_dict(enc.scheme) for name, enc in state.tensors.items()
               if name in trainable}
    if schemes:
        out.append(FakeQuantWeights(schemes))
    if state.masks:
        out.append(KeepMasks(state.masks))
    costs = {n: float(v["channel_gate"]["cost"]) for n, v in state.neurons.items() if v.get("channel_gate")}
    if costs:
        out.append(ChannelGateCost(costs))
    return out


def constraints_for_training(model: nn.Module, given: Iterable[Constraint]) -> list[Constraint]:
    """``given`` plus the state's constraints, minus the state's claims on parameters ``given`` governs."""
    given = list(given)
    taken = set().union(*(c.parameters() for c in given)) if given else set()
    out: list[Constraint] = []
    for constraint in state_constraints(model):
        if isinstance(constraint, FakeQuantWeights):
            kept = {k: s for k, s in constraint.schemes.items() if k not in taken}
            if not kept:
                continue
            constraint = FakeQuantWeights(kept)
        out.append(constraint)
    return out + given


@contextlib.contextmanager
def attached(model: nn.Module, constraints: Iterable[Constraint]) -> Iterator[list[Constraint]]:
    """Attach ``constraints`` for a ``with`` block; detach them in reverse order, also on error."""
    done: list[Constraint] = []
    try:
        for constraint in constraints:
            constraint.attach(model)
            done.append(constraint)
        yield done
    finally:
        for constraint in reversed(done):
            constraint.detach(model)
