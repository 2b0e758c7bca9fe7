"""Adaptive rounding of quantized weights for PTQ (AdaRound; Nagel et al., ICML 2020, "Up or Down?
Adaptive Rounding for Post-Training Quantization").

Rounding each weight to its nearest level minimizes the weight error, not the error of what the
layer computes; on coarse grids (power of two: up to ~33% relative rounding error at any bit width)
the two differ a lot. AdaRound keeps the scheme's grid and scale (PoT / APoT exponent, int scales,
ternary alpha, fixed-point step) and chooses, for each weight, between its two neighbouring levels
``lower <= w <= upper`` so that the layer's synaptic current on calibration data stays close to fp32:

    W~(V) = lower + (upper - lower) * h(V),   h(V) = clip(sigmoid(V) * (zeta - gamma) + gamma, 0, 1)
    min_V  E(W~(V)) / E(W_default)  +  lambda * mean_i (1 - |2 h(V_i) - 1|^beta),   E(Q) = sum_x ||W x - Q x||^2

(§3.3-3.4, Eq. 21-24: rectified sigmoid with zeta = 1.1, gamma = -0.1; ``beta`` annealed from 20 to 2
after a warm-up without the regulariser, which drives every ``h`` to 0 or 1). ``h`` starts at the
fractional position of ``w`` between its levels, so ``W~ = W`` at the start; Adam optimizes ``V``;
the result is hard-rounded (``upper`` where ``h >= 0.5``) and encoded with the scheme's own
parameters. Our choices, all in :class:`AdaRoundSettings`:

* The error is divided by that of the scheme's own rounding ``E(W_default)``, so ``lambda`` does not
  depend on the scale of the weights or inputs (the paper uses the raw error).
* ``E`` is a quadratic form, ``E(Q) = sum_o (q_o - w_o) G (q_o - w_o)^T`` with ``G = sum_x x x^T``
  (per group of a grouped convolution): calibration keeps these second moments, not the inputs
  (memory ``fan_in^2``, whatever the data size), and every Adam step uses all the calibration data.
* After the relaxation a greedy descent flips single weights to their other neighbour while that
  lowers ``E`` (:func:`flip_descent`). It never raises the error.

SNN specifics: the inputs ``x`` of a synaptic layer are its inputs at every time step (spikes, or
the real-valued input of a first layer; a step whose input equals the previous step's, as with
direct encoding of a static sample, is counted once). Layers are calibrated one at a time in forward
order, each on the inputs produced by the already quantized layers before it and with the membrane
quantizers installed (sequential, as in §5); the target is the fp32 current ``W x`` of those inputs
(or, with a ``reference`` model, the fp32 model's own current: asymmetric reconstruction). A layer keeps
the scheme's own rounding when adaptive rounding does not lower ``E``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset

from snncompress.data.loading import DataBundle
from snncompress.quant.base import WeightScheme
from snncompress.quant.encoded import EncodedTensor
from snncompress.sim.progress import progress_bar
from snncompress.sim.runner import SNNRunner, resolve_layout

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
        beta_start: regulariser exponent at the end of the warm-up (high: the penalty only bites next to
            0 and 1, so ``h`` still moves freely).
        beta_end: exponent at the last step (low: the penalty pushes every ``h`` to 0 or 1).
        warmup: fraction of the steps without the regulariser.
        polish: after the relaxation, flip single weights while that lowers the error (:func:`flip_descent`).
        seed: seeds the draw of the calibration samples.
    """

    samples: int = 256
    iters: int = DEFAULT_ITERS
    lr: float = 3e-2
    reg_weight: float = 1.0
    beta_start: float = 20.0
    beta_end: float = 2.0
    warmup: float = 0.2
    polish: bool = True
    seed: int = 0


