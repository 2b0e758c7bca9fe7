"""Where passes come from: snncompress's built-ins, then the ``snncompress.passes`` entry-point group.

Built-in passes are registered in code (:data:`BUILTIN_PASSES`: a new built-in needs no
re-install); plugins declare theirs in their ``pyproject.toml``::

    [project.entry-points."snncompress.passes"]
    cluster = "snncompress_cluster:CLUSTER_PASS"

The object an entry point names is a :class:`PassSpec` (or a no-argument callable returning one).
An entry point that fails to load is reported loudly on stderr, naming its distribution and the
error; it is never skipped silently. Tests and notebooks register passes in-process with
:func:`register_pass`.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import EntryPoint, distributions

from snncompress.errors import ConfigError, did_you_mean
from snncompress.passes.base import PassConfig, PassSpec

ENTRY_POINT_GROUP = "snncompress.passes"
#: Built-in passes, ``name -> "module:attribute"``, imported when the registry is first used.
BUILTIN_PASSES: dict[str, str] = {
    "analyze": "snncompress.passes.analyze:ANALYZE_PASS",
    "quantize": "snncompress.passes.quantize:QUANTIZE_PASS",
    "prune": "snncompress.passes.prune:PRUNE_PASS",
    "threshold": "snncompress.passes.threshold:THRESHOLD_PASS",
}
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_-]*$")


@dataclass(frozen=True)
class PluginFailure:
    """An entry point that did not yield a usable pass."""

    entry_point: str
    distribution: str
    error: str

    def message(self) -> str:
        return (f"pass plugin '{self.entry_point}' from distribution {self.distribution} was not loaded: "
                f"{self.error}")


def _discover_entry_points() -> Iterator[EntryPoint]:
    """Every ``snncompress.passes`` entry point of every distribution on ``sys.path``.

    ``importlib.metadata.entry_points()`` keeps only the first distribution of each name, so a
    stale ``*.egg-info`` in the working directory would hide an editable install's passes; here
    every copy is read and duplicates are dropped by :meth:`PassRegistry.discover`.
    """
    for dist in distributions():
        for ep in dist.entry_points:
            if ep.group == ENTRY_POINT_GROUP:
                yield ep


class PassRegistry:
    """Registered passes by name; entry points are loaded on first use.

    Args:
        discover: returns the entry points to load (default: the ``snncompress.passes`` group).
        warn: where load failures are reported (default: a line on stderr).
        builtins: built-in passes to register first, ``name -> "module:attr"`` (default:
            :data:`BUILTIN_PASSES` with the default discovery, none with a custom one).
    """

    def __init__(self, discover: Callable[[], Iterable[EntryPoint]] = _discover_entry_points,
                 warn: Callable[[str], None] | None = None, builtins: dict[str, str] | None = None) -> None:
        self._discover = discover
        # a registry with its own discovery (tests) starts without the built-ins unless given them
        if builtins is None:
            builtins = BUILTIN_PASSES if discover is _discover_entry_points else {}
        self._builtins = builtins
        self._warn = warn or _warn_stderr
        self._specs: dict[str, PassSpec] = {}
        self._discovered = False
        self.failures: list[PluginFailure] = []

    # -- lookup ----------------------------------------------------------------------------------
    def get(self, name: str) -> PassSpec:
        """The pass called ``name``.

        Raises:
            ConfigError: no such pass (with the closest name, or the list of passes).
        """
        self.discover()
        spec = self._specs.get(name)
        if spec is None:
            raise ConfigError(f"unknown pass '{name}'{self.suggest(name)}")
        return spec

    def suggest(self, name: str) -> str:
        """"; did you mean 'x'?" for a misspelt pass name, else the passes there are."""
        names = self.names()
        hint = did_you_mean(name, names, cutoff=0.6)
        if hint:
            return hint
        return f"; available passes: {', '.join(names)}" if names else "; no passes are registered"

    def names(self) -> list[str]:
        self.discover()
        return sorted(self._specs)

    def specs(self) -> list[PassSpec]:
        self.discover()
        return [self._specs[n] for n in sorted(self._specs)]

    def __contains__(self, name: object) -> bool:
        self.discover()
        return name in self._specs

    # -- registration ----------------------------------------------------------------------------
    def register(self, spec: PassSpec, *, origin: str | None = None, replace: bool = False) -> PassSpec:
        """Register ``spec`` in-process (entry points are loaded first, so they cannot shadow it).

        Args:
            spec: the pass.
            origin: the distribution to record (default: ``spec.origin``).
            replace: replace a pass of the same name instead of raising.

        Returns:
            The registered spec (with ``origin`` filled in and ordering lists as tuples).

        Raises:
            TypeError, ValueError: ``spec`` is not a well-formed PassSpec or its name is taken.
        """
        self.discover()
        spec = _normalized(spec, origin)
        if spec.name in self._specs and not replace:
            raise ValueError(f"a pass named '{spec.name}' is already registered "
                             f"(from {self._specs[spec.name].origin}); pass replace=True to replace it")
        self._specs[spec.name] = spec
        return spec

    def unregister(self, name: str) -> None:
        self._specs.pop(name, None)

    def discover(self) -> None:
        """Load every entry point of the group once; report each failure on stderr."""
        if self._discovered:
            return
        self._discovered = True
        for name, ref in self._builtins.items():
            module_name, _, attr = ref.partition(":")
            spec = getattr(importlib.import_module(module_name), attr)
            self._specs[name] = _normalized(spec, "snncompress")
        seen: set[tuple[str, str, str]] = set()
        for ep in self._discover():
            if ep.name in self._builtins and ep.value == self._builtins[ep.name]:
                continue  # an older snncompress install declared its built-ins as entry points
            dist = _distribution(ep)
            key = (ep.name, ep.value, dist)
            if key in seen:  # the same distribution found twice on sys.path
                continue
            seen.add(key)
            try:
                spec = self._load(ep, dist)
            except Exception as exc:  # noqa: BLE001 - any plugin error is reported, never fatal
                self._fail(ep, dist, f"{type(exc).__name__}: {exc}")
                continue
            if spec.name in self._specs:
                other = self._specs[spec.name].origin
                self._fail(ep, dist, f"a pass named '{spec.name}' is already registered by {other}")
                continue
            self._specs[spec.name] = spec

    def _load(self, ep: EntryPoint, dist: str) -> PassSpec:
        obj = ep.load()
        if callable(obj) and not isinstance(obj, PassSpec):
            obj = obj()
        if not isinstance(obj, PassSpec):
            raise TypeError(f"{ep.value} is a {type(obj).__name__}, not a snncompress.passes.PassSpec")
        if obj.name != ep.name:
            raise ValueError(f"the entry point is named '{ep.name}' but its pass is named '{obj.name}'")
        return _normalized(obj, dist.split(" ")[0])

    def _fail(self, ep: EntryPoint, dist: str, error: str) -> None:
        failure = PluginFailure(entry_point=f"{ep.name} = {ep.value}", distribution=dist, error=error)
        self.failures.append(failure)
        self._warn(failure.message())


def _warn_stderr(message: str) -> None:
    sys.stderr.write(f"warning: {message}\n")
    sys.stderr.flush()


def _distribution(ep: EntryPoint) -> str:
    """'name version' of the distribution declaring ``ep`` ('unknown distribution' if not known)."""
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "unknown-distribution"
    name = dist.metadata["Name"] if dist.metadata else None
    return f"{name or 'unknown-distribution'} {dist.version}"


def _normalized(spec: PassSpec, origin: str | None) -> PassSpec:
    """``spec`` checked, with ``origin`` recorded and ordering lists as tuples."""
    if not isinstance(spec, PassSpec):
        raise TypeError(f"expected a PassSpec, got {type(spec).__name__}")
    if not isinstance(spec.name, str) or not NAME_PATTERN.match(spec.name):
        raise ValueError(f"pass name {spec.name!r} must be lower case letters, digits, '-' or '_'")
    if not (isinstance(spec.config_class, type) and issubclass(spec.config_class, PassConfig)):
        raise TypeError(f"pass '{spec.name}': config_class must subclass snncompress.passes.PassConfig")
    if not callable(spec.apply):
        raise TypeError(f"pass '{spec.name}': apply must be callable")
    if spec.max_per_recipe is not None and spec.max_per_recipe < 1:
        raise ValueError(f"pass '{spec.name}': max_per_recipe must be >= 1 or None")
    return dataclasses.replace(spec, origin=origin or spec.origin, after=tuple(spec.after),
                               before=tuple(spec.before), version=str(spec.version))


# -- the process-wide registry ---------------------------------------------------------------------
_REGISTRY = PassRegistry()


def default_registry() -> PassRegistry:
    """The registry the CLI and :func:`snncompress.pipeline.run.run_recipe` use by default."""
    return _REGISTRY


def register_pass(spec: PassSpec, *, origin: str | None = None, replace: bool = False) -> PassSpec:
    """Register a pass in this process (see :meth:`PassRegistry.register`)."""
    return _REGISTRY.register(spec, origin=origin, replace=replace)


def unregister_pass(name: str) -> None:
    _REGISTRY.unregister(name)


def get_pass(name: str) -> PassSpec:
    """The registered pass ``name`` (ConfigError with a did-you-mean when unknown)."""
    return _REGISTRY.get(name)


def list_passes() -> list[PassSpec]:
    """Every registered pass, sorted by name."""
    return _REGISTRY.specs()


@contextmanager
def registered(spec: PassSpec, *, origin: str | None = None) -> Iterator[PassSpec]:
    """Register ``spec`` for the duration of a ``with`` block (tests)."""
    spec = register_pass(spec, origin=origin)
    try:
        yield spec
    finally:
        unregister_pass(spec.name)
