"""A design space: a base recipe and the choices to combine, each point a recipe of existing passes.

    version: 1
    description: tinySNN-style PTQ sweep
    passes:                         # the base recipe: every point starts from it
      - pass: quantize
        mode: ptq
        membrane_quant: fp32
    choices:                        # STEP.KEY: values (STEP: a pass name or a step index, as for `run --set`)
      quantize.weight_quant: [fixed1.2, fixed1.4, fixed1.6]
      quantize.rounding: [nearest, truncate, stochastic]
      quantize.overrides:           # a value that is a list or mapping needs a label
        none: []
        first-last-8bit: [{targets: [first, last], weight_quant: fixed1.6}]

A choice key names any config key of any registered pass, so a new pass (a plugin's, a future
prune pass's ``sparsity``) is sweepable without code changes: put a step of it in ``passes`` and
its keys in ``choices``. Every point is validated as a recipe before anything runs (the whole
grid when it has at most :data:`VALIDATE_ALL` points, else every single choice on the base).
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from snncompress.errors import ConfigError, did_you_mean
from snncompress.passes.registry import PassRegistry, default_registry
from snncompress.recipes import Recipe, RecipeError
from snncompress.recipes.document import parse_yaml

VALIDATE_ALL = 4096  # points: above this a space is checked choice by choice, not point by point
Scalar = str | int | float | bool | None


class SpaceDocument(BaseModel):
    """The space file as written (validated with pydantic; keys as in the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = Field(description="Space format version.")
    description: str | None = Field(None, description="What the sweep compares.")
    passes: list[dict[str, Any]] = Field(min_length=1, description="The base recipe's steps.")
    choices: dict[str, list[Any] | dict[str, Any]] = Field(
        min_length=1, description="STEP.KEY: a list of values, or a mapping label: value.")


@dataclass(frozen=True)
class Choice:
    """One dimension of the space: where it goes and its options as ``label -> value``."""

    key: str  # "quantize.weight_quant" (also the Optuna parameter name)
    step: str  # a pass name or a step index
    field: str
    options: tuple[tuple[Scalar, Any], ...]

    @property
    def labels(self) -> list[Scalar]:
        return [label for label, _ in self.options]

    def value(self, label: Scalar) -> Any:
        for known, value in self.options:
            if known == label and type(known) is type(label):
                return copy.deepcopy(value)
        raise ConfigError(f"choice {self.key}: no option {label!r}; options: {self.labels}")


@dataclass(frozen=True)
class Space:
    """A validated design space."""

    base: tuple[dict[str, Any], ...]
    choices: tuple[Choice, ...]
    description: str | None = None
    source: str | None = None

    @property
    def size(self) -> int:
        return math.prod(len(c.options) for c in self.choices)

    @property
    def keys(self) -> list[str]:
        return [c.key for c in self.choices]

    def grid(self) -> Iterator[dict[str, Scalar]]:
        """Every point as ``{choice key: label}``, in file order (the last choice varies fastest)."""
        for labels in itertools.product(*(c.labels for c in self.choices)):
            yield dict(zip(self.keys, labels, strict=True))

    def search_space(self) -> dict[str, list[Scalar]]:
        """The space as Optuna's grid sampler takes it."""
        return {c.key: c.labels for c in self.choices}

    def recipe_dict(self, point: Mapping[str, Scalar]) -> dict[str, Any]:
        """The recipe document of one point: the base with each choice's value set."""
        steps = [dict(copy.deepcopy(s)) for s in self.base]
        for choice in self.choices:
            value = choice.value(point[choice.key])
            for i in _step_indices(steps, choice.step):
                steps[i][choice.field] = copy.deepcopy(value)
        doc: dict[str, Any] = {"version": 1, "passes": steps}
        if self.description:
            doc["description"] = f"{self.description} [{format_point(point)}]"
        return doc

    def recipe(self, point: Mapping[str, Scalar], registry: PassRegistry | None = None) -> Recipe:
        return Recipe.from_dict(self.recipe_dict(point), registry=registry, source=self.source)

    def fingerprint(self) -> str:
        """A hash of what the points are (the base and the choices): a resumed study must match it."""
        doc = {"base": list(self.base), "choices": [[c.key, [list(o) for o in c.options]] for c in self.choices]}
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {"description": self.description, "source": self.source, "size": self.size,
                "passes": list(self.base), "choices": {c.key: c.labels for c in self.choices}}


def format_point(point: Mapping[str, Scalar]) -> str:
    """``weight_quant=pot4 rounding=nearest``: a point in one short line (the field part of each key)."""
    return " ".join(f"{k.split('.', 1)[-1]}={v}" for k, v in point.items())


def load_space(path: str | Path, registry: PassRegistry | None = None) -> Space:
    """Read and validate a space file (YAML).

    Raises:
        ConfigError: a missing or unreadable file, a bad document or a point that is not a valid
            recipe; one line naming the place (``space.yaml: choices.quantize.weight_qunt: ...``).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"space file not found: {path}")
    return space_from_dict(parse_yaml(path.read_text(encoding="utf-8"), str(path)), registry, str(path))


def space_from_dict(data: Any, registry: PassRegistry | None = None, source: str | None = None) -> Space:
    """Validate a parsed space document (see :func:`load_space`)."""
    registry = registry or default_registry()
    where = source or "space"
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: must be a mapping with version, passes and choices")
    try:
        doc = SpaceDocument.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {_first_problem(exc)}") from None
    base = tuple(doc.passes)
    try:  # the base alone must be a recipe
        Recipe.from_dict({"version": 1, "passes": list(base)}, registry=registry, source=where)
    except RecipeError as exc:
        raise ConfigError(f"{where}: {_recipe_problem(exc)}") from None
    choices = tuple(_choice(key, options, base, registry, where) for key, options in doc.choices.items())
    space = Space(base=base, choices=choices, description=doc.description, source=source)
    _check_points(space, registry, where)
    return space


def _choice(key: str, options: list[Any] | dict[str, Any], base: tuple[dict[str, Any], ...],
            registry: PassRegistry, where: str) -> Choice:
    step, dot, field = key.partition(".")
    if not dot or not step or not field:
        raise ConfigError(f"{where}: choices.{key}: expected STEP.KEY, e.g. quantize.weight_quant or 0.rounding")
    indices = _step_indices([dict(s) for s in base], step)
    if not indices:
        names = [f"{i} {s.get('pass')}" for i, s in enumerate(base)]
        raise ConfigError(f"{where}: choices.{key}: no step '{step}' in passes (steps: {', '.join(names)})")
    for i in indices:
        fields = registry.get(str(base[i].get("pass"))).config_class.model_fields
        if field not in fields:
            hint = did_you_mean(field, fields, cutoff=0.6) or f"; keys: {', '.join(sorted(fields))}"
            raise ConfigError(f"{where}: choices.{key}: pass '{base[i].get('pass')}' has no key '{field}'{hint}")
    if isinstance(options, dict):
        pairs = tuple((str(label), value) for label, value in options.items())
    else:
        for value in options:
            if isinstance(value, list | dict):
                raise ConfigError(f"{where}: choices.{key}: a list or mapping value needs a label; write "
                                  f"{key}: {{label: value, ...}}")
        pairs = tuple((value, value) for value in options)
    if not pairs:
        raise ConfigError(f"{where}: choices.{key}: needs at least one value")
    labels = [json.dumps(label) for label, _ in pairs]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"{where}: choices.{key}: a value is listed twice")
    return Choice(key=key, step=step, field=field, options=pairs)


def _check_points(space: Space, registry: PassRegistry, where: str) -> None:
    """Every point a valid recipe; for a very large grid, every single choice on the base."""
    if space.size <= VALIDATE_ALL:
        points = space.grid()
    else:
        first = {c.key: c.labels[0] for c in space.choices}
        points = ({**first, c.key: label} for c in space.choices for label in c.labels)
    for point in points:
        try:
            space.recipe(point, registry)
        except RecipeError as exc:
            raise ConfigError(f"{where}: point [{format_point(point)}]: {_recipe_problem(exc)}") from None


def _step_indices(steps: list[dict[str, Any]], step: str) -> list[int]:
    if step.isdigit():
        return [int(step)] if int(step) < len(steps) else []
    return [i for i, s in enumerate(steps) if s.get("pass") == step]


def _recipe_problem(exc: RecipeError) -> str:
    more = f" (and {len(exc.problems) - 1} more)" if len(exc.problems) > 1 else ""
    return f"{exc.problems[0].strip()}{more}" if exc.problems else str(exc)


def _first_problem(exc: ValidationError) -> str:
    # a misspelt key first: it also explains the "required" error of the key it was meant to be
    errors = sorted(exc.errors(include_url=False), key=lambda e: e["type"] != "extra_forbidden")
    first = errors[0]
    loc = ".".join(str(p) for p in first["loc"] if not str(p).startswith(("list[", "dict[", "function")))
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = f"unknown key{did_you_mean(first['loc'][-1], SpaceDocument.model_fields, cutoff=0.6)}"
    elif first["type"] == "missing":
        message = "required"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{loc or '(top level)'}: {message}{more}"
