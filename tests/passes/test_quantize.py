"""The quantize pass (issue 4): PTQ and QAT on both model styles and every neuron type.

What is checked, on the tiny models of ``tests/models.py`` (T <= 4, at most 2 QAT epochs):

* the stored codes (in memory and in the file) are the scheme's encoding of the weights, and the
  model computes with exactly the values they decode to;
* the stored membrane is an integer multiple of Vth / grid inside [low, high]; a very fine grid
  gives the spikes of the unquantized snnTorch model (``models/membrane.py``'s fidelity property);
* snnTorch's delayed reset is off on a quantized neuron and the hook applies the reset (one neuron,
  three steps, checked against the equations of the ``models/membrane.py`` docstring);
* per-layer overrides and targets, fixed-point threshold and beta, QAT determinism and best epoch,
  the SGS gradient through the stored membrane, save -> load, the pass history.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import snntorch as snn
import torch
from safetensors import safe_open
from torch import nn
from torch.utils.data import TensorDataset

import snncompress.models.membrane as membrane_module
import snncompress.passes.quantize as quantize_module
import snncompress.sim.training as training_module
from snncompress.data.loading import DataBundle, DataOptions
from snncompress.errors import ConfigError
from snncompress.fileformat.compressed import SEP, read_metadata, rounded_figures, save_compressed
from snncompress.fileformat.loading import load_model
from snncompress.fileformat.packing import unpack_codes
from snncompress.models.fold import fold_batchnorm
from snncompress.models.layers import synaptic_layers
from snncompress.models.membrane import no_delayed_reset
from snncompress.models.neurons import neuron_layers, neuron_type
from snncompress.passes.base import PassContext
from snncompress.passes.quantize import QuantizeConfig
from snncompress.pipeline.run import RunOptions, run_recipe, run_single_pass
from snncompress.quant.membrane import MembraneQuantizer, default_grid
from snncompress.quant.schemes import parse_weight_scheme
from snncompress.sim.constraints import attached
from snncompress.sim.evaluate import evaluate
from snncompress.sim.runner import SNNRunner
from snncompress.sim.training import spike_count_loss
from snncompress.state import get_state
from tests.models import CLASSES, NO_STORED_MEMBRANE_MODELS, TINY_MODELS, T

MODELS = list(TINY_MODELS)
# models whose neurons keep a membrane to quantize (Alpha recomputes its membrane every step)
STORED = [n for n in MODELS if n not in NO_STORED_MEMBRANE_MODELS]
OPTIONS = RunOptions(hardware=False)
# PTQ with the scheme's own rounding (no adaptive-rounding calibration, when the pass has it): the
# codes are then exactly ``scheme.encode(w)``, and the run is fast
PLAIN = {"calibration": "none"} if "calibration" in QuantizeConfig.model_fields else {}
STEPS = 4  # time steps a static input is presented for in the direct checks


# -- helpers -------------------------------------------------------------------------------------------

def bundle(name: str, n: int = 8, seed: int = 0) -> DataBundle:
    """``n`` example inputs of a tiny model with labels 0..3, batches of 4, T = 3."""
    model = TINY_MODELS[name]
    x, y = model.example_inputs(n, seed), torch.arange(n) % CLASSES
    return DataBundle(f"{name}:{seed}", TensorDataset(x, y), model.is_sequence, T, CLASSES,
                      DataOptions(time_steps=T, batch_size=4, seed=seed))


def quantize(name: str, config: dict, *, seed: int = 0, train: bool | None = None):
    """Load ``tests.models:<name>`` and run the quantize pass on it; returns (model, report)."""
    model = load_model(TINY_MODELS[name].ref)
    if train is None:
        train = config.get("mode") == "qat"
    ctx = PassContext(data=bundle(name), train_data=bundle(name, seed=1) if train else None, seed=seed)
    return model, run_single_pass("quantize", model, config, ctx, OPTIONS)


def run(model: nn.Module, name: str, x: torch.Tensor | None = None):
    x = TINY_MODELS[name].example_inputs(16, seed=5) if x is None else x
    with torch.no_grad():
        return SNNRunner(model).run(x, is_sequence=TINY_MODELS[name].is_sequence, time_steps=STEPS)


def weights_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: m.weight.detach().clone() for n, m in synaptic_layers(model)}


def file_codes(path: Path, name: str) -> torch.Tensor:
    """The codes of quantized tensor ``name`` as the file stores them, unpacked."""
    spec = read_metadata(path)["tensors"][name]
    with safe_open(str(path), framework="pt") as f:
        packed = f.get_tensor(name + SEP + "codes")
    return unpack_codes(packed, spec["bits"], math.prod(spec["shape"])).view(spec["shape"])


class StoredMembrane:
    """A forward hook registered after the quantizer's: sees each step's stored membrane."""

    def __init__(self, model: nn.Module):
        self.values: dict[str, list[torch.Tensor]] = {}
        self.handles = [module.register_forward_hook(self._hook(name)) for name, module in neuron_layers(model)]

    def _hook(self, name):
        def hook(module, _inputs, _output):
            self.values.setdefault(name, []).append(module.mem.detach().clone())
        return hook


class PreResetMembrane:
    """A runner observer: each step's u[t], the membrane compared with the threshold."""

    def __init__(self, keep_graph: bool = False):
        self.values: dict[str, list[torch.Tensor]] = {}
        self.keep_graph = keep_graph

    def on_step(self, layer, module, step, spikes, membrane):
        self.values.setdefault(layer, []).append(membrane if self.keep_graph else membrane.detach().clone())


