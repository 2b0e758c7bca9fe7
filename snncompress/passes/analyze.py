"""The analyze pass: membrane clipping analysis (SpQuant §4.1, Eq. 5-6). An analysis: the model is unchanged.

Step 1, from one run of the model as it is: per neuron layer, ``U_min`` and, for every clipping
boundary c of the sweep, ``Gamma_u`` (the neurons whose stored membrane at t = 1 is below c) and
``r_s`` (the share of them that fire at a later step, averaged over t = 2..T). The membrane is the
stored one, snnTorch's membrane after this step's reset and before the leak (``v[t]``,
:func:`snncompress.models.membrane.stored_membrane`), in units of the layer's threshold Vth: the
membrane the quantize pass's ``clip`` acts on, in the units it is given in. Definitions:
:mod:`snncompress.sim.clipping`.

Step 2: the model's accuracy with the stored membrane clipped at each c, ``max(v[t], c * Vth)``
(the quantize pass's clip alone, no rounding, no fine-tuning; one run per c).

Recommendation: the most aggressive boundary (the largest c) whose accuracy is within ``tolerance``
points of the unclipped model, among the boundaries that fit ``membrane_quant`` when it is given
(the levels of the quantize step that will take it: ternary allows only -1; int<k> at its default
grid of 2^(k-2) levels per Vth allows multiples of 2^-(k-2) in [-2, 0)). It is returned as the
suggestion ``clip``, which a later ``quantize`` step with ``clip: auto`` takes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import Any

from pydantic import Field, ValidationInfo, field_validator
from torch import nn

from snncompress.data.loading import DataBundle
from snncompress.errors import ConfigError
from snncompress.passes.base import PassConfig, PassContext, PassResult, PassSpec
from snncompress.passes.kit import select_layers
from snncompress.quant.membrane import default_grid, membrane_quantizer, parse_membrane_quant
from snncompress.state import get_state, has_state

MAX_BOUNDARIES = 64
DEFAULT_RANGE = "-5:-1:0.5"  # the paper's sweep
#: Membranes the recommendation's note says it fits (at their default grids).
COMMON_MEMBRANES = ("ternary", "int4", "int8")


class AnalyzeConfig(PassConfig):
    """Config of the analyze pass; keys mirror ``snncompress analyze`` flags."""

    tolerance: float = Field(0.5, ge=0, le=100,
                             description="Accuracy points a boundary may lose against the unclipped model and "
                                         "still be recommended.")
    membrane_quant: str | None = Field(
        None, description="The membrane the recommendation is for (ternary or int<k>, as the quantize step "
                          "that takes it): only boundaries on its grid are recommended; none: any boundary.")
    membrane_grid: int | None = Field(
        None, ge=1, le=1 << 14, description="Its levels per threshold (int<k> default 2^(k-2)).")

    # validated last: which boundaries fit needs membrane_quant and membrane_grid
    clip_range: str = Field(
        DEFAULT_RANGE, validate_default=True,
        description="Clipping boundaries c to sweep, in units of Vth: START:STOP:STEP (both ends included) or a "
                    "comma-separated list, e.g. -2,-1.5,-1.")

    @field_validator("membrane_quant")
    @classmethod
    def _membrane(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            quantizer = parse_membrane_quant(v)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        if quantizer is None:
            raise ValueError("an fp32 membrane takes no clip: give ternary or int<k>, or leave it unset")
        return v.strip().lower()

    @field_validator("membrane_grid")
    @classmethod
    def _grid(cls, v: int | None, info: ValidationInfo) -> int | None:
        spec = info.data.get("membrane_quant")
        if v is not None and v != 1 and (spec is None or not spec.startswith("int")):
            raise ValueError("membrane_grid applies to an int<k> membrane_quant")
        return v

    @field_validator("clip_range")
    @classmethod
    def _range(cls, v: str, info: ValidationInfo) -> str:
        try:
            boundaries = parse_clip_range(v)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        spec, grid = info.data.get("membrane_quant"), info.data.get("membrane_grid")
        if spec and not any(fits(c, spec, grid) for c in boundaries):
            grid = grid or default_grid(spec)
            raise ValueError(f"no boundary of '{v}' fits {spec} at {_per_vth(grid)}: {_valid_range(spec, grid)}")
        return v

    def eligible(self) -> list[bool]:
        """Per boundary: whether it may be recommended (it fits ``membrane_quant``; any does when unset)."""
        spec = self.membrane_quant
        return [fits(c, spec, self.membrane_grid) if spec else True for c in self.boundaries]

    @property
    def boundaries(self) -> list[float]:
        return parse_clip_range(self.clip_range)


def parse_clip_range(text: str) -> list[float]:
    """``START:STOP:STEP`` (inclusive, exact decimal steps) or ``a,b,c`` -> the boundaries, ascending.

    Raises:
        ConfigError: not numbers, a step that is not positive, a boundary that is not negative, or more
            than :data:`MAX_BOUNDARIES` boundaries.
    """
    text = str(text).strip()
    try:
        if ":" in text:
            parts = [Fraction(p.strip()) for p in text.split(":")]
            if len(parts) != 3:
                raise ValueError
            start, stop, step = parts
            if step <= 0:
                raise ConfigError(f"clip range '{text}': STEP must be positive")
            if stop < start:
                raise ConfigError(f"clip range '{text}': START must not be above STOP")
            count = math.floor((stop - start) / step) + 1
            if count > MAX_BOUNDARIES:
                raise ConfigError(f"clip range '{text}' has {count} boundaries; at most {MAX_BOUNDARIES}")
            values = [start + i * step for i in range(count)]
        else:
            values = sorted({Fraction(p.strip()) for p in text.split(",")})
    except (ValueError, ZeroDivisionError):
        raise ConfigError(f"clip range '{text}': expected START:STOP:STEP (e.g. {DEFAULT_RANGE}) or a "
                          "comma-separated list of boundaries (e.g. -2,-1.5,-1)") from None
    if not values:
        raise ConfigError(f"clip range '{text}' holds no boundary")
    if len(values) > MAX_BOUNDARIES:
        raise ConfigError(f"clip range '{text}' has {len(values)} boundaries; at most {MAX_BOUNDARIES}")
    if values[-1] >= 0:
        raise ConfigError(f"clip range '{text}': a clipping boundary is a negative membrane level (x Vth); "
                          f"{float(values[-1]):g} is not below 0")
    return [float(v) for v in values]


def fits(boundary: float, membrane_quant: str, grid: int | None = None) -> bool:
    """Whether the quantize pass takes ``clip: boundary`` for ``membrane_quant`` at ``grid`` (None: its default)."""
    try:
        membrane_quantizer(membrane_quant, boundary, None, grid)
    except ConfigError:
        return False
    return True


@dataclass
class LayerAnalysis:
    """One neuron layer: ``gamma_u``, ``r_s``, ``r_ever`` per boundary (fractions), the membrane histogram."""

    name: str
    neurons: int
    u_min: float
    gamma_u: list[float]
    r_s: list[float | None]
    r_ever: list[float | None]
    histogram: dict[str, Any]


@dataclass
class BoundaryResult:
    """Step 2 at one boundary: accuracy with the membrane clipped there, and whether it may be recommended."""

    boundary: float
    accuracy: float
    accuracy_drop: float
    eligible: bool
    firing_rates: dict[str, float]


@dataclass
class ClipAnalysis:
    """What :func:`analyze_clipping` measured (JSON: :meth:`to_dict`)."""

    data: str
    samples: int
    time_steps: int
    boundaries: list[float]
    accuracy: float  # unclipped
    firing_rates: dict[str, float]  # unclipped
    layers: list[LayerAnalysis]
    sweep: list[BoundaryResult]
    tolerance: float
    membrane_quant: str | None
    membrane_grid: int | None
    recommended: float | None
    fits: dict[str, bool] = field(default_factory=dict)  # the recommendation against COMMON_MEMBRANES

    def to_dict(self, histograms: bool = True) -> dict[str, Any]:
        out = asdict(self)
        if not histograms:
            for layer in out["layers"]:
                layer.pop("histogram")
        return out

    def notes(self) -> list[str]:
        lines = [f"unclipped accuracy {self.accuracy:.2f}% on {self.samples} samples, T = {self.time_steps}"]
        lines += [f"{layer.name}: U_min {layer.u_min:.2f} x Vth" for layer in self.layers]
        lines.append(self.recommendation())
        skipped = self.off_grid()
        if skipped:
            lines.append(skipped)
        return lines

    def recommendation(self) -> str:
        """One line: the recommended boundary and its accuracy, or why there is none."""
        target = ""
        if self.membrane_quant:
            target = f" on the {self.membrane_quant} grid"
            target += f" ({_per_vth(self.membrane_grid)})" if self.membrane_grid else ""
        if self.recommended is None:
            return (f"no boundary{target} keeps accuracy within {self.tolerance:g} points of {self.accuracy:.2f}%: "
                    "no clip suggested")
        point = next(p for p in self.sweep if p.boundary == self.recommended)
        fitting = [m for m, ok in self.fits.items() if ok]
        return (f"recommended clip {self.recommended:g} x Vth{target}: accuracy {point.accuracy:.2f}% "
                f"({-point.accuracy_drop:+.2f} points, tolerance {self.tolerance:g}); at the default grid it fits "
                + (", ".join(fitting) if fitting else "none of " + ", ".join(self.fits)))

    def off_grid(self) -> str | None:
        """The boundaries measured but not eligible (not on the ``membrane_quant`` grid), as a note."""
        skipped = [p.boundary for p in self.sweep if not p.eligible]
        if not skipped:
            return None
        return (f"not on the {self.membrane_quant} grid, measured but not recommended: "
                + ", ".join(f"{c:g}" for c in skipped))


def analyze_clipping(model: nn.Module, config: AnalyzeConfig, data: DataBundle,
                     show_progress: bool = False) -> ClipAnalysis:
    """Run the clipping analysis (see the module docstring); ``model`` is left unchanged.

    Raises:
        ConfigError: a selected layer's membrane is already quantized, or no neuron layer is selected.
    """
    from snncompress.sim.clipping import clip_sweep

    layers = [s.name for s in select_layers(model, config, "neuron")]
    if not layers:
        raise ConfigError("the model has no neuron layers to analyze (check targets)")
    quantized = [n for n in layers if has_state(model) and "membrane" in get_state(model).neurons.get(n, {})]
    if quantized:
        raise ConfigError(f"neuron layer '{quantized[0]}' already stores a quantized membrane; the clipping "
                          "analysis needs the fp32 membrane (analyze before quantizing it)")
    boundaries = config.boundaries
    spec, grid = config.membrane_quant, config.membrane_grid
    eligible = config.eligible()
    sweep = clip_sweep(model, data, boundaries, layers, show_progress=show_progress)
    base = sweep.unclipped.accuracy
    results = [BoundaryResult(p.boundary, p.accuracy, base - p.accuracy, ok, p.firing_rates)
               for p, ok in zip(sweep.points, eligible, strict=True)]
    recommended = recommend(base, results, config.tolerance)
    stats = sweep.statistics.layers
    analysis = ClipAnalysis(
        data=data.name, samples=sweep.samples, time_steps=sweep.time_steps, boundaries=boundaries,
        accuracy=base, firing_rates=sweep.unclipped.firing_rates,
        layers=[LayerAnalysis(n, stats[n].neurons, stats[n].u_min, stats[n].gamma_u(), stats[n].r_s(),
                              stats[n].r_ever(), stats[n].histogram.to_dict()) for n in layers if n in stats],
        sweep=results, tolerance=config.tolerance, membrane_quant=spec, membrane_grid=grid,
        recommended=recommended)
    if recommended is not None:
        analysis.fits = {m: fits(recommended, m) for m in COMMON_MEMBRANES}
    return analysis


def recommend(accuracy: float, results: list[BoundaryResult], tolerance: float) -> float | None:
    """The largest eligible boundary whose accuracy is at least ``accuracy - tolerance`` (None: none is)."""
    # a hair of slack so that a drop of exactly the tolerance counts as within it despite float sums
    ok = [r.boundary for r in results if r.eligible and r.accuracy >= accuracy - tolerance - 1e-9]
    return max(ok) if ok else None


def _per_vth(grid: int) -> str:
    return f"{grid} level{'s' if grid != 1 else ''} per Vth"


def _valid_range(spec: str, grid: int) -> str:
    if spec == "ternary":
        return "ternary takes only -1"
    bits = int(spec[3:])
    return f"use multiples of {1 / grid:g} in {-(1 << (bits - 1)) / grid:g} .. {-1 / grid:g}"


def apply(model: nn.Module, config: AnalyzeConfig, ctx: PassContext) -> PassResult:
    """The clipping analysis as a recipe step: metrics (no histograms) and the ``clip`` suggestion."""
    if ctx.data is None:
        raise ConfigError("the analyze pass needs data: pass --data")
    analysis = analyze_clipping(model, config, ctx.data, show_progress=ctx.show_progress)
    suggestions = {"clip": analysis.recommended} if analysis.recommended is not None else {}
    return PassResult(metrics=analysis.to_dict(histograms=False), notes=analysis.notes(), suggestions=suggestions)


def requires(_config: AnalyzeConfig) -> dict[str, str | None]:
    return {"data": "the analyze pass runs the model on data: pass --data"}


# No ordering rule against quantize: analyzing after a weights-only quantize step (fp32 membrane) is
# meaningful; a layer whose membrane is already quantized is refused when the step runs.
ANALYZE_PASS = PassSpec(
    name="analyze",
    config_class=AnalyzeConfig,
    apply=apply,
    summary="Membrane clipping analysis (SpQuant §4.1): U_min, Gamma_u, r_s and accuracy per clip; suggests clip.",
    version="1",
    kind="analysis",
    requires=requires,
)
