"""Load a model from any ``MODEL`` argument form.

* ``package.module:factory`` (+ ``weights``: a ``.safetensors`` or a ``torch.save`` state dict or training
  checkpoint (``.pt``, ``.pth``, Lightning ``.ckpt``, any suffix), read with ``weights_only=True``, or a
  compressed file, whose model the factory then builds);
* ``demo``: the built-in digits convolutional SNN with its shipped weights;
* a ``.nir`` graph;
* a compressed ``.safetensors`` written by snncompress (one of a user module names a factory, which is
  imported only with ``trust_code=True``: see :func:`snncompress.fileformat.compressed.load_compressed`);
* a pickled whole module (``torch.save(model)``), only with ``trust_pickle=True``;
* a file of another framework's format, through a loader registered for its suffix
  (:func:`register_loader`, or a plugin's ``snncompress.loaders`` entry point named by the suffix).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import nn

from snncompress.errors import FileFormatError, ModelLoadError
from snncompress.models.layers import check_supported
from snncompress.models.neurons import neuron_layers
from snncompress.models.source import call_factory
from snncompress.state import get_state

DEMO_MODEL = "demo"
LOADER_ENTRY_POINT_GROUP = "snncompress.loaders"
_LOADERS: dict[str, Callable[[Path], nn.Module]] = {}
_LOADER_PLUGINS_LOADED = False
_BUILTIN_SUFFIXES = (".nir", ".safetensors", ".pt", ".pth", ".ckpt")


def register_loader(suffix: str, loader: Callable[[Path], nn.Module], *, replace: bool = False) -> None:
    """Load MODEL files ending in ``suffix`` with ``loader(path) -> nn.Module`` (a plugin's format).

    The model it returns is checked like any other (supported layers, spiking neurons, finite values).
    A plugin can declare the same in its ``pyproject.toml``: ``[project.entry-points."snncompress.loaders"]``
    ``".h5" = "my_pkg.io:load_h5"``; entry points are loaded the first time an unknown suffix is seen.

    Raises:
        ValueError: the suffix does not start with a dot, is a built-in form, or is taken (without ``replace``).
    """
    suffix = suffix.lower()
    if not suffix.startswith(".") or len(suffix) < 2:
        raise ValueError(f"a loader suffix starts with a dot, e.g. '.h5'; got {suffix!r}")
    if suffix in _BUILTIN_SUFFIXES:
        raise ValueError(f"'{suffix}' files are loaded by snncompress itself")
    if suffix in _LOADERS and not replace:
        raise ValueError(f"a loader for '{suffix}' files is already registered")
    _LOADERS[suffix] = loader


def unregister_loader(suffix: str) -> None:
    _LOADERS.pop(suffix.lower(), None)


def _loader_for(suffix: str) -> Callable[[Path], nn.Module] | None:
    global _LOADER_PLUGINS_LOADED
    if suffix not in _LOADERS and not _LOADER_PLUGINS_LOADED:
        _LOADER_PLUGINS_LOADED = True
        from importlib.metadata import entry_points

        for ep in entry_points(group=LOADER_ENTRY_POINT_GROUP):
            try:
                register_loader(ep.name, ep.load(), replace=True)
            except Exception as exc:  # noqa: BLE001 - a broken plugin is reported, never fatal
                print(f"warning: model-loader plugin '{ep.name} = {ep.value}' was not loaded: "
                      f"{type(exc).__name__}: {exc}", file=sys.stderr)
    return _LOADERS.get(suffix)


def load_model(spec: str, weights: str | Path | None = None, *, trust_pickle: bool = False,
               trust_code: bool = False, nir_options=None) -> nn.Module:
    """Load a model; see the module docstring for the accepted forms.

    Args:
        spec: the model reference.
        weights: a state dict, or a compressed file, for a factory model.
        trust_pickle: allow unpickling a whole module (this runs code from the file).
        trust_code: allow a compressed file to name the factory that rebuilds its model (this imports and
            runs that code).
        nir_options (NirReadOptions | None): how to read what a ``.nir`` graph leaves open
            (``export.nir_io.NirReadOptions``).

    Returns:
        The model in eval mode, with its compression state's ``source`` filled in.

    Raises:
        ModelLoadError: the model cannot be loaded, with the reason and the fix.
        FileFormatError: a compressed file is truncated or corrupted.
        UnsupportedLayerError: the model holds a layer snncompress does not handle.
    """
    spec = str(spec)
    path = Path(spec)
    if spec == DEMO_MODEL:
        from snncompress.demo.zoo import pretrained_digits_csnn

        model = pretrained_digits_csnn()
        if weights is not None:
            load_weights(model, weights)
    elif path.suffix.lower() == ".nir":
        _require_file(path)
        _no_weights(weights, spec)
        from snncompress.export.nir_io import load_nir

        model = load_nir(path, nir_options)
    elif path.suffix.lower() == ".safetensors":
        _require_file(path)
        _no_weights(weights, spec)
        from snncompress.fileformat.compressed import load_compressed

        model = load_compressed(path, trust_code=trust_code)
    elif path.suffix.lower() in (".pt", ".pth", ".ckpt"):
        _require_file(path)
        _no_weights(weights, spec)
        model = _load_pickled(path, trust_pickle)
    elif ":" in spec and not path.exists():
        if weights is not None and _is_compressed(weights):
            from snncompress.fileformat.compressed import load_compressed

            model = load_compressed(weights, factory=spec)  # the user named the code: no trust needed
        else:
            model = call_factory(spec)
            get_state(model).source = {"kind": "factory", "factory": spec}
            if weights is not None:
                load_weights(model, weights)
    elif path.exists() and _loader_for(path.suffix.lower()) is not None:
        _require_file(path)
        _no_weights(weights, spec)
        model = _run_loader(_loader_for(path.suffix.lower()), path)
    elif path.exists():
        others = "".join(f", {s}" for s in sorted(_LOADERS))
        raise ModelLoadError(
            f"{spec}: unknown model file type '{path.suffix}'; use .safetensors (snncompress), .nir{others}, "
            ".pt with --trust-pickle, or package.module:factory"
        )
    else:
        raise ModelLoadError(f"model not found: '{spec}' is neither a file nor a package.module:factory reference")
    check_supported(model)
    if not neuron_layers(model):
        raise ModelLoadError(f"{spec}: the model has no snnTorch spiking neurons")
    check_finite(model, spec)
    model.eval()
    return model


def _run_loader(loader: Callable[[Path], nn.Module], path: Path) -> nn.Module:
    try:
        model = loader(path)
    except Exception as exc:  # a plugin's reader: one line naming it
        if isinstance(exc, ModelLoadError | FileFormatError):
            raise
        first = str(exc).strip().splitlines()
        raise ModelLoadError(f"{path}: the '{path.suffix}' loader failed: {type(exc).__name__}: "
                             f"{first[0] if first else ''}") from exc
    if not isinstance(model, nn.Module):
        raise ModelLoadError(f"{path}: the '{path.suffix}' loader returned {type(model).__name__}, not an nn.Module")
    return model


def _require_file(path: Path) -> None:
    if not path.exists():
        raise ModelLoadError(f"model file not found: {path}")
    if path.is_dir():
        raise ModelLoadError(f"{path} is a directory, not a model file")


def _is_compressed(weights: str | Path) -> bool:
    from snncompress.fileformat.compressed import is_compressed_file

    return Path(weights).suffix.lower() == ".safetensors" and is_compressed_file(weights)


def _no_weights(weights, spec: str) -> None:
    if weights is not None:
        raise ModelLoadError(f"--weights applies to a package.module:factory model, not to the file {spec}")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict: a ``.safetensors`` file, or anything ``torch.save`` wrote (``.pt``, ``.pth``, a
    Lightning ``.ckpt``, a file without a suffix), read with ``weights_only=True``; of a training checkpoint
    the model's entry (:func:`_checkpoint_state_dict`)."""
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"weights file not found: {path}")
    if path.is_dir():
        raise ModelLoadError(f"weights {path} is a directory, not a file")
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:
            raise FileFormatError(f"{path}: not a readable safetensors file (truncated or corrupted?)") from exc
    try:
        # argparse.Namespace: older Lightning checkpoints keep their hyper-parameters in one (plain attributes)
        with torch.serialization.safe_globals([argparse.Namespace]):
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelLoadError(f"{path}: cannot read as a state dict with weights_only=True ({_why_unsafe(exc)}); "
                             "save model.state_dict() (.pt) or a .safetensors file, e.g. where you trust the file: "
                             "torch.save(torch.load(FILE, weights_only=False)['state_dict'], 'weights.pt')") from exc
    return _checkpoint_state_dict(sd, path)


