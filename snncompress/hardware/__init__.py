"""Hardware cost model: memory, operations and energy of a compressed SNN (SpQuant Eq. 29-31, tinySNN Eq. 4).

Pure Python over a :class:`ModelDescription`; no torch. Rendering (rich, Markdown, HTML) is in
:mod:`snncompress.hardware.render`, which imports matplotlib only when it draws.
"""

from snncompress.hardware.config import CostModelConfig
from snncompress.hardware.description import ModelDescription, NeuronLayer, SynapticLayer
from snncompress.hardware.energy_table import EnergyTable, load_energy_table, op_energy
from snncompress.hardware.report import build_report, report_json_schema, write_report_schema
from snncompress.hardware.report_model import HardwareReport

__all__ = [
    "CostModelConfig",
    "EnergyTable",
    "HardwareReport",
    "ModelDescription",
    "NeuronLayer",
    "SynapticLayer",
    "build_report",
    "load_energy_table",
    "op_energy",
    "report_json_schema",
    "write_report_schema",
]
