"""Chip energy presets (issue 16, item 10): each built-in chip table cites its source and says what its
energy per synaptic operation covers and leaves out; the cost model charges that figure per synaptic op."""

from __future__ import annotations

import jsonschema
import pytest
import yaml
from hw_models import leaky, linear, linear_fp32, linear_quant, model

from snncompress.errors import InputError
from snncompress.hardware import build_report, load_energy_table, report_json_schema
from snncompress.hardware.energy_table import BUILTIN_TABLES, TABLES_DIR

# energy per synaptic operation, pJ: SENECA (Tang et al. 2023), Table 3
PUBLISHED = {"loihi": 23.6, "truenorth": 2.5, "spinnaker": 45.0, "spinnaker2": 10.0, "tianjic": 1.54,
             "seneca": 2.8}


def test_every_chip_table_is_built_in_and_cites_its_source():
    assert set(PUBLISHED) <= set(BUILTIN_TABLES) and "loihi2" not in BUILTIN_TABLES
    for name, energy in PUBLISHED.items():
        table = load_energy_table(name)
        assert table.synaptic_op.energy == energy and table.name == name
        assert "SENECA" in table.source and "Table 3" in table.source and "10.3389/fnins.2023.1187252" in table.source
        assert "synaptic operation" in table.synaptic_op.covers
        assert "membrane" in table.synaptic_op.leaves_out and "static" in table.synaptic_op.leaves_out
        assert table.operations is None and table.memory is None


def test_a_chip_charges_its_figure_per_synaptic_op_and_nothing_else():
    report = build_report(linear_fp32(), "loihi")
    ops = report.totals.ops.synaptic_ops
    assert ops > 0 and report.totals.energy.total_pj == pytest.approx(ops * 23.6)
    assert report.totals.energy.memory == 0
    assert any("every synaptic op costs 23.6 pJ" in w and "left out: neuron (membrane) updates" in w
               for w in report.warnings)
    jsonschema.validate(report.model_dump(mode="json"), report_json_schema())


def test_on_a_chip_the_energy_reduction_is_the_synaptic_op_reduction():
    # same connectivity, fewer input spikes: bit widths do not change a chip's figure, op counts do
    base = model(linear(input_spikes_per_sample=8), leaky())
    report = build_report(linear_quant(), "truenorth", baseline_desc=base)
    b = report.baseline
    assert b.energy_reduction == pytest.approx(b.synaptic_ops_reduction)


@pytest.mark.parametrize("edit, match", [
    (lambda d: d.update(operations={"add": {"int8": 0.1}, "mult": {"int8": 0.2}}), "leave out 'operations'"),
    (lambda d: d.pop("synaptic_op"), "needs 'operations' and 'memory'"),
    (lambda d: d["synaptic_op"].pop("leaves_out"), "synaptic_op.leaves_out"),
])
def test_a_bad_chip_table_is_refused(edit, match, tmp_path):
    data = yaml.safe_load((TABLES_DIR / "loihi.yaml").read_text())
    edit(data)
    path = tmp_path / "chip.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(InputError, match=match):
        load_energy_table(path)
