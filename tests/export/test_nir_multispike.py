"""sinabs's default spike mode from NIR (issue 16, item 6): ``--nir-spike multi`` reads IF/LIF nodes as
``MultiSpikeLeaky`` (``trunc(v / v_th)`` spikes per step, subtract reset in the same step), checked against
sinabs's equations written out here; the mode survives our own NIR and compressed-file round trips.
(The check against sinabs itself is tests/interop/test_sinabs.py.)"""

from __future__ import annotations

import nir
import numpy as np
import pytest
import torch

from snncompress.errors import InputError, UnsupportedLayerError
from snncompress.export.nir_export import export_nir
from snncompress.export.nir_io import NirReadOptions, load_nir
from snncompress.models.layers import build_module, module_spec
from snncompress.models.multispike import MultiSpikeLeaky
from snncompress.sim.runner import SNNRunner
from tests.cli.support import assert_input_error, cli

T = 4


def _weights():
    gen = np.random.default_rng(0)
    return [(gen.uniform(-0.5, 2.0, (8, 6)).astype(np.float32), gen.uniform(0, 0.3, 8).astype(np.float32)),
            (gen.uniform(-0.5, 1.0, (3, 8)).astype(np.float32), gen.uniform(0, 0.3, 3).astype(np.float32))]


def _if_graph(tmp_path, cuba: bool = False):
    """Affine - IF - Affine - IF, as sinabs's ``to_nir`` writes its IAF layers (r = 1, no metadata)."""
    (w1, b1), (w2, b2) = _weights()
    thresholds = [np.full(8, 0.5, dtype=np.float32), np.full(3, 0.8, dtype=np.float32)]
    nodes = {"input": nir.Input(np.array([6])), "0": nir.Affine(w1, b1), "2": nir.Affine(w2, b2),
             "output": nir.Output(np.array([3]))}
    for name, th in zip(("1", "3"), thresholds, strict=True):
        ones = np.ones_like(th)
        nodes[name] = (nir.CubaLIF(tau_syn=ones * 2e-3, tau_mem=ones * 2e-3, r=ones, v_leak=0 * ones, v_threshold=th)
                       if cuba else nir.IF(r=ones, v_threshold=th))
    graph = nir.NIRGraph(nodes=nodes, edges=[("input", "0"), ("0", "1"), ("1", "2"), ("2", "3"), ("3", "output")])
    path = tmp_path / "sinabs_like.nir"
    nir.write(path, graph)
    return path, thresholds


def _sinabs_reference(x: torch.Tensor, thresholds) -> list[torch.Tensor]:
    """sinabs's IAF with MultiSpike and MembraneSubtract (sinabs/layers/functional/lif.py), per layer."""
    out, h = [], x.transpose(0, 1)  # [T, B, ...]
    for (w, b), th in zip(_weights(), thresholds, strict=True):
        th = torch.as_tensor(th)
        current = h @ torch.as_tensor(w).T + torch.as_tensor(b)
        v, spikes = torch.zeros(current.shape[1:]), []
        for t in range(current.shape[0]):
            v = v + current[t]
            s = (v > 0) * torch.div(v, th, rounding_mode="trunc")
            v = v - s * th
            spikes.append(s)
        h = torch.stack(spikes)
        out.append(h)
    return out


def _run(model, x):
    with torch.no_grad():
        return SNNRunner(model).run(x, is_sequence=True, time_steps=T)


def _x():
    return torch.rand(5, T, 6, generator=torch.Generator().manual_seed(1))  # [B, T, ...]


def test_multi_spike_if_gives_sinabs_spike_counts(tmp_path, capsys):
    path, thresholds = _if_graph(tmp_path)
    model = load_nir(path, NirReadOptions(spike="multi"))
    err = capsys.readouterr().err
    assert err.count("multi-spike with subtract reset in the same step (sinabs's default") == 2, err
    assert all(isinstance(model[i], MultiSpikeLeaky) for i in (1, 3))
    expected = _sinabs_reference(_x(), thresholds)
    got = _run(model, _x())
    assert expected[0].max() > 1  # several spikes in one step do happen here
    assert torch.equal(got.spikes, expected[-1])
    single = _run(load_nir(path), _x()).spikes  # NIR's reading: one spike per step, reset to zero
    assert single.sum() < expected[-1].sum()


