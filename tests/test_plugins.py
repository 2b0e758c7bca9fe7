"""Pass plugins: entry-point discovery, loud failures, in-process registration, the example plugin."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
import torch

from snncompress.errors import ConfigError, DomainError
from snncompress.passes.base import PassContext
from snncompress.passes.registry import PassRegistry, default_registry, register_pass, unregister_pass
from snncompress.recipes import Recipe, RecipeError
from tests.fake_passes import SCALE
from tests.models import leaky_mlp

REPO = Path(__file__).resolve().parent.parent
CLUSTER_DIR = REPO / "plugins" / "snncompress-cluster"

PLUGIN_MODULE = """
from dataclasses import replace
from tests.fake_passes import SCALE

GOOD = replace(SCALE, name="good", origin="whoever")
NOT_A_SPEC = 3

def make():
    return replace(SCALE, name="factory")
"""


def fake_distribution(site: Path, name: str, entry_points: str, version: str = "1.2") -> None:
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[snncompress.passes]\n{entry_points}")


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    (site / "fakeplug_mod.py").write_text(PLUGIN_MODULE)
    monkeypatch.syspath_prepend(str(site))
    return site


def test_entry_points_load_and_failures_are_loud(site, capsys):
    fake_distribution(site, "fakeplug", "good = fakeplug_mod:GOOD\nfactory = fakeplug_mod:make\n"
                                        "broken = fakeplug_missing:SPEC\nnotaspec = fakeplug_mod:NOT_A_SPEC\n"
                                        "renamed = fakeplug_mod:GOOD\n")
    fake_distribution(site, "otherplug", "good = fakeplug_mod:GOOD\n", version="0.3")
    registry = PassRegistry()
    assert {"good", "factory"} <= set(registry.names())
    assert "broken" not in registry and "notaspec" not in registry
    # the origin is the distribution that declared the entry point, whatever the spec said
    assert registry.get("good").origin == "fakeplug" and registry.get("factory").origin == "fakeplug"
    err = capsys.readouterr().err
    ours = [f for f in registry.failures if f.distribution.split()[0] in ("fakeplug", "otherplug")]
    failures = {f.entry_point.split(" = ")[0]: f for f in ours}
    assert set(failures) == {"broken", "notaspec", "renamed", "good"}
    assert ("warning: pass plugin 'broken = fakeplug_missing:SPEC' from distribution fakeplug 1.2 was not "
            "loaded: ModuleNotFoundError: No module named 'fakeplug_missing'") in err
    assert "fakeplug_mod:NOT_A_SPEC is a int, not a snncompress.passes.PassSpec" in err
    assert "the entry point is named 'renamed' but its pass is named 'good'" in err
    assert failures["good"].distribution == "otherplug 0.3"
    assert "a pass named 'good' is already registered by fakeplug" in err
    assert len([line for line in err.splitlines() if "fakeplug" in line or "otherplug" in line]) == 4


def test_builtin_passes_are_registered_in_code():
    """Built-ins need no entry point (a new one needs no re-install); a stale entry point that names a
    built-in (an older install's metadata) is not reported as a clash."""
    from snncompress.passes.registry import BUILTIN_PASSES, PassRegistry

    for name in BUILTIN_PASSES:
        assert default_registry().get(name).origin == "snncompress"
    stale = EntryPoint("quantize", BUILTIN_PASSES["quantize"], "snncompress.passes")
    warnings = []
    registry = PassRegistry(discover=lambda: [stale], warn=warnings.append, builtins=BUILTIN_PASSES)
    assert registry.get("quantize").origin == "snncompress" and not warnings and not registry.failures


def test_register_in_process():
    from dataclasses import replace

    spec = register_pass(replace(SCALE, name="inproc"), origin="my-notebook")
    try:
        assert default_registry().get("inproc").origin == "my-notebook"
        with pytest.raises(ValueError, match="already registered"):
            register_pass(spec)
        Recipe.from_dict({"version": 1, "passes": [{"pass": "inproc", "factor": 2}]})
    finally:
        unregister_pass("inproc")
    assert "inproc" not in default_registry()
    with pytest.raises(ConfigError, match="unknown pass 'inproc'"):
        default_registry().get("inproc")
    with pytest.raises(ValueError, match="lower case"):
        register_pass(replace(SCALE, name="Bad Name"))
    with pytest.raises(TypeError, match="expected a PassSpec"):
        register_pass("scale")  # type: ignore[arg-type]


# -- the example plugin --------------------------------------------------------------------------------

@pytest.fixture
def cluster_module(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(CLUSTER_DIR))
    import snncompress_cluster

    return snncompress_cluster


def test_kmeans_is_deterministic_and_shares_k_values(cluster_module):
    values = torch.randn(500, generator=torch.Generator().manual_seed(0))
    c1, a1 = cluster_module.kmeans_1d(values, 8, 50)
    c2, a2 = cluster_module.kmeans_1d(values, 8, 50)
    assert torch.equal(c1, c2) and torch.equal(a1, a2)
    assert c1.numel() == 8 and bool((c1[1:] > c1[:-1]).all())
    # every value is assigned to its nearest centroid (a Lloyd fixed point)
    assert torch.equal(a1, (values[:, None] - c1[None, :]).abs().argmin(dim=1))
    few, assign = cluster_module.kmeans_1d(torch.tensor([1.0, 2.0, 1.0]), 8, 10)
    assert few.tolist() == [1.0, 2.0] and assign.tolist() == [0, 1, 0]
    g = torch.Generator().manual_seed(5)
    r1 = cluster_module.kmeans_1d(values, 8, 50, "random", g)[0]
    r2 = cluster_module.kmeans_1d(values, 8, 50, "random", torch.Generator().manual_seed(5))[0]
    assert torch.equal(r1, r2)


def test_cluster_pass_snaps_weights_and_keeps_masks(cluster_module):
    from snncompress.state import get_state

    model = leaky_mlp()
    mask = torch.rand(model[0].weight.shape, generator=torch.Generator().manual_seed(1)) > 0.5
    with torch.no_grad():
        model[0].weight.mul_(mask)
    get_state(model).masks["0.weight"] = mask
    config = cluster_module.ClusterConfig(clusters=4, overrides=[{"targets": ["2"], "clusters": 2}])
    result = cluster_module.apply(model, config, PassContext())
    assert torch.unique(model[0].weight[mask]).numel() <= 4 and bool((model[0].weight[~mask] == 0).all())
    assert torch.unique(model[2].weight).numel() == 2
    assert result.metrics["layers"]["2"] == {**result.metrics["layers"]["2"], "clusters": 2, "index_bits": 1}
    get_state(model).tensors["2.weight"] = type("Enc", (), {"scheme": {"kind": "pot"}})()
    with pytest.raises(DomainError, match="layer '2' is already quantized"):
        cluster_module.apply(model, config, PassContext())


def test_cluster_must_come_before_quantize(cluster_module):
    if "quantize" not in default_registry():
        pytest.skip("the quantize pass is not registered")
    registry = PassRegistry(discover=lambda: [])
    registry.register(default_registry().get("quantize"))
    registry.register(cluster_module.CLUSTER_PASS, origin="snncompress-cluster")
    bad = {"version": 1, "passes": [{"pass": "quantize"}, {"pass": "cluster"}]}
    rule = r"passes\[1\]: 'cluster' must come before 'quantize' \(passes\[0\]\)"
    with pytest.raises(RecipeError, match=rule):
        Recipe.from_dict(bad, registry=registry)


def test_example_plugin_installs_and_runs(run_cli, tmp_path):
    """pip-install plugins/snncompress-cluster; `snncompress passes` lists it and a recipe runs it."""
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                              "--disable-pip-version-check", "-q", "-e", str(CLUSTER_DIR)],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    listed = run_cli("passes", "--json", "-")
    assert listed.returncode == 0, listed.stderr
    passes = {p["name"]: p for p in json.loads(listed.stdout)["passes"]}
    assert passes["cluster"]["origin"] == "snncompress-cluster" and passes["cluster"]["version"] == "0.1.0"
    assert passes["cluster"]["before"] == ["quantize"]
    (tmp_path / "r.yaml").write_text("version: 1\npasses:\n  - pass: cluster\n    clusters: 3\n")
    ran = run_cli("run", "tests.models:leaky_mlp", "--recipe", "r.yaml",
                  "--data", "tests.models:static_dataset", "-T", "3", "-o", "out.safetensors", "--quiet")
    assert ran.returncode == 0, ran.stderr
    from snncompress.fileformat.compressed import read_metadata

    step = read_metadata(tmp_path / "out.safetensors")["history"][0]
    assert (step["pass"], step["origin"], step["version"]) == ("cluster", "snncompress-cluster", "0.1.0")
    assert step["config"]["clusters"] == 3 and step["metrics"]["layers"]["0"]["clusters"] <= 3
