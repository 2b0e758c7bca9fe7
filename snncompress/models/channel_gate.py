"""Channel masking with membrane prior (SpQuant §4.3.2, Eq. 23, Fig. 3): a learned gate on a neuron layer.

At every time step, before the synaptic layer that feeds neuron layer ``l`` runs, the gate reads ``l``'s
stored membrane -- the *prior*: the previous step's membrane, known before the step's synaptic work -- and
decides per sample which of ``l``'s channels accumulate this step::

    a_c = mean over the positions of channel c of u_c          (average pooling, per sample and step)
    z   = W a + b                                              (point-wise conv over the channels)
    p_c = softmax([0, z_c])[1] = sigmoid(z_c)                  (the keep probability)
    m_c = 1[p_c >= TH]                                         (Eq. 23; the paper's TH is 0.47)

The softmax is two-way, over each channel's (drop, keep) pair: a softmax across the channels sums to 1, so
a threshold of 0.47 would keep at most two of them. A two-way softmax depends only on the difference of
its logits, so the drop logit is fixed at 0 and the gate needs one output per channel.

A dropped channel gets no input current this step (its current is masked before accumulation, like the
spatial mask of :mod:`snncompress.models.spatial`): the feeding layer's outputs of that channel are not
computed -- the hardware probe counts their synaptic operations as skipped (:func:`channel_keep`) -- and
its neurons only leak, so they (almost always) do not fire, and the next layer's operations from them are
skipped too (measured from the recorded spikes, not assumed). A sample with no prior yet (an all-zero
membrane: the first step) keeps every channel.

A pooling between the feeding layer and the neuron layer (MaxPool / AvgPool over the convolution's
positions, as in snnTorch's tutorial CSNN: Conv2d -> MaxPool2d -> Leaky) keeps the channels, so the mask
applies to the feeding layer's output channels unchanged, overlapping or not: a dropped channel's outputs
are all skipped, and its neurons' input is masked. The prior is the neuron layer's membrane, behind the
pooling, so the gate's average pooling is over the neurons' (pooled) positions.

Channels, by the feeding layer:

* a convolution (membrane ``[B, C, *positions]``): the ``C`` output channels; the gate is a dense
  point-wise conv ``C -> C`` (``C*C + C`` parameters);
* a Linear (membrane ``[B, N]``): each neuron is its own channel (the pooling is the identity). A dense
  ``N -> N`` gate would cost as many multiplies per step as a dense fully connected layer of that width --
  more than gating it could save -- so the gate is depthwise: ``z_n = w_n * u_n + b_n`` (``2N`` parameters),
  a learned per-neuron rule on the neuron's own membrane.

Training (:class:`snncompress.sim.constraints.ChannelGateCost`): the forward pass uses the binary mask, the
backward pass the gradient of ``p`` (straight-through estimator); the gate's parameters learn at
:data:`GATE_LR_SCALE` times the fine-tuning rate, and a sparsity cost ``cost * mean(p)`` is added to the
loss (nothing else would ever drop a channel: the task loss alone favours keeping all). The gate starts by
keeping every channel (``W = 0``, ``p = sigmoid(b0)`` a little above ``TH``).

Its own work, counted by the hardware report as the feeding layer's gate operations (:func:`gate_ops`): the
pooling's adds, the gate's multiply-accumulates and one compare per channel (``p >= TH`` is ``z >= logit(TH)``:
no exponential is needed), per step and sample. The gate's parameters are a submodule of the neuron layer
(``<layer>.channel_gate.weight`` / ``.bias`` in the state dict and the file); its setting lives in the
compression state (``state.neurons[layer]["channel_gate"]``) and is reinstalled on load and copy.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
from torch import nn

from snncompress.errors import ConfigError
from snncompress.models.spatial import drop_hooks, feeding, feeding_layer, remove_runtime_mask
from snncompress.state import get_state, has_state

GATE_NAME = "channel_gate"
KEEP_ATTR = "snncompress_channel_keep"
#: learning-rate multiplier of the gate's parameters: a fine-tuning of a few epochs has only tens of
#: optimizer steps, and Adam moves a parameter about one learning rate per step
GATE_LR_SCALE = 30.0
#: the initial keep logit above logit(TH): every channel kept at first, and a few steps of the cost drop one
INIT_MARGIN = 0.5
_MARK = "_snncompress_channel_gate"


class ChannelGate(nn.Module):
    """The gate's parameters and its keep decision (Eq. 23); see the module docstring.

    Args:
        channels: Channels of the gated neuron layer.
        depthwise: One weight per channel (a Linear-fed layer) instead of a dense ``C x C`` point-wise conv.
        threshold: ``TH`` in (0, 1).
    """

    def __init__(self, channels: int, depthwise: bool, threshold: float):
        super().__init__()
        self.depthwise = bool(depthwise)
        self.threshold = float(threshold)
        self.weight = nn.Parameter(torch.zeros(channels) if depthwise else torch.zeros(channels, channels))
        logit = math.log(self.threshold / (1.0 - self.threshold))
        self.bias = nn.Parameter(torch.full((channels,), logit + INIT_MARGIN))
        self.recorded: list[torch.Tensor] | None = None  # keep probabilities of a training step (the cost)
        self.tally: list[float] | None = None  # [kept, decided] channel-steps, while counted

    @property
    def channels(self) -> int:
        return int(self.bias.numel())

    def keep_probability(self, mem: torch.Tensor) -> torch.Tensor:
        """``p`` ``[B, C]`` from a membrane ``[B, C, *positions]`` (pool -> point-wise conv -> softmax)."""
        pooled = mem.detach().flatten(2).mean(dim=2) if mem.dim() > 2 else mem.detach()
        pooled = pooled.to(self.weight.dtype)
        z = pooled * self.weight + self.bias if self.depthwise else nn.functional.linear(pooled, self.weight,
                                                                                         self.bias)
        return torch.softmax(torch.stack([torch.zeros_like(z), z], dim=-1), dim=-1)[..., 1]

    def forward(self, mem: torch.Tensor) -> torch.Tensor:
        """The channel mask ``[B, C]``: the binary ``1[p >= TH]`` in value, ``p``'s gradient (straight-through);
        all ones for a sample whose membrane is all zero (no prior yet)."""
        p = self.keep_probability(mem)
        hard = (p >= self.threshold).to(p.dtype)
        fresh = (mem.detach().reshape(mem.shape[0], -1) == 0).all(dim=1, keepdim=True)
        hard = torch.where(fresh, torch.ones_like(hard), hard)
        if self.recorded is not None and torch.is_grad_enabled():
            self.recorded.append(torch.where(fresh, torch.ones_like(p), p))
        if self.tally is not None:
            self.tally[0] += float(hard.sum())
            self.tally[1] += float(hard.numel())
        return hard + p - p.detach() if torch.is_grad_enabled() else hard


def channel_count(model: nn.Module, source: str) -> tuple[int, bool]:
    """Channels of the layer fed by synaptic layer ``source`` and whether its gate is depthwise (a Linear)."""
    syn = model.get_submodule(source)
    if isinstance(syn, nn.Linear):
        return int(syn.out_features), True
    return int(syn.out_channels), False


def install_channel_gate(model: nn.Module, layer: str, threshold: float, cost: float) -> str:
    """Gate the channels of neuron ``layer`` at threshold ``threshold``; keeps an installed gate's parameters.

    Returns:
        The synaptic layer feeding it (whose dropped channels' outputs are skipped).

    Raises:
        ConfigError: ``threshold`` outside (0, 1), a negative ``cost``, or a layer whose input current does not
            come straight from a synaptic layer (it has no channels to gate: :func:`feeding_layer`).
    """
    if not 0.0 < float(threshold) < 1.0:
        raise ConfigError(f"channel threshold for '{layer}' must be in (0, 1), got {threshold}")
    if not float(cost) >= 0.0:
        raise ConfigError(f"channel cost for '{layer}' must be >= 0, got {cost}")
    source, pool = feeding(model, layer, "channel masking")
    neuron, syn = model.get_submodule(layer), model.get_submodule(source)
    channels, depthwise = channel_count(model, source)
    gate = getattr(neuron, GATE_NAME, None)
    if not isinstance(gate, ChannelGate) or gate.channels != channels or gate.depthwise != depthwise:
        gate = ChannelGate(channels, depthwise, threshold).to(syn.weight.device)
        neuron.add_module(GATE_NAME, gate)
    gate.threshold = float(threshold)
    state = get_state(model)
    drop_hooks(state, (f"channel:{layer}", f"channel-in:{layer}"))

    def decide(_module, _inputs, output):
        # before the neuron runs this step: its stored membrane is the previous step's (the prior)
        mem = getattr(neuron, "mem", None)
        ok = (isinstance(mem, torch.Tensor) and mem.dim() == output.dim()
              and tuple(mem.shape[:2]) == (output.shape[0], channels)
              # a pooling between keeps the channels and shrinks only the positions
              and (pool is not None or mem.shape == output.shape))
        setattr(syn, KEEP_ATTR, gate(mem) if ok else None)

    def mask_input(_module, args):
        keep = getattr(syn, KEEP_ATTR, None)
        if keep is None or not args or args[0].shape[:2] != keep.shape:
            return None
        # the mask carries the gate's gradient (straight-through) to this step's input only; what stays on
        # the module is detached (a model holding a graph could not be copied)
        setattr(syn, KEEP_ATTR, keep.detach())
        x = args[0]
        return (x * keep.to(x.dtype).reshape(*keep.shape, *([1] * (x.dim() - 2))), *args[1:])

    setattr(decide, _MARK, True)
    setattr(mask_input, _MARK, True)
    # prepend: the keep is decided before any other hook (the hardware probe) reads it
    state.hooks[f"channel:{layer}"] = syn.register_forward_hook(decide, prepend=True)
    state.hooks[f"channel-in:{layer}"] = neuron.register_forward_pre_hook(mask_input)
    state.neurons.setdefault(layer, {})["channel_gate"] = {
        "threshold": float(threshold), "cost": float(cost), "source": source, "channels": channels,
        "depthwise": depthwise}
    return source


def channel_keep(module: nn.Module) -> torch.Tensor | None:
    """The channel mask ``[B, C]`` a gate put on this synaptic layer's outputs for the current step (None: all)."""
    keep = getattr(module, KEEP_ATTR, None)
    return None if keep is None else keep.detach()


def gate_ops(channels: int, positions: int, depthwise: bool) -> int:
    """The gate's work per sample and step: pooling adds, multiply-accumulates, one compare per channel."""
    pooling = channels * positions if positions > 1 else 0
    macs = channels if depthwise else channels * channels
    return pooling + macs + channels


def gates(model: nn.Module) -> dict[str, ChannelGate]:
    """The installed gates by neuron layer (as the compression state lists them)."""
    if not has_state(model):
        return {}
    out = {}
    for layer, settings in get_state(model).neurons.items():
        if "channel_gate" in settings:
            gate = getattr(model.get_submodule(layer), GATE_NAME, None)
            if isinstance(gate, ChannelGate):
                out[layer] = gate
    return out


@contextlib.contextmanager
def counted(model: nn.Module) -> Iterator[dict[str, list[float]]]:
    """Count, while in the block, each gate's kept and decided channel-steps: ``{layer: [kept, decided]}``."""
    found = gates(model)
    tallies = {layer: [0.0, 0.0] for layer in found}
    for layer, gate in found.items():
        gate.tally = tallies[layer]
    try:
        yield tallies
    finally:
        for gate in found.values():
            gate.tally = None


def add_gate_modules(model: nn.Module, neurons: dict) -> None:
    """Create the gate submodules a header's ``neurons`` record names (placeholders the file's tensors fill),
    so the rebuilt model's state dict has the gates' tensors before they are loaded.

    Raises:
        ConfigError: a record that does not fit the model (no such neuron layer, another feeding layer or
            channel count).
    """
    for layer, settings in neurons.items():
        record = settings.get("channel_gate") if isinstance(settings, dict) else None
        if not record:
            continue
        try:
            neuron = model.get_submodule(layer)
        except AttributeError:
            raise ConfigError(f"the channel gate of '{layer}' names a layer the model does not have") from None
        source = feeding_layer(model, layer, "channel masking")
        channels, depthwise = channel_count(model, source)
        if (source, channels, depthwise) != (record["source"], record["channels"], record["depthwise"]):
            raise ConfigError(f"the channel gate of '{layer}' does not fit the model ({record['source']}, "
                              f"{record['channels']} channels; the model: {source}, {channels})")
        neuron.add_module(GATE_NAME, ChannelGate(channels, depthwise, record["threshold"]))


def reinstall_channel_gates(model: nn.Module) -> None:
    """Install the gates' hooks the model's state describes (after loading or copying)."""
    if not has_state(model):
        return
    remove_runtime_mask(model, _MARK, KEEP_ATTR)
    for layer, settings in list(get_state(model).neurons.items()):
        record = settings.get("channel_gate")
        if record:
            install_channel_gate(model, layer, record["threshold"], record["cost"])
