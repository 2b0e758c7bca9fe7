"""Spatial pruning with membrane importance (SpQuant §4.3.1, Eq. 21-22), as a runtime mask on a neuron layer.

At every time step each sample's neurons of the layer are ranked by the importance of their membrane,
``|u|``, and the fraction ``p`` of least importance is masked *before accumulation*: their input
current of this step is not added (their synaptic sums need not be computed at all), so they neither
integrate nor fire this step. The importance is the *prior*: the stored membrane of the previous step
(what the neuron holds when the step's synaptic work starts), so the mask is known before the
synaptic layer runs and its masked outputs are real savings -- the hardware probe counts the synaptic
operations of the masked outputs as skipped (:func:`output_keep`). At the first step of a sample the
membrane is reset (all zero) and nothing is masked. Ties (a ternary membrane has many) are broken by position.

The importance ranking is itself work: one magnitude and one comparison per neuron and step,
:func:`importance_ops`, reported by the pass next to the synaptic operations it saves.

The mask needs the layer whose outputs feed the neuron: in an ``nn.Sequential``, the synaptic layer
right before it, with at most BatchNorm / Dropout / Identity between (elementwise, so output ``i`` of the
synaptic layer is the current of neuron ``i``) and at most one pooling (MaxPool / AvgPool 1d / 2d over the
synaptic layer's positions, as in snnTorch's tutorial CSNN: Conv2d -> MaxPool2d -> Leaky). The pooling must
not overlap (kernel == stride, no padding, no dilation, no ceil_mode): then each neuron has a window of
synaptic outputs of its own, and a masked neuron's whole window is skipped (:func:`output_keep` holds the
mask expanded to the synaptic layer's outputs). The neuron's input itself is what is masked -- with a
BatchNorm after the pooling, a masked neuron gets no current, not the BatchNorm's shift, as without pooling
-- so the kept neurons' windows are computed in full and the result is exact. Outputs no window covers (the
remainder a floor-mode pooling drops) feed no neuron; they stay counted, as for the unmasked model. The
setting lives in the compression state (``state.neurons[layer]["spatial"]``) and is reinstalled on load and
copy like the membrane quantizer.
"""

from __future__ import annotations

import torch
from torch import nn

from snncompress.errors import ConfigError
from snncompress.models.layers import synaptic_layers
from snncompress.state import get_state, has_state

KEEP_ATTR = "snncompress_output_keep"
_MARK = "_snncompress_spatial"
_PASS_THROUGH = (nn.BatchNorm1d, nn.BatchNorm2d, nn.Dropout, nn.Identity)
#: the poolings that may sit between (pooled dimensions): channel by channel, over the last dimensions
_POOLING = {nn.MaxPool1d: 1, nn.AvgPool1d: 1, nn.MaxPool2d: 2, nn.AvgPool2d: 2}
#: positions of a synaptic layer's output (a Linear's neurons are not positions: pooling them mixes neurons)
_SPATIAL_DIMS = {nn.Conv1d: 1, nn.Conv2d: 2}


def spatial_keep(mem: torch.Tensor, ratio: float, shape: torch.Size) -> torch.Tensor | None:
    """Eq. 21-22: keep mask (bool, ``shape``) of the ``1 - ratio`` most important neurons of each sample.

    Returns None (keep all) when there is no membrane yet for this shape; a sample whose membrane is all
    zero (just reset: the first step of a sample) keeps all its neurons.
    """
    if mem.shape != shape or mem.dim() < 2:
        return None
    score = mem.detach().abs().reshape(shape[0], -1)
    n = score.shape[1]
    k = int(round(ratio * n))
    if k == 0:
        return torch.ones(shape, dtype=torch.bool, device=mem.device)
    # the k-th smallest |u| is the cut (a selection, not a sort: fast); below it masked, and of the values
    # equal to it the first ones by position, as many as k still needs
    cut = score.kthvalue(k, dim=1, keepdim=True).values
    below = score < cut
    tied = score == cut
    need = k - below.sum(dim=1, keepdim=True)
    keep = ~(below | (tied & (tied.cumsum(dim=1) <= need)))
    keep |= (score == 0).all(dim=1, keepdim=True)  # no prior yet (a reset membrane is all zero): keep all
    return keep.reshape(shape)


