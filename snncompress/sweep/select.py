"""Constraints and model selection over the evaluated points (tinySNN §2.4, Eq. 3).

    R = acc_q - mu * M_q / M_0

``acc_q`` is the point's accuracy as a fraction (0.963, not 96.3 %), ``M_q`` its memory and ``M_0``
the fp32 model's, both from the hardware report (bits, per model). ``mu >= 0`` weighs memory
against accuracy: mu = 0 picks the most accurate point, a large mu the smallest. The best point is
the feasible one with the highest R; ties go to the smaller memory, then the earlier point in the
grid. The Pareto front is the set of feasible points no other feasible point beats on accuracy
(higher), memory and energy (lower) at once; the highest-R point is always on it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from snncompress.errors import ConfigError

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMG]i?B|B)?\s*$", re.I)
_UNITS = {"b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2, "gb": 1000**3, "gib": 1024**3}


def parse_memory(text: str | int | float) -> float:
    """``64KiB`` / ``1.5MB`` / ``4096`` (bytes) as a number of bytes.

    Raises:
        ConfigError: not a size.
    """
    if isinstance(text, int | float):
        if text <= 0:
            raise ConfigError(f"--max-memory {text}: must be > 0")
        return float(text)
    match = _SIZE.match(str(text))
    if match is None:
        raise ConfigError(f"--max-memory {text}: expected a size such as 64KiB, 1.5MB or 4096 (bytes)")
    size = float(match[1]) * _UNITS[(match[2] or "B").lower()]
    if size <= 0:
        raise ConfigError(f"--max-memory {text}: must be > 0")
    return size


@dataclass(frozen=True)
class Constraints:
    """What a point must meet to be selectable.

    Attributes:
        max_memory_bytes: the hardware report's memory (bytes, the whole model) at most this.
        min_accuracy: accuracy as a fraction (0.9 = 90 %) at least this.
    """

    max_memory_bytes: float | None = None
    min_accuracy: float | None = None

    def __post_init__(self) -> None:
        if self.min_accuracy is not None and not 0 <= self.min_accuracy <= 1:
            raise ConfigError(f"--min-accuracy {self.min_accuracy:g}: a fraction in [0, 1] (0.9 means 90%)")

    def violations(self, record: Mapping[str, Any]) -> list[str]:
        """Why ``record`` is not selectable (empty when it is)."""
        if record.get("error"):
            return [f"failed: {record['error']}"]
        out = []
        memory = record.get("memory_bits")
        if self.max_memory_bytes is not None and (memory is None or memory / 8 > self.max_memory_bytes):
            have = "not measured" if memory is None else f"{memory / 8:,.0f} B"
            out.append(f"memory {have} > max {self.max_memory_bytes:,.0f} B")
        accuracy = record.get("accuracy")
        if self.min_accuracy is not None and (accuracy is None or accuracy / 100 < self.min_accuracy):
            have = "not measured" if accuracy is None else f"{accuracy:.2f}%"
            out.append(f"accuracy {have} < min {100 * self.min_accuracy:.2f}%")
        out += [gate["reason"] for gate in record.get("gates", []) if not gate.get("passed")]
        return out

    def optuna_values(self, record: Mapping[str, Any]) -> list[float]:
        """Constraint values for Optuna's TPE / NSGA-II (``<= 0`` is feasible)."""
        memory, accuracy = record.get("memory_bits"), record.get("accuracy")
        values = [0.0 if not record.get("error") else 1.0]
        if self.max_memory_bytes is not None:
            values.append(1.0 if memory is None else memory / 8 / self.max_memory_bytes - 1)
        if self.min_accuracy is not None:
            values.append(1.0 if accuracy is None else self.min_accuracy - accuracy / 100)
        values.append(float(sum(1 for g in record.get("gates", []) if not g.get("passed"))))
        return values

    def to_dict(self) -> dict[str, Any]:
        return {"max_memory_bytes": self.max_memory_bytes, "min_accuracy": self.min_accuracy}


def reward(record: Mapping[str, Any], mu: float) -> float | None:
    """tinySNN Eq. 3, ``acc_q - mu * M_q / M_0`` (accuracy as a fraction); None when not measured."""
    accuracy, memory, base = record.get("accuracy"), record.get("memory_bits"), record.get("memory_bits_baseline")
    if accuracy is None or not memory or not base:
        return None
    return accuracy / 100 - mu * memory / base


def choose(records: Sequence[Mapping[str, Any]], mu: float, constraints: Constraints) -> Mapping[str, Any] | None:
    """The feasible point with the highest R (ties: smaller memory, then the earlier point); None if none."""
    best, best_key = None, None
    for order, record in enumerate(records):
        value = reward(record, mu)
        if value is None or constraints.violations(record):
            continue
        key = (-value, record["memory_bits"], order)
        if best_key is None or key < best_key:
            best, best_key = record, key
    return best


def pareto_front(records: Sequence[Mapping[str, Any]], constraints: Constraints) -> list[Mapping[str, Any]]:
    """The feasible points no feasible point dominates on (accuracy up, memory down, energy down),
    sorted by memory. Points with equal figures are all kept."""
    feasible = [r for r in records if not constraints.violations(r) and _objectives(r) is not None]
    front = []
    for r in feasible:
        a = _objectives(r)
        dominated = any(_dominates(_objectives(o), a) for o in feasible if o is not r)
        if not dominated:
            front.append(r)
    return sorted(front, key=lambda r: (r["memory_bits"], -r["accuracy"]))


def _objectives(record: Mapping[str, Any]) -> tuple[float, float, float] | None:
    accuracy, memory, energy = record.get("accuracy"), record.get("memory_bits"), record.get("energy_pj")
    if accuracy is None or memory is None or energy is None:
        return None
    return (-accuracy, memory, energy)  # all minimised


def _dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(x < y for x, y in zip(a, b, strict=True))