def test_the_mode_survives_our_nir_and_architecture_round_trips(tmp_path):
    path, _ = _if_graph(tmp_path)
    model = load_nir(path, NirReadOptions(spike="multi"))
    result = export_nir(model, tmp_path / "ours.nir", torch.rand(6))
    assert any("trunc(v/threshold) spikes per step" in n for n in result.notes)
    back = load_nir(tmp_path / "ours.nir")  # our metadata says so: no option needed
    assert isinstance(back[1], MultiSpikeLeaky) and torch.equal(_run(back, _x()).spikes, _run(model, _x()).spikes)
    rebuilt = build_module(module_spec(model))
    rebuilt.load_state_dict(model.state_dict())
    assert isinstance(rebuilt[3], MultiSpikeLeaky) and torch.equal(_run(rebuilt, _x()).spikes,
                                                                   _run(model, _x()).spikes)


def test_multi_spike_options_that_have_no_form(tmp_path):
    with pytest.raises(InputError, match="--nir-spike multi takes --nir-reset subtract or none"):
        NirReadOptions(spike="multi", reset="zero")
    with pytest.raises(InputError, match="--nir-spike 'many' is unknown"):
        NirReadOptions(spike="many")
    path, _ = _if_graph(tmp_path, cuba=True)
    with pytest.raises(UnsupportedLayerError, match="'1' \\(CubaLIF\\): --nir-spike multi applies to IF and LIF"):
        load_nir(path, NirReadOptions(spike="multi", dt=1e-4))


def test_cli_nir_spike(capsys, tmp_path, write_tensors):
    path, thresholds = _if_graph(tmp_path)
    data = write_tensors("d.safetensors", x=_x(), y=torch.arange(5) % 3)
    code, out, err = cli(capsys, "evaluate", path, "--data", data, "--time-steps", str(T), "--nir-spike", "multi",
                         "--json", "-")
    assert code == 0, err
    code, out, err = cli(capsys, "report", path, "--data", data, "--time-steps", str(T), "--nir-spike", "multi",
                         "--json", "-")
    assert code == 0, err
    code, _, err = cli(capsys, "export", path, "--nir-spike", "multi", "-o", tmp_path / "m.onnx")
    assert code == 2 and "MultiSpikeLeaky" in err, err  # the ONNX step knows one spike per step only
    assert_input_error(capsys, "inspect", "demo", "--nir-spike", "multi", match="apply to a .nir MODEL")
    assert_input_error(capsys, "inspect", path, "--nir-spike", "multi", "--nir-reset", "zero",
                       match="--nir-spike multi takes")


def _rockpool_graph(tmp_path, dt=1e-3):
    """Affine-free Linear - CubaLIF - Linear - CubaLIF as Rockpool's ``to_nir`` writes LIFTorch: r encodes dt."""
    (w1, _), (w2, _) = _weights()
    nodes = {"input": nir.Input(np.array([6])), "0": nir.Linear(w1 * 0.3), "2": nir.Linear(w2 * 0.5),
             "output": nir.Output(np.array([3]))}
    taus = {"1": (0.02, 0.01), "3": (0.03, 0.005)}
    for name, (tau_mem, tau_syn) in taus.items():
        n = 8 if name == "1" else 3
        full = np.ones(n, dtype=np.float32)
        nodes[name] = nir.CubaLIF(tau_syn=full * tau_syn, tau_mem=full * tau_mem,
                                  r=full * np.float32(tau_mem * np.exp(-dt / tau_mem) / dt), v_leak=0 * full,
                                  v_threshold=full * 0.5, w_in=full)
    graph = nir.NIRGraph(nodes=nodes, edges=[("input", "0"), ("0", "1"), ("1", "2"), ("2", "3"), ("3", "output")])
    nir.write(tmp_path / "rockpool_like.nir", graph)
    return tmp_path / "rockpool_like.nir", [(w1 * 0.3, taus["1"]), (w2 * 0.5, taus["3"])]


