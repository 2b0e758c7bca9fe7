"""``package.module:attr`` references: the one place snncompress imports code a user names.

A model factory (``mypkg.nets:build``) and a data function (``mypkg.data:load``) are both such
references. Importing one runs its module's code, so the callers decide whether that is allowed: a
reference the user typed is, one read from a file is only with ``--trust-code``. This module never
edits ``sys.path``; finding modules in the working directory (as ``python -m`` does) is the CLI's
explicit choice (:func:`snncompress.cli.common.user_modules_importable`).
"""

from __future__ import annotations

import importlib
import re
from typing import Any

from snncompress.errors import InputError

# a dotted module path, a colon, a dotted attribute path: nothing else is a reference
_REF = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")


def is_ref(text: str) -> bool:
    """True when ``text`` has the form ``package.module:attr``."""
    return bool(_REF.match(str(text)))


def import_ref(ref: str, *, what: str = "reference", error: type[InputError] = InputError) -> Any:
    """Import ``package.module`` and return its attribute ``attr`` (dotted paths allowed).

    Args:
        ref: the reference, ``package.module:attr``.
        what: what the reference names, for messages (``model factory``, ``data function``).
        error: the error class to raise (e.g. ``ModelLoadError``).

    Returns:
        The attribute (not called).

    Raises:
        InputError: (``error``) not a reference, the module cannot be imported or lacks the attribute.
    """
    if not is_ref(ref):
        raise error(f"'{ref}' is not a package.module:attr {what} reference")
    module_name, _, attr = ref.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise error(f"cannot import '{module_name}' for {what} {ref}: {_first_line(exc)}") from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise error(f"module '{module_name}' has no attribute '{attr}'")
        obj = getattr(obj, part)
    return obj


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
