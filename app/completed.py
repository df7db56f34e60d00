"""The completed label of a sample and task: what export writes and retraining learns from.

In order of precedence:

1. ``gt_<task>``: ground truth that came in (source ``ground-truth``);
2. an annotator's decision, ``final_<task>`` when the status is ``accepted`` or ``fixed`` (source
   ``accepted``, ``accepted-confident`` or ``fixed``, as the review recorded it);
3. optionally, an unreviewed suggestion restricted to its confident mask ``M_p`` (source
   ``pseudo``).

Rejected suggestions give nothing.
"""

from __future__ import annotations

from pathlib import Path

import fiftyone as fo
import numpy as np
from PIL import Image

from hitts.app import store
from hitts.model.data.label_io import read_label
from hitts.model.tasks import NORMAL, TaskSpec

GROUND_TRUTH, PSEUDO = "ground-truth", "pseudo"


def final_field(task: str) -> str:
    """The label an annotator's decision leaves for training (with its validity in the array)."""
    return f"final_{task}"


def _get(sample: fo.Sample, name: str):
    return sample[name] if sample.has_field(name) else None


def label_path(label) -> Path:
    return Path(getattr(label, "map_path", None) or label.mask_path)


def completed_label(
    sample: fo.Sample,
    task: TaskSpec,
    depth_unit: float,
    *,
    include_pseudo: bool = False,
) -> tuple[np.ndarray, dict] | None:
    """(canonical label, provenance) or None when the sample has no usable label for ``task``."""
    hw = (sample.metadata.height, sample.metadata.width) if sample.metadata else None
    gt = _get(sample, store.gt_field(task.name))
    if gt is not None:
        return read_label(task, label_path(gt), hw, depth_unit), {"source": GROUND_TRUTH}
    status = _get(sample, store.status_field(task.name))
    meta = {
        "reviewer": _get(sample, f"{task.name}_reviewed_by"),
        "round": _get(sample, f"{task.name}_round"),
    }
    final = _get(sample, final_field(task.name))
    if status in (store.ACCEPTED, store.FIXED) and final is not None:
        source = _get(sample, f"final_{task.name}_source") or status
        return read_label(task, label_path(final), hw, depth_unit), {"source": source, **meta}
    pred = _get(sample, store.pred_field(task.name))
    if include_pseudo and status == store.SUGGESTED and pred is not None:
        label = read_label(task, label_path(pred), hw, depth_unit)
        confident = np.asarray(Image.open(label_path(_get(sample, store.mp_field(task.name))))) > 0
        if task.kind == NORMAL:
            label[~confident] = 0
        elif task.is_classification:
            label[~confident] = -1
        else:
            label[~confident] = 0
        return label, {"source": PSEUDO, **meta}
    return None