def feeding(model: nn.Module, neuron: str, what: str = "spatial pruning") -> tuple[str, nn.Module | None]:
    """The synaptic layer that feeds neuron layer ``neuron`` and the pooling between them (see the module docstring).

    Args:
        what: the mask that needs it, for the error message.

    Returns:
        The synaptic layer's name and the pooling module between it and the neuron layer (None: none).

    Raises:
        ConfigError: the model is not a Sequential at that place, something other than BatchNorm / Dropout /
            Identity / one pooling sits between, or the pooling does not pool the synaptic layer's positions
            channel by channel (after a Linear, or of another dimension than the convolution's).
    """
    parent_name, _, child = neuron.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    if not isinstance(parent, nn.Sequential):
        raise ConfigError(f"{what} of '{neuron}' needs the layer inside an nn.Sequential (the mask must "
                          "know which synaptic layer feeds it)")
    names = list(parent._modules)
    synaptic = {n for n, _ in synaptic_layers(model)}
    pool: tuple[str, nn.Module] | None = None
    for name in reversed(names[:names.index(child)]):
        full = f"{parent_name}.{name}" if parent_name else name
        module = parent._modules[name]
        if full in synaptic:
            if pool is not None and _SPATIAL_DIMS.get(type(module), 0) != _POOLING[type(pool[1])]:
                raise ConfigError(f"{what} of '{neuron}': the pooling '{pool[0]}' ({type(pool[1]).__name__}) does "
                                  f"not pool the positions of '{full}' ({type(module).__name__}) channel by channel")
            return full, None if pool is None else pool[1]
        if type(module) in _POOLING and pool is None:
            pool = (full, module)
        elif not isinstance(module, _PASS_THROUGH):
            break
    raise ConfigError(f"{what} of '{neuron}': no synaptic layer directly before it (only BatchNorm / "
                      "Dropout / one MaxPool or AvgPool may sit between)")


def feeding_layer(model: nn.Module, neuron: str, what: str = "spatial pruning") -> str:
    """The synaptic layer whose outputs are the neuron layer's input currents (:func:`feeding`)."""
    return feeding(model, neuron, what)[0]


def pooling_window(pool: nn.Module, neuron: str) -> tuple[int, ...]:
    """The window of a non-overlapping pooling, per pooled dimension: each neuron's own synaptic outputs.

    Raises:
        ConfigError: the pooling's windows overlap, skip or pad (kernel != stride, padding, dilation or
            ceil_mode): a neuron's inputs would not be its own window, so masking them is not exact.
    """
    dims = _POOLING[type(pool)]
    kernel, stride = _ntuple(pool.kernel_size, dims), _ntuple(pool.stride, dims)
    padding, dilation = _ntuple(pool.padding, dims), _ntuple(getattr(pool, "dilation", 1), dims)
    if kernel != stride or any(padding) or any(d != 1 for d in dilation) or pool.ceil_mode:
        raise ConfigError(f"spatial pruning of '{neuron}': the pooling before it, {pool}, has overlapping or "
                          "padded windows; only a non-overlapping pooling (kernel == stride, no padding, dilation "
                          "or ceil_mode) gives each neuron synaptic outputs of its own")
    return kernel


def _ntuple(value, dims: int) -> tuple[int, ...]:
    return tuple(int(v) for v in value) if isinstance(value, (tuple, list)) else (int(value),) * dims


