"""Files and models users have: training checkpoints, models whose own code fails, modules pickled from the
working directory (issue 16, item 8)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from snncompress.errors import ModelLoadError, ModelRunError
from snncompress.fileformat.loading import load_model
from snncompress.sim.runner import SNNRunner
from tests.cli.support import assert_input_error, cli
from tests.models import broken_forward_net, broken_step_net, example_inputs, leaky_mlp


def _halved(model):
    return {k: v * 0.5 if v.is_floating_point() else v for k, v in model.state_dict().items()}


@pytest.mark.parametrize("key", ["model_state_dict", "state_dict", "model", "net"])
def test_training_checkpoint_gives_its_state_dict_and_names_the_key(key, tmp_path, capsys):
    expected = _halved(leaky_mlp())
    path = tmp_path / "ckpt.pt"
    torch.save({"epoch": 7, key: expected, "optimizer_state_dict": {"state": {}, "param_groups": [{"lr": 1e-3}]},
                "loss": 0.25}, path)
    model = load_model("tests.models:leaky_mlp", weights=path)
    assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())
    err = capsys.readouterr().err
    assert f"using the state dict under '{key}'" in err and "epoch" in err and "optimizer_state_dict" in err


def test_checkpoint_without_a_state_dict_lists_its_keys(tmp_path):
    path = tmp_path / "ckpt.pt"
    torch.save({"epoch": 3, "weights_of_fc1": [1.0, 2.0]}, path)
    with pytest.raises(ModelLoadError, match=r"not hold a state dict of tensors: a dict with keys 'epoch', "
                                             r"'weights_of_fc1' and none under model_state_dict"):
        load_model("tests.models:leaky_mlp", weights=path)


def test_checkpoint_on_the_cli_loads_and_evaluates(capsys, tmp_path):
    path = tmp_path / "ckpt.pt"
    torch.save({"model_state_dict": leaky_mlp().state_dict(), "epoch": 1}, path)
    code, out, err = cli(capsys, "inspect", "tests.models:leaky_mlp", "--weights", path, "--json", "-")
    assert code == 0 and "using the state dict under 'model_state_dict'" in err


def test_exception_in_a_layer_names_the_layer():
    model = broken_step_net()
    with pytest.raises(ModelRunError) as info, torch.no_grad():
        SNNRunner(model).run(example_inputs("tutorial_net"), is_sequence=False, time_steps=3)
    message = str(info.value)
    assert message.startswith("layer 'lif2' (Leaky) failed on input [4, 8]: TypeError:"), message
    assert "\n" not in message


def test_exception_in_the_models_own_forward_names_the_model():
    with pytest.raises(ModelRunError, match=r"^the model's forward \(BrokenForwardNet\) failed .*KeyError: 'eval'"):
        with torch.no_grad():
            SNNRunner(broken_forward_net()).run(example_inputs("tutorial_net"), is_sequence=False, time_steps=3)


@pytest.mark.parametrize("factory, match", [
    ("broken_step_net", "layer 'lif2' (Leaky) failed"),
    ("broken_forward_net", "the model's forward (BrokenForwardNet) failed"),
])
def test_exception_in_the_users_forward_is_one_line_exit_2(capsys, write_tensors, factory, match):
    data = write_tensors("d.safetensors", x=torch.rand(6, 8), y=torch.arange(6) % 4)
    assert_input_error(capsys, "evaluate", f"tests.models:{factory}", "--data", data, match=match)


def test_shape_bug_inside_a_layer_is_named_in_the_data_error(capsys, write_tensors):
    data = write_tensors("flat.safetensors", x=torch.rand(6, 8), y=torch.arange(6) % 4)
    line = assert_input_error(capsys, "evaluate", "tests.models:conv2d_net", "--data", data,
                              match="data samples of shape [8] do not fit the model")
    assert "layer '0' (Conv2d) failed" in line


def test_trust_pickle_finds_a_module_in_the_working_directory(tmp_path, tests_importable):
    (tmp_path / "mynet.py").write_text(textwrap.dedent("""
        import snntorch as snn
        import torch
        from torch import nn

        def spike_grad(x):
            return snn.surrogate.ATan.apply(x, 2.0)

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc1 = nn.Linear(8, 4)
                self.lif1 = snn.Leaky(beta=0.5, spike_grad=spike_grad)

            def forward(self, x):
                mem = self.lif1.init_leaky()
                spk_rec, mem_rec = [], []
                for _ in range(3):
                    spk, mem = self.lif1(self.fc1(x), mem)
                    spk_rec.append(spk)
                    mem_rec.append(mem)
                return torch.stack(spk_rec), torch.stack(mem_rec)
        """))
    env = {k: v for k, v in tests_importable.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, "-c", "import torch, mynet; torch.save(mynet.Net(), 'net.pt')"],
                   cwd=tmp_path, env=env, check=True)
    script = ("import sys; sys.path = [p for p in sys.path if p not in ('', '.')]; "
              "from snncompress.cli.app import main; main(['inspect', 'net.pt', '--trust-pickle', '--json', '-'])")
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=tests_importable, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert '"total_parameters": 36' in done.stdout


def test_trust_pickle_names_a_module_that_cannot_be_found(tmp_path, tests_importable):
    (tmp_path / "gone.py").write_text("from torch import nn\nclass Net(nn.Sequential):\n    pass\n")
    env = {k: v for k, v in tests_importable.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, "-c", "import torch, gone; torch.save(gone.Net(), 'net.pt')"],
                   cwd=tmp_path, env=env, check=True)
    (tmp_path / "gone.py").unlink()
    with pytest.raises(ModelLoadError, match=r"needs module 'gone', which is not importable"):
        load_model(str(tmp_path / "net.pt"), trust_pickle=True)
