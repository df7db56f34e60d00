"""A labelled split held in memory as stacked tensors, and per-batch augmentation.

Small and medium datasets (the generated scenes, NYUD-v2 at 288x384) fit in memory once decoded,
which makes an epoch cost only the network. Images are kept as uint8.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm import tqdm

from hitts.model.data.torch_dataset import MultiTaskDataset
from hitts.model.tasks import NORMAL, TaskSpec


@dataclass
class TensorSet:
    """N images with their targets.

    Attributes:
        images: (N, 3, H, W) uint8.
        targets: Task -> (N, H, W) int64 / float32, or (N, 3, H, W) normals; canonical invalid marks.
        valid: Task -> (N, H, W) bool.
        present: (N, T) bool, tasks in ``tasks`` order.
        tasks: The task specs.
        keys: Source key of each image.
        label_weight: Optional (N, T) float weight of each present label in ``L_s`` (default 1).
            A label that is only an annotator's accepted confident region (``M_p`` of a
            suggestion) weighs its share of the image, as that pseudo-label did in ``L_p``.
    """

    images: Tensor
    targets: dict[str, Tensor]
    valid: dict[str, Tensor]
    present: Tensor
    tasks: tuple[TaskSpec, ...]
    keys: list[str]
    label_weight: Tensor | None = None

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def hw(self) -> tuple[int, int]:
        return self.images.shape[-2], self.images.shape[-1]

    def alpha(self, idx: Tensor) -> dict[str, Tensor]:
        """Task -> (B,) float, 1 where the image has that task's ground truth (α_i of Eq. 5)."""
        return {t.name: self.present[idx, i].float() for i, t in enumerate(self.tasks)}

    def supervised_weight(self, idx: Tensor) -> dict[str, Tensor]:
        """Task -> (B,) float: ``alpha_i`` of Eq. 5 times the label's weight (see
        ``label_weight``)."""
        alpha = self.alpha(idx)
        if self.label_weight is None:
            return alpha
        return {t.name: alpha[t.name] * self.label_weight[idx, i] for i, t in enumerate(self.tasks)}


def load_tensor_set(dataset: MultiTaskDataset, *, progress: bool = False) -> TensorSet:
    """Decode every item of ``dataset`` once (it must not augment)."""
    if dataset.hflip:
        raise ValueError("load_tensor_set needs a dataset without augmentation")
    if len(dataset) == 0:
        raise ValueError("the split holds no images")
    items = [dataset[i] for i in tqdm(range(len(dataset)), desc="decode", disable=not progress)]
    images = torch.stack([(it["image"] * 255).round().to(torch.uint8) for it in items])
    targets = {t.name: torch.stack([it[f"target/{t.name}"] for it in items]) for t in dataset.tasks}
    valid = {t.name: torch.stack([it[f"valid/{t.name}"] for it in items]) for t in dataset.tasks}
    present = torch.stack([it["present"] for it in items])
    keys = [r.key for r in dataset.records]
    return TensorSet(images, targets, valid, present, dataset.tasks, keys)


def hflip_batch(
    flip: Tensor, tensors: dict[str, Tensor], normal_keys: set[str]
) -> dict[str, Tensor]:
    """Flip left-right the samples where ``flip`` (B,) is True; negates x of normal tensors.

    Every tensor has the batch first and width last; the ones named in ``normal_keys`` are
    (B, 3, H, W) normals whose x component changes sign.
    """
    out = {}
    for name, t in tensors.items():
        f = flip.view(-1, *([1] * (t.ndim - 1)))
        flipped = t.flip(-1)
        if name in normal_keys:
            flipped = flipped.clone()
            flipped[:, 0] = -flipped[:, 0]
        out[name] = torch.where(f, flipped, t)
    return out


def normal_task_names(tasks: tuple[TaskSpec, ...]) -> set[str]:
    return {t.name for t in tasks if t.kind == NORMAL}
