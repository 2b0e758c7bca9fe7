"""Validate a recipe document before anything runs.

Every problem is collected (not just the first) and named by its place: unknown top-level or pass
keys, unknown passes, values out of range, per-layer overrides, bad ``re:`` targets, and the
ordering rules the passes declare as data (``PassSpec.after`` / ``before`` / ``max_per_recipe``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from snncompress.passes.base import PassConfig, PassSpec
from snncompress.passes.registry import PassRegistry
from snncompress.recipes.messages import did_you_mean, validation_problems

RECIPE_VERSION = 1
TOP_LEVEL_KEYS = ("version", "description", "passes")
BASE_KEYS = ("targets", "overrides")


def validate_document(data: Any, registry: PassRegistry) -> tuple[list[tuple[str, PassConfig]], str | None,
                                                                   list[str]]:
    """Check a parsed recipe.

    Returns:
        ``(steps, description, problems)``: each valid step as ``(pass name, config)``; ``problems``
        lists every ``place: message`` found (empty when the recipe is valid).
    """
    if not isinstance(data, Mapping):
        return [], None, [f"(top level): must be a mapping with 'version: {RECIPE_VERSION}' and 'passes'"]
    problems: list[str] = []
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            problems.append(f"{key}: unknown key{did_you_mean(key, TOP_LEVEL_KEYS)}")
    problems += _version_problems(data)
    description = data.get("description")
    if description is not None and not isinstance(description, str):
        problems.append("description: must be a string")
    raw_steps = data.get("passes")
    if raw_steps is None:
        problems.append("passes: required: a list of steps, each 'pass: NAME' plus that pass's keys")
        return [], description, problems
    if not isinstance(raw_steps, list) or not raw_steps:
        problems.append("passes: must be a non-empty list of steps")
        return [], description, problems
    steps: list[tuple[str, PassConfig]] = []
    names: list[str | None] = []
    for i, raw in enumerate(raw_steps):
        name, config, step_problems = validate_step(raw, f"passes[{i}]", registry)
        names.append(name)
        problems += step_problems
        if config is not None:
            steps.append((name, config))
    problems += ordering_problems(names, registry)
    return steps, description, problems


def _version_problems(data: Mapping[str, Any]) -> list[str]:
    if "version" not in data:
        return [f"version: required; add 'version: {RECIPE_VERSION}' at the top"]
    version = data["version"]
    if type(version) is not int:
        return [f"version: must be the integer {RECIPE_VERSION} (got {version!r})"]
    if version != RECIPE_VERSION:
        return [f"version: recipe version {version} is not supported; this snncompress reads version "
                f"{RECIPE_VERSION}"]
    return []


def validate_step(raw: Any, prefix: str, registry: PassRegistry, *,
                  name: str | None = None) -> tuple[str | None, PassConfig | None, list[str]]:
    """Check one step (``pass: NAME`` plus its config keys).

    Args:
        raw: the step mapping.
        prefix: its place (``passes[2]``), or ``""`` for a single pass given by CLI flags.
        registry: where pass names are looked up.
        name: the pass name when ``raw`` holds only config keys.

    Returns:
        ``(pass name or None, validated config or None, problems)``.
    """
    if not isinstance(raw, Mapping):
        return None, None, [f"{prefix}: must be a mapping: 'pass: NAME' plus that pass's keys"]
    values = dict(raw)
    if name is None:
        name = values.pop("pass", None)
        if name is None:
            return None, None, [f"{prefix}: missing 'pass: NAME' (passes: {', '.join(registry.names())})"]
        if not isinstance(name, str) or name not in registry:
            return None, None, [f"{_at(prefix, 'pass')}: unknown pass {name!r}{registry.suggest(str(name))}"]
    spec = registry.get(name)
    fields = list(spec.config_class.model_fields)
    problems: list[str] = []
    config = None
    try:
        config = spec.config_class.model_validate(values)
    except ValidationError as exc:
        problems += validation_problems(exc, prefix, fields)
    problems += _target_problems(values, prefix)
    problems += _override_problems(spec, values, prefix, base_valid=config is not None)
    return name, (config if not problems else None), problems


def _at(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _target_problems(values: Mapping[str, Any], prefix: str) -> list[str]:
    """``re:`` patterns that do not compile, in ``targets`` and every override's ``targets``."""
    pools: list[tuple[str, Any]] = [(_at(prefix, "targets"), values.get("targets"))]
    overrides = values.get("overrides")
    if isinstance(overrides, list):
        pools += [(f"{_at(prefix, 'overrides')}[{j}].targets", o.get("targets"))
                  for j, o in enumerate(overrides) if isinstance(o, Mapping)]
    problems = []
    for where, patterns in pools:
        if not isinstance(patterns, list):
            continue
        for k, pattern in enumerate(patterns):
            if isinstance(pattern, str) and pattern.startswith("re:"):
                try:
                    re.compile(pattern[3:])
                except re.error as exc:
                    problems.append(f"{where}[{k}]: bad regular expression {pattern!r}: {exc}")
    return problems


def _override_problems(spec: PassSpec, values: Mapping[str, Any], prefix: str, *,
                       base_valid: bool) -> list[str]:
    """Validate each override's keys as the step's config with the override applied."""
    overrides = values.get("overrides")
    if not isinstance(overrides, list):
        return []
    base = {k: v for k, v in values.items() if k not in BASE_KEYS}
    fields = [f for f in spec.config_class.model_fields if f not in BASE_KEYS]
    problems = []
    for j, override in enumerate(overrides):
        if not isinstance(override, Mapping):
            continue  # reported by the step's own validation
        where = f"{_at(prefix, 'overrides')}[{j}]"
        extras = {k: v for k, v in override.items() if k != "targets"}
        for key in [k for k in extras if k in BASE_KEYS]:
            problems.append(f"{where}.{key}: not allowed inside an override")
            extras.pop(key)
        try:
            spec.config_class.model_validate({**base, **extras})
        except ValidationError as exc:
            # errors on the override's own keys; whole-config checks (empty location) only when
            # the step is valid without the override, so this override is what breaks them
            def keep(loc, extras=extras):
                return (bool(loc) and loc[0] in extras) or (not loc and base_valid)

            problems += validation_problems(exc, where, fields, keep)
    return problems


def ordering_problems(names: list[str | None], registry: PassRegistry) -> list[str]:
    """Ordering rules the passes declare: ``after``, ``before``, ``max_per_recipe``.

    ``names`` holds each step's pass name (None for a step that is not a known pass).
    """
    sequence = " -> ".join(f"[{i}] {n or '?'}" for i, n in enumerate(names))
    problems = []
    counts: dict[str, int] = {}
    for i, name in enumerate(names):
        if name is None or name not in registry:
            continue
        spec = registry.get(name)
        counts[name] = counts.get(name, 0) + 1
        if spec.max_per_recipe is not None and counts[name] == spec.max_per_recipe + 1:
            times = "once" if spec.max_per_recipe == 1 else f"{spec.max_per_recipe} times"
            problems.append(f"passes[{i}]: '{name}' may appear at most {times} in a recipe; "
                            f"sequence: {sequence}")
        for other in spec.after:
            for j in range(i + 1, len(names)):
                if names[j] == other:
                    problems.append(f"passes[{i}]: '{name}' must come after '{other}' (passes[{j}]); "
                                    f"sequence: {sequence}")
                    break
        for other in spec.before:
            for j in range(i):
                if names[j] == other:
                    problems.append(f"passes[{i}]: '{name}' must come before '{other}' (passes[{j}]); "
                                    f"sequence: {sequence}")
                    break
    return problems
