"""The FiftyOne store: the one layer that touches FiftyOne for datasets, fields and status.

Per sample (DESIGN.md, "Data model"):

- ``filepath``: the image; ``key``: its id inside the source (unique, indexed); ``split`` and the
  same split as a tag.
- ``gt_<task>``: ground truth that came in and is visible to training; ``hidden_<task>``: ground
  truth a partial-label setting hid, kept to score suggestions later.
- ``<task>_status``: ``labeled`` | ``missing`` | ``suggested`` | ``accepted`` | ``fixed`` | ``rejected``.
- Suggestions (for tasks a sample lacks): ``pred_<task>``, ``conf_<task>``, ``mp_<task>``,
  ``mf_<task>``, ``fine_<task>``; ``<task>_confidence`` (mean confidence), ``<task>_coverage``
  (share of pixels in M_p), ``<task>_tau``, ``<task>_round`` and ``<task>_checkpoint``.

Label arrays live as PNG files under ``$HITTS_HOME/datasets/<name>/<field>/`` (``HITTS_HOME``
defaults to ``~/.hitts``), written atomically, in the encodings of
:mod:`hitts.model.data.label_io`. Segmentation-like tasks and normals are ``fo.Segmentation``
(normals as an RGB mask), depth is ``fo.Heatmap`` over the 16-bit PNG. The dataset's ``info["hitts"]``
records the task specs, the depth unit, the source format and the setting.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import fiftyone as fo
import numpy as np

from hitts.model.data.label_io import encode_label, write_png
from hitts.model.data.torch_dataset import LabelledImage
from hitts.model.tasks import DEPTH, TaskSpec

log = logging.getLogger(__name__)

LABELED, MISSING, SUGGESTED, ACCEPTED, FIXED, REJECTED = (
    "labeled",
    "missing",
    "suggested",
    "accepted",
    "fixed",
    "rejected",
)
STATUSES = (LABELED, MISSING, SUGGESTED, ACCEPTED, FIXED, REJECTED)
INFO_KEY = "hitts"
SCHEMA_VERSION = 1
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def gt_field(task: str) -> str:
    return f"gt_{task}"


def hidden_field(task: str) -> str:
    return f"hidden_{task}"


def status_field(task: str) -> str:
    return f"{task}_status"


def pred_field(task: str) -> str:
    """The latest suggestion (pseudo-label)."""
    return f"pred_{task}"


def conf_field(task: str) -> str:
    """Per-pixel confidence of the suggestion (max softmax), a heatmap in [0, 255]."""
    return f"conf_{task}"


def mp_field(task: str) -> str:
    """The confident mask M_p (Eq. 7): 1 where the confidence exceeds τ."""
    return f"mp_{task}"


def mf_field(task: str) -> str:
    """The global-token score map M_f (Sec. 3.3), a heatmap in [0, 255]."""
    return f"mf_{task}"


def fine_field(task: str) -> str:
    """The fine-grained token score map (Eq. 4), a heatmap scaled to [0, 255] per image."""
    return f"fine_{task}"


def hitts_home() -> Path:
    return Path(os.environ.get("HITTS_HOME", Path.home() / ".hitts")).expanduser()


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(
            f"dataset name {name!r} is not allowed: use letters, digits, '.', '_' and '-' "
            "(at most 100 characters, starting with a letter or digit)"
        )
    return name


def files_dir(name: str) -> Path:
    """Where the dataset's label arrays live."""
    return hitts_home() / "datasets" / check_name(name)


