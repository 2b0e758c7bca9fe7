"""Show a :class:`HardwareReport`: rich tables on a console, Markdown with PNGs beside it, or a
self-contained HTML page with the PNGs embedded. All file writes are atomic
(:mod:`snncompress.fileformat.atomic`).
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from snncompress.fileformat.atomic import atomic_path, write_text_atomic
from snncompress.hardware.plots import all_pngs
from snncompress.hardware.report_model import HardwareReport
from snncompress.hardware.tables_view import TableView, all_tables, summary_lines


def _detail_lines(r: HardwareReport) -> list[str]:
    t, c = r.energy_table, r.config
    lines = [f"energy table: {t.name} v{t.version}; source: {' '.join(t.source.split())}"]
    if t.memory_assumed:
        lines.append(
            f"energy table {t.name}: memory access energies are assumed (see the table's memory.note)"
        )
    lines.append(
        f"cost model: sparse_format={c.sparse_format}, memory_scope={c.memory_scope}, "
        f"irregular_access_factor={c.irregular_access_factor:g}, dram_estimate={c.dram_estimate}"
    )
    lines += [f"{k}: {v}" for k, v in sorted(r.source.items()) if k != "data"]
    thresholds = threshold_line(r)
    if thresholds:
        lines.append(thresholds)
    return lines


def threshold_line(r: HardwareReport) -> str | None:
    """Each neuron layer's firing threshold as stored (learned thresholds differ from layer to layer)."""
    thresholds = [f"{row.name} {_vth(row.threshold)}" for row in r.layers if row.threshold is not None]
    return "neuron thresholds (Vth): " + ", ".join(thresholds) if thresholds else None


def _vth(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.6g}"
    return f"{min(values):.4g}..{max(values):.4g} (per neuron, mean {sum(values) / len(values):.4g})"


def rich_table(view: TableView) -> Table:
    """A compact rich table without its title: no vertical rules, no cell ever wrapped."""
    table = Table(
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        padding=(0, 1),
    )
    for i, h in enumerate(view.headers):
        text = i < view.text_columns
        table.add_column(h, justify="left" if text else "right", no_wrap=True, overflow="fold")
    for i, row in enumerate(view.rows):
        last = view.has_total and i == len(view.rows) - 1
        table.add_row(
            *row, style="bold" if last else None, end_section=view.has_total and i == len(view.rows) - 2
        )
    return table


def _width(view: TableView, console: Console) -> int:
    unbounded = console.options.update_width(100_000)  # measure what the table needs, not what it gets
    return Measurement.get(console, unbounded, rich_table(view)).maximum