# -- PTQ and QAT on every tiny model -------------------------------------------------------------------

def test_tiny_models_cover_both_styles_and_every_neuron_type():
    assert {m.style for m in TINY_MODELS.values()} == {"stepwise", "sequence"}
    assert {t for m in TINY_MODELS.values() for t in m.neuron_types} == {
        "Leaky", "Synaptic", "RLeaky", "RSynaptic", "Lapicque", "Alpha"}


@pytest.mark.parametrize("mode", ["ptq", "qat"])
@pytest.mark.parametrize("name", MODELS)
def test_quantize_every_model(name, mode):
    """Every synaptic layer ends on its codes, every neuron layer stores a ternary membrane."""
    config = {"mode": mode, "epochs": 1} if mode == "qat" else dict(PLAIN)
    stored = name not in NO_STORED_MEMBRANE_MODELS
    if not stored:
        config["membrane_quant"] = "fp32"
    model, report = quantize(name, config)
    state = get_state(model)
    metrics = report.steps[0]["metrics"]
    # an all-to-all recurrent Linear (RLeaky, RSynaptic) is quantized with its neuron layer's config
    syn = [n for n, _ in synaptic_layers(model)] + [
        f"{n}.recurrent" for n, m in neuron_layers(model) if getattr(m, "all_to_all", False)]
    neurons = [n for n, _ in neuron_layers(model)]
    assert metrics["mode"] == mode
    assert metrics["layers_quantized"] == syn
    assert metrics["neuron_layers_quantized"] == (neurons if stored else [])
    assert [neuron_type(m) for _, m in neuron_layers(model)] == list(TINY_MODELS[name].neuron_types)
    pot4 = parse_weight_scheme("pot4")
    for layer in syn:
        enc = state.tensors[f"{layer}.weight"]
        assert enc.bits == 4 and enc.scheme == pot4.to_dict()
        assert torch.equal(model.get_submodule(layer).weight.detach(), pot4.decode(enc))
    for layer in neurons if stored else []:
        assert state.neurons[layer]["membrane"] == MembraneQuantizer.ternary().to_dict()
        assert state.neurons[layer]["membrane_grid"] == 1
    assert metrics["weight_bits_after"] * 8 == metrics["weight_bits_before"]  # 4 bits instead of 32
    assert report.after["accuracy"] == metrics["accuracy_after"]
    assert report.before["accuracy"] == metrics["accuracy_before"]
    if mode == "qat":
        assert metrics["best_epoch"] in (0, 1) and len(metrics["epochs"]) == 1


def test_ptq_default_calibration_still_stores_the_weights_codes():
    """The pass's default PTQ (with whatever calibration it does) leaves weights == decode(codes)."""
    model, report = quantize("tutorial_net", {"weight_quant": "int4", "calibration_iters": 5}
                             if "calibration" in QuantizeConfig.model_fields else {"weight_quant": "int4"})
    state = get_state(model)
    for layer, module in synaptic_layers(model):
        enc = state.tensors[f"{layer}.weight"]
        assert torch.equal(module.weight.detach(), parse_weight_scheme("int4").decode(enc))
    assert "calibration" in report.steps[0]["metrics"] or not PLAIN


SCHEMES = ["pot4", "pot2", "apot4", "int4", "int8", "ternary", "fixed2.5", ("int4", "truncate"),
           ("fixed1.6", "truncate")]


CODE_CASES = [("leaky_mlp", s) for s in SCHEMES] + [("conv2d_net", "pot4"), ("conv2d_net", ("int8", "truncate")),
                                                     ("tutorial_net", "apot4"), ("tutorial_net", "ternary")]


@pytest.mark.parametrize("name, spec", CODE_CASES,
                         ids=[f"{n}-{s if isinstance(s, str) else '-'.join(s)}" for n, s in CODE_CASES])
