"""\"Did you mean\" hints for mistyped specs."""

from __future__ import annotations

import difflib


def did_you_mean(text: str, known: list[str], cutoff: float = 0.5) -> str:
    """``"; did you mean 'x'?"`` for the closest known spec, or ``""``.

    Ties of the whole-string similarity go to the spec whose letters are closest (``fp16`` ->
    ``fp32``, not ``pot6``).
    """

    def letters(s: str) -> str:
        return "".join(c for c in s if c.isalpha())

    def score(candidate: str) -> tuple[float, float]:
        return (
            difflib.SequenceMatcher(None, text, candidate).ratio(),
            difflib.SequenceMatcher(None, letters(text), letters(candidate)).ratio(),
        )

    best = max(known, key=score)
    return f"; did you mean {best!r}?" if score(best)[0] >= cutoff else ""
