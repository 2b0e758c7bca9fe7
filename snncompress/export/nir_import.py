"""Turn a NIR graph that is a chain into an ``nn.Sequential`` of snncompress's built-in layers.

snnTorch's own ``import_from_nir`` returns a nirtorch GraphExecutor and always resets to zero; we build
a plain Sequential instead (neurons with ``init_hidden=True``, the last one with ``output=True``), so
the model runs stepwise in ``SNNRunner`` and saves as a built-in architecture.

Node mapping: Affine/Linear -> ``nn.Linear``; Conv1d/Conv2d -> conv; Flatten; AvgPool2d;
SumPool2d -> ``AvgPool2d(divisor_override=1)`` (an exact sum); SumPool2d + Threshold(t), 0 <= t < 1,
on spikes -> ``MaxPool2d`` (exact on binary spikes); LIF -> ``Leaky``; CubaLIF -> ``Synaptic``;
IF -> ``Leaky(beta=1)``; a recurrent LIF (a ``LIF <-> Affine/Linear`` cycle, flat or as snnTorch's
subgraph) -> ``RLeaky``, a recurrent CubaLIF likewise -> ``RSynaptic``; a LIF our exporter wrote for a
``Lapicque`` neuron -> that ``Lapicque`` (from its recorded R, C and dt); with ``--nir-spike multi``
(sinabs's default mode), IF/LIF -> ``MultiSpikeLeaky`` (``trunc(v / v_th)`` spikes per step).
Parameters are converted as ``snncompress.export.discretize`` describes.

Reset: NIR has no reset field. A file written by snncompress says it per node (metadata
``reset_mechanism`` and ``reset_delay``). When a file does not say, we follow NIR's own equations
(``v -> v_reset`` when the neuron fires, in the same step) - reset to zero with ``reset_delay=False``,
which is also what snnTorch's importer does - and print a note.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import nir
import numpy as np
import torch
from torch import nn

from snncompress.errors import ModelLoadError, UnsupportedLayerError
from snncompress.export.discretize import (
    DEFAULT_DT,
    GAIN_TOLERANCE,
    cuba_gain,
    decay_from_tau,
    is_unit_gain,
    lif_gain,
)
from snncompress.export.nir_export import FORMAT_NAME, METADATA_KEY
from snncompress.models.layers import build_module
from snncompress.models.neurons import is_neuron

RESETS = ("subtract", "zero", "none")
SPIKES = ("single", "multi")  # one spike per step (NIR's H(v - v_th)), or sinabs's MultiSpike: trunc(v / v_th)
PRODUCERS = ("rockpool", "sinabs", "nir")  # whose dynamics a graph means (nir: NIR's own Euler reading)
# metadata keys that name the software that wrote a graph (snncompress writes "producer")
_PRODUCER_KEYS = ("producer", "framework", "library", "source", "generator", "exporter", "software", "written_by")
# Rockpool's Sequential names its modules "<index>_<class>", and its to_nir keeps those names as node names
_ROCKPOOL_NODE = re.compile(r"^\d+_(LIFTorch|LIFNeuronTorch|ExpSynTorch|LinearTorch)$")
DEFAULT_RESET = "zero"  # NIR's equations: v -> v_reset (0) when z = 1; snnTorch's import_from_nir agrees
NIR_NODES = ("Affine", "Linear", "Conv1d", "Conv2d", "Flatten", "AvgPool2d", "SumPool2d", "Threshold (after "
             "SumPool2d on spikes)", "LIF", "CubaLIF", "IF", "recurrent LIF", "recurrent CubaLIF",
             "IF/LIF with --nir-spike multi")


class NirReadOptions:
    """How to read what a NIR graph leaves open (CLI ``--nir-dt``, ``--nir-reset``).

    Attributes:
        dt: the Euler step the graph's time constants are read with. None: the graph's own metadata
            (snncompress's, or a top-level ``dt``), else snnTorch's 1e-4 with a note per node.
        reset: the reset mechanism of neuron nodes that do not record one (``zero``, ``subtract``,
            ``none``; applied in the same step). None: NIR's own equations (to ``v_reset`` = 0 in the
            same step) with a note per node; with ``spike="multi"``, subtract (sinabs's default).
        spike: ``single`` (NIR's one spike per step) or ``multi`` (sinabs's default ``MultiSpike``:
            ``trunc(v / v_th)`` spikes per step, read as :class:`MultiSpikeLeaky`) for IF and LIF nodes that
            do not record it. None: single.
        producer: ``rockpool``: CubaLIF nodes are Rockpool's ``LIFTorch`` (:func:`_rockpool_cuba`), dt
            inferred from their ``r`` unless given; ``sinabs``: IF and LIF nodes are sinabs's default
            ``IAF`` and ``LIF`` (:func:`_sinabs_lif`); ``nir``: NIR's reading whatever the graph says of its
            producer. None: the producer the graph's metadata or node names show (:func:`detect_producer`),
            else NIR's reading.
    """

    def __init__(self, dt: float | None = None, reset: str | None = None, spike: str | None = None,
                 producer: str | None = None):
        from snncompress.errors import InputError

        if dt is not None and not (isinstance(dt, (int, float)) and np.isfinite(dt) and dt > 0):
            raise InputError(f"--nir-dt must be a positive number of seconds, got {dt!r}")
        if reset is not None and reset not in RESETS:
            raise InputError(f"--nir-reset '{reset}' is unknown; use one of {', '.join(RESETS)}")
        if spike is not None and spike not in SPIKES:
            raise InputError(f"--nir-spike '{spike}' is unknown; use one of {', '.join(SPIKES)}")
        if spike == "multi" and reset == "zero":
            raise InputError("--nir-spike multi takes --nir-reset subtract or none (a reset to zero after "
                             "several spikes has no snnTorch form here)")
        if producer is not None and producer not in PRODUCERS:
            raise InputError(f"--nir-producer '{producer}' is unknown; use one of {', '.join(PRODUCERS)}")
        self.dt = None if dt is None else float(dt)
        self.reset = reset
        self.spike = spike
        self.producer = producer


@dataclass
class _Context:
    """What the conversion of one graph has learned so far."""

    dt: float
    dt_recorded: bool
    reset_given: str | None = None
    spike_given: str | None = None
    producer: str | None = None
    dt_given: bool = False
    reset_missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    neuron_nodes: int = 0
    recorded_nodes: int = 0  # neuron nodes whose snncompress metadata says how to read them
    ambiguous: dict[str, list[str]] = field(default_factory=dict)  # node -> how it was read, per open point

    def ambiguity(self, name: str, reason: str) -> None:
        self.ambiguous.setdefault(name, []).append(reason)


@dataclass(frozen=True)
class _Recurrent:
    """A LIF <-> weight cycle collapsed into one chain element."""

    neuron: nir.NIRNode
    weight: nir.NIRNode
    metadata: dict[str, Any]


def graph_to_module(graph: nir.NIRGraph, source: str = "NIR graph",
                    options: NirReadOptions | None = None) -> tuple[nn.Sequential, list[str]]:
    """Convert a chain-shaped NIR graph into an ``nn.Sequential``.

    Args:
        graph: the graph (as ``nir.read`` returns it).
        source: how to name the graph in messages (its path).
        options: dt and reset for what the graph leaves open (:class:`NirReadOptions`).

    Returns:
        The model (eval mode) and the notes for the user (conventions assumed, gains folded).

    Raises:
        UnsupportedLayerError: a node has no snnTorch equivalent, or the graph branches (names the node).
        ModelLoadError: the graph has no single input and output, or its metadata is malformed.
    """
    options = options or NirReadOptions()
    meta = _metadata(graph, source)
    recorded = meta.get("dt", (graph.metadata or {}).get("dt"))
    try:
        recorded = None if recorded is None else float(np.ravel(recorded)[0])
    except (TypeError, ValueError, IndexError):
        recorded = None
    pre_notes = []
    if options.dt is not None:
        if recorded is not None and not np.isclose(recorded, options.dt):
            pre_notes.append(f"{source} records dt = {recorded:g}; reading it with dt = {options.dt:g} as asked")
        ctx = _Context(dt=options.dt, dt_recorded=True, reset_given=options.reset, spike_given=options.spike,
                       producer=options.producer, dt_given=True)
    else:
        ctx = _Context(dt=recorded if recorded is not None else DEFAULT_DT, dt_recorded=recorded is not None,
                       reset_given=options.reset, spike_given=options.spike, producer=options.producer)
    if options.producer is None and not _written_by_us(graph, source):
        found = detect_producer(graph)
        if found is not None:
            ctx.producer = found[0]
            pre_notes.append(f"{source}: read with {_NAMES[found[0]]}'s own dynamics: {found[1]} "
                             "(--nir-producer nir reads NIR's equations instead)")
    elif options.producer == "nir":
        ctx.producer = None
    ctx.notes.extend(pre_notes)
    order, nodes = _chain(graph, source)
    modules: list[nn.Module] = []
    i = 0
    while i < len(order):
        name = order[i]
        node = nodes[name]
        following = nodes[order[i + 1]] if i + 1 < len(order) else None
        pair = isinstance(node, nir.SumPool2d) and isinstance(following, nir.Threshold)
        if pair and _spiking_input(modules):
            modules.append(_max_pool(name, node, following))
            i += 2
            continue
        modules.append(_convert(name, node, ctx))
        i += 1
    if not modules:
        raise ModelLoadError(f"{source}: the graph has no layers between its input and output")
    _mark_output(modules)
    model = nn.Sequential(*modules)
    model.eval()
    notes = list(ctx.notes)
    given = [flag for flag, value in (("--nir-reset", options.reset), ("--nir-spike", options.spike),
                                      ("--nir-producer", options.producer)) if value is not None]
    if given and ctx.neuron_nodes and ctx.recorded_nodes == ctx.neuron_nodes:
        notes.append(f"{source}: every neuron node records how snncompress wrote it (reset, spikes per step, "
                     f"dynamics), so {' and '.join(given)} changed nothing")
    # one line per node whose reading the graph leaves open, saying how it was read and how to say otherwise
    notes[:0] = [f"{source}: NIR node {name}: {'; '.join(reasons)}" for name, reasons in ctx.ambiguous.items()]
    hint = _producer_hint(nodes, ctx, options)
    if hint:
        notes.append(f"{source}: {hint}")
    return model, notes


def detect_producer(graph: nir.NIRGraph) -> tuple[str, str] | None:
    """``(producer, evidence)`` when the graph says which software wrote it: a metadata entry
    (:data:`_PRODUCER_KEYS`, of the graph or a node) naming sinabs or Rockpool, or node names that are
    Rockpool's (``1_LIFTorch``: its ``Sequential`` names modules ``<index>_<class>``, and ``to_nir`` keeps them).
    sinabs's ``to_nir`` records neither; its graphs need ``--nir-producer sinabs``."""
    owners = [("the graph's metadata", graph)] + [(f"node '{n}' metadata", node) for n, node in graph.nodes.items()]
    for where, owner in owners:
        for key, value in (getattr(owner, "metadata", None) or {}).items():
            text = value.decode(errors="replace") if isinstance(value, bytes) else value
            if str(key).lower() not in _PRODUCER_KEYS or not isinstance(text, str):
                continue
            for producer in ("sinabs", "rockpool"):
                if producer in text.lower():
                    return producer, f"{where} names it ({key} = {text!r})"
    neurons = [n for n, node in graph.nodes.items() if isinstance(node, (nir.CubaLIF, nir.LIF, nir.IF, nir.LI))]
    if neurons and all(_ROCKPOOL_NODE.match(n) for n in neurons):
        return "rockpool", f"its node names ({', '.join(neurons[:3])}{', ...' if len(neurons) > 3 else ''}) are Rockpool's"
    return None


_NAMES = {"sinabs": "sinabs", "rockpool": "Rockpool"}


def _written_by_us(graph: nir.NIRGraph, source: str) -> bool:
    return bool(_metadata(graph, source)) or any(_metadata(node, source) for node in graph.nodes.values())


def _producer_hint(nodes: dict[str, Any], ctx: _Context, options: NirReadOptions) -> str:
    """What to pass when a graph read by NIR's equations may come from a producer that means its own: the
    spikes differ otherwise (sinabs: several per step, tau in steps; Rockpool: exponential decay, dt in r)."""
    if options.producer is not None or ctx.producer is not None or not ctx.reset_missing:
        return ""
    kinds = {type(n) for n in nodes.values()}
    options_ = []
    if kinds & {nir.IF, nir.LIF}:
        options_.append("sinabs wrote it, pass --nir-producer sinabs (IF/LIF as its multi-spike IAF/LIF, tau in "
                        "time steps)")
    if nir.CubaLIF in kinds:
        options_.append("Rockpool wrote it, --nir-producer rockpool (CubaLIF as its LIFTorch, dt from r)")
    if not options_:
        return ""
    return ("it does not say which software wrote it and was read by NIR's own equations; if "
            + "; if ".join(options_) + ": its spikes differ otherwise")


def input_shape(graph: nir.NIRGraph) -> list[int] | None:
    """The graph's input shape (one time step, no batch), when its Input node says."""
    for node in graph.nodes.values():
        if isinstance(node, nir.Input):
            shape = node.input_type.get("input")
            return None if shape is None else [int(s) for s in np.ravel(shape)]
    return None


# -- graph structure ---------------------------------------------------------------------------------

def _metadata(node: Any, source: str) -> dict[str, Any]:
    """The snncompress part of a node's metadata (empty when the file was not written by snncompress)."""
    return _parse_metadata(getattr(node, "metadata", None) or {}, source)


def _parse_metadata(metadata: dict[str, Any], source: str) -> dict[str, Any]:
    raw = metadata.get(METADATA_KEY)
    if raw is None:
        return {}
    try:
        value = json.loads(raw) if isinstance(raw, (str, bytes)) else dict(raw)
    except (json.JSONDecodeError, TypeError, ValueError) as exc:
        raise ModelLoadError(f"{source}: malformed snncompress metadata ({exc})") from exc
    if isinstance(value, dict) and value.get("format") not in (None, FORMAT_NAME):
        raise ModelLoadError(f"{source}: metadata of an unknown format '{value.get('format')}'")
    return value if isinstance(value, dict) else {}


def _type(node: Any) -> str:
    return "recurrent LIF" if isinstance(node, _Recurrent) else type(node).__name__


def _chain(graph: nir.NIRGraph, source: str) -> tuple[list[str], dict[str, Any]]:
    """The node names from input to output (both excluded); recurrent cycles collapsed first."""
    nodes: dict[str, Any] = dict(graph.nodes)
    edges = list(dict.fromkeys((str(a), str(b)) for a, b in graph.edges))
    for a, b in edges:
        for end in (a, b):
            if end not in nodes:
                raise ModelLoadError(f"{source}: an edge names node '{end}', which the graph does not hold")
    nodes, edges = _collapse_recurrence(nodes, edges)
    inputs = [n for n, v in nodes.items() if isinstance(v, nir.Input)]
    outputs = [n for n, v in nodes.items() if isinstance(v, nir.Output)]
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelLoadError(
            f"{source}: the graph has {len(inputs)} Input and {len(outputs)} "
            "Output nodes; snncompress imports chains with one of each"
        )
    succ: dict[str, list[str]] = {n: [] for n in nodes}
    pred: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in edges:
        succ[a].append(b)
        pred[b].append(a)
    order: list[str] = []
    current = inputs[0]
    seen = {current}
    while current != outputs[0]:
        following = succ[current]
        if len(following) != 1:
            what = "no outgoing edge" if not following else f"{len(following)} outgoing edges"
            raise UnsupportedLayerError(
                f"NIR node '{current}' ({_type(nodes[current])}) has {what}; snncompress "
                "imports chain graphs (input -> ... -> output) only"
            )
        current = following[0]
        if len(pred[current]) != 1:
            raise UnsupportedLayerError(
                f"NIR node '{current}' ({_type(nodes[current])}) merges {len(pred[current])} inputs; "
                "snncompress imports chain graphs (input -> ... -> output) only"
            )
        if current in seen:
            raise UnsupportedLayerError(
                f"NIR node '{current}' ({_type(nodes[current])}) closes a cycle that is "
                "not a LIF <-> Affine recurrence; snncompress imports chain graphs only"
            )
        seen.add(current)
        if current != outputs[0]:
            order.append(current)
    stray = [n for n in nodes if n not in seen]
    if stray:
        raise UnsupportedLayerError(
            f"NIR node '{stray[0]}' ({_type(nodes[stray[0]])}) is not on the "
            "input -> output chain; snncompress imports chain graphs only"
        )
    return order, nodes


_NEURONS = (nir.LIF, nir.IF, nir.CubaLIF)
_WEIGHTS = (nir.Affine, nir.Linear)


def _collapse_recurrence(nodes: dict[str, Any], edges: list[tuple[str, str]]):
    """Replace each ``neuron <-> weight`` 2-cycle (the weight touching nothing else) by one element."""
    for a, b in list(edges):
        if (b, a) not in edges or a not in nodes or b not in nodes:
            continue
        neuron, weight = nodes[a], nodes[b]
        if not (isinstance(neuron, _NEURONS) and isinstance(weight, _WEIGHTS)):
            continue
        if sum(1 for e in edges if b in e) != 2:
            continue
        nodes[a] = _Recurrent(neuron=neuron, weight=weight, metadata=dict(neuron.metadata or {}))
        del nodes[b]
        edges = [e for e in edges if b not in e]
    return nodes, edges


# -- nodes -------------------------------------------------------------------------------------------

def _convert(name: str, node: Any, ctx: _Context) -> nn.Module:
    if isinstance(node, _Recurrent):
        return _rleaky(name, node.neuron, node.weight, node.metadata, ctx)
    if isinstance(node, nir.NIRGraph):
        return _rleaky_subgraph(name, node, ctx)
    if isinstance(node, _NEURONS):
        return _neuron(name, node, dict(node.metadata or {}), ctx)
    if isinstance(node, _WEIGHTS):
        return _linear(name, node)
    if isinstance(node, (nir.Conv1d, nir.Conv2d)):
        return _conv(name, node)
    if isinstance(node, nir.Flatten):
        start, end = int(node.start_dim), int(node.end_dim)
        # NIR dims exclude the batch: shift non-negative dims up by one
        return nn.Flatten(start + 1 if start >= 0 else start, end + 1 if end >= 0 else end)
    if isinstance(node, (nir.AvgPool2d, nir.SumPool2d)):
        return _pool(name, node, divisor_override=1 if isinstance(node, nir.SumPool2d) else None)
    if isinstance(node, nir.Threshold):
        raise UnsupportedLayerError(
            f"NIR node '{name}' (Threshold) is supported only right after a SumPool2d on spikes (max pooling)"
        )
    raise UnsupportedLayerError(
        f"NIR node '{name}' ({_type(node)}) has no snnTorch equivalent in snncompress; supported nodes: "
        + ", ".join(NIR_NODES)
    )


def _array(value: Any) -> np.ndarray:
    return np.asarray(value)


def _ints(value: Any, n: int) -> tuple[int, ...]:
    flat = [int(v) for v in np.ravel(np.asarray(value))]
    return tuple(flat * n) if len(flat) == 1 else tuple(flat)


def _linear(name: str, node: Any) -> nn.Linear:
    weight = _array(node.weight)
    if weight.ndim != 2:
        raise UnsupportedLayerError(
            f"NIR node '{name}' ({_type(node)}) has a {weight.ndim}-D weight; expected 2-D"
        )
    bias = isinstance(node, nir.Affine)
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias)
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
        if bias:
            layer.bias.copy_(torch.as_tensor(_array(node.bias), dtype=torch.float32).reshape(-1))
    return layer