def test_saved_codes_are_the_schemes_encoding(tmp_path, name, spec):
    weight_quant, rounding = (spec, "nearest") if isinstance(spec, str) else spec
    reference = load_model(TINY_MODELS[name].ref)
    fold_batchnorm(reference)  # the pass folds Conv + BatchNorm first (issue 17): its codes encode the folded weights
    original = weights_of(reference)
    model, _ = quantize(name, {**PLAIN, "weight_quant": weight_quant, "rounding": rounding})
    path = save_compressed(model, tmp_path / "q.safetensors")
    scheme = parse_weight_scheme(weight_quant, rounding=rounding)
    state = get_state(model)
    for layer, w in original.items():
        expected = scheme.encode(w)
        stored = state.tensors[f"{layer}.weight"]
        assert torch.equal(stored.codes, expected.codes), layer
        assert stored.params.keys() == expected.params.keys()
        assert all(torch.equal(stored.params[k], expected.params[k]) for k in expected.params)
        assert torch.equal(file_codes(path, f"{layer}.weight").to(expected.codes.dtype), expected.codes), layer
        assert torch.equal(model.get_submodule(layer).weight.detach(), scheme.quantize(w))
        assert read_metadata(path)["tensors"][f"{layer}.weight"]["bits"] == scheme.code_bits


def test_stochastic_rounding_is_seeded():
    spec = {**PLAIN, "weight_quant": "fixed1.4", "rounding": "stochastic"}
    first, again, other = (quantize("leaky_mlp", spec, seed=s)[0] for s in (3, 3, 4))
    codes = [get_state(m).tensors["0.weight"].codes for m in (first, again, other)]
    assert torch.equal(codes[0], codes[1]) and not torch.equal(codes[0], codes[2])
    scheme = parse_weight_scheme("fixed1.4", rounding="stochastic")
    assert torch.equal(first.get_submodule("0").weight.detach(), scheme.decode(get_state(first).tensors["0.weight"]))


# -- the stored membrane -------------------------------------------------------------------------------

MEMBRANES = [  # (config, levels low..high, grid)
    ({"membrane_quant": "ternary"}, (-1, 1), 1),
    ({"membrane_quant": "int4"}, (-8, 7), 4),
    ({"membrane_quant": "int3", "clip": -1}, (-2, 3), 2),
    ({"membrane_quant": "int8", "membrane_grid": 16, "clip": -2}, (-32, 127), 16),
]


MEMBRANE_CASES = [(name, m) for name in STORED for m in MEMBRANES[:2]] + [  # clip and grid on a few models
    (name, m) for name in ("synaptic_mlp", "rleaky_mlp", "zero_reset_mlp", "tutorial_sequence_net")
    for m in MEMBRANES[2:]]


@pytest.mark.parametrize("name, config, levels, grid", [(n, *m) for n, m in MEMBRANE_CASES],
                         ids=[f"{n}-{m[0]['membrane_quant']}-{m[2]}" for n, m in MEMBRANE_CASES])
def test_stored_membrane_is_on_the_integer_grid(name, config, levels, grid):
    model, _ = quantize(name, {**PLAIN, "weight_quant": "fp32", **config})
    low, high = levels
    recorder = StoredMembrane(model)
    run(model, name)
    seen = set()
    for layer, module in neuron_layers(model):
        assert get_state(model).neurons[layer]["membrane_grid"] == grid
        unit = module.threshold.detach() / grid
        for stored in recorder.values[layer]:
            levels_of = stored / unit
            assert torch.allclose(levels_of, levels_of.round(), atol=1e-4), layer
            assert levels_of.round().min() >= low and levels_of.round().max() <= high, layer
            seen.update(levels_of.round().unique().tolist())
    assert len(seen) >= 3  # the check saw more than one level (the layers fire and leak)


def test_default_grid_is_documented():
    assert [default_grid(s) for s in ("ternary", "int2", "int3", "int4", "int8", "int16")] == [1, 1, 2, 4, 64, 16384]


FINE = {**PLAIN, "membrane_quant": "int16", "membrane_grid": 4096, "weight_quant": "fp32"}


def observe_run(model: nn.Module, name: str, x: torch.Tensor):
    """Output, and per layer each step's spikes and pre-reset membrane u[t]."""
    observer = Recorded()
    runner = SNNRunner(model)
    with torch.no_grad(), runner.observe(observer):
        out = runner.run(x, is_sequence=TINY_MODELS[name].is_sequence, time_steps=STEPS)
    return out, observer


class Recorded:
    def __init__(self):
        self.spikes: dict[str, list[torch.Tensor]] = {}
        self.membrane: dict[str, list[torch.Tensor]] = {}

    def on_step(self, layer, module, step, spikes, membrane):
        self.spikes.setdefault(layer, []).append(spikes.clone())
        self.membrane.setdefault(layer, []).append(membrane.clone())


@pytest.mark.parametrize("name", STORED)
def test_fine_grid_gives_the_snntorch_output_spikes(name):
    """int16 with 4096 levels per threshold (Vth/4096 steps over [-8, 8) Vth): the output spikes of the
    unquantized snnTorch model."""
    x = TINY_MODELS[name].example_inputs(16, seed=5)
    reference, _ = observe_run(load_model(TINY_MODELS[name].ref), name, x)
    quantized, _ = observe_run(quantize(name, FINE)[0], name, x)
    assert reference.spikes.sum() > 0
    assert torch.equal(reference.spikes, quantized.spikes)


