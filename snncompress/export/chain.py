"""A user module (its own time loop, or one time step per call) as the chain of its layers.

Both exporters walk an ``nn.Sequential`` one layer per step. Most user modules are such a chain written
out by hand::

    for step in range(num_steps):
        spk1, mem1 = self.lif1(self.fc1(x), mem1)
        spk2, mem2 = self.lif2(self.fc2(spk1), mem2)

One recorded step shows it: every layer is called once per step, in the same order, and each takes the
previous layer's output itself (the same tensor object; the first takes the step's input). A flatten of
the previous output (``spk.view(batch, -1)``, ``flatten(1)``) is accepted and becomes ``nn.Flatten``.
The chain is then rebuilt as an ``nn.Sequential`` of copies of the layers with ``init_hidden=True``
neurons, and checked: run over the model's own number of steps, it must give the model's output spikes
exactly. Anything else (a functional call such as ``F.max_pool2d``, arithmetic on a layer's output, a
skip connection, a layer called twice per step or only after the loop) is reported by the call that
breaks the chain.

A user module whose ``forward(x)`` is one time step (``init_hidden=True`` neurons, the style NeuroBench
drives) is recorded and checked the same way over a few steps the runner drives; its chain is recorded in
its source (:func:`record_step_chain`), so that the integer-only reference and every walk over a stepwise
model's layers (:func:`snncompress.export.layout.leaf_layers`) see its layers in order.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from snncompress.errors import DataError, UnsupportedLayerError
from snncompress.models.neurons import is_neuron
from snncompress.state import CompressionState, get_state, has_state


@dataclass
class _Call:
    name: str
    module: nn.Module
    input: torch.Tensor | None
    output: torch.Tensor


def exportable(model: nn.Module, sample: torch.Tensor, what: str) -> tuple[nn.Module, list[str]]:
    """``model`` itself when it is an ``nn.Sequential``, else the chain of its layers (module docstring).

    Args:
        model: the model to export.
        sample: one input time step without the batch dimension.
        what: the export's name for messages (``NIR export``).

    Returns:
        The stepwise model and a note saying how it was obtained (none for a Sequential).

    Raises:
        UnsupportedLayerError: the model is not a chain, naming the call that breaks it; or a Sequential
            neuron has ``init_hidden=False``.
        NoTimeLoopError: the model runs one time step per call.
    """
    from snncompress.export.layout import require_sequential
    from snncompress.models.spatial import require_no_runtime_masks

    require_no_runtime_masks(model, what)
    if isinstance(model, nn.Sequential):
        require_sequential(model, what)
        return model, []
    x, is_sequence = _probe_input(model, sample)
    calls, out = _record(model, x, is_sequence)
    steps = int(out.spikes.shape[0])
    chain = _chain(calls, x[:, 0] if is_sequence else x, type(model).__name__, what)
    seq = _build(model, chain)
    _check_spikes(seq, model, x, is_sequence, steps, out.spikes, what)
    names = " -> ".join(c.name if c.name else "Flatten" for c in chain)
    how = ("'s forward(x) is one time step" if _stepwise(model) else " has its own time loop")
    note = (f"{type(model).__name__}{how}; exported as the chain of its layers {names} "
            f"(one recorded step chains them, and {steps} steps of the chain give the model's output spikes)")
    return seq, [note]


def record_step_chain(model: nn.Module, sample: torch.Tensor) -> None:
    """Record in the source of a one-step user module the chain of its layers (``None`` for a flatten between
    two), found and checked on ``sample`` (one time step or one sample, no batch dim); a module that is no
    chain keeps the reason instead, for the walks that need one to name it (:func:`chain_reason`)."""
    state = get_state(model)
    if isinstance(model, nn.Sequential) or state.source.get("chain") is not None or _REASON in model.__dict__:
        return
    try:
        state.source["chain"] = layer_chain(model, sample, f"{type(model).__name__}'s one-step forward")
    except (UnsupportedLayerError, DataError) as exc:
        model.__dict__[_REASON] = str(exc)


def recorded_chain(model: nn.Module) -> list[str | None] | None:
    """The chain :func:`record_step_chain` recorded for a one-step user module (or its file kept), else None."""
    if isinstance(model, nn.Sequential) or not has_state(model):
        return None
    chain = get_state(model).source.get("chain")
    return list(chain) if isinstance(chain, list) else None


def chain_reason(model: nn.Module) -> str | None:
    """Why a one-step user module's layers are no chain, when a recording found out."""
    return model.__dict__.get(_REASON)


