"""Energy tables: built-ins, a user's YAML, scaling to missing widths, and bad input."""

from __future__ import annotations

import pytest

from snncompress.errors import InputError
from snncompress.hardware import load_energy_table, op_energy

USER_YAML = """
name: mychip
version: 2
source: measured on my chip
units: pJ
operations:
  add: {fp32: 1.0, int8: 0.05}
  mult: {fp32: 4.0, int8: 0.5}
memory:
  access_bits: 64
  sram:
    - {capacity_bytes: 65536, energy: 32.0}
  dram: {low: 1000.0, high: 2000.0}
scaling: {add_exponent: 2.0, mult_exponent: 2.0}
"""


def test_builtin_45nm_values():
    t = load_energy_table("45nm")
    assert t.operations["add"] == {"fp32": 0.9, "fp16": 0.4, "int8": 0.03, "int32": 0.1}
    assert t.operations["mult"] == {"fp32": 3.7, "fp16": 1.1, "int8": 0.2, "int32": 3.1}
    assert [(c.capacity_bytes, c.energy) for c in t.memory.sram] == [
        (8192, 10.0),
        (32768, 20.0),
        (1048576, 100.0),
    ]
    assert (t.memory.dram.low, t.memory.dram.high) == (1300.0, 2600.0)
    assert not t.memory.assumed and "Horowitz" in t.source


def test_builtin_7nm_values_and_memory_assumption():
    t = load_energy_table("7nm")
    assert t.operations["add"] == {"fp32": 0.38, "fp16": 0.16, "int8": 0.007}
    assert t.operations["mult"] == {"fp32": 1.31, "fp16": 0.34, "int8": 0.07}
    assert t.memory.assumed and "ASSUMPTION" in t.memory.note


def test_table_widths_are_not_scaled():
    assert op_energy(load_energy_table("45nm"), "mult", "int", 32) == (3.1, None)


@pytest.mark.parametrize(
    ("table", "op", "bits", "expected", "anchor"),
    [
        ("45nm", "add", 4, 0.015, 8),  # 0.03 * 4/8
        ("45nm", "add", 2, 0.0075, 8),  # 0.03 * 2/8
        ("45nm", "mult", 4, 0.05, 8),  # 0.2 * (4/8)^2
        ("45nm", "mult", 16, 0.8, 8),  # 0.2 * (16/8)^2; int8 is nearer than int32
        ("45nm", "add", 20, 0.0625, 32),  # tie |20-8| = |20-32| -> wider: 0.1 * 20/32
        ("7nm", "add", 32, 0.028, 8),  # no int32 at 7 nm: 0.007 * 32/8
        ("7nm", "mult", 2, 0.004375, 8),  # 0.07 * (2/8)^2
    ],
)
def test_scaling_rule(table, op, bits, expected, anchor):
    e, a = op_energy(load_energy_table(table), op, "int", bits)
    assert e == pytest.approx(expected) and a == anchor


def test_user_yaml(tmp_path):
    p = tmp_path / "chip.yaml"
    p.write_text(USER_YAML)
    t = load_energy_table(p)
    assert t.name == "mychip" and t.version == "2"
    e, a = op_energy(t, "add", "int", 4)
    assert e == pytest.approx(0.0125) and a == 8  # 0.05 * (4/8)^2 with the user's exponent 2
    assert load_energy_table(str(p)).name == "mychip"


def test_table_without_integer_entries_cannot_price_int(tmp_path):
    p = tmp_path / "fp.yaml"
    p.write_text(USER_YAML.replace(", int8: 0.05", "").replace(", int8: 0.5", ""))
    with pytest.raises(InputError, match="no int add energy"):
        op_energy(load_energy_table(p), "add", "int", 8)


def test_unknown_name_suggests():
    with pytest.raises(InputError, match="unknown energy table '45mn'.*did you mean '45nm'"):
        load_energy_table("45mn")


def test_missing_file():
    with pytest.raises(InputError, match="not found"):
        load_energy_table("no/such/table.yaml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("operations: [1, 2", "not valid YAML"),
        ("- a\n- b\n", "expected a mapping"),
        (
            USER_YAML.replace("int8: 0.05", "int8: -0.05"),
            r"operations\.add\.int8: Input should be greater than 0",
        ),
        (USER_YAML.replace("units: pJ", "units: nJ"), "units"),
        (USER_YAML.replace("name: mychip", "name: mychip\ncolour: red"), "colour: Extra inputs"),
        (USER_YAML.replace("fp32: 1.0, int8", "float32: 1.0, int8"), "keys must look like fp32"),
        (USER_YAML.replace("energy: 32.0", "energy: 0"), r"memory\.sram\.0\.energy"),
        (USER_YAML.replace("version: 2\n", ""), "version: Field required"),
    ],
)
def test_bad_tables(tmp_path, text, message):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(InputError, match=message) as info:
        load_energy_table(p)
    assert info.value.exit_code == 2
    assert "\n" not in str(info.value)
    assert str(p) in str(info.value)


def test_sram_classes_must_ascend(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text(
        USER_YAML.replace(
            "- {capacity_bytes: 65536, energy: 32.0}",
            "- {capacity_bytes: 65536, energy: 32.0}\n    - {capacity_bytes: 8192, energy: 8.0}",
        )
    )
    with pytest.raises(InputError, match="ascending"):
        load_energy_table(p)
