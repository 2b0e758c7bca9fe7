"""Quality gates for CI: ``--gate max-accuracy-drop=1.0 --gate min-memory-reduction=8``.

A gate compares one figure of a finished run with a threshold. :func:`gate_metrics` is the one
place those figures come from: accuracy from the run's before/after measurement, memory / ops /
energy reductions from the hardware cost model when it ran, else memory from the simple stored-bits
count (:func:`snncompress.costing.measure.storage_bits`). A failed gate raises :class:`GateFailure`
(exit 1); a gate that is unknown or badly written raises :class:`ConfigError` (exit 2).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from snncompress.errors import ConfigError, GateFailure, did_you_mean


@dataclass(frozen=True)
class GateKind:
    """A gate name: the figure it reads and which side of the threshold passes.

    Attributes:
        metric: the key of the figure in :func:`gate_metrics`.
        bound: ``max``: passes when the figure is <= the threshold; ``min``: when >=.
        what: the figure in words, for the gate's message.
        needs_data: the figure needs ``--data``.
        compute: for a gate whose figure is not one of :func:`gate_metrics`'s, computes it from
            the run report (a plugin's gate: ``compute(report) -> float | None``).
    """

    metric: str
    bound: Literal["max", "min"]
    what: str
    needs_data: bool = True
    compute: Callable[[Any], float | None] | None = None
    default: float | None = None  # the threshold of a bare ``--gate NAME``; None: a value is required


GATES: dict[str, GateKind] = {
    "max-accuracy-drop": GateKind("accuracy_drop", "max", "accuracy drop in percentage points"),
    "min-memory-reduction": GateKind("memory_reduction", "min", "memory reduction (baseline / now)",
                                     needs_data=False),
    "min-ops-reduction": GateKind("ops_reduction", "min", "synaptic-op reduction (baseline / now)"),
    "min-energy-reduction": GateKind("energy_reduction", "min", "energy reduction (baseline / now)"),
    "bit-exact": GateKind("bit_exact_mismatches", "max", "mismatching spikes against the integer-only reference",
                          default=0.0),
    # label-free: the compressed model's predictions against the input model's, on the same data
    "min-agreement": GateKind("agreement", "min", "agreement of predictions with the input model in percent"),
}


def register_gate(name: str, kind: GateKind, *, replace: bool = False) -> GateKind:
    """Add a gate (``--gate NAME=VALUE``, recipe CI settings) in-process: a plugin's gate.

    Raises:
        ValueError: the name is taken and ``replace`` is False.
    """
    if name in GATES and not replace:
        raise ValueError(f"a gate named '{name}' is already registered")
    GATES[name] = kind
    return kind


@dataclass(frozen=True)
class Gate:
    name: str
    threshold: float

    @property
    def kind(self) -> GateKind:
        return GATES[self.name]

    def __str__(self) -> str:
        return f"{self.name}={self.threshold:g}"


@dataclass(frozen=True)
class GateResult:
    gate: Gate
    value: float | None
    passed: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"gate": self.gate.name, "threshold": self.gate.threshold, "value": self.value,
                "passed": self.passed, "reason": self.reason}


def parse_gate(text: str) -> Gate:
    """``NAME=NUMBER`` as a :class:`Gate`.

    Raises:
        ConfigError: unknown name (with a did-you-mean) or a value that is not a non-negative number.
    """
    name, sep, raw = str(text).partition("=")
    name = name.strip()
    if name not in GATES:
        hint = did_you_mean(name, GATES) or f"; gates: {', '.join(GATES)}"
        raise ConfigError(f"--gate {text}: unknown gate '{name}'{hint}")
    if not sep and GATES[name].default is not None:
        return Gate(name, GATES[name].default)
    if not sep or not raw.strip():
        raise ConfigError(f"--gate {text}: expected {name}=NUMBER, e.g. {name}=1.0")
    try:
        threshold = float(raw)
    except ValueError:
        raise ConfigError(f"--gate {text}: '{raw}' is not a number") from None
    if not math.isfinite(threshold) or threshold < 0:
        raise ConfigError(f"--gate {text}: the threshold must be a finite number >= 0")
    return Gate(name, threshold)


def parse_gates(texts: Iterable[str], *, has_data: bool = True) -> list[Gate]:
    """Parse every ``--gate``; each name at most once; gates that need data need ``--data``."""
    gates: list[Gate] = []
    for text in texts:
        gate = parse_gate(text)
        if any(g.name == gate.name for g in gates):
            raise ConfigError(f"--gate {text}: gate '{gate.name}' is given twice")
        if gate.kind.needs_data and not has_data:
            raise ConfigError(f"--gate {text}: needs measured figures; pass --data")
        gates.append(gate)
    return gates


def gate_metrics(report: Any) -> dict[str, Any]:
    """The figures gates compare, from a :class:`snncompress.pipeline.run.RunReport` (the one source).

    Returns:
        ``accuracy_drop`` (points), ``agreement`` (percent of predictions equal to the run's input model's),
        ``memory_reduction``, ``ops_reduction``, ``energy_reduction`` (baseline / now; None when not
        measured), plus the reference figures and ``memory_source``.
    """
    before, after, baseline = report.before, report.after, report.baseline
    reference, ref_name = _accuracy_reference(before, baseline)
    now = after.get("accuracy")
    drop = None if reference is None or now is None else reference - now
    hardware = report.hardware or {}
    memory, source = hardware.get("memory_reduction"), "snncompress.hardware"
    if memory is None:
        base_bits = baseline.get("storage_bits") or before.get("storage_bits")
        now_bits = after.get("storage_bits")
        memory = base_bits / now_bits if base_bits and now_bits else None
        source = "stored bits (snncompress.costing.measure.storage_bits)"
    extra = {kind.metric: kind.compute(report) for kind in GATES.values() if kind.compute is not None}
    return {
        **extra,
        "accuracy_reference": reference,
        "accuracy_reference_is": ref_name,
        "accuracy": now,
        "accuracy_drop": drop,
        "agreement": (getattr(report, "fidelity", None) or {}).get("agreement"),
        "memory_reduction": memory,
        "memory_source": source,
        "ops_reduction": hardware.get("ops_reduction"),
        "ops_reduction_with_masks": hardware.get("ops_reduction_with_masks"),
        "energy_reduction": hardware.get("energy_reduction"),
        "hardware_error": hardware.get("error"),
    }


def model_gate_metrics(gates: Iterable[Gate], model: Any, data: Any) -> dict[str, Any]:
    """Figures of the gates that run the compressed model itself: ``bit_exact_mismatches`` (the
    :func:`snncompress.integer.verify.mismatch_count` on ``data``), or ``bit_exact_mismatches_error``
    when the model cannot run integer-only. Empty when no such gate was asked for."""
    if data is None or not any(g.name == "bit-exact" for g in gates):
        return {}
    from snncompress.errors import SnnCompressError
    from snncompress.integer.verify import mismatch_count

    try:
        return {"bit_exact_mismatches": mismatch_count(model, data)}
    except SnnCompressError as exc:
        return {"bit_exact_mismatches": None, "bit_exact_mismatches_error": str(exc)}


def _accuracy_reference(before: Mapping[str, Any], baseline: Mapping[str, Any]) -> tuple[float | None, str]:
    """The fp32 baseline's accuracy when it was measured on the same data, else this run's start."""
    base = baseline.get("accuracy")
    same_data = all(baseline.get(k) in (None, before.get(k)) for k in ("data", "samples"))
    if base is not None and same_data and not baseline.get("note"):
        return base, "the fp32 baseline"
    return before.get("accuracy"), "the input model"


def check_gates(gates: Iterable[Gate], metrics: Mapping[str, Any]) -> list[GateResult]:
    """Compare each gate's figure with its threshold."""
    results = []
    for gate in gates:
        value = metrics.get(gate.kind.metric)
        if value is None:
            error = metrics.get(f"{gate.kind.metric}_error") or metrics.get("hardware_error")
            why = f" ({error})" if error else ""
            results.append(GateResult(gate, None, False, f"{gate} failed: the {gate.kind.what} was not "
                                                         f"measured{why}"))
            continue
        passed = value <= gate.threshold if gate.kind.bound == "max" else value >= gate.threshold
        results.append(GateResult(gate, value, passed, _reason(gate, value, passed, metrics)))
    return results


def _reason(gate: Gate, value: float, passed: bool, metrics: Mapping[str, Any]) -> str:
    verdict = "passed" if passed else "failed"
    if gate.name == "max-accuracy-drop":
        detail = (f"accuracy {metrics['accuracy_reference']:.2f}% -> {metrics['accuracy']:.2f}% "
                  f"(drop {value:.2f} points against {metrics['accuracy_reference_is']}, "
                  f"limit {gate.threshold:g})")
    elif gate.name == "bit-exact":
        detail = f"{int(value)} {gate.kind.what} (limit {gate.threshold:g})"
    elif gate.name == "min-agreement":
        detail = f"{value:.2f}% of predictions agree with the input model (need >= {gate.threshold:g}%)"
    else:
        detail = f"{gate.kind.what} {value:.2f}x (need >= {gate.threshold:g}x)"
    return f"{gate} {verdict}: {detail}"


def enforce(results: Iterable[GateResult]) -> None:
    """Raise GateFailure, one line naming every failed gate, when any gate failed."""
    failed = [r.reason for r in results if not r.passed]
    if failed:
        raise GateFailure("; ".join(f"quality gate {reason}" for reason in failed))
