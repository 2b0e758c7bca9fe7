"""The supported layer set, and the JSON architecture spec a compressed file uses to rebuild a model.

A model that is an ``nn.Sequential`` (possibly nested) of the modules below is written into the
compressed file as an architecture spec, so it loads back without the user's code. Tensors (weights,
``beta``, ``threshold``, ...) are not part of the spec: the module is built with placeholders of the
right shape and the state dict fills them in.
"""

from __future__ import annotations

from typing import Any

import snntorch as snn
import torch
from torch import nn

from snncompress.errors import ModelLoadError, UnsupportedLayerError
from snncompress.models.multispike import MultiSpikeLeaky, MultiSpikeSynaptic
from snncompress.models.neurons import (
    RESET_NAMES,
    SUPPORTED_NEURON_NAMES,
    is_neuron,
    is_snntorch_module,
    is_supported_neuron,
    make_surrogate,
    surrogate_args,
    surrogate_name,
)

SYNAPTIC_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d)

# Stateless or per-feature layers whose constructor arguments are plain attributes.
_TORCH_LAYER_ARGS: dict[type[nn.Module], tuple[str, ...]] = {
    nn.Linear: ("in_features", "out_features"),
    nn.Conv1d: ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
                "padding_mode"),
    nn.Conv2d: ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
                "padding_mode"),
    nn.MaxPool1d: ("kernel_size", "stride", "padding", "dilation", "ceil_mode"),
    nn.MaxPool2d: ("kernel_size", "stride", "padding", "dilation", "ceil_mode"),
    nn.AvgPool1d: ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad"),
    nn.AvgPool2d: ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"),
    nn.AdaptiveAvgPool1d: ("output_size",),
    nn.AdaptiveAvgPool2d: ("output_size",),
    nn.AdaptiveMaxPool1d: ("output_size",),
    nn.AdaptiveMaxPool2d: ("output_size",),
    nn.BatchNorm1d: ("num_features", "eps", "momentum", "affine", "track_running_stats"),
    nn.BatchNorm2d: ("num_features", "eps", "momentum", "affine", "track_running_stats"),
    nn.Flatten: ("start_dim", "end_dim"),
    nn.Unflatten: ("dim", "unflattened_size"),
    nn.Dropout: ("p",),
    nn.Identity: (),
}
_BY_NAME: dict[str, type[nn.Module]] = {cls.__name__: cls for cls in _TORCH_LAYER_ARGS}
_NEURON_CLASSES: dict[str, type[nn.Module]] = {"Leaky": snn.Leaky, "Synaptic": snn.Synaptic,
                                               "RLeaky": snn.RLeaky, "RSynaptic": snn.RSynaptic,
                                               "Lapicque": snn.Lapicque, "Alpha": snn.Alpha,
                                               "MultiSpikeLeaky": MultiSpikeLeaky,
                                               "MultiSpikeSynaptic": MultiSpikeSynaptic}
_LAPICQUE_BUFFERS = ("R", "C", "time_step")
SUPPORTED_LAYER_NAMES = sorted([*_BY_NAME, *_NEURON_CLASSES, "Sequential"])


def is_synaptic(module: nn.Module) -> bool:
    return isinstance(module, SYNAPTIC_TYPES)


def conv_padding(module: nn.Module) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Zeros before and after each spatial dim of a ``Conv1d``/``Conv2d``'s input, as torch pads it.

    ``padding="same"`` pads ``dilation * (kernel - 1)`` in all, the odd zero after (torch's ``_conv_forward``:
    ``total // 2`` before, the rest after), so that the output keeps the input's size; ``"valid"`` none.
    """
    dims = len(module.kernel_size)
    padding = module.padding
    if padding == "valid":
        return (0,) * dims, (0,) * dims
    if padding == "same":
        total = [int(d) * (int(k) - 1) for d, k in zip(module.dilation, module.kernel_size, strict=True)]
        return tuple(t // 2 for t in total), tuple(t - t // 2 for t in total)
    before = tuple(int(p) for p in padding) if isinstance(padding, (tuple, list)) else (int(padding),) * dims
    return before, before


def check_supported(model: nn.Module) -> None:
    """Raise :class:`UnsupportedLayerError` naming the first leaf module snncompress cannot handle.

    Container modules (the user's own ``nn.Module`` subclasses, ``Sequential``, ``ModuleList``) are
    fine; what matters is that every leaf is a known layer or neuron.
    """
    for name, module in model.named_modules():
        if is_neuron(module):
            if not is_supported_neuron(module):
                raise UnsupportedLayerError(
                    f"layer '{name}' is a {type(module).__name__} neuron; supported neurons: {SUPPORTED_NEURON_NAMES}"
                )
            continue
        if is_snntorch_module(module) and any(True for _ in module.children()):
            # e.g. LeakyParallel, an nn.RNN over the whole sequence: name it, not its inner layer
            raise UnsupportedLayerError(
                f"layer '{name}' is a {type(module).__name__} neuron; supported neurons: {SUPPORTED_NEURON_NAMES}"
            )
        if type(module) in _TORCH_LAYER_ARGS or isinstance(module, (nn.Sequential, nn.ModuleList, nn.ModuleDict)):
            continue
        if any(True for _ in module.children()):
            continue  # a user container; its leaves are checked on their own
        if _inside_neuron(model, name):
            continue  # e.g. RLeaky's own recurrent Linear
        raise UnsupportedLayerError(
            f"layer '{name}' ({type(module).__name__}) is not supported; supported layers: "
            + ", ".join(SUPPORTED_LAYER_NAMES)
        )


def synaptic_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's synaptic layers: Linear and conv layers outside neurons, in registration order.

    The one rule for "a layer a pass may quantize or prune": RLeaky's recurrent Linear belongs to
    its neuron (quantized with the neuron's parameters), not to the feed-forward path.
    """
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, SYNAPTIC_TYPES) and not _inside_neuron(model, n)]