def _conv(name: str, node: Any) -> nn.Module:
    weight = _array(node.weight)
    two_d = isinstance(node, nir.Conv2d)
    dims = 2 if two_d else 1
    if weight.ndim != dims + 2:
        raise UnsupportedLayerError(f"NIR node '{name}' ({_type(node)}) has a {weight.ndim}-D weight")
    groups = int(np.ravel(node.groups)[0])
    padding = node.padding if isinstance(node.padding, str) else _ints(node.padding, dims)
    bias_values = _array(node.bias) if node.bias is not None else None
    has_bias = bias_values is not None and (
        _metadata(node, name).get("bias", True) or bool(np.any(bias_values != 0))
    )
    cls = nn.Conv2d if two_d else nn.Conv1d
    try:
        layer = cls(weight.shape[1] * groups, weight.shape[0], kernel_size=tuple(weight.shape[2:]),
                    stride=_ints(node.stride, dims), padding=padding, dilation=_ints(node.dilation, dims),
                    groups=groups, bias=has_bias)
    except (ValueError, RuntimeError) as exc:
        raise UnsupportedLayerError(f"NIR node '{name}' ({_type(node)}): {exc}") from exc
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
        if has_bias:
            layer.bias.copy_(torch.as_tensor(bias_values, dtype=torch.float32).reshape(-1))
    return layer


