"""snnTorch neuron introspection: which neurons are supported and what their parameters are.

The LIF family (SpQuant §3): ``u[t] = beta * u[t-1] + I[t] - s[t-1] * Vth`` in snnTorch's own
ordering (reset applied on the next step), ``s[t] = H(u[t] - Vth)``. ``Synaptic`` adds a synaptic
current ``syn[t] = alpha * syn[t-1] + I[t]`` that feeds the membrane; ``RLeaky`` adds recurrent
weights from its own spikes, ``RSynaptic`` adds them to its synaptic current
(``syn[t] = alpha * syn[t-1] + I[t] + rec(s[t-1])``). ``Lapicque`` is the RC circuit
``u[t] = (1 - dt/(R C)) * u[t-1] + I[t] * dt / C``: its leak is ``1 - dt/(R C)``, not its ``beta``
(``exp(-dt/(R C))``, which snnTorch only uses to derive R or C). ``Alpha`` has two synaptic traces,
``exc[t] = alpha * exc[t-1] + I[t]``, ``inh[t] = beta * inh[t-1] - I[t]``, and a membrane computed
from them at every step, ``u[t] = tau_alpha * (exc[t] + inh[t])``, with
``tau_alpha = log(alpha) / (log(beta) - log(alpha)) + 1`` (snnTorch ``_neurons/alpha.py``).

``MultiSpikeLeaky`` and ``MultiSpikeSynaptic`` (``models/multispike.py``) are ``Leaky`` and ``Synaptic``
firing ``trunc(u/Vth)`` spikes per step (sinabs's and Rockpool's default mode, read from their NIR).

``LeakyParallel`` (an ``nn.RNN`` run over the whole sequence at once) is not supported.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import snntorch as snn
import torch
from torch import nn

from snncompress.models.multispike import MultiSpikeLeaky, MultiSpikeSynaptic

# Order matters for isinstance checks: RLeaky and Synaptic do not subclass Leaky in snnTorch 1.x,
# but keep the most specific first anyway.
SUPPORTED_NEURONS: tuple[type[nn.Module], ...] = (MultiSpikeLeaky, MultiSpikeSynaptic, snn.RSynaptic,
                                                   snn.RLeaky, snn.Synaptic, snn.Alpha,
                                                   snn.Lapicque, snn.Leaky)
KNOWN_NEURON_NAMES = {cls.__name__ for cls in SUPPORTED_NEURONS}
SUPPORTED_NEURON_NAMES = ", ".join(cls.__name__ for cls in (snn.Leaky, snn.Synaptic, snn.RLeaky, snn.RSynaptic,
                                                           snn.Lapicque, snn.Alpha, MultiSpikeLeaky,
                                                           MultiSpikeSynaptic))
# neurons whose recurrent weights (``recurrent`` or one-to-one ``V``) feed their own spikes back
RECURRENT_NEURONS = ("RLeaky", "RSynaptic")


def is_neuron(module: nn.Module) -> bool:
    """True for any snnTorch spiking neuron (supported or not)."""
    return isinstance(module, snn.SpikingNeuron)


def is_supported_neuron(module: nn.Module) -> bool:
    return isinstance(module, SUPPORTED_NEURONS)


def is_snntorch_module(module: nn.Module) -> bool:
    """A module from the snntorch package (a neuron, or e.g. ``LeakyParallel``, which is no SpikingNeuron)."""
    return type(module).__module__.split(".")[0] == "snntorch"


def leak_factor(module: nn.Module) -> torch.Tensor:
    """The factor the kept membrane is multiplied by at the next step: ``beta`` clamped to [0, 1], or, for
    ``Lapicque``, ``1 - dt/(R C)`` (module docstring)."""
    if type(module).__name__ == "Lapicque":
        return 1 - module.time_step / (module.R * module.C)
    return module.beta.clamp(0, 1)


def neuron_type(module: nn.Module) -> str:
    return type(module).__name__


def neuron_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """All spiking-neuron submodules of ``model`` in registration order, with their qualified names."""
    return [(name, m) for name, m in model.named_modules() if is_neuron(m)]


RESET_NAMES = {0: "subtract", 1: "zero", 2: "none"}
SURROGATE_FACTORIES = ("atan", "fast_sigmoid", "sigmoid", "spike_rate_escape", "straight_through_estimator",
                       "triangular")


@dataclass(frozen=True)
class NeuronParams:
    """A neuron layer's parameters as plain values, for inspection and metadata."""

    neuron_type: str
    beta: list[float] | float
    threshold: list[float] | float
    reset_mechanism: str
    alpha: list[float] | float | None = None
    learn_beta: bool = False
    learn_threshold: bool = False
    init_hidden: bool = False

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def _plain(t: torch.Tensor) -> list[float] | float:
    t = t.detach().cpu().float()
    return float(t) if t.numel() == 1 else [float(v) for v in t.reshape(-1)]


