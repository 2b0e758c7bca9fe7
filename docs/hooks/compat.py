"""Differences between GitHub's Markdown and the site's (Python-Markdown), bridged so one source renders
right in both.

* Lists: GitHub nests an item indented by 2 spaces, and starts a list right after a paragraph line;
  Python-Markdown needs 4 spaces (for nested items, and for a paragraph or code fence inside an item)
  and a blank line before the list. The hook doubles the indentation of every line of a list and puts a
  blank line before a list that follows a paragraph.
* A ``|`` inside a code span in a table row: GitHub needs it escaped (``\\|``) even there, Python-Markdown
  takes the code span whole and would show the backslash. The hook unescapes it in table rows' code
  spans before the page is converted.
* Sphinx roles in docstrings (``:func:`compress```): mkdocstrings renders the role as text before the code
  span (``:func:<code>compress</code>``); the hook drops the role and keeps the code span.
"""

from __future__ import annotations

import re
from typing import Any

LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+\.) ")
FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
ROLE = re.compile(r":(?:py:)?(?:func|class|mod|meth|attr|data|exc|obj|const):(?=<code>)")


def unescape_table_code(markdown: str) -> str:
    lines, fence = [], None
    for line in markdown.split("\n"):
        stripped = line.lstrip()
        if stripped.startswith(("```", "~~~")):
            marker = stripped[:3]
            fence = None if fence == marker else (fence or marker)
        elif fence is None and stripped.startswith("|"):
            line = CODE_SPAN.sub(lambda m: m.group(1) + m.group(2).replace("\\|", "|") + m.group(1), line)
        lines.append(line)
    return "\n".join(lines)


def indent_lists(markdown: str) -> str:
    out: list[str] = []
    in_list = fence = later_paragraph = False
    previous = ""
    for line in markdown.split("\n"):
        indent = len(line) - len(line.lstrip(" "))
        item = not fence and LIST_ITEM.match(line) is not None
        if not in_list and not fence and indent == 0 and item:
            in_list = True
            if previous.strip():  # a list right after a paragraph line
                out.append("")
        elif in_list and not fence and line.strip() and indent == 0 and not item and not previous.strip():
            in_list = False  # a blank line, then text at the margin: the list ended
        elif in_list and item:
            if later_paragraph and previous.strip():  # an item right after an item's second paragraph
                out.append("")
            later_paragraph = False
        elif in_list and not fence and line.strip() and not previous.strip():
            later_paragraph = True  # an item's paragraph after a blank line
        if FENCE.match(line):
            if fence or not (in_list and indent == 0):
                fence = not fence
            elif in_list:  # a fence at the margin ends the list
                in_list, fence = False, True
        if in_list and indent:
            line = " " * indent + line
        out.append(line)
        previous = line
    return "\n".join(out)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    return indent_lists(unescape_table_code(markdown))


def on_page_content(html: str, **kwargs: Any) -> str:
    return ROLE.sub("", html)
