"""What every dataset reader gives: a cheap listing of items, and a checked load of one item.

A reader never touches FiftyOne; the ingest in :mod:`hitts.app.ingest` turns what it yields into
samples. Listing is cheap (paths only) so that the partial-label settings can be drawn over the
whole source before anything is read; loading reads and checks one item and raises
:class:`~hitts.model.data.errors.BadInput` naming the file when something is wrong.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hitts.model.tasks import TaskSpec

SPLITS = ("train", "val")


@dataclass(frozen=True)
class SourceItem:
    """One image of a source and the label files it has.

    Attributes:
        key: Stable id inside the source, unique, e.g. ``"train/0007"``. Ingest uses it to stay
            idempotent and the settings use it to draw reproducibly.
        split: ``"train"`` or ``"val"``.
        image: The image file.
        labels: Task name -> label file, for the tasks this image has.
        extra: Reader-specific data needed by ``load`` (e.g. an index into a ``.mat`` file).
    """

    key: str
    split: str
    image: Path
    labels: dict[str, Path] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.labels)


@dataclass
class Example:
    """One loaded, checked image with its labels in canonical form (see :mod:`hitts.model.tasks`).

    Attributes:
        key: As in :class:`SourceItem`.
        split: As in :class:`SourceItem`.
        image: (H, W, 3) uint8 RGB.
        labels: Task name -> canonical label array.
        image_path: The original file when it is an image FiftyOne can show as it is (PNG/JPEG);
            ``None`` when the image has to be written out (e.g. it came from a ``.npy``).
    """

    key: str
    split: str
    image: np.ndarray
    labels: dict[str, np.ndarray]
    image_path: Path | None = None

    @property
    def hw(self) -> tuple[int, int]:
        return self.image.shape[0], self.image.shape[1]


class Reader(ABC):
    """A dataset layout on disk.

    Subclasses set :attr:`format_name`, build :attr:`tasks` in ``__init__`` (raising
    :class:`BadInput` for a root that is not in their layout) and implement the two methods.
    """

    format_name: str = ""
    tasks: tuple[TaskSpec, ...] = ()
    depth_unit: float = (
        0.001  # metres per count of the depth files this source's labels are stored with
    )

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @abstractmethod
    def items(self) -> list[SourceItem]:
        """All items, sorted by key. Missing folders raise BadInput; missing files show up in load."""

    @abstractmethod
    def load(self, item: SourceItem) -> Example:
        """Read and check one item; raises BadInput naming the file on any problem."""

    def task(self, name: str) -> TaskSpec:
        for t in self.tasks:
            if t.name == name:
                return t
        raise KeyError(
            f"{self.format_name} has no task {name!r}; it has {[t.name for t in self.tasks]}"
        )