@pytest.mark.parametrize("name", [n for n in STORED if n not in ("conv2d_net", "one_step_conv_net")])
def test_fine_grid_tracks_the_snntorch_membrane_in_every_layer(name):
    """Every layer's spikes agree and u[t] stays within the accumulated rounding error
    ``sum_k beta^k * unit / 2 = beta / (1 - beta) * unit / 2`` of snnTorch's, on inputs whose every
    neuron stays further than that from its threshold (conv2d_net has neurons within 1e-4 Vth of it
    on every batch tried, so only its output spikes are compared above; one_step_conv_net's beta 0.99999
    makes the bound 20 Vth, which no input keeps clear)."""
    x = TINY_MODELS[name].example_inputs(8, seed=1)
    model = quantize(name, FINE)[0]
    _, ref = observe_run(load_model(TINY_MODELS[name].ref), name, x)
    _, got = observe_run(model, name, x)
    for layer, module in neuron_layers(model):
        beta, vth = float(module.beta.detach().max()), float(module.threshold.detach().max())
        bound = beta / (1 - beta) * vth / 4096 / 2 + 1e-5
        margin = min(float((u - module.threshold.detach()).abs().min()) for u in ref.membrane[layer])
        assert margin > bound, f"{layer}: a neuron comes within {margin} of its threshold; pick other inputs"
        assert all(torch.equal(a, b) for a, b in zip(ref.spikes[layer], got.spikes[layer], strict=True)), layer
        error = max(float((a - b).abs().max()) for a, b in zip(ref.membrane[layer], got.membrane[layer], strict=True))
        assert error <= bound, layer


def test_an_alpha_membrane_is_refused_with_the_reason():
    with pytest.raises(ConfigError, match=r"neuron layer '1' is an Alpha neuron: its membrane is computed afresh "
                                          r"at every step .* membrane_quant fp32"):
        quantize("alpha_mlp", dict(PLAIN))


def test_lapicque_stored_membrane_uses_its_rc_leak_not_its_beta():
    """Lapicque leaks by 1 - dt/(RC) (0.75 for R = 5, C = 0.8), not by its beta buffer exp(-dt/(RC)): the
    stored membrane subtracts Vth / 0.75 after a spike, so 0.75 * v = 0.75 * u - Vth."""
    from snncompress.models.membrane import stored_membrane

    neuron = snn.Lapicque(R=5.0, C=0.8, init_hidden=True)
    u, s = torch.tensor([1.5, 0.4]), torch.tensor([1.0, 0.0])
    assert torch.allclose(stored_membrane(neuron, s, u), torch.tensor([1.5 - 1 / 0.75, 0.4]))


def test_fine_grid_qat_gradient_is_snntorchs():
    """With a fine grid the surrogate gradient of training equals snnTorch's own (whose reset signal
    is detached); a reset that carried gradient would change the training signal."""
    name = "subtract_reset_mlp"
    x, y = TINY_MODELS[name].example_inputs(16, seed=5), torch.arange(16) % CLASSES
    grads = []
    for quantized in (False, True):
        model = load_model(TINY_MODELS[name].ref)
        if quantized:
            run_single_pass("quantize", model, {**PLAIN, "membrane_quant": "int16", "membrane_grid": 4096,
                                                "weight_quant": "fp32"}, PassContext(data=bundle(name)),
                            RunOptions(hardware=False, measure=False))
        model.train()
        spike_count_loss(SNNRunner(model).run(x, is_sequence=False, time_steps=STEPS), y).backward()
        grads.append(model.get_submodule("0").weight.grad)
    assert grads[0].abs().sum() > 0
    assert torch.allclose(grads[0], grads[1], rtol=1e-2, atol=1e-2 * float(grads[0].abs().max()))


# -- one neuron by hand ----------------------------------------------------------------------------------

def one_neuron(reset: str) -> nn.Sequential:
    """Linear(1 -> 1, weight 1): the input is the current I[t]; beta 0.5, Vth 1."""
    linear = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        linear.weight.fill_(1.0)
    return nn.Sequential(linear, snn.Leaky(beta=0.5, threshold=1.0, reset_mechanism=reset, init_hidden=True,
                                           output=True)).eval()


