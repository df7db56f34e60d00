"""``hitts retrain``: the paper's stage 2 with people in the loop (Sec. 4.1, "Training Pipeline").

A fresh model is trained from scratch on

- ``L_s`` (Eq. 5): ground truth plus the labels annotators accepted or fixed (now labelled; an
  accept of the confident region only leaves the rest invalid, and that label weighs its share of
  the image, as the same pixels did as a pseudo-label in ``L_p``: averaged over its few valid
  pixels, a 3% region would otherwise pull as hard as a whole image of ground truth);
- ``L_p`` (Eq. 7): the latest round's pseudo-labels inside ``M_p`` where a task is still
  unreviewed; rejected suggestions are excluded;
- ``L_f`` (Eq. 6): the latest round's model's task features, weighted by ``M_f`` where that model
  had no label (ground truth, or a review it was trained on); a label accepted after it was trained
  is no reason to trust its features there, so it keeps the ``M_f`` weighting.

The pseudo-labels and features are discovered again from the latest round's checkpoint on the clean
training images (the same model and images the stored suggestions came from). The new model is then
a new round: it suggests again for everything still missing, so the review page shows it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from fiftyone import ViewField as F
from torch import Tensor

from hitts.app import store
from hitts.app.review_store import ACCEPTED_CONFIDENT, source_field
from hitts.app.suggest import suggest
from hitts.app.training import split_set
from hitts.model.network import ModelConfig
from hitts.model.pipeline import train_stage2
from hitts.model.predictor import TorchPredictor
from hitts.model.recipe import thresholds_for
from hitts.model.tensor_set import TensorSet
from hitts.model.train import TrainConfig, load_checkpoint

log = logging.getLogger(__name__)


@dataclass
class RetrainReport:
    checkpoint: Path
    teacher_round: int
    new_round: int
    reviewed: int
    rejected: int
    metrics: dict


def _region_weights(data: TensorSet, regions: dict[str, set[str]]) -> Tensor:
    """(N, T) ``L_s`` weight of each label: the valid share of the image for an accepted confident
    region (the ``M_p`` weighting it had as a pseudo-label, Eq. 7), 1 for every other label."""
    weight = torch.ones(len(data), len(data.tasks))
    for j, t in enumerate(data.tasks):
        for i, key in enumerate(data.keys):
            if key in regions.get(t.name, ()):
                weight[i, j] = data.valid[t.name][i].float().mean()
    return weight


def retrain(
    name: str,
    out: Path | None = None,
    *,
    epochs: int | None = None,
    taus: dict[str, float] | None = None,
    seed: int | None = None,
    flip_features: bool = True,
    progress: bool = True,
) -> RetrainReport:
    """Stage 2 on the dataset's reviewed and suggested labels, then suggest with the new model.

    The new model is trained "from scratch" (Sec. 4.1) with ``seed``, by default the teacher's seed
    + 1: with the teacher's own seed it would start from the teacher's initial weights and see
    the batches in the teacher's order, and with ``L_f`` pulling it along, retrace the teacher.

    ``flip_features=False`` halves the memory the teacher's discovered features take (see
    :func:`hitts.model.pipeline.discovery_for`).

    Rerunning after an interruption resumes the training run in ``out`` (default:
    ``$HITTS_HOME/datasets/NAME/runs/round-<N+1>``).
    """
    ds = store.load_dataset(name)
    info = store.dataset_info(ds)
    rounds = ds.info[store.INFO_KEY].get("rounds", [])
    if not rounds:
        raise ValueError(f"dataset {name!r} has no suggestions yet: train, then run hitts suggest")
    last = rounds[-1]
    teacher = Path(last["checkpoint"])
    if not teacher.is_file():
        raise ValueError(
            f"{teacher}: the checkpoint of round {last['round']} is gone; cannot retrain from it"
        )
    state = load_checkpoint(teacher)
    train_view = ds.match(F("split") == "train")
    exclude: dict[str, set[str]] = {}  # key -> tasks whose suggestion was rejected
    labels: dict[str, list[str]] = {}  # task -> keys with a reviewed label this round trains on
    ground_truth: dict[str, set[str]] = {}
    regions: dict[str, set[str]] = {}  # task -> keys whose label is an accepted confident region
    schema = train_view.get_field_schema()
    keys = train_view.values("key")
    for t in info.tasks:  # one read of each task's review columns
        statuses = train_view.values(store.status_field(t.name))
        sources = (
            train_view.values(source_field(t.name))
            if source_field(t.name) in schema
            else [None] * len(keys)
        )
        rows = list(zip(keys, statuses, sources, strict=True))
        for key, status, _ in rows:
            if status == store.REJECTED:
                exclude.setdefault(key, set()).add(t.name)
        labels[t.name] = sorted(k for k, st, _ in rows if st in (store.ACCEPTED, store.FIXED))
        ground_truth[t.name] = {k for k, st, _ in rows if st == store.LABELED}
        regions[t.name] = {
            k for k, st, src in rows if st == store.ACCEPTED and src == ACCEPTED_CONFIDENT
        }
    reviewed = sum(len(v) for v in labels.values())
    rejected = sum(len(v) for v in exclude.values())
    if reviewed + rejected == 0:
        log.warning(
            "nothing in %r is reviewed yet: retraining on ground truth and the round-%d suggestions only",
            name,
            last["round"],
        )
    size = tuple(state["size"])
    train_set = split_set(name, "train", size, progress=progress, reviewed=True)
    if train_set is None:
        raise ValueError(f"dataset {name!r} has no train split")
    train_set = replace(train_set, label_weight=_region_weights(train_set, regions))
    val_set = split_set(name, "val", size, progress=progress)
    teacher_saw = state.get("extra", {}).get("reviewed_labels", {})
    seen = {t: ground_truth[t] | set(teacher_saw.get(t, ())) for t in ground_truth}
    teacher_labelled = torch.tensor(
        [[key in seen[t.name] for t in train_set.tasks] for key in train_set.keys], dtype=torch.bool
    ).reshape(len(train_set.keys), len(train_set.tasks))
    tau = thresholds_for(info.tasks, info.setting)
    for t in info.tasks:  # the τ the suggestions were made with, then the user's
        used = (
            train_view.distinct(f"{t.name}_tau") if f"{t.name}_tau" in ds.get_field_schema() else []
        )
        if used:
            tau[t.name] = float(used[-1])
    tau.update(taus or {})
    old = state["train_config"]
    cfg = TrainConfig(
        stage=2,
        epochs=epochs or old["epochs"],
        batch_size=old["batch_size"],
        lr=old["lr"],
        seed=int(old["seed"]) + 1 if seed is None else seed,
        thresholds=tau,
    )
    model_cfg = ModelConfig.from_dict(state["model_config"])
    new_round = int(last["round"]) + 1
    out = Path(out or store.files_dir(name) / "runs" / f"round-{new_round}")
    metrics = train_stage2(
        teacher,
        cfg,
        model_cfg,
        train_set,
        val_set,
        out,
        resume=True,
        progress=progress,
        extra={
            "dataset": name,
            "round": new_round,
            "teacher_round": last["round"],
            "reviewed_labels": labels,
        },
        exclude=exclude,
        teacher_labelled=teacher_labelled,
        flip_features=flip_features,
    )
    checkpoint = out / "last.pt"
    done = suggest(name, TorchPredictor(checkpoint), checkpoint, progress=progress)
    return RetrainReport(checkpoint, int(last["round"]), done.round, reviewed, rejected, metrics)