def _pool(name: str, node: Any, divisor_override: int | None) -> nn.AvgPool2d:
    kernel, stride, padding = _ints(node.kernel_size, 2), _ints(node.stride, 2), _ints(node.padding, 2)
    if any(2 * p > k for p, k in zip(padding, kernel, strict=True)):
        raise UnsupportedLayerError(f"NIR node '{name}' ({_type(node)}) pads more than half its kernel")
    return nn.AvgPool2d(_compact(kernel), _compact(stride), _compact(padding),
                        divisor_override=divisor_override)


def _compact(pair: tuple[int, ...]) -> int | tuple[int, ...]:
    """``(2, 2) -> 2``, as pooling layers are usually written (the architecture spec reads the same)."""
    return pair[0] if len(set(pair)) == 1 else pair


def _spiking_input(modules: list[nn.Module]) -> bool:
    for module in reversed(modules):
        if isinstance(module, nn.MaxPool2d):
            continue
        return is_neuron(module)
    return False


def _max_pool(name: str, pool: nir.SumPool2d, threshold: nir.Threshold) -> nn.Module:
    """``H(sum - t)`` over binary spikes is their max for any ``0 <= t < 1``."""
    t = np.unique(_array(threshold.threshold))
    if t.size != 1 or not 0 <= float(t[0]) < 1:
        raise UnsupportedLayerError(
            f"NIR node '{name}' (SumPool2d) + Threshold {t.tolist()[:3]}: "
            "only a threshold in [0, 1) on spikes is a max pooling"
        )
    kernel, stride, padding = _ints(pool.kernel_size, 2), _ints(pool.stride, 2), _ints(pool.padding, 2)
    if any(2 * p > k for p, k in zip(padding, kernel, strict=True)):
        raise UnsupportedLayerError(f"NIR node '{name}' (SumPool2d) pads more than half its kernel")
    return nn.MaxPool2d(_compact(kernel), _compact(stride), _compact(padding))


