"""Validation problems as ``place: message`` lines (``passes[2].sparsity: must be < 1``)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from pydantic import ValidationError

from snncompress.errors import ConfigError
from snncompress.errors import did_you_mean as _did_you_mean

# pydantic adds the union member it tried to a location ("function-after[...]", "literal['a']")
_TAG = re.compile(r"[\[\](),\-\s']")


class RecipeError(ConfigError):
    """An invalid recipe or pass config; ``problems`` holds one ``place: message`` line each."""

    def __init__(self, problems: Sequence[str], source: str | None = None, *,
                 title: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        what = title or (f"invalid recipe {source}" if source else "invalid recipe")
        count = len(self.problems)
        if count == 1 and title is not None:  # a command's flag: "invalid options for 'quantize': --clip: ..."
            super().__init__(f"{what}: {self.problems[0].strip()}")
            return
        header = f"{what} ({count} problem{'s' if count != 1 else ''}):"
        super().__init__("\n  ".join([header, *self.problems]))


def did_you_mean(value: Any, options: Iterable[str]) -> str:
    """:func:`snncompress.errors.did_you_mean` at the stricter cutoff recipe keys use."""
    return _did_you_mean(value, options, cutoff=0.6)


def place(prefix: str, loc: Sequence[str | int]) -> str:
    """``prefix`` plus ``loc`` as ``.key`` / ``[index]`` parts, union tags dropped."""
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not _TAG.search(part):
            out += f".{part}" if out else part
    return out


def _got(value: Any) -> str:
    if isinstance(value, dict | list):
        return ""
    return f" (got {value!r})"


def describe(error: dict[str, Any], fields: Iterable[str]) -> str:
    """One pydantic error as a short message that says what to write instead."""
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        hint = did_you_mean(error["loc"][-1], fields)
        return f"unknown key{hint}" if hint else f"unknown key; keys: {', '.join(sorted(fields))}"
    bounds = {"less_than": ("<", "lt"), "less_than_equal": ("<=", "le"),
              "greater_than": (">", "gt"), "greater_than_equal": (">=", "ge")}
    if kind in bounds:
        op, key = bounds[kind]
        return f"must be {op} {ctx.get(key)}{_got(value)}"
    if kind in ("literal_error", "enum"):
        options = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        return f"must be one of {', '.join(options)}{_got(value)}{did_you_mean(value, options)}"
    if kind in ("value_error", "assertion_error"):
        message = str(ctx.get("error") or error["msg"])
        return message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    simple = {"int_parsing": "must be an integer", "int_type": "must be an integer",
              "int_from_float": "must be a whole number", "float_parsing": "must be a number",
              "float_type": "must be a number", "bool_parsing": "must be true or false",
              "bool_type": "must be true or false", "string_type": "must be a string",
              "list_type": "must be a list", "dict_type": "must be a mapping",
              "model_type": "must be a mapping", "too_short": "must not be empty"}
    if kind in simple:
        return simple[kind] + _got(value)
    msg = str(error["msg"])
    return msg[:1].lower() + msg[1:] + _got(value)


def validation_problems(exc: ValidationError, prefix: str, fields: Iterable[str],
                        keep: Callable[[tuple[str | int, ...]], bool] | None = None) -> list[str]:
    """``place: message`` lines for ``exc``, for the errors whose location ``keep`` accepts.

    Several errors at one place (a union's members) are joined with ``or``.
    """
    fields = list(fields)
    by_place: dict[str, list[str]] = {}
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        if keep is not None and not keep(loc):
            continue
        message = describe(error, fields)
        messages = by_place.setdefault(place(prefix, loc), [])
        if message not in messages:
            messages.append(message)
    return [f"{where}: {' or '.join(messages)}" for where, messages in by_place.items()]
