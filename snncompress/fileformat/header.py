"""The compressed file's header, validated by one schema before anything uses it.

``__metadata__`` of a compressed ``.safetensors`` file holds strings; five of them are JSON
(``model``, ``tensors``, ``neurons``, ``history``, ``baseline``). :func:`parse_header` checks the
format and its version, decodes the JSON (bounded in depth), and validates every field with the
pydantic models below, so that what the loader reads later has the types and ranges it expects.
Sizes are bounded too (:data:`MAX_ELEMENTS` per tensor, :data:`MAX_DIMS` dimensions), and the
architecture's layer sizes are checked against the stored tensors before a module is built
(:func:`check_allocation`): a small header cannot make the loader allocate a huge model.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from snncompress.errors import FileFormatError
from snncompress.models.neurons import SURROGATE_FACTORIES
from snncompress.models.source import STYLES
from snncompress.refs import is_ref

FORMAT_NAME = "snncompress"
FORMAT_VERSION = 2
"""Version 2 adds ``sha256``, a digest over the whole header and every stored tensor."""
READABLE_VERSIONS = (1, 2)
JSON_FIELDS = ("model", "tensors", "neurons", "history", "baseline")
DIGEST_FIELD = "sha256"

MAX_DIMS = 8
MAX_ELEMENTS = 1 << 31  # elements in one tensor (8 GiB of float32): far above any SNN snncompress handles
MAX_JSON_DEPTH = 64  # history and architecture nesting; far deeper than a real file, far short of recursion
MAX_LAYERS = 10_000
DTYPES = ("float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool")
SAFETENSORS_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
                      "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}
SURROGATES = (*SURROGATE_FACTORIES, "heaviside")
_MODULE_NAME = re.compile(r"^[A-Za-z0-9_]+$")

Dim = Annotated[int, Field(ge=0, le=MAX_ELEMENTS)]
Shape = Annotated[list[Dim], Field(max_length=MAX_DIMS)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class TensorSpec(_Strict):
    """One state-dict entry: its shape and dtype, and how it is stored (``dense``, ``pruned``, ``quantized``)."""

    shape: Shape
    dtype: Literal[DTYPES] = "float32"  # type: ignore[valid-type]
    kind: Literal["dense", "pruned", "quantized"]
    mask: bool = False
    kept: Annotated[int, Field(ge=0)] | None = None
    scheme: dict[str, Any] | None = None
    bits: Annotated[int, Field(ge=1, le=16)] | None = None
    params: list[str] | None = None

    @property
    def count(self) -> int:
        return math.prod(self.shape)

    @model_validator(mode="after")
    def _check(self) -> TensorSpec:
        if self.count > MAX_ELEMENTS:
            raise ValueError(f"shape {self.shape} holds {self.count} elements, more than {MAX_ELEMENTS}")
        quantized = (self.scheme, self.bits, self.params)
        if self.kind == "quantized":
            if any(v is None for v in quantized):
                raise ValueError("a quantized tensor needs scheme, bits and params")
            if any(not _MODULE_NAME.match(p) for p in self.params or []):
                raise ValueError(f"bad scheme parameter names {self.params}")
            if not self.dtype.startswith(("float", "bfloat")):
                raise ValueError(f"a quantized tensor decodes to floats, not {self.dtype}")
        elif any(v is not None for v in quantized):
            raise ValueError(f"scheme, bits and params belong to quantized tensors, not {self.kind} ones")
        if self.kind == "pruned":
            if self.kept is None or not self.mask:
                raise ValueError("a pruned tensor needs kept and mask")
            if self.kept > self.count:
                raise ValueError(f"kept {self.kept} is more than the {self.count} elements")
        elif self.kept is not None:
            raise ValueError("kept belongs to pruned tensors")
        return self


class LayerSpec(_Strict):
    """One module of a built-in architecture (:func:`snncompress.models.layers.module_spec`)."""

    type: str
    args: dict[str, Any] = Field(default_factory=dict)
    children: list[tuple[str, LayerSpec]] | None = None

    @field_validator("children", mode="before")
    @classmethod
    def _pairs(cls, value: Any) -> Any:
        # JSON has no tuples: ``[name, spec]`` pairs arrive as lists
        if isinstance(value, list):
            return [tuple(v) if isinstance(v, list) and len(v) == 2 else v for v in value]
        return value

    @model_validator(mode="after")
    def _check(self) -> LayerSpec:
        from snncompress.models.layers import SUPPORTED_LAYER_NAMES

        if self.type not in SUPPORTED_LAYER_NAMES:
            raise ValueError(f"unknown layer type '{self.type}'")
        if (self.type == "Sequential") != (self.children is not None):
            raise ValueError("children belong to (and only to) a Sequential")
        for name, _ in self.children or []:
            if not _MODULE_NAME.match(name):
                raise ValueError(f"bad child name {name!r}")
        for key, value in self.args.items():
            if not _plain_arg(value):
                raise ValueError(f"argument {key} of {self.type} is not a number, string or list of numbers")
        grad = self.args.get("spike_grad")
        if grad is not None and grad not in SURROGATES:
            raise ValueError(f"unknown surrogate gradient {grad!r}; known: {', '.join(SURROGATES)}")
        return self


def _plain_arg(value: Any) -> bool:
    if value is None or isinstance(value, (bool, str)):
        return True
    if isinstance(value, int):
        return abs(value) <= MAX_ELEMENTS
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return len(value) <= MAX_DIMS and all(isinstance(v, int) and not isinstance(v, bool)
                                              and abs(v) <= MAX_ELEMENTS for v in value)
    return False


class ModelRecord(BaseModel):
    """How to rebuild the model: its architecture (``sequential``) or a factory reference (``factory``).

    Other keys a source carries (the NIR file it came from) are kept as they are.
    """

    model_config = ConfigDict(extra="allow", frozen=True, strict=True)

    kind: Literal["sequential", "factory"]
    architecture: LayerSpec | None = None
    factory: str | None = None
    style: Literal[STYLES] | None = None  # type: ignore[valid-type]
    # a one-step user module's layers in call order (None: a flatten between two); export/chain.py
    chain: Annotated[list[Annotated[str, Field(min_length=1, max_length=1000)] | None],
                     Field(max_length=10_000)] | None = None
    input_shape: Annotated[list[Annotated[int, Field(ge=1, le=MAX_ELEMENTS)]], Field(max_length=MAX_DIMS)] | None = None
    path: str | None = None

    @field_validator("factory")
    @classmethod
    def _ref(cls, value: str | None) -> str | None:
        if value is not None and not is_ref(value):
            raise ValueError(f"{value!r} is not a package.module:attr reference")
        return value

    @model_validator(mode="after")
    def _check(self) -> ModelRecord:
        if self.kind == "sequential" and self.architecture is None:
            raise ValueError("a sequential model record lacks its architecture")
        if self.kind == "factory" and self.factory is None:
            raise ValueError("a factory model record lacks its factory")
        if self.architecture is not None and self.architecture.type != "Sequential":
            raise ValueError("the architecture must be a Sequential")
        return self


Unit = float | list[float] | list[list[float]] | list[list[list[float]]]


class SpatialRecord(_Strict):
    """A neuron layer's spatial pruning: the fraction of its membrane values masked each step, and the
    synaptic layer whose outputs are masked."""

    ratio: Annotated[float, Field(ge=0.0, lt=1.0)]
    source: Annotated[str, Field(max_length=1000)]


class ChannelGateRecord(_Strict):
    """A neuron layer's channel gate (models/channel_gate.py): its threshold and sparsity cost, the synaptic
    layer whose outputs it masks, its channel count and kind. Its parameters are tensors of the file
    (``<layer>.channel_gate.weight`` / ``.bias``)."""

    threshold: Annotated[float, Field(gt=0.0, lt=1.0)]
    cost: Annotated[float, Field(ge=0.0)]
    source: Annotated[str, Field(max_length=1000)]
    channels: Annotated[int, Field(ge=1, le=MAX_ELEMENTS)]
    depthwise: bool


class NeuronRecord(_Strict):
    """A neuron layer's parameters as saved (for readers; the tensors hold the values) and its membrane quantizer."""

    params: dict[str, Any] = Field(default_factory=dict)
    membrane: dict[str, Any] | None = None
    membrane_grid: Annotated[int, Field(ge=1, le=1 << 16)] = 1
    membrane_unit: Unit | None = None
    spatial: SpatialRecord | None = None  # spatial pruning with membrane importance (models/spatial.py)
    channel_gate: ChannelGateRecord | None = None  # channel masking with membrane prior (models/channel_gate.py)

    @field_validator("membrane_unit")
    @classmethod
    def _unit(cls, value: Any) -> Any:
        flat = _flatten(value) if value is not None else []
        if any(not (math.isfinite(v) and v > 0) for v in flat):
            raise ValueError("the membrane unit must be positive and finite")
        return value

    @model_validator(mode="after")
    def _check(self) -> NeuronRecord:
        from snncompress.quant.membrane import MembraneQuantizer

        if self.membrane is not None:
            MembraneQuantizer.model_validate(self.membrane)
            if self.membrane_unit is None:
                raise ValueError("a quantized membrane needs its unit")
        return self


