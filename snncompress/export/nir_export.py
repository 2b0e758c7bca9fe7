"""Write a stepwise snnTorch model as a NIR graph (``nir`` package, HDF5 file).

The graph is a chain ``input -> layer -> ... -> output`` with one node per layer (named after the
module, dots replaced by ``_``). Neuron parameters are written per neuron (NIR's shapes are the full
feature shape, as snnTorch's exporter expects) and converted as ``snncompress.export.discretize``
describes. What NIR cannot say goes into ``metadata`` (JSON under the key ``snncompress``):

* each neuron node: ``reset_mechanism`` (``subtract``/``zero``/``none``; NIR's equations only know
  reset to ``v_reset``), ``reset_delay`` (snnTorch applies the reset on the next step), the surrogate
  and the parameter shapes, so our importer rebuilds the exact module;
* the graph: ``dt``, the discretization, stored-membrane quantization (NIR has no quantized state: the
  NIR graph runs an fp32 membrane), and the pass history.

Max pooling has no NIR node. On binary spikes ``max = H(sum - 0.5)``, so a MaxPool2d that follows a
spiking layer is written as ``SumPool2d`` + ``Threshold(0.5)`` (exact, and runnable by any NIR tool);
our importer turns the pair back into a MaxPool2d.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nir
import numpy as np
import torch
from torch import nn

from snncompress import __version__
from snncompress.errors import DataError, DomainError, UnsupportedLayerError
from snncompress.export.chain import exportable
from snncompress.export.discretize import DEFAULT_DT, cuba_params, lif_params
from snncompress.export.layout import ExportResult, Leaf, probe_shapes
from snncompress.export.nir_compat import nir_node
from snncompress.export.nir_quant import QUANT_KEY, node_quantization
from snncompress.fileformat.atomic import atomic_path, check_output_path
from snncompress.models.membrane import membrane_quantizers
from snncompress.models.multispike import MultiSpikeLeaky, MultiSpikeSynaptic
from snncompress.models.neurons import RECURRENT_NEURONS, RESET_NAMES, is_neuron, leak_factor, surrogate_name
from snncompress.state import get_state, has_state

METADATA_KEY = "snncompress"
FORMAT_NAME = "snncompress-nir"
FORMAT_VERSION = 1
NIR_LAYERS = ("Linear", "Conv1d", "Conv2d", "Flatten", "AvgPool2d", "MaxPool2d (after a spiking layer)",
              "Dropout/Identity (left out)", "Leaky", "Synaptic", "Lapicque (as LIF)",
              "MultiSpikeLeaky (as IF/LIF)", "MultiSpikeSynaptic (as CubaLIF)", "RLeaky (linear recurrence)",
              "RSynaptic (linear recurrence)")
_SKIPPED = (nn.Dropout, nn.Identity)


def export_nir(model: nn.Module, path: str | Path, sample: torch.Tensor, *, force: bool = False,
               dt: float = DEFAULT_DT, compat: bool = False) -> ExportResult:
    """Write ``model`` to ``path`` as a NIR graph, atomically.

    Args:
        model: a stepwise ``nn.Sequential`` of supported layers.
        path: the ``.nir`` file to write.
        sample: one input time step without the batch dimension (e.g. ``[1, 8, 8]``); fixes the shapes.
        force: overwrite an existing file.
        dt: the Euler step the continuous-time parameters are computed for.
        compat: write only what nir 1.0.4 readers (Norse's and sinabs's importers) take
            (``snncompress.export.nir_compat``).

    Returns:
        The path and the notes on what NIR could not carry.

    Raises:
        InputError: the output exists without ``force``.
        UnsupportedLayerError: a layer or neuron setting has no NIR form (the message names the layer).
        DataError: the sample does not fit the model.
    """
    path = check_output_path(path, force)
    graph, notes = model_to_nir(model, sample, dt=dt, unit_r=compat)
    with atomic_path(path, replace=force) as tmp:
        nir.write(tmp, graph)
        if compat:
            from snncompress.export.nir_compat import make_compatible

            left_out = make_compatible(tmp)
            notes.append("written for nir 1.0.4 readers (Norse, sinabs); left out: " + "; ".join(left_out)
                         if left_out else "written for nir 1.0.4 readers (Norse, sinabs); nothing left out")
    return ExportResult(path=path, format="nir", notes=notes, details={"nodes": len(graph.nodes)})


def model_to_nir(model: nn.Module, sample: torch.Tensor, *, dt: float = DEFAULT_DT,
                 unit_r: bool = False) -> tuple[nir.NIRGraph, list[str]]:
    """Build the NIR graph of ``model`` (see :func:`export_nir`); returns the graph and the notes.

    ``unit_r`` (``--nir-compat``): feed-forward LIF nodes get ``r = 1`` and ``v_threshold / r``, the same
    network with the membrane in units of ``r`` (Norse's and sinabs's importers ignore a LIF's ``r``); the
    exact thresholds stay in the node's metadata for our importer.
    """
    model, notes = exportable(model, sample, "NIR export")
    leaves = probe_shapes(model, sample)
    nodes: dict[str, nir.NIRNode] = {"input": nir.Input(input_type=np.array(sample.shape))}
    chain = ["input"]
    other_reset: list[str] = []
    multi: list[str] = []
    uneven: list[str] = []  # padding="same" with an odd total (an even kernel)
    previous: Leaf | None = None
    for leaf in leaves:
        if isinstance(leaf.module, _SKIPPED):
            notes.append(f"layer '{leaf.name}' ({type(leaf.module).__name__}) is the identity at inference "
                         "and is left out")
            continue
        quantization = node_quantization(model, leaf.name)
        for suffix, node in _convert(leaf, previous, dt, unit_r):
            # codes, scales, membrane levels (export/nir_quant.py); nir <= 1.0.4's Conv2d/Linear hold no metadata
            if quantization is not None and not suffix and hasattr(node, "metadata"):
                node.metadata[QUANT_KEY] = quantization
            name = _unique(_node_name(leaf.name) + suffix, nodes)
            nodes[name] = node
            chain.append(name)
        if is_neuron(leaf.module) and not _nir_reset(leaf.module):
            other_reset.append(leaf.name)
        if isinstance(leaf.module, (MultiSpikeLeaky, MultiSpikeSynaptic)):
            multi.append(leaf.name)
        if isinstance(leaf.module, (nn.Conv1d, nn.Conv2d)) and leaf.module.padding == "same" and any(
                d * (k - 1) % 2 for d, k in zip(leaf.module.dilation, leaf.module.kernel_size, strict=True)):
            uneven.append(leaf.name)
        previous = leaf
    out_name = _unique("output", nodes)
    nodes[out_name] = nir.Output(output_type=np.array(leaves[-1].out_shape if leaves else sample.shape))
    chain.append(out_name)
    notes.extend(_model_notes(model, other_reset))
    if multi:
        notes.append(f"neuron layers {', '.join(repr(n) for n in multi)} fire trunc(v/threshold) spikes per step "
                     "(sinabs's MultiSpike); NIR's IF/LIF say one spike: the metadata says so, which snncompress "
                     "reads back (sinabs's importer reads every IF as multi-spike; other tools fire one spike)")
    if uneven:
        notes.append(f"layers {', '.join(repr(n) for n in uneven)} pad 'same' with an even kernel, written as NIR's "
                     "padding 'same', which does not say where the odd zero goes: torch (and snncompress reading the "
                     "file) pads it after; a reader that pads it before shifts those layers' outputs by one")
    metadata = {"producer": f"snncompress {__version__}",
                METADATA_KEY: json.dumps(_graph_metadata(model, sample, dt, notes))}
    edges = list(zip(chain[:-1], chain[1:], strict=True))
    try:
        graph = nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata)
    except (ValueError, AssertionError) as exc:
        raise DomainError(f"the NIR graph built for this model does not type-check: {exc}") from exc
    return graph, notes


def _node_name(module_name: str) -> str:
    return module_name.replace(".", "_")


def _unique(name: str, taken: dict[str, Any]) -> str:
    candidate, i = name, 1
    while candidate in taken:
        candidate = f"{name}_{i}"
        i += 1
    return candidate


def _nir_reset(module: nn.Module) -> bool:
    """Whether NIR's own equations (v -> v_reset = 0 when the neuron fires) give this neuron's spikes.

    snnTorch's delayed zero reset (``reset_delay=True``) gives the same spikes for ``Leaky``, whose reset
    zeroes the kept membrane before the next input; ``Synaptic`` and ``RLeaky`` zero the membrane after
    adding it, so the input of that step is lost.
    """
    mechanism = RESET_NAMES[int(module.reset_mechanism_val)]
    delayed = bool(getattr(module, "reset_delay", True))
    return mechanism == "zero" and (not delayed or type(module).__name__ == "Leaky")


def _model_notes(model: nn.Module, other_reset: list[str]) -> list[str]:
    notes = []
    if other_reset:
        names = ", ".join(f"'{n}'" for n in other_reset)
        notes.append(
            f"neuron layers {names} reset in a way NIR's equations (reset to v_reset when firing) do not "
            "describe (by subtraction, not at all, or snnTorch's delayed zero reset); the reset mechanism is "
            "in each node's metadata, which snncompress reads back (other tools will reset to zero)"
        )
    if has_state(model) and get_state(model).tensors:
        count = len(get_state(model).tensors)
        notes.append(f"{count} quantized weight tensors are written as their dequantized float32 values (NIR "
                     "has no integer types)")
    quantized = membrane_quantizers(model)
    if quantized:
        names = ", ".join(f"'{n}'" for n in quantized)
        notes.append(
            f"stored-membrane quantization of {names} cannot be expressed in NIR: the graph "
            "runs an fp32 membrane (the settings are kept in the graph metadata)"
        )
    return notes


def _graph_metadata(model: nn.Module, sample: torch.Tensor, dt: float, notes: list[str]) -> dict[str, Any]:
    state = get_state(model) if has_state(model) else None
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "snncompress_version": __version__,
        "dt": dt,
        "discretization": "forward Euler, snnTorch's convention: beta = 1 - dt/tau, alpha = 1 - dt/tau_syn, "
                          "r = tau/dt, w_in = tau_syn/dt (unit input gain); IF = Leaky with beta = 1, gain r",
        "reset": "per neuron node: metadata reset_mechanism (subtract | zero | none) and "
                 "snncompress.reset_delay (true: snnTorch applies the reset at the start of the next step)",
        "spikes": "H(v - v_threshold), strict >, one time step per dt",
        "input_shape": list(sample.shape),
        "membrane_quantization": membrane_quantizers(model),
        "membrane_quantization_in_graph": False,
        "weights": "float32; quantized weights as their dequantized values, with their codes and scales (and "
                   "each quantized neuron's membrane levels) in the node's metadata under "
                   f"'{QUANT_KEY}' (snncompress.export.nir_quant)",
        "history": [h.get("pass", h.get("name", "?")) for h in state.history] if state else [],
        "notes": notes,
    }


# -- per-layer conversion ----------------------------------------------------------------------------

def _convert(leaf: Leaf, previous: Leaf | None, dt: float, unit_r: bool = False) -> list[tuple[str, nir.NIRNode]]:
    m = leaf.module
    if is_neuron(m):
        return [("", _neuron_node(leaf, dt, unit_r))]
    if isinstance(m, nn.Linear):
        return [("", _linear(leaf))]
    if isinstance(m, (nn.Conv1d, nn.Conv2d)):
        return [("", _conv(leaf))]
    if isinstance(m, nn.Flatten):
        return [("", _flatten(leaf))]
    if isinstance(m, nn.AvgPool2d):
        return [("", _avg_pool(leaf))]
    if isinstance(m, nn.MaxPool2d):
        return _max_pool(leaf, previous)
    raise UnsupportedLayerError(
        f"layer '{leaf.name}' ({type(m).__name__}) has no NIR equivalent; NIR export supports "
        + ", ".join(NIR_LAYERS)
        + (" (fold BatchNorm into the preceding layer first)" if "BatchNorm" in type(m).__name__ else "")
    )


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().to(torch.float32).numpy().copy()


def _linear(leaf: Leaf) -> nir.NIRNode:
    m = leaf.module
    if len(leaf.in_shape) != 1:
        raise DataError(
            f"layer '{leaf.name}' (Linear) gets a {list(leaf.in_shape)} input per sample, but NIR's Affine "
            "takes 1-D input; pass one time step without the batch dimension (or flatten first)"
        )
    meta = {METADATA_KEY: json.dumps({"module": "Linear", "layer": leaf.name})}
    if m.bias is None:
        return nir_node(nir.Linear, weight=_np(m.weight), metadata=meta)
    return nir_node(nir.Affine, weight=_np(m.weight), bias=_np(m.bias), metadata=meta)


def _conv(leaf: Leaf) -> nir.NIRNode:
    m = leaf.module
    kind = type(m).__name__
    if m.padding_mode != "zeros":
        raise UnsupportedLayerError(
            f"layer '{leaf.name}' ({kind}) uses padding_mode='{m.padding_mode}'; "
            "NIR convolutions pad with zeros"
        )
    bias = _np(m.bias) if m.bias is not None else np.zeros(m.out_channels, dtype=np.float32)
    meta = {METADATA_KEY: json.dumps({"module": kind, "layer": leaf.name, "bias": m.bias is not None})}
    padding = m.padding if isinstance(m.padding, str) else tuple(int(p) for p in m.padding)
    if isinstance(m, nn.Conv1d):
        return nir_node(nir.Conv1d, input_shape=int(leaf.in_shape[1]), weight=_np(m.weight), stride=int(m.stride[0]),
                          padding=padding if isinstance(padding, str) else padding[0],
                          dilation=int(m.dilation[0]), groups=int(m.groups), bias=bias, metadata=meta)
    return nir_node(nir.Conv2d, input_shape=tuple(int(s) for s in leaf.in_shape[1:]), weight=_np(m.weight),
                      stride=tuple(int(s) for s in m.stride), padding=padding,
                      dilation=tuple(int(d) for d in m.dilation), groups=int(m.groups), bias=bias,
                      metadata=meta)


def _flatten(leaf: Leaf) -> nir.NIRNode:
    m = leaf.module
    if m.start_dim == 0 or m.end_dim == 0:
        raise UnsupportedLayerError(
            f"layer '{leaf.name}' (Flatten) flattens the batch dimension; NIR cannot say so"
        )
    # NIR shapes have no batch dimension: shift non-negative dims down by one, as snnTorch's exporter does
    start = m.start_dim - 1 if m.start_dim > 0 else m.start_dim
    end = m.end_dim - 1 if m.end_dim > 0 else m.end_dim
    return nir_node(nir.Flatten, input_type={"input": np.array(leaf.in_shape)}, start_dim=start, end_dim=end,
                       metadata={METADATA_KEY: json.dumps({"module": "Flatten", "layer": leaf.name})})


def _pair(value: Any) -> np.ndarray:
    if isinstance(value, (tuple, list)):
        return np.array([int(v) for v in value])
    return np.array([int(value), int(value)])


def _pool_geometry(leaf: Leaf) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    m = leaf.module
    if m.ceil_mode:
        raise UnsupportedLayerError(
            f"layer '{leaf.name}' ({type(m).__name__}) uses ceil_mode=True; NIR pools floor"
        )
    kernel = _pair(m.kernel_size)
    stride = _pair(m.stride) if m.stride is not None else kernel
    return kernel, stride, _pair(m.padding)


def _avg_pool(leaf: Leaf) -> nir.NIRNode:
    m = leaf.module
    kernel, stride, padding = _pool_geometry(leaf)
    if padding.any() and not m.count_include_pad:
        raise UnsupportedLayerError(
            f"layer '{leaf.name}' (AvgPool2d) pads with count_include_pad=False; "
            "NIR's AvgPool2d divides by k*k"
        )
    meta = {METADATA_KEY: json.dumps({"module": "AvgPool2d", "layer": leaf.name})}
    if m.divisor_override is None:
        return nir_node(nir.AvgPool2d, kernel_size=kernel, stride=stride, padding=padding, metadata=meta)
    if m.divisor_override == 1:
        return nir_node(nir.SumPool2d, kernel_size=kernel, stride=stride, padding=padding, metadata=meta)
    raise UnsupportedLayerError(
        f"layer '{leaf.name}' (AvgPool2d) divides by {m.divisor_override}; "
        "NIR has average and sum pooling only"
    )


def _max_pool(leaf: Leaf, previous: Leaf | None) -> list[tuple[str, nir.NIRNode]]:
    m = leaf.module
    kernel, stride, padding = _pool_geometry(leaf)
    if _pair(m.dilation).max() != 1 or m.return_indices:
        raise UnsupportedLayerError(
            f"layer '{leaf.name}' (MaxPool2d) uses dilation or return_indices; NIR cannot"
        )
    source = previous.module if previous is not None else None
    if source is None or not (is_neuron(source) or isinstance(source, nn.MaxPool2d)):
        raise UnsupportedLayerError(
            f"layer '{leaf.name}' (MaxPool2d): NIR has no max pooling; snncompress writes it as SumPool2d + "
            "Threshold, exact only on binary spikes, but this layer's input is not a spiking layer's output"
        )
    meta = {METADATA_KEY: json.dumps({"module": "MaxPool2d", "layer": leaf.name})}
    threshold = np.full(leaf.out_shape, 0.5, dtype=np.float32)
    return [("", nir_node(nir.SumPool2d, kernel_size=kernel, stride=stride, padding=padding, metadata=meta)),
            ("_threshold", nir_node(nir.Threshold, threshold=threshold, metadata=dict(meta)))]


# -- neurons -----------------------------------------------------------------------------------------

def _check_neuron(leaf: Leaf) -> None:
    m = leaf.module
    kind = type(m).__name__
    if m.inhibition:
        raise UnsupportedLayerError(
            f"neuron layer '{leaf.name}' ({kind}) uses inhibition, which NIR cannot express"
        )
    if m.state_quant:
        raise UnsupportedLayerError(
            f"neuron layer '{leaf.name}' ({kind}) uses snnTorch's state_quant, which "
            "NIR cannot express; use snncompress's membrane quantization instead"
        )
    if not torch.all(m.graded_spikes_factor == 1):
        raise UnsupportedLayerError(
            f"neuron layer '{leaf.name}' ({kind}) has graded_spikes_factor != 1; NIR spikes are 1"
        )


def _per_neuron(value: torch.Tensor, shape: tuple[int, ...], clamp: bool) -> np.ndarray:
    v = value.detach().cpu().to(torch.float32)
    if clamp:
        v = v.clamp(0, 1)  # snnTorch clamps beta and alpha in every step
    return torch.broadcast_to(v, shape).numpy().astype(np.float64 if clamp else np.float32)


def _neuron_meta(leaf: Leaf) -> dict[str, Any]:
    m = leaf.module
    kind = type(m).__name__
    meta: dict[str, Any] = {
        "module": kind,
        "layer": leaf.name,
        "reset_mechanism": RESET_NAMES[int(m.reset_mechanism_val)],
        "reset_delay": bool(getattr(m, "reset_delay", True)),
        "spike_grad": surrogate_name(m),
        "output": bool(m.output),
        "beta_shape": list(m.beta.shape),
        "threshold_shape": list(m.threshold.shape),
        "learn_beta": isinstance(m.beta, nn.Parameter),
        "learn_threshold": isinstance(m.threshold, nn.Parameter),
    }
    if kind in ("Synaptic", "RSynaptic", "MultiSpikeSynaptic"):
        meta.update(alpha_shape=list(m.alpha.shape), learn_alpha=isinstance(m.alpha, nn.Parameter))
    if kind == "Lapicque":  # the RC circuit itself, so our importer rebuilds it exactly
        for key in ("R", "C", "time_step", "beta"):
            value = getattr(m, key).detach().cpu()
            meta[key] = {"shape": list(value.shape), "dtype": str(value.dtype).removeprefix("torch."),
                         "values": value.reshape(-1).tolist()}
    if kind in RECURRENT_NEURONS:
        meta.update(all_to_all=bool(m.all_to_all), learn_recurrent=bool(m.learn_recurrent))
        if not m.all_to_all:
            meta["V_shape"] = list(m.V.shape)
    return meta


def _neuron_node(leaf: Leaf, dt: float, unit_r: bool = False) -> nir.NIRNode:
    _check_neuron(leaf)
    meta = _neuron_meta(leaf)
    unit_r = unit_r and meta["module"] in ("Leaky", "MultiSpikeLeaky")
    if unit_r:  # the exact threshold, as v_threshold / r is rounded (model_to_nir)
        meta["r_folded"] = True
        meta["threshold_values"] = leaf.module.threshold.detach().cpu().float().reshape(-1).tolist()
    node_meta = {"reset_mechanism": meta["reset_mechanism"], METADATA_KEY: json.dumps(meta)}
    if meta["module"] == "Alpha":
        raise UnsupportedLayerError(
            f"neuron layer '{leaf.name}' (Alpha): NIR has no node for snnTorch's Alpha neuron (a membrane that is "
            "a weighted sum of an excitatory and an inhibitory synaptic trace); export it to ONNX instead"
        )
    if meta["module"] in RECURRENT_NEURONS:
        return _rleaky_subgraph(leaf, dt, node_meta)
    if meta["module"] == "Lapicque":
        return _lapicque_node(leaf, dt, node_meta)
    return _lif_node(leaf, leaf.in_shape, dt, node_meta, synaptic=meta["module"] in ("Synaptic", "MultiSpikeSynaptic"),
                     unit_r=unit_r)


def _lapicque_node(leaf: Leaf, dt: float, meta: dict[str, Any]) -> nir.NIRNode:
    """Lapicque ``u[t] = k u[t-1] + g I[t]`` (``k = 1 - dt_l/(RC)``, ``g = dt_l/C``) as NIR's LIF with
    ``tau = dt/(1 - k)`` and ``r = g/(1 - k)`` (the Euler step of NIR's LIF: leak ``1 - dt/tau``, gain
    ``r dt/tau``)."""
    m = leaf.module
    shape = leaf.in_shape
    leak = torch.broadcast_to(leak_factor(m).detach().to(torch.float64), shape).numpy()
    if (leak < 0).any() or (leak >= 1).any():
        raise UnsupportedLayerError(
            f"neuron layer '{leaf.name}' (Lapicque) has a leak 1 - dt/(RC) outside [0, 1) "
            f"({float(leak.min()):g} .. {float(leak.max()):g}); NIR's LIF needs a finite positive tau"
        )
    gain = torch.broadcast_to((m.time_step / m.C).detach().to(torch.float64), shape).numpy()
    tau = dt / (1.0 - leak)
    threshold = _per_neuron(m.threshold, shape, clamp=False)
    return nir_node(nir.LIF, tau=tau, r=gain / (1.0 - leak), v_leak=np.zeros(shape, dtype=np.float64),
                   v_threshold=threshold, v_reset=np.zeros(shape, dtype=np.float32), metadata=meta)


def _lif_node(leaf: Leaf, shape: tuple[int, ...], dt: float, meta: dict[str, Any],
              synaptic: bool, unit_r: bool = False) -> nir.NIRNode:
    m = leaf.module
    beta = _per_neuron(m.beta, shape, clamp=True)
    threshold = _per_neuron(m.threshold, shape, clamp=False)
    zeros = np.zeros(shape, dtype=np.float64)
    v_reset = np.zeros(shape, dtype=np.float32)
    if synaptic:
        alpha = _per_neuron(m.alpha, shape, clamp=True)
        if (alpha >= 1).any() or (beta >= 1).any():
            raise UnsupportedLayerError(
                f"neuron layer '{leaf.name}' ({type(m).__name__}) has alpha or "
                "beta = 1; NIR's CubaLIF needs finite time constants"
            )
        p = cuba_params(alpha, beta, dt)
        return nir_node(nir.CubaLIF, tau_syn=p["tau_syn"], tau_mem=p["tau_mem"], r=p["r"], v_leak=zeros,
                           v_threshold=threshold, v_reset=v_reset, w_in=p["w_in"], metadata=meta)
    if (beta >= 1).all():
        return nir_node(nir.IF, r=np.ones(shape, dtype=np.float64), v_threshold=threshold, v_reset=v_reset,
                      metadata=meta)
    if (beta >= 1).any():
        raise UnsupportedLayerError(
            f"neuron layer '{leaf.name}' ({type(m).__name__}) has beta = 1 for some "
            "neurons only; NIR's LIF needs a finite tau and its IF has no leak"
        )
    p = lif_params(beta, dt)
    if unit_r:  # tau dv/dt = -v + r I  is  tau du/dt = -u + I  for u = v / r, firing at v_threshold / r
        threshold = (threshold / p["r"]).astype(np.float32)
        p = {**p, "r": np.ones_like(p["r"])}
    return nir_node(nir.LIF, tau=p["tau"], r=p["r"], v_leak=zeros, v_threshold=threshold, v_reset=v_reset,
                   metadata=meta)


def _rleaky_subgraph(leaf: Leaf, dt: float, meta: dict[str, Any]) -> nir.NIRGraph:
    """RLeaky (RSynaptic) as snnTorch exports it: a subgraph ``input -> lif <-> w_rec``, ``lif -> output``
    with a LIF (a CubaLIF, whose input is the synaptic current the recurrence adds to)."""
    m = leaf.module
    kind = type(m).__name__
    if len(leaf.in_shape) != 1:
        raise UnsupportedLayerError(
            f"neuron layer '{leaf.name}' ({kind}) has a convolutional recurrence; NIR "
            "export supports linear (all-to-all or one-to-one) recurrence only"
        )
    n = int(leaf.in_shape[0])
    if m.all_to_all:
        rec = m.recurrent
        w_rec: nir.NIRNode = (nir_node(nir.Affine, weight=_np(rec.weight), bias=_np(rec.bias)) if rec.bias is not None
                              else nir_node(nir.Linear, weight=_np(rec.weight)))
    else:
        v = torch.broadcast_to(m.V.detach().to(torch.float32), (n,))
        w_rec = nir_node(nir.Linear, weight=_np(torch.diag(v)))
    lif = _lif_node(leaf, (n,), dt, {"reset_mechanism": meta["reset_mechanism"]}, synaptic=kind == "RSynaptic")
    return nir.NIRGraph(
        nodes={"input": nir.Input(input_type=np.array([n])), "lif": lif, "w_rec": w_rec,
               "output": nir.Output(output_type=np.array([n]))},
        edges=[("input", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "output")],
        metadata=meta,
    )
