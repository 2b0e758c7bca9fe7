"""Benchmark tables rendered from the stored results (``benchmarks/results/*.json``).

A page (any ``docs/**/*.md``, or ``README.md``) holds a table between two markers::

    <!-- table:quantize -->
    ...generated, do not edit...
    <!-- /table -->

``python docs/hooks/tables.py --write`` renders every such block from the JSON files;
``python docs/hooks/tables.py --check`` exits 1 naming each block that differs from what its JSON
renders to (``tests/docs/test_tables.py`` runs the same check, and ``mkdocs build`` refuses to build
a site with a stale block: this module is also a MkDocs hook). A figure in a table is either the
benchmark's own text for that row (``measured`` / ``target`` of the ``rows`` its script wrote) or
computed here from the numbers the script stored; nothing in a block is typed by hand.

Each table is declared once in ``TABLES``: the JSON files it reads and a function from their loaded
contents to Markdown. Edit a JSON value that a table shows and that block no longer matches.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
WRITE_COMMAND = "python docs/hooks/tables.py --write"

# a marker is a line of its own (one quoted in prose or in code is not a marker)
BLOCK = re.compile(r"^<!-- table:(?P<name>[^ ]*) -->\n(?P<body>.*?)^<!-- /table -->$", re.S | re.M)
START = re.compile(r"^<!-- table:(?P<name>[^ ]*) -->$", re.M)
END = re.compile(r"^<!-- /table -->$", re.M)


@dataclass(frozen=True)
class Table:
    """A table: the result files it reads (names in ``benchmarks/results``) and how it renders them."""

    sources: tuple[str, ...]
    render: Callable[[Mapping[str, Any]], list[str]]
    note: str = ""  # what the table's rows come from, beyond the file names


# -- formatting ---------------------------------------------------------------------------------------

def cell(value: Any) -> str:
    """One table cell: a ``|`` would end the cell, a newline the row."""
    return " ".join(str(value).split()).replace("|", "\\|")


def markdown_table(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> list[str]:
    header = [cell(h) for h in header]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return lines


def verdict(passed: bool | None, words: tuple[str, str]) -> str:
    """A row's result: ``-`` without a target, else the pass word or the failure word in bold."""
    if passed is None:
        return "-"
    return words[0] if passed else f"**{words[1]}**"


def benchmark_rows(rows: Iterable[Mapping[str, Any]], first: str, words: tuple[str, str]) -> list[list[str]]:
    """The rows a benchmark script wrote (``section``/``model``, ``name``, ``measured``, ``target``,
    ``passed``) as they are; an indented name (a breakdown row) loses its indent."""
    return [[row[first], row["name"].strip(), row["measured"], row["target"], verdict(row["passed"], words)]
            for row in rows]


