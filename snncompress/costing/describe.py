"""Describe a real snnTorch model for the hardware cost model.

:func:`describe_model` builds a :class:`snncompress.hardware.ModelDescription` from the model's
layers, its compression state (stored bit widths, pruning masks, membrane quantizers) and, when
``measure`` is set, the activity recorded while the runner drives it over a data set: the input
spikes of every synaptic layer, the output spikes of every neuron layer, the accuracy, and the exact
synaptic operation count of every synaptic layer,

    ops_l = sum over samples, steps, outputs o, inputs i of o's receptive field of 1[x_i != 0] * 1[w_oi != 0]

computed by running the layer's own connectivity (the linear/conv op with the 0/1 pattern of its
kept, non-zero weights and no bias) on the 0/1 pattern of its input. Pruned weights and silent inputs
both count as saved; a conv's zero padding is never counted. This is NeuroBench's
``SynapticOperations`` (Effective_ACs for spike inputs, Effective_MACs for real-valued ones).

All figures are per sample: totals over the data set divided by its sample count.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from snncompress.data.loading import DataBundle
from snncompress.errors import DataError, FileFormatError
from snncompress.hardware.description import ModelDescription, NeuronLayer, SynapticLayer
from snncompress.models.channel_gate import GATE_NAME, channel_keep, gate_ops
from snncompress.models.layers import synaptic_layers
from snncompress.models.neurons import RECURRENT_NEURONS, is_neuron, leak_factor, neuron_layers
from snncompress.models.spatial import importance_ops, output_keep
from snncompress.quant.membrane import level_bits
from snncompress.state import CompressionState, get_state, has_state

__all__ = [
    "DESCRIPTION_FORMAT",
    "Probe",
    "describe_model",
    "description_from_dict",
    "description_to_dict",
    "membrane_label",
    "scheme_label",
]

_KIND = {nn.Linear: "linear", nn.Conv1d: "conv1d", nn.Conv2d: "conv2d"}
_FLOAT_LABELS = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.float64: "fp64"}
DESCRIPTION_FORMAT = "snncompress.hardware.ModelDescription"
DESCRIPTION_VERSION = 1


@dataclass
class _Activity:
    """What the probe saw of one layer, summed over every sample and step."""

    out_shape: tuple[int, ...] = ()
    connections_per_step: int = 0
    real_input: bool = False
    input_spikes: float = 0.0
    synaptic_ops: float = 0.0
    output_spikes: float = 0.0


class Probe:
    """Forward hooks on the synaptic and neuron layers; records shapes and activity in forward order.

    A context manager: the hooks are installed on ``__enter__`` and removed on ``__exit__``, so the
    probe can ride along any run over the data (``evaluate(..., instruments=[probe])``) and one pass
    gives accuracy, firing and the hardware description together.
    """

    def __init__(self, model: nn.Module, measure: bool = True):
        self.model = model
        self.measure = measure
        self.masks = get_state(model).masks if has_state(model) else {}
        self.layers: dict[str, _Activity] = {}  # insertion order = order of first call = forward order
        self.handles = []

    def __enter__(self) -> Probe:
        model = self.model
        self.layers = {}
        for name, module in synaptic_layers(model):
            self.handles.append(module.register_forward_hook(self._synaptic(name)))
        for name, module in neuron_layers(model):
            # prepend: see the spikes before a membrane-quantizer hook rewrites the output tuple
            self.handles.append(module.register_forward_hook(self._neuron(name), prepend=True))
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def _synaptic(self, name: str):
        def hook(module, inputs, output):
            x = inputs[0].detach()
            act = self.layers.get(name)
            if act is None:
                act = self.layers[name] = _Activity(out_shape=tuple(output.shape[1:]))
                ones = torch.ones_like(x[:1], dtype=torch.float32)
                all_weights = torch.ones_like(module.weight, dtype=torch.float32)
                act.connections_per_step = int(_connectivity(module, ones, all_weights).sum())
            if not act.real_input and not bool(((x == 0) | (x == 1)).all()):
                act.real_input = True
            if self.measure:
                active = x.ne(0).to(torch.float32)
                act.input_spikes += float(active.sum())
                pattern = module.weight.detach().ne(0)
                mask = self.masks.get(_key(name, "weight"))
                if mask is not None:
                    pattern = pattern & mask.to(pattern.device).reshape(pattern.shape).bool()
                used = _connectivity(module, active, pattern.to(torch.float32))
                keep = output_keep(module)  # outputs a spatial pruning masked this step are not computed
                if keep is not None and keep.shape == used.shape:
                    used = used * keep.to(used.dtype)
                channels = channel_keep(module)  # channels a gate dropped this step are not computed either
                if channels is not None and channels.shape == used.shape[:2]:
                    used = used * channels.to(used.dtype).reshape(*channels.shape, *([1] * (used.dim() - 2)))
                act.synaptic_ops += float(used.sum())

        return hook

    def _neuron(self, name: str):
        def hook(module, inputs, output):
            spk = output[0] if isinstance(output, tuple) else output
            act = self.layers.get(name)
            if act is None:
                act = self.layers[name] = _Activity(out_shape=tuple(spk.shape[1:]))
            if self.measure:
                act.output_spikes += float(spk.detach().ne(0).sum())

        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    def description(self, *, name: str, data_name: str, samples: int, steps: int,
                    accuracy: float | None) -> ModelDescription:
        """The model as the probe saw it (per-sample figures; ``samples`` 0: shapes only).

        Args:
            accuracy: in percent, or None.

        Raises:
            DataError: no synaptic or neuron layer ran.
        """
        model = self.model
        state = get_state(model) if has_state(model) else None
        # the masks' own work is per neuron of the layer they mask (behind a pooling: fewer than the outputs)
        sizes = {layer: math.prod(act.out_shape) for layer, act in self.layers.items()}
        layers = [_describe_layer(model, layer, act, samples, steps, state, sizes)
                  for layer, act in self.layers.items()]
        if not layers:
            raise DataError(f"model {name}: no synaptic or neuron layer ran on the data")
        source = {"data": data_name, "samples": str(samples) if samples else "0 (not measured)"}
        if state is not None and state.history:
            source["passes"] = " -> ".join(str(h.get("pass", "?")) for h in state.history)
        return ModelDescription(
            name=name,
            time_steps=steps,
            layers=tuple(layers),
            accuracy=None if accuracy is None else accuracy / 100.0,
            source=source,
        )


def _connectivity(module: nn.Module, active: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
    """The layer's op with 0/1 weights and no bias on a 0/1 input: connections used per output."""
    if isinstance(module, nn.Linear):
        return F.linear(active, pattern)
    conv = F.conv1d if isinstance(module, nn.Conv1d) else F.conv2d
    if module.padding_mode != "zeros":
        # circular/reflect/replicate padding repeats real inputs: pad the 0/1 pattern the same way
        active = F.pad(active, module._reversed_padding_repeated_twice, mode=module.padding_mode)
        return conv(active, pattern, None, module.stride, 0, module.dilation, module.groups)
    return conv(active, pattern, None, module.stride, module.padding, module.dilation, module.groups)