# u[t] = beta * u_stored[t-1] + I[t];  s[t] = H(u[t] - Vth)
# v[t] = u[t] - s[t] * Vth / beta (subtract) or u[t] * (1 - s[t]) (zero);  u_stored[t] = unit * clip(round(v / unit))
HAND = {
    # ternary, subtract: v = 0.6 -> 1; u = 0.5 + 0.55 = 1.05 fires, v = 1.05 - 2 = -0.95 -> -1; u = -0.5 + 0.1 -> 0
    "subtract-ternary": ("subtract", {"membrane_quant": "ternary"}, [0.6, 0.55, 0.1],
                         [0.6, 1.05, -0.4], [0, 1, 0], [1.0, -1.0, 0.0]),
    # ternary, zero: v = 0.6 -> 1; u = 1.05 fires, v = 0 -> 0; u = 0 + 0.7 -> 1
    "zero-ternary": ("zero", {"membrane_quant": "ternary"}, [0.6, 0.55, 0.7],
                     [0.6, 1.05, 0.7], [0, 1, 0], [1.0, 0.0, 1.0]),
    # int4 (unit Vth/4, levels -8..7), subtract: u = 1.3 fires, v = -0.7 -> -3 units; u = -0.375 + 0.2 = -0.175
    # -> -1 unit; u = -0.125 + 0.9 = 0.775 -> 3 units
    "subtract-int4": ("subtract", {"membrane_quant": "int4"}, [1.3, 0.2, 0.9],
                      [1.3, -0.175, 0.775], [1, 0, 0], [-0.75, -0.25, 0.75]),
    # int4 clipped at -0.5 Vth (level -2): v = -0.7 -> -2 units; u = -0.25 + 0.2 = -0.05 -> 0; u = 0.9 -> 4 units
    "subtract-int4-clip": ("subtract", {"membrane_quant": "int4", "clip": -0.5}, [1.3, 0.2, 0.9],
                           [1.3, -0.05, 0.9], [1, 0, 0], [-0.5, 0.0, 1.0]),
}


def quantize_one_neuron(reset: str, config: dict) -> nn.Sequential:
    model = one_neuron(reset)
    x = torch.rand(4, 3, 1, generator=torch.Generator().manual_seed(0))
    data = DataBundle("currents", TensorDataset(x, torch.zeros(4, dtype=torch.long)), True, 3, 1,
                      DataOptions(time_steps=3, batch_size=4))
    run_single_pass("quantize", model, {**PLAIN, "weight_quant": "fp32", **config}, PassContext(data=data),
                    RunOptions(hardware=False, measure=False))
    return model


@pytest.mark.parametrize("case", list(HAND))
def test_one_neuron_by_hand(case):
    reset, config, currents, u_expected, s_expected, stored_expected = HAND[case]
    model = quantize_one_neuron(reset, config)
    neuron = model[1]
    assert neuron.mem_reset is no_delayed_reset  # snnTorch's delayed reset is off
    observer = PreResetMembrane()
    runner = SNNRunner(model)
    runner.reset()
    spikes, stored = [], []
    with torch.no_grad(), runner.observe(observer):
        for current in currents:
            spk, mem = model(torch.tensor([[current]]))
            spikes.append(float(spk))
            stored.append(float(mem))
            assert float(neuron.mem) == float(mem)  # the stored value is what the neuron carries
            assert float(neuron.reset) == 0.0  # and snnTorch subtracts nothing more on the next step
    assert spikes == s_expected
    assert [float(u) for u in observer.values["1"]] == pytest.approx(u_expected, abs=1e-6)
    assert stored == pytest.approx(stored_expected, abs=1e-6)


def test_one_neuron_quantized_spikes_differ_from_fp32():
    """The ternary case above fires where snnTorch in fp32 does not (u = 0.3 + 0.55 = 0.85 < 1):
    the spikes come from the stored, quantized membrane."""
    reference = one_neuron("subtract")
    SNNRunner(reference).reset()
    with torch.no_grad():
        fp32 = [float(reference(torch.tensor([[c]]))[0]) for c in (0.6, 0.55, 0.1)]
    assert fp32 == [0, 0, 0]


def test_sgs_gradient_of_one_neuron_through_time():
    """du[1]/dI[0] = beta * dQ/dv at v[0] (no spike at t = 0): the SGS sum of sigmoid derivatives."""
    model = quantize_one_neuron("subtract", {"membrane_quant": "ternary"})
    model.train()
    observer = PreResetMembrane(keep_graph=True)
    runner = SNNRunner(model)
    runner.reset()
    current = torch.tensor([[0.6]], requires_grad=True)
    with runner.observe(observer):
        model(current)
        model(torch.tensor([[0.2]]))
    (grad,) = torch.autograd.grad(observer.values["1"][1].sum(), current)
    quantizer = MembraneQuantizer.ternary()
    t_s = quantizer.smoothness

    def dsigmoid(z: float) -> float:
        s = 1 / (1 + math.exp(-z))
        return s * (1 - s)

    exact = sum(dsigmoid((0.6 - b) / t_s) / t_s for b in (-0.5, 0.5))  # boundaries k + 0.5, k = -1, 0
    assert float(grad) == pytest.approx(0.5 * exact, abs=0.5 * quantizer.max_surrogate_error + 1e-6)
    assert float(grad) > 0.1


