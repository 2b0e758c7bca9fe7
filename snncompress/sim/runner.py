"""Run an SNN over time and observe its neuron layers.

Two model styles are driven the same way from the outside:

* ``stepwise``: an ``nn.Sequential`` (or any module marked so) whose neurons have
  ``init_hidden=True``. The runner resets the hidden state, then calls the model once per time
  step; the last layer's spikes (and membrane, if it returns them) form the output. A user module
  whose ``forward(x)`` is one time step of ``init_hidden=True`` neurons returning ``(spk, mem)``
  (the way NeuroBench and benchmark suites drive a model) is one too: :func:`settle_style` finds it
  on the first sample and records it in the model's source (and so in its compressed file).
* ``sequence``: a user ``nn.Module`` with its own time loop whose ``forward(x)`` returns spike
  (and membrane) records over time, ``[T, B, ...]``, as in the snnTorch tutorials. Static input is
  passed as ``[B, ...]``; event frames as ``[T, B, ...]``.

Observers see every neuron layer at every step through forward hooks (nothing is copied): the
spikes ``s[t]`` and the membrane ``u[t]`` that was compared with the threshold (before reset and
before any storage quantization).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from snncompress.errors import DataError, ModelLoadError, ModelRunError, NoTimeLoopError, SnnCompressError
from snncompress.models.neurons import neuron_layers
from snncompress.models.source import STYLES, detect_style, recorded_style
from snncompress.state import get_state


class Observer(Protocol):
    """Receives each neuron layer's activity at each time step."""

    def on_step(self, layer: str, module: nn.Module, step: int, spikes: torch.Tensor,
                membrane: torch.Tensor) -> None: ...


@dataclass
class RunOutput:
    """Output-layer activity of one batch: ``spikes`` and ``membrane`` are ``[T, B, ...]``."""

    spikes: torch.Tensor
    membrane: torch.Tensor | None

    @property
    def spike_counts(self) -> torch.Tensor:
        return self.spikes.sum(dim=0)

    def predictions(self) -> torch.Tensor:
        return self.spike_counts.argmax(dim=-1)


