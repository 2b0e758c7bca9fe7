"""Adaptive rounding of quantized weights for PTQ (AdaRound; Nagel et al., ICML 2020, "Up or Down?
Adaptive Rounding for Post-Training Quantization").

Rounding each weight to its nearest level minimizes the weight error, not the error of what the
layer computes; on coarse grids (power of two: up to ~33% relative rounding error at any bit width)
the two differ a lot. AdaRound keeps the scheme's grid and scale (PoT / APoT exponent, int scales,
ternary alpha, fixed-point step) and chooses, for each weight, between its two neighbouring levels
``lower <= w <= upper`` so that the layer's synaptic current on calibration data stays close to fp32:

    W~(V) = lower + (upper - lower) * h(V),   h(V) = clip(sigmoid(V) * (zeta - gamma) + gamma, 0, 1)
    min_V  sum_x ||W x - W~(V) x||^2 / E_nearest  +  lambda * mean_i (1 - |2 h(V_i) - 1|^beta)

(§3.3-3.4, Eq. 21-24: rectified sigmoid with zeta = 1.1, gamma = -0.1; ``beta`` annealed from 20 to 2
after a warm-up without the regulariser, which drives every ``h`` to 0 or 1). ``E_nearest`` is the
error of the scheme's own rounding on the same inputs, so ``lambda`` does not depend on the scale of
the weights or inputs (our choice; the paper uses the raw error). ``h`` starts at the fractional
position of ``w`` between its levels, so ``W~ = W`` at the start. Adam optimizes ``V``; the result is
hard-rounded (``upper`` where ``h >= 0.5``) and encoded with the scheme's own parameters.

SNN specifics: the inputs ``x`` of a synaptic layer are its inputs at every time step (spikes, or
the real-valued input of a first layer; a step whose input equals the previous step's, as with
direct encoding of a static sample, is kept once). Layers are calibrated one at a time in forward
order, each on the inputs produced by the already quantized layers before it and with the membrane
quantizers installed (sequential, as in §5), and the target is the fp32 current ``W x`` of those inputs.
A layer keeps its nearest rounding when adaptive rounding does not lower its error on the calibration
inputs, so the result is never worse there than nearest rounding.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset

from snncompress.data.loading import DataBundle
from snncompress.progress import progress_bar
from snncompress.quant.base import WeightScheme
from snncompress.quant.encoded import EncodedTensor
from snncompress.runner import SNNRunner, resolve_layout

ZETA, GAMMA = 1.1, -0.1  # rectified sigmoid stretch (AdaRound §3.4)
DEFAULT_ITERS = 300


@dataclass(frozen=True)
class AdaRoundSettings:
    """How adaptive rounding runs.

    Attributes:
        samples: calibration samples drawn (seeded) from the data.
        iters: Adam steps per layer.
        lr: Adam learning rate on ``V``.
        reg_weight: lambda, the weight of the rounding regulariser.
        beta_start: regulariser exponent at the end of the warm-up (flat: lets ``h`` move freely).
        beta_end: exponent at the last step (steep: pushes ``h`` to 0 or 1).
        warmup: fraction of the steps without the regulariser.
        batch_size: calibration inputs (rows, or time steps of conv feature maps) per Adam step.
        max_floats: bound on the stored inputs plus targets of one layer (float32 values); inputs are
            subsampled (seeded) beyond it.
        seed: seeds the sample draw, the subsampling and the mini-batches.
    """

    samples: int = 256
    iters: int = DEFAULT_ITERS
    lr: float = 3e-2
    reg_weight: float = 0.1
    beta_start: float = 20.0
    beta_end: float = 2.0
    warmup: float = 0.2
    batch_size: int = 512
    max_floats: int = 1 << 24
    seed: int = 0


@dataclass
class LayerReport:
    """What calibration did to one layer.

    Attributes:
        layer: module name.
        scheme: the weight scheme (``describe()``).
        inputs: calibration inputs used (rows, or time steps of feature maps).
        free_weights: weights that had two distinct neighbouring levels (the rest are fixed).
        changed: fraction of the weights rounded differently from the scheme's own rounding.
        error_before: relative output error ``sum ||W x - W_q x||^2 / sum ||W x||^2`` on the calibration
            inputs with the scheme's own rounding (nearest level; ternary: its threshold).
        error_adaround: the same with the adaptive rounding.
        error_after: the same with the weights the layer ends with.
        used: ``adaround``, or ``default`` (the scheme's own rounding) when adaptive rounding did not
            lower the error or there was nothing to choose.
        seconds: wall time of the layer (collection and optimization).
    """

    layer: str
    scheme: str
    inputs: int
    free_weights: int
    changed: float
    error_before: float
    error_adaround: float
    error_after: float
    used: str
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class CalibrationResult:
    """Encoded weights chosen by calibration, per layer, and what it measured."""

    encoded: dict[str, EncodedTensor] = field(default_factory=dict)
    layers: list[LayerReport] = field(default_factory=list)
    unreached: list[str] = field(default_factory=list)
    samples: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"samples": self.samples, "seconds": round(self.seconds, 3), "unreached": list(self.unreached),
                "layers": {r.layer: r.to_dict() for r in self.layers}}


def supports_adaround(scheme: WeightScheme) -> bool:
    """Whether ``scheme`` exposes its grid (``grid_params``, ``grid_neighbours``, ``encode_values``)."""
    if scheme.is_identity:
        return False
    probe = torch.zeros(1, 1)
    try:
        scheme.grid_neighbours(probe, scheme.grid_params(probe))
    except NotImplementedError:
        return False
    return True


def adaround(model: nn.Module, layers: list[tuple[str, nn.Module, WeightScheme]], data: DataBundle,
             settings: AdaRoundSettings, *, masks: dict[str, torch.Tensor] | None = None,
             show_progress: bool = False) -> CalibrationResult:
    """Calibrate the rounding of ``layers`` on ``data`` and write the chosen values into their weights.

    Args:
        model: the model, with its membrane quantizers installed and every other layer already quantized
            (the inputs a layer is calibrated on are the ones the quantized model gives it).
        layers: ``(name, module, scheme)`` per synaptic layer to calibrate (Linear / Conv1d / Conv2d).
        data: unlabeled calibration data (labels are ignored); ``settings.samples`` are drawn from it.
        settings: see :class:`AdaRoundSettings`.
        masks: pruning masks by ``<layer>.weight`` name (``False``: the weight stays at its nearest level,
            zero for a pruned weight).
        show_progress: a progress bar on stderr.

    Returns:
        The encoded weights (``scheme.decode(enc)`` equals each layer's new weight) and the reports.
    """
    start = time.perf_counter()
    masks = masks or {}
    gen = torch.Generator().manual_seed(settings.seed)
    was_training = model.training
    model.eval()
    runner = SNNRunner(model)
    is_sequence = resolve_layout(runner, data.sample_input(), data.time_steps)
    count = min(settings.samples, len(data))
    picked = torch.randperm(len(data), generator=gen)[:count].sort().values.tolist()
    loader = DataLoader(Subset(data.dataset, picked), batch_size=data.options.batch_size, shuffle=False)
    result = CalibrationResult(samples=count)

    def run_all() -> None:
        with torch.no_grad():
            for x, _ in loader:
                runner.run(x, is_sequence=is_sequence, time_steps=data.time_steps)

    try:
        order = _forward_order(runner, [m for _, m, _ in layers], next(iter(loader))[0], is_sequence,
                               data.time_steps)
        ranked = sorted((order[id(m)], name, m, s) for name, m, s in layers if id(m) in order)
        result.unreached = [name for name, m, _ in layers if id(m) not in order]
        with progress_bar(show_progress) as bar:
            task = bar.add_task("adaround", total=len(ranked) * settings.iters)
            for _, name, module, scheme in ranked:
                layer_start = time.perf_counter()
                steps = data.time_steps if not is_sequence else int(data.sample_input().shape[0])
                inputs = _collect_inputs(module, run_all, count * steps, settings, gen)
                enc, report = _round_layer(name, module, scheme, inputs, settings, gen,
                                           masks.get(f"{name}.weight"), lambda: bar.advance(task, 1))
                with torch.no_grad():
                    module.weight.copy_(scheme.decode(enc).reshape(module.weight.shape).to(module.weight.dtype))
                report.seconds = round(time.perf_counter() - layer_start, 3)
                result.encoded[name] = enc
                result.layers.append(report)
    finally:
        model.train(was_training)
    result.seconds = time.perf_counter() - start
    return result


def _forward_order(runner: SNNRunner, modules: list[nn.Module], x: torch.Tensor, is_sequence: bool,
                   time_steps: int) -> dict[int, int]:
    """Position of each module's first call in one run (``id(module) -> rank``); unreached ones absent."""
    order: dict[int, int] = {}

    def hook(module, _args):
        order.setdefault(id(module), len(order))

    handles = [m.register_forward_pre_hook(hook) for m in modules]
    try:
        with torch.no_grad():
            runner.run(x[:1], is_sequence=is_sequence, time_steps=min(time_steps, 2))
    finally:
        for h in handles:
            h.remove()
    return order


def synaptic_forward(module: nn.Module, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``W x`` of a Linear or convolution layer for a given weight, without the bias."""
    if isinstance(module, nn.Linear):
        return F.linear(x, weight)
    return module._conv_forward(x, weight, None)


def _as_items(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A layer input as a batch of items: rows ``[N, in]`` for Linear, ``[N, C, ...]`` for conv."""
    x = x.detach().to(torch.float32)
    if isinstance(module, nn.Linear):
        return x.reshape(-1, module.in_features)
    return x.unsqueeze(0) if x.dim() == module.weight.dim() - 1 else x


def _collect_inputs(module: nn.Module, run_all, expected: int, settings: AdaRoundSettings,
                    gen: torch.Generator) -> torch.Tensor:
    """The layer's inputs over all calibration samples and time steps, subsampled to the float budget."""
    kept: list[torch.Tensor] = []
    last: list[torch.Tensor] = []
    budget: dict[str, float] = {}

    def hook(_module, args):
        x = _as_items(module, args[0])
        if last and last[0].shape == x.shape and torch.equal(last[0], x):
            return  # the same input as the step before (a static sample): the same equations again
        last[:] = [x]
        if not budget:
            with torch.no_grad():
                out_size = synaptic_forward(module, x[:1], module.weight.detach().float()).numel()
            per_item = x[0].numel() + out_size
            budget["max_items"] = max(1, settings.max_floats // per_item)
            budget["keep"] = min(1.0, budget["max_items"] / max(expected, 1))
        if budget["keep"] < 1.0:
            x = x[torch.rand(x.shape[0], generator=gen) < budget["keep"]]
        kept.append(x.clone())

    handle = module.register_forward_pre_hook(hook)
    try:
        run_all()
    finally:
        handle.remove()
    inputs = torch.cat(kept) if kept else torch.empty(0)
    if budget and inputs.shape[0] > budget["max_items"]:
        inputs = inputs[torch.randperm(inputs.shape[0], generator=gen)[: int(budget["max_items"])]]
    return inputs


def _output_error(module: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                  weight: torch.Tensor) -> float:
    """``sum ||W x - W_q x||^2`` over the inputs (chunked)."""
    total = 0.0
    with torch.no_grad():
        for lo in range(0, inputs.shape[0], 4096):
            diff = synaptic_forward(module, inputs[lo:lo + 4096], weight) - targets[lo:lo + 4096]
            total += float(diff.double().pow(2).sum())
    return total


def _soft(v: torch.Tensor) -> torch.Tensor:
    """The rectified sigmoid ``h(V)`` (AdaRound Eq. 23)."""
    return (torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)


def _round_layer(name: str, module: nn.Module, scheme: WeightScheme, inputs: torch.Tensor,
                 settings: AdaRoundSettings, gen: torch.Generator, mask: torch.Tensor | None,
                 tick) -> tuple[EncodedTensor, LayerReport]:
    weight = module.weight.detach().to(torch.float32)
    params = scheme.grid_params(weight)
    nearest_enc = scheme.encode(weight)
    nearest = scheme.decode(nearest_enc).reshape(weight.shape)
    lower, upper = scheme.grid_neighbours(weight, params)
    fixed = lower == upper
    if mask is not None:
        fixed = fixed | ~mask.to(torch.bool).reshape(weight.shape)
    lower, upper = torch.where(fixed, nearest, lower), torch.where(fixed, nearest, upper)
    free = int((~fixed).sum())

    def report(before: float, ada: float, used: str, changed: float) -> LayerReport:
        return LayerReport(layer=name, scheme=scheme.describe(), inputs=int(inputs.shape[0]), free_weights=free,
                           changed=changed if used == "adaround" else 0.0, error_before=before,
                           error_adaround=ada, error_after=ada if used == "adaround" else before, used=used,
                           seconds=0.0)

    if inputs.shape[0] == 0 or free == 0:
        for _ in range(settings.iters):
            tick()
        return nearest_enc, report(0.0, 0.0, "default", 0.0)
    with torch.no_grad():
        targets = torch.cat([synaptic_forward(module, inputs[lo:lo + 4096], weight)
                             for lo in range(0, inputs.shape[0], 4096)])
    energy = float(targets.double().pow(2).sum()) or 1.0
    error_before = _output_error(module, inputs, targets, nearest)
    if error_before == 0.0:
        for _ in range(settings.iters):
            tick()
        return nearest_enc, report(0.0, 0.0, "default", 0.0)

    span = upper - lower
    rest = torch.where(fixed, 0.5, (weight - lower) / torch.where(fixed, 1.0, span)).clamp(0.0, 1.0)
    v = (-torch.log((ZETA - GAMMA) / (rest - GAMMA) - 1.0)).requires_grad_(True)
    optimizer = torch.optim.Adam([v], lr=settings.lr)
    per_item = error_before / inputs.shape[0]  # the default rounding's mean error: the loss unit
    free_mask = ~fixed
    warm = int(settings.warmup * settings.iters)
    batch = min(settings.batch_size, inputs.shape[0])
    perm, cursor = torch.randperm(inputs.shape[0], generator=gen), 0
    for step in range(settings.iters):
        if cursor + batch > inputs.shape[0]:
            perm, cursor = torch.randperm(inputs.shape[0], generator=gen), 0
        idx = perm[cursor:cursor + batch]
        cursor += batch
        h = _soft(v)
        out = synaptic_forward(module, inputs[idx], lower + span * h)
        loss = (out - targets[idx]).pow(2).sum() / (batch * per_item)
        if step >= warm:
            progress = (step - warm) / max(settings.iters - warm - 1, 1)
            beta = settings.beta_start + (settings.beta_end - settings.beta_start) * progress
            reg = (1 - (2 * h[free_mask] - 1).abs().pow(beta)).mean()
            loss = loss + settings.reg_weight * reg
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        tick()
    with torch.no_grad():
        rounded = torch.where(_soft(v) >= 0.5, upper, lower)
    enc = scheme.encode_values(rounded, params)
    chosen = scheme.decode(enc).reshape(weight.shape)
    error_after = _output_error(module, inputs, targets, chosen)
    changed = float((chosen != nearest).float().mean())
    if error_after >= error_before:
        return nearest_enc, report(error_before / energy, error_after / energy, "default", changed)
    return enc, report(error_before / energy, error_after / energy, "adaround", changed)
