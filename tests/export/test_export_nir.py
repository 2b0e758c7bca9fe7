"""NIR export and import: exact round trips, the metadata conventions, and clear refusals."""

from __future__ import annotations

import json

import nir
import numpy as np
import pytest
import snntorch as snn
import torch
from torch import nn

from snncompress.errors import DataError, ModelLoadError, UnsupportedLayerError
from snncompress.export.discretize import DEFAULT_DT, decay_from_tau, lif_params
from snncompress.export.nir_export import METADATA_KEY, export_nir, model_to_nir
from snncompress.export.nir_import import graph_to_module
from snncompress.export.nir_io import load_nir
from snncompress.fileformat.compressed import save_compressed
from snncompress.fileformat.loading import load_model
from snncompress.models.layers import module_spec
from snncompress.models.membrane import install_membrane_quantizer
from snncompress.state import get_state
from tests.export.export_nets import (
    ROUND_TRIP,
    T,
    TernaryMembrane,
    batchnorm_net,
    inputs,
    layer_spikes,
    leaky_linear,
    run,
)


def _round_trip(model: nn.Module, shape: tuple[int, ...], tmp_path, name: str = "model") -> nn.Module:
    path = tmp_path / f"{name}.nir"
    export_nir(model, path, inputs(shape)[0])
    return load_model(str(path))


@pytest.mark.parametrize("name", list(ROUND_TRIP))
def test_round_trip_gives_identical_spikes_and_membrane(name, tmp_path):
    build, shape = ROUND_TRIP[name]
    model = build()
    x = inputs(shape)
    before = run(model, x)
    loaded = _round_trip(model, shape, tmp_path)
    after = run(loaded, x)
    assert 0 < before.spikes.mean() < 1, "the test model must fire, but not always"
    assert torch.equal(before.spikes, after.spikes)
    assert torch.equal(before.membrane, after.membrane)  # bit-exact, not just close
    for a, b in zip(layer_spikes(model, x), layer_spikes(loaded, x), strict=True):
        assert torch.equal(a, b)
    assert isinstance(loaded, nn.Sequential)


def test_round_trip_keeps_the_architecture_spec(tmp_path):
    for name in ("leaky_subtract", "per_neuron_leaky", "conv_synaptic_zero", "rleaky_one_to_one_zero"):
        build, shape = ROUND_TRIP[name]
        model = build()
        loaded = _round_trip(model, shape, tmp_path, name)
        assert module_spec(loaded) == module_spec(model), name


def test_demo_round_trip_and_save_as_builtin_architecture(tmp_path):
    demo = load_model("demo")
    x = inputs((1, 8, 8), batch=4)
    path = tmp_path / "demo.nir"
    result = export_nir(demo, path, x[0])
    loaded = load_model(str(path))
    assert module_spec(loaded) == module_spec(demo)
    before, after = run(demo, x, 8), run(loaded, x, 8)
    assert before.spikes.sum() > 0
    assert torch.equal(before.spikes, after.spikes) and torch.equal(before.membrane, after.membrane)
    assert any("reset in a way NIR" in n and "'10'" in n for n in result.notes)
    saved = save_compressed(loaded, tmp_path / "demo.safetensors")
    assert torch.equal(run(load_model(str(saved)), x, 8).spikes, before.spikes)


def test_graph_metadata_records_reset_dt_and_conventions(tmp_path):
    model = leaky_linear("subtract")
    path = tmp_path / "m.nir"
    export_nir(model, path, inputs((6,))[0], dt=1e-3)
    graph = nir.read(path)
    meta = json.loads(graph.metadata[METADATA_KEY])
    assert meta["dt"] == 1e-3 and meta["format"] == "snncompress-nir" and meta["input_shape"] == [6]
    lif = graph.nodes["1"]
    assert isinstance(lif, nir.LIF) and lif.metadata["reset_mechanism"] == "subtract"
    assert lif.tau.shape == (10,) and lif.v_threshold.shape == (10,)  # per neuron, as snnTorch expects
    np.testing.assert_allclose(lif.r * 1e-3 / lif.tau, 1.0)  # unit input gain
    x = inputs((6,))
    assert torch.equal(run(load_model(str(path)), x).spikes, run(model, x).spikes)  # dt is read back