def pooled_shape(shape: torch.Size, window: tuple[int, ...]) -> torch.Size:
    """The neurons' shape behind a non-overlapping pooling of the synaptic outputs ``shape`` (floor mode)."""
    lead = len(shape) - len(window)
    return torch.Size((*shape[:lead], *(s // k for s, k in zip(shape[lead:], window, strict=True))))


def expand_keep(keep: torch.Tensor, window: tuple[int, ...], shape: torch.Size) -> torch.Tensor:
    """The neurons' keep mask spread over their pooling windows: the keep mask of the synaptic outputs ``shape``.

    Every output in a masked neuron's window is masked; outputs no window covers (a floor-mode pooling's
    remainder) are kept: they are computed as for the unmasked model.
    """
    lead = keep.dim() - len(window)
    out = keep
    for i, k in enumerate(window):
        out = out.repeat_interleave(k, dim=lead + i)
    full = torch.ones(shape, dtype=torch.bool, device=keep.device)
    full[(..., *(slice(0, n) for n in out.shape[lead:]))] = out
    return full


def neuron_keep(keep: torch.Tensor, window: tuple[int, ...]) -> torch.Tensor:
    """The inverse of :func:`expand_keep`: each window's mask (all its outputs share it), the neurons' keep."""
    lead = keep.dim() - len(window)
    return keep[(..., *(slice(0, (n // k) * k, k) for n, k in zip(keep.shape[lead:], window, strict=True)))]


def install_spatial_pruning(model: nn.Module, layer: str, ratio: float) -> str:
    """Mask the fraction ``ratio`` of least-important membrane values of neuron ``layer`` at every step.

    Returns:
        The synaptic layer feeding it (whose masked outputs are skipped).

    Raises:
        ConfigError: ``ratio`` outside [0, 1), no feeding synaptic layer (:func:`feeding`), or an overlapping
            pooling between (:func:`pooling_window`).
    """
    if not 0.0 <= float(ratio) < 1.0:
        raise ConfigError(f"spatial pruning ratio for '{layer}' must be in [0, 1), got {ratio}")
    source, pool = feeding(model, layer)
    window = pooling_window(pool, layer) if pool is not None else None
    neuron, syn = model.get_submodule(layer), model.get_submodule(source)
    state = get_state(model)
    drop_hooks(state, (f"spatial:{layer}", f"spatial-in:{layer}"))

    def decide(_module, _inputs, output):
        # before the neuron runs this step: its stored membrane is the previous step's (the prior)
        if window is None:
            setattr(syn, KEEP_ATTR, spatial_keep(neuron.mem, float(ratio), output.shape))
            return
        keep = spatial_keep(neuron.mem, float(ratio), pooled_shape(output.shape, window))
        setattr(syn, KEEP_ATTR, None if keep is None else expand_keep(keep, window, output.shape))

    def mask_input(_module, args):
        keep = getattr(syn, KEEP_ATTR, None)
        if keep is not None and window is not None:
            keep = neuron_keep(keep, window)
        if keep is None or not args or args[0].shape != keep.shape:
            return None
        return (args[0] * keep.to(args[0].dtype), *args[1:])

    setattr(decide, _MARK, True)
    setattr(mask_input, _MARK, True)
    # prepend: the keep is decided before any other hook (the hardware probe) reads it
    state.hooks[f"spatial:{layer}"] = syn.register_forward_hook(decide, prepend=True)
    state.hooks[f"spatial-in:{layer}"] = neuron.register_forward_pre_hook(mask_input)
    state.neurons.setdefault(layer, {})["spatial"] = {"ratio": float(ratio), "source": source}
    return source


def output_keep(module: nn.Module) -> torch.Tensor | None:
    """The keep mask a spatial pruning put on this synaptic layer's outputs for the current step (None: all);
    behind a pooling, each masked neuron's whole window of outputs is masked."""
    return getattr(module, KEEP_ATTR, None)


def importance_ops(neurons: int, steps: int) -> int:
    """Work of the importance ranking per sample: a magnitude and a comparison per neuron and step."""
    return 2 * neurons * steps


def drop_hooks(state, keys) -> None:
    """Remove the hooks the compression state keeps under ``keys`` (a mask being reinstalled)."""
    for key in keys:
        old = state.hooks.pop(key, None)
        if old is not None:
            old.remove()


def remove_runtime_mask(model: nn.Module, mark: str, attr: str) -> None:
    """Drop every hook carrying ``mark`` and every module's ``attr`` (a copied model's hooks still
    point at the original's modules)."""
    for _, module in model.named_modules():
        for hooks in (module._forward_hooks, module._forward_pre_hooks):
            for key in [k for k, h in hooks.items() if getattr(h, mark, False)]:
                del hooks[key]
        if attr in module.__dict__:
            delattr(module, attr)


def reinstall_spatial_pruning(model: nn.Module) -> None:
    """Install the spatial masks the model's state describes (after loading or copying)."""
    if not has_state(model):
        return
    remove_runtime_mask(model, _MARK, KEEP_ATTR)
    for layer, settings in list(get_state(model).neurons.items()):
        if "spatial" in settings:
            install_spatial_pruning(model, layer, settings["spatial"]["ratio"])


RUNTIME_MASKS = {"spatial": "spatial pruning", "channel_gate": "a channel gate"}


def require_no_runtime_masks(model: nn.Module, what: str) -> None:
    """Refuse ``what`` (an export, the integer reference) for a model with masks decided at run time.

    Spatial pruning (this module) and channel gates (:mod:`snncompress.models.channel_gate`) choose,
    every step, from the membrane, which inputs a neuron layer receives: hooks around the layers that no
    exported graph or integer program reproduces, so writing one without them would silently run another
    model.

    Raises:
        UnsupportedLayerError: naming the first such layer and its mask.
    """
    from snncompress.errors import UnsupportedLayerError

    if not has_state(model):
        return
    for layer, settings in get_state(model).neurons.items():
        for key, name in RUNTIME_MASKS.items():
            if settings.get(key):
                raise UnsupportedLayerError(
                    f"{what} cannot express the {name} on neuron layer '{layer}' (a mask chosen from the membrane "
                    f"at every step); without it the exported model would compute something else: export the model "
                    f"before spatial pruning / channel masking, or keep it in snncompress's own file")
