"""Training and evaluation on a FiftyOne dataset: the glue between the store and ``hitts.model``."""

from __future__ import annotations

import logging
from pathlib import Path

import fiftyone as fo
import torch.distributed as dist
from fiftyone import ViewField as F

from hitts.app import store
from hitts.model.data.torch_dataset import MultiTaskDataset
from hitts.model.evaluate import evaluate
from hitts.model.network import ModelConfig
from hitts.model.pipeline import train_stage2
from hitts.model.recipe import fit_quantizers, thresholds_for
from hitts.model.tasks import TaskSpec
from hitts.model.tensor_set import TensorSet, load_tensor_set
from hitts.model.train import (
    TrainConfig,
    init_distributed,
    load_checkpoint,
    model_from_checkpoint,
    pick_device,
    train,
)

log = logging.getLogger(__name__)


def image_size(view: fo.DatasetView | fo.Dataset) -> tuple[int, int]:
    """The (H, W) all images of ``view`` share; ValueError when they differ."""
    sizes = set(zip(view.values("metadata.height"), view.values("metadata.width"), strict=False))
    if len(sizes) != 1:
        raise ValueError(
            f"images have {len(sizes)} different sizes; pass --size HxW to resize them"
        )
    return sizes.pop()


def split_set(
    name: str,
    split: str,
    size: tuple[int, int] | None,
    *,
    progress: bool = True,
    reviewed: bool = False,
) -> TensorSet | None:
    """The split's images with their visible ground truth in memory; None if the split is empty.

    Args:
        reviewed: Count accepted and fixed suggestions as labels too.
    """
    ds = store.load_dataset(name)
    info = store.dataset_info(ds)
    view = ds.match(F("split") == split).sort_by("key")
    if len(view) == 0:
        return None
    records = store.labelled_images(view, [t.name for t in info.tasks], reviewed=reviewed)
    data = MultiTaskDataset(
        records, info.tasks, size=size or image_size(view), depth_unit=info.depth_unit
    )
    return load_tensor_set(data, progress=progress)


def check_tasks(
    ckpt_tasks: tuple[TaskSpec, ...], data_tasks: tuple[TaskSpec, ...], what: str
) -> None:
    if tuple(ckpt_tasks) != tuple(data_tasks):
        raise ValueError(
            f"{what} was trained on tasks {[(t.name, t.num_classes) for t in ckpt_tasks]}, but the "
            f"dataset has {[(t.name, t.num_classes) for t in data_tasks]}"
        )


def train_on_dataset(
    name: str,
    out: Path,
    cfg: TrainConfig,
    model_cfg_args: dict,
    *,
    teacher: Path | None = None,
    size: tuple[int, int] | None = None,
    resume: bool = False,
    flip_features: bool = True,
    progress: bool = True,
) -> dict:
    """Stage 1 (no teacher) or stage 2 (a stage-1 checkpoint as teacher) on dataset ``name``.

    Args:
        model_cfg_args: ModelConfig fields other than ``outputs`` (taken from the bins).
        flip_features: Stage 2: discover the teacher's features of the flipped images too
            (False halves the memory the features take; see
            :func:`hitts.model.pipeline.discovery_for`).
    """
    rank, world = init_distributed()
    if world > 1 and rank > 0:
        dist.barrier()  # let rank 0 start the embedded database alone; the others then share it
    ds = store.load_dataset(name)
    if world > 1 and rank == 0:
        dist.barrier()
    info = store.dataset_info(ds)
    train_set = split_set(name, "train", size, progress=progress)
    if train_set is None:
        raise ValueError(f"dataset {name!r} has no train split")
    if not bool(train_set.present.any()):
        raise ValueError(f"dataset {name!r} has no labelled training image")
    val_set = split_set(name, "val", train_set.hw, progress=progress)
    if val_set is None:
        log.warning("dataset %r has no val split: no validation metrics", name)
    extra = {"dataset": name}
    if not cfg.thresholds:
        cfg.thresholds = thresholds_for(info.tasks, info.setting)
    unknown = set(cfg.thresholds) - {t.name for t in info.tasks}
    if unknown:
        raise ValueError(
            f"--tau names unknown task(s) {sorted(unknown)}; tasks: {[t.name for t in info.tasks]}"
        )
    if teacher is None:
        quantizers = fit_quantizers(train_set, seed=cfg.seed)
        model_cfg = ModelConfig(
            outputs={n: q.num_bins for n, q in quantizers.items()}, **model_cfg_args
        )
        return train(
            cfg,
            model_cfg,
            quantizers,
            train_set,
            val_set,
            out,
            resume=resume,
            progress=progress,
            extra=extra,
        )
    state = load_checkpoint(teacher)
    check_tasks(tuple(TaskSpec.from_dict(d) for d in state["tasks"]), info.tasks, str(teacher))
    outputs = {n: d["num_bins"] for n, d in state["quantizers"].items()}
    model_cfg = ModelConfig(outputs=outputs, **model_cfg_args)
    return train_stage2(
        teacher,
        cfg,
        model_cfg,
        train_set,
        val_set,
        out,
        resume=resume,
        progress=progress,
        extra=extra,
        flip_features=flip_features,
    )


def evaluate_checkpoint(
    name: str, checkpoint: Path, split: str = "val", *, progress: bool = True
) -> dict:
    """Task -> metrics of the checkpoint on the split's ground truth."""
    state = load_checkpoint(checkpoint)
    model, quantizers, tasks = model_from_checkpoint(state)
    info = store.dataset_info(store.load_dataset(name))
    check_tasks(tasks, info.tasks, str(checkpoint))
    data = split_set(name, split, tuple(state["size"]), progress=progress)
    if data is None:
        raise ValueError(f"dataset {name!r} has no {split!r} samples")
    model.to(pick_device())
    return evaluate(model, quantizers, data)