def _why_unsafe(exc: Exception) -> str:
    """What torch's weights-only unpickler refused, in a few words (the class a checkpoint pickled, e.g.
    ``argparse.Namespace`` in a Lightning checkpoint's hyper-parameters)."""
    import re

    found = re.search(r"GLOBAL ([\w.]+)", str(exc))
    if found:
        return f"it pickles {found.group(1)}, which only full unpickling can build, and that runs code from the file"
    if "zip" in str(exc).lower() or "magic number" in str(exc).lower() or "pickle" in str(exc).lower():
        return "not a file torch.save wrote"
    return type(exc).__name__


# where training scripts put the model's state dict in a checkpoint, in the order they are tried
CHECKPOINT_KEYS = ("model_state_dict", "state_dict", "model", "net")
# what PyTorch Lightning's ModelCheckpoint writes beside its state_dict
_LIGHTNING_KEYS = ("pytorch-lightning_version", "optimizer_states", "loops", "hyper_parameters")


def _is_state_dict(obj) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _checkpoint_state_dict(obj, path: Path) -> dict[str, torch.Tensor]:
    """The state dict in ``obj``: ``obj`` itself, or a training checkpoint's entry under one of
    :data:`CHECKPOINT_KEYS` (e.g. ``{"model_state_dict": ..., "optimizer_state_dict": ..., "epoch": ...}``, or
    a PyTorch Lightning checkpoint's ``state_dict``), named on stderr so the user sees which entry was taken.

    Raises:
        ModelLoadError: no state dict of tensors, with the checkpoint's keys.
    """
    if _is_state_dict(obj):
        return obj
    if isinstance(obj, dict):
        for key in CHECKPOINT_KEYS:
            if _is_state_dict(obj.get(key)):
                others = [str(k) for k in obj if k != key]
                if any(k in obj for k in _LIGHTNING_KEYS):
                    version = obj.get("pytorch-lightning_version")
                    facts = [f"epoch {obj['epoch']}" if isinstance(obj.get("epoch"), int) else "",
                             f"Lightning {version}" if isinstance(version, str) else ""]
                    facts = [f for f in facts if f]
                    print(f"note: {path}: a PyTorch Lightning checkpoint" + (f" ({', '.join(facts)})" if facts else "")
                          + f"; using its '{key}' (optimizer states, loops and hyper-parameters are ignored)",
                          file=sys.stderr)
                else:
                    print(f"note: {path}: using the state dict under '{key}'"
                          + (f" (also holds: {', '.join(others[:6])})" if others else ""), file=sys.stderr)
                return obj[key]
        keys = ", ".join(repr(str(k)) for k in list(obj)[:8]) + (" ..." if len(obj) > 8 else "")
        raise ModelLoadError(
            f"{path}: does not hold a state dict of tensors: a dict with keys {keys} and none under "
            f"{', '.join(CHECKPOINT_KEYS)}; save model.state_dict() (or checkpoint['model_state_dict'])"
        )
    raise ModelLoadError(f"{path}: does not hold a state dict of tensors (a {type(obj).__name__})")