def per_seed(values: Iterable[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


# -- the tables ---------------------------------------------------------------------------------------

def quantize(data: Mapping[str, Any]) -> list[str]:
    # accuracy and file size from the later accuracy-only run; speed from the full run (the accuracy
    # run was made with --skip-speed, so the two files hold different rows)
    rows = [r for r in data["quantize-accuracy.json"]["rows"] if r["section"] in ("accuracy", "file size")]
    rows += [r for r in data["quantize.json"]["rows"] if r["section"] == "speed"]
    return markdown_table(["section", "benchmark", "measured", "target", "result"],
                          benchmark_rows(rows, "section", ("pass", "FAIL")))


def membrane_speed(data: Mapping[str, Any]) -> list[str]:
    methods = data["quantize.json"]["membrane_speed"]
    rows = []
    for m in methods:
        versus = "-"
        if "speedup" in m:
            versus = (f"{m['speedup']:.1f}x faster than {m['reference']}; "
                      f"{m['vs_bare_ste']:.2f}x the bare STE's time")
        rows.append([m["method"], m["levels"], f"{m['median_ms']:.2f}", f"{m['min_ms']:.2f}",
                     f"{m['peak_extra_bytes'] / 2**20:.1f}", versus])
    n = methods[0]["n"]
    return markdown_table([f"method ({n:,} values, forward + backward)", "levels", "median ms", "min ms",
                           "peak extra memory MiB", "compared"], rows)


def ptq_real(data: Mapping[str, Any]) -> list[str]:
    results = data["ptq_real.json"]["results"]
    labels = list(next(iter(results.values()))["runs"])
    rows = []
    for kind, res in results.items():
        fp32 = statistics.mean(res["fp32"].values())
        row = [f"{kind} ({fp32:.2f} %)"]
        for label in labels:
            run = res["runs"][label]
            text = "-" if run["mean_drop"] is None else f"{run['mean_drop']:.2f}"
            if run["refused"]:
                seeds = ", ".join(str(s) for s in run["refused"])
                text += f" (seed{'s' if len(run['refused']) > 1 else ''} {seeds} refused)"
            row.append(text)
        rows.append(row)
    return markdown_table(["model (fp32, mean of seeds)"] + [label.strip() for label in labels], rows)


def threshold(data: Mapping[str, Any]) -> list[str]:
    result = data["threshold.json"]
    runs = result["runs"]
    seeds = result["settings"]["seeds"]
    table: dict[tuple[str, str], dict[int, float]] = {}
    for run in runs:
        table.setdefault((run["model"], run["method"]), {})[run["seed"]] = run["accuracy"]
    rows = []
    for (model, method), by_seed in table.items():
        mean = statistics.mean(by_seed[s] for s in seeds)
        fixed = table.get((model, "fixed"))
        versus = "-" if method == "fixed" or fixed is None else \
            f"{mean - statistics.mean(fixed[s] for s in seeds):+.2f}"
        rows.append([model, method, per_seed(by_seed[s] for s in seeds), f"{mean:.2f}", versus])
    return markdown_table(["model", "thresholds", f"accuracy per seed {seeds[0]}-{seeds[-1]} (%)", "mean (%)",
                           "vs fixed (points)"], rows)


def prune_table(source: str, skip: Callable[[Mapping[str, Any]], bool] = lambda row: False):
    def render(data: Mapping[str, Any]) -> list[str]:
        rows = [r for r in data[source]["rows"] if not skip(r)]
        return markdown_table(["model", "row", "measured", "target", "result"],
                              benchmark_rows(rows, "model", ("met", "missed")))
    return render


def shrink(data: Mapping[str, Any]) -> list[str]:
    rows = [[r["model"], r["row"], f"{r['accuracy']:.2f}%", f"{r['parameters']:,}",
             f"{r['memory_kib']:.2f} ({r['memory_reduction']:.2f}x)",
             f"{r['synaptic_ops']:,.0f} / {r['dense_ops']:,}",
             f"{r['energy_nj']:,.1f} ({r['energy_reduction']:.2f}x)", r["masks"]]
            for r in data["shrink.json"]["rows"]]
    return markdown_table(["model", "row", "accuracy", "parameters", "memory KiB (vs fp32)",
                           "synaptic ops measured / dense bound", "energy nJ (vs fp32)", "masks"], rows)


SCALE_TARGET = 1.3  # benchmarks/scale.py's target for the QAT / plain fp32 batch-time ratio


def scale_epoch(data: Mapping[str, Any]) -> list[str]:
    epoch = data["scale.json"]["epoch"]
    rows = []
    for r in epoch:
        ratio = f"{r['ratio']:.2f}x" + (" (missed)" if r["ratio"] > SCALE_TARGET else "")
        rows.append([r["channels"], f"{r['params']:,} ({r['x_demo']:.0f}x)", r["time_steps"],
                     f"{r['tool_median_ms']:,.0f}", f"{r['plain_median_ms']:,.0f}", ratio])
    return markdown_table(["base channels c", "parameters (x demo's 13,706)", "T", "this tool's QAT, ms / batch",
                           "plain fp32 snnTorch, ms / batch", f"ratio (target <= {SCALE_TARGET}x)"], rows)


def scale_torchrun(data: Mapping[str, Any]) -> list[str]:
    torchrun = data["scale.json"]["torchrun"]
    one, two = torchrun["1 process"], torchrun["torchrun 2 processes"]
    rows = [[a["seed"], f"{a['accuracy']:.2f}%", f"{b['accuracy']:.2f}%", f"{diff:.0f} samples",
             f"{a['qat_seconds']:.1f} / {b['qat_seconds']:.1f}"]
            for a, b, diff in zip(one, two, torchrun["difference_samples"], strict=True)]
    return markdown_table(["seed", "1 process: test accuracy", "torchrun, 2 processes: test accuracy", "difference",
                           "QAT pass wall s, 1 process / torchrun"], rows)


def threads(data: Mapping[str, Any]) -> list[str]:
    rows = [["another CPU-bound process on a core" if r["busy_core"] else "idle", r["threads"],
             f"{r['seconds']:.1f}", len(r["all"])] for r in data["threads.json"]["rows"]]
    return markdown_table(["machine", "torch threads", "`snncompress demo` wall s", "runs"], rows)


TABLES: dict[str, Table] = {
    "quantize": Table(("quantize-accuracy.json", "quantize.json"), quantize,
                      "accuracy and file-size rows from the first file, speed rows from the second"),
    "membrane-speed": Table(("quantize.json",), membrane_speed, "its `membrane_speed` records"),
    "ptq-real": Table(("ptq_real.json",), ptq_real, "mean accuracy drop in points over the seeds that ran"),
    "threshold": Table(("threshold.json",), threshold, "its `runs`"),
    # prune.json's own joint row was measured again, with its recipe, in prune-joint.json
    "prune": Table(("prune.json",), prune_table("prune.json", lambda r: r["name"].startswith("joint")),
                   "its rows but the joint row, measured again in prune-joint.json"),
    "prune-channel": Table(("prune-channel.json",), prune_table("prune-channel.json")),
    "prune-joint": Table(("prune-joint.json",), prune_table("prune-joint.json")),
    "shrink": Table(("shrink.json",), shrink),
    "scale-epoch": Table(("scale.json",), scale_epoch, "medians of each configuration's batches"),
    "scale-torchrun": Table(("scale.json",), scale_torchrun),
    "threads": Table(("threads.json",), threads),
}


# -- rendering and checking ---------------------------------------------------------------------------

class TableError(Exception):
    """A marker names no table, is not closed, or a result file is missing or unreadable."""


def load_sources(table: Table, results: Path) -> dict[str, Any]:
    data = {}
    for name in table.sources:
        path = results / name
        try:
            data[name] = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise TableError(f"{path}: {exc}") from exc
    return data


def render(name: str, results: Path = RESULTS) -> str:
    """The body of a ``<!-- table:NAME -->`` block: a blank line, the table, the sources, a blank line."""
    if name not in TABLES:
        raise TableError(f"unknown table {name!r} (known: {', '.join(TABLES)})")
    table = TABLES[name]
    data = load_sources(table, results)
    try:
        lines = table.render(data)
    except (KeyError, IndexError, TypeError, ValueError, statistics.StatisticsError) as exc:
        raise TableError(f"table {name!r}: {', '.join(table.sources)} do not hold what it reads "
                         f"({type(exc).__name__}: {exc})") from exc
    files = ", ".join(f"`benchmarks/results/{s}`" for s in table.sources)
    source = f"*Generated from {files}{f' ({table.note})' if table.note else ''} by `{WRITE_COMMAND}`.*"
    return "\n" + "\n".join(lines) + "\n\n" + source + "\n\n"


def update(text: str, results: Path = RESULTS, where: str = "") -> tuple[str, list[str]]:
    """``text`` with every table block rendered anew, and the names of the blocks that changed."""
    starts = [m.group("name") for m in START.finditer(text)]
    blocks = list(BLOCK.finditer(text))
    if len(starts) != len(blocks) or len(END.findall(text)) != len(blocks):
        raise TableError(f"{where or 'text'}: a '<!-- table:NAME -->' marker without its '<!-- /table -->' "
                         f"(or the other way round)")
    changed: list[str] = []

    def replace(match: re.Match) -> str:
        name = match.group("name")
        body = render(name, results)
        if body != match.group("body"):
            changed.append(name)
        return f"<!-- table:{name} -->\n{body}<!-- /table -->"

    return BLOCK.sub(replace, text), changed


def pages(root: Path = ROOT) -> list[Path]:
    """The files whose tables are kept: the README and every docs page."""
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def check(paths: Iterable[Path], results: Path = RESULTS) -> list[str]:
    """One line per stale block: ``FILE: table NAME differs from ...``."""
    problems = []
    for path in paths:
        _, changed = update(path.read_text(), results, str(path))
        for name in changed:
            problems.append(f"{path}: table '{name}' differs from "
                            f"{', '.join(TABLES[name].sources)} (run `{WRITE_COMMAND}`)")
    return problems


def used(paths: Iterable[Path]) -> dict[str, list[Path]]:
    """Which files hold which tables."""
    found: dict[str, list[Path]] = {}
    for path in paths:
        for match in START.finditer(path.read_text()):
            found.setdefault(match.group("name"), []).append(path)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Render the benchmark tables from benchmarks/results/*.json.")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", action="store_true", help="rewrite every stale table block in place")
    action.add_argument("--check", action="store_true", help="exit 1 when a table block differs from its JSON")
    action.add_argument("--print", metavar="NAME", help="print one table's block body")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the folder of result files")
    parser.add_argument("files", nargs="*", type=Path, help="pages to process (default: README.md, docs/**/*.md)")
    args = parser.parse_args(argv)
    try:
        if args.print:
            sys.stdout.write(render(args.print, args.results))
            return 0
        paths = args.files or pages()
        if args.check:
            problems = check(paths, args.results)
            for line in problems:
                print(f"error: {line}", file=sys.stderr)
            return 1 if problems else 0
        for path in paths:
            text, changed = update(path.read_text(), args.results, str(path))
            if changed:
                path.write_text(text)
                print(f"{path}: rewrote {', '.join(changed)}")
    except TableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


# -- the MkDocs hook: a site is not built from stale tables ---------------------------------------------

def on_pre_build(config: Any) -> None:
    from mkdocs.exceptions import PluginError

    try:
        problems = check(pages(Path(config["docs_dir"]).parent))
    except TableError as exc:
        raise PluginError(str(exc)) from exc
    if problems:
        raise PluginError("stale benchmark tables:\n" + "\n".join(problems))


if __name__ == "__main__":
    sys.exit(main())
