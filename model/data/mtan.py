"""Readers for NYUD-v2 and Cityscapes as preprocessed by MTAN (Liu et al., CVPR 2019) and MTPSL.

The layout, one ``.npy`` array per image and task (``ROOT`` is the unzipped ``nyuv2`` /
``cityscapes`` folder)::

    ROOT/{train,val}/image/{i}.npy     (H, W, 3) float RGB / 255, in [0, 1]
    ROOT/{train,val}/label/{i}.npy     (H, W) float class ids, -1 = invalid (NYUD-v2, 13 classes)
    ROOT/{train,val}/label_7/{i}.npy   the same with the 7 Cityscapes categories
    ROOT/{train,val}/label_19/{i}.npy  ... or the 19 Cityscapes training classes
    ROOT/{train,val}/depth/{i}.npy     (H, W, 1) float, 0 = invalid
    ROOT/{train,val}/normal/{i}.npy    (H, W, 3) float unit normals, (0, 0, 0) = invalid (NYUD-v2)

``i`` counts from 0 without padding; MTAN's loaders read ``i = 0 .. N - 1`` and MTPSL's split files
use ``i`` as the row index. NYUD-v2 is 288x384 (795 train, 654 val); Cityscapes 128x256 or 256x512
(2975 train, 500 val).

Depth units differ between the two:

- NYUD-v2: Kinect depth in metres (about 0.5 to 10 m), stored with ``depth_unit`` = 1 mm.
- Cityscapes: *not* metres. The values are the official SGM disparity maps rescaled,
  ``v = (p - 1) / 65536 = disparity_px / 256`` where ``p`` is the 16-bit value of the official
  ``disparity/*.png`` (largest value in the release: 0.4922 = 126 px / 256). They are proportional
  to inverse depth: metric depth is about ``f * B / (256 * v) = 473.6 / (256 * v)`` metres
  (f = 2262.5 px, B = 0.2093 m at full resolution). MTAN and MTPSL train and report errors on ``v``
  itself, so the reader passes it through unchanged, and stores it with ``depth_unit = 2**-16``:
  a count is then ``p - 1``, the precision of the original release, and the whole range fits 16
  bits (up to 0.99998).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np

from hitts.model.data.errors import BadInput
from hitts.model.data.label_io import check_label, load_npy
from hitts.model.data.source import SPLITS, Example, Reader, SourceItem
from hitts.model.tasks import (
    CITYSCAPES7_CLASSES,
    CITYSCAPES19_CLASSES,
    DEPTH,
    NORMAL,
    NYUV2_CLASSES,
    SEGMENTATION,
    TaskSpec,
)

log = logging.getLogger(__name__)

IMAGE_FOLDER = "image"
NYUV2_DEPTH_UNIT = 0.001  # metres per count: millimetres, as the Kinect
CITYSCAPES_DEPTH_UNIT = 2.0**-16  # disparity / 256 per count: one count = 1/256 px of disparity
IMAGE_RANGE_SLACK = 1e-4  # float rounding allowed outside [0, 1] before an image is refused

_INDEX_FILE = re.compile(r"^(0|[1-9][0-9]*)\.npy$")


def _names(folder: Path) -> set[str]:
    """File names in ``folder``; empty when it does not exist."""
    try:
        return set(os.listdir(folder))
    except FileNotFoundError:
        return set()


def load_mtan_image(path: Path) -> np.ndarray:
    """Read an MTAN image array and convert it.

    Args:
        path: ``image/{i}.npy``: (H, W, 3) float RGB in [0, 1].

    Returns:
        (H, W, 3) uint8 RGB.
    """
    array = load_npy(path)
    if array.ndim != 3 or array.shape[-1] != 3 or 0 in array.shape:
        raise BadInput(path, f"image must be (H, W, 3) RGB, got shape {array.shape}")
    if array.dtype.kind != "f":
        raise BadInput(path, f"image must be float RGB / 255 in [0, 1], got dtype {array.dtype}")
    if not np.all(np.isfinite(array)):
        raise BadInput(path, "image has NaN or infinite values; expected float RGB in [0, 1]")
    lo, hi = float(array.min()), float(array.max())
    if lo < -IMAGE_RANGE_SLACK or hi > 1 + IMAGE_RANGE_SLACK:
        raise BadInput(
            path, f"image values span [{lo:.4g}, {hi:.4g}]; expected float RGB / 255 in [0, 1]"
        )
    return np.round(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)


def load_mtan_label(task: TaskSpec, path: Path, hw: tuple[int, int]) -> np.ndarray:
    """Read one MTAN label array into canonical form (see :mod:`hitts.model.tasks`), checking it.

    Args:
        task: What the array is a label of.
        path: ``{label,label_7,label_19,depth,normal}/{i}.npy``.
        hw: The image's (H, W).
    """
    array = load_npy(path)
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise BadInput(path, f"{task.name} label has NaN or infinite values")
    return check_label(task, array, path, hw)


class MtanReader(Reader):
    """The shared part of the MTAN readers: listing ``ROOT/{split}/*/{i}.npy`` and loading it.

    Subclasses set :attr:`format_name`, :attr:`tasks`, :attr:`depth_unit` and :attr:`folders`.

    Attributes:
        folders: Task name -> the sub-folder of ``ROOT/{split}`` holding its arrays.
    """

    folders: dict[str, str] = {}

    def __init__(self, root: str | Path):
        super().__init__(root)
        if not (self.root / "train").is_dir():
            found = sorted(os.listdir(self.root)) if self.root.is_dir() else None
            raise BadInput(
                self.root,
                f"not a {self.format_name} root: expected {self.expected_layout()}; "
                + ("the folder does not exist" if found is None else f"found {found[:20]}"),
            )

    def expected_layout(self) -> str:
        subs = ",".join([IMAGE_FOLDER, *self.folders.values()])
        return f"ROOT/train and ROOT/val, each with {{{subs}}}/{{i}}.npy"

    def items(self) -> list[SourceItem]:
        """All images, train then val, each sorted by its number ``i``; keys ``train/{i}``."""
        out: list[SourceItem] = []
        for split in SPLITS:
            split_dir = self.root / split
            if not split_dir.is_dir():
                log.info("%s: no %s folder, so no %s items", self.root, split, split)
                continue
            image_dir = split_dir / IMAGE_FOLDER
            if not image_dir.is_dir():
                raise BadInput(image_dir, f"folder not found; expected {self.expected_layout()}")
            names = _names(image_dir)
            indices = sorted(int(m.group(1)) for n in names if (m := _INDEX_FILE.match(n)))
            if len(indices) < len(names):
                skipped = len(names) - len(indices)
                log.warning("%s: ignoring %d file(s) not named {i}.npy", image_dir, skipped)
            label_names = {t: _names(split_dir / folder) for t, folder in self.folders.items()}
            for i in indices:
                file = f"{i}.npy"
                labels = {
                    task: split_dir / folder / file
                    for task, folder in self.folders.items()
                    if file in label_names[task]
                }
                out.append(
                    SourceItem(
                        key=f"{split}/{i}",
                        split=split,
                        image=image_dir / file,
                        labels=labels,
                        extra={"index": i},
                    )
                )
        return out

    def load(self, item: SourceItem) -> Example:
        image = load_mtan_image(item.image)
        hw = (image.shape[0], image.shape[1])
        labels = {
            name: load_mtan_label(self.task(name), path, hw) for name, path in item.labels.items()
        }
        return Example(key=item.key, split=item.split, image=image, labels=labels, image_path=None)


class NYUv2MtanReader(MtanReader):
    """NYUD-v2, 13 classes, as preprocessed by MTAN: tasks semseg, depth (metres), normal."""

    format_name = "nyuv2-mtan"
    depth_unit = NYUV2_DEPTH_UNIT
    folders = {"semseg": "label", "depth": "depth", "normal": "normal"}
    tasks = (
        TaskSpec("semseg", SEGMENTATION, NYUV2_CLASSES),
        TaskSpec("depth", DEPTH),
        TaskSpec("normal", NORMAL),
    )


class CityscapesMtanReader(MtanReader):
    """Cityscapes as preprocessed by MTAN: tasks semseg (7 or 19 classes) and depth.

    The "depth" values are scaled disparities (see the module docstring), stored with
    ``depth_unit = 2**-16``.

    Args:
        root: The ``cityscapes`` folder.
        num_classes: 7 (``label_7``) or 19 (``label_19``); by default the one whose folder exists
            under ``ROOT/train``, 7 when both do.
    """

    format_name = "cityscapes-mtan"
    depth_unit = CITYSCAPES_DEPTH_UNIT
    folders = {"semseg": "label_7", "depth": "depth"}  # replaced per instance

    def expected_layout(self) -> str:
        return "ROOT/train and ROOT/val, each with {image,label_7 or label_19,depth}/{i}.npy"

    def __init__(self, root: str | Path, num_classes: int | None = None):
        super().__init__(root)
        train = self.root / "train"
        present = [n for n in (7, 19) if (train / f"label_{n}").is_dir()]
        if num_classes is None:
            if not present:
                log.warning("%s: neither label_7 nor label_19 exists; no semseg labels", train)
            num_classes = present[0] if present else 7
            if len(present) == 2:
                log.info("%s: both label_7 and label_19 exist; using 7 classes", train)
        elif num_classes not in (7, 19):
            raise ValueError(f"Cityscapes has 7 or 19 classes in the MTAN data, got {num_classes}")
        elif num_classes not in present:
            raise BadInput(
                train / f"label_{num_classes}",
                f"folder not found, so no {num_classes}-class labels; "
                f"label folders present: {[f'label_{n}' for n in present] or 'none'}",
            )
        self.num_classes = num_classes
        classes = CITYSCAPES7_CLASSES if num_classes == 7 else CITYSCAPES19_CLASSES
        self.folders = {"semseg": f"label_{num_classes}", "depth": "depth"}
        self.tasks = (TaskSpec("semseg", SEGMENTATION, classes), TaskSpec("depth", DEPTH))