def split_to_width(view: TableView, console: Console) -> list[TableView]:
    """``view`` as it is when it fits the console, else split into column groups that do.

    Numbers are never cut: each part repeats the text columns (layer name, ...) and takes an even
    share of the figure columns; a single column wider than the console is printed as it is.
    """
    if _width(view, console) <= console.width:
        return [view]
    figures = list(range(view.text_columns, len(view.headers)))
    for n in range(2, len(figures) + 1):
        size = -(-len(figures) // n)  # ceil
        groups = [figures[i : i + size] for i in range(0, len(figures), size)]
        parts = [_columns(view, g, continued=i > 0) for i, g in enumerate(groups)]
        if all(_width(part, console) <= console.width for part in parts):
            return parts
    return [_columns(view, [c], continued=i > 0) for i, c in enumerate(figures)]


def _columns(view: TableView, cols: list[int], continued: bool) -> TableView:
    keep = list(range(view.text_columns)) + cols
    return TableView(
        title=f"{view.title} (continued)" if continued else view.title,
        headers=tuple(view.headers[i] for i in keep),
        rows=tuple(tuple(row[i] for i in keep) for row in view.rows),
        has_total=view.has_total,
        text_columns=view.text_columns,
    )


def render_rich(report: HardwareReport, console: Console) -> None:
    """Print the report: a summary, the memory, ops, energy and baseline tables, then the warnings.

    Tables use one unit each (named in the title) and no vertical rules, so they fit 100 columns;
    on a narrower console a table is split into column groups rather than cut.
    """
    console.print(f"Hardware report: {report.model}", style="bold", markup=False, highlight=False)
    for line in summary_lines(report):
        console.print(line, markup=False, highlight=False)
    thresholds = threshold_line(report)
    if thresholds:
        console.print(thresholds, markup=False, highlight=False)
    for view in all_tables(report):
        for part in split_to_width(view, console):
            console.print()
            console.print(part.title, style="bold", markup=False, highlight=False)
            console.print(rich_table(part))
    for w in report.warnings:
        console.print(f"warning: {w}", style="yellow", markup=False, highlight=False)
    console.print(
        "Figures are per sample; how each is counted (and how it maps to NeuroBench) is in the JSON "
        "report's 'conventions' and in docs/report.md.",
        style="dim",
        markup=False,
        highlight=False,
    )


def _one_line(header: str) -> str:
    return header.replace("\n", " ")


def _md_table(view: TableView) -> str:
    def esc(s: str) -> str:
        return s.replace("|", "\\|")

    lines = [
        f"## {view.title}",
        "",
        "| " + " | ".join(esc(_one_line(h)) for h in view.headers) + " |",
        "|" + "|".join("---" if i < view.text_columns else "---:" for i in range(len(view.headers))) + "|",
    ]
    for i, row in enumerate(view.rows):
        cells = [esc(c) for c in row]
        if view.has_total and i == len(view.rows) - 1:
            cells = [f"**{c}**" if c else c for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def markdown_png_path(path: str | Path, plot: str) -> Path:
    """Where :func:`write_markdown` puts a plot: ``<stem>_<plot>.png`` beside the Markdown."""
    path = Path(path)
    return path.with_name(f"{path.stem}_{plot}.png")


def _write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _header_lines(report: HardwareReport) -> list[str]:
    return summary_lines(report)[:2] + _detail_lines(report)  # the details name the table in full


def write_markdown(report: HardwareReport, path: str | Path) -> list[Path]:
    """Write Markdown to ``path`` and the plots as ``<stem>_<plot>.png`` beside it.

    Returns:
        Every file written, the Markdown first.
    """
    path = Path(path)
    written = [path]
    parts = [f"# Hardware report: {report.model}", "", *[f"- {line}" for line in _header_lines(report)], ""]
    for view in all_tables(report):
        parts.append(_md_table(view))
    parts.append("## Plots\n")
    for name, png in all_pngs(report).items():
        png_path = markdown_png_path(path, name)
        _write_bytes(png_path, png)
        written.append(png_path)
        parts.append(f"![{name}]({png_path.name})\n")
    parts.append(_md_list("Warnings", report.warnings or ["none"]))
    parts.append(_md_list("Conventions", report.conventions))
    write_text_atomic(path, "\n".join(parts))
    return written


def _md_list(title: str, items: list[str]) -> str:
    return f"## {title}\n\n" + "\n".join(f"- {i}" for i in items) + "\n"


_CSS = (
    "body{font-family:sans-serif;margin:2em;max-width:80em}"
    "table{border-collapse:collapse;margin:0.5em 0 1.5em}"
    "th,td{border:1px solid #ccc;padding:2px 8px;text-align:right}"
    "th.t,td.t{text-align:left}"
    "tr.total td{font-weight:bold}.warn{color:#8a6d00;background:#fff8dc}img{max-width:100%}"
)


def _html_table(view: TableView) -> str:
    e = html.escape

    def cls(i: int) -> str:
        return ' class="t"' if i < view.text_columns else ""

    out = [
        f"<h2>{e(view.title)}</h2>",
        "<table>",
        "<tr>" + "".join(f"<th{cls(i)}>{e(_one_line(h))}</th>" for i, h in enumerate(view.headers)) + "</tr>",
    ]
    for r, row in enumerate(view.rows):
        total = ' class="total"' if view.has_total and r == len(view.rows) - 1 else ""
        out.append(f"<tr{total}>" + "".join(f"<td{cls(i)}>{e(c)}</td>" for i, c in enumerate(row)) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def write_html(report: HardwareReport, path: str | Path) -> Path:
    """Write one self-contained HTML page (plots embedded as base64 PNG)."""
    path = Path(path)
    e = html.escape
    body = [f"<h1>Hardware report: {e(report.model)}</h1>", "<ul>"]
    body += [f"<li>{e(line)}</li>" for line in _header_lines(report)]
    body.append("</ul>")
    body += [_html_table(view) for view in all_tables(report)]
    body.append("<h2>Plots</h2>")
    for name, png in all_pngs(report).items():
        data = base64.b64encode(png).decode("ascii")
        body.append(f'<figure><img alt="{e(name)}" src="data:image/png;base64,{data}"></figure>')
    body.append("<h2>Warnings</h2><ul>")
    body += [f'<li class="warn">{e(w)}</li>' for w in report.warnings] or ["<li>none</li>"]
    body.append("</ul><h2>Conventions</h2><ul>")
    body += [f"<li>{e(c)}</li>" for c in report.conventions]
    body.append("</ul>")
    page = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>Hardware report: '
        f"{e(report.model)}</title><style>{_CSS}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
    write_text_atomic(path, page)
    return path