class SNNRunner:
    """Drive a model over time and notify observers.

    Args:
        model: the snnTorch model.
        style: ``stepwise`` or ``sequence``; detected when None.
    """

    def __init__(self, model: nn.Module, style: str | None = None):
        self.model = model
        self.style = style or detect_style(model)
        # a user module of init_hidden=True neurons is one step per call or has its own loop: the first
        # batch tells (settle_style), unless the style was given or is recorded
        self._settled = style is not None or recorded_style(model) is not None
        if self.style not in STYLES:
            raise ModelLoadError(f"unknown model style '{self.style}'; use stepwise or sequence")
        self.neurons = neuron_layers(model)
        if self.style == "stepwise":
            lazy = [n for n, m in self.neurons if not m.init_hidden]
            if lazy:
                raise ModelLoadError(
                    f"neuron layer '{lazy[0]}' has init_hidden=False, so the model cannot be stepped as a "
                    "Sequential; set init_hidden=True or give the model a forward(x) with its own time loop"
                )
        self._observers: list[Observer] = []
        self._steps: dict[str, int] = {}

    # -- running --------------------------------------------------------------------------------
    def run(self, x: torch.Tensor, *, is_sequence: bool, time_steps: int) -> RunOutput:
        """Run one batch.

        Args:
            x: ``[B, ...]`` static input or ``[B, T, ...]`` sequence.
            is_sequence: whether ``x`` carries time in dim 1.
            time_steps: steps to present a static input for (stepwise style).
        """
        if not self._settled:
            self.style, self._settled = settle_style(self.model, x[0]), True
        self._steps = {name: 0 for name, _ in self.neurons}
        x = x.to(model_device(self.model))  # data stays on the CPU; each batch goes where the model is
        batch = x.shape[0]
        if self.style == "stepwise":
            self.reset()
            steps = x.shape[1] if is_sequence else time_steps
            spikes, membranes = [], []
            for t in range(steps):
                out = self._call(x[:, t] if is_sequence else x, t)
                spk, mem = _split_output(out)
                spikes.append(spk)
                if mem is not None:
                    membranes.append(mem)
            return RunOutput(torch.stack(spikes), torch.stack(membranes) if membranes else None)
        inp = x.transpose(0, 1) if is_sequence else x
        out = self._call(inp, None)
        spk, mem = _split_output(out)
        if spk.dim() == 2 and spk.shape[0] == batch and self._calls_per_neuron(inp) == 1:
            raise NoTimeLoopError(
                f"this model has no time loop: its forward(x) runs each neuron layer once and returns spikes of "
                f"shape {list(spk.shape)}, one time step per call (as tutorial 6's class Net); loop over time "
                "steps in forward and return records [T, B, ...] (snnTorch tutorial 5), or give it init_hidden=True "
                "neurons that keep their state between calls (no reset in forward), which snncompress steps itself"
            )
        spk = _time_first(spk, batch, "spike record")
        mem = _time_first(mem, batch, "membrane record") if mem is not None else None
        return RunOutput(spk, mem)

    def _call(self, x: torch.Tensor, step: int | None):
        """Call the model; an exception from its own code becomes a one-line :class:`ModelRunError`
        naming the innermost layer that raised (found in the traceback: no hooks, no cost when it runs)."""
        try:
            return self.model(x)
        except SnnCompressError:
            raise
        except Exception as exc:
            raise ModelRunError(_describe_failure(self.model, exc, list(x.shape), step)) from exc

    def _calls_per_neuron(self, x: torch.Tensor) -> int:
        """How often one forward call runs each neuron layer (at most; the rare error path runs it again)."""
        counts = {name: 0 for name, _ in self.neurons}

        def counter(name: str):
            def hook(*_):
                counts[name] += 1
            return hook

        handles = [m.register_forward_hook(counter(n)) for n, m in self.neurons]
        try:
            self._call(x, None)
        finally:
            for h in handles:
                h.remove()
        return max(counts.values(), default=0)

    def reset(self) -> None:
        """Zero the hidden state of this model's own neurons.

        Not ``snntorch.utils.reset``: that resets the neurons in snnTorch's global
        ``SpikingNeuron.instances`` list, which misses deep copies (``copy_model``) and models built
        before the list was cleared, so their state would leak from one batch into the next.
        """
        for _, module in self.neurons:
            module.reset_mem()

    def __call__(self, x: torch.Tensor, *, is_sequence: bool, time_steps: int) -> RunOutput:
        return self.run(x, is_sequence=is_sequence, time_steps=time_steps)

    # -- observing ------------------------------------------------------------------------------
    @contextmanager
    def observe(self, *observers: Observer) -> Iterator[SNNRunner]:
        """Attach observers to every neuron layer for the duration of the ``with`` block."""
        handles = []
        self._observers = list(observers)
        for name, module in self.neurons:
            # prepend: see u[t] before any storage-quantization hook rewrites the stored state
            handles.append(module.register_forward_hook(self._make_hook(name), prepend=True))
        try:
            yield self
        finally:
            for h in handles:
                h.remove()
            self._observers = []

    def _make_hook(self, name: str):
        def hook(module: nn.Module, _inputs, output):
            spk = output[0] if isinstance(output, tuple) else output
            mem = module.mem
            step = self._steps.get(name, 0)
            self._steps[name] = step + 1
            for obs in self._observers:
                obs.on_step(name, module, step, spk, mem)

        return hook


def failing_layer(model: nn.Module, exc: BaseException) -> tuple[str, nn.Module] | None:
    """The innermost of ``model``'s modules whose code is on ``exc``'s traceback (``self`` of a frame)."""
    names = {id(m): n for n, m in model.named_modules()}
    found = None
    tb = exc.__traceback__
    while tb is not None:
        owner = tb.tb_frame.f_locals.get("self")
        if owner is not None and id(owner) in names:
            found = (names[id(owner)], owner)
        tb = tb.tb_next
    return found


