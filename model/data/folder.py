"""The project's own folder layout (what ``hitts generate`` writes and ``hitts export`` will write).

::

    ROOT/
      images/<stem>.png|.jpg|.jpeg      (``rgb/`` is accepted too)
      semseg/<stem>.png                 8- or 16-bit class ids (255 / 65535 = invalid)
      depth/<stem>.png | <stem>.npy     16-bit in units of depth_unit m (0 = invalid) | float metres
      normal/<stem>.png | <stem>.npy    RGB (n+1)/2*255 ((0,0,0) = invalid) | float (H, W, 3)
      edge/<stem>.png                   binary: 0/1 or 0/255
      classes.json                      {"semseg": ["floor", ...]} or a plain list; needed with semseg/
      splits/train.txt, splits/val.txt  optional, one stem per line; without them all images are train
      meta.json                         optional, e.g. {"depth_unit": 0.001}

Each image may have any subset of the label folders' files. A label file belongs to the image with
the same stem; where the stems differ by a prefix (``rgb_00050.jpg`` and ``sync_depth_00050.png``, as
in NYU Depth v2 dumps), the trailing number pairs them when it is unique in both folders. The task set
of the dataset is the set of label folders present.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from hitts.model.data.errors import BadInput
from hitts.model.data.label_io import DEFAULT_DEPTH_UNIT, read_image, read_label
from hitts.model.data.source import SPLITS, Example, Reader, SourceItem
from hitts.model.tasks import DEPTH, EDGE, EDGE_CLASSES, NORMAL, SEGMENTATION, TaskSpec

IMAGE_DIRS = ("images", "rgb")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
LABEL_SUFFIXES = {
    "semseg": (".png",),
    "depth": (".png", ".npy"),
    "normal": (".png", ".npy"),
    "edge": (".png",),
}
FOLDER_TASK_ORDER = ("semseg", "depth", "normal", "edge")
_TRAILING_NUMBER = re.compile(r"(\d+)$")


def _trailing_number(stem: str) -> str | None:
    m = _TRAILING_NUMBER.search(stem)
    return m.group(1) if m else None


def _index(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in suffixes and not p.name.startswith("."):
            if p.stem in files:
                raise BadInput(p, f"two files for stem {p.stem!r} ({files[p.stem].name}, {p.name})")
            files[p.stem] = p
    return files


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadInput(path, f"not readable JSON ({e})") from None


class FolderReader(Reader):
    """Reads the folder layout in the module docstring."""

    format_name = "folder"

    def __init__(self, root: str | Path):
        super().__init__(root)
        if not self.root.is_dir():
            raise BadInput(self.root, "not a folder")
        image_dirs = [self.root / d for d in IMAGE_DIRS if (self.root / d).is_dir()]
        if not image_dirs:
            raise BadInput(self.root, f"no image folder: expected one of {IMAGE_DIRS}/ inside it")
        self.image_dir = image_dirs[0]
        meta = self.root / "meta.json"
        self.meta = _read_json(meta) if meta.is_file() else {}
        if not isinstance(self.meta, dict):
            raise BadInput(meta, "expected a JSON object")
        self.depth_unit = float(self.meta.get("depth_unit", DEFAULT_DEPTH_UNIT))
        present = [t for t in FOLDER_TASK_ORDER if (self.root / t).is_dir()]
        if not present:
            raise BadInput(
                self.root, f"no label folder: expected at least one of {FOLDER_TASK_ORDER}"
            )
        tasks = []
        for name in present:
            if name == "semseg":
                tasks.append(TaskSpec("semseg", SEGMENTATION, self._semseg_classes()))
            elif name == "edge":
                tasks.append(TaskSpec("edge", EDGE, EDGE_CLASSES))
            else:
                tasks.append(TaskSpec(name, DEPTH if name == "depth" else NORMAL))
        self.tasks = tuple(tasks)

    def _semseg_classes(self) -> tuple[str, ...]:
        path = self.root / "classes.json"
        if not path.is_file():
            raise BadInput(
                path, "missing: a folder with semseg/ needs classes.json naming the classes"
            )
        data = _read_json(path)
        names = data.get("semseg") if isinstance(data, dict) else data
        if (
            not isinstance(names, list)
            or len(names) < 2
            or not all(isinstance(n, str) for n in names)
        ):
            raise BadInput(path, 'expected {"semseg": [at least 2 class names]} or a list of names')
        return tuple(names)

    def _splits(self, stems: list[str]) -> dict[str, str]:
        split_of = {s: "train" for s in stems}
        split_dir = self.root / "splits"
        if not split_dir.is_dir():
            return split_of
        known = set(stems)
        seen: dict[str, str] = {}
        for split in SPLITS:
            path = split_dir / f"{split}.txt"
            if not path.is_file():
                continue
            for line_no, line in enumerate(path.read_text().splitlines(), 1):
                stem = line.strip()
                if not stem:
                    continue
                if stem not in known:
                    raise BadInput(
                        path,
                        f"line {line_no}: no image with stem {stem!r} in {self.image_dir.name}/",
                    )
                if stem in seen and seen[stem] != split:
                    raise BadInput(
                        path, f"line {line_no}: {stem!r} is also listed in {seen[stem]}.txt"
                    )
                seen[stem] = split
                split_of[stem] = split
        return split_of

    def items(self) -> list[SourceItem]:
        images = _index(self.image_dir, IMAGE_SUFFIXES)
        if not images:
            raise BadInput(self.image_dir, f"no images ({', '.join(IMAGE_SUFFIXES)})")
        by_number: dict[str, str] = {}
        numbers = [_trailing_number(s) for s in images]
        for stem, num in zip(images, numbers, strict=False):
            if num is not None and numbers.count(num) == 1:
                by_number[num] = stem
        labels: dict[str, dict[str, Path]] = {s: {} for s in images}
        for task in self.tasks:
            files = _index(self.root / task.name, LABEL_SUFFIXES[task.name])
            file_numbers = [_trailing_number(s) for s in files]
            for (stem, path), num in zip(files.items(), file_numbers, strict=False):
                if stem in images:
                    target = stem
                elif num is not None and num in by_number and file_numbers.count(num) == 1:
                    target = by_number[num]
                else:
                    raise BadInput(
                        path, f"no image in {self.image_dir.name}/ matches this {task.name} label"
                    )
                labels[target][task.name] = path
        split_of = self._splits(list(images))
        return [
            SourceItem(key=stem, split=split_of[stem], image=path, labels=labels[stem])
            for stem, path in images.items()
        ]

    def load(self, item: SourceItem) -> Example:
        image = read_image(item.image)
        hw = image.shape[:2]
        labels = {
            name: read_label(self.task(name), path, hw, self.depth_unit)
            for name, path in item.labels.items()
        }
        return Example(
            key=item.key, split=item.split, image=image, labels=labels, image_path=item.image
        )
