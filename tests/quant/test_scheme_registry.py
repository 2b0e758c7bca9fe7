"""Weight schemes are registered by kind, so a plugin's scheme survives save and load."""

from __future__ import annotations

from typing import Literal

import pytest
import torch

from snncompress.errors import ConfigError
from snncompress.fileformat.compressed import read_metadata, save_compressed
from snncompress.fileformat.loading import load_model
from snncompress.quant.base import WeightScheme, registered_schemes
from snncompress.state import get_state
from tests.models import TINY_MODELS


class SignScheme(WeightScheme):
    """A plugin's 1-bit scheme: sign(w) * mean|w| (binary weights, one fp32 scale per tensor)."""

    kind: Literal["test-sign"] = "test-sign"

    @property
    def code_bits(self) -> int:
        return 1

    def describe(self) -> str:
        return "sign"

    def _encode(self, w, generator):
        scale = w.abs().mean().reshape(1)
        return (w >= 0).to(torch.int64), {"scale": scale}

    def _decode(self, codes, params):
        return (codes.to(torch.float32) * 2 - 1) * params["scale"]


def test_a_plugin_scheme_registers_by_kind():
    assert registered_schemes()["test-sign"] is SignScheme
    assert WeightScheme.from_dict({"kind": "test-sign"}) == SignScheme()
    with pytest.raises(ConfigError, match="unknown kind 'test-nope'"):
        WeightScheme.from_dict({"kind": "test-nope"})


def test_a_plugin_scheme_round_trips_through_save_and_load(tmp_path):
    model = load_model(TINY_MODELS["leaky_mlp"].ref)
    weight = model.get_submodule("0").weight
    scheme = SignScheme()
    enc = scheme.encode(weight.detach())
    with torch.no_grad():
        weight.copy_(scheme.decode(enc).reshape(weight.shape))
    get_state(model).tensors["0.weight"] = enc
    path = save_compressed(model, tmp_path / "sign.safetensors")
    assert read_metadata(path)["tensors"]["0.weight"]["scheme"] == {"kind": "test-sign"}
    loaded = load_model(str(path))
    assert torch.equal(loaded.get_submodule("0").weight, weight)
    back = get_state(loaded).tensors["0.weight"]
    assert back.bits == 1 and torch.equal(back.codes, enc.codes)
    assert WeightScheme.from_dict(back.scheme) == scheme