def test_qat_gradient_reaches_the_first_layer_weight(monkeypatch):
    """Inside QAT (fake-quantized pot4 weights, ternary stored membrane), the loss has a finite, nonzero
    gradient with respect to the first layer's latent fp32 weight."""
    import snncompress.passes.quantize as quantize_module

    real_train = quantize_module.train
    seen = {}

    def train(model, train_data, val_data, config, **kwargs):
        layer = model.get_submodule("0")
        seen["membranes"] = {k: v["membrane"] for k, v in get_state(model).neurons.items()}
        model.train()
        x, y = next(iter(train_data.loader()))
        with attached(model, kwargs["constraints"]):  # QAT's fake quantization, as train() attaches it
            out = SNNRunner(model).run(x, is_sequence=train_data.is_sequence, time_steps=train_data.time_steps)
            spike_count_loss(out, y).backward()
            seen["grad"] = layer.parametrizations.weight.original.grad.clone()
        model.zero_grad(set_to_none=True)
        return real_train(model, train_data, val_data, config, **kwargs)

    monkeypatch.setattr(quantize_module, "train", train)
    quantize("leaky_mlp", {"mode": "qat", "epochs": 1, "weight_quant": "pot4", "membrane_quant": "ternary"})
    assert seen["membranes"] == {"1": MembraneQuantizer.ternary().to_dict(), "3": MembraneQuantizer.ternary().to_dict()}
    assert torch.isfinite(seen["grad"]).all() and seen["grad"].abs().sum() > 0


def test_sgs_gradient_reaches_the_first_layer_only_through_the_membrane(monkeypatch):
    """Input at t = 0 only, loss on the spikes of t >= 1: the first layer's weight gets its gradient
    through the ternary stored membrane (SGS), and none when the stored membrane is detached."""
    name = "leaky_mlp"
    x = torch.zeros(8, 3, 8)
    x[:, 0] = TINY_MODELS[name].example_inputs(8, seed=2) * 3
    y = torch.arange(8) % CLASSES

    def first_layer_grad() -> torch.Tensor:
        model, _ = quantize(name, {**PLAIN, "weight_quant": "pot4", "membrane_quant": "ternary"})
        model.train()
        out = SNNRunner(model).run(x, is_sequence=True, time_steps=3)
        torch.nn.functional.cross_entropy(out.spikes[1:].sum(0), y).backward()
        return model.get_submodule("0").weight.grad

    grad = first_layer_grad()
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    real = membrane_module.quantize_stored
    monkeypatch.setattr(membrane_module, "quantize_stored", lambda *a: real(*a).detach())
    assert first_layer_grad().abs().sum() == 0


# -- overrides, targets, neuron parameters ---------------------------------------------------------------

def test_override_puts_one_layer_at_pot8():
    model, report = quantize("leaky_mlp", {**PLAIN, "weight_quant": "pot4", "overrides": [
        {"targets": ["0"], "weight_quant": "pot8"}, {"targets": ["re:^3$"], "membrane_quant": "int4"}]})
    state = get_state(model)
    assert state.tensors["0.weight"].bits == 8 and state.tensors["0.weight"].scheme["bits"] == 8
    assert state.tensors["2.weight"].bits == 4 and state.tensors["2.weight"].scheme["bits"] == 4
    assert state.neurons["1"]["membrane"] == MembraneQuantizer.ternary().to_dict()
    assert state.neurons["3"]["membrane"]["levels_low"] == -8 and state.neurons["3"]["membrane_grid"] == 4
    assert report.steps[0]["metrics"]["weight_bits_after"] == 12 * 8 * 8 + 4 * 12 * 4
    assert report.steps[0]["config"]["overrides"][0] == {"targets": ["0"], "weight_quant": "pot8"}


def test_overrides_from_a_recipe_document():
    model = load_model(TINY_MODELS["conv2d_net"].ref)
    recipe = {"version": 1, "passes": [{"pass": "quantize", **PLAIN, "weight_quant": "pot4", "overrides": [
        {"targets": ["0", "9"], "weight_quant": "int8"}]}]}
    run_recipe(model, recipe, PassContext(data=bundle("conv2d_net")), OPTIONS)
    bits = {k: v.bits for k, v in get_state(model).tensors.items()}
    assert bits == {"0.weight": 8, "5.weight": 4, "9.weight": 8}


def test_targets_limit_the_pass():
    original = load_model(TINY_MODELS["leaky_mlp"].ref)
    model, report = quantize("leaky_mlp", {**PLAIN, "targets": ["0", "1"]})
    state = get_state(model)
    assert set(state.tensors) == {"0.weight"} and set(state.neurons) == {"1"}
    assert torch.equal(model.get_submodule("2").weight, original.get_submodule("2").weight)
    assert model.get_submodule("3").mem_reset is not no_delayed_reset
    metrics = report.steps[0]["metrics"]
    assert metrics["layers_quantized"] == ["0"] and metrics["neuron_layers_quantized"] == ["1"]