def _inside_neuron(model: nn.Module, name: str) -> bool:
    parts = name.split(".")
    for i in range(1, len(parts)):
        parent = model.get_submodule(".".join(parts[:i]))
        if is_neuron(parent):
            return True
    return False


def _neuron_spec(m: nn.Module) -> dict[str, Any]:
    cls = type(m).__name__
    args: dict[str, Any] = {
        "beta_shape": list(m.beta.shape),
        "threshold_shape": list(m.threshold.shape),
        "learn_beta": isinstance(m.beta, nn.Parameter),
        "learn_threshold": isinstance(m.threshold, nn.Parameter),
        "init_hidden": bool(m.init_hidden),
        "output": bool(m.output),
        "inhibition": bool(m.inhibition),
        "reset_mechanism": RESET_NAMES[int(m.reset_mechanism_val)],
        "reset_delay": bool(getattr(m, "reset_delay", True)),
        "spike_grad": surrogate_name(m),
        **surrogate_args(m),
    }
    if cls in ("Synaptic", "RSynaptic", "Alpha", "MultiSpikeSynaptic"):
        args["alpha_shape"] = list(m.alpha.shape)
        args["learn_alpha"] = isinstance(m.alpha, nn.Parameter)
    if cls == "Lapicque":
        for key in _LAPICQUE_BUFFERS:
            args[f"{key}_shape"] = list(getattr(m, key).shape)
            args[f"{key}_dtype"] = str(getattr(m, key).dtype).removeprefix("torch.")
        args["beta_dtype"] = str(m.beta.dtype).removeprefix("torch.")
    if cls in ("Alpha", "Lapicque"):
        del args["reset_delay"]  # neither takes it: the reset always acts on the next step
    if cls in ("RLeaky", "RSynaptic"):
        args.update(
            all_to_all=bool(m.all_to_all),
            linear_features=m.linear_features,
            conv2d_channels=m.conv2d_channels,
            kernel_size=m.kernel_size,
            learn_recurrent=bool(m.learn_recurrent),
        )
        if not m.all_to_all:
            args["V_shape"] = list(m.V.shape)
    return {"type": cls, "args": args}


def module_spec(module: nn.Module) -> dict[str, Any]:
    """Describe a supported module (recursively for ``Sequential``) as JSON-able data.

    Raises:
        UnsupportedLayerError: the module cannot be described without the user's code.
    """
    if isinstance(module, nn.Sequential):
        return {"type": "Sequential", "children": [[n, module_spec(c)] for n, c in module.named_children()]}
    if is_supported_neuron(module):
        return _neuron_spec(module)
    names = _TORCH_LAYER_ARGS.get(type(module))
    if names is None:
        raise UnsupportedLayerError(f"{type(module).__name__} cannot be described as a built-in architecture")
    args = {n: _jsonable(getattr(module, n)) for n in names}
    if isinstance(module, SYNAPTIC_TYPES):
        args["bias"] = module.bias is not None
    return {"type": type(module).__name__, "args": args}


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    return value


