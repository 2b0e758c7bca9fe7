"""The CLI reference page (``cli.md``), generated from the Typer app at build time.

Walks the command tree of ``snncompress.cli.app.app`` (through ``typer.main.get_command``, the click
command ``snncompress --help`` itself prints from) and renders, per command, its usage line, help text,
arguments and options (each as its ``--help`` line shows it: names, metavar, help, default) and the
examples of its epilog. Nothing here names a flag: a flag that exists is documented, and one that does
not cannot be.

The page is not committed: as a MkDocs hook this module adds it to the site as a generated file on every
build, so it always describes the code being built. ``python docs/hooks/cli_reference.py`` prints it.
"""

from __future__ import annotations

import html
import sys
from pathlib import Path
from typing import Any

PAGE = "cli.md"
ROOT = Path(__file__).resolve().parents[2]
COMMAND_STARTS = ("snncompress ", "torchrun ", "python ", "pip ")  # as snncompress.cli.app.keep_examples


def escape(text: str) -> str:
    """Help text as Markdown that shows it as written: no HTML (``int<k>``), no emphasis, no table cells."""
    text = html.escape(" ".join(text.split()), quote=False)
    for char in "\\`*_[]|":
        text = text.replace(char, "\\" + char)
    return text


def code(text: str) -> str:
    """An inline code span holding ``text`` (a backtick inside gets a longer fence)."""
    fence = "``" if "`" in text else "`"
    return f"{fence}{text}{fence}" if fence == "`" else f"{fence} {text} {fence}"


def paragraphs(text: str | None) -> list[str]:
    """Click's help paragraphs (blank-line separated; ``\\b`` marks one not to rewrap)."""
    if not text:
        return []
    return [p.replace("\b", "").strip("\n") for p in text.split("\n\n") if p.replace("\b", "").strip()]


def commands_of(block: str) -> list[str]:
    """The commands of an example paragraph, one per line: ``--help`` wraps a long one onto lines that do
    not start with a command, which join back."""
    commands: list[str] = []
    for line in block.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith(COMMAND_STARTS) or not commands:
            commands.append(line)
        else:
            commands[-1] += " " + line
    return commands


def render_epilog(epilog: str | None) -> list[str]:
    lines: list[str] = []
    examples: list[str] = []

    def flush() -> None:
        if examples:
            lines.extend(["```bash", *examples, "```", ""])
            examples.clear()

    for para in paragraphs(epilog):
        if para.lstrip().startswith(COMMAND_STARTS):
            examples.extend(commands_of(para))
        else:
            flush()
            lines.extend([escape(para), ""])
    flush()
    return lines


def render_params(command: Any, ctx: Any) -> list[str]:
    rows = []
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None:  # hidden
            continue
        names, help_text = record
        kind = "argument" if param.param_type_name == "argument" else "option"
        rows.append(f"| {code(names)} | {kind} | {escape(help_text)} |")
    if not rows:
        return []
    return ["| name | kind | what it does |", "|---|---|---|", *rows, ""]


def render_command(command: Any, ctx: Any, level: int) -> list[str]:
    usage = " ".join([ctx.command_path, *command.collect_usage_pieces(ctx)])
    lines = [f"{'#' * level} {ctx.command_path}", "", "```text", usage, "```", ""]
    for para in paragraphs(command.help):
        lines.extend([escape(para), ""])
    lines.extend(render_params(command, ctx))
    lines.extend(render_epilog(command.epilog))
    return lines


def root_command() -> Any:
    import typer

    from snncompress.cli.app import app

    return typer.main.get_command(app)


def subcommands(root: Any) -> list[tuple[str, Any, Any]]:
    """``(name, command, context)`` of every command under the root, in the order ``--help`` lists them."""
    ctx = root.make_context("snncompress", [], resilient_parsing=True)
    out = []
    for name in root.list_commands(ctx):
        command = root.get_command(ctx, name)
        if command is None or getattr(command, "hidden", False):
            continue
        out.append((name, command, type(ctx)(command, info_name=name, parent=ctx)))
    return out


def render_page() -> str:
    root = root_command()
    ctx = root.make_context("snncompress", [], resilient_parsing=True)
    lines = [
        "# CLI reference",
        "",
        "Generated from the command-line app (`snncompress.cli.app`) when this site was built: every "
        "command, argument and option below is the one `snncompress COMMAND --help` prints. Exit codes: 0 "
        "success, 1 a domain failure (e.g. a failed quality gate), 2 bad usage or bad input.",
        "",
        "## snncompress",
        "",
        "```text",
        " ".join(["snncompress", *root.collect_usage_pieces(ctx)]),
        "```",
        "",
    ]
    for para in paragraphs(root.help):
        lines.extend([escape(para), ""])
    lines.extend(render_params(root, ctx))
    commands = subcommands(root)
    lines.extend(["| command | what it does |", "|---|---|"])
    for name, command, _ in commands:
        short = command.get_short_help_str(limit=300)
        lines.append(f"| [{name}](#snncompress-{name}) | {escape(short)} |")
    lines.append("")
    for _, command, sub in commands:
        lines.extend(render_command(command, sub, 2))
    return "\n".join(lines).rstrip() + "\n"


# -- the MkDocs hook ----------------------------------------------------------------------------------

def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    files.append(File.generated(config, PAGE, content=render_page()))
    return files


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.stdout.write(render_page())
