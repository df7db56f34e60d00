"""The dense tasks the project knows, and the in-memory form of their labels.

Every label travels through the code in one canonical form per task kind, with invalid pixels
marked inside the array itself (the conventions of the public MTAN / MTPSL data):

=============  ==========================  ============================================
kind           array                       invalid pixel
=============  ==========================  ============================================
segmentation   (H, W) int64 class ids      -1
edge           (H, W) int64 in {0, 1}      -1
depth          (H, W) float32 metres       0
normal         (H, W, 3) float32 unit      all three components 0
=============  ==========================  ============================================

Saliency and human parts are segmentation-like tasks with 2 and 7 classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SEGMENTATION = "segmentation"
EDGE = "edge"
DEPTH = "depth"
NORMAL = "normal"
KINDS = (SEGMENTATION, EDGE, DEPTH, NORMAL)


@dataclass(frozen=True)
class TaskSpec:
    """One dense task.

    Attributes:
        name: Field-safe name, e.g. ``"semseg"``; used in FiftyOne field names and folder names.
        kind: One of :data:`KINDS`; fixes the label form and the metrics.
        classes: Class names for segmentation-like tasks (edge: ``("background", "edge")``);
            empty for depth and normal.
    """

    name: str
    kind: str
    classes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"task {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if not self.name.isidentifier():
            raise ValueError(f"task name must be an identifier, got {self.name!r}")
        if self.is_classification and len(self.classes) < 2:
            raise ValueError(f"task {self.name!r}: a {self.kind} task needs at least 2 classes")

    @property
    def is_classification(self) -> bool:
        """Segmentation-like: the label is a class id per pixel."""
        return self.kind in (SEGMENTATION, EDGE)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "classes": list(self.classes)}

    @classmethod
    def from_dict(cls, d: dict) -> TaskSpec:
        return cls(name=d["name"], kind=d["kind"], classes=tuple(d.get("classes", ())))


def valid_mask(kind: str, label: np.ndarray) -> np.ndarray:
    """(H, W) bool: the pixels of a canonical label that carry a value."""
    if kind in (SEGMENTATION, EDGE):
        return label >= 0
    if kind == DEPTH:
        return label > 0
    if kind == NORMAL:
        return np.any(label != 0, axis=-1)
    raise ValueError(f"unknown task kind {kind!r}")


EDGE_CLASSES = ("background", "edge")

# The four tasks of the generated scenes (and of NYUD-v2 with its 13 classes swapped in).
SCENE_CLASSES = ("floor", "wall", "ceiling", "box", "sphere", "cylinder")
NYUV2_CLASSES = (
    "bed",
    "books",
    "ceiling",
    "chair",
    "floor",
    "furniture",
    "objects",
    "picture",
    "sofa",
    "table",
    "tv",
    "wall",
    "window",
)  # the 13-class NYUD-v2 set of Couprie et al. used by MTAN / MTPSL, in label-id order
CITYSCAPES7_CLASSES = (
    "flat",
    "construction",
    "object",
    "nature",
    "sky",
    "human",
    "vehicle",
)  # the 7 Cityscapes categories (void removed), as in MTAN's label_7
CITYSCAPES19_CLASSES = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)
PASCAL_CONTEXT_CLASSES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)  # the 21 classes ATRC / MTI-Net use for PASCAL-Context semseg
HUMAN_PARTS_CLASSES = (
    "background",
    "head",
    "torso",
    "upper arm",
    "lower arm",
    "upper leg",
    "lower leg",
)
SALIENCY_CLASSES = ("background", "salient")


def scene_tasks(classes: tuple[str, ...] = SCENE_CLASSES) -> tuple[TaskSpec, ...]:
    """semseg, depth, normal, edge: the task set of the generated scenes and of folder datasets."""
    return (
        TaskSpec("semseg", SEGMENTATION, tuple(classes)),
        TaskSpec("depth", DEPTH),
        TaskSpec("normal", NORMAL),
        TaskSpec("edge", EDGE, EDGE_CLASSES),
    )
