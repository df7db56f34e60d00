"""Suggestions for every task a sample lacks, written to the FiftyOne store (DESIGN.md step 3).

For each sample and each task whose status is ``missing`` (or ``suggested`` by an older round):
the pseudo-label, its confidence, the confident mask ``M_p`` at τ (Eq. 7), the global-token score
map ``M_f`` (Sec. 3.3) and the fine-grained score map (Eq. 4) are written as PNG files (atomically,
one file name per model round), then the sample's fields are saved in one update. Ground truth and
reviewed suggestions (accepted / fixed / rejected) are never touched.

A run is one *model round*: the dataset's ``info["hitts"]["rounds"]`` lists each checkpoint used.
Running again with the same checkpoint resumes the round (samples already done are skipped), so a
killed run loses nothing but the batch in flight. Under ``torchrun`` every process takes every
world-th sample.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import fiftyone as fo
import numpy as np
import torch.distributed as dist
from fiftyone import ViewField as F
from tqdm import tqdm

from hitts.app import store
from hitts.model.data.label_io import encode_label, read_image, write_png
from hitts.model.predictor import Predictor
from hitts.model.recipe import thresholds_for
from hitts.model.tasks import TaskSpec
from hitts.model.train import init_distributed

log = logging.getLogger(__name__)

LOW_CONFIDENCE = 0.5  # the saved "low confidence" views: mean confidence below this


@dataclass
class SuggestReport:
    name: str
    round: int
    engine: str
    provider: str
    samples: int = 0  # samples written by this process
    labels: int = 0  # task suggestions written
    already_done: int = 0
    seconds: float = 0.0
    tasks: list[str] = field(default_factory=list)


def file_digest(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_model_tasks(
    model_tasks: tuple[TaskSpec, ...], data_tasks: tuple[TaskSpec, ...], source: str
) -> None:
    known = {t.name: t for t in data_tasks}
    for t in model_tasks:
        if t.name not in known or known[t.name] != t:
            raise ValueError(
                f"{source} predicts {t.name!r} ({t.kind}, {t.num_classes} classes), which the "
                f"dataset does not have as such; its tasks: "
                f"{[(d.name, d.kind, d.num_classes) for d in data_tasks]}"
            )


def resolve_taus(
    taus: dict[str, float], tasks: tuple[TaskSpec, ...], setting: str
) -> dict[str, float]:
    """The paper's τ per task (Appendix B), overridden by ``taus``; ValueError if out of (0, 1)."""
    out = thresholds_for(tasks, setting)
    for task, tau in taus.items():
        if task not in out:
            raise ValueError(f"τ given for unknown task {task!r}; tasks: {sorted(out)}")
        if not 0 < tau < 1:
            raise ValueError(f"τ for {task} must be in (0, 1), got {tau}")
        out[task] = float(tau)
    return out


