"""Reading, checking and writing images and dense labels.

The on-disk encodings (the project's own folder layout and the FiftyOne store use the same):

- image: 8-bit RGB PNG or JPEG.
- segmentation / edge: single-channel class-id PNG, 8-bit with 255 = invalid, or 16-bit with
  65535 = invalid (more than 255 classes). Edge PNGs may also be 0/255 binary images: an 8-bit
  edge PNG holding only the values 0 and 255 is read that way.
- depth: 16-bit PNG in units of ``depth_unit`` metres (default millimetres), 0 = invalid; or a
  float ``.npy`` in metres.
- normal: RGB PNG ``(n + 1) / 2 * 255``, with (0, 0, 0) = invalid (it decodes to a vector of
  length sqrt(3), never a unit normal); or a float ``.npy`` (H, W, 3) with all-zero = invalid.

Every reader checks what it reads against what is expected and raises
:class:`~hitts.model.data.errors.BadInput` naming the file. Every writer is atomic: it writes a
temporary file in the target folder and renames it over the target.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from hitts.model.data.errors import BadInput
from hitts.model.tasks import DEPTH, EDGE, NORMAL, SEGMENTATION, TaskSpec

Image.LOAD_TRUNCATED_IMAGES = False

DEFAULT_DEPTH_UNIT = 0.001  # metres per count in 16-bit depth PNGs: millimetres, as Kinect/NYU
NORMAL_PNG_TOLERANCE = 0.03  # |‖n‖ - 1| allowed after 8-bit decoding (quantisation is < 0.01)
NORMAL_NPY_TOLERANCE = (
    0.1  # |‖n‖ - 1| allowed for float normals (resized data drifts); renormalised
)


# ----------------------------------------------------------------------------------------------
# atomic writes


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def png_bytes(array: np.ndarray) -> bytes:
    """Encode uint8 (H, W) / (H, W, 3) or uint16 (H, W) as PNG, deterministically."""
    if array.dtype == np.uint16:
        if array.ndim != 2:
            raise ValueError(f"16-bit PNG must be (H, W), got {array.shape}")
        img = Image.fromarray(array)  # mode I;16
    elif array.dtype == np.uint8:
        img = Image.fromarray(array)
    else:
        raise ValueError(f"PNG arrays must be uint8 or uint16, got {array.dtype}")
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def write_png(path: str | Path, array: np.ndarray) -> None:
    atomic_write_bytes(path, png_bytes(array))


def write_npy(path: str | Path, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


# ----------------------------------------------------------------------------------------------
# reading


def open_image(path: Path) -> Image.Image:
    """Open and fully decode an image file; BadInput naming it if missing, unreadable or truncated."""
    if not path.is_file():
        raise BadInput(path, "file not found")
    try:
        img = Image.open(path)
        img.load()  # decodes everything: a truncated file fails here
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise BadInput(path, f"unreadable or truncated image ({e})") from None
    return img


def load_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise BadInput(path, "file not found")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise BadInput(path, f"unreadable .npy array ({e})") from None


def read_image(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB from any 8-bit image file PIL reads."""
    path = Path(path)
    img = open_image(path)
    if img.mode not in ("RGB", "RGBA", "L", "P", "CMYK", "YCbCr"):
        raise BadInput(path, f"expected an 8-bit RGB or grey image, got PIL mode {img.mode}")
    return np.array(img.convert("RGB"))  # writable, so torch.from_numpy may share it


def _check_hw(path: Path, array: np.ndarray, hw: tuple[int, int] | None, what: str) -> None:
    if hw is not None and tuple(array.shape[:2]) != tuple(hw):
        raise BadInput(
            path, f"{what} is {array.shape[0]}x{array.shape[1]} but the image is {hw[0]}x{hw[1]}"
        )