def _tupled(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def build_module(spec: dict[str, Any]) -> nn.Module:
    """Rebuild a module from :func:`module_spec` output (placeholders for tensors).

    Raises:
        ModelLoadError: the spec names an unknown type or bad arguments.
    """
    try:
        kind = spec["type"]
        if kind == "Sequential":
            seq = nn.Sequential()
            for name, child in spec["children"]:
                seq.add_module(name, build_module(child))
            return seq
        args = dict(spec.get("args", {}))
        if kind in _NEURON_CLASSES:
            return _build_neuron(kind, args)
        cls = _BY_NAME[kind]
        return cls(**{k: _tupled(v) for k, v in args.items()})
    except KeyError as exc:
        raise ModelLoadError(f"architecture spec names an unknown layer type or lacks a field: {exc}") from exc
    except TypeError as exc:
        raise ModelLoadError(f"architecture spec for {spec.get('type')} has bad arguments: {exc}") from exc


def _placeholder(module: nn.Module, key: str, shape: list[int], dtype: str | None = None) -> None:
    """Give buffer or parameter ``key`` the stored shape (and dtype); the state dict fills in the values."""
    old = getattr(module, key)
    value = torch.zeros(shape, dtype=getattr(torch, dtype) if dtype else old.dtype)
    if isinstance(old, nn.Parameter):
        setattr(module, key, nn.Parameter(value))
    else:
        module.register_buffer(key, value)


def _build_neuron(kind: str, a: dict[str, Any]) -> nn.Module:
    if kind == "Lapicque":
        return _build_lapicque(a)
    if kind == "Alpha":
        return _build_alpha(a)
    common = dict(
        beta=torch.zeros(a["beta_shape"]) if a["beta_shape"] else 0.5,
        learn_beta=a["learn_beta"],
        reset_delay=a.get("reset_delay", True),
        **_no_delay_args(a),
    )
    if kind == "Leaky":
        return snn.Leaky(**common)
    if kind == "MultiSpikeLeaky":
        return MultiSpikeLeaky(**common)
    if kind in ("Synaptic", "MultiSpikeSynaptic"):
        alpha = torch.zeros(a["alpha_shape"]) if a["alpha_shape"] else 0.5
        cls = MultiSpikeSynaptic if kind == "MultiSpikeSynaptic" else snn.Synaptic
        return cls(alpha=alpha, learn_alpha=a["learn_alpha"], **common)
    v = torch.ones(a["V_shape"]) if a.get("V_shape") else 1.0
    if kind == "RSynaptic":
        alpha = torch.zeros(a["alpha_shape"]) if a["alpha_shape"] else 0.5
        return snn.RSynaptic(
            alpha=alpha, learn_alpha=a["learn_alpha"], V=v, all_to_all=a["all_to_all"],
            linear_features=a["linear_features"], conv2d_channels=a["conv2d_channels"],
            kernel_size=_tupled(a["kernel_size"]), learn_recurrent=a["learn_recurrent"], **common,
        )
    return snn.RLeaky(
        V=v,
        all_to_all=a["all_to_all"],
        linear_features=a["linear_features"],
        conv2d_channels=a["conv2d_channels"],
        kernel_size=_tupled(a["kernel_size"]),
        learn_recurrent=a["learn_recurrent"],
        **common,
    )


def _no_delay_args(a: dict[str, Any]) -> dict[str, Any]:
    return dict(
        threshold=torch.ones(a["threshold_shape"]) if a["threshold_shape"] else 1.0,
        spike_grad=make_surrogate(a.get("spike_grad", "atan"), a),
        surrogate_disable=a.get("spike_grad") == "heaviside",
        init_hidden=a["init_hidden"],
        inhibition=a.get("inhibition", False),
        learn_threshold=a["learn_threshold"],
        reset_mechanism=a["reset_mechanism"],
        output=a["output"],
    )


def _build_lapicque(a: dict[str, Any]) -> nn.Module:
    # built from R and C (every constructor path needs values); then each of beta, R, C and dt gets the
    # stored shape and dtype, and the state dict the stored values
    module = snn.Lapicque(R=1.0, C=1.0, learn_beta=a["learn_beta"], **_no_delay_args(a))
    _placeholder(module, "beta", a["beta_shape"], a.get("beta_dtype"))
    for key in _LAPICQUE_BUFFERS:
        _placeholder(module, key, a[f"{key}_shape"], a.get(f"{key}_dtype"))
    return module


def _build_alpha(a: dict[str, Any]) -> nn.Module:
    # snnTorch checks alpha > beta and beta != 1 when it builds the neuron: placeholders that pass
    alpha = torch.full(a["alpha_shape"], 0.9) if a["alpha_shape"] else 0.9
    beta = torch.full(a["beta_shape"], 0.8) if a["beta_shape"] else 0.8
    return snn.Alpha(alpha=alpha, beta=beta, learn_alpha=a["learn_alpha"], learn_beta=a["learn_beta"],
                     **_no_delay_args(a))
