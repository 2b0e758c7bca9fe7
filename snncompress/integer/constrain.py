"""Make a quantized model's torch float32 path exact, so it agrees with the integer reference by construction.

``quantize --integer-only`` (config key ``integer_only``) calls :func:`make_float32_exact` after the
weights and neuron parameters are quantized. Float32 cannot round where every value of a layer is a
multiple of one power of two and below ``2**24`` of them (:mod:`snncompress.integer.program`'s
certificate), so this puts each layer's values on such a grid:

* int / ternary weight scales (float32, 24-bit mantissas) are rounded to as many mantissa bits as the
  layer's largest accumulator leaves (the codes stay; the weights become the new decoded values);
  power-of-two, APoT and fixed-point steps are powers of two already;
* each bias is rounded (half to even) onto the layer's accumulator grid (weight step times input step);
* a membrane unit that is not a power of two becomes the power of two below it (the threshold then sits
  between levels, as a learned threshold does), the threshold is rounded onto the membrane's grid
  ``2**-F``, beta onto the grid that keeps ``beta * unit`` on it, RLeaky's recurrent weights onto it.

What cannot be made exact this way is refused naming the layer: fp32 weights, a subtract reset with a
beta that is not a power of two (its reset ``Vth / beta`` has no short binary form), a Synaptic alpha
whose fraction bits over T steps outgrow float32, a layer whose sums need more than 24 bits anyway.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import nn

from snncompress.data.loading import DataBundle
from snncompress.errors import ConfigError, UnsupportedLayerError
from snncompress.integer.levels import fraction_bits, integer_levels
from snncompress.models.membrane import install_membrane_quantizer
from snncompress.models.neurons import is_neuron
from snncompress.state import get_state

FLOAT32_BITS = 24


def _round_mantissa(values: np.ndarray, bits: int) -> np.ndarray:
    """``values`` rounded (half to even) to ``bits`` significant bits, as float64 (exact)."""
    mantissa, exponent = np.frexp(values)
    return np.ldexp(np.round(np.ldexp(mantissa, bits)), exponent - bits)


def _on_grid(values: np.ndarray, frac: int) -> np.ndarray:
    """``values`` rounded (half to even) to multiples of ``2**-frac``."""
    return np.ldexp(np.round(np.ldexp(values, frac)), -frac)


def _set(tensor: torch.Tensor, values: np.ndarray) -> bool:
    new = torch.from_numpy(np.asarray(values, dtype=np.float64)).to(tensor.dtype).reshape(tensor.shape)
    changed = not torch.equal(new, tensor.detach())
    with torch.no_grad():
        tensor.copy_(new)
    return changed


def make_float32_exact(model: nn.Module, data: DataBundle) -> dict[str, Any]:
    """Put every layer's values on a grid float32 holds exactly (see the module docstring), in place.

    Args:
        model: a quantized stepwise model (its weights encoded, its membranes quantized).
        data: the data the model will see; its inputs fix the first layer's input grid.

    Returns:
        ``{"changed": {layer: [what]}, "float32_bits": {layer: bits}}`` for the pass history.

    Raises:
        ConfigError: a layer cannot be made exact (which, and why).
    """
    from snncompress.export.layout import leaf_layers, require_sequential
    from snncompress.integer.program import compile_program
    from snncompress.integer.verify import scan_inputs

    try:
        require_sequential(model, "integer_only")
    except UnsupportedLayerError as exc:
        raise ConfigError(str(exc)) from None
    state = get_state(model)
    frac, bound = scan_inputs(data)
    in_frac, in_bound, acc_frac = frac, bound, 0
    changed: dict[str, list[str]] = {}
    steps = data.sample_input().shape[0] if data.is_sequence else data.time_steps
    for name, module in leaf_layers(model):
        notes = changed.setdefault(name, [])
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            acc_frac = _synaptic(name, module, state, in_frac, in_bound, notes)
        elif isinstance(module, (nn.AvgPool1d, nn.AvgPool2d)):
            count = int(np.prod(module.kernel_size))
            in_bound *= count
            in_frac += max(count.bit_length() - 1, 0)
        elif is_neuron(module):
            _neuron(model, name, module, state, acc_frac, notes, steps)
            in_frac, in_bound = 0, 1
    try:
        program = compile_program(model, frac, bound, steps)
    except UnsupportedLayerError as exc:
        raise ConfigError(f"integer_only: {exc}") from None
    for op in program.ops:
        bits = getattr(op, "float32_bits", 0)
        if bits > FLOAT32_BITS:
            why = f"needs {bits} significant bits" if bits < 99 else "rounds its synaptic current or membrane unit"
            raise ConfigError(f"integer_only: layer '{op.name}' {why}; float32 holds 24, so torch and the integer "
                              "reference could disagree (use fewer weight bits, power-of-two leaks, or drop "
                              "integer_only)")
    return {"changed": {k: v for k, v in changed.items() if v},
            "float32_bits": {op.name: op.float32_bits for op in program.ops if hasattr(op, "float32_bits")}}


def _synaptic(name: str, module: nn.Module, state, in_frac: int, in_bound: int, notes: list[str]) -> int:
    """Round the scales and the bias of one layer; returns its accumulator grid's fraction bits."""
    key = f"{name}.weight"
    enc = state.tensors.get(key)
    if enc is None:
        raise ConfigError(f"integer_only: layer '{name}' keeps fp32 weights; quantize them (weight_quant)")
    params = {k: v.detach().cpu().numpy() for k, v in enc.params.items()}
    q, step = integer_levels(enc.scheme, enc.codes.cpu().numpy(), params, f"layer '{name}' weight")
    kind = enc.scheme.get("kind")
    if kind in ("int", "ternary"):
        pname = "scale" if kind == "int" else "alpha"
        out = q.shape[0]
        acc_bits = (int(np.abs(q).reshape(out, -1).sum(axis=1).max(initial=0)) * max(in_bound, 1)).bit_length()
        values = params[pname].astype(np.float64)
        exps = np.frexp(values[values > 0])[1] if np.any(values > 0) else np.zeros(1, dtype=int)
        spread = int(exps.max() - exps.min())
        bits = FLOAT32_BITS - acc_bits - spread - 3  # 2 bits of headroom for the neuron's leak and reset
        if bits < 1:
            raise ConfigError(f"integer_only: layer '{name}' sums up to 2^{acc_bits} weight levels; no {kind} scale "
                              "leaves float32 exact (use fewer weight bits or power-of-two weights)")
        rounded = np.asarray(_round_mantissa(values, bits), dtype=np.float64)
        if not np.array_equal(rounded, values):
            from snncompress.quant.schemes import scheme_from_dict

            new_params = dict(enc.params)
            new_params[pname] = torch.from_numpy(rounded).to(enc.params[pname].dtype).reshape(enc.params[pname].shape)
            enc = replace(enc, params=new_params)
            state.tensors[key] = enc
            with torch.no_grad():
                module.weight.copy_(scheme_from_dict(enc.scheme).decode(enc).reshape(module.weight.shape))
            notes.append(f"{pname} rounded to {bits} mantissa bits")
            q, step = integer_levels(enc.scheme, enc.codes.cpu().numpy(),
                                     {k: v.detach().cpu().numpy() for k, v in enc.params.items()}, name)
    acc_frac = fraction_bits(np.ldexp(np.asarray(step, dtype=np.float64), -in_frac))
    if module.bias is not None and f"{name}.bias" not in state.tensors:
        if _set(module.bias, _on_grid(module.bias.detach().double().numpy(), acc_frac)):
            notes.append(f"bias rounded to multiples of 2^-{acc_frac}")
    return acc_frac


