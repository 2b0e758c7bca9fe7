"""Models trained elsewhere (issue 21, loading and export), on tiny models in the styles others publish:

* a user module whose ``forward(x)`` is ONE time step of ``init_hidden=True`` neurons returning ``(spk, mem)``
  (NeuroBench's DVS-gesture CSNN, ``tests.models:one_step_conv_net``) is stepped, says so, and goes through
  every command; its file records the style and its layer chain;
* a module that resets its neurons on every call is no time loop; one with its own loop stays one;
* PyTorch Lightning checkpoints (and any ``torch.save`` file, any suffix) load as ``--weights`` with their key
  prefix stripped, or fail in one line naming the keys;
* ``padding="same"`` (even kernels, dilation) in the integer reference, ONNX and NIR;
* the ONNX verification tells a membrane rounding tie from an error;
* the recorded-run notes are true for sequence data; NIR producers are found or named.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import nir
import numpy as np
import pytest
import snntorch as snn
import torch
from torch import nn

from snncompress.errors import DomainError, ModelLoadError, NoTimeLoopError
from snncompress.export.chain import recorded_chain
from snncompress.export.layout import leaf_layers
from snncompress.fileformat.compressed import read_metadata
from snncompress.fileformat.loading import load_model
from snncompress.models.source import detect_style
from snncompress.sim.runner import SNNRunner, resolve_layout
from snncompress.state import get_state
from tests.cli.support import assert_input_error, cli
from tests.models import CLASSES, TINY_MODELS, T, har_conv_net, one_step_conv_net, one_step_mlp, resetting_step_mlp

CHAIN = ["conv1", "pool1", "lif1", "conv2", "pool2", "lif2", None, "linear1", "dropout_4", "lif4"]
NO_CALIBRATION = ["--calibration", "none"]


def _frames(n: int = 8, seed: int = 0) -> torch.Tensor:
    return (torch.rand(n, T, 2, 8, 8, generator=torch.Generator().manual_seed(seed)) < 0.5).float()


def _neurobench_loop(model: nn.Module, x: torch.Tensor, steps: int | None = None):
    """How NeuroBench's ``SNNTorchModel`` drives a one-step module: reset the neurons, call it per time step."""
    for module in model.modules():
        if isinstance(module, snn.SpikingNeuron):
            module.reset_mem()
    spikes, membranes = [], []
    with torch.no_grad():
        for t in range(x.shape[1] if steps is None else steps):
            spk, mem = model(x[:, t] if steps is None else x)
            spikes.append(spk)
            membranes.append(mem)
    return torch.stack(spikes), torch.stack(membranes)


# -- one-step modules ---------------------------------------------------------------------------------

def test_a_one_step_module_is_stepped_as_neurobench_drives_it(capsys):
    model, x = one_step_conv_net(), _frames()
    spikes, membrane = _neurobench_loop(one_step_conv_net(), x)
    assert detect_style(model) == "sequence"  # not known before it runs
    runner = SNNRunner(model)
    with torch.no_grad():
        out = runner.run(x, is_sequence=True, time_steps=99)
        again = runner.run(x, is_sequence=True, time_steps=99)  # its state is reset per batch
    assert runner.style == detect_style(model) == "stepwise"
    assert torch.equal(out.spikes, spikes) and torch.equal(out.membrane, membrane)
    assert torch.equal(again.spikes, spikes)
    assert 0 < out.spikes.sum() < out.spikes.numel()
    err = capsys.readouterr().err
    assert err.count("note: OneStepConvNet's forward(x) is one time step") == 1
    assert "calls it once per time step and resets its neurons before each batch" in err


def test_a_one_step_module_on_static_input_runs_t_steps():
    model, x = one_step_mlp(), torch.rand(4, 8, generator=torch.Generator().manual_seed(2))
    spikes, membrane = _neurobench_loop(one_step_mlp(), x, steps=5)
    with torch.no_grad():
        out = SNNRunner(model).run(x, is_sequence=False, time_steps=5)
    assert torch.equal(out.spikes, spikes) and torch.equal(out.membrane, membrane)


def test_the_layout_records_the_chain_of_its_layers():
    model = one_step_conv_net()
    assert resolve_layout(SNNRunner(model), _frames(1)[0], T) is True
    assert recorded_chain(model) == CHAIN
    assert [name for name, _ in leaf_layers(model)][6] == "flatten_6"
    assert leaf_layers(model)[0][1] is model.conv1  # the model's own modules
    from snncompress.export.layout import probe_shapes

    shapes = {leaf.name: (leaf.in_shape, leaf.out_shape) for leaf in probe_shapes(model, _frames(1)[0, 0])}
    assert shapes["flatten_6"] == ((4, 2, 2), (16,)) and shapes["lif4"] == ((4,), (4,))


