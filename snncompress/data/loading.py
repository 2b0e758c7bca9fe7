"""Load the data a pass calibrates or trains on (``--data``).

Three kinds of source:

* ``digits`` — scikit-learn's handwritten digits (8x8, 10 classes), a fixed stratified 70/30
  train/test split, pixels scaled to [0, 1], as ``[N, 1, 8, 8]`` static images.
* a tensor file (``.safetensors``, ``.npz``, ``.pt`` loaded with ``weights_only=True``) holding
  ``x`` and ``y``; ``x`` is ``[N, ...]`` (static) or ``[N, T, ...]`` (event frames).
* ``package.module:function`` returning a ``torch.utils.data.Dataset`` or ``DataLoader``
  yielding ``(x, y)``.

Unlabelled data (a tensor file with only ``x``, a dataset yielding ``x`` alone) loads as a bundle with
``labelled`` False whose samples carry the label ``-1`` (:data:`NO_LABEL`: any loss that read it would
fail loudly); accuracy is then not measured, and fine-tuning needs a label-free loss (``distill``).

Static samples are presented for ``time_steps`` steps (direct encoding) or Poisson rate coded.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset, TensorDataset

from snncompress.data.encoding import ENCODINGS, rate_encode
from snncompress.errors import DataError
from snncompress.refs import import_ref, is_ref

TENSOR_SUFFIXES = (".safetensors", ".npz", ".pt", ".pth")
MAX_NPZ_MEMBER_BYTES = 8 << 30  # one array of a .npz archive, inflated: 8 GiB
MAX_NPZ_MEMBERS = 64
NO_LABEL = -1  # the label of every sample of an unlabelled data set


@dataclass(frozen=True)
class DataOptions:
    """How to read and present the data."""

    encoding: str = "direct"
    time_steps: int = 8
    batch_size: int = 64
    limit: int | None = None
    seed: int = 0
    split: str = "test"


@dataclass
class DataBundle:
    """A loaded data set ready for the runner.

    Attributes:
        name: where it came from (``digits``, a path, a function reference).
        dataset: yields ``(x, y)`` with ``x`` static ``[...]`` or a sequence ``[T, ...]``.
        is_sequence: ``x`` already carries time (event frames or rate-coded spikes).
        time_steps: T the runner presents static samples for (ignored for sequences).
        num_classes: label count, when known.
        options: the options it was loaded with.
        labelled: the samples carry labels; False: every label is :data:`NO_LABEL` (accuracy is not
            measured, fine-tuning needs a label-free loss).
    """

    name: str
    dataset: Dataset
    is_sequence: bool
    time_steps: int
    num_classes: int | None
    options: DataOptions
    labelled: bool = True

    def __len__(self) -> int:
        return len(self.dataset)

    def loader(self, shuffle: bool = False, seed: int | None = None, sampler: Sampler | None = None,
               batch_sampler: Sampler | Iterable[list[int]] | None = None) -> DataLoader:
        """Batches of ``(x, y)``, shuffled with ``seed`` when asked, or drawn by ``sampler`` (e.g. a
        DistributedSampler: this process's shard; the sampler then does the shuffling), or given as
        index lists by ``batch_sampler`` (this process's part of each global batch)."""
        if batch_sampler is not None:
            return DataLoader(self.dataset, batch_sampler=batch_sampler)
        if sampler is not None:
            return DataLoader(self.dataset, batch_size=self.options.batch_size, sampler=sampler)
        gen = torch.Generator().manual_seed(self.options.seed if seed is None else seed)
        return DataLoader(self.dataset, batch_size=self.options.batch_size, shuffle=shuffle, generator=gen)

    def sample_input(self) -> torch.Tensor:
        x, _ = self.dataset[0]
        return x


def load_data(spec: str, options: DataOptions | None = None, *, allow_code: bool = True) -> DataBundle:
    """Load ``spec`` (``digits``, a tensor file, or ``module:function``).

    Args:
        spec: the data source.
        options: how to read and present it.
        allow_code: whether a ``module:function`` may be imported and called. False for a data set
            named by a file (a compressed model's recorded baseline): a file never runs code.

    Raises:
        DataError: unknown source, unreadable file, missing ``x``, bad shapes or values, no samples,
            or a function reference when ``allow_code`` is False.
    """
    options = options or DataOptions()
    if options.encoding not in ENCODINGS:
        raise DataError(f"unknown encoding '{options.encoding}'; choose one of {', '.join(ENCODINGS)}")
    if options.time_steps < 1:
        raise DataError(f"--time-steps must be >= 1, got {options.time_steps}")
    if options.batch_size < 1:
        raise DataError(f"--batch-size must be >= 1, got {options.batch_size}")
    if options.limit is not None and options.limit < 1:
        raise DataError(f"--limit must be >= 1, got {options.limit}")
    labelled = True
    if spec in ("digits", "digits:test", "digits:train"):
        split = spec.split(":")[1] if ":" in spec else options.split
        x, y = digits_split(split)
        name, num_classes = f"digits:{split}", 10
    elif Path(spec).suffix.lower() in TENSOR_SUFFIXES or Path(spec).exists():
        x, y = _read_tensor_file(Path(spec))
        name, num_classes = spec, None
        if y is None:
            labelled, y = False, torch.full((x.shape[0],), NO_LABEL, dtype=torch.long)
    elif ":" in spec:
        if not allow_code:
            raise DataError(f"the data set '{spec}' is Python code recorded in a file, which snncompress never "
                            "runs; pass --data")
        return _from_function(spec, options)
    else:
        raise DataError(
            f"unknown data source '{spec}': use 'digits', a .safetensors/.npz/.pt file with x (and y), "
            "or package.module:function"
        )
    if x.shape[0] != y.shape[0]:
        raise DataError(f"{spec}: x has {x.shape[0]} samples but y has {y.shape[0]}")
    if x.shape[0] == 0:
        raise DataError(f"{spec}: the data set holds no samples")
    if not torch.isfinite(x).all():
        raise DataError(f"{spec}: x contains NaN or Inf")
    if options.limit is not None:
        x, y = x[: options.limit], y[: options.limit]
    if num_classes is None and labelled and y.numel():
        num_classes = int(y.max()) + 1
    is_sequence = False
    if options.encoding == "rate" and x.dim() >= 2:
        gen = torch.Generator().manual_seed(options.seed)
        x = rate_encode(x, options.time_steps, gen)
        is_sequence = True
    return DataBundle(name, TensorDataset(x, y), is_sequence, options.time_steps, num_classes, options,
                      labelled=labelled)



def run_settings(bundle: DataBundle) -> dict[str, Any]:
    """How ``bundle`` presents its samples: what a compressed file records so that it is evaluated,
    reported and exported the way it was compressed (T, encoding, one sample's shape)."""
    encoding = bundle.options.encoding
    if encoding == "rate" and not bundle.is_sequence:
        encoding = "direct"  # a package.module:function source is presented as it comes: no rate coding
    return {
        "time_steps": int(bundle.time_steps),
        "encoding": encoding,
        "sample_shape": [int(s) for s in bundle.sample_input().shape],
        "is_sequence": bool(bundle.is_sequence),
        "seed": int(bundle.options.seed),  # the Poisson draws of rate coding
    }


def digits_split(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn digits as ``[N, 1, 8, 8]`` in [0, 1] with a fixed stratified 70/30 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if split not in ("train", "test"):
        raise DataError(f"unknown digits split '{split}'; use train or test")
    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, digits.target, test_size=0.3, random_state=0, stratify=digits.target
    )
    x, y = (x_tr, y_tr) if split == "train" else (x_te, y_te)
    return torch.from_numpy(x).unsqueeze(1).contiguous(), torch.from_numpy(y.astype(np.int64))


def _read_tensor_file(path: Path) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``x`` and ``y`` of a tensor file; ``y`` None when the file holds no labels."""
    if not path.exists():
        raise DataError(f"data file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            tensors = load_file(str(path))
        elif suffix == ".npz":
            _check_npz(path)
            with np.load(path, allow_pickle=False) as npz:
                tensors = {k: torch.from_numpy(npz[k]) for k in npz.files}
        elif suffix in (".pt", ".pth"):
            tensors = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise DataError(f"{path}: unknown data file type '{suffix}'; use .safetensors, .npz or .pt")
    except DataError:
        raise
    except Exception as exc:  # the readers raise many kinds; one line for the user
        raise DataError(f"{path}: cannot read data file ({type(exc).__name__}: {_first_line(exc)})") from exc
    if not isinstance(tensors, dict) or "x" not in tensors:
        keys = sorted(tensors) if isinstance(tensors, dict) else type(tensors).__name__
        raise DataError(f"{path}: expected tensor 'x' (and 'y' for labels), found {keys}")
    x = tensors["x"]
    if not isinstance(x, torch.Tensor):
        raise DataError(f"{path}: 'x' must be a tensor")
    if x.dim() < 2:
        raise DataError(f"{path}: x must be [N, ...] with at least one feature dimension, got shape {list(x.shape)}")
    if "y" not in tensors:  # unlabelled: fine-tuning against the model's own outputs needs no labels
        return x.float(), None
    y = tensors["y"]
    if not isinstance(y, torch.Tensor):
        raise DataError(f"{path}: 'y' must be a tensor")
    if y.dim() != 1 or y.dtype.is_floating_point:
        raise DataError(f"{path}: y must be a 1-D integer label tensor, got {y.dtype} {list(y.shape)}")
    if y.numel() and int(y.min()) < 0:
        raise DataError(f"{path}: labels must be >= 0, found {int(y.min())} (leave 'y' out for unlabelled data)")
    return x.float(), y.long()


def _check_npz(path: Path) -> None:
    """Refuse a ``.npz`` whose arrays would inflate past :data:`MAX_NPZ_MEMBER_BYTES` (a zip bomb), before reading.

    Both sizes are checked without inflating anything: the size each member declares in the zip directory
    (Python's zip reader stops at it), and the shape its ``.npy`` header declares (numpy allocates that
    much before reading the data).
    """
    from numpy.lib import format as npy

    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            if len(members) > MAX_NPZ_MEMBERS:
                raise DataError(f"{path}: the archive holds {len(members)} arrays; a data file needs x and y")
            for info in members:
                if info.file_size > MAX_NPZ_MEMBER_BYTES:
                    raise DataError(f"{path}: '{info.filename}' inflates to {info.file_size:,} bytes, more than "
                                    f"{MAX_NPZ_MEMBER_BYTES:,}")
                with archive.open(info) as member:
                    version = npy.read_magic(member)
                    if version == (1, 0):
                        shape, _, dtype = npy.read_array_header_1_0(member)
                    else:
                        shape, _, dtype = npy.read_array_header_2_0(member)
                nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
                if nbytes > info.file_size:
                    raise DataError(f"{path}: '{info.filename}' declares {nbytes:,} bytes of data but holds "
                                    f"{info.file_size:,}")
    except DataError:
        raise
    except Exception as exc:  # not a zip, a damaged member, not a .npy member
        raise DataError(f"{path}: cannot read data file ({type(exc).__name__}: {_first_line(exc)})") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _from_function(spec: str, options: DataOptions) -> DataBundle:
    if not is_ref(spec):
        raise DataError(
            f"unknown data source '{spec}': use 'digits', a .safetensors/.npz/.pt file with x (and y), "
            "or package.module:function"
        )
    func = import_ref(spec, what="data function", error=DataError)
    if not callable(func):
        raise DataError(f"{spec} is not a function")
    try:
        result = func()
    except Exception as exc:  # the user's code; --debug shows the traceback
        raise DataError(f"{spec} failed: {type(exc).__name__}: {_first_line(exc)}") from exc
    if isinstance(result, DataLoader):
        dataset = result.dataset
    elif isinstance(result, Dataset):
        dataset = result
    else:
        raise DataError(f"{spec} returned {type(result).__name__}; it must return a torch Dataset or DataLoader")
    try:
        n = len(dataset)
    except TypeError as exc:
        raise DataError(f"{spec}: the dataset has no length (iterable datasets are not supported)") from exc
    if n == 0:
        raise DataError(f"{spec}: the data set holds no samples")
    if options.limit is not None and options.limit < n:
        dataset = Subset(dataset, range(options.limit))
    labelled = _is_pair(dataset[0])
    labels = set()
    for i in range(min(len(dataset), 2048)):
        item = dataset[i]
        if _is_pair(item) != labelled:
            raise DataError(f"{spec}: item {i} is {'an x alone' if labelled else 'an (x, y) pair'} but item 0 is "
                            f"{'an (x, y) pair' if labelled else 'an x alone'}; yield one form throughout")
        if labelled:
            labels.add(int(item[1]))
        elif not isinstance(_unwrap(item), torch.Tensor):
            raise DataError(f"{spec}: dataset items must be (x, y) pairs, or x tensors alone for unlabelled data; "
                            f"item {i} is {type(item).__name__}")
    if not labelled:
        dataset = _Unlabelled(dataset)
    num_classes = max(labels) + 1 if labels else None
    return DataBundle(spec, dataset, False, options.time_steps, num_classes, options, labelled=labelled)


def _is_pair(item: Any) -> bool:
    return isinstance(item, (tuple, list)) and len(item) == 2


def _unwrap(item: Any) -> Any:
    """``x`` from an unlabelled item: the tensor itself or a one-element tuple."""
    return item[0] if isinstance(item, (tuple, list)) and len(item) == 1 else item


class _Unlabelled(Dataset):
    """A dataset of ``x`` alone, yielding ``(x, NO_LABEL)`` so that every bundle yields pairs."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return _unwrap(self.dataset[index]), NO_LABEL



def split_validation(bundle: DataBundle, fraction: float = 0.1, seed: int = 0) -> tuple[DataBundle, DataBundle] | None:
    """Hold out a deterministic ``fraction`` of ``bundle`` for validation (epoch selection).

    Returns:
        ``(train_part, validation_part)``, or None when the data set is too small to split (< 50 samples:
        fewer than 5 validation samples cannot tell epochs apart).
    """
    from dataclasses import replace

    n = len(bundle)
    if n < 50:
        return None
    k = max(1, round(n * fraction))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    val_idx, train_idx = sorted(order[:k]), sorted(order[k:])
    return (replace(bundle, name=f"{bundle.name} (train part)", dataset=Subset(bundle.dataset, train_idx)),
            replace(bundle, name=f"{bundle.name} (validation part)", dataset=Subset(bundle.dataset, val_idx)))
