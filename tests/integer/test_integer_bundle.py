"""The deployment bundle (issue 17): JSON + one int64 binary; read back it is the same program, the same
program gives the same bytes, and a damaged bundle is refused with a one-line reason."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from snncompress.data.loading import DataBundle, DataOptions
from snncompress.errors import FileFormatError, InputError
from snncompress.integer.bundle import program_to_json, read_bundle, write_bundle
from snncompress.integer.verify import verify
from snncompress.passes.base import PassContext
from snncompress.passes.quantize import QuantizeConfig
from snncompress.passes.quantize import apply as quantize
from tests.models import CLASSES, TINY_MODELS


@pytest.fixture(params=["synaptic_mlp", "rleaky_mlp", "conv2d_net"])
def verified(request):
    name = request.param
    model = TINY_MODELS[name].build()
    x = torch.round(TINY_MODELS[name].example_inputs(6, seed=2) * 16) / 16
    data = DataBundle("tiny", TensorDataset(x, torch.arange(6) % CLASSES), False, 3, CLASSES,
                      DataOptions(time_steps=3, batch_size=3))
    quantize(model, QuantizeConfig(weight_quant="int4", membrane_quant="int4", calibration="none"),
             PassContext(data=data))
    return model, data, verify(model, data)


def test_bundle_round_trip_is_the_same_program(tmp_path, verified):
    model, data, result = verified
    folder = write_bundle(result.program, tmp_path / "b")
    back = read_bundle(folder)
    assert [type(op) for op in back.ops] == [type(op) for op in result.program.ops]
    for ours, theirs in zip(result.program.ops, back.ops, strict=True):
        for key, value in ours.__dict__.items():
            if isinstance(value, np.ndarray):
                np.testing.assert_array_equal(getattr(theirs, key), value)
                assert getattr(theirs, key).dtype == np.int64
            else:
                assert getattr(theirs, key) == value, key
    assert verify(model, data, program=back).bit_exact
    doc, blob = program_to_json(result.program)
    assert program_to_json(read_bundle(folder)) == (doc, blob)  # same program, same bytes
    assert (folder / "tensors.bin").read_bytes() == blob
    assert doc["input"]["fraction_bits"] == 4
    assert "s      = u > Vth_fx" in doc["equations"]


def test_damaged_bundles_are_refused(tmp_path, verified):
    _, _, result = verified
    folder = write_bundle(result.program, tmp_path / "b")
    with pytest.raises(InputError, match="exists"):
        write_bundle(result.program, folder)
    write_bundle(result.program, folder, force=True)
    (folder / "tensors.bin").write_bytes((folder / "tensors.bin").read_bytes()[:-8])
    with pytest.raises(FileFormatError, match="tensor outside tensors.bin"):
        read_bundle(folder)
    doc = json.loads((folder / "program.json").read_text())
    doc["format"] = "something else"
    (folder / "program.json").write_text(json.dumps(doc))
    with pytest.raises(FileFormatError, match="not an snncompress integer bundle"):
        read_bundle(folder)
    with pytest.raises(FileFormatError, match="program.json is missing"):
        read_bundle(tmp_path / "nowhere")


def test_a_bundle_refuses_inputs_beyond_what_it_was_checked_for(tmp_path, verified):
    model, data, result = verified
    back = read_bundle(write_bundle(result.program, tmp_path / "b"))
    x, y = data.dataset.tensors
    for bad_x, steps, message in [(x + 2**-6, 3, "fraction bits"), (x * 4, 3, "exceed"), (x, 5, "exceed")]:
        bad = DataBundle("bad", TensorDataset(bad_x, y), False, steps, CLASSES, DataOptions(time_steps=steps))
        with pytest.raises(InputError, match=message):
            verify(model, bad, program=back)
