"""Quality gates: parsing (exit 2 on bad input), evaluation, one-line failure (exit 1)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from snncompress.errors import ConfigError, GateFailure
from snncompress.pipeline.gates import check_gates, enforce, gate_metrics, parse_gate, parse_gates


def test_parse_gate():
    gate = parse_gate("max-accuracy-drop=1.5")
    assert (gate.name, gate.threshold, str(gate)) == ("max-accuracy-drop", 1.5, "max-accuracy-drop=1.5")


@pytest.mark.parametrize(("text", "message"), [
    ("max-acuracy-drop=1", "unknown gate 'max-acuracy-drop'; did you mean 'max-accuracy-drop'?"),
    ("speed=3", "unknown gate 'speed'; gates: max-accuracy-drop, min-memory-reduction"),
    ("min-memory-reduction", "expected min-memory-reduction=NUMBER"),
    ("min-memory-reduction=lots", "'lots' is not a number"),
    ("min-memory-reduction=-2", "must be a finite number >= 0"),
])
def test_bad_gates_are_usage_errors(text, message):
    with pytest.raises(ConfigError, match=message) as info:
        parse_gate(text)
    assert info.value.exit_code == 2


def test_gates_given_twice_or_without_data():
    with pytest.raises(ConfigError, match="given twice"):
        parse_gates(["min-memory-reduction=2", "min-memory-reduction=3"])
    with pytest.raises(ConfigError, match="max-accuracy-drop=1: needs measured figures; pass --data"):
        parse_gates(["max-accuracy-drop=1"], has_data=False)
    assert parse_gates(["min-memory-reduction=2"], has_data=False)[0].threshold == 2


def report(hardware=None, **after):
    return SimpleNamespace(before={"accuracy": 90.0, "samples": 10, "storage_bits": 800},
                           after={"accuracy": 88.5, "samples": 10, "storage_bits": 100, **after},
                           baseline={"accuracy": 90.0, "samples": 10, "storage_bits": 800}, hardware=hardware)


def test_metrics_fall_back_to_stored_bits():
    metrics = gate_metrics(report())
    assert metrics["accuracy_drop"] == pytest.approx(1.5)
    assert metrics["memory_reduction"] == 8.0 and metrics["memory_source"].startswith("stored bits")
    assert metrics["ops_reduction"] is None
    hw = gate_metrics(report({"memory_reduction": 5.0, "ops_reduction": 2.0, "energy_reduction": 3.0}))
    assert (hw["memory_reduction"], hw["ops_reduction"]) == (5.0, 2.0)
    assert hw["memory_source"] == "snncompress.hardware"


def test_check_and_enforce():
    metrics = gate_metrics(report())
    results = check_gates(parse_gates(["max-accuracy-drop=2", "min-memory-reduction=8"]), metrics)
    assert all(r.passed for r in results)
    enforce(results)
    gates = parse_gates(["max-accuracy-drop=1", "min-memory-reduction=9", "min-ops-reduction=2"])
    results = check_gates(gates, metrics)
    assert [r.passed for r in results] == [False, False, False]
    with pytest.raises(GateFailure) as info:
        enforce(results)
    message = str(info.value)
    assert info.value.exit_code == 1 and "\n" not in message
    assert message.startswith("quality gate max-accuracy-drop=1 failed: accuracy 90.00% -> 88.50% (drop 1.50")
    assert "min-memory-reduction=9 failed: memory reduction (baseline / now) 8.00x (need >= 9x)" in message
    assert "min-ops-reduction=2 failed: the synaptic-op reduction (baseline / now) was not measured" \
        in message


def test_accuracy_reference_is_the_baseline_only_on_the_same_data():
    run = report()
    run.baseline = {**run.baseline, "accuracy": 95.0, "data": "digits:test"}
    run.before = {**run.before, "data": "digits:test"}
    assert gate_metrics(run)["accuracy_drop"] == pytest.approx(6.5)
    run.before = {**run.before, "data": "other.safetensors"}
    metrics = gate_metrics(run)
    assert metrics["accuracy_drop"] == pytest.approx(1.5)
    assert metrics["accuracy_reference_is"] == "the input model"


def test_a_plugin_gate_registers_and_reads_its_own_figure():
    from snncompress.pipeline.gates import GATES, GateKind, check_gates, gate_metrics, parse_gate, register_gate

    kind = GateKind("steps_run", "min", "number of steps run", needs_data=False,
                    compute=lambda report: float(len(report.steps)))
    register_gate("min-steps", kind)
    try:
        class Report:
            before, after, baseline, hardware, steps = {}, {}, {}, None, [{}, {}]

        metrics = gate_metrics(Report())
        assert metrics["steps_run"] == 2.0
        (passed,) = check_gates([parse_gate("min-steps=2")], metrics)
        (failed,) = check_gates([parse_gate("min-steps=3")], metrics)
        assert passed.passed and not failed.passed
        with pytest.raises(ValueError, match="already registered"):
            register_gate("min-steps", kind)
    finally:
        GATES.pop("min-steps", None)


def test_bit_exact_gate_takes_no_value_and_reports_why_it_was_not_measured():
    from snncompress.pipeline.gates import model_gate_metrics

    gate = parse_gate("bit-exact")
    assert (gate.name, gate.threshold) == ("bit-exact", 0.0)
    assert parse_gate("bit-exact=3").threshold == 3.0
    with pytest.raises(ConfigError, match="pass --data"):
        parse_gates(["bit-exact"], has_data=False)
    assert model_gate_metrics([parse_gate("max-accuracy-drop=1")], object(), object()) == {}
    passed, failed = check_gates([gate], {"bit_exact_mismatches": 0}), check_gates([gate], {"bit_exact_mismatches": 2})
    assert passed[0].passed and "0 mismatching spikes" in passed[0].reason
    assert not failed[0].passed and "2 mismatching spikes" in failed[0].reason
    unmeasured = check_gates([gate], {"bit_exact_mismatches": None, "bit_exact_mismatches_error": "layer '1' x"})
    assert not unmeasured[0].passed and "layer '1' x" in unmeasured[0].reason