def check_label(
    task: TaskSpec, label: np.ndarray, path: Path, hw: tuple[int, int] | None
) -> np.ndarray:
    """Check a label already in canonical form (see :mod:`hitts.model.tasks`) and return it."""
    name = f"{task.name} label"
    if task.kind in (SEGMENTATION, EDGE):
        if label.ndim != 2:
            raise BadInput(path, f"{name} must be (H, W) class ids, got shape {label.shape}")
        if label.dtype.kind == "f":
            if not np.all(np.isfinite(label)) or np.any(label != np.round(label)):
                raise BadInput(path, f"{name} must hold whole class ids, got non-integer values")
        elif label.dtype.kind not in "iu":
            raise BadInput(path, f"{name} must be an integer array, got dtype {label.dtype}")
        label = label.astype(np.int64)
        _check_hw(path, label, hw, name)
        bad = (label >= task.num_classes) | (label < -1)
        if bad.any():
            found = sorted(set(np.unique(label[bad]).tolist()))[:5]
            raise BadInput(
                path,
                f"{name}: class id(s) {found} out of range; expected 0..{task.num_classes - 1} "
                f"({task.num_classes} classes) or the ignore value",
            )
        return label
    if task.kind == DEPTH:
        if label.ndim == 3 and label.shape[-1] == 1:
            label = label[..., 0]
        if label.ndim != 2:
            raise BadInput(path, f"{name} must be (H, W) metres, got shape {label.shape}")
        if label.dtype.kind != "f":
            raise BadInput(path, f"{name} must be float metres, got dtype {label.dtype}")
        _check_hw(path, label, hw, name)
        if not np.all(np.isfinite(label)):
            raise BadInput(path, f"{name} has NaN or infinite values; use 0 for no reading")
        if np.any(label < 0):
            raise BadInput(
                path, f"{name} has negative depth (min {label.min():.3g}); expected >= 0"
            )
        return label.astype(np.float32)
    if task.kind == NORMAL:
        if label.ndim != 3 or label.shape[-1] != 3:
            raise BadInput(path, f"{name} must be (H, W, 3), got shape {label.shape}")
        if label.dtype.kind != "f":
            raise BadInput(path, f"{name} must be float unit vectors, got dtype {label.dtype}")
        _check_hw(path, label, hw, name)
        if not np.all(np.isfinite(label)):
            raise BadInput(path, f"{name} has NaN or infinite values; use (0, 0, 0) for invalid")
        norm = np.linalg.norm(label, axis=-1)
        valid = norm > 0
        off = np.abs(norm[valid] - 1)
        if off.size and off.max() > NORMAL_NPY_TOLERANCE:
            raise BadInput(
                path,
                f"{name} has non-unit normals (|n| up to {norm[valid].max():.3f}, "
                f"down to {norm[valid].min():.3f}); expected unit vectors or (0, 0, 0) for invalid",
            )
        unit = label / np.where(valid, norm, 1.0)[..., None]
        return unit.astype(np.float32)
    raise ValueError(f"unknown kind {task.kind!r}")


def read_label(
    task: TaskSpec,
    path: str | Path,
    hw: tuple[int, int] | None = None,
    depth_unit: float = DEFAULT_DEPTH_UNIT,
) -> np.ndarray:
    """Read a label file in any of the module's encodings into canonical form, checking it.

    Args:
        task: What the file is a label of.
        path: A PNG or ``.npy`` file.
        hw: The image's (H, W); the label must match it.
        depth_unit: Metres per count of a 16-bit depth PNG.
    """
    path = Path(path)
    if path.suffix.lower() == ".npy":
        return check_label(task, load_npy(path), path, hw)
    img = open_image(path)
    if task.kind in (SEGMENTATION, EDGE):
        if img.mode in ("L", "P"):
            raw = np.asarray(img).astype(np.int64)
            ignore = 255
        elif img.mode in ("I;16", "I;16B", "I;16L", "I"):
            raw = np.asarray(img).astype(np.int64)
            ignore = 65535
        elif img.mode == "1":
            raw = np.asarray(img).astype(np.int64)
            ignore = None
        else:
            raise BadInput(
                path,
                f"{task.name} label must be an 8- or 16-bit single-channel class-id PNG, "
                f"got PIL mode {img.mode}",
            )
        if (
            task.kind == EDGE
            and ignore == 255
            and raw.max(initial=0) == 255
            and not np.any((raw >= 1) & (raw < 255))
        ):
            # only 0 and 255: a 0/255 binary edge image (an edge map of ours with invalid pixels
            # and not a single edge pixel reads the same way; documented in the module docstring)
            raw = (raw == 255).astype(np.int64)
        elif ignore is not None:
            raw[raw == ignore] = -1
        return check_label(task, raw, path, hw)
    if task.kind == DEPTH:
        if img.mode not in ("I;16", "I;16B", "I;16L", "I"):
            raise BadInput(
                path,
                f"depth must be a 16-bit PNG (units of {depth_unit} m), got PIL mode {img.mode}",
            )
        raw = np.asarray(img)
        if raw.dtype.kind == "i" and raw.min(initial=0) < 0:
            raise BadInput(path, "depth PNG has negative values")
        return check_label(task, raw.astype(np.float32) * np.float32(depth_unit), path, hw)
    if task.kind == NORMAL:
        if img.mode != "RGB":
            raise BadInput(
                path, f"normal must be an 8-bit RGB PNG (n+1)/2*255, got PIL mode {img.mode}"
            )
        return decode_normal(np.asarray(img), path, hw)
    raise ValueError(f"unknown kind {task.kind!r}")