def test_a_forward_that_resets_its_neurons_is_no_time_loop():
    with pytest.raises(NoTimeLoopError, match="this model has no time loop.*init_hidden=True neurons that keep "
                                              "their state between calls"):
        SNNRunner(resetting_step_mlp()).run(torch.rand(2, 8), is_sequence=False, time_steps=3)


def test_an_own_loop_of_init_hidden_neurons_stays_a_sequence_model():
    """NeuroBench's NeHAR SCNN: init_hidden=True neurons inside its own loop over [B, T, C]."""
    model, x = har_conv_net(), torch.rand(4, T, 3, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = model(x)
        out = SNNRunner(model).run(x, is_sequence=False, time_steps=99)
    assert detect_style(model) == "sequence" and get_state(model).source["style"] == "sequence"
    assert torch.equal(out.spikes, expected) and out.spikes.sum() > 0


@pytest.fixture
def frames_file(write_tensors) -> Path:
    x = _frames(12, seed=4)
    return write_tensors("frames.safetensors", x=x, y=torch.arange(12) % CLASSES)


def test_every_command_runs_a_one_step_module(capsys, tmp_path, frames_file):
    ref = TINY_MODELS["one_step_conv_net"].ref
    code, out, err = cli(capsys, "inspect", ref, "--data", frames_file)
    assert code == 0, err
    assert "OneStepConvNet's forward(x) is one time step: called once per time step" in out.replace("\n", " ")
    code, out, err = cli(capsys, "evaluate", ref, "--data", frames_file, "--json", "-")
    assert code == 0, err
    fp32 = json.loads(out)
    assert fp32["time_steps"] == T and "forward(x) is one time step" in err
    ptq = tmp_path / "ptq.safetensors"
    code, out, err = cli(capsys, "quantize", ref, "--data", frames_file, "--weight-quant", "int8",
                         "--membrane-quant", "int8", *NO_CALIBRATION, "-o", ptq, "--json", tmp_path / "ptq.json")
    assert code == 0, err
    record = read_metadata(ptq)["model"]
    assert record["style"] == "stepwise" and record["chain"] == CHAIN
    after = json.loads((tmp_path / "ptq.json").read_text())["after"]["accuracy"]
    code, out, err = cli(capsys, "evaluate", ptq, "--data", frames_file, "--trust-code", "--json", "-")
    assert code == 0, err
    assert json.loads(out)["accuracy"] == after  # the file runs as the model it was saved from
    assert "records how it was run" not in err and "forward(x) is one time step" not in err  # recorded
    code, out, err = cli(capsys, "verify", ptq, "--data", frames_file, "--trust-code")
    assert code == 0, err
    assert "bit-exact: 0 mismatching spikes" in out
    code, out, err = cli(capsys, "report", ptq, "--data", frames_file, "--trust-code")
    assert code == 0, err
    onnx = tmp_path / "ptq.onnx"
    code, out, err = cli(capsys, "export", ptq, "--trust-code", "-o", onnx, "--data", frames_file)
    assert code == 0, err
    assert "OneStepConvNet's forward(x) is one time step; exported as the chain of its layers" in err
    assert "verified in onnxruntime" in err
    code, out, err = cli(capsys, "export", ptq, "--trust-code", "-o", tmp_path / "u.onnx", "--unroll", "-T", 3)
    assert code == 0, err
    assert "verified in onnxruntime: 3 unrolled steps" in err
    qat = tmp_path / "qat.safetensors"
    code, _, err = cli(capsys, "quantize", ref, "--data", frames_file, "--train-data", frames_file, "--mode", "qat",
                       "--epochs", 1, "--weight-quant", "pot4", "--membrane-quant", "int4", "-o", qat)
    assert code == 0, err
    pruned = tmp_path / "pruned.safetensors"
    code, _, err = cli(capsys, "prune", ref, "--data", frames_file, "--train-data", frames_file,
                       "--weights-unstructured", 0.5, "--epochs", 1, "-o", pruned)
    assert code == 0, err
    for path in (qat, pruned):
        assert read_metadata(path)["model"]["style"] == "stepwise"
        code, _, err = cli(capsys, "evaluate", path, "--data", frames_file, "--trust-code")
        assert code == 0, err


def test_nir_export_of_a_one_step_module(capsys, tmp_path):
    code, _, err = cli(capsys, "export", "tests.models:one_step_mlp", "-o", tmp_path / "m.nir", "--input-shape", "8")
    assert code == 0, err
    assert "OneStepMLP's forward(x) is one time step; exported as the chain of its layers fc1 -> lif1" in err
    # a MaxPool before a neuron layer has no NIR node (max of membrane currents): refused naming the layer
    code, _, err = cli(capsys, "export", "tests.models:one_step_conv_net", "-o", tmp_path / "c.nir",
                       "--input-shape", "2,8,8")
    assert code == 2 and err.strip().splitlines()[-1].startswith("error: layer 'pool1' (MaxPool2d): NIR has no max "
                                                                 "pooling")


# -- weights files: Lightning checkpoints and other torch.save files ---------------------------------------

def _lightning(state_dict: dict[str, torch.Tensor], **extra) -> dict:
    """What PyTorch Lightning's ModelCheckpoint writes (the keys of NeuroBench's WISDM_snnTorch.ckpt)."""
    return {"epoch": 100, "global_step": 8500, "pytorch-lightning_version": "2.0.8", "state_dict": state_dict,
            "loops": {"fit_loop": {"state_dict": {}, "epoch_loop.state_dict": {"_batches_that_stepped": 8500}}},
            "callbacks": {"ModelCheckpoint{'monitor': None}": {"best_model_path": "/home/x/epoch=99.ckpt"}},
            "optimizer_states": [{"state": {0: {"step": torch.tensor(8500.0), "exp_avg": torch.zeros(3)}},
                                  "param_groups": [{"lr": 0.001, "betas": (0.9, 0.999), "params": [0]}]}],
            "lr_schedulers": [], "hparams_name": "kwargs", "hyper_parameters": {"lr": 0.001}, **extra}


def _prefixed(model: nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + k: v.clone() for k, v in model.state_dict().items()}


def test_a_lightning_checkpoint_loads_with_its_prefix_stripped(tmp_path, capsys):
    source = one_step_mlp()
    with torch.no_grad():
        source.fc1.weight.mul_(-1)  # other weights than the factory's
    path = tmp_path / "har.ckpt"
    torch.save(_lightning({**_prefixed(source, "model."), "loss_fn.pos_weight": torch.ones(2)}), path)
    model = load_model("tests.models:one_step_mlp", weights=path)
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == (f"note: {path}: a PyTorch Lightning checkpoint (epoch 100, Lightning 2.0.8); using its "
                      "'state_dict' (optimizer states, loops and hyper-parameters are ignored)")
    assert err[1] == (f"note: {path}: its keys carry the prefix 'model.' (as model.fc1.weight); stripped it for the "
                      "model's 12 tensors; left out 1 other tensors (loss_fn.pos_weight)")


def test_an_old_checkpoint_with_namespace_hyperparameters_loads(tmp_path):
    path = tmp_path / "old.ckpt"
    torch.save(_lightning(_prefixed(one_step_mlp(), "model."), hyper_parameters=argparse.Namespace(lr=0.1)), path)
    load_model("tests.models:one_step_mlp", weights=path)


@pytest.mark.parametrize("prefix,name", [("module.", "dp.pth"), ("_orig_mod.", "compiled"), ("net.model.", "w.bin")])
def test_common_prefixes_and_any_suffix(tmp_path, prefix, name):
    path = tmp_path / name
    torch.save(_prefixed(one_step_mlp(), prefix), path)
    load_model("tests.models:one_step_mlp", weights=path)


def test_a_checkpoint_that_does_not_fit_names_the_keys(capsys, tmp_path):
    path = tmp_path / "other.ckpt"
    torch.save(_lightning(_prefixed(TINY_MODELS["leaky_mlp"].build(), "model.")), path)
    code, _, err = cli(capsys, "evaluate", "tests.models:one_step_mlp", "--weights", path,
                       "--data", "tests.models:static_dataset")
    line = err.strip().splitlines()[-1]  # after the note naming the checkpoint
    assert code == 2 and line.startswith(f"error: {path} does not fit the model: missing keys: fc1.weight")
    assert "unexpected keys: model.0.weight" in line


def test_a_checkpoint_pickling_other_classes_is_refused_with_the_way_out(tmp_path):
    path = tmp_path / "paths.ckpt"
    torch.save(_lightning(_prefixed(one_step_mlp(), "model."), dirpath=Path("/tmp")), path)
    with pytest.raises(ModelLoadError, match=r"it pickles pathlib\.\w*Path, which only full unpickling can build.*"
                                             r"torch\.save\(torch\.load\(FILE, weights_only=False\)\['state_dict'\]"):
        load_model("tests.models:one_step_mlp", weights=path)


def test_a_checkpoint_as_model_points_to_weights(capsys, tmp_path):
    path = tmp_path / "har.ckpt"
    torch.save(_lightning(_prefixed(one_step_mlp(), "model.")), path)
    assert_input_error(capsys, "inspect", path, match="holds a state dict, not a model; load it as "
                                                      "package.module:factory --weights")


NEUROBENCH = Path("/work/.mirror/NeuroBench+neurobench/repo")


class NeuroBenchSCNN(nn.Module):
    """NeuroBench's ``examples/nehar/SCNN.py`` as published (the layers its checkpoint fills)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv1d(6, 200, 2, padding=4)
        self.max1 = nn.MaxPool1d(2)
        self.leaky1 = snn.Leaky(beta=0.4, init_hidden=True, threshold=0.002)
        self.conv2 = nn.Conv1d(200, 256, kernel_size=1)
        self.max2 = nn.MaxPool1d(2)
        self.leaky2 = snn.Leaky(beta=0.3, init_hidden=True, threshold=0.001)
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(512, 7)
        self.leaky3 = snn.Leaky(beta=0.5, output=True, init_hidden=True, threshold=0.001)


@pytest.mark.skipif(not (NEUROBENCH / "HEAD").exists() and not (NEUROBENCH / ".git").exists(),
                    reason="no NeuroBench checkout here")
def test_neurobench_wisdm_lightning_checkpoint_loads(tmp_path):
    import subprocess

    path = tmp_path / "WISDM_snnTorch.ckpt"
    with path.open("wb") as f:
        subprocess.run(["git", "-C", str(NEUROBENCH), "show", "HEAD:examples/nehar/model_data/WISDM_snnTorch.ckpt"],
                       stdout=f, check=True)
    from snncompress.fileformat.loading import load_weights

    model = NeuroBenchSCNN()
    load_weights(model, path)
    assert float(model.leaky1.threshold) == pytest.approx(0.002) and model.conv1.weight.abs().sum() > 0


# -- padding="same" -------------------------------------------------------------------------------------

def _same_net() -> nn.Sequential:
    """Even kernels and a dilation under padding="same": torch pads the odd zero after."""
    from tests.models import _init

    return _init(nn.Sequential(
        nn.Conv2d(2, 4, 4, padding="same"), snn.Leaky(beta=0.5, init_hidden=True),
        nn.Conv2d(4, 4, 2, padding="same", dilation=3), snn.Leaky(beta=0.5, init_hidden=True),
        nn.Flatten(), nn.Linear(4 * 6 * 6, CLASSES), snn.Leaky(beta=0.5, init_hidden=True, output=True),
    ), seed=26, gain=1.0)


def _same_net_1d() -> nn.Sequential:
    from tests.models import _init

    return _init(nn.Sequential(
        nn.Conv1d(2, 4, 4, padding="same", dilation=2), snn.Leaky(beta=0.5, init_hidden=True),
        nn.Flatten(), nn.Linear(4 * 6, CLASSES), snn.Leaky(beta=0.5, init_hidden=True, output=True),
    ), seed=28, gain=2.0)


@pytest.mark.parametrize("build,shape", [(_same_net, (2, 6, 6)), (_same_net_1d, (2, 6))])
def test_the_integer_reference_pads_same_as_torch(build, shape):
    from torch.utils.data import TensorDataset

    from snncompress.data.loading import DataBundle, DataOptions
    from snncompress.integer.verify import verify
    from snncompress.passes.base import PassContext
    from snncompress.passes.quantize import QuantizeConfig
    from snncompress.passes.quantize import apply as quantize

    x = torch.round(torch.rand(8, *shape, generator=torch.Generator().manual_seed(5)) * 16) / 16
    data = DataBundle("same", TensorDataset(x, torch.arange(8) % CLASSES), False, T, CLASSES,
                      DataOptions(time_steps=T, batch_size=4))
    model = build()
    quantize(model, QuantizeConfig(weight_quant="int8", membrane_quant="int8", calibration="none"),
             PassContext(data=data))
    result = verify(model, data)
    assert result.bit_exact, str(result.first)
    assert all(v > 0 for v in result.spikes.values())
    padded = [op for op in result.program.ops if op.op == "synaptic" and op.kind != "linear"]
    assert padded[0].padding_end != () or padded[0].padding != padded[0].padding_end


def test_same_padding_exports_to_onnx_and_nir(tmp_path):
    from snncompress.export.nir_export import export_nir
    from snncompress.export.nir_io import load_nir
    from snncompress.export.onnx_export import export_onnx

    model, x = _same_net(), torch.rand(4, 2, 6, 6, generator=torch.Generator().manual_seed(6))
    # onnxruntime refuses auto_pad SAME_UPPER with a dilation: the step graph pads explicitly
    result = export_onnx(model, tmp_path / "same.onnx", x[0], 4)
    assert any(n.startswith("verified in onnxruntime") for n in result.notes)
    result = export_nir(model, tmp_path / "same.nir", x[0])
    assert any("pad 'same' with an even kernel" in n and "'0', '2'" in n for n in result.notes)
    loaded = load_nir(tmp_path / "same.nir")
    with torch.no_grad():
        ours = SNNRunner(model).run(x, is_sequence=False, time_steps=4).spikes
        back = SNNRunner(loaded).run(x, is_sequence=False, time_steps=4).spikes
    assert torch.equal(ours, back) and ours.sum() > 0


# -- ONNX verification: a rounding tie of the stored membrane -------------------------------------------

def _tie_net(bias_shift: float = 0.0, neuron: int = 0) -> tuple[nn.Sequential, torch.Tensor]:
    """Linear(6 -> 5) - Leaky with an int8 stored membrane (unit 1/64): neuron 0's membrane at step 0 lies
    exactly half-way between two levels (24.5 units; torch rounds half to even, to 24), the others' not.
    ``bias_shift`` moves one
    neuron's bias: the graph of such a model computes what another summation order could round to."""
    from snncompress.models.membrane import install_membrane_quantizer
    from snncompress.quant.membrane import membrane_quantizer

    model = nn.Sequential(nn.Linear(6, 5), snn.Leaky(beta=0.5, threshold=1.0, init_hidden=True, output=True))
    x = torch.full((1, 6), 0.5)
    with torch.no_grad():
        model[0].weight.copy_(torch.arange(30, dtype=torch.float32).reshape(5, 6) % 4 / 16)  # exact sums
        levels = torch.tensor([24.5, 20.2, 21.2, 22.2, 23.2])  # neuron 0 half-way, the others not
        model[0].bias.copy_(levels / 64 - model[0].weight @ x[0])
        model[0].bias[neuron] += bias_shift
    quantizer, grid = membrane_quantizer("int8", None, None)
    install_membrane_quantizer(model, "1", quantizer, grid=grid)
    return model, x


def test_a_membrane_rounding_tie_is_reported_as_float_rounding(tmp_path):
    from snncompress.export.onnx_export import export_onnx, verify_onnx

    model, x = _tie_net()
    assert float(model[0](x)[0, 0]) * 64 == 24.5
    export_onnx(_tie_net(bias_shift=1e-7)[0], tmp_path / "tie.onnx", x[0], 3, verify=False)
    note = verify_onnx(model, tmp_path / "tie.onnx", x, 3)
    assert note.startswith("verified in onnxruntime with a float32 rounding tie")
    assert "at step 0 layer '1' stores 1 membrane value(s) 0 from the midpoint between two levels " \
           "(v / unit = 24.5)" in note
    assert "layer '1' mem differs by 0.0156" in note


def test_a_level_off_elsewhere_is_still_refused(tmp_path):
    from snncompress.export.onnx_export import export_onnx, verify_onnx

    model, x = _tie_net()
    export_onnx(_tie_net(bias_shift=0.7 / 64, neuron=2)[0], tmp_path / "off.onnx", x[0], 3, verify=False)
    with pytest.raises(DomainError, match="no stored membrane at a level's rounding midpoint"):
        verify_onnx(model, tmp_path / "off.onnx", x, 3)


# -- notes about the recorded run, for sequence data ----------------------------------------------------

def test_a_file_run_on_sequences_says_nothing_untrue_about_time_steps(capsys, tmp_path, frames_file):
    out = tmp_path / "q.safetensors"
    code, _, err = cli(capsys, "quantize", "tests.models:one_step_conv_net", "--data", frames_file,
                       "--weight-quant", "int8", "--membrane-quant", "int8", *NO_CALIBRATION, "-o", out)
    assert code == 0, err
    code, stdout, err = cli(capsys, "evaluate", out, "--data", frames_file, "--trust-code", "--json", "-")
    assert code == 0 and json.loads(stdout)["time_steps"] == T
    assert "--time-steps" not in err and "note" not in err
    code, _, err = cli(capsys, "evaluate", out, "--data", frames_file, "--trust-code", "-T", 7)
    assert code == 0, err
    assert f"note: --time-steps 7 does not apply: {frames_file} holds sequences of {T} steps, which run as they " \
           "are" in err
    assert "as asked" not in err
    code, _, err = cli(capsys, "export", out, "--trust-code", "-o", tmp_path / "q.onnx")
    assert code == 0, err
    assert f"records how it was run; using --time-steps {T}" in err  # the T of the sequences it ran on


# -- NIR files of other producers -----------------------------------------------------------------------

def _cuba(n: int, dt: float = 1e-3) -> nir.CubaLIF:
    return nir.CubaLIF(tau_syn=np.full(n, 0.01), tau_mem=np.full(n, 0.02), r=np.full(n, 0.02 * np.exp(-dt / 0.02) / dt),
                       v_leak=np.zeros(n), v_threshold=np.ones(n))


def _graph(names: tuple[str, str, str, str], neuron, metadata: dict | None = None) -> nir.NIRGraph:
    w1 = np.random.default_rng(0).random((8, 6)).astype(np.float32)
    w2 = np.random.default_rng(1).random((3, 8)).astype(np.float32)
    a, n1, b, n2 = names
    nodes = {"input": nir.Input(np.array([6])), a: nir.Linear(w1), n1: neuron(8), b: nir.Linear(w2), n2: neuron(3),
             "output": nir.Output(np.array([3]))}
    chain = ["input", a, n1, b, n2, "output"]
    return nir.NIRGraph(nodes, list(zip(chain[:-1], chain[1:], strict=True)), metadata=metadata or {})


def test_rockpool_node_names_select_its_dynamics(tmp_path, capsys):
    from snncompress.export.nir_io import NirReadOptions, load_nir

    path = tmp_path / "rockpool.nir"
    nir.write(path, _graph(("0_LinearTorch", "1_LIFTorch", "2_LinearTorch", "3_LIFTorch"), _cuba))
    model = load_nir(path)
    assert type(model[1]).__name__ == "MultiSpikeSynaptic"
    err = capsys.readouterr().err
    assert "read with Rockpool's own dynamics: its node names (1_LIFTorch, 3_LIFTorch) are Rockpool's " \
           "(--nir-producer nir reads NIR's equations instead)" in err
    plain = load_nir(path, NirReadOptions(producer="nir"))
    assert type(plain[1]).__name__ == "Synaptic"
    assert "own dynamics" not in capsys.readouterr().err
    # the same graph under other names: nothing says Rockpool wrote it, so the note names the option
    path = tmp_path / "renamed.nir"
    nir.write(path, _graph(("0", "1", "2", "3"), _cuba))
    assert type(load_nir(path)[1]).__name__ == "Synaptic"
    assert "if Rockpool wrote it, --nir-producer rockpool (CubaLIF as its LIFTorch" in capsys.readouterr().err


def test_a_producer_named_in_metadata_is_used(tmp_path, capsys):
    from snncompress.export.nir_io import load_nir

    def if_node(n):
        return nir.IF(r=np.ones(n), v_threshold=np.ones(n))

    path = tmp_path / "sinabs.nir"
    nir.write(path, _graph(("0", "1", "2", "3"), if_node, metadata={"producer": "sinabs 3.1.3"}))
    model = load_nir(path)
    assert type(model[1]).__name__ == "MultiSpikeLeaky"
    assert "the graph's metadata names it (producer = 'sinabs 3.1.3')" in capsys.readouterr().err


def test_a_graph_that_does_not_say_names_the_producer_option(tmp_path, capsys):
    from snncompress.export.nir_io import load_nir

    def if_node(n):
        return nir.IF(r=np.ones(n), v_threshold=np.ones(n))

    path = tmp_path / "bare.nir"
    nir.write(path, _graph(("0", "1", "2", "3"), if_node))
    load_nir(path)
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == (f"note: {path}: it does not say which software wrote it and was read by NIR's own equations; "
                    "if sinabs wrote it, pass --nir-producer sinabs (IF/LIF as its multi-spike IAF/LIF, tau in time "
                    "steps): its spikes differ otherwise")
