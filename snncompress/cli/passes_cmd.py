"""``snncompress passes``: every registered pass, where it comes from and what it takes."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from snncompress.cli import common as c

EPILOG = """Examples:

  snncompress passes                  # name, origin, version, summary of every pass
  snncompress passes quantize         # the config keys a recipe step of 'quantize' takes
  snncompress passes --json -         # everything, with each config's JSON schema

Passes come from the 'snncompress.passes' entry-point group: install a plugin distribution
(e.g. pip install -e plugins/snncompress-cluster) and its passes appear here."""


def register(app: typer.Typer) -> None:
    app.command("passes", epilog=EPILOG)(passes)


def passes(
    name: Annotated[str | None, typer.Argument(
        help="Show this pass's config keys.", metavar="[PASS]")] = None,
    json_out: c.JsonOpt = None,
    force: c.ForceOpt = False,
) -> None:
    """List the compression passes a recipe can use (built-in and plugins)."""
    from snncompress.passes.registry import default_registry

    registry = default_registry()
    specs = [registry.get(name)] if name else registry.specs()
    c.check_json_target(json_out, force)
    c.emit_json(json_out, {"passes": [describe(s) for s in specs],
                           "failed_plugins": [vars(f) for f in registry.failures]})
    if c.json_to_stdout(json_out):
        return
    if name:
        _print_keys(specs[0])
        return
    table = Table(title="compression passes")
    for col in ("pass", "kind", "origin", "version", "needs (defaults)", "summary"):
        table.add_column(col, overflow="fold")
    for spec in specs:
        table.add_row(spec.name, spec.kind, spec.origin, spec.version, ", ".join(_default_needs(spec)) or "-",
                      spec.summary)
    c.console.print(table)  # plugins that failed to load were reported on stderr as they loaded


def describe(spec: Any) -> dict[str, Any]:
    """A pass as JSON: name, origin, version, summary, ordering rules and config schema."""
    return {
        "name": spec.name,
        "origin": spec.origin,
        "version": spec.version,
        "summary": spec.summary,
        "kind": spec.kind,
        "needs_data": "data" in _default_needs(spec),
        "requires": _default_needs(spec),
        "after": list(spec.after),
        "before": list(spec.before),
        "max_per_recipe": spec.max_per_recipe,
        "config_schema": spec.config_class.model_json_schema(),
    }


def _default_needs(spec: Any) -> list[str]:
    """What the pass needs with its default config (per-config needs are checked when a recipe runs)."""
    try:
        return sorted(spec.requirements(spec.config_class()))
    except Exception:  # noqa: BLE001 - a config with required keys has no default to ask about
        return ["data"] if spec.needs_data else []


def _print_keys(spec: Any) -> None:
    table = Table(title=f"{spec.name} ({spec.origin} {spec.version}): {spec.summary}")
    for col in ("key", "type", "default", "description"):
        table.add_column(col, overflow="fold")
    for key, info in spec.config_class.model_fields.items():
        default = "(required)" if info.is_required() else repr(info.get_default(call_default_factory=True))
        table.add_row(key, _type_name(info.annotation), default, info.description or "")
    c.console.print(table)
    rules = [f"after {', '.join(spec.after)}" if spec.after else "",
             f"before {', '.join(spec.before)}" if spec.before else "",
             f"at most {spec.max_per_recipe}x per recipe" if spec.max_per_recipe else ""]
    if any(rules):
        c.console.print("ordering: " + "; ".join(r for r in rules if r))


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) or str(annotation)
    return text.replace("typing.", "")
