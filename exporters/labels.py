"""Completed labels out, in three layouts, written atomically as a whole.

- ``folder``: the project's own layout (what ``hitts ingest --format folder`` reads): ``images/``,
  ``<task>/`` label PNGs in the encodings of :mod:`hitts.model.data.label_io`, ``valid/<task>/``
  validity PNGs (255 = valid), ``classes.json``, ``splits/``, ``meta.json``.
- ``fiftyone-segmentation``: FiftyOne's ``ImageSegmentationDirectory`` (``data/`` + ``labels/``)
  for one segmentation task; 255 marks pixels without a label.
- ``nyuv2-mtan``: ``{train,val}/{image,label,depth,normal}/{i}.npy`` as the public NYUD-v2
  benchmarks read it (image float [0, 1], label -1 invalid, depth (H, W, 1) 0 invalid, normals
  all-zero invalid).

Every layout gets ``manifest.json``: per sample and task where the label came from (ground truth,
accepted, accepted-confident, fixed, pseudo), the reviewer and the model round. The export is
written into a temporary sibling folder and renamed into place at the end, so ``out`` never holds
a half-written or mixed export; an existing ``out`` is refused unless ``overwrite`` is set, and then
replaced whole. File names come from :func:`safe_stem`, never straight from the dataset, and every
path is checked to lie inside the export folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hitts.model.data.label_io import encode_label, read_image, write_npy, write_png
from hitts.model.tasks import DEPTH, NORMAL, SEGMENTATION, TaskSpec, valid_mask

FORMATS = ("folder", "fiftyone-segmentation", "nyuv2-mtan")
MTAN_TASKS = {"semseg": "label", "depth": "depth", "normal": "normal"}


@dataclass
class ExportItem:
    """One image with its completed labels (canonical form) and where each came from."""

    key: str
    split: str
    image_path: Path
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    sources: dict[str, dict] = field(default_factory=dict)


class ExportError(ValueError):
    """The export cannot be written; nothing at ``out`` was changed."""


def safe_stem(key: str, used: set[str]) -> str:
    """A file stem from a dataset key that cannot leave its folder and is unique in ``used``."""
    stem = re.sub(r"[^A-Za-z0-9._-]+|\.{2,}", "_", key).strip("._-")[:120] or "item"
    base, n = stem, 1
    while stem in used:
        n += 1
        stem = f"{base}_{n}"
    used.add(stem)
    return stem


def _inside(root: Path, path: Path) -> Path:
    if not path.resolve().is_relative_to(root.resolve()):
        raise ExportError(f"{path}: refusing to write outside the export folder {root}")
    return path


def check_target(out: Path, overwrite: bool) -> None:
    """Fail early, before any work, when ``out`` cannot receive an export."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out}: exists and is a file; choose a folder")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ExportError(f"{out}: exists and is not empty; pass --overwrite to replace it whole")
    parent = out.parent if out.parent != Path("") else Path(".")
    parent.mkdir(parents=True, exist_ok=True)
    if not os.access(parent, os.W_OK):
        raise ExportError(f"{parent}: not writable")