def _mark_output(modules: list[nn.Module]) -> None:
    """The last neuron returns its membrane too, when it is the last layer (else it would feed a tuple on)."""
    for module in modules:
        if is_neuron(module):
            module.output = False
    if is_neuron(modules[-1]):
        modules[-1].output = True


# -- neurons -----------------------------------------------------------------------------------------

def _fit(values: np.ndarray, shape: list[int] | None) -> torch.Tensor:
    """Per-neuron values as the parameter the module had: ``shape`` from metadata, else scalar if uniform."""
    full = torch.as_tensor(np.asarray(values, dtype=np.float64).astype(np.float32))
    if shape is not None:
        reduced = _reduce(full, list(shape))
        if reduced is not None and torch.equal(torch.broadcast_to(reduced, full.shape), full):
            return reduced
    flat = full.reshape(-1)
    if flat.numel() and bool(torch.all(flat == flat[0])):
        return flat[0].clone()
    return full


def _reduce(full: torch.Tensor, shape: list[int]) -> torch.Tensor | None:
    if len(shape) > full.dim():
        return None
    padded = [1] * (full.dim() - len(shape)) + shape
    t = full
    for d, size in enumerate(padded):
        if size == 1 and t.shape[d] != 1:
            t = t.narrow(d, 0, 1)
        elif size != t.shape[d]:
            return None
    return t.reshape(shape).clone()


