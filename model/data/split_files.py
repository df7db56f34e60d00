"""The published partial-label settings of MTPSL (Li et al., CVPR 2022), read safely.

Two formats, told apart by the file's suffix:

- ``.pth`` (NYUD-v2, Cityscapes): a torch pickle ``{'labels_weights': FloatTensor(N, T)}``. Row
  ``i`` is the training image ``train/{i}`` of the MTAN layout; column ``j`` is ``tasks[j]``; 1
  keeps that label, 0 hides it. The published files use the columns (semseg, depth, normal) and
  (semseg, depth): the order of the tasks of :mod:`hitts.model.data.mtan`. Read with
  ``torch.load(weights_only=True)``.
- ``.npy`` (PASCAL-Context): a pickled dict task -> list of the image ids whose label is kept; ids
  match the items ``train/{id}``. Read with an unpickler that can build only numpy arrays, dtypes
  and scalars, so nothing in the file can run code. A plain numeric ``.npy`` (N, T) matrix is read
  like the tensor of a ``.pth``.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from hitts.model.data.errors import BadInput
from hitts.model.data.source import SourceItem

try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray

log = logging.getLogger(__name__)

# Task names used in MTPSL's PASCAL-Context files -> the project's names.
PASCAL_TASK_NAMES = {
    "semseg": "semseg",
    "human_parts": "human_parts",
    "sal": "sal",
    "normals": "normal",
    "normal": "normal",
    "edge": "edge",
}

# The only globals a pickled numpy object array of strings needs (numpy 1.x and 2.x spellings).
_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy.core.multiarray", "scalar"): _multiarray.scalar,
    ("numpy._core.multiarray", "scalar"): _multiarray.scalar,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}
_TORCH_LOAD_ERRORS = (
    pickle.UnpicklingError,
    RuntimeError,
    EOFError,
    OSError,
    ValueError,
    AttributeError,
)
_UNPICKLE_ERRORS = (
    pickle.UnpicklingError,
    EOFError,
    ValueError,
    TypeError,
    AttributeError,
    IndexError,
    KeyError,
    UnicodeDecodeError,
    OverflowError,
)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Builds dicts, lists, strings, numbers and numpy arrays; refuses every other global."""

    def find_class(self, module: str, name: str) -> object:
        try:
            return _NUMPY_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: only numpy arrays, dtypes and scalars"
            ) from None


def _load_npy(path: Path) -> object:
    """A numeric array, or the object held by a pickled 0-d object array."""
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f".npy format version {version} is not supported")
        except (ValueError, OSError, EOFError) as e:
            raise BadInput(path, f"unreadable .npy file ({e})") from None
        if not dtype.hasobject:
            f.seek(0)
            try:
                return np.load(f, allow_pickle=False)
            except (ValueError, OSError, EOFError) as e:
                raise BadInput(path, f"unreadable .npy array ({e})") from None
        try:
            array = _NumpyOnlyUnpickler(f, encoding="latin1").load()
        except _UNPICKLE_ERRORS as e:
            raise BadInput(path, f"unreadable or unsafe pickled .npy ({e})") from None
    if not isinstance(array, np.ndarray) or array.shape != tuple(shape):
        raise BadInput(path, f"expected a pickled numpy array of shape {shape}")
    return array.item() if array.shape == () else array


def _load_pth(path: Path) -> np.ndarray:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except _TORCH_LOAD_ERRORS as e:
        raise BadInput(path, f"unreadable torch file ({e})") from None
    if not isinstance(obj, dict):
        raise BadInput(
            path, f"expected a dict {{'labels_weights': tensor}}, got {type(obj).__name__}"
        )
    if "labels_weights" not in obj:
        raise BadInput(path, f"no 'labels_weights' entry; found keys {sorted(map(str, obj))}")
    weights = obj["labels_weights"]
    if not isinstance(weights, torch.Tensor):
        raise BadInput(path, f"'labels_weights' must be a tensor, got {type(weights).__name__}")
    return weights.detach().to(torch.float64).numpy()