class BaselineRecord(BaseModel):
    """The fp32 figures the compression started from. ``data`` names a data set; it is never run as code."""

    model_config = ConfigDict(extra="allow", frozen=True, strict=True)

    model: str | None = None
    accuracy: float | int | None = None
    data: str | None = None
    time_steps: Annotated[int, Field(ge=1, le=1 << 20)] | None = None
    description: dict[str, Any] | None = None
    note: str | None = None


class Header(BaseModel):
    """The whole validated header."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    version: int
    snncompress_version: str
    model: ModelRecord
    tensors: dict[str, TensorSpec]
    neurons: dict[str, NeuronRecord]
    history: list[dict[str, Any]]
    baseline: BaselineRecord
    digest: str | None = None
    json_fields: dict[str, Any] = Field(default_factory=dict, description="the decoded JSON, as stored")

    @field_validator("tensors")
    @classmethod
    def _names(cls, value: dict[str, TensorSpec]) -> dict[str, TensorSpec]:
        for name in value:
            if not name or "::" in name or not all(_MODULE_NAME.match(p) for p in name.split(".")):
                raise ValueError(f"bad tensor name {name!r}")
        return value


def _flatten(value: Any) -> list[float]:
    out, stack = [], [value]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        else:
            out.append(float(item))
    return out


def json_depth(value: Any) -> int:
    """Nesting depth of parsed JSON (iterative: a deep document cannot exhaust the stack here)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def parse_version(raw: Mapping[str, str], where: str) -> int:
    """The header's ``format_version``, refused when missing, not a positive integer, or newer than readable.

    Raises:
        FileFormatError: naming the problem.
    """
    text = raw.get("format_version")
    if text is None:
        raise FileFormatError(f"{where}: corrupted header (no format_version)")
    if not isinstance(text, str) or not re.fullmatch(r"[0-9]{1,6}", text):
        raise FileFormatError(f"{where}: corrupted header (format_version {text!r})")
    version = int(text)
    if version > FORMAT_VERSION:
        raise FileFormatError(
            f"{where}: format version {version} is newer than this snncompress reads ({FORMAT_VERSION}); upgrade"
        )
    if version not in READABLE_VERSIONS:
        raise FileFormatError(f"{where}: corrupted header (format_version {text!r}; versions start at 1)")
    return version


