"""Reading what a NIR graph leaves open (issue 16, item 6): ``--nir-dt`` and ``--nir-reset``, the graph's own
``dt`` metadata, and one line per node whose reading is ambiguous."""

from __future__ import annotations

import nir
import numpy as np
import pytest
import torch

from snncompress.errors import InputError, UnsupportedLayerError
from snncompress.export.nir_export import model_to_nir
from snncompress.export.nir_io import NirReadOptions, load_nir
from tests.cli.support import assert_input_error, cli
from tests.export.export_nets import inputs, leaky_linear, run


def _bare(tmp_path, model, dt: float, graph_metadata: dict | None = None):
    """The model's NIR graph at ``dt`` as another tool writes it: no snncompress metadata."""
    graph, _ = model_to_nir(model, inputs((6,))[0], dt=dt)
    for node in graph.nodes.values():
        node.metadata = {}
    graph.metadata = dict(graph_metadata or {})
    path = tmp_path / "bare.nir"
    nir.write(path, graph)
    return path


def test_a_graph_written_at_another_dt_is_read_right_with_nir_dt(tmp_path, capsys):
    model = leaky_linear("zero")  # NIR's own reset: zero (same spikes as snnTorch's delayed zero reset for Leaky)
    path = _bare(tmp_path, model, dt=1e-3)
    x = inputs((6,))
    wrong = load_nir(path)  # read at snnTorch's 1e-4: other betas
    lines = [ln for ln in capsys.readouterr().err.strip().splitlines() if ": NIR node '" in ln and "no dt" in ln]
    assert len(lines) == 2 and all("no dt recorded: time constants read with dt = 0.0001" in ln for ln in lines)
    assert not torch.allclose(wrong[1].beta, model[1].beta)
    right = load_nir(path, NirReadOptions(dt=1e-3, reset="zero"))
    assert capsys.readouterr().err == ""  # nothing left open
    assert torch.allclose(right[1].beta, model[1].beta) and torch.equal(run(right, x).spikes, run(model, x).spikes)


def test_the_graphs_own_dt_metadata_is_used(tmp_path, capsys):
    model = leaky_linear("zero")
    path = _bare(tmp_path, model, dt=1e-3, graph_metadata={"dt": 1e-3})
    loaded = load_nir(path, NirReadOptions(reset="zero"))
    assert capsys.readouterr().err == ""
    assert torch.allclose(loaded[1].beta, model[1].beta)
    load_nir(path, NirReadOptions(dt=2e-3, reset="zero"))
    assert "records dt = 0.001; reading it with dt = 0.002 as asked" in capsys.readouterr().err


def test_nir_reset_applies_to_nodes_that_record_none(tmp_path, capsys):
    path = _bare(tmp_path, leaky_linear("subtract"), dt=1e-4, graph_metadata={"dt": 1e-4})
    loaded = load_nir(path, NirReadOptions(reset="subtract"))
    assert capsys.readouterr().err == ""
    assert all(m.reset_mechanism == "subtract" and not m.reset_delay for m in (loaded[1], loaded[3]))


def test_a_tau_below_dt_names_the_fix(tmp_path):
    path = _bare(tmp_path, leaky_linear("zero"), dt=1e-5)  # time constants of a few 1e-5 s, read at 1e-4
    with pytest.raises(UnsupportedLayerError, match=r"outside \[dt, inf\] for dt = 0.0001.*--nir-dt at most"):
        load_nir(path)
    load_nir(path, NirReadOptions(dt=1e-5, reset="zero"))


@pytest.mark.parametrize("kwargs, match", [({"dt": 0.0}, "--nir-dt must be a positive"),
                                           ({"reset": "hard"}, "--nir-reset 'hard' is unknown")])
def test_bad_read_options(kwargs, match):
    with pytest.raises(InputError, match=match):
        NirReadOptions(**kwargs)


def test_cli_nir_options(capsys, tmp_path, write_tensors):
    path = _bare(tmp_path, leaky_linear("zero"), dt=1e-3)
    data = write_tensors("d.safetensors", x=torch.rand(5, 6), y=torch.arange(5) % 4)
    code, _, err = cli(capsys, "evaluate", path, "--data", data, "--nir-dt", "1e-3", "--nir-reset", "zero",
                       "--json", "-")
    assert code == 0 and "NIR node" not in err, err
    code, _, err = cli(capsys, "inspect", path, "--json", "-")
    assert code == 0 and err.count("no dt recorded") == 2
    assert_input_error(capsys, "inspect", "demo", "--nir-dt", "1e-3", match="apply to a .nir MODEL")