def slug(key: str) -> str:
    """A file-name-safe, unique stand-in for a source key."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("._")[-60:] or "item"
    return f"{safe}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class DatasetInfo:
    """What ``info["hitts"]`` holds."""

    tasks: tuple[TaskSpec, ...]
    depth_unit: float
    source_format: str
    setting: str
    seed: int

    def to_dict(self) -> dict:
        return {
            "schema_version": SCHEMA_VERSION,
            "tasks": [t.to_dict() for t in self.tasks],
            "depth_unit": self.depth_unit,
            "source_format": self.source_format,
            "setting": self.setting,
            "seed": self.seed,
        }

    @classmethod
    def from_dict(cls, d: dict) -> DatasetInfo:
        return cls(
            tasks=tuple(TaskSpec.from_dict(t) for t in d["tasks"]),
            depth_unit=float(d["depth_unit"]),
            source_format=d["source_format"],
            setting=d["setting"],
            seed=int(d["seed"]),
        )

    def task(self, name: str) -> TaskSpec:
        for t in self.tasks:
            if t.name == name:
                return t
        raise KeyError(f"no task {name!r}; the dataset has {[t.name for t in self.tasks]}")


# ----------------------------------------------------------------------------------------------
# datasets


def load_dataset(name: str) -> fo.Dataset:
    """An existing dataset made by this tool; ValueError naming what exists otherwise."""
    if not fo.dataset_exists(name):
        known = [n for n in fo.list_datasets()]
        raise ValueError(f"no dataset named {name!r}; existing datasets: {known or 'none'}")
    ds = fo.load_dataset(name)
    if INFO_KEY not in ds.info:
        raise ValueError(f"dataset {name!r} was not made by hitts ingest (no info[{INFO_KEY!r}])")
    return ds


def dataset_info(ds: fo.Dataset) -> DatasetInfo:
    return DatasetInfo.from_dict(ds.info[INFO_KEY])


def open_or_create(name: str, info: DatasetInfo) -> fo.Dataset:
    """Create the dataset, or open it and check it was made with the same tasks and setting."""
    check_name(name)
    if fo.dataset_exists(name):
        ds = load_dataset(name)
        old = dataset_info(ds)
        for field in ("tasks", "depth_unit", "source_format", "setting", "seed"):
            if getattr(old, field) != getattr(info, field):
                raise ValueError(
                    f"dataset {name!r} exists with {field}={getattr(old, field)!r}, not "
                    f"{getattr(info, field)!r}; ingest into a new name to change it"
                )
        return ds
    ds = fo.Dataset(name)
    ds.persistent = True
    ds.info[INFO_KEY] = info.to_dict()
    targets = {}
    for t in info.tasks:
        if t.is_classification:
            names = {i: c for i, c in enumerate(t.classes)}
            targets[gt_field(t.name)] = names
            targets[hidden_field(t.name)] = names
    ds.mask_targets = targets
    ds.save()
    ds.add_sample_field("key", fo.StringField)
    ds.add_sample_field("split", fo.StringField)
    ds.create_index("key", unique=True)
    ds.create_index("split")
    for t in info.tasks:
        ds.add_sample_field(status_field(t.name), fo.StringField)
        ds.create_index(status_field(t.name))
    return ds


def existing_keys(ds: fo.Dataset) -> set[str]:
    return set(ds.distinct("key"))


def label_object(task: TaskSpec, path: Path, label: np.ndarray, depth_unit: float):
    """The FiftyOne label that points at a stored array."""
    if task.kind == DEPTH:
        top = float(label.max(initial=0.0)) / depth_unit
        return fo.Heatmap(map_path=str(path), range=[0.0, max(top, 1.0)])
    return fo.Segmentation(mask_path=str(path))


def write_label_file(
    name: str, field: str, key: str, task: TaskSpec, label: np.ndarray, depth_unit: float
) -> Path:
    path = files_dir(name) / field / f"{slug(key)}.png"
    write_png(path, encode_label(task, label, depth_unit))
    return path


def write_image_file(name: str, key: str, image: np.ndarray) -> Path:
    path = files_dir(name) / "images" / f"{slug(key)}.png"
    write_png(path, image)
    return path


def add_samples(ds: fo.Dataset, samples: list[fo.Sample]) -> None:
    if samples:
        ds.add_samples(samples, progress=False)


# ----------------------------------------------------------------------------------------------
# reading back


@dataclass
class StatusReport:
    name: str
    num_samples: int
    splits: dict[str, int]
    tasks: dict[str, dict[str, int]]  # task -> status -> count
    setting: str
    source_format: str

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "num_samples": self.num_samples,
            "splits": self.splits,
            "tasks": self.tasks,
            "setting": self.setting,
            "source_format": self.source_format,
        }


def status_report(name: str) -> StatusReport:
    ds = load_dataset(name)
    info = dataset_info(ds)
    tasks = {}
    for t in info.tasks:
        counts = ds.count_values(status_field(t.name))
        tasks[t.name] = {s: int(counts.get(s, 0)) for s in STATUSES}
    splits = {
        str(k): int(v)
        for k, v in sorted(ds.count_values("split").items(), key=lambda kv: str(kv[0]))
    }
    return StatusReport(name, len(ds), splits, tasks, info.setting, info.source_format)


def labelled_images(
    view: fo.DatasetView | fo.Dataset, tasks: Iterable[str], *, reviewed: bool = False
) -> list[LabelledImage]:
    """Image and label paths of every sample in ``view``, for training.

    Args:
        reviewed: Also count an annotator's accepted or fixed label (``final_<task>``) as a label
            where the sample has no ground truth for the task.
    """
    tasks = list(tasks)
    keys, filepaths = view.values(["key", "filepath"])
    gt_paths = [_paths(view, gt_field(t)) for t in tasks]
    final_paths = [_paths(view, f"final_{t}") if reviewed else None for t in tasks]
    statuses = [view.values(status_field(t)) if reviewed else None for t in tasks]
    out = []
    for i, (key, fp) in enumerate(zip(keys, filepaths, strict=True)):
        labels = {}
        for j, t in enumerate(tasks):
            if gt_paths[j] and gt_paths[j][i]:
                labels[t] = Path(gt_paths[j][i])
            elif final_paths[j] and final_paths[j][i] and statuses[j][i] in (ACCEPTED, FIXED):
                labels[t] = Path(final_paths[j][i])
        out.append(LabelledImage(key=key, image=Path(fp), labels=labels))
    return out


def _paths(view, field: str) -> list[str | None] | None:
    """The file path of label ``field`` of every sample (None where absent); None if no such field."""
    schema = view.get_field_schema()
    if field not in schema:
        return None
    doc_type = getattr(schema[field], "document_type", None)
    return view.values(f"{field}.map_path" if doc_type is fo.Heatmap else f"{field}.mask_path")
