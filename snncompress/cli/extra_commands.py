"""Commands registered by the pass, recipe and report modules.

Each entry is a module with a ``register(app)`` function; a module that is not there yet is skipped.
"""

from __future__ import annotations

import importlib

import typer

COMMAND_MODULES = (
    "snncompress.cli.run_cmd",
    "snncompress.cli.passes_cmd",
    "snncompress.cli.quantize_cmd",
    "snncompress.cli.report_cmd",
    "snncompress.cli.export_cmd",
)


def register_all(app: typer.Typer) -> None:
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(app)