def test_discretization_round_trip_is_exact_for_float32_betas():
    beta = np.concatenate([np.linspace(0, 0.999999, 20001), 1 - np.logspace(-7, -1, 2000),
                           np.logspace(-8, 0, 3000)])
    beta = np.unique(beta.astype(np.float32))
    beta = beta[beta < 1]
    back = decay_from_tau(lif_params(beta, DEFAULT_DT)["tau"], DEFAULT_DT).astype(np.float32)
    assert np.array_equal(back, beta)


def test_quantized_membrane_is_noted_and_kept_in_metadata(tmp_path):
    model = leaky_linear("subtract")
    install_membrane_quantizer(model, "1", TernaryMembrane())
    path = tmp_path / "q.nir"
    result = export_nir(model, path, inputs((6,))[0])
    assert any("membrane quantization" in n and "'1'" in n for n in result.notes)
    meta = json.loads(nir.read(path).metadata[METADATA_KEY])
    assert meta["membrane_quantization"] == {"1": {"levels_low": -1, "levels_high": 1, "grid": 1, "unit": 1.0}}
    assert meta["membrane_quantization_in_graph"] is False


def test_quantized_weights_are_written_dequantized(tmp_path):
    model = leaky_linear()
    get_state(model).tensors["0.weight"] = object()  # a quantized tensor's record; values stay float
    result = export_nir(model, tmp_path / "w.nir", inputs((6,))[0])
    assert any("dequantized" in n for n in result.notes)
    graph = nir.read(tmp_path / "w.nir")
    assert np.array_equal(graph.nodes["0"].weight, model[0].weight.detach().numpy())


def test_file_without_reset_metadata_uses_zero_reset_and_says_so(tmp_path, capsys):
    model = leaky_linear("zero")
    graph, _ = model_to_nir(model, inputs((6,))[0])
    for node in graph.nodes.values():
        node.metadata = {}
    graph.metadata = {}
    path = tmp_path / "bare.nir"
    nir.write(path, graph)
    loaded = load_nir(path)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()  # one line per neuron node, with each point the graph leaves open
    hint = lines.pop()  # and one naming the option that reads a producer's own dynamics
    assert "does not say which software wrote it" in hint and "--nir-producer sinabs" in hint
    assert len(lines) == 2 and all("no reset recorded: reset to zero in the same step" in ln for ln in lines)
    assert all("no dt recorded: time constants read with dt = 0.0001" in ln for ln in lines)
    assert "NIR node '1'" in lines[0] and "NIR node '3'" in lines[1]
    assert all(m.reset_mechanism == "zero" and not m.reset_delay for m in (loaded[1], loaded[3]))
    x = inputs((6,))
    # reset to zero on the same step (NIR) gives the same spikes as snnTorch's delayed zero reset
    assert torch.equal(run(loaded, x).spikes, run(model, x).spikes)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_snntorch_export_to_nir_imports_with_same_spikes(tmp_path):
    from snntorch.export_nir import export_to_nir

    model = nn.Sequential(
        nn.Linear(6, 10), snn.Leaky(beta=torch.full((10,), 0.8), threshold=torch.ones(10), init_hidden=True,
                                    reset_mechanism="zero"),
        nn.Linear(10, 4), snn.Leaky(beta=torch.full((4,), 0.7), threshold=torch.ones(4), init_hidden=True,
                                    reset_mechanism="zero", output=True))
    weights = {k: v for k, v in leaky_linear("zero").state_dict().items() if k[0] in "02"}
    model.load_state_dict(weights, strict=False)
    path = tmp_path / "snntorch.nir"
    nir.write(path, export_to_nir(model, inputs((6,))[0]))
    x = inputs((6,))
    assert torch.equal(run(load_model(str(path)), x).spikes, run(model, x).spikes)