def _key(module_name: str, tensor: str) -> str:
    return f"{module_name}.{tensor}" if module_name else tensor


@torch.no_grad()
def describe_model(
    model: nn.Module,
    data: DataBundle,
    *,
    measure: bool = True,
    name: str = "model",
    accuracy: float | None = None,
    show_progress: bool = False,
) -> ModelDescription:
    """Describe ``model`` for the hardware cost model, measuring its activity on ``data``.

    Args:
        model: The snnTorch model, with its compression state if it has one.
        data: One sample fixes the layer shapes; with ``measure`` every sample is run.
        measure: Record spikes, exact synaptic ops and accuracy over the whole data set. Without it
            the report falls back to the SpQuant Eq. 30 dense upper bound.
        name: The model's name in the report.
        accuracy: Accuracy in percent to record instead of the one measured here (None: measured
            when ``measure``, else unknown).
        show_progress: Draw a progress bar on stderr.

    Returns:
        The description; per-sample activity, accuracy as a fraction in [0, 1].

    Raises:
        DataError: The data set is empty or does not fit the model.
    """
    from snncompress.sim.evaluate import evaluate, prepare

    if len(data) == 0:
        raise DataError(f"the data set {data.name} is empty")
    probe = Probe(model, measure)
    if measure:
        result = evaluate(model, data, show_progress=show_progress, description=f"profile {name}",
                          instruments=[probe])
        return probe.description(name=name, data_name=data.name, samples=result.samples,
                                 steps=result.time_steps or data.time_steps,
                                 accuracy=result.accuracy if accuracy is None else accuracy)
    runner = prepare(model, data)  # resolves the data layout, checks labels against outputs
    x, _ = data.dataset[0]
    was_training = model.training
    model.eval()
    try:
        with probe:
            out = runner.run(x.unsqueeze(0), is_sequence=data.is_sequence, time_steps=data.time_steps)
    finally:
        model.train(was_training)
    return probe.description(name=name, data_name=data.name, samples=0, steps=out.spikes.shape[0],
                             accuracy=accuracy)


