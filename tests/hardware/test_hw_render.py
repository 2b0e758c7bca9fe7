"""The report's tables: units, number formats, narrow consoles; padding-aware op counts."""

from __future__ import annotations

import pytest
from hw_models import linear, linear_fp32, linear_fp32_nobias, linear_quant, model
from rich.console import Console

from snncompress.errors import InputError
from snncompress.hardware import build_report
from snncompress.hardware.ops import layer_ops
from snncompress.hardware.render import markdown_png_path, split_to_width
from snncompress.hardware.tables_view import (
    ENERGY_UNITS,
    MEMORY_UNITS,
    TableView,
    all_tables,
    energy_unit,
    fmt,
    fmt_in,
    memory_unit,
    summary_lines,
)


@pytest.mark.parametrize(
    ("bits", "unit"),
    [(547, "bits"), (99_999, "bits"), (491_968, "B"), (8 * 100_000, "KiB"), (8 * 1024 * 200_000, "MiB")],
)
def test_memory_unit_keeps_the_total_under_six_digits(bits, unit):
    assert memory_unit(bits).label == unit


@pytest.mark.parametrize(("pj", "unit"), [(233.85, "pJ"), (12_397_127, "nJ"), (5e9, "µJ"), (1e20, "J")])
def test_energy_unit(pj, unit):
    assert energy_unit(pj).label == unit


def test_units_are_ordered():
    for units in (MEMORY_UNITS, ENERGY_UNITS):
        assert [u.per_unit for u in units] == sorted(u.per_unit for u in units)


@pytest.mark.parametrize(
    ("x", "text"),
    [
        (None, "-"),
        (0, "0"),
        (12, "12"),
        (2233.37, "2,233"),
        (34534.4, "34,534"),
        (0.9216, "0.9216"),
        (5e-5, "5.0e-05"),
    ],
)
def test_fmt(x, text):
    assert fmt(x) == text


def test_fmt_in_units():
    assert fmt_in(491_968, MEMORY_UNITS[1]) == "61,496"
    assert fmt_in(1610, MEMORY_UNITS[1]) == "201.2"
    assert fmt_in(547, MEMORY_UNITS[0]) == "547"
    assert fmt_in(12_397_127.0, ENERGY_UNITS[1]) == "12,397"


def test_tables_name_their_units():
    r = build_report(linear_quant(), "45nm", baseline_desc=linear_fp32_nobias())
    titles = [t.title for t in all_tables(r)]
    assert titles[0] == "Memory (bits)"
    assert titles[2].startswith("Energy (pJ; table 45nm, SRAM 8 KB)")
    assert titles[3].startswith("Against the baseline fp32")
    assert summary_lines(r)[1].startswith(
        "per sample: memory 97 bits (static 88 bits), synaptic ops 15 (measured)"
    )


def test_split_to_width_keeps_text_columns_and_every_figure():
    view = TableView(
        "T", ("layer", *(f"c{i}" for i in range(8))), (("fc1", *(f"{i},000,000" for i in range(8))),)
    )
    parts = split_to_width(view, Console(width=40))
    assert len(parts) > 1 and parts[1].title == "T (continued)"
    assert all(p.headers[0] == "layer" and p.rows[0][0] == "fc1" for p in parts)
    assert [h for p in parts for h in p.headers[1:]] == list(view.headers[1:])
    assert split_to_width(view, Console(width=200)) == [view]


def test_markdown_png_path(tmp_path):
    assert markdown_png_path(tmp_path / "report.md", "ops") == tmp_path / "report_ops.png"


def test_connections_exclude_padding_from_dense_and_bound():
    # 12 = 3 outputs * fan_in 4, of which 10 products reach real inputs
    lops = layer_ops(linear(connections_per_step=10))
    assert lops.dense_ops == 40 and lops.synaptic_ops_dense_bound == 40  # 10 * T 4
    with pytest.raises(InputError, match="connections_per_step must be in"):
        linear(connections_per_step=13)


def test_single_scale_is_a_register_but_per_channel_scales_are_read():
    one = build_report(
        model(
            linear(
                weight_bits=4, weight_scheme="pot4", scale_count=1, scale_bits=8, scale_is_power_of_two=True
            )
        ),
        "45nm",
    )
    three = build_report(
        model(
            linear(
                weight_bits=4, weight_scheme="pot4", scale_count=3, scale_bits=8, scale_is_power_of_two=True
            )
        ),
        "45nm",
    )
    assert one.layers[0].energy.memory_other == 0
    assert three.layers[0].energy.memory_other == pytest.approx(12 * 8 * 10 / 64)  # 3 outputs * T 4 reads


def test_no_baseline_no_baseline_table():
    assert len(all_tables(build_report(linear_fp32(), "45nm"))) == 3
