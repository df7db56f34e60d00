"""A PyTorch dataset over labelled images: the image, each present task's target and validity mask.

It reads the files the FiftyOne store points at (``hitts.app.store.labelled_images`` builds the
records from a FiftyOne view); it does not import FiftyOne itself.

Each item is a flat dict that the default collate stacks:

- ``"image"``: (3, H, W) float32 in [0, 1]
- ``"present"``: (T,) bool, whether task t has a label on this image (tasks in the order given)
- ``"target/<task>"``: segmentation/edge (H, W) int64 (-1 invalid); depth (H, W) float32 metres
  (0 invalid); normal (3, H, W) float32 — the invalid code everywhere where the task is absent
- ``"valid/<task>"``: (H, W) bool, all False where the task is absent
- ``"index"``: int, the position in the records list
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from hitts.model.data.label_io import DEFAULT_DEPTH_UNIT, read_image, read_label
from hitts.model.tasks import DEPTH, NORMAL, TaskSpec, valid_mask


@dataclass(frozen=True)
class LabelledImage:
    """An image and the label files visible to training."""

    key: str
    image: Path
    labels: dict[str, Path] = field(default_factory=dict)


class MultiTaskDataset(Dataset):
    """Images with whatever labels they have.

    Args:
        records: The images and their label files.
        tasks: All tasks of the dataset, in model order.
        size: (H, W) to resize to (bilinear for images, nearest for labels), or None to keep.
        depth_unit: Metres per count of 16-bit depth PNGs.
        hflip: Flip left-right with probability 0.5 (normals' x component changes sign).
    """

    def __init__(
        self,
        records: list[LabelledImage],
        tasks: tuple[TaskSpec, ...],
        *,
        size: tuple[int, int] | None = None,
        depth_unit: float = DEFAULT_DEPTH_UNIT,
        hflip: bool = False,
    ):
        self.records = list(records)
        self.tasks = tuple(tasks)
        self.size = size
        self.depth_unit = depth_unit
        self.hflip = hflip

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rec = self.records[index]
        image = read_image(rec.image)
        hw = image.shape[:2]
        img = torch.from_numpy(image).permute(2, 0, 1).float().div_(255.0)  # (3, H, W)
        out_hw = self.size or hw
        if tuple(out_hw) != tuple(hw):
            img = F.interpolate(img[None], size=out_hw, mode="bilinear", align_corners=False)[0]
        flip = self.hflip and bool(torch.rand(()) < 0.5)
        item: dict[str, torch.Tensor] = {"index": torch.tensor(index)}
        present = []
        for task in self.tasks:
            path = rec.labels.get(task.name)
            present.append(path is not None)
            if path is None:
                target, valid = _empty_target(task, out_hw)
            else:
                label = read_label(task, path, hw, self.depth_unit)
                target, valid = _to_tensor(task, label, out_hw)
            if flip:
                target, valid = target.flip(-1), valid.flip(-1)
                if task.kind == NORMAL:
                    target[0] = -target[0]
            item[f"target/{task.name}"] = target
            item[f"valid/{task.name}"] = valid
        item["image"] = img.flip(-1) if flip else img
        item["present"] = torch.tensor(present)
        return item


def _empty_target(task: TaskSpec, hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    h, w = hw
    if task.kind == DEPTH:
        target = torch.zeros(h, w)
    elif task.kind == NORMAL:
        target = torch.zeros(3, h, w)
    else:
        target = torch.full((h, w), -1, dtype=torch.int64)
    return target, torch.zeros(h, w, dtype=torch.bool)


def _to_tensor(
    task: TaskSpec, label: np.ndarray, hw: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    valid = torch.from_numpy(valid_mask(task.kind, label))
    if task.kind == NORMAL:
        target = torch.from_numpy(label).permute(2, 0, 1).contiguous()  # (3, H, W)
    elif task.kind == DEPTH:
        target = torch.from_numpy(label)  # (H, W) metres
    else:
        target = torch.from_numpy(label)  # (H, W) int64
    if tuple(target.shape[-2:]) != tuple(hw):
        # nearest keeps class ids and invalid codes intact
        t = target.float()[None] if target.ndim == 3 else target.float()[None, None]
        t = F.interpolate(t, size=hw, mode="nearest")
        target = t[0] if target.ndim == 3 else t[0, 0].to(target.dtype)
        valid = F.interpolate(valid.float()[None, None], size=hw, mode="nearest")[0, 0].bool()
    return target, valid