def test_fp32_override_is_not_reported_as_quantized():
    model, report = quantize("leaky_mlp", {**PLAIN, "overrides": [{"targets": ["2"], "weight_quant": "fp32"}]})
    assert "2.weight" not in get_state(model).tensors
    assert report.steps[0]["metrics"]["weight_bits_after"] == 12 * 8 * 4 + 4 * 12 * 32
    assert report.steps[0]["metrics"]["layers_quantized"] == ["0"]


def test_unknown_target_names_the_layer():
    with pytest.raises(ConfigError, match="did you mean '2'"):
        quantize("leaky_mlp", {**PLAIN, "targets": ["2x"]})


def test_no_neurons_in_targets_is_refused():
    with pytest.raises(ConfigError, match="no neuron layers"):
        quantize("leaky_mlp", {**PLAIN, "targets": ["0"]})


@pytest.mark.parametrize("name", ["subtract_reset_mlp", "zero_reset_mlp", "synaptic_mlp", "tutorial_net"])
def test_neuron_quant_puts_threshold_and_beta_on_the_fixed_point_grid(tmp_path, name):
    original = {n: (m.threshold.detach().clone(), m.beta.detach().clone())
                for n, m in neuron_layers(load_model(TINY_MODELS[name].ref))}
    model, _ = quantize(name, {**PLAIN, "neuron_quant": "fixed2.6"})
    state = get_state(model)
    scheme = parse_weight_scheme("fixed2.6")
    for layer, module in neuron_layers(model):
        for pname, before in zip(("threshold", "beta"), original[layer], strict=True):
            value = getattr(module, pname).detach()
            assert torch.equal(value * 64, (value * 64).round()), (layer, pname)
            assert (value - before).abs().max() <= 2**-7
            enc = state.tensors[f"{layer}.{pname}"]
            assert enc.bits == 9 and torch.equal(scheme.decode(enc).reshape(value.shape), value)
    if name == "subtract_reset_mlp":  # per-neuron threshold 0.8 -> 51/64
        assert torch.equal(model.get_submodule("1").threshold.detach(), torch.full((12,), 51 / 64))
    path = save_compressed(model, tmp_path / "q.safetensors")
    loaded = load_model(str(path), trust_code=True)
    for (layer, a), (_, b) in zip(neuron_layers(model), neuron_layers(loaded), strict=True):
        assert torch.equal(a.threshold, b.threshold) and torch.equal(a.beta, b.beta), layer
    assert torch.equal(run(model, name).spikes, run(loaded, name).spikes)


# -- QAT -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, lr", [("leaky_mlp", 0.01), ("tutorial_sequence_net", 0.05)])
def test_qat_is_deterministic_for_a_seed(name, lr):
    """Same seed: identical state dict, codes and epoch records; another seed: other weights (training
    on the evaluation set here, so that some epoch beats the start and the weights move)."""

    def qat(seed: int):
        model = load_model(TINY_MODELS[name].ref)
        data = bundle(name, n=16)
        report = run_single_pass("quantize", model, {"mode": "qat", "epochs": 2, "lr": lr},
                                 PassContext(data=data, train_data=data, seed=seed), OPTIONS)
        return model, report.steps[0]["metrics"]

    (first, m1), (again, m2), (other, m3) = qat(0), qat(0), qat(1)
    assert m1["best_epoch"] > 0 and m3["best_epoch"] > 0  # otherwise both keep the loaded weights
    a, b, c = (m.state_dict() for m in (first, again, other))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert m1["epochs"] == m2["epochs"]
    codes = [{k: v.codes for k, v in get_state(m).tensors.items()} for m in (first, again)]
    assert all(torch.equal(codes[0][k], codes[1][k]) for k in codes[0])
    assert any(not torch.equal(a[k], c[k]) for k in a)
    assert m1["epochs"] != m3["epochs"]


def test_qat_keeps_the_best_epoch(monkeypatch):
    """Validation accuracy scripted 10 -> 90 (epoch 1) -> 20 (epoch 2): the model ends on epoch 1's weights."""
    real = training_module.evaluate
    scripted = iter([10.0, 90.0, 20.0])
    snapshots = []

    def scripted_evaluate(model, data, **kwargs):
        snapshots.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        result = real(model, data, **kwargs)
        result.accuracy = next(scripted)
        return result

    monkeypatch.setattr(training_module, "evaluate", scripted_evaluate)
    model, report = quantize("leaky_mlp", {"mode": "qat", "epochs": 2, "lr": 0.05})
    metrics = report.steps[0]["metrics"]
    assert metrics["best_epoch"] == 1 and metrics["best_val_accuracy"] == 90.0
    assert [e["accuracy"] for e in metrics["epochs"]] == [90.0, 20.0]
    pot4 = parse_weight_scheme("pot4")
    best, last = snapshots[1], snapshots[2]
    for layer in ("0", "2"):
        latent = f"{layer}.parametrizations.weight.original"
        assert not torch.equal(pot4.quantize(best[latent]), pot4.quantize(last[latent]))  # not vacuous
        assert torch.equal(model.get_submodule(layer).weight.detach(), pot4.quantize(best[latent]))
        assert torch.equal(model.get_submodule(layer).bias.detach(), best[f"{layer}.bias"])