def _rockpool_reference(x: torch.Tensor, layers, dt=1e-3) -> torch.Tensor:
    """Rockpool's LIFTorch.forward (rockpool/nn/modules/torch/lif_torch.py), no bias or noise."""
    h = x.transpose(0, 1)
    for w, (tau_mem, tau_syn) in layers:
        current = h @ torch.as_tensor(w).T
        a = torch.exp(-dt / torch.full(current.shape[2:], tau_mem))
        b = torch.exp(-dt / torch.full(current.shape[2:], tau_syn))
        isyn, vmem, out = torch.zeros(current.shape[1:]), torch.zeros(current.shape[1:]), []
        for t in range(current.shape[0]):
            isyn = isyn + current[t]
            vmem = vmem * a
            isyn = isyn * b
            vmem = vmem + isyn
            spikes = (vmem >= 0.5) * torch.floor(vmem / 0.5)
            vmem = vmem - spikes * 0.5
            out.append(spikes)
        h = torch.stack(out)
    return h


def test_rockpool_producer_reads_lif_torch_dynamics(tmp_path, capsys):
    path, layers = _rockpool_graph(tmp_path)
    model = load_nir(path, NirReadOptions(producer="rockpool"))
    err = capsys.readouterr().err
    assert err.count("read as Rockpool's LIFTorch at dt = 0.001 (from r = tau_mem exp(-dt/tau_mem)/dt") == 2, err
    x = _x() * 3
    expected = _rockpool_reference(x, layers)
    assert expected.max() > 1
    assert torch.equal(_run(model, x).spikes, expected)
    # our NIR and the architecture spec keep MultiSpikeSynaptic (a file of ours needs no option)
    export_nir(model, tmp_path / "ours.nir", torch.rand(6))
    back = load_nir(tmp_path / "ours.nir")
    assert type(back[1]).__name__ == "MultiSpikeSynaptic" and torch.equal(_run(back, x).spikes, expected)
    rebuilt = build_module(module_spec(model))
    rebuilt.load_state_dict(model.state_dict())
    assert torch.equal(_run(rebuilt, x).spikes, expected)


def test_rockpool_producer_refuses_what_it_does_not_read(tmp_path):
    with pytest.raises(InputError, match="--nir-producer 'norse' is unknown"):
        NirReadOptions(producer="norse")
    path, _ = _if_graph(tmp_path)
    with pytest.raises(UnsupportedLayerError, match="--nir-producer rockpool reads CubaLIF nodes"):
        load_nir(path, NirReadOptions(producer="rockpool"))


def test_sinabs_producer_reads_iaf_and_lif(tmp_path):
    path, thresholds = _if_graph(tmp_path)
    model = load_nir(path, NirReadOptions(producer="sinabs"))  # IF: the same as --nir-spike multi
    assert torch.equal(_run(model, _x()).spikes, _sinabs_reference(_x(), thresholds)[-1])
    graph = nir.read(path)
    taus = {"1": 4.0, "3": 10.0}
    for name, tau in taus.items():  # LIF as sinabs writes its LIF: tau in steps, r = 1
        th = np.asarray(graph.nodes[name].v_threshold)
        graph.nodes[name] = nir.LIF(tau=np.full_like(th, tau), r=np.ones_like(th), v_leak=0 * th, v_threshold=th)
    nir.write(tmp_path / "lif.nir", graph)
    model = load_nir(tmp_path / "lif.nir", NirReadOptions(producer="sinabs"))
    h = _x().transpose(0, 1)
    for (w, b), th, tau in zip(_weights(), thresholds, taus.values(), strict=True):  # sinabs's lif_forward_single
        alpha, th = torch.exp(-1.0 / torch.full((len(th),), tau)), torch.as_tensor(th)
        current = h @ torch.as_tensor(w).T + torch.as_tensor(b)
        v, out = torch.zeros(current.shape[1:]), []
        for t in range(current.shape[0]):
            v = alpha * v + (1 - alpha) * current[t]
            s = (v > 0) * torch.div(v, th, rounding_mode="trunc")
            v = v - s * th
            out.append(s)
        h = torch.stack(out)
    assert h.sum() > 0 and torch.equal(_run(model, _x()).spikes, h)


def test_cli_nir_producer(capsys, tmp_path):
    path, _ = _rockpool_graph(tmp_path)
    code, out, err = cli(capsys, "inspect", path, "--nir-producer", "rockpool", "--json", "-")
    assert code == 0 and "MultiSpikeSynaptic" in out and "read as Rockpool's LIFTorch" in err, err
    assert_input_error(capsys, "inspect", path, "--nir-producer", "brian", match="--nir-producer 'brian' is unknown")