# ----------------------------------------------------------------------------------------------
# encodings


def encode_class_ids(label: np.ndarray, num_classes: int) -> np.ndarray:
    """Canonical class ids (-1 invalid) to the PNG array: uint8/255 or uint16/65535."""
    if num_classes <= 255:
        out = label.astype(np.uint8)
        out[label < 0] = 255
    else:
        out = label.astype(np.uint16)
        out[label < 0] = 65535
    return out


def encode_depth(depth: np.ndarray, depth_unit: float = DEFAULT_DEPTH_UNIT) -> np.ndarray:
    """Metres (0 invalid) to 16-bit counts; raises ValueError past the 16-bit range."""
    counts = np.round(depth / depth_unit)
    if counts.max(initial=0) > 65535:
        raise ValueError(
            f"depth {depth.max():.2f} m does not fit a 16-bit PNG at {depth_unit} m per count"
        )
    out = counts.astype(np.uint16)
    out[(depth > 0) & (out == 0)] = 1  # a real reading never becomes "invalid"
    return out


def encode_normal(normal: np.ndarray) -> np.ndarray:
    """(H, W, 3) unit normals (0 invalid) to the RGB encoding ``(n + 1) / 2 * 255``."""
    rgb = np.clip(np.round((normal + 1.0) * 127.5), 0, 255).astype(np.uint8)
    invalid = ~np.any(normal != 0, axis=-1)
    rgb[invalid] = 0
    rgb[~invalid & np.all(rgb == 0, axis=-1)] = 1  # never collide with the invalid code
    return rgb


def decode_normal(
    rgb: np.ndarray,
    path: Path,
    hw: tuple[int, int] | None = None,
    valid: np.ndarray | None = None,
) -> np.ndarray:
    """The inverse of :func:`encode_normal`, renormalised; checks the vectors are unit.

    Args:
        valid: (H, W) bool, the pixels that hold a normal; default: those not (0, 0, 0).
    """
    _check_hw(path, rgb, hw, "normal label")
    if valid is None:
        valid = ~np.all(rgb == 0, axis=-1)
    n = rgb.astype(np.float32) / 127.5 - 1.0
    norm = np.linalg.norm(n, axis=-1)
    off = np.abs(norm[valid] - 1)
    if off.size and off.max() > NORMAL_PNG_TOLERANCE:
        raise BadInput(
            path,
            f"normal PNG does not hold unit normals (decoded |n| from {norm[valid].min():.3f}"
            f" to {norm[valid].max():.3f}); expected (n+1)/2*255 with (0,0,0) for invalid",
        )
    n = n / np.maximum(norm, 1e-6)[..., None]
    n[~valid] = 0
    return n.astype(np.float32)


def encode_label(
    task: TaskSpec, label: np.ndarray, depth_unit: float = DEFAULT_DEPTH_UNIT
) -> np.ndarray:
    """Canonical label to the array that is written as PNG."""
    if task.is_classification:
        return encode_class_ids(label, task.num_classes)
    if task.kind == DEPTH:
        return encode_depth(label, depth_unit)
    if task.kind == NORMAL:
        return encode_normal(label)
    raise ValueError(f"unknown kind {task.kind!r}")


def write_label(
    task: TaskSpec, path: str | Path, label: np.ndarray, depth_unit: float = DEFAULT_DEPTH_UNIT
) -> None:
    """Write a canonical label as PNG in the module's encoding, atomically."""
    write_png(path, encode_label(task, label, depth_unit))