def strip_key_prefix(sd: dict[str, torch.Tensor], own: Iterable[str]) -> tuple[dict[str, torch.Tensor], str]:
    """``sd`` with the key prefix removed that makes its keys the model's (``own``), and that prefix.

    A LightningModule keeps the network as an attribute (``self.model``: keys ``model.conv1.weight``),
    ``DataParallel`` as ``module.``, ``torch.compile`` as ``_orig_mod.``. The prefix is the one most keys share
    before a model key ending at a dot; it is used only when every model key is then found. Keys without it
    (a loss module's, a teacher's) are left out. ``("", sd)`` unchanged when no such prefix exists.
    """
    own = set(own)
    if own <= set(sd):
        return sd, ""
    votes: dict[str, int] = {}
    for key in sd:
        for i in range(len(key)):
            if key[i] == "." and key[i + 1:] in own:
                votes[key[:i + 1]] = votes.get(key[:i + 1], 0) + 1
                break
    for prefix, _ in sorted(votes.items(), key=lambda kv: (-kv[1], kv[0])):
        stripped = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
        if own <= set(stripped):
            return stripped, prefix
    return sd, ""


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a state dict into ``model``, naming every missing, unexpected or mis-shaped key.

    A prefix every key carries before the model's own names (``model.`` of a Lightning checkpoint,
    ``module.`` of DataParallel) is stripped, with a note naming it (:func:`strip_key_prefix`).

    Raises:
        ModelLoadError: the state dict does not fit the model.
    """
    raw = read_state_dict(path)
    own = model.state_dict()
    sd, prefix = strip_key_prefix(raw, own)
    if prefix:
        extra = [k for k in raw if not k.startswith(prefix) or k[len(prefix):] not in own]
        print(f"note: {path}: its keys carry the prefix '{prefix}' (as {prefix}{next(iter(own))}); stripped it for "
              f"the model's {len(own)} tensors"
              + (f"; left out {len(extra)} other tensors ({', '.join(extra[:4])}{' ...' if len(extra) > 4 else ''})"
                 if extra else ""), file=sys.stderr)
        sd = {k: v for k, v in sd.items() if k in own}
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    mismatched = [
        f"{k} {list(sd[k].shape)} vs model {list(own[k].shape)}" for k in own if k in sd and sd[k].shape != own[k].shape
    ]
    problems = []
    if missing:
        problems.append("missing keys: " + ", ".join(missing[:6]) + (" ..." if len(missing) > 6 else ""))
    if unexpected:
        problems.append("unexpected keys: " + ", ".join(unexpected[:6]) + (" ..." if len(unexpected) > 6 else ""))
    if mismatched:
        problems.append("shape mismatch: " + "; ".join(mismatched[:4]) + (" ..." if len(mismatched) > 4 else ""))
    if problems:
        raise ModelLoadError(f"{path} does not fit the model: " + " | ".join(problems))
    model.load_state_dict(sd, strict=True)


def check_finite(model: nn.Module, where: str) -> None:
    """Raise ModelLoadError naming the first parameter or buffer holding NaN or Inf."""
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ModelLoadError(f"{where}: '{name}' contains NaN or Inf")


def _load_pickled(path: Path, trust_pickle: bool) -> nn.Module:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        obj = None
        if not trust_pickle:
            raise ModelLoadError(
                f"{path} is a pickled module; unpickling runs arbitrary code from the file, so it is refused. "
                "If you trust its source pass --trust-pickle, or better save model.state_dict() and load it "
                "with package.module:factory --weights FILE"
            ) from None
    if obj is not None:
        raise ModelLoadError(
            f"{path} holds a state dict, not a model; load it as package.module:factory --weights {path}"
        )
    # the classes a pickle names are imported by module name; the CLI puts the working directory on the
    # path while a trusted pickle loads (cli/common.user_modules_importable): the library never edits it
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except ModuleNotFoundError as exc:
        raise ModelLoadError(
            f"{path}: the pickle needs module '{exc.name}', which is not importable from here; run from the "
            "folder that holds it or put it on PYTHONPATH"
        ) from exc
    except Exception as exc:
        raise ModelLoadError(f"{path}: cannot unpickle ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, nn.Module):
        raise ModelLoadError(f"{path} unpickled to {type(obj).__name__}, not a torch nn.Module")
    if isinstance(obj, nn.Sequential):
        get_state(obj).source = {"kind": "pickle", "path": str(path)}
    return obj
