"""Docstrings here cross-reference Sphinx-style (``:func:`compress```); mkdocstrings renders the role
as text before the code span (``:func:<code>compress</code>``). This hook drops the role, keeping the
code span, in every built page."""

from __future__ import annotations

import re
from typing import Any

ROLE = re.compile(r":(?:py:)?(?:func|class|mod|meth|attr|data|exc|obj|const):(?=<code>)")


def on_page_content(html: str, **kwargs: Any) -> str:
    return ROLE.sub("", html)