_REASON = "_snncompress_chain_reason"


def _stepwise(model: nn.Module) -> bool:
    from snncompress.models.source import detect_style

    return detect_style(model) == "stepwise"


def layer_chain(model: nn.Module, sample: torch.Tensor, what: str) -> list[str | None]:
    """The qualified names of the layers one time step of a user module calls, in order (``None``: a flatten
    between two), checked as :func:`exportable` checks them (the chain's spikes are the model's).

    Raises:
        UnsupportedLayerError: the model is not a chain, naming the call that breaks it.
    """
    x, is_sequence = _probe_input(model, sample)
    calls, out = _record(model, x, is_sequence)
    steps = int(out.spikes.shape[0])
    chain = _chain(calls, x[:, 0] if is_sequence else x, type(model).__name__, what)
    _check_spikes(_build(model, chain), model, x, is_sequence, steps, out.spikes, what)
    return [c.name or None for c in chain]


def _probe_input(model: nn.Module, sample: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """Two inputs built from ``sample`` (one time step), static ``[2, ...]`` or event frames
    ``[2, 3, ...]``, whichever the model reads (its output is ``[T, 2, classes]``).

    Raises:
        DataError: neither fits, with the model's complaint.
        NoTimeLoopError: the model runs one step per call.
    """
    from snncompress.errors import DataError, ModelLoadError, ModelRunError, NoTimeLoopError
    from snncompress.sim.runner import SNNRunner

    runner = SNNRunner(model)
    gen = torch.Generator().manual_seed(1)
    static = torch.stack([sample, torch.rand(sample.shape, generator=gen)])
    frames = torch.stack([static, torch.stack([static[1], static[0]])], dim=1)  # [2, T=2, ...]
    errors = []
    for x, is_sequence in ((static, False), (frames, True)):
        try:
            with torch.no_grad():
                out = runner.run(x, is_sequence=is_sequence, time_steps=1)
        except NoTimeLoopError:
            raise
        except (ModelRunError, ModelLoadError) as exc:
            errors.append(str(exc))
            continue
        if out.spikes.dim() == 3 and out.spikes.shape[1] == 2:
            return x, is_sequence
        errors.append(f"output spikes of shape {list(out.spikes.shape)} for a batch of 2")
    raise DataError(f"an input of shape {list(sample.shape)} per time step does not fit {type(model).__name__}, "
                    f"read as a static input or as event frames: {errors[0]}")


def _leaves(model: nn.Module) -> dict[int, str]:
    """id -> name of every layer that can be a link: neurons, and modules without children outside them."""
    out: dict[int, str] = {}
    inside: list[str] = []
    for name, module in model.named_modules():
        if not name or any(name.startswith(p + ".") for p in inside):
            continue
        if is_neuron(module):
            inside.append(name)
            out[id(module)] = name
        elif not any(True for _ in module.children()):
            out[id(module)] = name
    return out


def _record(model: nn.Module, x: torch.Tensor, is_sequence: bool):
    from snncompress.sim.runner import SNNRunner

    leaves = _leaves(model)
    calls: list[_Call] = []

    def hook(module, inputs, output):
        first = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
        out = output[0] if isinstance(output, tuple) else output
        calls.append(_Call(leaves[id(module)], module, first, out))

    handles = [m.register_forward_hook(hook) for _, m in model.named_modules() if id(m) in leaves]
    # a one-step module is stepped by the runner: a few steps check that the chain keeps its state too
    steps = 1 if is_sequence or not _stepwise(model) else 3
    try:
        with torch.no_grad():
            out = SNNRunner(model).run(x, is_sequence=is_sequence, time_steps=steps)
    finally:
        for h in handles:
            h.remove()
    return calls, out


def _describe(call: _Call) -> str:
    return f"'{call.name}' ({type(call.module).__name__})"


def _chain(calls: list[_Call], step_input: torch.Tensor, model_name: str, what: str) -> list[_Call]:
    """The layers of one step in order, with ``_Call("", nn.Flatten())`` where a flatten links two."""
    def refuse(reason: str):
        raise UnsupportedLayerError(
            f"{what}: {model_name} has its own time loop and is exported as the chain of its layers, but it is "
            f"not a chain: {reason}; write that step with modules (nn.Flatten, nn.MaxPool2d, ...) so each "
            "layer takes the previous one's output, or rebuild the model as an nn.Sequential"
        )

    if not calls:
        refuse("no layer ran")
    step: list[_Call] = []
    for call in calls:
        if any(c.module is call.module for c in step):
            break
        step.append(call)
    k = len(step)
    for i, call in enumerate(calls):
        expected = step[i % k]
        if call.module is not expected.module:
            t = i // k
            if not any(c.module is call.module for c in step):
                refuse(f"layer {_describe(call)} is called outside the per-step chain (step {t})")
            refuse(f"time step {t} calls {_describe(call)} where step 0 called {_describe(expected)} "
                   "(a layer called twice in a step, or steps that differ)")
    if len(calls) % k:
        refuse(f"the last time step stops after {_describe(calls[-1])}")
    chain: list[_Call] = []
    previous: torch.Tensor = step_input
    for i, call in enumerate(step):
        source = "the step's input x" if i == 0 else f"the output of {_describe(step[i - 1])}"
        given = call.input
        if given is None:
            refuse(f"the call of {_describe(call)} gets no tensor input")
        if given is previous or (i == 0 and given.shape == previous.shape and torch.equal(given, previous)):
            pass
        elif (given.dim() == 2 and given.shape[0] == previous.shape[0] and previous.dim() > 2
              and given.shape[1] == previous[0].numel() and torch.equal(given, previous.flatten(1))):
            chain.append(_Call("", nn.Flatten(), None, given))
        else:
            if given.shape == previous.shape:
                how = "the same shape, other values: computed from it in forward, e.g. by arithmetic"
            elif given.numel() == previous.numel():
                how = (f"shape {list(given.shape)} from {list(previous.shape)}, other values: reshaped and "
                       "computed from it in forward")
            else:
                how = (f"shape {list(given.shape)} from {list(previous.shape)}: computed from it in forward, e.g. by "
                       "indexing a time step, a reshape or a functional pooling")
            refuse(f"the call of {_describe(call)} does not take {source} ({how})")
        chain.append(call)
        previous = call.output
    return chain


def _build(model: nn.Module, chain: list[_Call]) -> nn.Sequential:
    """An ``nn.Sequential`` of copies of the chain's layers (neurons stepping their own state), carrying
    the model's compression state under the new names."""
    seq = nn.Sequential()
    renamed: dict[str, str] = {}
    neurons = [c for c in chain if c.name and is_neuron(c.module)]
    for i, call in enumerate(chain):
        name = call.name.replace(".", "_") if call.name else f"flatten_{i}"
        module = copy.deepcopy(call.module)
        if is_neuron(module):
            module.init_hidden = True
            module.output = call is neurons[-1]
            module.reset_mem()
        seq.add_module(name, module)
        if call.name:
            renamed[call.name] = name
    if has_state(model):
        seq.__dict__["snncompress_state"] = _renamed_state(get_state(model), renamed)
        from snncompress.models.membrane import reinstall_membrane_hooks

        reinstall_membrane_hooks(seq)
    return seq


def _renamed_state(state: CompressionState, renamed: dict[str, str]) -> CompressionState:
    def key(name: str) -> str:
        for old, new in sorted(renamed.items(), key=lambda kv: -len(kv[0])):
            if name == old or name.startswith(old + "."):
                return new + name[len(old):]
        return name

    clone = copy.deepcopy(state)
    clone.tensors = {key(k): v for k, v in clone.tensors.items()}
    clone.masks = {key(k): v for k, v in clone.masks.items()}
    clone.neurons = {key(k): v for k, v in clone.neurons.items()}
    return clone


def _check_spikes(seq: nn.Sequential, model: nn.Module, x: torch.Tensor, is_sequence: bool, steps: int,
                  expected: torch.Tensor, what: str) -> None:
    from snncompress.sim.runner import SNNRunner

    with torch.no_grad():
        got = SNNRunner(seq).run(x, is_sequence=is_sequence, time_steps=steps).spikes
    if got.shape != expected.shape or not torch.equal(got, expected):
        differ = "shapes differ" if got.shape != expected.shape else (
            f"{int((got != expected).sum())} of {expected.numel()} output spikes differ")
        raise UnsupportedLayerError(
            f"{what}: {type(model).__name__}'s layers chain in one step, but the chain run for {steps} steps does "
            f"not give the model's output spikes ({differ}): its forward does more than chain them (state "
            "passed between layers, a non-zero initial membrane, outputs other than the last layer's spikes); "
            "rebuild the model as an nn.Sequential"
        )
