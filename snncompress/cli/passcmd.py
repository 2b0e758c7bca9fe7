"""Single-pass commands generated from their pass's config: one flag per config key, one shared bundle.

    register_pass_command(app, "quantize", epilog=EPILOG, doc=DOC,
                          flags={"learn_threshold": "--learn-threshold/--fixed-threshold"})

makes ``snncompress quantize MODEL -o OUT [shared options] [one --flag per QuantizeConfig key]``. Every
config flag defaults to "not given" and the pass config's own default applies (shown in ``--help``),
so a flag and its config key cannot drift apart, and a key the user did not give is not recorded as
given (the quantize pass notes a PTQ-only option only when it was asked for). ``targets`` and
``overrides`` are recipe-only (per-layer settings go in a recipe). The shared options (data, training
data, gates, JSON, weights, encoding, seed, ...) are the same for every compressing command.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal

import typer
from pydantic.fields import FieldInfo

from snncompress.cli import common as c
from snncompress.cli.compress import EnergyOpt, GateOpt, JobOptions, OutputOpt, QuietOpt, RunJsonOpt, TrainDataOpt

RECIPE_ONLY = ("targets", "overrides")

#: The options every single-pass command shares, in ``--help`` order after the pass's own.
SHARED_OPTIONS: tuple[tuple[str, Any, Any], ...] = (
    ("train_data", TrainDataOpt, None),
    ("gates", GateOpt, None),
    ("json_file", RunJsonOpt, None),
    ("weights", c.WeightsOpt, None),
    ("trust_pickle", c.TrustPickleOpt, False),
    ("trust_code", c.TrustCodeOpt, False),
    ("encoding", c.EncodingOpt, "direct"),
    ("time_steps", c.TimeStepsOpt, 8),
    ("batch_size", c.BatchSizeOpt, 128),
    ("limit", c.LimitOpt, None),
    ("seed", c.SeedOpt, 0),
    ("energy", EnergyOpt, "45nm"),
    ("device", c.DeviceOpt, "auto"),
    ("nir_dt", c.NirDtOpt, None),
    ("nir_reset", c.NirResetOpt, None),
    ("nir_spike", c.NirSpikeOpt, None),
    ("nir_producer", c.NirProducerOpt, None),
    ("force", c.ForceOpt, False),
    ("quiet", QuietOpt, False),
)


def config_flags(config_class: type, flags: Mapping[str, str] | None = None) -> dict[str, str]:
    """Config key -> its flag declaration (``--weight-quant``; booleans ``--x/--no-x``) for every key."""
    flags = dict(flags or {})
    out = {}
    for key, info in config_class.model_fields.items():
        if key in RECIPE_ONLY:
            continue
        dashed = "--" + key.replace("_", "-")
        out[key] = flags.get(key) or (f"{dashed}/--no-{key.replace('_', '-')}" if _base(info) is bool else dashed)
    return out


def _base(info: FieldInfo) -> type:
    """The CLI type of a config field: bool, int, float, or str (literals, unions, specs)."""
    annotation = info.annotation
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        if len(args) == 1:
            annotation = args[0]
        else:
            return str  # e.g. float | "auto": the config validates the text
    if typing.get_origin(annotation) is Literal:
        return str
    return annotation if annotation in (bool, int, float, str) else str


def _help(info: FieldInfo) -> str:
    text = (info.description or "").strip()
    if typing.get_origin(info.annotation) is Literal:
        text += (" " if text else "") + "One of: " + ", ".join(str(v) for v in typing.get_args(info.annotation)) + "."
    default = info.get_default(call_default_factory=True)
    shown = "none" if default is None else str(default).lower() if isinstance(default, bool) else str(default)
    return f"{text} (default: {shown})".strip()  # the config's default: a flag not given leaves it


def pass_command(name: str, *, doc: str, flags: Mapping[str, str] | None = None,
                 data_default: str | None = "digits") -> Callable[..., None]:
    """The Typer command function of pass ``name`` (see the module docstring)."""
    from snncompress.passes.registry import get_pass

    spec = get_pass(name)
    declared = config_flags(spec.config_class, flags)
    params = [
        inspect.Parameter("model", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=c.ModelArg),
        inspect.Parameter("output", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=OutputOpt),
        inspect.Parameter("data", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                          annotation=c.DataOpt if data_default is not None else c.OptionalDataOpt,
                          default=data_default),
    ]
    for key, flag in declared.items():
        info = spec.config_class.model_fields[key]
        option = typer.Option(*flag.split(" "), help=_help(info), show_default=False)
        params.append(inspect.Parameter(key, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                        annotation=Annotated[_base(info) | None, option], default=None))
    params += [inspect.Parameter(k, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=a, default=d)
               for k, a, d in SHARED_OPTIONS]

    def command(**kwargs: Any) -> None:
        from snncompress.cli.compress import run_pass_command

        config = {k: v for k, v in kwargs.items() if k in declared and v is not None}
        shared = {k: kwargs[k] for k, _, _ in SHARED_OPTIONS}
        shared["gates"] = shared["gates"] or []
        job = JobOptions(model=kwargs["model"], output=kwargs["output"], data=kwargs["data"], **shared)
        run_pass_command(name, config, job)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__doc__ = doc
    command.__name__ = name
    return command


def register_pass_command(app: typer.Typer, name: str, *, epilog: str, doc: str,
                          flags: Mapping[str, str] | None = None, data_default: str | None = "digits") -> None:
    """Add ``snncompress NAME`` to ``app``: the pass run as a one-step recipe."""
    app.command(name, epilog=epilog)(pass_command(name, doc=doc, flags=flags, data_default=data_default))


__all__ = ["SHARED_OPTIONS", "config_flags", "pass_command", "register_pass_command"]