def _describe_failure(model: nn.Module, exc: BaseException, shape: list[int], step: int | None) -> str:
    lines = str(exc).strip().splitlines()
    error = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    where = failing_layer(model, exc)
    at = f" at time step {step}" if step is not None else ""
    if where is None or where[0] == "":
        who = f"the model's forward ({type(model).__name__})"
    else:
        who = f"layer '{where[0]}' ({type(where[1]).__name__})"
    return f"{who} failed{at} on input {shape}: {error}"


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); the CPU for a model with neither."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def _split_output(out) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(out, torch.Tensor):
        return out, None
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        mem = out[-1] if len(out) > 1 and isinstance(out[-1], torch.Tensor) else None
        return out[0], mem
    raise ModelLoadError(
        f"the model returned {type(out).__name__}; expected spikes, or a tuple (spikes, ..., membrane)"
    )


def _time_first(rec: torch.Tensor, batch: int, what: str) -> torch.Tensor:
    if rec.dim() >= 3 and rec.shape[1] == batch:
        return rec
    if rec.dim() >= 3 and rec.shape[0] == batch:
        return rec.transpose(0, 1)
    raise ModelLoadError(
        f"the model's {what} has shape {list(rec.shape)}; a model with its own time loop must return "
        f"records over time, [T, B, ...] with B = {batch}"
    )


# what a model raises when the data's layout does not fit it (shape, index and dtype complaints)
_LAYOUT_ERRORS = (RuntimeError, ValueError, IndexError)


def settle_style(model: nn.Module, sample: torch.Tensor) -> str:
    """The model's style, deciding on ``sample`` (one sample, no batch dim) whether a user module whose
    neurons all have ``init_hidden=True`` is one time step per call or has its own time loop.

    One call on two copies of the sample (static, or its first time step) counts the calls of each neuron
    layer: once each, and spikes ``[B, ...]`` back, is one step; a second call must find the neurons' state
    where the first left it (a forward that resets them on every call cannot be stepped). A one-step module
    is recorded ``stepwise`` in the model's source, with a note on stderr; any other outcome ``sequence``
    (the runner then reports a model with no time loop as such). Known styles are returned as they are.
    """
    known = recorded_style(model)
    if known is not None:
        return known
    neurons = neuron_layers(model)
    style = "sequence"
    if neurons and all(getattr(m, "init_hidden", False) for _, m in neurons):
        readings = [sample] + ([sample[0]] if sample.dim() >= 2 else [])
        for one in readings:
            verdict = _one_step(model, neurons, torch.stack([one, one]))
            if verdict is not None:
                style = verdict
                break
    get_state(model).source["style"] = style
    if style == "stepwise":
        print(f"note: {type(model).__name__}'s forward(x) is one time step (each neuron layer runs once per call "
              "and keeps its state, init_hidden=True): snncompress calls it once per time step and resets its "
              "neurons before each batch", file=sys.stderr)
    return style