def _reset(name: str, node_meta: dict[str, Any], ours: dict[str, Any], ctx: _Context,
           multi: bool = False) -> tuple[str, bool]:
    mechanism = node_meta.get("reset_mechanism", ours.get("reset_mechanism"))
    if mechanism is None:
        if ctx.reset_given is not None:
            return ctx.reset_given, False  # the user's reading, in the same step as NIR's equations
        ctx.reset_missing.append(f"'{name}'")
        if multi:  # sinabs's MultiSpike comes with MembraneSubtract by default
            ctx.ambiguity(f"'{name}'", "no reset recorded: multi-spike with subtract reset in the same step "
                                       "(sinabs's default; --nir-reset none to say otherwise)")
            return "subtract", False
        ctx.ambiguity(f"'{name}'", "no reset recorded: reset to zero in the same step (NIR's v_reset equations, as "
                                   "snnTorch's import_from_nir; --nir-reset subtract|zero|none to say otherwise)")
        return DEFAULT_RESET, False
    mechanism = mechanism.decode() if isinstance(mechanism, bytes) else str(mechanism)
    if mechanism not in RESETS:
        raise ModelLoadError(f"NIR node '{name}': unknown reset_mechanism '{mechanism}' in its metadata")
    return mechanism, bool(ours.get("reset_delay", False))


def _check_zero(name: str, node: Any, field_name: str) -> None:
    value = getattr(node, field_name, None)
    if value is not None and np.any(_array(value) != 0):
        raise UnsupportedLayerError(
            f"NIR node '{name}' ({_type(node)}) has a nonzero {field_name}, "
            "which snnTorch neurons cannot express"
        )


