"""Why PTQ lost accuracy, and when to say that QAT is needed (issue 16: PTQ on real models).

PTQ quantizes a trained model as it is: the weights onto the scheme's grid (calibrated), the stored membrane
onto integer levels ``unit = Vth / grid`` apart (per neuron where the thresholds are per neuron) in
``[low, high] x unit``. Two things PTQ cannot repair:

* **Clipping of the stored membrane.** A value outside ``[low, high] x unit`` is stored at the edge, and the
  error is carried into every later step. Subtract reset stores ``v = u - s Vth / beta`` (see
  :mod:`snncompress.models.membrane`), so a neuron whose learned ``beta`` is small (``Vth / beta`` beyond the
  grid's span, e.g. ``beta < 0.27`` for int4 at 4 levels per threshold) loses most of its reset each time it
  fires.
* **Weight error carried by recurrence.** A recurrent layer feeds its own rounding error back every step.

:func:`membrane_clipping` measures the first on the calibration data after quantization (one run with the
quantizers installed, a counting hook in front of each); the pass's calibration report gives each layer's
remaining weight error. :func:`review` turns both into one note naming the layers, when the measured drop
exceeds the config's ``ptq_drop_warning``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from snncompress.data.loading import DataBundle
from snncompress.models.membrane import stored_membrane, unit_tensor
from snncompress.models.neurons import leak_factor
from snncompress.passes.base import PassResult
from snncompress.sim.runner import SNNRunner, resolve_layout
from snncompress.state import get_state

REVIEW_SAMPLES = 256


def membrane_clipping(model: nn.Module, data: DataBundle, samples: int = REVIEW_SAMPLES,
                      seed: int = 0) -> dict[str, dict[str, Any]]:
    """Per quantized neuron layer: how often its stored membrane falls outside the levels (on ``samples``).

    Returns:
        ``{layer: {"clipped": fraction of stored values beyond half a level outside [low, high], "below":
        fraction of those below, "range": [low * unit, high * unit] in units of Vth, "reset_overflow":
        neurons whose subtract reset Vth / beta is wider than the whole level range}}``.
    """
    state = get_state(model)
    layers = {name: s for name, s in state.neurons.items() if "membrane" in s}
    if not layers:
        return {}
    counts = {name: [0, 0, 0] for name in layers}  # clipped, below, total
    handles = []

    def make(name: str, settings: dict):
        low, high = settings["membrane"]["levels_low"], settings["membrane"]["levels_high"]
        unit = unit_tensor(settings["membrane_unit"])

        def hook(module, _inputs, output):
            spikes = output[0] if isinstance(output, tuple) else output
            levels = stored_membrane(module, spikes, module.mem).detach() / (
                unit.to(module.mem.device) if isinstance(unit, torch.Tensor) else unit)
            below = int((levels < low - 0.5).sum())
            counts[name][0] += below + int((levels > high + 0.5).sum())
            counts[name][1] += below
            counts[name][2] += levels.numel()

        return hook

    try:
        for name, settings in layers.items():
            # in front of the quantizer's own hook, which replaces the membrane with its stored levels
            handles.append(model.get_submodule(name).register_forward_hook(make(name, settings), prepend=True))
        runner = SNNRunner(model)
        is_sequence = resolve_layout(runner, data.sample_input(), data.time_steps)
        gen = torch.Generator().manual_seed(seed)
        picked = torch.randperm(len(data), generator=gen)[:min(samples, len(data))].sort().values.tolist()
        training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for x, _ in DataLoader(Subset(data.dataset, picked), batch_size=data.options.batch_size):
                    runner.run(x, is_sequence=is_sequence, time_steps=data.time_steps)
        finally:
            model.train(training)
    finally:
        for handle in handles:
            handle.remove()
    out = {}
    for name, settings in layers.items():
        clipped, below, total = counts[name]
        low, high = settings["membrane"]["levels_low"], settings["membrane"]["levels_high"]
        # the unit in thresholds: 1 / grid, unless membrane_grid auto gave the neurons different ones
        ratio = (torch.as_tensor(settings["membrane_unit"], dtype=torch.float64)
                 / model.get_submodule(name).threshold.detach().double().cpu()).unique()
        span = None if ratio.numel() != 1 else [low * float(ratio), high * float(ratio)]
        out[name] = {"clipped": clipped / max(total, 1), "below": below / max(clipped, 1), "range": span,
                     "reset_overflow": _reset_overflow(model.get_submodule(name), settings)}
    return out


def _reset_overflow(module: nn.Module, settings: dict) -> int:
    """Neurons whose subtract reset ``Vth / beta`` exceeds the whole level range ``(high - low) x unit``."""
    if int(module.reset_mechanism_val) != 0 or not getattr(module, "reset_delay", True):
        return 0
    levels = settings["membrane"]["levels_high"] - settings["membrane"]["levels_low"]
    leak = leak_factor(module).detach().double().cpu()
    reset = module.threshold.detach().double().cpu() / torch.where(leak > 0, leak, 1.0)
    unit = torch.as_tensor(settings["membrane_unit"], dtype=torch.float64)
    overflow = (leak > 0) & (reset > levels * unit)
    return int(overflow.expand(torch.broadcast_shapes(overflow.shape, unit.shape)).sum())


def review(config: Any, metrics: dict[str, Any]) -> PassResult:
    """After the accuracy is measured: a note when PTQ lost more than ``config.ptq_drop_warning`` points.

    The note names the layers that clip their stored membrane most (and the neurons whose reset overflows),
    the layer with the largest remaining weight error, and the recurrent layers; it ends with the advice to
    run QAT. ``metrics["ptq_review"]`` holds the same as data.
    """
    drop = metrics.get("accuracy_drop")
    bound = getattr(config, "ptq_drop_warning", None)
    if config.mode != "ptq" or drop is None or bound is None or drop <= bound:
        return PassResult()
    causes: list[str] = []
    clipping = metrics.get("membrane_clipping") or {}
    worst = sorted(((v["clipped"], k) for k, v in clipping.items() if v["clipped"] >= 0.01), reverse=True)
    for fraction, layer in worst[:2]:
        info = clipping[layer]
        levels = "its per-neuron levels" if info["range"] is None else \
            "its levels [{:g}, {:g}] x Vth".format(*info["range"])
        text = (f"neuron layer '{layer}' stores {fraction:.1%} of its membrane values outside {levels} "
                f"({info['below']:.0%} of them below, where a silent neuron loses little)")
        if info["reset_overflow"]:
            text += (f" ({info['reset_overflow']} neurons with a beta so small that the subtract reset "
                     f"Vth / beta is wider than that range)")
        causes.append(text)
    layers = (metrics.get("calibration") or {}).get("layers") or {}
    if layers:
        name, rep = max(layers.items(), key=lambda kv: kv[1]["error_after"])
        if rep["error_after"] >= 0.01:
            causes.append(f"layer '{name}' keeps the largest weight error ({rep['error_after']:.3f} of its output "
                          f"energy after calibration)")
    recurrent = [n for n in metrics.get("layers_quantized", []) if n.endswith(".recurrent")]
    if recurrent:
        causes.append(f"recurrent weights ({', '.join(recurrent)}) feed their rounding error back every step")
    remedies = ["run with --mode qat (fine-tunes with the quantizers in place)"]
    if worst and getattr(config, "membrane_grid", None) != "auto":
        remedies.append("or --membrane-grid auto (per-neuron levels from calibration data) or more membrane bits "
                        "for the clipping layers")
    elif worst:
        remedies.append("or more membrane bits for the clipping layers")
    note = (f"PTQ lost {drop:.2f} points (more than the {bound:g} it is expected to keep)"
            + (f"; {'; '.join(causes)}" if causes else "") + f"; {', '.join(remedies)}")
    return PassResult(metrics={"ptq_review": {"drop": drop, "bound": bound, "causes": causes,
                                              "advice": "qat", "recurrent_layers": recurrent}},
                      notes=[note])