def test_gain_other_than_one_is_folded_into_the_threshold():
    tau = np.full(3, 2e-4)
    lif = nir.LIF(tau=tau, r=2 * tau / DEFAULT_DT, v_leak=np.zeros(3), v_threshold=np.ones(3))
    graph = nir.NIRGraph.from_list(nir.Affine(weight=np.eye(3), bias=np.zeros(3)), lif)
    model, notes = graph_to_module(graph)
    assert float(model[1].threshold) == 0.5 and float(model[1].beta) == 0.5
    assert any("gain" in n for n in notes)


def test_broken_file_names_the_file(tmp_path):
    garbage = tmp_path / "broken.nir"
    garbage.write_bytes(b"this is not an HDF5 file at all")
    with pytest.raises(ModelLoadError, match="broken.nir"):
        load_model(str(garbage))
    good = tmp_path / "good.nir"
    export_nir(leaky_linear(), good, inputs((6,))[0])
    truncated = tmp_path / "truncated.nir"
    truncated.write_bytes(good.read_bytes()[:700])
    with pytest.raises(ModelLoadError, match="truncated.nir"):
        load_model(str(truncated))


def test_unsupported_node_is_named(tmp_path):
    graph = nir.NIRGraph.from_list(
        nir.Affine(weight=np.ones((3, 4)), bias=np.zeros(3)),
        nir.LI(tau=np.ones(3), r=np.ones(3), v_leak=np.zeros(3)),
    )
    path = tmp_path / "li.nir"
    nir.write(path, graph)
    with pytest.raises(UnsupportedLayerError, match=r"'li' \(LI\)") as info:
        load_model(str(path))
    assert "\n" not in str(info.value)


def test_branching_graph_is_refused_naming_the_node():
    a = nir.Affine(weight=np.ones((3, 4)), bias=np.zeros(3))
    b = nir.Affine(weight=np.ones((3, 4)), bias=np.zeros(3))
    lif = nir.LIF(tau=np.ones(3), r=np.ones(3) * 1e4, v_leak=np.zeros(3), v_threshold=np.ones(3))
    graph = nir.NIRGraph(
        nodes={"in": nir.Input(np.array([4])), "a": a, "b": b, "lif": lif, "out": nir.Output(np.array([3]))},
        edges=[("in", "a"), ("in", "b"), ("a", "lif"), ("b", "lif"), ("lif", "out")], type_check=False)
    with pytest.raises(UnsupportedLayerError, match=r"'in' \(Input\) has 2 outgoing edges"):
        graph_to_module(graph)


def test_nonzero_leak_and_reset_potential_are_refused():
    for field in ("v_leak", "v_reset"):
        kw = {"tau": np.ones(3), "r": np.ones(3) * 1e4, "v_leak": np.zeros(3), "v_threshold": np.ones(3),
              "v_reset": np.zeros(3)}
        kw[field] = np.full(3, 0.1)
        graph = nir.NIRGraph.from_list(nir.Affine(weight=np.ones((3, 4)), bias=np.zeros(3)), nir.LIF(**kw))
        with pytest.raises(UnsupportedLayerError, match=rf"'lif' \(LIF\) has a nonzero {field}"):
            graph_to_module(graph)


def test_flat_recurrent_cycle_imports_as_rleaky():
    n = 4
    lif = nir.LIF(tau=np.full(n, 5e-4), r=np.full(n, 5.0), v_leak=np.zeros(n), v_threshold=np.ones(n))
    graph = nir.NIRGraph(
        nodes={"input": nir.Input(np.array([3])), "fc": nir.Affine(weight=np.ones((n, 3)), bias=np.zeros(n)),
               "lif": lif, "rec": nir.Linear(weight=np.full((n, n), 0.1)),
               "output": nir.Output(np.array([n]))},
        edges=[("input", "fc"), ("fc", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "output")],
        type_check=False)
    model, _ = graph_to_module(graph)
    assert isinstance(model[1], snn.RLeaky) and model[1].all_to_all and model[1].output
    assert torch.allclose(model[1].recurrent.weight, torch.full((n, n), 0.1))