def _describe_layer(model, name, act, samples, steps, state, sizes) -> SynapticLayer | NeuronLayer:
    module = model.get_submodule(name) if name else model
    if is_neuron(module):
        return _neuron_layer(name, module, act, samples, steps, state)
    return _synaptic_layer(model, name, module, act, samples, steps, state, sizes)


def _per_sample(total: float, samples: int) -> float | None:
    return total / samples if samples else None


def _stored_bits(tensor: torch.Tensor) -> int:
    return tensor.element_size() * 8


def _synaptic_layer(
    model: nn.Module, name: str, module: nn.Module, act: _Activity, samples: int, steps: int,
    state: CompressionState | None, sizes: dict[str, int]
) -> SynapticLayer:
    weight = module.weight
    fan_in = math.prod(weight.shape[1:])
    bits, label = _stored_bits(weight), _FLOAT_LABELS.get(weight.dtype, "fp32")
    scale_count = scale_bits = 0
    scale_pot = False
    nonzero = None
    gate_work = gate_params = 0
    bias_bits = _stored_bits(module.bias) if module.bias is not None else 32
    if state is not None:
        enc = state.tensors.get(_key(name, "weight"))
        if enc is not None:
            bits, label = enc.bits, scheme_label(enc.scheme, enc.bits)
            scale_count = sum(int(p.numel()) for p in enc.params.values())
            scale_bits = max((_stored_bits(p) for p in enc.params.values()), default=0)
            # PoT and APoT scales are stored as exponents: rescaling is a shift
            scale_pot = "exponent" in enc.params
        mask = state.masks.get(_key(name, "weight"))
        if mask is not None:
            nonzero = int(mask.sum())
        bias_enc = state.tensors.get(_key(name, "bias"))
        if bias_enc is not None:
            bias_bits = bias_enc.bits
        outputs = math.prod(act.out_shape)
        for layer, v in state.neurons.items():
            # a spatial pruning fed by this layer ranks the membranes of the neurons it feeds every step
            # (SpQuant Eq. 21-22): a magnitude and a compare per neuron, costed as the layer's gate work
            if v.get("spatial", {}).get("source") == name:
                gate_work += importance_ops(sizes.get(layer, outputs), 1)
            # a channel gate fed by this layer (SpQuant Eq. 23): pooling the neurons' membrane, point-wise
            # gate and compare every step, and its parameters stored beside the layer's
            record = v.get("channel_gate")
            if record and record.get("source") == name:
                channels = int(record["channels"])
                gate_work += gate_ops(channels, sizes.get(layer, outputs) // channels, bool(record["depthwise"]))
                gate = getattr(model.get_submodule(layer), GATE_NAME)
                gate_params += sum(int(p.numel()) for p in gate.parameters())
    return SynapticLayer(
        name=name or "model",
        kind=_KIND[type(module)],
        weight_shape=tuple(weight.shape),
        dense_ops_per_step=math.prod(act.out_shape) * fan_in,
        connections_per_step=act.connections_per_step,
        time_steps=steps,
        nonzero_weights=nonzero,
        weight_bits=bits,
        weight_scheme=label,
        has_bias=module.bias is not None,
        bias_bits=bias_bits,
        input_is_spikes=not act.real_input,
        input_spikes_per_sample=_per_sample(act.input_spikes, samples),
        measured_synaptic_ops_per_sample=_per_sample(act.synaptic_ops, samples),
        scale_count=scale_count,
        scale_bits=scale_bits,
        scale_is_power_of_two=scale_pot,
        gate_ops_per_step=gate_work,
        gate_params=gate_params,
    )


def _neuron_layer(
    name: str, module: nn.Module, act: _Activity, samples: int, steps: int, state: CompressionState | None
) -> NeuronLayer:
    neurons = math.prod(act.out_shape)
    membrane = state.neurons.get(name, {}).get("membrane") if state is not None else None
    mem_bits, mem_label = (32, "fp32") if membrane is None else membrane_label(membrane)
    params = {"beta": module.beta, "threshold": module.threshold}
    if hasattr(module, "alpha"):
        params["alpha"] = module.alpha
    recurrent = fan_out = 0
    rec_bits, rec_label = 32, "fp32"
    if type(module).__name__ == "Lapicque":
        params.update(R=module.R, C=module.C, time_step=module.time_step)  # its leak: 1 - dt/(RC)
    if type(module).__name__ in RECURRENT_NEURONS:
        if getattr(module, "all_to_all", True):
            rec = module.recurrent
            rec_name, rec_weight = "recurrent.weight", rec.weight
            # one spike drives every weight of its input column: numel / inputs
            fan_out = rec_weight.numel() // rec_weight.shape[1]
            if getattr(rec, "bias", None) is not None:
                params["recurrent.bias"] = rec.bias  # added to every neuron at every step
        else:
            rec_name, rec_weight, fan_out = "V", module.V, 1  # one-to-one: spike * V
        recurrent = int(rec_weight.numel())
        rec_bits = _stored_bits(rec_weight)
        enc = state.tensors.get(_key(name, rec_name)) if state is not None else None
        if enc is not None:
            rec_bits, rec_label = enc.bits, scheme_label(enc.scheme, enc.bits)
    param_bits = 32
    if state is not None:
        encoded = [state.tensors[_key(name, p)] for p in params if _key(name, p) in state.tensors]
        plain = [_stored_bits(t) for p, t in params.items() if _key(name, p) not in state.tensors]
        param_bits = max([e.bits for e in encoded] + plain, default=32)
    return NeuronLayer(
        name=name or "model",
        neuron_type=type(module).__name__,
        neurons=neurons,
        time_steps=steps,
        beta=_decay(leak_factor(module)),
        alpha=_decay(module.alpha) if hasattr(module, "alpha") else None,
        membrane_bits=mem_bits,
        membrane_scheme=mem_label,
        param_count=sum(int(p.numel()) for p in params.values()),
        param_bits=param_bits,
        per_neuron_params=any(p.numel() > 1 for p in params.values()),
        recurrent_weights=recurrent,
        recurrent_weight_bits=rec_bits,
        recurrent_weight_scheme=rec_label,
        recurrent_fan_out=fan_out if recurrent else None,
        spikes_per_sample=_per_sample(act.output_spikes, samples),
        threshold=tuple(float(v) for v in module.threshold.detach().reshape(-1)),
    )


def _decay(value: torch.Tensor) -> tuple[float, ...]:
    return tuple(float(v) for v in torch.as_tensor(value).detach().clamp(0, 1).reshape(-1))


def scheme_label(scheme: dict[str, Any], bits: int) -> str:
    """The hardware label of a stored weight scheme: what a multiply by such a weight costs.

    ``{"kind": "pot", "bits": 4, ...}`` -> ``"pot4"``; APoT -> ``"apot<b>"``; int -> ``"int<b>"``;
    ternary -> ``"ternary"``; fixed -> ``"fixed<m>.<n>"``. Rounding and threshold options do not
    change the cost and are dropped. A kind the cost model does not know (a plugin's) is costed as
    a ``bits``-wide integer: a real multiply, the conservative choice.
    """
    kind = scheme.get("kind")
    if kind in ("pot", "apot", "int"):
        return f"{kind}{scheme.get('bits', bits)}"
    if kind == "ternary":
        return "ternary"
    if kind == "fixed":
        return f"fixed{scheme['integer_bits']}.{scheme['fractional_bits']}"
    if kind == "fp32":
        return "fp32"
    return f"int{bits}"


def membrane_label(membrane: dict[str, Any]) -> tuple[int, str]:
    """Stored bits and hardware label of a membrane quantizer's settings: ternary -> (2, "ternary").

    Levels ``[levels_low, levels_high]`` take ``ceil(log2(levels))`` bits; anything but ternary is
    labelled ``int<bits>``.
    """
    low, high = int(membrane["levels_low"]), int(membrane["levels_high"])
    bits = level_bits(low, high)
    return (bits, "ternary") if (low, high) == (-1, 1) else (bits, f"int{bits}")


def description_to_dict(desc: ModelDescription) -> dict[str, Any]:
    """JSON-able form of a description (a compressed file keeps its baseline's this way).

    ``description_from_dict(description_to_dict(d)) == d``.
    """
    layers = []
    for layer in desc.layers:
        d = asdict(layer)
        d["layer_type"] = "neuron" if isinstance(layer, NeuronLayer) else "synaptic"
        layers.append(d)
    return {
        "format": DESCRIPTION_FORMAT,
        "version": DESCRIPTION_VERSION,
        "name": desc.name,
        "time_steps": desc.time_steps,
        "accuracy": desc.accuracy,
        "source": dict(desc.source),
        "layers": layers,
    }


_TUPLE_FIELDS = {"weight_shape", "beta", "alpha", "threshold"}


def description_from_dict(data: dict[str, Any]) -> ModelDescription:
    """Rebuild a description written by :func:`description_to_dict`.

    Raises:
        FileFormatError: Not a description, a newer version, a layer with missing or unknown
            fields (the message names the layer and the fields), or values of the wrong JSON type.
        InputError: A field with an impossible value (from the description's own validation).
    """
    try:
        return _description_from_dict(data)
    except (TypeError, ValueError, AttributeError) as exc:  # it comes from a file: wrong types are corruption
        raise FileFormatError(f"stored baseline description: {type(exc).__name__}: {exc}") from None


def _description_from_dict(data: dict[str, Any]) -> ModelDescription:
    if not isinstance(data, dict) or "layers" not in data:
        raise FileFormatError("stored baseline description: not a model description (no 'layers')")
    version = data.get("version", 1)
    if not isinstance(version, int) or version > DESCRIPTION_VERSION:
        raise FileFormatError(
            f"stored baseline description has version {version!r}; this snncompress reads up to "
            f"{DESCRIPTION_VERSION}: upgrade snncompress"
        )
    layers = []
    for i, raw in enumerate(data["layers"]):
        d = dict(raw)
        layer_type = d.pop("layer_type", None)
        cls = {"neuron": NeuronLayer, "synaptic": SynapticLayer}.get(layer_type)
        where = f"stored baseline description layers[{i}] ({d.get('name', '?')})"
        if cls is None:
            raise FileFormatError(f"{where}: layer_type must be 'neuron' or 'synaptic', got {layer_type!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise FileFormatError(f"{where}: unknown fields {', '.join(unknown)}")
        for key in _TUPLE_FIELDS & set(d):
            if d[key] is not None:
                d[key] = tuple(d[key])
        try:
            layers.append(cls(**d))
        except TypeError as exc:
            raise FileFormatError(f"{where}: {exc}") from exc
    try:
        return ModelDescription(
            name=data["name"],
            time_steps=data["time_steps"],
            layers=tuple(layers),
            accuracy=data.get("accuracy"),
            source=dict(data.get("source") or {}),
        )
    except KeyError as exc:
        raise FileFormatError(f"stored baseline description: missing {exc}") from exc
