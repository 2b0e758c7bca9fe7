"""A recipe: a versioned list of passes with their configs, read from YAML or TOML.

    version: 1
    description: SpQuant-style QAT      # optional
    passes:
      - pass: quantize                  # a registered pass (``snncompress passes``)
        mode: qat                       # that pass's config keys (its CLI flags, snake_case)
        weight_quant: pot4
        overrides:                      # other values for some layers, first match wins
          - targets: ["re:^0\\\\.", "9"]
            weight_quant: pot8

A :class:`Recipe` holds validated configs only: building one validates the whole document and
raises :class:`RecipeError` listing every problem by place. ``Recipe.from_yaml(r.to_yaml()) == r``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from snncompress.errors import ConfigError
from snncompress.passes.base import PassConfig
from snncompress.passes.registry import PassRegistry, default_registry
from snncompress.recipes.messages import RecipeError
from snncompress.recipes.validate import RECIPE_VERSION, validate_document, validate_step

SUFFIXES = (".yaml", ".yml", ".toml")


@dataclass(frozen=True)
class RecipeStep:
    """One pass of a recipe with its validated config."""

    name: str
    config: PassConfig

    def to_dict(self) -> dict[str, Any]:
        """``{"pass": name, **config}``; ``targets``/``overrides`` only when set."""
        values = self.config.model_dump(mode="json")
        if values.get("targets") is None:
            values.pop("targets", None)
        if not values.get("overrides"):
            values.pop("overrides", None)
        return {"pass": self.name, **values}


@dataclass(frozen=True)
class Recipe:
    """A validated, versioned sequence of passes."""

    steps: tuple[RecipeStep, ...]
    version: int = RECIPE_VERSION
    description: str | None = None
    source: str | None = field(default=None, compare=False)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.steps]

    # -- reading ---------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Any, *, registry: PassRegistry | None = None,
                  source: str | None = None) -> Recipe:
        """Validate a parsed document.

        Raises:
            RecipeError: every problem found, one ``place: message`` line each (exit code 2).
        """
        registry = registry or default_registry()
        steps, description, problems = validate_document(data, registry)
        if problems:
            raise RecipeError(problems, source)
        return cls(steps=tuple(RecipeStep(n, c) for n, c in steps), description=description, source=source)

    @classmethod
    def from_yaml(cls, text: str, *, registry: PassRegistry | None = None,
                  source: str | None = None) -> Recipe:
        return cls.from_dict(parse_yaml(text, source), registry=registry, source=source)

    @classmethod
    def from_toml(cls, text: str, *, registry: PassRegistry | None = None,
                  source: str | None = None) -> Recipe:
        return cls.from_dict(parse_toml(text, source), registry=registry, source=source)

    @classmethod
    def load(cls, path: str | Path, *, settings: Sequence[str] = (),
             registry: PassRegistry | None = None) -> Recipe:
        """Read a ``.yaml``/``.yml``/``.toml`` recipe; ``settings`` are ``--set STEP.KEY=VALUE`` edits.

        Raises:
            ConfigError: missing file, unknown suffix, bad YAML/TOML, a bad setting.
            RecipeError: the recipe is invalid.
        """
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"recipe not found: {path}")
        suffix = path.suffix.lower()
        if suffix not in SUFFIXES:
            raise ConfigError(f"{path}: unknown recipe type '{suffix}'; use .yaml, .yml or .toml")
        text = path.read_text(encoding="utf-8")
        data = parse_toml(text, str(path)) if suffix == ".toml" else parse_yaml(text, str(path))
        data = apply_settings(data, settings)
        return cls.from_dict(data, registry=registry, source=str(path))

    @classmethod
    def single(cls, name: str, config: Mapping[str, Any] | PassConfig, *,
               registry: PassRegistry | None = None) -> Recipe:
        """A one-step recipe, as the single-pass commands run it.

        Problems are named by CLI flag (``--weight-quant: ...``) rather than by recipe place.

        Raises:
            ConfigError: unknown pass; RecipeError: an invalid config.
        """
        registry = registry or default_registry()
        spec = registry.get(name)
        if isinstance(config, PassConfig):
            if not isinstance(config, spec.config_class):
                raise ConfigError(f"pass '{name}' takes a {spec.config_class.__name__}, "
                                  f"not a {type(config).__name__}")
            return cls(steps=(RecipeStep(name, config),))
        values = {k: v for k, v in config.items()}
        _, validated, problems = validate_step(values, "", registry, name=name)
        if problems:
            raise RecipeError([_as_flag(p, spec.config_class.model_fields) for p in problems],
                              title=f"invalid options for '{name}'")
        return cls(steps=(RecipeStep(name, validated),))

    @classmethod
    def from_history(cls, history: Sequence[Mapping[str, Any]], *,
                     registry: PassRegistry | None = None) -> Recipe:
        """The recipe that reproduces a compressed file's pass history (``read_metadata(f)["history"]``).

        Each record's pass version is checked against the registered pass: a config written by
        another version of a pass may mean something else, so it is refused rather than re-run.

        Raises:
            RecipeError: an unknown pass, an invalid config, or a pass whose version differs.
        """
        registry = registry or default_registry()
        steps = [{"pass": h.get("pass"), **dict(h.get("config") or {})} for h in history]
        recipe = cls.from_dict({"version": RECIPE_VERSION, "passes": steps}, registry=registry,
                               source="the pass history")
        problems = []
        for i, record in enumerate(history):
            recorded = record.get("version")
            current = registry.get(str(record.get("pass"))).version
            if recorded is not None and str(recorded) != current:
                problems.append(f"passes[{i}] ({record.get('pass')}): recorded by version {recorded} of the pass, "
                                f"this snncompress has version {current}; its config may not mean the same")
        if problems:
            raise RecipeError(problems, "the pass history")
        return recipe

    # -- writing ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"version": self.version}
        if self.description is not None:
            out["description"] = self.description
        out["passes"] = [step.to_dict() for step in self.steps]
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def dump(self, path: str | Path, *, force: bool = False) -> Path:
        """Write the recipe as YAML, atomically (never over an existing file without ``force``)."""
        from snncompress.fileformat.atomic import check_output_path, write_text_atomic

        path = check_output_path(path, force)
        write_text_atomic(path, self.to_yaml(), replace=force)
        return path


def parse_yaml(text: str, source: str | None = None) -> Any:
    """``yaml.safe_load`` with errors turned into ConfigError naming the line."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source or 'recipe'}:{mark.line + 1}:{mark.column + 1}" if mark else (source or "recipe")
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: not valid YAML: {problem}") from exc


