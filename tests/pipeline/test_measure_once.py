"""One measurement per side of a run: a PTQ quantize passes over the evaluation data exactly twice."""

from __future__ import annotations

import math

import pytest

from snncompress.data.loading import DataBundle
from snncompress.fileformat.loading import load_model
from snncompress.passes.base import PassContext
from snncompress.pipeline.job import CompressJob, compress
from snncompress.pipeline.run import RunOptions, run_single_pass
from tests.models import TINY_MODELS, T, tiny_bundle


class CountingBundle(DataBundle):
    """A data bundle that remembers every batch its loader yields (to count the model's calls on them)."""

    def loader(self, shuffle: bool = False, seed: int | None = None):
        for x, y in super().loader(shuffle, seed):
            self.__dict__.setdefault("yielded", []).append(x)
            yield x, y


def bundle(name: str, n: int, seed: int, cls=None):
    return tiny_bundle(name, n, seed, cls)


def count_forward_calls_on(model, data: CountingBundle) -> list[int]:
    calls = [0]

    def hook(_module, args):
        yielded = data.__dict__.get("yielded", [])
        if args and any(args[0] is x for x in yielded):
            calls[0] += 1

    model.register_forward_pre_hook(hook)
    return calls


@pytest.mark.parametrize("hardware", [True, False])
def test_ptq_quantize_runs_over_the_evaluation_data_twice(hardware):
    name, n = "leaky_mlp", 10  # 3 batches of 4, 4, 2
    model = load_model(TINY_MODELS[name].ref)
    data = bundle(name, n, 0, CountingBundle)
    calls = count_forward_calls_on(model, data)
    report = run_single_pass("quantize", model, {"weight_quant": "pot4", "membrane_quant": "int4"},
                             PassContext(data=data, train_data=bundle(name, 12, 1)),
                             RunOptions(hardware=hardware))
    batches = math.ceil(n / 4)
    assert len(data.yielded) == 2 * batches  # before and after: no other pass over the evaluation data
    assert calls[0] == 2 * batches * T  # a stepwise model is called once per batch and step
    assert report.before["accuracy"] is not None and report.after["accuracy"] is not None
    assert (report.hardware is not None) == hardware
    if hardware:
        assert report.hardware["memory_reduction"] > 1


def test_the_library_job_and_the_demo_report_read_the_same_measurement(tmp_path):
    name = "leaky_mlp"
    data = bundle(name, 8, 0, CountingBundle)
    result = compress(CompressJob(model=TINY_MODELS[name].ref, recipe={"version": 1, "passes": [
        {"pass": "quantize", "weight_quant": "pot4", "membrane_quant": "ternary", "calibration": "none"}]},
        data=data, output=tmp_path / "q.safetensors"))
    assert len(data.yielded) == 2 * 2
    last = result.report.last_measurement
    assert last.accuracy == result.report.after["accuracy"] and last.description is not None
    from snncompress.costing.report import ReportInputs, make_report

    report = make_report(ReportInputs(model=result.model, name="q"), description=last.description,
                         data_name=last.data)
    assert len(data.yielded) == 4  # costed from the description: the model did not run again
    assert report.baseline is not None
    assert report.baseline.memory_reduction == pytest.approx(result.figures["memory_reduction"])
    assert (tmp_path / "q.safetensors").exists() and result.output == str(tmp_path / "q.safetensors")