def test_an_input_shape_with_time_exports_without_input_shape(tmp_path, capsys):
    """An Input node recording [T, F] (time first, as some producers write it): the per-step shape is [F], so
    export needs no --input-shape."""
    model = leaky_linear("zero")
    graph, _ = model_to_nir(model, inputs((6,))[0])
    graph.nodes["input"] = nir.Input(input_type=np.array([5, 6]))
    path = tmp_path / "t.nir"
    nir.write(path, graph)
    loaded = load_nir(path)
    assert "records shape [5, 6]; one time step is [6]" in capsys.readouterr().err
    code, out, err = cli(capsys, "export", path, "-o", tmp_path / "t.onnx", "--json", "-")
    assert code == 0, err
    import json

    assert json.loads(out)["input_shape"] == [6]
    assert torch.equal(run(loaded, inputs((6,))).spikes, run(model, inputs((6,))).spikes)


def test_an_if_with_r_of_one_over_dt_is_read_as_a_unit_gain(tmp_path, capsys):
    """SpikingJelly writes IF r = 1/dt (NIR's dv/dt = r I over one step of dt); sinabs, Norse and snnTorch
    write r = 1. Both read as a unit gain here, the first with a note."""
    from tests.export.export_nets import integrate_and_fire

    model = integrate_and_fire()
    x = inputs((6,))
    for r, note in ((1.0, False), (1e4, True)):
        graph, _ = model_to_nir(model, x[0])
        for node in graph.nodes.values():
            node.metadata = {}
            if isinstance(node, nir.IF):
                node.r = np.full_like(np.asarray(node.r), r)
        nir.write(tmp_path / "if.nir", graph)
        loaded = load_nir(tmp_path / "if.nir", NirReadOptions(reset="subtract"))
        err = capsys.readouterr().err
        assert ("IF r = 10000 = 1/dt: read as NIR's continuous-time gain r*dt = 1" in err) == note
        assert torch.equal(run(loaded, x).spikes, run(model, x).spikes) and torch.equal(loaded[1].threshold,
                                                                                         model[1].threshold)


def test_compressing_commands_take_the_nir_options(capsys, tmp_path, write_tensors):
    """quantize / prune / run read a .nir MODEL as the flags say (before: the graph at dt 1e-4, silently)."""
    path = _bare(tmp_path, leaky_linear("zero"), dt=1e-3)
    data = write_tensors("d.safetensors", x=torch.rand(5, 6), y=torch.arange(5) % 4)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("version: 1\npasses:\n  - pass: quantize\n    weight_quant: int8\n    calibration: none\n")
    for args in (["quantize", path, "--weight-quant", "int8", "--calibration", "none"],
                 ["prune", path, "--weights-unstructured", "0.5", "--epochs", "0"],
                 ["run", path, "--recipe", recipe]):
        out = tmp_path / f"{args[0]}.safetensors"
        code, _, err = cli(capsys, *args, "--data", data, "-T", "3", "-o", out, "--nir-dt", "1e-3",
                           "--nir-reset", "zero")
        assert code == 0 and "no dt recorded" not in err, (args[0], err)
        assert out.exists()
    assert_input_error(capsys, "quantize", "demo", "--data", data, "-o", tmp_path / "x.safetensors",
                       "--nir-dt", "1e-3", match="apply to a .nir MODEL")


def test_read_options_a_graph_of_ours_records_already_are_said_to_change_nothing(tmp_path, capsys):
    from snncompress.export.nir_export import export_nir

    path = tmp_path / "ours.nir"
    export_nir(leaky_linear("zero"), path, inputs((6,))[0])
    capsys.readouterr()
    load_nir(path, NirReadOptions(reset="none", spike="multi"))
    err = capsys.readouterr().err
    assert "--nir-reset and --nir-spike changed nothing" in err
    load_nir(_bare(tmp_path, leaky_linear("zero"), dt=1e-4), NirReadOptions(reset="zero"))
    assert "changed nothing" not in capsys.readouterr().err


def test_a_flatten_first_graph_keeps_its_input_shape(tmp_path, capsys):
    """[1, 8, 8] before Flatten -> Linear is one step, not time dims in front of a Linear's [8]."""
    import snntorch as snn
    from torch import nn

    from snncompress.export.nir_export import export_nir
    from snncompress.state import get_state

    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 4), snn.Leaky(beta=0.9, init_hidden=True, output=True))
    path = tmp_path / "flat.nir"
    export_nir(model, path, torch.rand(1, 8, 8))
    capsys.readouterr()
    loaded = load_nir(path)
    assert "read as time" not in capsys.readouterr().err
    assert get_state(loaded).source["input_shape"] == [1, 8, 8]
