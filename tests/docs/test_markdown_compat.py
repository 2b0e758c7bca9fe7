"""The site's Markdown fixes (``docs/hooks/compat.py``): GitHub-style lists and table code spans."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("docs_compat", REPO_ROOT / "docs" / "hooks" / "compat.py")
compat = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = compat
_spec.loader.exec_module(compat)


def test_nested_items_and_continuations_get_four_spaces():
    text = "Intro:\n- a\n  more a\n  - nested\n    more nested\n- b\n\nAfter.\n  indented text"
    assert compat.indent_lists(text) == (
        "Intro:\n\n- a\n    more a\n    - nested\n        more nested\n- b\n\nAfter.\n  indented text")


def test_a_fence_inside_an_item_stays_inside_and_the_next_item_starts_a_new_one():
    text = "- a:\n\n  ```python\n  x = 1\n  ```\n\n  (after)\n- b"
    assert compat.indent_lists(text) == "- a:\n\n    ```python\n    x = 1\n    ```\n\n    (after)\n\n- b"


def test_code_blocks_and_yaml_lists_are_left_alone():
    text = "```yaml\npasses:\n  - pass: quantize\n```\ntext\n- item"
    assert compat.indent_lists(text) == "```yaml\npasses:\n  - pass: quantize\n```\ntext\n\n- item"


def test_pipes_in_table_code_spans_are_unescaped_only_there():
    text = "| `a\\|b` | c \\| d |\n`x\\|y`"
    assert compat.unescape_table_code(text) == "| `a|b` | c \\| d |\n`x\\|y`"


def test_sphinx_roles_are_dropped_before_code():
    assert compat.on_page_content("see :func:<code>compress</code> and :class:<code>Recipe</code>") == \
        "see <code>compress</code> and <code>Recipe</code>"
