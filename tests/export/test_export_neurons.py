"""RSynaptic, Lapicque and Alpha through ONNX and NIR export (issue 16, item 4): the ONNX step of each
neuron is verified in onnxruntime, fp32 and with a quantized stored membrane; NIR round trips keep the
spikes of RSynaptic and Lapicque; Alpha has no NIR node and says so; a recurrent CubaLIF from another
tool becomes RSynaptic."""

from __future__ import annotations

import nir
import numpy as np
import pytest
import snntorch as snn
import torch
from torch import nn

from snncompress.errors import UnsupportedLayerError
from snncompress.export.nir_export import export_nir
from snncompress.export.nir_io import load_nir
from snncompress.export.onnx_export import export_onnx
from snncompress.models.membrane import install_membrane_quantizer
from snncompress.quant.membrane import MembraneQuantizer
from snncompress.sim.runner import SNNRunner
from tests.models import TINY_MODELS, T, _init


def _zero_reset_variants() -> dict[str, nn.Sequential]:
    return {
        "rsynaptic_zero": _init(nn.Sequential(
            nn.Linear(8, 6), snn.RSynaptic(alpha=0.6, beta=0.5, linear_features=6, reset_mechanism="zero",
                                           init_hidden=True, output=True)), seed=30, gain=2.0),
        "lapicque_zero": _init(nn.Sequential(
            nn.Linear(8, 6), snn.Lapicque(R=5.0, C=0.8, reset_mechanism="zero", init_hidden=True, output=True)),
            seed=31, gain=4.0),
        "alpha_subtract": _init(nn.Sequential(
            nn.Linear(8, 6), snn.Alpha(alpha=0.9, beta=0.8, reset_mechanism="subtract", init_hidden=True,
                                       output=True)), seed=32, gain=10.0),
    }


NEW_NEURONS = ["rsynaptic_mlp", "lapicque_mlp", "alpha_mlp"]


def _model(name: str) -> nn.Module:
    return TINY_MODELS[name].build() if name in TINY_MODELS else _zero_reset_variants()[name]


def _spikes(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return SNNRunner(model).run(x, is_sequence=False, time_steps=T).spikes


@pytest.mark.parametrize("name", NEW_NEURONS + list(_zero_reset_variants()))
def test_onnx_step_of_each_neuron_is_verified(name, tmp_path):
    model = _model(name)
    x = torch.rand(4, 8, generator=torch.Generator().manual_seed(2))
    assert _spikes(model, x).sum() > 0
    result = export_onnx(model, tmp_path / "m.onnx", x[0], T)
    assert any(n.startswith("verified in onnxruntime") for n in result.notes), result.notes
    states = {s["layer"]: s["state"] for s in result.details["states"]}
    kind = type(model[1]).__name__
    assert [s["state"] for s in result.details["states"] if s["layer"] == "1"] == {
        "RSynaptic": ["spk", "syn", "mem"], "Lapicque": ["mem"], "Alpha": ["syn_exc", "syn_inh", "mem"]}[kind]
    assert states


@pytest.mark.parametrize("name", ["rsynaptic_mlp", "lapicque_mlp"])
def test_onnx_step_with_a_quantized_membrane_is_verified(name, tmp_path):
    model = _model(name)
    for layer in ("1", "3"):
        install_membrane_quantizer(model, layer, MembraneQuantizer.from_bits(4, top=7), grid=4)
    result = export_onnx(model, tmp_path / "q.onnx", torch.rand(8), T)
    assert any("stored-membrane quantization is in the graph" in n for n in result.notes)


@pytest.mark.parametrize("name", ["rsynaptic_mlp", "lapicque_mlp", "lapicque_zero", "rsynaptic_zero"])
def test_nir_round_trip_keeps_the_spikes(name, tmp_path):
    model = _model(name)
    export_nir(model, tmp_path / "m.nir", torch.rand(8))
    back = load_nir(tmp_path / "m.nir")
    assert [type(m).__name__ for m in back if isinstance(m, snn.SpikingNeuron)] == [
        type(m).__name__ for m in model if isinstance(m, snn.SpikingNeuron)]
    x = torch.rand(6, 8, generator=torch.Generator().manual_seed(3))
    expected = _spikes(model, x)
    assert expected.sum() > 0 and torch.equal(_spikes(back, x), expected)


def test_lapicque_is_a_lif_with_its_rc_leak_and_gain(tmp_path):
    model = _model("lapicque_mlp")  # layer 3: R = 5, C = 0.8: leak 0.75, gain dt/C = 1.25
    export_nir(model, tmp_path / "m.nir", torch.rand(8), dt=1e-3)
    node = nir.read(tmp_path / "m.nir").nodes["3"]
    assert isinstance(node, nir.LIF)
    assert np.allclose(1 - 1e-3 / node.tau, 0.75) and np.allclose(node.r * 1e-3 / node.tau, 1.25)


def test_alpha_has_no_nir_node_and_says_so(tmp_path):
    with pytest.raises(UnsupportedLayerError, match=r"layer '1' \(Alpha\): NIR has no node for snnTorch's Alpha"):
        export_nir(_model("alpha_mlp"), tmp_path / "a.nir", torch.rand(8))
    assert not (tmp_path / "a.nir").exists()


def test_a_recurrent_cubalif_from_another_tool_becomes_rsynaptic(tmp_path):
    """A flat NIR graph as other tools write it (no snncompress metadata): Affine -> CubaLIF <-> Linear."""
    n, dt = 3, 1e-4
    gen = np.random.default_rng(0)
    tau_syn, tau_mem = np.full(n, dt / (1 - 0.5)), np.full(n, dt / (1 - 0.6))
    graph = nir.NIRGraph(
        nodes={"input": nir.Input(np.array([4])),
               "fc": nir.Affine(weight=gen.uniform(0, 1, (n, 4)).astype(np.float32), bias=np.zeros(n, np.float32)),
               "lif": nir.CubaLIF(tau_syn=tau_syn, tau_mem=tau_mem, r=tau_mem / dt, v_leak=np.zeros(n),
                                  v_threshold=np.ones(n), w_in=tau_syn / dt),
               "rec": nir.Linear(weight=gen.uniform(-0.5, 0.5, (n, n)).astype(np.float32)),
               "output": nir.Output(np.array([n]))},
        edges=[("input", "fc"), ("fc", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "output")])
    nir.write(tmp_path / "r.nir", graph)
    model = load_nir(tmp_path / "r.nir")
    neuron = [m for m in model if isinstance(m, snn.SpikingNeuron)][0]
    assert type(neuron).__name__ == "RSynaptic"
    assert torch.allclose(neuron.alpha, torch.tensor(0.5)) and torch.allclose(neuron.beta, torch.tensor(0.6))
