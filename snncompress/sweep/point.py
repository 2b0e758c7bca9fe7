"""One point of a sweep: its recipe run by the library job on a fresh copy of the model, then costed.

Every point starts from the same fp32 model (a copy: :func:`snncompress.models.membrane.copy_model`)
and the same seed, so a point's figures depend on its recipe alone, not on the worker or the order
it ran in. The figures are the run report's: accuracy from its last measurement, memory, synaptic
operations and energy from the hardware report (``JobResult.figures`` and ``report.hardware``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from snncompress.data.loading import DataBundle
from snncompress.errors import DomainError, SnnCompressError


@dataclass
class PointRunner:
    """What every point of a sweep shares: the fp32 model, the data and how to run and cost."""

    model: nn.Module
    data: DataBundle
    train_data: DataBundle | None
    seed: int = 0
    energy: str = "45nm"
    gates: Sequence[str] = ()
    model_name: str = "model"

    def run(self, recipe: Mapping[str, Any], output: str | Path | None = None, force: bool = False):
        """Run ``recipe`` on a copy of the model with the library job; returns the JobResult."""
        from snncompress.models.membrane import copy_model
        from snncompress.pipeline.job import CompressJob, compress

        return compress(CompressJob(
            model=copy_model(self.model), recipe=dict(recipe), data=self.data, train_data=self.train_data,
            output=output, force=force, seed=self.seed, energy=self.energy, gates=list(self.gates),
            model_name=self.model_name, warn=lambda _line: None))

    def evaluate(self, point: Mapping[str, Any], recipe: Mapping[str, Any]) -> dict[str, Any]:
        """The point's record: its choices, recipe and measured figures (``error`` set when it failed).

        A pass that fails on this point (a domain error) is recorded, not raised: one bad corner
        of a space should not stop a sweep. Bad input (exit code 2) still raises.
        """
        start = time.perf_counter()
        record: dict[str, Any] = {"params": dict(point), "recipe": dict(recipe), "seed": self.seed}
        try:
            result = self.run(recipe)
        except SnnCompressError as exc:
            if not isinstance(exc, DomainError):
                raise
            record.update(error=str(exc), seconds=round(time.perf_counter() - start, 3))
            return record
        record.update(figures_of(result))
        record["seconds"] = round(time.perf_counter() - start, 3)
        return record


def figures_of(result: Any) -> dict[str, Any]:
    """Accuracy (percent), memory (bits), synaptic ops and energy (pJ, per sample), with the fp32
    baseline's memory and energy (``M_0``: the reductions are exact ratios of the same report), the
    reductions and the gates of a :class:`~snncompress.pipeline.job.JobResult`."""
    report, figures = result.report, result.figures
    hardware = report.hardware or {}
    out: dict[str, Any] = {
        "accuracy": report.after.get("accuracy"),
        "accuracy_baseline": figures.get("accuracy_reference"),
        "memory_bits": hardware.get("memory_bits"),
        "synaptic_ops": hardware.get("synaptic_ops"),
        "energy_pj": hardware.get("energy_pj"),
        "memory_reduction": figures.get("memory_reduction"),
        "ops_reduction": figures.get("ops_reduction"),
        "energy_reduction": figures.get("energy_reduction"),
        "gates": [g.to_dict() for g in result.gates],
    }
    memory, energy = out["memory_bits"], out["energy_pj"]
    out["memory_bits_baseline"] = (round(memory * out["memory_reduction"])
                                   if memory and out["memory_reduction"] else None)
    out["energy_pj_baseline"] = (energy * out["energy_reduction"]
                                 if energy and out["energy_reduction"] else None)
    if hardware.get("error") or memory is None:
        out["error"] = hardware.get("error") or "the hardware report has no memory figure"
    return out