def parse_header(raw: Mapping[str, str], where: str) -> Header:
    """Validate the raw ``__metadata__`` strings of a compressed file.

    Raises:
        FileFormatError: not an snncompress file, an unreadable version, or any field of the wrong shape,
            as one line naming the field.
    """
    if raw.get("format") != FORMAT_NAME:
        raise FileFormatError(
            f"{where}: a plain safetensors file, not an snncompress model; pass a factory and use it as --weights"
        )
    version = parse_version(raw, where)
    known = {"format", "format_version", "snncompress_version", *JSON_FIELDS, DIGEST_FIELD}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise FileFormatError(f"{where}: corrupted header (unknown field {unknown[0]!r})")
    missing = [k for k in JSON_FIELDS if k not in raw]
    if missing:
        raise FileFormatError(f"{where}: corrupted header (no {', '.join(missing)})")
    digest = raw.get(DIGEST_FIELD)
    if version >= 2 and not (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)):
        raise FileFormatError(f"{where}: corrupted header (no valid {DIGEST_FIELD} digest)")
    if version == 1 and digest is not None:
        raise FileFormatError(f"{where}: corrupted header (a version 1 file carries no {DIGEST_FIELD})")
    fields: dict[str, Any] = {}
    for key in JSON_FIELDS:
        try:
            value = json.loads(raw[key])
        except json.JSONDecodeError as exc:
            raise FileFormatError(f"{where}: corrupted header ({key}: {exc.msg})") from exc
        except RecursionError:
            raise FileFormatError(f"{where}: corrupted header ({key} is nested too deeply)") from None
        if json_depth(value) > MAX_JSON_DEPTH:
            raise FileFormatError(f"{where}: corrupted header ({key} is nested deeper than {MAX_JSON_DEPTH})")
        fields[key] = value
    try:
        header = Header(version=version, snncompress_version=str(raw.get("snncompress_version", "?")),
                        digest=digest, json_fields=fields, **fields)
    except ValidationError as exc:
        raise FileFormatError(f"{where}: corrupted header ({_render(exc)})") from None
    except (RecursionError, ValueError, TypeError) as exc:  # raised inside a validator, outside pydantic's
        raise FileFormatError(f"{where}: corrupted header ({type(exc).__name__}: {exc})") from None
    layers = _count_layers(header.model.architecture) if header.model.architecture else 0
    if layers > MAX_LAYERS:
        raise FileFormatError(f"{where}: corrupted header (the architecture has {layers} layers)")
    return header