def export_labels(
    items: Iterable[ExportItem],
    out: Path,
    fmt: str,
    tasks: tuple[TaskSpec, ...],
    *,
    depth_unit: float = 0.001,
    overwrite: bool = False,
    task: str | None = None,
    extra_manifest: dict | None = None,
) -> dict:
    """Write ``items`` to ``out`` in ``fmt``; returns the manifest.

    Args:
        task: The segmentation task for ``fiftyone-segmentation`` (default: the first one).
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; expected one of {FORMATS}")
    out = Path(out)
    check_target(out, overwrite)
    if fmt == "fiftyone-segmentation":
        seg = [t for t in tasks if t.kind == SEGMENTATION and (task is None or t.name == task)]
        if not seg:
            raise ExportError(
                f"no segmentation task {task or ''} to export; tasks: {[t.name for t in tasks]}"
            )
        tasks = (seg[0],)
    if fmt == "nyuv2-mtan":
        tasks = tuple(t for t in tasks if t.name in MTAN_TASKS)
        if not tasks:
            raise ExportError(
                "nyuv2-mtan holds semseg, depth and normal; the dataset has none of them"
            )
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        manifest = _write(items, tmp, fmt, tasks, depth_unit)
        manifest.update(extra_manifest or {})
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _swap_into_place(tmp: Path, out: Path) -> None:
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write(items: Iterable[ExportItem], root: Path, fmt: str, tasks, depth_unit: float) -> dict:
    used: set[str] = set()
    per_split_index: dict[str, int] = {}
    samples = []
    splits: dict[str, list[str]] = {}
    for item in items:
        if fmt == "nyuv2-mtan":
            i = per_split_index.get(item.split, 0)
            per_split_index[item.split] = i + 1
            stem = str(i)
        else:
            stem = safe_stem(item.key, used)
        files = {}
        if fmt == "folder":
            files = _write_folder(root, stem, item, tasks, depth_unit)
        elif fmt == "fiftyone-segmentation":
            files = _write_segdir(root, stem, item, tasks[0])
        else:
            files = _write_mtan(root, stem, item, tasks)
        splits.setdefault(item.split, []).append(stem)
        samples.append(
            {
                "key": item.key,
                "split": item.split,
                "stem": stem,
                "files": files,
                "labels": {t: item.sources[t] for t in item.labels if t in {x.name for x in tasks}},
            }
        )
    if fmt == "folder":
        (root / "classes.json").write_text(
            json.dumps({t.name: list(t.classes) for t in tasks if t.kind == SEGMENTATION})
        )
        (root / "meta.json").write_text(json.dumps({"depth_unit": depth_unit}))
        (root / "splits").mkdir(exist_ok=True)
        for split, stems in splits.items():
            (root / "splits" / f"{split}.txt").write_text("".join(s + "\n" for s in stems))
    return {
        "format": fmt,
        "tasks": [t.to_dict() for t in tasks],
        "depth_unit": depth_unit,
        "samples": samples,
    }


def _copy_image(root: Path, folder: str, stem: str, src: Path) -> str:
    dest = _inside(root, root / folder / f"{stem}{src.suffix.lower()}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    return str(dest.relative_to(root))


def _write_folder(root: Path, stem: str, item: ExportItem, tasks, depth_unit: float) -> dict:
    files = {"image": _copy_image(root, "images", stem, item.image_path)}
    for t in tasks:
        label = item.labels.get(t.name)
        if label is None:
            continue
        path = _inside(root, root / t.name / f"{stem}.png")
        write_png(path, encode_label(t, label, depth_unit))
        valid = _inside(root, root / "valid" / t.name / f"{stem}.png")
        write_png(valid, valid_mask(t.kind, label).astype(np.uint8) * 255)
        files[t.name] = str(path.relative_to(root))
        files[f"valid/{t.name}"] = str(valid.relative_to(root))
    return files


def _write_segdir(root: Path, stem: str, item: ExportItem, task: TaskSpec) -> dict:
    label = item.labels.get(task.name)
    if label is None:
        return {}
    files = {"image": _copy_image(root, "data", stem, item.image_path)}
    path = _inside(root, root / "labels" / f"{stem}.png")
    write_png(path, encode_label(task, label))
    files[task.name] = str(path.relative_to(root))
    return files


def _write_mtan(root: Path, stem: str, item: ExportItem, tasks) -> dict:
    image = read_image(item.image_path).astype(np.float32) / 255.0
    files = {}
    path = _inside(root, root / item.split / "image" / f"{stem}.npy")
    write_npy(path, image)
    files["image"] = str(path.relative_to(root))
    hw = image.shape[:2]
    for t in tasks:
        label = item.labels.get(t.name)
        if label is None:  # the layout needs every file: an all-invalid array marks "no label"
            label = _invalid(t, hw)
        if t.kind == SEGMENTATION:
            arr = label.astype(np.float32)  # -1 invalid
        elif t.kind == DEPTH:
            arr = label.astype(np.float32)[..., None]  # (H, W, 1), 0 invalid
        elif t.kind == NORMAL:
            arr = label.astype(np.float32)
        else:
            continue
        path = _inside(root, root / item.split / MTAN_TASKS[t.name] / f"{stem}.npy")
        write_npy(path, arr)
        files[t.name] = str(path.relative_to(root))
    return files


def _invalid(task: TaskSpec, hw: tuple[int, int]) -> np.ndarray:
    if task.kind == NORMAL:
        return np.zeros((*hw, 3), np.float32)
    if task.kind == DEPTH:
        return np.zeros(hw, np.float32)
    return np.full(hw, -1, np.int64)