def _from_matrix(
    path: Path, matrix: np.ndarray, train: list[SourceItem], tasks: tuple[str, ...]
) -> dict[str, tuple[str, ...]]:
    """Row i of an (N, T) 0/1 matrix -> the item ``train/{i}``."""
    if matrix.ndim != 2:
        raise BadInput(path, f"expected an (images, tasks) matrix, got shape {matrix.shape}")
    rows, cols = matrix.shape
    if cols != len(tasks):
        raise BadInput(
            path, f"has {cols} columns but the source has {len(tasks)} tasks {list(tasks)}"
        )
    if rows != len(train):
        raise BadInput(path, f"has {rows} rows but the source has {len(train)} train items")
    if matrix.dtype.kind not in "biuf":
        raise BadInput(path, f"values must be the numbers 0 or 1, got dtype {matrix.dtype}")
    off = (matrix != 0) & (matrix != 1)
    if off.any():
        bad = np.unique(matrix[off])[:5].tolist()
        raise BadInput(path, f"values must be 0 or 1 (label hidden / kept), found {bad}")
    keys = {it.key for it in train}
    missing = [f"train/{i}" for i in range(rows) if f"train/{i}" not in keys]
    if missing:
        raise BadInput(
            path,
            f"row i is the item train/{{i}}, but {len(missing)} of them are not among the "
            f"source's train items, e.g. {missing[:5]}",
        )
    return {
        f"train/{i}": tuple(t for t, keep in zip(tasks, matrix[i], strict=True) if keep == 1)
        for i in range(rows)
    }


def _from_id_lists(
    path: Path, lists: object, train: list[SourceItem], tasks: tuple[str, ...]
) -> dict[str, tuple[str, ...]]:
    """A dict task -> image ids -> the items ``train/{id}``."""
    if not isinstance(lists, dict):
        raise BadInput(
            path, f"expected a dict task -> list of image ids, got {type(lists).__name__}"
        )
    kept: dict[str, set[str]] = {}
    for name, ids in lists.items():
        task = PASCAL_TASK_NAMES.get(name) if isinstance(name, str) else None
        if task is None:
            raise BadInput(
                path, f"unknown task {name!r}; expected keys among {sorted(PASCAL_TASK_NAMES)}"
            )
        if task in kept:
            raise BadInput(path, f"task {task!r} is given twice")
        if isinstance(ids, np.ndarray):
            ids = ids.tolist()
        if not isinstance(ids, (list, tuple)) or not all(isinstance(i, str) for i in ids):
            raise BadInput(path, f"{name!r}: expected a list of image ids (strings)")
        kept[task] = {f"train/{i}" for i in ids}
    if set(kept) != set(tasks):
        raise BadInput(path, f"has tasks {sorted(kept)} but the source has {sorted(tasks)}")
    keys = {it.key for it in train}
    unknown = sorted(set().union(*kept.values()) - keys)
    if unknown:
        raise BadInput(
            path,
            f"{len(unknown)} image id(s) are not among the source's train items, "
            f"e.g. {[k.split('/', 1)[1] for k in unknown[:5]]}",
        )
    return {it.key: tuple(t for t in tasks if it.key in kept[t]) for it in train}


def read_split_file(
    path: str | Path, items: Sequence[SourceItem], tasks: tuple[str, ...]
) -> dict[str, tuple[str, ...]]:
    """Which labels of each training image a published setting keeps.

    Args:
        path: An MTPSL ``.pth`` or ``.npy`` file (see the module docstring).
        items: The source's items; only those of the train split are used.
        tasks: The source's task names; for a matrix, column j is ``tasks[j]``.

    Returns:
        Key of every train item -> names of the tasks whose label is kept (in ``tasks`` order).

    Raises:
        BadInput: Naming the file, when it is unreadable, not one of the two formats, or does not
            fit the items and tasks.
    """
    path = Path(path)
    tasks = tuple(tasks)
    if not path.is_file():
        raise BadInput(path, "split file not found")
    train = [it for it in items if it.split == "train"]
    suffix = path.suffix.lower()
    if suffix in (".pth", ".pt"):
        result = _from_matrix(path, _load_pth(path), train, tasks)
    elif suffix == ".npy":
        obj = _load_npy(path)
        if isinstance(obj, np.ndarray):
            result = _from_matrix(path, obj, train, tasks)
        else:
            result = _from_id_lists(path, obj, train, tasks)
    else:
        raise BadInput(
            path,
            "unknown split file type; expected .pth (MTPSL NYUD-v2 / Cityscapes) "
            "or .npy (MTPSL PASCAL-Context)",
        )
    counts = {t: sum(t in kept for kept in result.values()) for t in tasks}
    log.info("%s: labels kept per task over %d train items: %s", path.name, len(result), counts)
    return result