def _neuron(model: nn.Module, name: str, module: nn.Module, state, acc_frac: int, notes: list[str],
            steps: int) -> None:
    from snncompress.quant.membrane import MembraneQuantizer

    settings = state.neurons.get(name, {})
    if "membrane" not in settings:
        raise ConfigError(f"integer_only: neuron layer '{name}' keeps an fp32 membrane; quantize it")
    grid = int(settings.get("membrane_grid", 1))
    unit = np.asarray(settings.get("membrane_unit"), dtype=np.float64)
    pow2 = np.ldexp(1.0, np.floor(np.log2(unit)).astype(int))
    if not np.array_equal(pow2, unit):
        new_unit = float(pow2) if pow2.ndim == 0 else pow2.tolist()
        install_membrane_quantizer(model, name, MembraneQuantizer.from_dict(settings["membrane"]), grid, new_unit)
        notes.append(f"membrane unit {unit.tolist()} -> {new_unit} (a power of two)")
        unit = pow2
    frac = max(acc_frac, fraction_bits(unit))
    if _set(module.threshold, np.maximum(_on_grid(module.threshold.detach().double().numpy(), frac), 2.0**-frac)):
        notes.append(f"threshold rounded to multiples of 2^-{frac}")
    beta = module.beta.detach().double().clamp(0, 1).numpy()
    unit_bits = int(-np.floor(np.log2(unit)).min())  # unit = 2^-u: beta on 2^-(frac - u) keeps beta * unit on 2^-frac
    beta_new = _on_grid(beta, max(frac - unit_bits, 0))
    if _set(module.beta, beta_new):  # beta was clamped to [0, 1], as snnTorch does on every step
        notes.append(f"beta rounded to multiples of 2^-{max(frac - unit_bits, 0)}")
    mechanism = int(module.reset_mechanism_val)
    if mechanism == 0 and getattr(module, "reset_delay", True):
        b = np.clip(module.beta.detach().double().numpy(), 0, 1)
        if np.any((b > 0) & (np.ldexp(1.0, np.round(np.log2(np.where(b > 0, b, 1))).astype(int)) != b)):
            raise ConfigError(f"integer_only: neuron layer '{name}' resets by subtraction with beta "
                              f"{np.unique(b).tolist()[:4]}: the reset Vth / beta has no short binary form; use a "
                              "power-of-two beta (e.g. 0.5) or reset_mechanism zero")
    if type(module).__name__ == "Synaptic":
        alpha = module.alpha.detach().double().clamp(0, 1).numpy()
        grows = fraction_bits(alpha) * max(steps - 1, 0)
        if grows > FLOAT32_BITS // 2:
            raise ConfigError(f"integer_only: neuron layer '{name}' (Synaptic) has alpha "
                              f"{np.unique(alpha).tolist()[:4]}: "
                              f"its synaptic current gains {fraction_bits(alpha)} fraction bits a step ({grows} over "
                              f"{steps} steps), beyond float32; use alpha = 2^-k (e.g. 0.5)")
    if type(module).__name__ == "RLeaky":
        target = module.recurrent.weight if module.all_to_all else module.V
        # weights the quantize pass encoded stay on their codes (the reference reads their levels)
        encoded = module.all_to_all and f"{name}.recurrent.weight" in state.tensors
        if encoded:  # its scales rounded as a synaptic layer's, on its input of spikes
            _synaptic(f"{name}.recurrent", module.recurrent, state, 0, 1, notes)
        elif _set(target, _on_grid(target.detach().double().numpy(), frac)):
            notes.append(f"recurrent weights rounded to multiples of 2^-{frac}")
        if module.all_to_all and module.recurrent.bias is not None:
            _set(module.recurrent.bias, _on_grid(module.recurrent.bias.detach().double().numpy(), frac))