def _neuron_values(name: str, node: Any, ctx: _Context, ours: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
    """beta (and alpha), threshold from a LIF/IF/CubaLIF node, gains folded into the threshold (unless our
    exporter folded ``r`` into ``v_threshold`` for older readers and recorded the exact threshold)."""
    _check_zero(name, node, "v_reset")
    threshold = _array(node.v_threshold).astype(np.float64)
    out: dict[str, np.ndarray] = {}
    if isinstance(node, nir.IF):
        gain = _array(node.r).astype(np.float64)
        if not is_unit_gain(gain) and np.allclose(gain * ctx.dt, 1.0, rtol=GAIN_TOLERANCE, atol=0):
            # dv/dt = r I read as one Euler step of dt: SpikingJelly writes r = 1/dt for a unit gain, where
            # sinabs, Norse and snnTorch write r = 1 (read as the gain itself)
            gain = gain * ctx.dt
            ctx.ambiguity(f"'{name}'", f"IF r = {float(np.ravel(node.r)[0]):g} = 1/dt: read as NIR's continuous-time "
                                       "gain r*dt = 1 (SpikingJelly's convention; r = 1 is read as a unit gain too)")
        out["beta"] = np.ones_like(threshold)
    else:
        _check_zero(name, node, "v_leak")
        tau = _array(node.tau_mem if isinstance(node, nir.CubaLIF) else node.tau)
        out["beta"] = _decay(name, node, tau, ctx.dt, "tau_mem" if isinstance(node, nir.CubaLIF) else "tau")
        if not ctx.dt_recorded:
            beta = np.unique(np.round(out["beta"], 6))
            shown = f"{beta[0]:g}" if beta.size == 1 else f"{beta.min():g}..{beta.max():g}"
            ctx.ambiguity(f"'{name}'", f"no dt recorded: time constants read with dt = {ctx.dt:g} (snnTorch's "
                                       f"convention), beta {shown}; --nir-dt to say otherwise")
        if isinstance(node, nir.CubaLIF):
            out["alpha"] = _decay(name, node, _array(node.tau_syn), ctx.dt, "tau_syn")
            gain = cuba_gain(node.tau_syn, node.w_in, node.tau_mem, node.r, ctx.dt)
        else:
            gain = lif_gain(tau, node.r, ctx.dt)
    exact = (ours or {}).get("threshold_values") if (ours or {}).get("r_folded") else None
    if exact is not None:
        try:
            threshold = np.asarray(exact, dtype=np.float32).astype(np.float64).reshape(
                (ours or {}).get("threshold_shape") or [])
        except (TypeError, ValueError) as exc:
            raise ModelLoadError(f"NIR node '{name}': malformed threshold_values in its metadata ({exc})") from exc
    elif not is_unit_gain(gain):
        if not np.all(np.isfinite(gain)) or np.any(gain <= 0):
            raise UnsupportedLayerError(
                f"NIR node '{name}' ({_type(node)}) has a non-positive or infinite input gain"
            )
        threshold = threshold / gain
        gains = np.unique(gain)[:3].tolist()
        ctx.notes.append(f"NIR node '{name}': input gain {gains} folded into the threshold "
                         "(spikes unchanged; the membrane reads in units of 1/gain)")
    out["threshold"] = np.broadcast_to(threshold, np.broadcast_shapes(threshold.shape, out["beta"].shape))
    return out


def _decay(name: str, node: Any, tau: np.ndarray, dt: float, what: str) -> np.ndarray:
    with np.errstate(divide="ignore"):
        decay = decay_from_tau(tau, dt)
    if np.any(~np.isfinite(decay)) or np.any(decay < 0) or np.any(decay > 1):
        low = float(np.min(tau))
        raise UnsupportedLayerError(
            f"NIR node '{name}' ({_type(node)}) has {what} outside [dt, inf] "
            f"for dt = {dt:g}; its decay 1 - dt/tau must lie in [0, 1] (the smallest {what} is {low:g}: "
            "read the graph with --nir-dt at most that, the step its producer simulates)"
        )
    return decay


def _neuron_spec(kind: str, values: dict[str, np.ndarray], ours: dict[str, Any], mechanism: str,
                 delay: bool) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    tensors = {key: _fit(v, ours.get(f"{key}_shape")) for key, v in values.items()}
    args: dict[str, Any] = {
        "beta_shape": list(tensors["beta"].shape),
        "threshold_shape": list(tensors["threshold"].shape),
        "learn_beta": bool(ours.get("learn_beta", False)),
        "learn_threshold": bool(ours.get("learn_threshold", False)),
        "init_hidden": True,
        "output": False,
        "inhibition": False,
        "reset_mechanism": mechanism,
        "reset_delay": delay,
        "spike_grad": str(ours.get("spike_grad", "atan")),
    }
    if "alpha" in tensors:
        args.update(alpha_shape=list(tensors["alpha"].shape),
                    learn_alpha=bool(ours.get("learn_alpha", False)))
    return {"type": kind, "args": args}, tensors


def _fill(module: nn.Module, tensors: dict[str, torch.Tensor]) -> nn.Module:
    with torch.no_grad():
        for key, value in tensors.items():
            getattr(module, key).copy_(value)
    return module


def _lapicque(name: str, node: Any, ours: dict[str, Any], mechanism: str) -> nn.Module:
    """The Lapicque neuron our exporter wrote as a LIF, rebuilt from its recorded R, C, dt and beta (the LIF's
    tau and r say the same, up to rounding; the recorded values give the exact module back)."""
    _check_zero(name, node, "v_reset")
    tensors = {}
    for key in ("R", "C", "time_step", "beta"):
        entry = ours.get(key)
        if not isinstance(entry, dict) or "values" not in entry:
            raise ModelLoadError(f"NIR node '{name}': snncompress metadata of a Lapicque neuron lacks '{key}'")
        tensors[key] = torch.tensor(entry["values"], dtype=getattr(torch, entry.get("dtype", "float32"))).reshape(
            entry.get("shape", []))
    threshold = torch.as_tensor(_fit(_array(node.v_threshold).astype(np.float64), ours.get("threshold_shape")))
    tensors["threshold"] = threshold
    args = {"beta_shape": list(tensors["beta"].shape), "beta_dtype": str(tensors["beta"].dtype).removeprefix("torch."),
            "threshold_shape": list(threshold.shape), "learn_beta": bool(ours.get("learn_beta", False)),
            "learn_threshold": bool(ours.get("learn_threshold", False)), "init_hidden": True, "output": False,
            "inhibition": False, "reset_mechanism": mechanism, "spike_grad": str(ours.get("spike_grad", "atan"))}
    for key in ("R", "C", "time_step"):
        args[f"{key}_shape"] = list(tensors[key].shape)
        args[f"{key}_dtype"] = str(tensors[key].dtype).removeprefix("torch.")
    return _fill(build_module({"type": "Lapicque", "args": args}), tensors)


def _multi_spike(name: str, node: Any, ours: dict[str, Any], ctx: _Context) -> bool:
    """Whether the node fires sinabs's multi-spike count: recorded by our exporter, else ``--nir-spike``."""
    if ours.get("module") is not None:
        return ours.get("module") in ("MultiSpikeLeaky", "MultiSpikeSynaptic")
    if ctx.spike_given != "multi":
        return False
    if not isinstance(node, (nir.IF, nir.LIF)):
        raise UnsupportedLayerError(f"NIR node '{name}' ({_type(node)}): --nir-spike multi applies to IF and LIF "
                                    "nodes only (sinabs's multi-spike neurons)")
    return True


def _rockpool_dt(name: str, node: Any, ctx: _Context) -> float:
    """Rockpool writes ``r = tau_mem exp(-dt/tau_mem) / dt``: solve it for dt (decreasing in dt), 6 digits."""
    if ctx.dt_given:
        return ctx.dt
    tau = float(np.ravel(_array(node.tau_mem))[0])
    r = float(np.ravel(_array(node.r))[0])
    if not (np.isfinite(tau) and np.isfinite(r) and tau > 0 and r > 0):
        raise UnsupportedLayerError(f"NIR node '{name}' (CubaLIF): no dt follows from tau_mem {tau:g} and r {r:g} "
                                    "as Rockpool writes them; give --nir-dt")
    low, high = 1e-15, 100 * tau
    for _ in range(200):
        mid = (low * high) ** 0.5
        low, high = (mid, high) if tau * np.exp(-mid / tau) / mid > r else (low, mid)
    dt = float(f"{(low * high) ** 0.5:.6g}")
    ctx.ambiguity(f"'{name}'", f"read as Rockpool's LIFTorch at dt = {dt:g} (from r = tau_mem exp(-dt/tau_mem)/dt; "
                               "--nir-dt to say otherwise)")
    return dt


def _rockpool_cuba(name: str, node: Any, ctx: _Context) -> nn.Module:
    """A CubaLIF that Rockpool's ``LIFTorch`` wrote, with Rockpool's own dynamics (``lif_torch.py``):

        isyn = (isyn + x) * exp(-dt/tau_syn);  v = v * exp(-dt/tau_mem) + isyn
        s = floor(v / Vth) where v >= Vth;     v = v - s * Vth

    (``r`` and ``w_in`` only encode dt there). That is ``MultiSpikeSynaptic`` with ``alpha = exp(-dt/tau_syn)``,
    ``beta = exp(-dt/tau_mem)``, subtract reset in the same step, and the input gain ``exp(-dt/tau_syn)``
    folded into the threshold. Rockpool caps a step at 2^16 spikes; here there is no cap.
    """
    _check_zero(name, node, "v_leak")
    _check_zero(name, node, "v_reset")
    dt = _rockpool_dt(name, node, ctx)
    with torch.no_grad():  # Rockpool's tau_to_decay: exp(-dt / tau) in float32
        syn = torch.exp(-dt / torch.as_tensor(np.asarray(node.tau_syn, dtype=np.float32)))
        mem = torch.exp(-dt / torch.as_tensor(np.asarray(node.tau_mem, dtype=np.float32)))
        threshold = torch.as_tensor(np.asarray(node.v_threshold, dtype=np.float32)) / syn
    ctx.notes.append(f"NIR node '{name}': Rockpool's synaptic gain exp(-dt/tau_syn) folded into the threshold "
                     "(the membrane reads in units of 1/gain)")
    shape = np.broadcast_shapes(tuple(syn.shape), tuple(mem.shape), tuple(threshold.shape))
    values = {"alpha": syn.expand(shape).numpy(), "beta": mem.expand(shape).numpy(),
              "threshold": threshold.expand(shape).numpy()}
    spec, tensors = _neuron_spec("MultiSpikeSynaptic", values, {}, "subtract", False)
    return _fill(build_module(spec), tensors)


def _sinabs_lif(name: str, node: Any, ctx: _Context) -> nn.Module:
    """A LIF that sinabs's default ``LIF`` wrote (``sinabs/layers/functional/lif.py``): tau in time steps,

        v = exp(-1/tau) v + (1 - exp(-1/tau)) x      (norm_input=True, its default)
        s = trunc(v / Vth) where v > 0;  v = v - s * Vth

    That is ``MultiSpikeLeaky`` with ``beta = exp(-1/tau)`` and the gain ``1 - beta`` folded into the
    threshold (``r`` is 1 in sinabs's files). sinabs's own importer reads the node with ``norm_input=False``.
    """
    _check_zero(name, node, "v_leak")
    _check_zero(name, node, "v_reset")
    step = ctx.dt if ctx.dt_given else 1.0  # sinabs counts time in steps
    with torch.no_grad():  # sinabs's alpha_mem_calculated: exp(-1 / tau_mem) in float32
        beta = torch.exp(-step / torch.as_tensor(np.asarray(node.tau, dtype=np.float32)))
        threshold = torch.as_tensor(np.asarray(node.v_threshold, dtype=np.float32)) / (1 - beta)
    ctx.ambiguity(f"'{name}'", f"read as sinabs's LIF: tau in steps of {step:g}, beta = exp(-{step:g}/tau), input "
                               "gain 1 - beta (norm_input) folded into the threshold, multi-spike, subtract reset")
    shape = np.broadcast_shapes(tuple(beta.shape), tuple(threshold.shape))
    values = {"beta": beta.expand(shape).numpy(), "threshold": threshold.expand(shape).numpy()}
    spec, tensors = _neuron_spec("MultiSpikeLeaky", values, {}, "subtract", False)
    return _fill(build_module(spec), tensors)


def _neuron(name: str, node: Any, node_meta: dict[str, Any], ctx: _Context) -> nn.Module:
    ours = _metadata(node, name)
    ctx.neuron_nodes += 1
    ctx.recorded_nodes += bool(ours)
    if ctx.producer == "sinabs" and not ours:
        if isinstance(node, nir.LIF):
            return _sinabs_lif(name, node, ctx)
        if not isinstance(node, nir.IF):
            raise UnsupportedLayerError(f"NIR node '{name}' ({_type(node)}): --nir-producer sinabs reads IF and LIF "
                                        "nodes (sinabs's IAF and LIF) only")
        ctx.spike_given = "multi"  # sinabs's IAF: MultiSpike, MembraneSubtract
    if ctx.producer == "rockpool" and not ours:
        if isinstance(node, nir.CubaLIF):
            return _rockpool_cuba(name, node, ctx)
        raise UnsupportedLayerError(f"NIR node '{name}' ({_type(node)}): --nir-producer rockpool reads CubaLIF "
                                    "nodes (Rockpool's LIFTorch) only")
    if ours.get("module") == "Lapicque" and isinstance(node, nir.LIF):
        mechanism, _ = _reset(name, node_meta, ours, ctx)
        return _lapicque(name, node, ours, mechanism)
    multi = _multi_spike(name, node, ours, ctx)
    mechanism, delay = _reset(name, node_meta, ours, ctx, multi=multi)
    if multi and (mechanism == "zero" or delay):
        raise UnsupportedLayerError(f"NIR node '{name}' ({_type(node)}): a multi-spike neuron resets by "
                                    "subtraction (or not at all) in the same step here, not "
                                    f"{'with a delay' if delay else 'to zero'}")
    values = _neuron_values(name, node, ctx, ours)
    kind = ("Synaptic" if isinstance(node, nir.CubaLIF) else "Leaky") if not multi else (
        "MultiSpikeSynaptic" if isinstance(node, nir.CubaLIF) else "MultiSpikeLeaky")
    spec, tensors = _neuron_spec(kind, values, ours, mechanism, delay)
    return _fill(build_module(spec), tensors)


def _rleaky_subgraph(name: str, graph: nir.NIRGraph, ctx: _Context) -> nn.Module:
    """snnTorch's recurrent subgraph: Input, one LIF/IF, one Affine/Linear feeding it back, Output."""
    by_type: dict[str, list[Any]] = {"neuron": [], "weight": [], "io": []}
    for sub_name, sub in graph.nodes.items():
        if isinstance(sub, _NEURONS):
            by_type["neuron"].append((sub_name, sub))
        elif isinstance(sub, _WEIGHTS):
            by_type["weight"].append((sub_name, sub))
        elif isinstance(sub, (nir.Input, nir.Output)):
            by_type["io"].append(sub)
        else:
            raise UnsupportedLayerError(
                f"NIR node '{name}' (NIRGraph) holds '{sub_name}' ({_type(sub)}); snncompress imports a "
                "subgraph only as a recurrent LIF (Input, LIF, Affine/Linear, Output)"
            )
    if len(by_type["neuron"]) != 1 or len(by_type["weight"]) != 1 or len(by_type["io"]) != 2:
        raise UnsupportedLayerError(
            f"NIR node '{name}' (NIRGraph) is not a recurrent "
            "LIF subgraph (Input, LIF, Affine/Linear, Output)"
        )
    (n_name, neuron), (w_name, weight) = by_type["neuron"][0], by_type["weight"][0]
    edges = {(str(a), str(b)) for a, b in graph.edges}
    if (n_name, w_name) not in edges or (w_name, n_name) not in edges:
        raise UnsupportedLayerError(f"NIR node '{name}' (NIRGraph): its weight does not feed the neuron back")
    meta = {**(neuron.metadata or {}), **(graph.metadata or {})}
    return _rleaky(name, neuron, weight, meta, ctx)


def _rleaky(name: str, neuron: Any, weight: Any, node_meta: dict[str, Any], ctx: _Context) -> nn.Module:
    kind = "RSynaptic" if isinstance(neuron, nir.CubaLIF) else "RLeaky"  # a recurrent CubaLIF: RSynaptic
    ours = _parse_metadata(node_meta, name)
    ctx.neuron_nodes += 1
    ctx.recorded_nodes += bool(ours)
    if ctx.spike_given == "multi":
        raise UnsupportedLayerError(f"NIR node '{name}' (recurrent {_type(neuron)}): --nir-spike multi applies to "
                                    "feed-forward IF and LIF nodes only")
    mechanism, delay = _reset(name, node_meta, ours, ctx)
    values = _neuron_values(name, neuron, ctx)
    w = _array(weight.weight)
    n = int(np.ravel(neuron.v_threshold).size) if np.ndim(neuron.v_threshold) else w.shape[0]
    if w.shape != (n, n):
        raise UnsupportedLayerError(
            f"NIR node '{name}': recurrent weight of shape {list(w.shape)} for {n} neurons"
        )
    bias = _array(weight.bias) if isinstance(weight, nir.Affine) else np.zeros(n)
    diagonal = bool(np.array_equal(w, np.diag(np.diag(w)))) and not np.any(bias != 0)
    all_to_all = bool(ours.get("all_to_all", not diagonal))
    if not all_to_all and not diagonal:
        raise ModelLoadError(f"NIR node '{name}': metadata says one-to-one recurrence, but the weight is not "
                             "diagonal (or has a bias)")
    spec, tensors = _neuron_spec(kind, values, ours, mechanism, delay)
    spec["args"].update(all_to_all=all_to_all, linear_features=n if all_to_all else None,
                        conv2d_channels=None, kernel_size=None,
                        learn_recurrent=bool(ours.get("learn_recurrent", True)))
    if not all_to_all:
        v = _fit(np.diag(w), ours.get("V_shape"))
        spec["args"]["V_shape"] = list(v.shape)
        tensors["V"] = v
    module = _fill(build_module(spec), tensors)
    if all_to_all:
        with torch.no_grad():
            module.recurrent.weight.copy_(torch.as_tensor(w, dtype=torch.float32))
            module.recurrent.bias.copy_(torch.as_tensor(bias, dtype=torch.float32).reshape(-1))
    return module
