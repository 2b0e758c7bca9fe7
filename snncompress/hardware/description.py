"""What the hardware cost model consumes: a plain description of each layer of an SNN.

A separate step builds these from a real snnTorch model and recorded spike activity; the
cost model (memory.py, ops.py, energy.py) never touches torch. All counts are per sample
(batch 1); spike counts are summed over the ``time_steps`` of one sample.

Validation raises :class:`snncompress.errors.InputError` naming the layer and the field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from snncompress.errors import InputError
from snncompress.hardware.formats import NumberFormat, parse_scheme

SynapticKind = Literal["linear", "conv1d", "conv2d"]
# State variables per neuron for the snnTorch neurons we know (Synaptic: syn + mem).
# Alpha: its two synaptic traces (its membrane is recomputed from them at every step; the reset reads the
# last spike, which the spike memory already holds).
STATE_VARIABLES = {"Leaky": 1, "RLeaky": 1, "Lapicque": 1, "Synaptic": 2, "RSynaptic": 2, "Alpha": 2,
                   "MultiSpikeLeaky": 1, "MultiSpikeSynaptic": 2}


def _need(cond: bool, where: str, msg: str) -> None:
    if not cond:
        raise InputError(f"{where}: {msg}")


def _fraction(value: float, where: str, name: str) -> None:
    _need(0.0 <= value <= 1.0, where, f"{name} must be in [0, 1], got {value}")


def _count(value: float | None, where: str, name: str) -> None:
    _need(value is None or value >= 0, where, f"{name} must be >= 0, got {value}")


@dataclass(frozen=True)
class SynapticLayer:
    """A linear or convolutional synaptic layer (SpQuant Eq. 29-30 inputs).

    Attributes:
        name: Layer name as in the model ("fc1").
        kind: "linear", "conv1d" or "conv2d".
        weight_shape: Torch weight shape ([out, in] or [C_out, C_in/groups, k...]).
        dense_ops_per_step: MACs of one time step for one sample: output elements * fan_in.
        connections_per_step: Of those, the ones that reach a real input element (a conv's zero
            padding is never computed); None: all of them. Measured from the model by
            :func:`snncompress.costing.describe.describe_model`; NeuroBench's "Dense" counts the same.
        time_steps: T.
        nonzero_weights: Weights left after pruning (None: all of them).
        weight_bits: Stored bits per weight (32 for fp32).
        weight_scheme: "fp32", "int8", "pot4", "apot4", "ternary", "fixed3.5", ...
        has_bias, bias_bits: Bias (one per output channel/feature) and its stored width.
        input_is_spikes: False for a first layer fed real values (its synaptic ops are MACs).
        input_scheme: Format of real-valued input (only used when ``input_is_spikes`` is False).
        accumulator_bits: Width of the synaptic accumulate for integer weights (None: weight_bits).
        input_spikes_per_sample: Measured input spikes summed over time (optional).
        fan_out: Output connections per input element (measured ops = input spikes * fan_out).
        measured_synaptic_ops_per_sample: Exact measured synaptic ops (preferred when given).
        spatial_sparsity, channel_sparsity: Fraction of output positions / channels masked (S_p, S_c).
        mask_bits: Bits of masks stored for this layer.
        gate_ops_per_step, gate_params, gate_param_bits, gate_scheme: Cost of a channel gate.
        scale_count, scale_bits: Per-channel quantization scales/exponents stored.
        scale_is_power_of_two: Rescaling by the scale is a shift (PoT alpha), else a multiply.
    """

    name: str
    kind: SynapticKind
    weight_shape: tuple[int, ...]
    dense_ops_per_step: int
    time_steps: int
    connections_per_step: int | None = None
    nonzero_weights: int | None = None
    weight_bits: int = 32
    weight_scheme: str = "fp32"
    has_bias: bool = False
    bias_bits: int = 32
    input_is_spikes: bool = True
    input_scheme: str = "fp32"
    accumulator_bits: int | None = None
    input_spikes_per_sample: float | None = None
    fan_out: int | None = None
    measured_synaptic_ops_per_sample: float | None = None
    spatial_sparsity: float = 0.0
    channel_sparsity: float = 0.0
    mask_bits: int = 0
    gate_ops_per_step: int = 0
    gate_params: int = 0
    gate_param_bits: int = 32
    gate_scheme: str = "fp32"
    scale_count: int = 0
    scale_bits: int = 0
    scale_is_power_of_two: bool = False

    def __post_init__(self) -> None:
        w = f"layer {self.name}"
        _need(self.kind in ("linear", "conv1d", "conv2d"), w, f"unknown kind {self.kind!r}")
        object.__setattr__(self, "weight_shape", tuple(int(d) for d in self.weight_shape))
        _need(
            len(self.weight_shape) >= 2 and all(d > 0 for d in self.weight_shape),
            w,
            f"weight_shape must have >= 2 positive dims, got {self.weight_shape}",
        )
        _need(self.time_steps >= 1, w, f"time_steps must be >= 1, got {self.time_steps}")
        _need(
            self.dense_ops_per_step >= 0 and self.dense_ops_per_step % self.fan_in == 0,
            w,
            f"dense_ops_per_step ({self.dense_ops_per_step}) must be output elements * fan_in "
            f"({self.fan_in})",
        )
        cps = self.connections_per_step
        _need(
            cps is None or 0 <= cps <= self.dense_ops_per_step,
            w,
            f"connections_per_step must be in [0, dense_ops_per_step = {self.dense_ops_per_step}], got {cps}",
        )
        nz = self.nonzero_weights
        _need(
            nz is None or 0 <= nz <= self.weight_count,
            w,
            f"nonzero_weights must be in [0, {self.weight_count}], got {nz}",
        )
        _fraction(self.spatial_sparsity, w, "spatial_sparsity")
        _fraction(self.channel_sparsity, w, "channel_sparsity")
        for name in (
            "input_spikes_per_sample",
            "fan_out",
            "measured_synaptic_ops_per_sample",
            "mask_bits",
            "gate_ops_per_step",
            "gate_params",
            "scale_count",
            "scale_bits",
        ):
            _count(getattr(self, name), w, name)
        self.weight_format  # noqa: B018 - parse now so a bad label fails at construction
        if self.accumulator_bits is not None:
            _need(
                self.accumulator_bits >= 1, w, f"accumulator_bits must be >= 1, got {self.accumulator_bits}"
            )
        _need(self.bias_bits >= 1, w, f"bias_bits must be >= 1, got {self.bias_bits}")
        if not self.input_is_spikes:
            parse_scheme(self.input_scheme, _bits_of(self.input_scheme, w), f"{w} input_scheme")
        if self.gate_ops_per_step or self.gate_params:
            self.gate_format  # noqa: B018

    @property
    def weight_count(self) -> int:
        """Number of weights (dense)."""
        return math.prod(self.weight_shape)

    @property
    def nonzero(self) -> int:
        """Weights left after pruning."""
        return self.weight_count if self.nonzero_weights is None else self.nonzero_weights

    @property
    def density(self) -> float:
        """Fraction of weights kept (1 - weight sparsity)."""
        return self.nonzero / self.weight_count

    @property
    def fan_in(self) -> int:
        """Inputs per output element: prod(weight_shape[1:])."""
        return math.prod(self.weight_shape[1:])

    @property
    def rows(self) -> int:
        """Rows of the weight matrix view used by sparse formats (output channels/features)."""
        return self.weight_shape[0]

    @property
    def connections(self) -> int:
        """Input-output connections computed per step, zero padding excluded."""
        return self.dense_ops_per_step if self.connections_per_step is None else self.connections_per_step

    @property
    def output_elements(self) -> int:
        """Output elements per time step: dense_ops_per_step / fan_in."""
        return self.dense_ops_per_step // self.fan_in

    @property
    def active_fraction(self) -> float:
        """(1 - S_c) * (1 - S_p): the share of outputs computed (SpQuant Eq. 30)."""
        return (1.0 - self.channel_sparsity) * (1.0 - self.spatial_sparsity)

    @property
    def weight_format(self) -> NumberFormat:
        """Parsed weight scheme."""
        return parse_scheme(self.weight_scheme, self.weight_bits, f"layer {self.name} weight_scheme")

    @property
    def gate_format(self) -> NumberFormat:
        """Parsed channel-gate scheme."""
        return parse_scheme(self.gate_scheme, self.gate_param_bits, f"layer {self.name} gate_scheme")

    @property
    def input_format(self) -> NumberFormat:
        """Parsed real-valued input scheme."""
        w = f"layer {self.name} input_scheme"
        return parse_scheme(self.input_scheme, _bits_of(self.input_scheme, w), w)


@dataclass(frozen=True)
class NeuronLayer:
    """A layer of spiking neurons (snnTorch Leaky, Synaptic, RLeaky, ...).

    Attributes:
        name: Layer name ("lif1").
        neuron_type: snnTorch class name.
        neurons: Neurons per sample (C*H*W for conv feature maps).
        time_steps: T.
        beta: Membrane decay, one value (per layer) or one per neuron. 2^-k leaks are shifts.
        alpha: Synaptic-current decay (Synaptic/RSynaptic), one value or one per neuron.
        membrane_bits, membrane_scheme: Stored precision of each state variable ("fp32", "ternary").
        state_variables: State values per neuron (None: from neuron_type; Synaptic = syn + mem = 2).
        param_count, param_bits: Stored neuron parameters (threshold, beta, ...) and their width.
        per_neuron_params: True when parameters are per neuron (read on every update); False when
            they are per layer (held in registers, not read from memory).
        recurrent_weights, recurrent_weight_bits, recurrent_weight_scheme: RLeaky/RSynaptic
            recurrent weights as stored (``all_to_all``: neurons**2; one-to-one: neurons, or 1
            when one weight V is shared by the layer).
        recurrent_fan_out: Recurrent connections each output spike drives (all-to-all: neurons;
            one-to-one: 1). None: ``recurrent_weights / neurons``.
        spikes_per_sample: Measured output spikes summed over time (optional).
        active_fraction: Share of neurons updated per step (spatial/channel masks upstream).
        threshold: Firing threshold Vth as stored (one value per layer, or one per neuron); None:
            not given. Shown in the report; a learned threshold differs from the model's initial one.
    """

    name: str
    neuron_type: str
    neurons: int
    time_steps: int
    beta: float | tuple[float, ...]
    alpha: tuple[float, ...] | None = None
    membrane_bits: int = 32
    membrane_scheme: str = "fp32"
    state_variables: int | None = None
    param_count: int = 2
    param_bits: int = 32
    per_neuron_params: bool = False
    recurrent_weights: int = 0
    recurrent_weight_bits: int = 32
    recurrent_weight_scheme: str = "fp32"
    recurrent_fan_out: int | None = None
    spikes_per_sample: float | None = None
    active_fraction: float = 1.0
    threshold: float | tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        w = f"layer {self.name}"
        if self.threshold is not None:
            object.__setattr__(self, "threshold", _as_tuple(self.threshold))
        _need(self.neurons >= 1, w, f"neurons must be >= 1, got {self.neurons}")
        _need(self.time_steps >= 1, w, f"time_steps must be >= 1, got {self.time_steps}")
        if self.state_variables is None:
            _need(
                self.neuron_type in STATE_VARIABLES,
                w,
                f"state_variables not given and neuron type {self.neuron_type!r} is not one of "
                f"{', '.join(STATE_VARIABLES)}",
            )
            object.__setattr__(self, "state_variables", STATE_VARIABLES[self.neuron_type])
        _need(
            self.state_variables in (1, 2), w, f"state_variables must be 1 or 2, got {self.state_variables}"
        )
        beta = _as_tuple(self.beta)
        object.__setattr__(self, "beta", beta)
        decays = [beta]
        if self.state_variables == 2:
            _need(self.alpha is not None, w, f"{self.neuron_type} has two state variables and needs alpha")
            alpha = _as_tuple(self.alpha)
            object.__setattr__(self, "alpha", alpha)
            decays.insert(0, alpha)
        for name, values in zip(("alpha", "beta")[-len(decays) :], decays, strict=True):
            _need(
                len(values) in (1, self.neurons),
                w,
                f"{name} needs 1 or {self.neurons} values, got {len(values)}",
            )
            _need(all(0.0 <= v <= 1.0 for v in values), w, f"{name} values must be in [0, 1]")
        _fraction(self.active_fraction, w, "active_fraction")
        for name in ("param_count", "recurrent_weights", "recurrent_fan_out", "spikes_per_sample"):
            _count(getattr(self, name), w, name)
        if self.recurrent_fan_out is not None:
            _need(
                self.recurrent_fan_out <= self.neurons,
                w,
                f"recurrent_fan_out must be <= neurons ({self.neurons}), got {self.recurrent_fan_out}",
            )
        self.membrane_format  # noqa: B018 - parse now so a bad label fails at construction
        if self.recurrent_weights:
            self.recurrent_format  # noqa: B018

    @property
    def membrane_format(self) -> NumberFormat:
        """Parsed membrane scheme."""
        return parse_scheme(self.membrane_scheme, self.membrane_bits, f"layer {self.name} membrane_scheme")

    @property
    def recurrent_format(self) -> NumberFormat:
        """Parsed recurrent weight scheme."""
        return parse_scheme(
            self.recurrent_weight_scheme,
            self.recurrent_weight_bits,
            f"layer {self.name} recurrent_weight_scheme",
        )

    @property
    def recurrent_connections_per_spike(self) -> float:
        """Recurrent connections one output spike drives (0 without recurrence)."""
        if not self.recurrent_weights:
            return 0.0
        if self.recurrent_fan_out is not None:
            return float(self.recurrent_fan_out)
        return self.recurrent_weights / self.neurons

    @property
    def decays(self) -> tuple[tuple[float, ...], ...]:
        """Decay factors, one tuple per state variable (Synaptic: alpha for syn, then beta for mem)."""
        if self.state_variables == 2:
            return (self.alpha, self.beta)
        return (self.beta,)


@dataclass(frozen=True)
class ModelDescription:
    """A model as the cost model sees it: layers in forward order.

    Attributes:
        name: Model name.
        time_steps: T (every layer must agree).
        layers: Synaptic and neuron layers in forward order.
        accuracy: Measured accuracy in [0, 1] (optional; used for the baseline comparison).
        source: Free-form provenance (file, pass history, data set).
    """

    name: str
    time_steps: int
    layers: tuple[SynapticLayer | NeuronLayer, ...]
    accuracy: float | None = None
    source: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        w = f"model {self.name}"
        object.__setattr__(self, "layers", tuple(self.layers))
        _need(len(self.layers) > 0, w, "has no layers")
        names = [layer.name for layer in self.layers]
        dup = sorted({n for n in names if names.count(n) > 1})
        _need(not dup, w, f"duplicate layer names: {', '.join(dup)}")
        for layer in self.layers:
            _need(
                isinstance(layer, SynapticLayer | NeuronLayer),
                w,
                f"layer {getattr(layer, 'name', layer)!r} is not a SynapticLayer or NeuronLayer",
            )
            _need(
                layer.time_steps == self.time_steps,
                w,
                f"layer {layer.name} has time_steps {layer.time_steps}, model has {self.time_steps}",
            )
        if self.accuracy is not None:
            _fraction(self.accuracy, w, "accuracy")


def _as_tuple(values: float | tuple[float, ...] | list[float]) -> tuple[float, ...]:
    if isinstance(values, int | float):
        return (float(values),)
    return tuple(float(v) for v in values)


def _bits_of(scheme: str, where: str) -> int:
    """Bit width a self-sized label implies ("fp32" -> 32); ternary/binary inputs are not real-valued."""
    digits = "".join(ch for ch in scheme.split(".")[0] if ch.isdigit())
    _need(bool(digits), where, f"cannot tell the width of {scheme!r}; use e.g. fp32 or int8")
    if scheme.startswith("fixed"):
        m, n = scheme[5:].split(".")
        return 1 + int(m) + int(n)
    return int(digits)