def parse_toml(text: str, source: str | None = None) -> Any:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError as exc:
            raise ConfigError("TOML recipes need Python 3.11+ (or `pip install tomli`); use YAML") from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source or 'recipe'}: not valid TOML: {exc}") from exc


_SETTING = re.compile(r"^(?P<step>[^.=]+)\.(?P<key>[A-Za-z_][A-Za-z0-9_]*)=(?P<value>.*)$", re.S)


def apply_settings(data: Any, settings: Sequence[str]) -> Any:
    """Apply ``STEP.KEY=VALUE`` edits to a parsed recipe (before validation).

    ``STEP`` is a step index (``0``) or a pass name (every step of that pass); ``VALUE`` is read as
    YAML (``3``, ``0.5``, ``pot8``, ``null``).

    Raises:
        ConfigError: a setting that is malformed or names no step.
    """
    if not settings:
        return data
    if not isinstance(data, Mapping) or not isinstance(data.get("passes"), list):
        raise ConfigError("--set needs a recipe with a 'passes' list")
    data = {**data, "passes": [dict(s) if isinstance(s, Mapping) else s for s in data["passes"]]}
    steps = data["passes"]
    for setting in settings:
        match = _SETTING.match(setting)
        if match is None:
            raise ConfigError(f"--set {setting}: expected STEP.KEY=VALUE, e.g. quantize.epochs=1 or "
                              "0.epochs=1")
        step, key = match["step"], match["key"]
        value = parse_yaml(match["value"], f"--set {setting}")
        if step.isdigit():
            chosen = [int(step)] if int(step) < len(steps) else []
        else:
            chosen = [i for i, s in enumerate(steps) if isinstance(s, Mapping) and s.get("pass") == step]
        if not chosen:
            names = [str(s.get("pass")) for s in steps if isinstance(s, Mapping)]
            raise ConfigError(f"--set {setting}: no step '{step}' (steps: "
                              f"{', '.join(f'{i} {n}' for i, n in enumerate(names))})")
        for i in chosen:
            steps[i][key] = value
    return data


def _as_flag(problem: str, fields: Mapping[str, Any]) -> str:
    """``weight_quant: ...`` -> ``--weight-quant: ...`` for a config key given as a CLI flag."""
    if problem.startswith(": "):  # the config as a whole (a rule between keys), not one key
        return problem[2:]
    key = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)", problem)
    if key and key[1] in fields:
        return "--" + key[1].replace("_", "-") + problem[len(key[1]):]
    return problem