def register_round(ds: fo.Dataset, checkpoint: Path, digest: str) -> int:
    """The round of this checkpoint: the latest one again (resume) or a new one."""
    hitts = dict(ds.info[store.INFO_KEY])
    rounds = list(hitts.get("rounds", []))
    if rounds and rounds[-1]["checkpoint_sha1"] == digest:
        return int(rounds[-1]["round"])
    number = int(rounds[-1]["round"]) + 1 if rounds else 0
    rounds.append(
        {
            "round": number,
            "checkpoint": str(checkpoint),
            "checkpoint_sha1": digest,
            "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
    )
    hitts["rounds"] = rounds
    ds.info[store.INFO_KEY] = hitts
    ds.save()
    return number


def declare_fields(ds: fo.Dataset, tasks: list[TaskSpec]) -> None:
    """Add every suggestion field to the schema up front: processes that write samples in
    parallel (torchrun shards) must not each add fields on the fly."""
    schema = ds.get_field_schema()

    def add(name: str, ftype, **kw) -> None:
        if name not in schema:
            ds.add_sample_field(name, ftype, **kw)

    for t in tasks:
        pred_type = fo.Heatmap if t.kind == "depth" else fo.Segmentation
        add(store.pred_field(t.name), fo.EmbeddedDocumentField, embedded_doc_type=pred_type)
        add(store.mp_field(t.name), fo.EmbeddedDocumentField, embedded_doc_type=fo.Segmentation)
        for f in (store.conf_field(t.name), store.mf_field(t.name), store.fine_field(t.name)):
            add(f, fo.EmbeddedDocumentField, embedded_doc_type=fo.Heatmap)
        for f in ("confidence", "coverage", "tau"):
            add(f"{t.name}_{f}", fo.FloatField)
        add(f"{t.name}_round", fo.IntField)
        add(f"{t.name}_checkpoint", fo.StringField)
    add("suggested_at", fo.DateTimeField)


def current_round(ds: fo.Dataset) -> int | None:
    rounds = ds.info[store.INFO_KEY].get("rounds", [])
    return int(rounds[-1]["round"]) if rounds else None


def _todo_expr(task: str, round_: int):
    status, rnd = F(store.status_field(task)), F(f"{task}_round")
    return (status == store.MISSING) | ((status == store.SUGGESTED) & (rnd != round_))


def suggest(
    name: str,
    predictor: Predictor,
    checkpoint: Path,
    *,
    batch_size: int = 8,
    taus: dict[str, float] | None = None,
    progress: bool = True,
) -> SuggestReport:
    """Suggest every missing task of dataset ``name`` with ``predictor`` (made from ``checkpoint``).

    Raises:
        ValueError: The model's tasks are not the dataset's, or a τ is outside (0, 1).
    """
    t0 = time.perf_counter()
    rank, world = init_distributed()
    if world > 1 and rank > 0:
        dist.barrier()  # rank 0 starts the database and registers the round first
    ds = store.load_dataset(name)
    info = store.dataset_info(ds)
    check_model_tasks(predictor.tasks, info.tasks, str(checkpoint))
    tau = resolve_taus(taus or {}, info.tasks, info.setting)
    task_names = [t.name for t in predictor.tasks]
    todo_expr = None
    anything = None
    for t in task_names:
        st = F(store.status_field(t))
        missing = (st == store.MISSING) | (st == store.SUGGESTED)
        anything = missing if anything is None else anything | missing
    report = SuggestReport(
        name, -1, predictor.engine, getattr(predictor, "provider", "torch"), tasks=task_names
    )
    if len(ds.match(anything)) == 0:
        if world > 1 and rank == 0:
            dist.barrier()
        log.info(
            "dataset %r has nothing missing for tasks %s: no suggestions to make", name, task_names
        )
        return report
    round_ = None
    if rank == 0:
        declare_fields(ds, list(predictor.tasks))
        round_ = register_round(ds, checkpoint, file_digest(checkpoint))
    if world > 1:
        if rank == 0:
            dist.barrier()
        ds.reload()
        round_ = current_round(ds)
    report.round = round_
    for t in task_names:
        expr = _todo_expr(t, round_)
        todo_expr = expr if todo_expr is None else todo_expr | expr
    todo = ds.match(todo_expr).sort_by("key")
    ids = todo.values("id")[rank::world]
    if world > 1:
        dist.barrier()  # every shard is drawn from the same list before anyone writes
    report.already_done = len(ds.match(anything)) - len(todo)
    bar = tqdm(
        total=len(ids), desc=f"suggest {name} round {round_}", unit="img", disable=not progress
    )
    for start in range(0, len(ids), batch_size):
        batch_ids = ids[start : start + batch_size]
        paths = ds.select(batch_ids, ordered=True).values("filepath")
        results = predictor.predict([read_image(p) for p in paths])
        # loaded after predicting, so a review decision made meanwhile is seen; one bulk save
        # per batch (each sample's update is whole on its own, so a kill leaves no half sample)
        batch = ds.select(batch_ids, ordered=True)
        replaced: list[Path] = []
        for sample, result in zip(
            batch.iter_samples(autosave=True, batch_size=len(batch_ids)), results, strict=True
        ):
            written, old_files = _write_suggestions(
                name, info, sample, result, tau, round_, checkpoint
            )
            report.labels += written
            replaced += old_files
            report.samples += 1
        for path in replaced:  # the older round's files, now unreferenced
            path.unlink(missing_ok=True)
        bar.update(len(batch_ids))
    bar.close()
    if rank == 0:
        add_views_and_indexes(ds, task_names)
    report.seconds = time.perf_counter() - t0
    return report


def _write_suggestions(
    name: str,
    info: store.DatasetInfo,
    sample: fo.Sample,
    result: dict[str, dict[str, np.ndarray]],
    tau: dict[str, float],
    round_: int,
    checkpoint: Path,
) -> tuple[int, list[Path]]:
    """Write the files of one sample's suggestions and set its fields (the caller saves them).

    Returns the number of task suggestions set and the files of an older round they replace.
    """
    written, replaced = 0, []
    for task_name, out in result.items():
        status = _get(sample, store.status_field(task_name))
        if status not in (store.MISSING, store.SUGGESTED) or (
            status == store.SUGGESTED and _get(sample, f"{task_name}_round") == round_
        ):
            continue
        task = info.task(task_name)
        conf = out["confidence"]
        confident = conf > tau[task_name]  # M_p, Eq. 7
        fine = out["fine_score"]
        fine_scaled = fine / max(float(fine.max()), 1e-12)
        arrays = {
            store.pred_field(task_name): encode_label(task, out["label"], info.depth_unit),
            store.conf_field(task_name): _to_u8(conf),
            store.mp_field(task_name): confident.astype(np.uint8),
            store.mf_field(task_name): _to_u8(out["mf"]),
            store.fine_field(task_name): _to_u8(fine_scaled),
        }
        for field_name, array in arrays.items():
            old = _get(sample, field_name)
            path = store.files_dir(name) / field_name / f"{store.slug(sample.key)}.r{round_}.png"
            write_png(path, array)
            if old is not None:
                old_path = getattr(old, "map_path", None) or getattr(old, "mask_path", None)
                # only this dataset's own files: a clone (ds.clone()) shares its source's paths
                if old_path and Path(old_path) != path and _owned(name, Path(old_path)):
                    replaced.append(Path(old_path))
            if field_name == store.pred_field(task_name):
                sample[field_name] = store.label_object(task, path, out["label"], info.depth_unit)
            elif field_name == store.mp_field(task_name):
                sample[field_name] = fo.Segmentation(mask_path=str(path))
            else:
                sample[field_name] = fo.Heatmap(map_path=str(path), range=[0, 255])
        sample[f"{task_name}_confidence"] = float(conf.mean())
        sample[f"{task_name}_coverage"] = float(confident.mean())
        sample[f"{task_name}_tau"] = tau[task_name]
        sample[f"{task_name}_round"] = round_
        sample[f"{task_name}_checkpoint"] = str(checkpoint)
        sample[store.status_field(task_name)] = store.SUGGESTED
        written += 1
    if written:
        sample["suggested_at"] = datetime.now(timezone.utc)
    return written, replaced


def _owned(name: str, path: Path) -> bool:
    """Whether ``path`` lies in dataset ``name``'s own folder (so it may be deleted with it)."""
    return path.resolve().is_relative_to(store.files_dir(name).resolve())


def _get(sample: fo.Sample, field_name: str):
    return sample[field_name] if sample.has_field(field_name) else None


def _to_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def add_views_and_indexes(ds: fo.Dataset, tasks: list[str]) -> None:
    """Indexes on the per-sample confidence figures and saved views for curators."""
    schema = ds.get_field_schema()
    needs_review = None
    for t in tasks:
        for f in (f"{t}_confidence", f"{t}_coverage"):
            if f in schema:
                ds.create_index(f)
        suggested = F(store.status_field(t)) == store.SUGGESTED
        needs_review = suggested if needs_review is None else needs_review | suggested
        if f"{t}_confidence" in schema:
            low = ds.match(suggested & (F(f"{t}_confidence") < LOW_CONFIDENCE)).sort_by(
                f"{t}_confidence"
            )
            ds.save_view(f"{t}-suggestions-below-{LOW_CONFIDENCE}-confidence", low, overwrite=True)
    ds.save_view("needs-review", ds.match(needs_review), overwrite=True)
    targets = dict(ds.mask_targets)
    for t in tasks:
        targets.setdefault(store.mp_field(t), {1: "confident"})
        spec = store.dataset_info(ds).task(t)
        if spec.is_classification:
            targets.setdefault(store.pred_field(t), {i: c for i, c in enumerate(spec.classes)})
    if targets != ds.mask_targets:
        ds.mask_targets = targets
        ds.save()
