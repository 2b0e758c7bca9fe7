"""Errors raised by the library.

The library raises; the CLI reports. Each error carries the exit code the CLI uses:
2 for bad usage or bad input, 1 for a domain failure (a pass that cannot reach its goal,
a failed quality gate).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class SnnCompressError(Exception):
    """Base class for every error snncompress raises on purpose."""

    exit_code: int = 1


class InputError(SnnCompressError):
    """Bad user input: a missing file, an unknown format, a model or data set that does not fit."""

    exit_code = 2


class ModelLoadError(InputError):
    """A model could not be loaded or rebuilt."""


class ModelRunError(InputError):
    """The user's model raised an exception while it ran (the message names the layer)."""


class NoTimeLoopError(ModelLoadError):
    """A user module whose ``forward`` runs one time step per call (it returns no records over time)."""


class DataError(InputError):
    """A data set could not be loaded or does not fit the model."""


class ConfigError(InputError):
    """A pass config or recipe is invalid."""


class UnsupportedLayerError(InputError):
    """The model holds a layer snncompress does not know how to handle."""


class FileFormatError(InputError):
    """A compressed file is truncated, corrupted or of an unknown version."""


class OutputError(InputError):
    """An output cannot be written: a read-only folder, a full disk (exit code 2; nothing is left behind)."""


class DomainError(SnnCompressError):
    """A well-formed request that cannot be carried out (exit code 1)."""

    exit_code = 1


class GateFailure(DomainError):
    """A quality gate failed after a run."""


def did_you_mean(text: object, known: Iterable[str], cutoff: float = 0.5) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``known``, or ``""`` (the one hint every message uses).

    Ties of the whole-string similarity go to the candidate whose letters are closest (``fp16`` ->
    ``fp32``, not ``pot6``).
    """
    text = str(text)
    known = [str(k) for k in known]
    if not known:
        return ""

    def letters(s: str) -> str:
        return "".join(c for c in s if c.isalpha())

    def score(candidate: str) -> tuple[float, float]:
        return (
            difflib.SequenceMatcher(None, text, candidate).ratio(),
            difflib.SequenceMatcher(None, letters(text), letters(candidate)).ratio(),
        )

    best = max(known, key=score)
    return f"; did you mean '{best}'?" if score(best)[0] >= cutoff else ""