def neuron_params(module: nn.Module) -> NeuronParams:
    """Read a neuron's beta, threshold, reset and (for ``Synaptic``) alpha."""
    return NeuronParams(
        neuron_type=neuron_type(module),
        beta=_plain(module.beta),
        threshold=_plain(module.threshold),
        reset_mechanism=RESET_NAMES.get(int(module.reset_mechanism_val), "subtract"),
        alpha=_plain(module.alpha) if hasattr(module, "alpha") else None,
        learn_beta=isinstance(module.beta, nn.Parameter),
        learn_threshold=isinstance(module.threshold, nn.Parameter),
        init_hidden=bool(module.init_hidden),
    )


def surrogate_name(module: nn.Module) -> str:
    """The snnTorch surrogate function's factory name (``atan``, ``fast_sigmoid``, ...), best effort."""
    fn = getattr(module, "spike_grad", None)
    qualname = getattr(fn, "__qualname__", "") or type(fn).__name__
    name = qualname.split(".")[0]
    if name in {"_surrogate_bypass", "SpikingNeuron"} or getattr(module, "surrogate_disable", False):
        return "heaviside"
    import snntorch.surrogate as surrogate

    return name if hasattr(surrogate, name) else "atan"


def surrogate_args(module: nn.Module) -> dict[str, float]:
    """The arguments a snnTorch surrogate factory was called with where they differ from its defaults
    (``fast_sigmoid(slope=2)`` -> ``{"spike_grad_slope": 2.0}``), read from the closure it returned; flat
    keys, so they sit beside ``spike_grad`` in a layer spec."""
    import inspect

    import snntorch.surrogate as surrogate

    name = surrogate_name(module)
    fn = getattr(module, "spike_grad", None)
    code, cells = getattr(fn, "__code__", None), getattr(fn, "__closure__", None)
    if name not in SURROGATE_FACTORIES or code is None or not cells:
        return {}
    params = inspect.signature(getattr(surrogate, name)).parameters
    out = {}
    for var, cell in zip(code.co_freevars, cells, strict=False):
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        if var in params and isinstance(value, (int, float)) and not isinstance(value, bool) \
                and value != params[var].default:
            out[f"spike_grad_{var}"] = float(value)
    return out


def make_surrogate(name: str, args: Mapping[str, Any] | None = None):
    """Rebuild a surrogate from its factory name and the arguments :func:`surrogate_args` recorded
    (snnTorch's defaults for the rest)."""
    import inspect

    import snntorch.surrogate as surrogate

    if name == "heaviside":
        return None
    if name not in SURROGATE_FACTORIES:  # a name read from a file: call only snnTorch's known factories
        from snncompress.errors import ModelLoadError

        raise ModelLoadError(f"unknown surrogate gradient '{name}'; known: heaviside, "
                             + ", ".join(SURROGATE_FACTORIES))
    factory = getattr(surrogate, name)
    params = inspect.signature(factory).parameters
    kwargs = {k[len("spike_grad_"):]: float(v) for k, v in (args or {}).items()
              if k.startswith("spike_grad_") and k[len("spike_grad_"):] in params
              and isinstance(v, (int, float)) and not isinstance(v, bool)}
    return factory(**kwargs)