def _one_step(model: nn.Module, neurons: list[tuple[str, nn.Module]], x: torch.Tensor) -> str | None:
    """``stepwise``/``sequence`` for a model that runs on ``x``; None when ``x`` does not fit it."""
    counts = {name: 0 for name, _ in neurons}
    before: dict[str, torch.Tensor] = {}

    def counter(name: str):
        def hook(module, _inputs):
            counts[name] += 1
            if isinstance(module.mem, torch.Tensor) and name not in before:
                before[name] = module.mem.detach().clone()
        return hook

    x = x.to(model_device(model))
    was_training = model.training
    model.eval()  # a probe must not update BatchNorm statistics
    hidden = _without_hooks(model)  # observers and instruments attached to the model must not see the probe
    handles = [m.register_forward_pre_hook(counter(n)) for n, m in neurons]
    try:
        for _, module in neurons:
            module.reset_mem()
        with torch.no_grad():
            out = model(x)
            spk, _ = _split_output(out)
            if set(counts.values()) != {1} or spk.dim() < 2 or spk.shape[0] != x.shape[0]:
                return "sequence"
            after = {n: m.mem.detach().clone() for n, m in neurons if isinstance(m.mem, torch.Tensor)}
            before.clear()
            model(x)
    except Exception:  # noqa: BLE001 - the user's code rejects this reading of the sample: try the next
        return None
    finally:
        for h in handles:
            h.remove()
        for module, hooks in hidden:
            for attr, value in hooks.items():
                setattr(module, attr, value)
        for _, module in neurons:
            module.reset_mem()
        model.train(was_training)
    # a forward that resets its neurons on every call (snntorch.utils.reset, init_leaky) forgets each step
    kept = all(torch.equal(before[n], after[n]) for n in after if n in before and before[n].shape == after[n].shape)
    moved = any(bool(t.any()) for t in after.values())
    return "stepwise" if kept or not moved else "sequence"


_HOOK_DICTS = ("_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks",
               "_forward_pre_hooks_with_kwargs")


def _without_hooks(model: nn.Module) -> list[tuple[nn.Module, dict]]:
    """Give every module empty forward-hook tables (its own are returned, to be put back as they are: their
    removable handles keep pointing at them)."""
    from collections import OrderedDict

    saved = []
    for module in model.modules():
        hooks = {attr: getattr(module, attr) for attr in _HOOK_DICTS if hasattr(module, attr)}
        for attr in hooks:
            setattr(module, attr, OrderedDict())
        saved.append((module, hooks))
    return saved


def resolve_layout(runner: SNNRunner, sample: torch.Tensor, time_steps: int) -> bool:
    """Decide whether samples like ``sample`` (no batch dim) are sequences for this model.

    A reading fits when the model runs on it and returns one output vector per sample and step,
    ``[T, B, classes]``: a Linear layer also runs on a ``[B, T, features]`` frame batch read as static
    input, but then returns ``[T, B, T, classes]``. The probe holds two copies of the sample so that
    the batch dim cannot pass for a size-1 channel or time dim. A stepwise model is tried static
    first; a model with its own time loop is tried as a sequence first (read as static, its loop
    would step over the batch).

    Returns:
        True when the data must be read as ``[T, ...]`` sequences.

    Raises:
        DataError: neither reading fits the model; the message quotes the model's complaint.
    """
    runner.style, runner._settled = settle_style(runner.model, sample), True
    probe = torch.stack([sample, sample])
    order = (True, False) if runner.style == "sequence" else (False, True)
    errors = []
    no_loop: NoTimeLoopError | None = None
    for is_sequence in order:
        if is_sequence and sample.dim() < 2:
            continue
        try:
            with torch.no_grad():
                out = runner.run(probe, is_sequence=is_sequence, time_steps=min(time_steps, 2))
        except (ModelRunError, ModelLoadError) as exc:
            if isinstance(exc, ModelRunError) and not isinstance(exc.__cause__, _LAYOUT_ERRORS):
                raise  # a bug in the model's code, not a reading of the data it rejects
            if isinstance(exc, NoTimeLoopError):
                no_loop = exc
            errors.append(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
            continue
        if out.spikes.dim() == 3 and out.spikes.shape[1] == probe.shape[0]:
            if runner.style == "stepwise" and not isinstance(runner.model, nn.Sequential):
                from snncompress.export.chain import record_step_chain

                record_step_chain(runner.model, sample[0] if is_sequence else sample)
            return is_sequence
        errors.append(f"the model's output spikes have shape {list(out.spikes.shape)} for a batch of "
                      f"{probe.shape[0]}, expected [T, {probe.shape[0]}, classes]")
    if no_loop is not None:
        raise no_loop  # the model, not the data's layout, is what does not fit
    raise DataError(
        f"data samples of shape {list(sample.shape)} do not fit the model: {errors[0]}"
    )
