"""Round trips with the NIR of other frameworks (issue 16, items 6 and 7), on tiny models built with each.

Each test skips when its package is not installed; they are not in the core requirements (``pip install
snncompress[interop]`` into an environment of its own: sinabs pins nir <= 1.0.4). What is checked:

* sinabs -> NIR -> snncompress (``--nir-spike multi``, sinabs's default IAF; ``--nir-producer sinabs`` for its
  default LIF too): spike counts identical;
* snncompress ``--nir-compat`` -> sinabs's ``from_nir``: identical. Where the interpreter the environment
  was made from has a newer nir (the shared one: 1.0.8), the file is written by that one, through the CLI,
  so the compat output of a nir >= 1.0.5 install is what sinabs reads;
* Norse -> NIR -> snncompress, read with ``--nir-dt dt**2`` (Norse writes ``tau = dt / tau_mem_inv``);
  snncompress IF and LIF (``--nir-compat``) -> Norse's ``from_nir`` (given our dt): identical;
* SpikingJelly IF and LIF -> NIR -> snncompress: identical (its IF's ``r = 1/dt`` read as a unit gain);
  snncompress LIF (with and without ``--nir-compat``) -> SpikingJelly's ``import_from_nir``: identical.
  SpikingJelly 2.0.0 needs nir >= 1.0.5 (it writes ``v_reset``), so it cannot share sinabs's environment;
* Rockpool ``LIFTorch`` -> NIR -> snncompress ``--nir-producer rockpool`` (or none: its node names show it):
  spike counts identical.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import nir
import pytest
import torch
from torch import nn

from snncompress.export.nir_export import export_nir
from snncompress.export.nir_io import NirReadOptions, load_nir
from snncompress.sim.runner import SNNRunner

T, B = 6, 5


def _x(seed: int = 1) -> torch.Tensor:
    return torch.rand(B, T, 6, generator=torch.Generator().manual_seed(seed))  # [B, T, features]


def _ours(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return SNNRunner(model).run(x, is_sequence=True, time_steps=T).spikes  # [T, B, ...]


def _fill(model: nn.Module, scale: float, seed: int = 0) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_((torch.rand(p.shape, generator=gen) * 1.5 - 0.3) * scale)
    return model


def _newest_nir_writes(src: Path, out: Path, *options: str) -> None:
    """``snncompress export src -o out --nir-compat`` under the interpreter this environment was made from
    when its nir is newer (the compat output of nir >= 1.0.5), else in this one."""
    base = getattr(sys, "_base_executable", sys.executable)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    probe = subprocess.run([base, "-c", "import nir; print(nir.version)"], capture_output=True, text=True, env=env)
    python = base if probe.returncode == 0 and probe.stdout.strip() != nir.version else sys.executable
    done = subprocess.run([python, "-m", "snncompress", "export", str(src), "-o", str(out), "--format", "nir",
                           "--nir-compat", *options], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr


# -- sinabs ------------------------------------------------------------------------------------------

def _sinabs_net():
    sl = pytest.importorskip("sinabs.layers")
    return _fill(nn.Sequential(nn.Linear(6, 8), sl.IAFSqueeze(batch_size=B), nn.Linear(8, 3),
                               sl.IAFSqueeze(batch_size=B)), scale=1.0)


def _sinabs_run(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    for layer in model.modules():
        if hasattr(layer, "reset_states"):
            layer.reset_states()
    with torch.no_grad():
        out = model(x.reshape(B * T, -1))
    out = out[0] if isinstance(out, tuple) else out  # nirtorch's GraphExecutor returns (output, state)
    return out.reshape(B, T, -1).transpose(0, 1)


def test_sinabs_default_mode_reads_with_sinabs_spike_counts(tmp_path):
    sinabs = pytest.importorskip("sinabs")
    net = _sinabs_net()
    nir.write(tmp_path / "sinabs.nir", sinabs.to_nir(net, torch.rand(B, 6)))
    expected = _sinabs_run(net, _x())
    assert expected.max() > 1  # several spikes per step: the mode matters
    ours = load_nir(tmp_path / "sinabs.nir", NirReadOptions(spike="multi"))
    assert torch.equal(_ours(ours, _x()), expected)
    single = _ours(load_nir(tmp_path / "sinabs.nir"), _x())
    assert single.sum() < expected.sum()  # NIR's one-spike reading is not sinabs's network


@pytest.mark.parametrize("tau", [5.0, 20.0])
def test_sinabs_default_lif_reads_with_sinabs_producer(tau, tmp_path):
    sinabs = pytest.importorskip("sinabs")
    sl = pytest.importorskip("sinabs.layers")
    net = _fill(nn.Sequential(nn.Linear(6, 8), sl.LIFSqueeze(tau_mem=tau, batch_size=B), nn.Linear(8, 3),
                              sl.LIFSqueeze(tau_mem=tau, batch_size=B)), scale=8.0)  # norm_input=True, MultiSpike
    nir.write(tmp_path / "sinabs.nir", sinabs.to_nir(net, torch.rand(B, 6)))
    expected = _sinabs_run(net, _x())
    assert expected.max() > 1
    ours = load_nir(tmp_path / "sinabs.nir", NirReadOptions(producer="sinabs"))
    assert torch.equal(_ours(ours, _x()), expected)


def test_our_compat_nir_loads_in_sinabs_with_the_same_spikes(tmp_path):
    sinabs = pytest.importorskip("sinabs")
    nir.write(tmp_path / "sinabs.nir", sinabs.to_nir(_sinabs_net(), torch.rand(B, 6)))
    _newest_nir_writes(tmp_path / "sinabs.nir", tmp_path / "ours.nir", "--nir-spike", "multi")
    ours = load_nir(tmp_path / "ours.nir")
    theirs = sinabs.from_nir(nir.read(tmp_path / "ours.nir"), batch_size=B)
    expected = _ours(ours, _x())
    assert expected.sum() > 0 and torch.equal(_sinabs_run(theirs, _x()), expected)


# -- Norse -------------------------------------------------------------------------------------------

def _norse_run(model, x: torch.Tensor) -> torch.Tensor:
    state, out = None, []
    with torch.no_grad():
        for t in range(x.shape[1]):
            z, state = model(x[:, t], state)
            out.append(z)
    return torch.stack(out)


def test_norse_lif_box_reads_with_norse_spikes(tmp_path):
    nt = pytest.importorskip("norse.torch")
    net = _fill(nt.SequentialState(nn.Linear(6, 8), nt.LIFBoxCell(), nn.Linear(8, 3), nt.LIFBoxCell()), scale=9.0)
    nir.write(tmp_path / "norse.nir", nt.to_nir(net, torch.rand(1, 6)))  # dt = 1e-3, tau written as dt/tau_inv
    expected = _norse_run(net, _x())
    assert expected.sum() > 0
    with pytest.raises(Exception, match=r"outside \[dt, inf\]"):
        load_nir(tmp_path / "norse.nir")  # tau = 1e-5 read at 1e-4
    ours = load_nir(tmp_path / "norse.nir", NirReadOptions(dt=1e-6))
    assert torch.equal(_ours(ours, _x()), expected)


@pytest.mark.parametrize("beta", [1.0, 0.8])  # NIR's IF; LIF (r folded into the threshold by --nir-compat)
def test_our_compat_nir_loads_in_norse_with_the_same_spikes(beta, tmp_path):
    nt = pytest.importorskip("norse.torch")
    import snntorch as snn

    def lif(**kw):
        return snn.Leaky(beta=beta, init_hidden=True, reset_mechanism="zero", reset_delay=False, **kw)

    model = _fill(nn.Sequential(nn.Linear(6, 8), lif(), nn.Linear(8, 3), lif(output=True)), scale=1.0).eval()
    export_nir(model, tmp_path / "ours.nir", torch.rand(6), compat=True)  # at snncompress's dt = 1e-4
    theirs = nt.from_nir(nir.read(tmp_path / "ours.nir"), dt=1e-4)
    expected = _ours(model, _x())
    assert expected.sum() > 0 and torch.equal(_norse_run(theirs, _x()), expected)


# -- SpikingJelly ------------------------------------------------------------------------------------

def _sj_exchange():
    if "v_reset" not in {f.name for f in dataclasses.fields(nir.LIF)}:
        pytest.skip(f"SpikingJelly's NIR exchange needs nir >= 1.0.5 (nir {nir.version} here)")
    return pytest.importorskip("spikingjelly.activation_based.nir_exchange")


def _sj_net(kind: str):
    neuron = pytest.importorskip("spikingjelly.activation_based.neuron")
    from spikingjelly.activation_based import functional, layer

    def make():
        return neuron.IFNode(v_reset=0.0) if kind == "if" else neuron.LIFNode(tau=2.0, v_reset=0.0)

    net = _fill(nn.Sequential(layer.Linear(6, 8), make(), layer.Linear(8, 3), make()),
                scale=0.6 if kind == "if" else 1.5)
    functional.reset_net(net)
    return net


def _sj_run(net, x: torch.Tensor) -> torch.Tensor:
    from spikingjelly.activation_based import functional

    functional.reset_net(net)
    with torch.no_grad():
        return torch.stack([net(x[:, t]) for t in range(x.shape[1])])


@pytest.mark.parametrize("kind", ["if", "lif"])
def test_spikingjelly_reads_with_spikingjelly_spikes(kind, tmp_path, capsys):
    export_to_nir = _sj_exchange().export_to_nir
    net = _sj_net(kind)
    export_to_nir(net, torch.rand(B, 6), save_path=tmp_path / "sj.nir")  # dt = 1e-4, SpikingJelly's default
    expected = _sj_run(net, _x())
    assert expected.sum() > 0 and not torch.all(expected == 1)
    ours = load_nir(tmp_path / "sj.nir")
    assert torch.equal(_ours(ours, _x()), expected)
    if kind == "if":  # SpikingJelly writes r = 1/dt for a unit gain: said, not silently folded
        assert "IF r = 10000 = 1/dt: read as NIR's continuous-time gain" in capsys.readouterr().err


@pytest.mark.parametrize("compat", [False, True])
def test_our_lif_nir_loads_in_spikingjelly_with_the_same_spikes(compat, tmp_path):
    exchange = _sj_exchange()
    export_to_nir, import_from_nir = exchange.export_to_nir, exchange.import_from_nir
    export_to_nir(_sj_net("lif"), torch.rand(B, 6), save_path=tmp_path / "sj.nir")
    ours = load_nir(tmp_path / "sj.nir")
    export_nir(ours, tmp_path / "ours.nir", torch.rand(6), compat=compat)
    theirs = import_from_nir(tmp_path / "ours.nir")
    state, out = None, []
    with torch.no_grad():
        for t in range(T):
            z, state = theirs(_x()[:, t], state)
            out.append(z)
    expected = _ours(ours, _x())
    assert expected.sum() > 0 and torch.equal(torch.stack(out), expected)


# -- Rockpool ----------------------------------------------------------------------------------------

def test_rockpool_lif_torch_reads_with_rockpool_spike_counts(tmp_path):
    pytest.importorskip("rockpool")
    from rockpool.nn.combinators import Sequential
    from rockpool.nn.modules import LIFTorch, LinearTorch
    from rockpool.nn.modules.torch.nir import to_nir

    torch.manual_seed(0)  # Rockpool draws its initial weights from the global generator
    net = Sequential(LinearTorch((6, 8)), LIFTorch(8), LinearTorch((8, 3)), LIFTorch(3))  # dt = 1e-3
    nir.write(tmp_path / "rockpool.nir", to_nir(net))
    x = _x() * 3
    with torch.no_grad():
        expected = net(x)[0].transpose(0, 1)  # Rockpool runs [B, T, N]
    assert expected.max() > 1  # LIFTorch fires several spikes per step
    ours = load_nir(tmp_path / "rockpool.nir", NirReadOptions(producer="rockpool"))
    assert torch.equal(_ours(ours, x), expected)
    # without the option: Rockpool's node names (1_LIFTorch) say who wrote it
    assert torch.equal(_ours(load_nir(tmp_path / "rockpool.nir"), x), expected)
    plain = _ours(load_nir(tmp_path / "rockpool.nir", NirReadOptions(dt=1e-3, reset="subtract", producer="nir")), x)
    assert not torch.equal(plain, expected)  # NIR's Euler reading is not Rockpool's network
