"""Energy tables: per-operation and memory-access energies as validated data files.

Built-in tables live in ``snncompress/hardware/tables/`` (``45nm``: Horowitz, ISSCC 2014; ``7nm``:
BitNet Table 2; chips: ``loihi``, ``truenorth``, ``spinnaker``, ``spinnaker2``, ``tianjic``, ``seneca``,
each its published energy per synaptic operation as the SENECA paper's Table 3 gives it). A user may
pass their own YAML with the same keys for another node or chip.

Widths missing from a table are scaled (see :class:`ScalingRule`); :func:`op_energy` says when it
scaled so the report can say so.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from snncompress.errors import InputError
from snncompress.hardware.formats import Family

TABLES_DIR = Path(__file__).parent / "tables"
# process nodes (per-op and memory-access energies) and chips (published energy per synaptic operation)
BUILTIN_TABLES = ("45nm", "7nm", "loihi", "truenorth", "spinnaker", "spinnaker2", "tianjic", "seneca")
OpName = Literal["add", "mult"]
_OP_KEY = re.compile(r"^(fp|int)(\d+)$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SramClass(_Strict):
    """One SRAM size class: an access to a memory of at most ``capacity_bytes`` costs ``energy``."""

    capacity_bytes: PositiveInt
    energy: PositiveFloat


class DramEnergy(_Strict):
    """DRAM access energy range per access (Horowitz 2014: 1.3-2.6 nJ per 64 bits)."""

    low: PositiveFloat
    high: PositiveFloat


class MemoryEnergy(_Strict):
    """Memory access energies, per access of ``access_bits`` bits."""

    access_bits: PositiveInt = 64
    sram: list[SramClass] = Field(min_length=1)
    dram: DramEnergy
    assumed: bool = False
    note: str = ""

    @field_validator("sram")
    @classmethod
    def _ascending(cls, v: list[SramClass]) -> list[SramClass]:
        caps = [c.capacity_bytes for c in v]
        if caps != sorted(set(caps)):
            raise ValueError(f"SRAM classes must have distinct capacities in ascending order, got {caps}")
        return v


class ScalingRule(_Strict):
    """How to scale an op energy to a width the table lacks.

    E(op, b) = E(op, a) * (b / a) ** exponent, with ``a`` the table width of the same family
    nearest to ``b`` (ties to the wider). Default: add linear in bits, multiply quadratic in bits.
    """

    add_exponent: float = Field(default=1.0, ge=0)
    mult_exponent: float = Field(default=2.0, ge=0)
    note: str = ""


class SynapticOpEnergy(_Strict):
    """A chip's published energy per synaptic operation (all-in: what the chip's figure includes).

    Attributes:
        energy: pJ per synaptic operation.
        covers: what the figure includes, as its source states it.
        leaves_out: what it does not include (and what the cost model therefore leaves out).
    """

    energy: PositiveFloat
    covers: str = Field(min_length=1)
    leaves_out: str = Field(min_length=1)


class EnergyTable(_Strict):
    """A validated energy table: a process node (per-op and memory-access energies; SpQuant Eq. 31,
    Horowitz 2014) or a chip (``synaptic_op``: its published energy per synaptic operation, which the
    cost model charges for every synaptic op, accumulate and memory access included)."""

    name: str = Field(min_length=1)
    version: str
    source: str = Field(min_length=1)
    units: Literal["pJ"]
    operations: dict[OpName, dict[str, PositiveFloat]] | None = None
    memory: MemoryEnergy | None = None
    synaptic_op: SynapticOpEnergy | None = None
    scaling: ScalingRule = ScalingRule()
    notes: str = ""

    @model_validator(mode="after")
    def _process_or_chip(self) -> EnergyTable:
        if self.synaptic_op is None and (self.operations is None or self.memory is None):
            raise ValueError("a table needs 'operations' and 'memory' (a process node) or 'synaptic_op' (a chip)")
        if self.synaptic_op is not None and (self.operations is not None or self.memory is not None):
            raise ValueError("a chip table ('synaptic_op') prices whole synaptic operations: leave out "
                             "'operations' and 'memory'")
        return self

    @field_validator("version", mode="before")
    @classmethod
    def _version_str(cls, v: object) -> object:
        return str(v) if isinstance(v, int | float) else v

    @field_validator("operations")
    @classmethod
    def _op_keys(cls, v: dict[str, dict[str, float]] | None) -> dict[str, dict[str, float]] | None:
        if v is None:
            return v
        for op in ("add", "mult"):
            if not v.get(op):
                raise ValueError(f"needs at least one '{op}' energy")
            for key in v[op]:
                if not _OP_KEY.match(key):
                    raise ValueError(f"{op}.{key}: keys must look like fp32, fp16, int8, int32")
        return v

    def entries(self, op: OpName, family: Family) -> dict[int, float]:
        """Table widths -> energy (pJ) for one op and number family."""
        out = {}
        for key, energy in self.operations[op].items():
            m = _OP_KEY.match(key)
            if m and m.group(1) == family:
                out[int(m.group(2))] = energy
        return out


def op_energy(table: EnergyTable, op: OpName, family: Family, bits: int) -> tuple[float, int | None]:
    """Energy of one operation, in pJ (Horowitz 2014; scaled where the table lacks the width).

    Args:
        table: The energy table.
        op: "add" or "mult" (shifts are costed as adds by the caller).
        family: "fp" or "int".
        bits: Operand width.

    Returns:
        ``(energy_pj, scaled_from)``: ``scaled_from`` is the table width the figure was scaled from,
        or None when the table holds the width itself.

    Raises:
        InputError: The table has no entry of this family to scale from.
    """
    if table.synaptic_op is not None:
        return 0.0, None  # a chip prices whole synaptic operations (energy.py), not their arithmetic
    known = table.entries(op, family)
    if bits in known:
        return known[bits], None
    if not known:
        raise InputError(
            f"energy table {table.name}: no {family} {op} energy at any width to scale {family}{bits} from"
        )
    anchor = min(known, key=lambda a: (abs(a - bits), -a))
    exponent = table.scaling.add_exponent if op == "add" else table.scaling.mult_exponent
    return known[anchor] * (bits / anchor) ** exponent, anchor


def load_energy_table(name_or_path: str | Path) -> EnergyTable:
    """Load a built-in table ("45nm", "7nm") or a user's YAML file.

    Args:
        name_or_path: A built-in name or a path to a YAML file.

    Returns:
        The validated table.

    Raises:
        InputError: Unknown name, missing file, unreadable or invalid YAML, or a bad value
            (negative energy, unknown key); the message names the file and the field.
    """
    if isinstance(name_or_path, str) and name_or_path in BUILTIN_TABLES:
        path = TABLES_DIR / f"{name_or_path}.yaml"
    else:
        path = Path(name_or_path)
        looks_like_path = (
            isinstance(name_or_path, Path) or path.suffix in (".yaml", ".yml") or len(path.parts) > 1
        )
        if not path.is_file():
            if looks_like_path:
                raise InputError(f"energy table file not found: {path}")
            close = difflib.get_close_matches(str(name_or_path), BUILTIN_TABLES, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise InputError(
                f"unknown energy table '{name_or_path}': {hint}use one of {', '.join(BUILTIN_TABLES)} "
                "or a path to a YAML file"
            )
    return _parse_file(path)


def _parse_file(path: Path) -> EnergyTable:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"energy table {path}: cannot read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise InputError(f"energy table {path}: not valid YAML: {_yaml_problem(exc)}") from exc
    if not isinstance(data, dict):
        raise InputError(
            f"energy table {path}: expected a mapping at the top level, got {type(data).__name__}"
        )
    try:
        return EnergyTable.model_validate(data)
    except ValidationError as exc:
        raise InputError(f"energy table {path}: {_first_error(exc)}") from exc


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """``line 3, column 5: <problem>`` from a YAML error (PyYAML's own text spans several lines)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if mark is not None and problem:
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return " ".join(str(exc).split())


def _first_error(exc: ValidationError) -> str:
    errs = exc.errors()
    e = errs[0]
    loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
    got = (
        f" (got {e['input']!r})" if e["type"] not in ("missing",) and not isinstance(e["input"], dict) else ""
    )
    more = f" [and {len(errs) - 1} more]" if len(errs) > 1 else ""
    return f"{loc}: {e['msg']}{got}{more}"