@dataclass
class LayerReport:
    """What calibration did to one layer.

    Attributes:
        layer: module name.
        scheme: the weight scheme (``describe()``).
        inputs: calibration input rows (one per input vector, or per output position of a convolution).
        free_weights: weights with two distinct neighbouring levels (the rest have one choice).
        changed: fraction of the weights rounded differently from the scheme's own rounding.
        error_before: relative output error ``E(Q) / E(0)`` (the error of all-zero weights) on the
            calibration inputs, with the scheme's own rounding (nearest level; ternary: its threshold).
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
    seconds: float = 0.0

    def to_dict(self) -> dict:
        # no seconds: this goes into the file's history, and the same seed must give the same bytes
        return {k: v for k, v in asdict(self).items() if k != "seconds"}


@dataclass
class CalibrationResult:
    """Encoded weights chosen by calibration, per layer, and what it measured."""

    encoded: dict[str, EncodedTensor] = field(default_factory=dict)
    layers: list[LayerReport] = field(default_factory=list)
    unreached: list[str] = field(default_factory=list)
    samples: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        # no seconds (see LayerReport.to_dict); the run report times each step
        return {"samples": self.samples, "unreached": list(self.unreached),
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
             settings: AdaRoundSettings, *, reference: nn.Module | None = None,
             masks: dict[str, torch.Tensor] | None = None, show_progress: bool = False) -> CalibrationResult:
    """Calibrate the rounding of ``layers`` on ``data`` and write the chosen values into their weights.

    Args:
        model: the model, with its membrane quantizers installed and every other layer already quantized
            (the inputs a layer is calibrated on are the ones the quantized model gives it).
        layers: ``(name, module, scheme)`` per synaptic layer of ``model`` to calibrate (Linear / Conv1d /
            Conv2d).
        data: unlabeled calibration data (labels are ignored); ``settings.samples`` are drawn from it.
        settings: see :class:`AdaRoundSettings`.
        reference: the fp32 model (same module names, no quantizers). When given, the target of a layer
            is its current in the fp32 model, ``W x_fp32``, instead of ``W x`` on the quantized model's
            inputs (AdaRound's asymmetric reconstruction, §5).
        masks: pruning masks by ``<layer>.weight`` name (``False``: the weight keeps its default rounding,
            zero for a pruned weight).
        show_progress: a progress bar on stderr.

    Returns:
        The encoded weights (``scheme.decode(enc)`` equals each layer's new weight) and the reports.

    Under a distributed launch, rank 0 calibrates and the others receive its result and write the
    same weights (:func:`snncompress.sim.distributed.run_on_main`): every rank holds the same codes.
    """
    from snncompress.sim import distributed

    if not distributed.is_distributed():
        return _adaround(model, layers, data, settings, reference=reference, masks=masks, show_progress=show_progress)
    result = distributed.run_on_main(lambda: _adaround(model, layers, data, settings, reference=reference,
                                                       masks=masks, show_progress=show_progress))
    if not distributed.is_main():
        with torch.no_grad():
            for name, module, scheme in layers:
                if name in result.encoded:
                    decoded = scheme.decode(result.encoded[name]).reshape(module.weight.shape)
                    module.weight.copy_(decoded.to(module.weight.dtype))
    return result


def _adaround(model: nn.Module, layers: list[tuple[str, nn.Module, WeightScheme]], data: DataBundle,
              settings: AdaRoundSettings, *, reference: nn.Module | None, masks: dict[str, torch.Tensor] | None,
              show_progress: bool) -> CalibrationResult:
    start = time.perf_counter()
    masks = masks or {}
    gen = torch.Generator().manual_seed(settings.seed)
    models = [m for m in (model, reference) if m is not None]
    modes = [m.training for m in models]
    runner = SNNRunner(model)
    ref_runner = SNNRunner(reference) if reference is not None else None
    is_sequence = resolve_layout(runner, data.sample_input(), data.time_steps)
    count = min(settings.samples, len(data))
    picked = torch.randperm(len(data), generator=gen)[:count].sort().values.tolist()
    loader = DataLoader(Subset(data.dataset, picked), batch_size=data.options.batch_size, shuffle=False)
    result = CalibrationResult(samples=count)

    def record(run: SNNRunner, module: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
        inputs: list[torch.Tensor] = []
        handle = module.register_forward_pre_hook(lambda _m, args: inputs.append(args[0].detach()))
        try:
            with torch.no_grad():
                run.run(x, is_sequence=is_sequence, time_steps=data.time_steps)
        finally:
            handle.remove()
        return inputs

    def calls(name: str, module: nn.Module) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(input, target input)`` per call of the layer: its inputs in the quantized and fp32 model."""
        for x, _ in loader:
            inputs = record(runner, module, x)
            targets = inputs if ref_runner is None else record(ref_runner, reference.get_submodule(name), x)
            if len(targets) != len(inputs):
                raise RuntimeError(f"layer '{name}' was called {len(inputs)} times per batch in the quantized "
                                   f"model but {len(targets)} times in the fp32 model")
            yield from zip(inputs, targets, strict=True)

    try:
        for m in models:
            m.eval()
        order = _forward_order(runner, [m for _, m, _ in layers], next(iter(loader))[0], is_sequence,
                               data.time_steps)
        ranked = sorted((order[id(m)], name, m, s) for name, m, s in layers if id(m) in order)
        result.unreached = [name for name, m, _ in layers if id(m) not in order]
        with progress_bar(show_progress) as bar:
            task = bar.add_task("adaround", total=len(ranked) * settings.iters)
            for _, name, module, scheme in ranked:
                layer_start = time.perf_counter()
                moments = _input_moments(module, calls(name, module), symmetric=reference is None)
                enc, report = _round_layer(name, module, scheme, moments, settings, masks.get(f"{name}.weight"),
                                           lambda: bar.advance(task, 1))
                with torch.no_grad():
                    module.weight.copy_(scheme.decode(enc).reshape(module.weight.shape).to(module.weight.dtype))
                report.seconds = round(time.perf_counter() - layer_start, 3)
                result.encoded[name] = enc
                result.layers.append(report)
    finally:
        for m, mode in zip(models, modes, strict=True):
            m.train(mode)
    result.seconds = time.perf_counter() - start
    return result


def _forward_order(runner: SNNRunner, modules: list[nn.Module], x: torch.Tensor, is_sequence: bool,
                   time_steps: int) -> dict[int, int]:
    """Rank of each module's first call in one short run (``id(module) -> rank``); unreached ones absent."""
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


def input_rows(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A layer input as the rows its weight multiplies: ``[N, groups, fan_in]``.

    Linear: one row per input vector. Convolution: one row per output position (im2col, with the layer's
    own padding, stride and dilation), split by group, so that the layer's output (without bias) is
    ``rows[:, g] @ weight_matrix(module, weight)[g].T`` for each group ``g``.
    """
    x = x.detach().to(torch.float32)
    if isinstance(module, nn.Linear):
        return x.reshape(-1, 1, module.in_features)
    if x.dim() == module.weight.dim() - 1:
        x = x.unsqueeze(0)  # an unbatched input
    mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
    x = F.pad(x, module._reversed_padding_repeated_twice, mode=mode)
    kernel, dilation, stride = module.kernel_size, module.dilation, module.stride
    if isinstance(module, nn.Conv1d):  # as a conv over [1, L] images
        x, kernel, dilation, stride = x.unsqueeze(2), (1, *kernel), (1, *dilation), (1, *stride)
    cols = F.unfold(x, kernel, dilation=dilation, stride=stride)  # [N, C * prod(kernel), L]
    return cols.transpose(1, 2).reshape(-1, module.groups, cols.shape[1] // module.groups)


def weight_matrix(module: nn.Module, weight: torch.Tensor) -> torch.Tensor:
    """``weight`` as ``[groups, out / groups, fan_in]``, the columns in :func:`input_rows` order."""
    groups = getattr(module, "groups", 1)
    return weight.reshape(groups, weight.shape[0] // groups, -1)


@dataclass
class InputMoments:
    """Second moments of a layer's input rows over the calibration data, per group (float64).

    With ``x`` the input rows in the quantized model and ``x_f`` the target's (the same rows, or the fp32
    model's), the output error of weights ``Q`` against the target current ``W x_f`` is

        E(Q) = sum_o q_o G q_o^T - 2 q_o C w_o^T + w_o F w_o^T,
        G = sum x x^T,   C = sum x x_f^T,   F = sum x_f x_f^T       (each [groups, fan_in, fan_in])
    """

    gram: torch.Tensor
    cross: torch.Tensor
    target_gram: torch.Tensor
    rows: int


def _input_moments(module: nn.Module, calls, *, symmetric: bool) -> InputMoments | None:
    """Accumulate :class:`InputMoments` over ``(input, target input)`` pairs, one per call of the layer."""
    total: list[torch.Tensor] | None = None
    rows = 0
    last: tuple[torch.Tensor, torch.Tensor] | None = None
    for x, x_f in calls:
        if last is not None and _same(last[0], x) and _same(last[1], x_f):
            continue  # the same input as the step before (a static sample): the same equations again
        last = (x, x_f)
        r = input_rows(module, x).double()
        g = torch.einsum("ngi,ngj->gij", r, r)
        if symmetric:
            c = f = g
        else:
            r_f = input_rows(module, x_f).double()
            c, f = torch.einsum("ngi,ngj->gij", r, r_f), torch.einsum("ngi,ngj->gij", r_f, r_f)
        total = [g, c, f] if total is None else [total[0] + g, total[1] + c, total[2] + f]
        rows += r.shape[0]
    if total is None:
        return None
    return InputMoments(gram=total[0], cross=total[1], target_gram=total[2], rows=rows)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.equal(a, b)


class _Objective:
    """``E(Q)`` of :class:`InputMoments` for one layer, ``Q`` as ``[groups, out / groups, fan_in]``."""

    def __init__(self, module: nn.Module, weight: torch.Tensor, moments: InputMoments):
        self.module = module
        self.gram = moments.gram
        w = weight_matrix(module, weight.double())
        self.linear = torch.einsum("goi,gji->goj", w, moments.cross)  # w_o C^T
        self.constant = float(torch.einsum("goi,gij,goj->", w, moments.target_gram, w))

    def quadratic(self, q: torch.Tensor) -> torch.Tensor:
        """``q_o G`` for every row."""
        return torch.einsum("goi,gij->goj", q, self.gram)

    def __call__(self, q: torch.Tensor) -> torch.Tensor:
        return ((self.quadratic(q) - 2 * self.linear) * q).sum() + self.constant

    def of(self, values: torch.Tensor) -> float:
        """The error of weights shaped like the layer's."""
        return max(0.0, float(self(weight_matrix(self.module, values.double()))))


def _soft(v: torch.Tensor) -> torch.Tensor:
    """The rectified sigmoid ``h(V)`` (AdaRound Eq. 23)."""
    return (torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)


def _round_layer(name: str, module: nn.Module, scheme: WeightScheme, moments: InputMoments | None,
                 settings: AdaRoundSettings, mask: torch.Tensor | None,
                 tick: Callable[[], None]) -> tuple[EncodedTensor, LayerReport]:
    weight = module.weight.detach().to(torch.float32)
    params = scheme.grid_params(weight)
    default_enc = scheme.encode(weight)
    default = scheme.decode(default_enc).reshape(weight.shape)
    lower, upper = scheme.grid_neighbours(weight, params)
    fixed = lower == upper
    if mask is not None:
        fixed = fixed | ~mask.to(torch.bool).reshape(weight.shape)
    lower, upper = torch.where(fixed, default, lower), torch.where(fixed, default, upper)
    free = int((~fixed).sum())

    def report(before: float, ada: float, used: str, changed: float = 0.0) -> LayerReport:
        return LayerReport(layer=name, scheme=scheme.describe(), inputs=moments.rows if moments else 0,
                           free_weights=free, changed=changed if used == "adaround" else 0.0,
                           error_before=before, error_adaround=ada,
                           error_after=ada if used == "adaround" else before, used=used)

    objective = _Objective(module, weight, moments) if moments is not None else None
    energy = (objective.constant if objective is not None else 0.0) or 1.0
    error_before = objective.of(default) if objective is not None else 0.0
    if objective is None or free == 0 or error_before <= 1e-12 * energy:
        for _ in range(settings.iters):
            tick()
        return default_enc, report(error_before / energy, error_before / energy, "default")

    lower_m = weight_matrix(module, lower.double())
    span_m = weight_matrix(module, (upper - lower).double())
    free_m = weight_matrix(module, ~fixed)
    rest = torch.where(fixed, 0.5, (weight - lower) / torch.where(fixed, 1.0, upper - lower)).clamp(0.0, 1.0)
    v = (-torch.log((ZETA - GAMMA) / (weight_matrix(module, rest.double()) - GAMMA) - 1.0)).requires_grad_(True)
    optimizer = torch.optim.Adam([v], lr=settings.lr)
    warm = int(settings.warmup * settings.iters)
    for step in range(settings.iters):
        h = _soft(v)
        loss = objective(lower_m + span_m * h) / error_before
        if step >= warm:
            progress = (step - warm) / max(settings.iters - warm - 1, 1)
            beta = settings.beta_start + (settings.beta_end - settings.beta_start) * progress
            loss = loss + settings.reg_weight * (1 - (2 * h[free_m] - 1).abs().pow(beta)).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        tick()
    with torch.no_grad():
        rounded = torch.where(_soft(v) >= 0.5, lower_m + span_m, lower_m)
        if settings.polish:
            rounded = flip_descent(rounded, lower_m, lower_m + span_m, objective)
    enc = scheme.encode_values(rounded.reshape(weight.shape).float(), params)
    chosen = scheme.decode(enc).reshape(weight.shape)
    error_after = objective.of(chosen)
    changed = float((chosen != default).float().mean())
    if error_after >= error_before:
        return default_enc, report(error_before / energy, error_after / energy, "default")
    return enc, report(error_before / energy, error_after / energy, "adaround", changed)


def flip_descent(start: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor, objective: _Objective,
                 max_sweeps: int = 4) -> torch.Tensor:
    """Greedy descent on the exact error over the two-level choice (our addition to AdaRound).

    ``E(Q)`` splits into one binary quadratic problem per output row. Each step flips, in every row at
    once, the weight whose move ``c`` to its other neighbour lowers that row's error most (the change is
    ``2 c r_i + c^2 G_ii`` with ``r = q G - w C^T``), until no flip helps or after ``max_sweeps * fan_in``
    steps. The error never rises, so this only polishes a rounding.

    Args:
        start: a rounding on the grid, ``[groups, rows, fan_in]`` float64.
        lower, upper: the two neighbouring levels of each weight, same layout.
        objective: the layer's error.

    Returns:
        The polished rounding (each element ``lower`` or ``upper``).
    """
    gram = objective.gram
    q = start.clone()
    r = objective.quadratic(q) - objective.linear
    diag = torch.diagonal(gram, dim1=-2, dim2=-1).unsqueeze(1)  # [g, 1, n]: the same for every row
    tolerance = 1e-12 * max(objective.constant, 1e-30)
    movable = upper != lower
    for _ in range(max_sweeps * q.shape[-1]):
        other = torch.where(q == lower, upper, lower)
        move = other - q
        change = torch.where(movable, 2 * move * r + move * move * diag, 0.0)
        best, col = change.min(dim=-1)  # [g, rows]
        g_idx, o_idx = (best < -tolerance).nonzero(as_tuple=True)
        if g_idx.numel() == 0:
            break
        i_idx = col[g_idx, o_idx]
        q[g_idx, o_idx, i_idx] = other[g_idx, o_idx, i_idx]
        r[g_idx, o_idx] += move[g_idx, o_idx, i_idx].unsqueeze(1) * gram[g_idx, i_idx]
    return q
