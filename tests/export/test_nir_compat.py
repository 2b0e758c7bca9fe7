"""NIR that readers pinned to nir 1.0.4 load (issue 16, item 7): ``--nir-compat`` leaves out what nir 1.0.4's
node classes do not take (``v_reset`` at 0, metadata of Conv2d/Linear/Input/Output), keeps the neurons'
metadata, and our own importer still reads the file back with the same spikes.

A real nir 1.0.4 check runs when ``SNNCOMPRESS_NIR_1_0_4`` names a folder holding nir 1.0.4 (e.g.
``pip install --no-deps --target DIR nir==1.0.4``); it is skipped otherwise."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import h5py
import nir
import numpy as np
import pytest
import torch

from snncompress.errors import UnsupportedLayerError
from snncompress.export.nir_compat import NIR_1_0_4_KEYS, make_compatible
from snncompress.export.nir_export import export_nir
from snncompress.export.nir_io import load_nir
from snncompress.fileformat.loading import load_model
from snncompress.sim.runner import SNNRunner
from tests.cli.support import cli
from tests.models import TINY_MODELS

MODELS = ["leaky_mlp", "synaptic_mlp", "rleaky_mlp", "rsynaptic_mlp", "subtract_reset_mlp", "lapicque_mlp"]


def _keys(path):
    out = []

    def walk(group, where):
        kind = group["type"][()].decode()
        out.append((where, kind, set(group.keys()) - {"type"}))
        if kind == "NIRGraph":
            for name, child in group["nodes"].items():
                walk(child, f"{where}.{name}")

    with h5py.File(path, "r") as f:
        walk(f["node"], "")
    return out


@pytest.mark.parametrize("name", MODELS)
def test_compat_file_holds_only_what_nir_1_0_4_takes_and_reads_back_the_same(name, tmp_path):
    tm = TINY_MODELS[name]
    model = tm.build()
    path = tmp_path / "c.nir"
    result = export_nir(model, path, torch.rand(tm.input_shape), compat=True)
    dropped = "v_reset of" if "v_reset" in {f.name for f in dataclasses.fields(nir.LIF)} else ""  # nir >= 1.0.5
    assert any(n.startswith("written for nir 1.0.4 readers") and dropped in n for n in result.notes)
    for where, kind, keys in _keys(path):
        assert keys <= NIR_1_0_4_KEYS[kind], (where, kind, keys - NIR_1_0_4_KEYS[kind])
        assert "v_reset" not in keys
    graph = nir.read(path)
    lifs = [n for n in graph.nodes.values() if isinstance(n, nir.LIF)]
    if name in ("leaky_mlp", "subtract_reset_mlp"):  # Norse's and sinabs's importers ignore a LIF's r
        assert lifs and all(np.all(np.asarray(n.r) == 1) for n in lifs)
    neuron_meta = [k for _, kind, k in _keys(path) if kind in ("LIF", "CubaLIF", "IF")]
    assert neuron_meta and all("metadata" in k for k in neuron_meta)  # reset semantics kept
    back = load_nir(path)
    x = tm.example_inputs(6, seed=2)
    with torch.no_grad():
        expected = SNNRunner(model).run(x, is_sequence=False, time_steps=4).spikes
        got = SNNRunner(back).run(x, is_sequence=False, time_steps=4).spikes
    assert expected.sum() > 0 and torch.equal(got, expected)


def test_a_nonzero_v_reset_has_no_nir_1_0_4_form(tmp_path):
    graph = nir.NIRGraph(nodes={"input": nir.Input(np.array([2])),
                                "lif": nir.LIF(tau=np.ones(2), r=np.ones(2), v_leak=np.zeros(2),
                                               v_threshold=np.ones(2), v_reset=np.full(2, 0.5)),
                                "output": nir.Output(np.array([2]))},
                         edges=[("input", "lif"), ("lif", "output")])
    nir.write(tmp_path / "r.nir", graph)
    with pytest.raises(UnsupportedLayerError, match="'lif' \\(LIF\\) has a non-zero v_reset"):
        make_compatible(tmp_path / "r.nir")


def test_cli_nir_compat(capsys, tmp_path):
    code, out, err = cli(capsys, "export", "demo", "-o", tmp_path / "d.nir", "--nir-compat", "--json", "-")
    assert code == 0, err
    assert any("nir 1.0.4" in n for n in json.loads(out)["notes"])
    code, _, err = cli(capsys, "export", "demo", "-o", tmp_path / "d.onnx", "--nir-compat")
    assert code == 2 and "--nir-compat applies to NIR export only" in err


@pytest.mark.skipif(not os.environ.get("SNNCOMPRESS_NIR_1_0_4"),
                    reason="set SNNCOMPRESS_NIR_1_0_4 to a nir 1.0.4 install")
@pytest.mark.parametrize("compat", [False, True])
def test_a_real_nir_1_0_4_reads_the_compat_file(compat, tmp_path):
    path = tmp_path / "d.nir"
    export_nir(load_model("demo"), path, torch.rand(1, 8, 8), compat=compat)
    env = {**os.environ, "PYTHONPATH": os.environ["SNNCOMPRESS_NIR_1_0_4"]}
    done = subprocess.run([sys.executable, "-c", "import nir, sys; assert nir.version == '1.0.4'; "
                           f"print(len(nir.read({str(path)!r}).nodes))"], env=env, capture_output=True, text=True)
    if compat:
        assert done.returncode == 0, done.stderr
    else:
        assert done.returncode != 0 and "unexpected keyword argument" in done.stderr
