"""Per-neuron membrane levels chosen on calibration data (``membrane_grid: auto``; issue 16, PTQ on real models).

An int<k> membrane stores ``unit * clip(round(v / unit), low, high)`` with ``unit = Vth / grid``: the same
``grid`` levels per threshold for every neuron of every layer (default ``2^(k-2)``: ``[-2, 1.75] x Vth`` for
int4). That range is relative to each neuron's threshold, so a neuron whose learned threshold is small (say
``Vth = 0.01`` beside ``Vth = 1`` in the same layer) has an absolute range a hundred times narrower, and its
membrane, which swings as far as its neighbours', is clipped most of the time; a learned ``beta`` that is
small makes a subtract reset (``Vth / beta``) overflow the range too.

``auto`` keeps the integer levels and picks, per neuron, ``grid_i = 2^j`` (``j`` in ``-4 .. k - 1``: from 16
thresholds per level to ``2^(k-1)`` levels per threshold) minimising the squared error of the stored membrane
``sum (Q(v) - v)^2`` over calibration data, with the quantizers of the layers before it already installed
(layer by layer, in the order the model calls them). The threshold stays ``grid_i`` levels up for
``grid_i >= 1`` and a power-of-two fraction of a level below that; the unit ``Vth_i / grid_i`` is recorded per
neuron, which is what the file, the integer-only reference and the exporters read.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from snncompress.data.loading import DataBundle
from snncompress.models.membrane import install_membrane_quantizer, stored_membrane
from snncompress.sim.runner import SNNRunner, resolve_layout
from snncompress.state import get_state

MIN_EXPONENT = -4  # grid 1/16: sixteen thresholds per level


def candidate_grids(bits: int) -> list[float]:
    """Levels per threshold tried for an int<bits> membrane: ``2^j``, ``j = -4 .. bits - 1``."""
    return [2.0**j for j in range(MIN_EXPONENT, bits)]


def calibrate_units(model: nn.Module, layers: list[str], data: DataBundle, samples: int,
                    seed: int = 0) -> dict[str, dict[str, float]]:
    """Choose each neuron's membrane unit of ``layers`` (installed quantizers) on ``samples`` of ``data``.

    Returns:
        ``{layer: {"grid_min", "grid_max": levels per threshold chosen, "error_default", "error_auto":
        squared stored-membrane error relative to the default grid's}}``, and reinstalls each layer's
        quantizer with its new units.
    """
    state = get_state(model)
    runner = SNNRunner(model)
    is_sequence = resolve_layout(runner, data.sample_input(), data.time_steps)
    gen = torch.Generator().manual_seed(seed)
    picked = torch.randperm(len(data), generator=gen)[:min(samples, len(data))].sort().values.tolist()
    loader = DataLoader(Subset(data.dataset, picked), batch_size=data.options.batch_size)
    report = {}
    training = model.training
    model.eval()
    try:
        for layer in layers:
            settings = state.neurons[layer]
            module = model.get_submodule(layer)
            low, high = int(settings["membrane"]["levels_low"]), int(settings["membrane"]["levels_high"])
            bits = (high - low + 1).bit_length() - 1
            default = float(settings["membrane_grid"])
            grids = candidate_grids(bits)
            if default not in grids:
                grids.append(default)
            threshold = module.threshold.detach().double()
            errors: torch.Tensor | None = None  # [grids, *threshold's shape]

            def hook(mod, _inputs, output, grids=grids, threshold=threshold, low=low, high=high):
                nonlocal errors
                spikes = output[0] if isinstance(output, tuple) else output
                v = stored_membrane(mod, spikes, mod.mem).detach().double()
                rows = []
                for grid in grids:
                    unit = (threshold / grid).to(v.device)
                    err = ((v / unit).round().clamp(low, high) * unit - v) ** 2
                    rows.append(_reduce_to(err, threshold))
                batch = torch.stack(rows)
                errors = batch if errors is None else errors + batch

            handle = module.register_forward_hook(hook, prepend=True)
            try:
                with torch.no_grad():
                    for x, _ in loader:
                        runner.run(x, is_sequence=is_sequence, time_steps=data.time_steps)
            finally:
                handle.remove()
            if errors is None:
                continue
            choice = torch.tensor(grids, dtype=torch.float64)[errors.argmin(0)]
            unit = threshold / choice
            default_error = float(errors[grids.index(default)].sum())
            chosen_error = float(errors.min(0).values.sum())
            unit_value = float(unit) if unit.dim() == 0 else unit.tolist()
            install_membrane_quantizer(model, layer, _quantizer(settings), int(settings["membrane_grid"]), unit_value)
            report[layer] = {"grid_min": float(choice.min()), "grid_max": float(choice.max()),
                             "error_auto": chosen_error / default_error if default_error > 0 else 0.0}
    finally:
        model.train(training)
    return report


def _quantizer(settings: dict):
    from snncompress.quant.membrane import MembraneQuantizer

    return MembraneQuantizer.from_dict(settings["membrane"])


def _reduce_to(err: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Sum ``err`` over every dimension that ``threshold`` broadcasts along (batch, space, a scalar's all)."""
    if threshold.numel() == 1:
        return err.sum().reshape(threshold.shape)
    while err.dim() > threshold.dim():
        err = err.sum(0)
    dims = [d for d in range(err.dim()) if threshold.shape[d] == 1 and err.shape[d] != 1]
    return err.sum(dim=dims, keepdim=True) if dims else err