def _render(exc: ValidationError) -> str:
    """``tensors.0.weight.shape.1: Input should be ...``: the first problem, on one line."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "header"
    message = str(first["msg"]).splitlines()[0]
    return f"{where}: {message}"


def _count_layers(spec: LayerSpec) -> int:
    count, stack = 0, [spec]
    while stack:
        item = stack.pop()
        count += 1
        stack.extend(child for _, child in item.children or [])
    return count


def iter_layers(spec: LayerSpec, prefix: str = ""):
    """``(qualified name, spec)`` of every non-Sequential module of an architecture."""
    stack = [(prefix, spec)]
    while stack:
        name, item = stack.pop()
        if item.type == "Sequential":
            stack.extend((f"{name}.{n}" if name else n, child) for n, child in reversed(item.children or []))
        else:
            yield name, item


def _size(value: Any) -> int:
    """A layer argument as a size: an int, or the product of a list of ints (a kernel)."""
    if isinstance(value, bool) or value is None:
        return 1
    if isinstance(value, int):
        return value
    if isinstance(value, list) and value:
        return math.prod(v for v in value)
    return 1


def layer_elements(spec: LayerSpec) -> int:
    """How many tensor elements building ``spec`` allocates (an upper bound on its parameters and buffers).

    Raises:
        ValueError: a negative size.
    """
    a = spec.args
    sizes: list[int] = []
    if spec.type == "Linear":
        sizes = [_size(a.get("in_features")), _size(a.get("out_features"))]
        total = sizes[0] * sizes[1] + sizes[1]
    elif spec.type in ("Conv1d", "Conv2d"):
        groups = max(_size(a.get("groups", 1)), 1)
        kernel = _size(a.get("kernel_size", 1))
        if spec.type == "Conv2d" and isinstance(a.get("kernel_size"), int):
            kernel = kernel * kernel
        sizes = [_size(a.get("in_channels")), _size(a.get("out_channels")), kernel]
        total = sizes[1] * (sizes[0] // groups) * kernel + sizes[1]
    elif spec.type.startswith("BatchNorm"):
        sizes = [_size(a.get("num_features"))]
        total = 4 * sizes[0] + 1
    elif spec.type in ("Leaky", "Synaptic", "RLeaky", "MultiSpikeLeaky", "MultiSpikeSynaptic"):
        shapes = [a.get(k) for k in ("beta_shape", "threshold_shape", "alpha_shape", "V_shape")]
        sizes = [v for s in shapes if isinstance(s, list) for v in s if isinstance(v, int)]
        total = sum(math.prod(s) for s in shapes if isinstance(s, list)) + 8
        if spec.type == "RLeaky" and a.get("all_to_all"):
            features, channels = a.get("linear_features"), a.get("conv2d_channels")
            kernel = _size(a.get("kernel_size"))
            kernel = kernel * kernel if isinstance(a.get("kernel_size"), int) else kernel
            sizes += [_size(features), _size(channels), kernel]
            if features:
                total += _size(features) * _size(features) + _size(features)
            elif channels:
                total += _size(channels) * _size(channels) * kernel + _size(channels)
    else:
        return 0
    if any(isinstance(s, int) and s < 0 for s in sizes):
        raise ValueError(f"{spec.type} has a negative size {sizes}")
    return total


def check_allocation(header: Header, where: str) -> None:
    """Refuse an architecture whose layers would allocate more than the stored tensors hold.

    Every parameter and buffer of a built-in architecture is a stored tensor, whose size was checked against
    the bytes in the file; so no layer may need more elements than the header's tensors declare in all.

    Raises:
        FileFormatError: a layer with a negative size or more elements than the file stores.
    """
    arch = header.model.architecture
    if arch is None:
        return
    declared = sum(spec.count for spec in header.tensors.values())
    for name, spec in iter_layers(arch):
        try:
            need = layer_elements(spec)
        except ValueError as exc:
            raise FileFormatError(f"{where}: corrupted header (layer '{name}': {exc})") from None
        if need > declared + 64:
            raise FileFormatError(
                f"{where}: corrupted header (layer '{name}' {spec.type} would allocate {need:,} elements, "
                f"but the file stores {declared:,} in all)"
            )