def test_qat_selects_the_epoch_on_held_out_training_data():
    """With a validation split, the best epoch is the best accuracy on a part held out of the training data."""
    _, report = quantize("conv1d_net", {"mode": "qat", "epochs": 2, "lr": 0.02, "validation_split": 0.1})
    metrics = report.steps[0]["metrics"]
    assert metrics["best_val_accuracy"] == max([e["accuracy"] for e in metrics["epochs"]] +
                                               [metrics["best_val_accuracy"]])
    assert "validation part" in metrics["validation"] or "too small" in metrics["validation"]


@pytest.mark.parametrize("split", [0.0, 0.25])
def test_qat_trains_on_all_training_data_unless_a_split_is_asked_for(monkeypatch, split):
    seen = {}
    real_train = quantize_module.train

    def spy(model, train_data, val_data, config, **kwargs):
        seen["train"], seen["val"] = len(train_data), len(val_data)
        return real_train(model, train_data, val_data, config, **kwargs)

    monkeypatch.setattr(quantize_module, "train", spy)
    total = 60  # large enough to split
    ctx = PassContext(data=bundle("leaky_mlp"), train_data=bundle("leaky_mlp", n=total, seed=1))
    report = run_single_pass("quantize", load_model(TINY_MODELS["leaky_mlp"].ref),
                             {"mode": "qat", "epochs": 1, "validation_split": split}, ctx, OPTIONS)
    if split:
        assert seen == {"train": total - round(total * split), "val": round(total * split)}
        assert "validation part" in report.steps[0]["metrics"]["validation"]
    else:
        assert seen == {"train": total, "val": total}
        assert report.steps[0]["metrics"]["validation"] == "the training data"


def test_qat_without_training_data_is_refused():
    with pytest.raises(ConfigError, match="QAT needs training data"):
        quantize("leaky_mlp", {"mode": "qat", "epochs": 1}, train=False)


# -- save, load, history ---------------------------------------------------------------------------------

SAVE_CASES = [(n, mode) for n in ("leaky_mlp", "rleaky_mlp", "synaptic_mlp", "tutorial_net", "tutorial_sequence_net")
              for mode in ("ptq", "qat")] + [("conv2d_net", "ptq")]


@pytest.mark.parametrize("name, mode", SAVE_CASES)
def test_save_load_gives_identical_outputs_and_accuracy(tmp_path, name, mode):
    config = {"mode": mode, "epochs": 1, "membrane_quant": "int4", "clip": -1, "neuron_quant": "fixed3.5"}
    model, report = quantize(name, config if mode == "qat" else {**PLAIN, **config})
    path = save_compressed(model, tmp_path / "q.safetensors")
    loaded = load_model(str(path), trust_code=True)
    a, b = run(model, name), run(loaded, name)
    assert torch.equal(a.spikes, b.spikes)
    assert (a.membrane is None) == (b.membrane is None)
    assert a.membrane is None or torch.equal(a.membrane, b.membrane)
    assert evaluate(loaded, bundle(name)).accuracy == report.steps[0]["metrics"]["accuracy_after"]
    assert get_state(loaded).neurons == get_state(model).neurons
    assert read_metadata(path)["history"] == rounded_figures(get_state(model).history)


def test_history_records_config_and_metrics():
    config = {**PLAIN, "weight_quant": "apot4", "membrane_quant": "int4", "clip": -1, "neuron_quant": "fixed2.6"}
    model, report = quantize("synaptic_mlp", config)
    (record,) = get_state(model).history
    assert record == report.steps[0]
    assert record["pass"] == "quantize" and record["version"] == "1" and record["origin"] == "snncompress"
    assert {k: record["config"][k] for k in config} == config
    assert record["config"]["mode"] == "ptq" and record["config"]["targets"] is None
    metrics = record["metrics"]
    assert {"accuracy_before", "accuracy_after", "accuracy_drop", "weight_bits_before", "weight_bits_after",
            "layers_quantized", "neuron_layers_quantized", "mode"} <= metrics.keys()
    assert metrics["accuracy_drop"] == pytest.approx(metrics["accuracy_before"] - metrics["accuracy_after"])
    assert metrics["weight_bits_before"] == 32 * (12 * 8 + 4 * 12)
    assert any("accuracy" in note for note in record["notes"])
