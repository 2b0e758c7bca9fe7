"""Choices of the hardware cost model that a user may change (all documented in the report)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SparseFormat = Literal["dense", "bitmap", "csr"]

# Schaefer et al. (2023) report that their 80%-sparse, iso-accuracy SNN costs 45% more energy than the
# best quantized (dense) model on their architecture, from sparse-format overhead and irregular access.
# The text gives no per-access figure; we apply that 45% to every weight and index access of a
# sparse-stored layer. A placeholder of the right order, not a measurement: set 1.0 for ideal sparse hardware.
SCHAEFER_IRREGULAR_ACCESS_FACTOR = 1.45


class CostModelConfig(BaseModel):
    """Knobs of the memory/ops/energy model.

    Attributes:
        sparse_format: "auto" stores each pruned layer in the smallest of dense, bitmap and CSR;
            a fixed format models hardware that supports only that one (dense layers stay dense).
        memory_scope: "model": the whole model sits in one memory, whose size class sets the energy
            per bit; "layer": each layer sits in its own memory sized to fit it.
        irregular_access_factor: Multiplies weight and index access energy of sparse-stored layers.
        dram_estimate: Which end of the table's DRAM range to use when storage exceeds every SRAM class.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    sparse_format: Literal["auto", "dense", "bitmap", "csr"] = "auto"
    memory_scope: Literal["model", "layer"] = "model"
    irregular_access_factor: float = Field(default=SCHAEFER_IRREGULAR_ACCESS_FACTOR, ge=1.0)
    dram_estimate: Literal["low", "high"] = "low"
