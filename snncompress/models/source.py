"""Where a model comes from and how to build it again: its style, its factory, its architecture.

A model's compression state records its ``source``. A compressed file keeps it in its header:

* ``{"kind": "sequential", "architecture": ...}``: an ``nn.Sequential`` of known layers, rebuilt from
  the architecture spec alone (:func:`snncompress.models.layers.build_module`); no code is imported.
* ``{"kind": "factory", "factory": "package.module:attr"}``: a user module, rebuilt by importing and
  calling the factory. That runs the named module's code, so :func:`rebuild` does it only when the
  caller allows it (``trust_code``) or names the factory itself.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from snncompress.errors import ModelLoadError
from snncompress.refs import import_ref
from snncompress.state import get_state

STYLES = ("stepwise", "sequence")
TRUST_CODE_ENV = "SNNCOMPRESS_TRUST_CODE"


def detect_style(model: nn.Module) -> str:
    """``stepwise`` for a Sequential, else the style the model declares (``snncompress_style``) or its source
    records (a one-step user module, found by :func:`snncompress.sim.runner.settle_style`; a compressed file
    keeps it), else ``sequence``."""
    return recorded_style(model) or "sequence"


def recorded_style(model: nn.Module) -> str | None:
    """The style known without running the model: a Sequential's, a declared one, a recorded one, or
    ``sequence`` for a user module with a neuron that passes its state explicitly (``init_hidden=False``: its
    forward must loop over time itself); else None (a user module of ``init_hidden=True`` neurons)."""
    from snncompress.models.neurons import neuron_layers
    from snncompress.state import has_state

    declared = getattr(model, "snncompress_style", None)
    if declared in STYLES:
        return declared
    if isinstance(model, nn.Sequential):
        return "stepwise"
    recorded = get_state(model).source.get("style") if has_state(model) else None
    if recorded in STYLES:
        return recorded
    if any(not getattr(m, "init_hidden", False) for _, m in neuron_layers(model)):
        return "sequence"
    return None


def style_description(model: nn.Module) -> str:
    """How snncompress drives the model, in one line (``inspect``)."""
    known = recorded_style(model)
    if isinstance(model, nn.Sequential):
        return "an nn.Sequential stepped once per time step, its neurons reset before each batch"
    name = type(model).__name__
    if known == "stepwise":
        return (f"{name}'s forward(x) is one time step: called once per time step, its neurons reset before "
                "each batch")
    if known == "sequence":
        return f"{name}'s forward(x) runs its own time loop and returns records [T, B, ...]"
    return (f"{name}'s forward(x) is one time step or runs its own time loop: not known until it runs on data "
            "(pass --data)")


def call_factory(ref: str) -> nn.Module:
    """Import ``package.module:factory`` and call it with no arguments (a module is used as it is).

    Raises:
        ModelLoadError: the module cannot be imported, the factory is missing, fails, or returns no module.
    """
    factory = import_ref(ref, what="model factory", error=ModelLoadError)
    try:
        model = factory() if callable(factory) and not isinstance(factory, nn.Module) else factory
    except Exception as exc:  # the user's code; --debug shows the traceback
        first = str(exc).strip().splitlines()
        raise ModelLoadError(f"{ref} failed: {type(exc).__name__}: {first[0] if first else ''}") from exc
    if not isinstance(model, nn.Module):
        raise ModelLoadError(f"{ref} returned {type(model).__name__}, not a torch nn.Module")
    return model


def describe_source(model: nn.Module) -> dict[str, Any]:
    """How to rebuild ``model``: its architecture when it is a Sequential of known modules, else its factory.

    Raises:
        ModelLoadError: a user module that was not loaded from a factory reference.
    """
    from snncompress.models.layers import module_spec

    state = get_state(model)
    source = dict(state.source)
    if isinstance(model, nn.Sequential):
        try:
            return {**source, "kind": "sequential", "architecture": module_spec(model), "style": "stepwise"}
        except Exception as exc:  # falls back to the factory reference below
            reason = str(exc)
        else:
            reason = ""
    else:
        reason = f"{type(model).__name__} is a user module"
    if source.get("kind") == "factory" and source.get("factory"):
        # a user module not yet run keeps its style open: the runner finds it on the first batch after loading
        style = source.get("style") or recorded_style(model)
        return {**source, "style": style} if style else {k: v for k, v in source.items() if k != "style"}
    raise ModelLoadError(
        f"cannot record how to rebuild this model ({reason}); load it from a package.module:factory reference"
    )


def refuse_code(ref: str, where: str) -> ModelLoadError:
    """The error for a file that needs ``ref`` imported to rebuild its model, naming every way to allow it."""
    return ModelLoadError(
        f"{where} rebuilds its model by importing and running Python code ({ref}), which is refused by default; "
        f"if you trust that code pass --trust-code (or set {TRUST_CODE_ENV}=1; trust_code=True in Python), "
        f"or name the factory yourself: snncompress <command> {ref} --weights {where}"
    )


def rebuild(source: dict[str, Any], *, trust_code: bool = False, factory: str | None = None,
            where: str = "the file") -> nn.Module:
    """Build the (untrained) module a recorded ``source`` describes.

    Args:
        source: the ``model`` record of a compressed file (already validated).
        trust_code: allow importing the factory the record names.
        factory: a factory reference the user named; used instead of the record's, whatever its kind.
        where: the file, for messages.

    Raises:
        ModelLoadError: the record needs code and neither ``trust_code`` nor ``factory`` allows it, or the
            architecture or factory cannot be built.
    """
    from snncompress.models.layers import build_module

    if factory is not None:
        model = call_factory(factory)
        kept = {k: v for k, v in source.items() if k not in ("architecture", "style", "chain")}
        _resize(model, kept.get("resized"), where)
        get_state(model).source = {**kept, "kind": "factory", "factory": factory}
        return model
    kind = source.get("kind")
    if kind == "sequential":
        model = build_module(source["architecture"])
    elif kind == "factory":
        if not trust_code:
            raise refuse_code(source["factory"], where)
        model = call_factory(source["factory"])
        _resize(model, source.get("resized"), where)
        _check_chain(model, source.get("chain"), where)
    else:
        raise ModelLoadError(f"compressed file names an unknown model source '{kind}'")
    get_state(model).source = source
    return model


def _resize(model: nn.Module, resized: Any, where: str) -> None:
    """Build, in place of the factory's own, the layers a shrunk model resized (``resized``: qualified name ->
    :func:`snncompress.models.layers.module_spec`; written by :mod:`snncompress.models.shrink`).

    Raises:
        ModelLoadError: the record names a layer the factory's module lacks, or a spec that cannot be built.
    """
    from snncompress.models.layers import build_module

    if not resized:
        return
    if not isinstance(resized, dict):
        raise ModelLoadError(f"{where}: the model record's resized layers are not a mapping")
    for name, spec in resized.items():
        parent_name, _, attr = str(name).rpartition(".")
        try:
            parent = model.get_submodule(parent_name)
            getattr(parent, attr)
        except AttributeError:
            raise ModelLoadError(f"{where}: the file resizes layer '{name}', which the factory's "
                                 f"{type(model).__name__} does not have") from None
        if not isinstance(spec, dict):
            raise ModelLoadError(f"{where}: the resized layer '{name}' has no layer spec")
        setattr(parent, attr, build_module(spec))


def _check_chain(model: nn.Module, chain: Any, where: str) -> None:
    """Raise unless every layer a recorded one-step chain names is a module of the factory's model."""
    for name in chain or []:
        if name is None:
            continue
        try:
            model.get_submodule(name)
        except AttributeError:
            raise ModelLoadError(f"{where}: the model record's layer chain names '{name}', which the factory's "
                                 f"{type(model).__name__} does not have") from None
