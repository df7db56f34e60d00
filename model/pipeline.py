"""Stage 1 -> discovery -> stage 2 on in-memory splits, and building those splits from a source.

The app layer builds the splits from FiftyOne (:mod:`hitts.app.training`); benchmarks and tests
can build them straight from a source folder with :func:`splits_from_source`, no database needed.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from torch import Tensor

from hitts.model.data.formats import open_reader
from hitts.model.data.settings import draw_kept, parse_setting
from hitts.model.data.torch_dataset import LabelledImage, MultiTaskDataset
from hitts.model.discover import discover, load_discovery, save_discovery
from hitts.model.network import ModelConfig
from hitts.model.quantize import Quantizer
from hitts.model.tensor_set import TensorSet, load_tensor_set
from hitts.model.train import (
    TrainConfig,
    load_checkpoint,
    model_from_checkpoint,
    pick_device,
    train,
)


def splits_from_source(
    root: str | Path,
    *,
    fmt: str = "folder",
    setting: str = "full",
    seed: int = 0,
    size: tuple[int, int] | None = None,
    progress: bool = False,
) -> tuple[TensorSet, TensorSet]:
    """(train, val) of a source, the train labels thinned by ``setting`` (val keeps all)."""
    reader = open_reader(fmt, root)
    items = reader.items()
    kept = draw_kept(parse_setting(setting, tuple(t.name for t in reader.tasks)), items, seed)
    sets = []
    for split in ("train", "val"):
        records = [
            LabelledImage(
                it.key, it.image, {t: p for t, p in it.labels.items() if t in kept[it.key]}
            )
            for it in items
            if it.split == split
        ]
        ds = MultiTaskDataset(records, reader.tasks, size=size, depth_unit=reader.depth_unit)
        sets.append(load_tensor_set(ds, progress=progress))
    return sets[0], sets[1]


def discovery_for(
    teacher: Path,
    data: TensorSet,
    out: Path,
    *,
    sharpen: float = 1.0,
    flip_features: bool = True,
    progress: bool = False,
) -> dict:
    """Load ``out`` if it holds this teacher's discovery on these images, else make and save it.

    ``flip_features=False`` skips the teacher's pass over the flipped images, which halves the
    memory the discovered features take; flipped training images are then pulled towards the
    mirrored features of the originals, a poorer target (see :mod:`hitts.model.discover`)."""
    if out.exists():
        found = load_discovery(out)
        if (
            found["meta"].get("teacher") == str(teacher)
            and found["keys"] == data.keys
            and (found["meta"].get("hflip_features", False) or not flip_features)
        ):
            return found
    state = load_checkpoint(teacher)
    model, quantizers, _ = model_from_checkpoint(state)
    model.to(pick_device())
    found = discover(
        model, quantizers, data, sharpen=sharpen, hflip_features=flip_features, progress=progress
    )
    cfg = state["model_config"]
    meta = {
        "teacher": str(teacher),
        "kind": cfg["kind"],
        "use_global": cfg.get("use_global", True),
        "hflip_features": flip_features,
    }
    save_discovery(out, found, data.keys, meta)
    return load_discovery(out)


def train_stage2(
    teacher: Path,
    cfg: TrainConfig,
    model_cfg: ModelConfig,
    train_set: TensorSet,
    val_set: TensorSet | None,
    out: Path,
    *,
    resume: bool = False,
    progress: bool = True,
    extra: dict | None = None,
    exclude: dict[str, set[str]] | None = None,
    teacher_labelled: Tensor | None = None,
    flip_features: bool = True,
) -> dict:
    """A fresh model on L_s + L_p + L_f with the teacher's discovery (the teacher's bins too).

    Args:
        exclude: Image key -> tasks whose pseudo-label must not be used (e.g. rejected by an
            annotator): their confidence is set to 0, so ``M_p`` is empty there.
        teacher_labelled: Optional (N, T) bool, tasks in ``train_set.tasks`` order: where the
            teacher was trained on a label of that image and task. Eq. 6 trusts the teacher's
            features at every pixel of a labelled task "since they are supervised by ground-truth
            label"; a label the teacher never saw (an annotator accepted or fixed its suggestion
            afterwards) counts as labelled for ``L_s`` but keeps the ``M_f`` weighting in ``L_f``.
            Default: ``train_set.present`` (the paper's stage 2, where the two agree).
        flip_features: Also discover the teacher's features of the flipped images (see
            :func:`discovery_for`); False halves the memory the features take.
    """
    out.mkdir(parents=True, exist_ok=True)
    state = load_checkpoint(teacher)
    quantizers = {n: Quantizer.from_dict(d) for n, d in state["quantizers"].items()}
    found = discovery_for(
        teacher, train_set, out / "discovery.pt", flip_features=flip_features, progress=progress
    )
    if exclude:
        index = {k: i for i, k in enumerate(train_set.keys)}
        for key, tasks in exclude.items():
            for t in tasks:
                if key in index and t in found["tasks"]:
                    found["tasks"][t]["confidence"][index[key]] = 0
    if teacher_labelled is not None:
        if teacher_labelled.shape != train_set.present.shape:
            raise ValueError(
                f"teacher_labelled must be {tuple(train_set.present.shape)}, "
                f"got {tuple(teacher_labelled.shape)}"
            )
        found["teacher_labelled"] = teacher_labelled.bool()
    cfg = replace(cfg, stage=2)
    return train(
        cfg,
        model_cfg,
        quantizers,
        train_set,
        val_set,
        out,
        discovery=found,
        resume=resume,
        progress=progress,
        extra=extra,
    )