def test_export_refusals_name_the_layer(tmp_path):
    with pytest.raises(UnsupportedLayerError, match=r"layer '1' \(BatchNorm2d\).*fold BatchNorm"):
        export_nir(batchnorm_net(), tmp_path / "bn.nir", torch.rand(1, 5, 5))
    not_spikes = nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2), snn.Leaky(beta=0.5, init_hidden=True))
    with pytest.raises(UnsupportedLayerError, match=r"layer '1' \(MaxPool2d\).*binary spikes"):
        export_nir(not_spikes, tmp_path / "mp.nir", torch.rand(1, 6, 6))

    class Loop(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(UnsupportedLayerError, match="nn.Sequential"):
        export_nir(Loop(), tmp_path / "loop.nir", torch.rand(6))
    with pytest.raises(DataError, match=r"\[7\]"):
        export_nir(leaky_linear(), tmp_path / "shape.nir", torch.rand(7))
    assert not list(tmp_path.glob("*.nir")) and not list(tmp_path.glob(".*tmp"))


def test_existing_output_needs_force(tmp_path):
    path = tmp_path / "m.nir"
    path.write_text("keep me")
    from snncompress.errors import InputError

    with pytest.raises(InputError, match="--force"):
        export_nir(leaky_linear(), path, inputs((6,))[0])
    assert path.read_text() == "keep me"
    export_nir(leaky_linear(), path, inputs((6,))[0], force=True)
    assert isinstance(load_nir(path), nn.Sequential)


def test_input_shape_travels_with_the_model(tmp_path):
    path = tmp_path / "m.nir"
    export_nir(ROUND_TRIP["conv1d_leaky"][0](), path, inputs((2, 10))[0])
    from snncompress.export.layout import infer_input_shape

    assert infer_input_shape(load_model(str(path))) == (2, 10)
    assert T == 4


def test_quantized_nodes_carry_codes_scales_and_membrane_levels(tmp_path):
    """Issue 17: NIR holds floats; the codes, scales and membrane levels travel in node metadata."""
    import json as _json

    from torch.utils.data import TensorDataset as _Dataset

    from snncompress.data.loading import DataBundle, DataOptions
    from snncompress.export.nir_quant import QUANT_KEY
    from snncompress.passes.base import PassContext
    from snncompress.passes.quantize import QuantizeConfig
    from snncompress.passes.quantize import apply as quantize
    from snncompress.state import get_state
    from tests.models import TINY_MODELS

    model = TINY_MODELS["conv2d_net"].build()
    x = TINY_MODELS["conv2d_net"].example_inputs()
    data = DataBundle("tiny", _Dataset(x, torch.arange(x.shape[0]) % 4), False, 3, 4, DataOptions(time_steps=3))
    quantize(model, QuantizeConfig(weight_quant="int4", membrane_quant="int4", calibration="none"),
             PassContext(data=data))
    path = tmp_path / "q.nir"
    export_nir(model, path, x[0])
    graph = nir.read(str(path))
    state = get_state(model)
    conv = _json.loads(graph.nodes["0"].metadata[QUANT_KEY])
    assert conv["codes"] == state.tensors["0.weight"].codes.reshape(-1).tolist()
    assert conv["scheme"]["kind"] == "int" and conv["bits"] == 4 and conv["shape"] == [4, 1, 3, 3]
    assert conv["params"]["scale"] == state.tensors["0.weight"].params["scale"].tolist()
    lif = _json.loads(graph.nodes["2"].metadata[QUANT_KEY])["membrane"]
    assert (lif["levels_low"], lif["levels_high"], lif["grid"]) == (-8, 7, 4)
