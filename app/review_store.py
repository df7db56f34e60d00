"""Review decisions in the FiftyOne store: the queue, claims, decisions with compare-and-set, undo.

Per sample and task, next to the fields :mod:`hitts.app.suggest` writes (DESIGN.md, "Data model"):

- ``<task>_status``: ``accepted`` | ``fixed`` | ``rejected`` once someone decided;
  ``<task>_reviewed_by`` / ``<task>_reviewed_at`` say who and when; ``<task>_round`` is kept, so
  the decision stays tied to the model round that made the suggestion.
- ``final_<task>``: the label training should use, a PNG in the store's encoding under
  ``files_dir(name)/final_<task>/`` with invalid pixels coded as invalid, and
  ``final_<task>_source``: ``accepted`` | ``accepted-confident`` | ``fixed``. A reject clears both.
- ``<task>_version``: a counter every decision and undo increments. A decision is written with one
  ``find_one_and_update`` filtered on the version (and round) the annotator loaded, so a decision
  made on a stale view is refused and reported, never written over a newer one.
- ``<task>_claimed_by`` / ``<task>_claimed_at``: who has the sample/task open. Claims are taken
  atomically with the queue query itself, expire after :data:`CLAIM_SECONDS`, and the queue skips
  samples someone else holds, so two annotators get different samples.

The page and the FiftyOne App share the database; nothing here caches sample data. Reads and writes
go through the dataset's MongoDB collection with pymongo (thread-safe, one round trip each) rather
than FiftyOne sample objects, which keeps next-sample and save well inside interactive latency.
A label file is written (atomically, under a name no other write uses) before the decision that
points at it, and removed again if the decision is refused, so a crash at any point leaves the
sample either as it was or fully decided.
"""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import fiftyone as fo
import numpy as np
from bson import ObjectId
from fiftyone.core.odm import get_db_conn
from PIL import Image
from pymongo import ASCENDING, DESCENDING, ReturnDocument

from hitts.app import store
from hitts.model.data.label_io import atomic_write_bytes, write_png
from hitts.model.tasks import DEPTH, NORMAL, TaskSpec

log = logging.getLogger(__name__)

CLAIM_SECONDS = 600  # a claim older than this is free for others (an annotator who walked away)
QUEUE_STATUSES = (store.SUGGESTED, store.ACCEPTED, store.FIXED, store.REJECTED, store.LABELED)
ACCEPTED_CONFIDENT = "accepted-confident"
SOURCES = (store.ACCEPTED, ACCEPTED_CONFIDENT, store.FIXED)


def final_field(task: str) -> str:
    return f"final_{task}"


def source_field(task: str) -> str:
    return f"final_{task}_source"


def reviewed_by_field(task: str) -> str:
    return f"{task}_reviewed_by"


def reviewed_at_field(task: str) -> str:
    return f"{task}_reviewed_at"


def version_field(task: str) -> str:
    return f"{task}_version"


def claimed_by_field(task: str) -> str:
    return f"{task}_claimed_by"


def claimed_at_field(task: str) -> str:
    return f"{task}_claimed_at"


def confidence_field(task: str) -> str:
    return f"{task}_confidence"


def round_field(task: str) -> str:
    return f"{task}_round"


def review_fields(task: str) -> tuple[str, ...]:
    """The fields a decision sets (and an undo restores)."""
    return (
        store.status_field(task),
        final_field(task),
        source_field(task),
        reviewed_by_field(task),
        reviewed_at_field(task),
    )


def _now() -> datetime:
    # MongoDB keeps milliseconds; truncating here makes what we hold equal what we read back
    t = datetime.now(timezone.utc)
    return t.replace(microsecond=t.microsecond // 1000 * 1000)


def _path_of(label: dict | None) -> str | None:
    if not label:
        return None
    return label.get("mask_path") or label.get("map_path")


# ----------------------------------------------------------------------------------------------
# what the page works with


@dataclass(frozen=True)
class QueueFilter:
    """Which sample/tasks the annotator walks, in which order.

    Attributes:
        conf_min, conf_max: Inclusive range of ``<task>_confidence`` (ignored for ``labeled``,
            which has no suggestion).
        descending: Highest mean confidence first (default: lowest first, the likeliest fixes).
    """

    task: str
    status: str = store.SUGGESTED
    conf_min: float = 0.0
    conf_max: float = 1.0
    descending: bool = False


@dataclass(frozen=True)
class Cursor:
    """Where in the queue order the annotator is: (confidence, sample id) of the last item."""

    confidence: float | None
    sample_id: str


@dataclass
class Item:
    """One sample/task as loaded: paths and figures for display, the version for the decision."""

    sample_id: str
    key: str
    task: str
    filepath: str
    status: str
    version: int
    round: int | None
    confidence: float | None
    coverage: float | None
    tau: float | None
    pred_path: str | None
    conf_path: str | None
    mf_path: str | None
    fine_path: str | None
    pred_label: dict | None  # the raw pred_<task> document (its class and depth range)
    gt_paths: dict[str, str]  # task -> visible ground-truth file
    review: dict  # the raw review fields as loaded (what an undo of the next decision restores)
    claimed_by: str | None
    claimed_at: datetime | None

    @property
    def has_suggestion(self) -> bool:
        return self.pred_path is not None

    @property
    def final_path(self) -> str | None:
        return _path_of(self.review.get(final_field(self.task)))

    @property
    def reviewed_by(self) -> str | None:
        return self.review.get(reviewed_by_field(self.task))

    @property
    def reviewed_at(self) -> datetime | None:
        return self.review.get(reviewed_at_field(self.task))

    @property
    def final_source(self) -> str | None:
        return self.review.get(source_field(self.task))

    @property
    def cursor(self) -> Cursor:
        return Cursor(self.confidence, self.sample_id)


@dataclass(frozen=True)
class UndoRecord:
    """What undoing one decision needs: the version it created and the fields it replaced."""

    sample_id: str
    key: str
    task: str
    action: str
    version_after: int
    previous: dict  # field -> raw value before the decision (None: the field was unset)
    new_file: str | None


@dataclass
class Outcome:
    """The result of a decision or an undo. ``ok`` False: nothing was written; ``message`` says
    why (a conflict names who changed the sample and when)."""

    ok: bool
    message: str
    undo: UndoRecord | None = None
    conflict: bool = False
    gone: bool = False  # the sample no longer exists


@dataclass
class Counts:
    position: int  # 1-based place of the current item in the queue order (0: not in it)
    total: int  # items in the queue (status and confidence range; claimed ones included)
    claimed_by_others: int
    remaining: dict[str, int] = field(default_factory=dict)  # task -> still ``suggested``


# ----------------------------------------------------------------------------------------------
# the store


class ReviewStore:
    """Queue, claims and decisions for one dataset; safe to share between threads and users.

    It holds the dataset's task specs and a pymongo collection handle, nothing per sample.

    Raises:
        ValueError: No such dataset (the message lists the existing ones), or not one of ours.
    """

    def __init__(self, name: str, claim_seconds: float = CLAIM_SECONDS):
        self.name = name
        ds = store.load_dataset(name)
        self.info = store.dataset_info(ds)
        self.tasks = {t.name: t for t in self.info.tasks}
        self.claim_seconds = claim_seconds
        ensure_schema(ds, self.info.tasks)
        db = get_db_conn()
        doc = db.datasets.find_one({"name": name}, {"sample_collection_name": 1})
        if doc is None:  # deleted between the two calls
            raise ValueError(f"dataset {name!r} was deleted while opening it")
        self.coll = db[doc["sample_collection_name"]]
        self._projection = self._make_projection()

    def task(self, name: str) -> TaskSpec:
        if name not in self.tasks:
            raise ValueError(
                f"no task {name!r} in dataset {self.name!r}; tasks: {list(self.tasks)}"
            )
        return self.tasks[name]

    def _make_projection(self) -> dict:
        fields = ["filepath", "key"]
        for t in self.tasks:
            fields += [
                store.status_field(t), store.pred_field(t), store.conf_field(t),
                store.mf_field(t), store.fine_field(t), store.gt_field(t),
                confidence_field(t), f"{t}_coverage", f"{t}_tau", round_field(t),
                version_field(t), claimed_by_field(t), claimed_at_field(t),
                final_field(t), source_field(t), reviewed_by_field(t), reviewed_at_field(t),
            ]  # fmt: skip
        return {f: 1 for f in fields}

    # ------------------------------------------------------------------------------------------
    # the queue

    def _queue_filter(self, q: QueueFilter) -> dict:
        self.task(q.task)
        if q.status not in QUEUE_STATUSES:
            raise ValueError(f"status must be one of {QUEUE_STATUSES}, got {q.status!r}")
        filt: dict = {store.status_field(q.task): q.status}
        if q.status != store.LABELED:
            filt[confidence_field(q.task)] = {"$gte": float(q.conf_min), "$lte": float(q.conf_max)}
        return filt

    def _free_filter(self, task: str, user: str, now: datetime) -> dict:
        return {
            "$or": [
                {claimed_by_field(task): None},
                {claimed_by_field(task): user},
                {claimed_at_field(task): {"$lt": now - timedelta(seconds=self.claim_seconds)}},
            ]
        }

    def _sort(self, q: QueueFilter) -> list[tuple[str, int]]:
        order = DESCENDING if q.descending else ASCENDING
        if q.status == store.LABELED:
            return [("_id", order)]
        return [(confidence_field(q.task), order), ("_id", order)]

    def _after(self, q: QueueFilter, cursor: Cursor) -> dict:
        op = "$lt" if q.descending else "$gt"
        oid = ObjectId(cursor.sample_id)
        if q.status == store.LABELED or cursor.confidence is None:
            return {"_id": {op: oid}}
        c = confidence_field(q.task)
        return {
            "$or": [
                {c: {op: cursor.confidence}},
                {c: cursor.confidence, "_id": {op: oid}},
            ]
        }

    def next_item(self, q: QueueFilter, user: str, after: Cursor | None = None) -> Item | None:
        """Claim and return the first free item of the queue after ``after``, wrapping around to
        the start when nothing follows; None when the queue has nothing free.

        The search and the claim are one atomic ``find_one_and_update``: two annotators asking at
        the same moment get different items.
        """
        now = _now()
        base = self._queue_filter(q)
        free = self._free_filter(q.task, user, now)
        claim = {"$set": {claimed_by_field(q.task): user, claimed_at_field(q.task): now}}
        tries = [self._after(q, after)] if after is not None else []
        tries.append(None)  # from the start
        for extra in tries:
            parts = [base, free] + ([extra] if extra else [])
            doc = self.coll.find_one_and_update(
                {"$and": parts},
                claim,
                sort=self._sort(q),
                projection=self._projection,
                return_document=ReturnDocument.AFTER,
            )
            if doc is not None:
                return self._item(doc, q.task)
        return None

    def load(self, sample_id: str, task: str) -> Item | None:
        """The sample/task as it is now, without claiming; None if the sample is gone."""
        self.task(task)
        doc = self.coll.find_one({"_id": ObjectId(sample_id)}, self._projection)
        return None if doc is None else self._item(doc, task)

    def find_key(self, key: str) -> str | None:
        """The sample id of source key ``key`` (indexed), or None."""
        doc = self.coll.find_one({"key": key}, {"_id": 1})
        return None if doc is None else str(doc["_id"])

    def claim(self, sample_id: str, task: str, user: str) -> Item | None:
        """Claim a sample/task for ``user`` if nobody else holds a live claim, and return it as it
        is now. When someone else holds it, return it unclaimed (``claimed_by`` says who); None if
        the sample is gone."""
        now = _now()
        doc = self.coll.find_one_and_update(
            {"$and": [{"_id": ObjectId(sample_id)}, self._free_filter(task, user, now)]},
            {"$set": {claimed_by_field(task): user, claimed_at_field(task): now}},
            projection=self._projection,
            return_document=ReturnDocument.AFTER,
        )
        if doc is None:
            return self.load(sample_id, task)
        return self._item(doc, task)

    def release(self, sample_id: str, task: str, user: str) -> None:
        """Drop ``user``'s claim (moving on without deciding leaves the sample to others)."""
        self.coll.update_one(
            {"_id": ObjectId(sample_id), claimed_by_field(task): user},
            {"$unset": {claimed_by_field(task): "", claimed_at_field(task): ""}},
        )

    def held_by_other(self, item: Item, user: str) -> bool:
        if not item.claimed_by or item.claimed_by == user or item.claimed_at is None:
            return False
        age = _now() - item.claimed_at.replace(tzinfo=timezone.utc)
        return age < timedelta(seconds=self.claim_seconds)

    def counts(self, q: QueueFilter, user: str, current: Item | None) -> Counts:
        """Where ``current`` sits in the queue, how long the queue is, and per task how many
        suggestions are still undecided. Indexed counts only."""
        base = self._queue_filter(q)
        total = self.coll.count_documents(base)
        position = 0
        if current is not None and current.status == q.status and current.task == q.task:
            flipped = QueueFilter(q.task, q.status, q.conf_min, q.conf_max, not q.descending)
            before = self.coll.count_documents(
                {"$and": [base, self._after(flipped, current.cursor)]}
            )
            position = before + 1
        others = self.coll.count_documents(
            {"$and": [base, {"$nor": [self._free_filter(q.task, user, _now())]}]}
        )
        remaining = {
            t: self.coll.count_documents({store.status_field(t): store.SUGGESTED})
            for t in self.tasks
        }
        return Counts(position, total, others, remaining)

    def _item(self, doc: dict, task: str) -> Item:
        def path(f: str) -> str | None:
            return _path_of(doc.get(f))

        gt = {t: p for t in self.tasks if (p := path(store.gt_field(t)))}
        return Item(
            sample_id=str(doc["_id"]),
            key=doc.get("key", ""),
            task=task,
            filepath=doc["filepath"],
            status=doc.get(store.status_field(task)) or store.MISSING,
            version=int(doc.get(version_field(task)) or 0),
            round=doc.get(round_field(task)),
            confidence=doc.get(confidence_field(task)),
            coverage=doc.get(f"{task}_coverage"),
            tau=doc.get(f"{task}_tau"),
            pred_path=path(store.pred_field(task)),
            conf_path=path(store.conf_field(task)),
            mf_path=path(store.mf_field(task)),
            fine_path=path(store.fine_field(task)),
            pred_label=doc.get(store.pred_field(task)),
            gt_paths=gt,
            review={f: doc.get(f) for f in review_fields(task)},
            claimed_by=doc.get(claimed_by_field(task)),
            claimed_at=doc.get(claimed_at_field(task)),
        )

    # ------------------------------------------------------------------------------------------
    # decisions

    def accept(self, item: Item, user: str) -> Outcome:
        """The whole suggestion becomes the training label (its PNG copied as it is)."""
        self._check_decidable(item)
        data = Path(item.pred_path).read_bytes()
        path = self._new_final_path(item)
        atomic_write_bytes(path, data)
        label = dict(item.pred_label)
        return self._decide(item, user, store.ACCEPTED, path, label, store.ACCEPTED)

    def accept_confident(self, item: Item, user: str, tau: float) -> Outcome:
        """Only the pixels with confidence > ``tau`` keep the suggestion; the rest is invalid."""
        if not 0.0 <= tau < 1.0:
            raise ValueError(f"τ must be in [0, 1), got {tau}")
        self._check_decidable(item)
        task = self.task(item.task)
        encoded = read_raw(item.pred_path)
        conf = read_raw(item.conf_path)
        keep = confident_mask(conf, tau)
        encoded = encoded.copy()
        encoded[~keep] = _invalid_value(task, encoded)
        return self._decide_array(item, user, encoded, ACCEPTED_CONFIDENT, store.ACCEPTED)

    def fix(self, item: Item, user: str, encoded: np.ndarray) -> Outcome:
        """The annotator's corrected label, in the stored encoding of the task."""
        self._check_decidable(item)
        task = self.task(item.task)
        pred = read_raw(item.pred_path)
        check_encoded(task, encoded, pred)
        return self._decide_array(item, user, encoded, store.FIXED, store.FIXED)

    def reject(self, item: Item, user: str) -> Outcome:
        """The suggestion is wrong: no training label for this task from it."""
        self._check_decidable(item)
        return self._decide(item, user, store.REJECTED, None, None, None)

    def undo(self, record: UndoRecord, user: str) -> Outcome:
        """Put back the fields ``record``'s decision replaced, if nobody changed the sample since."""
        t = record.task
        now = _now()
        sets = {k: v for k, v in record.previous.items() if v is not None}
        unsets = {k: "" for k, v in record.previous.items() if v is None}
        sets[version_field(t)] = record.version_after + 1
        sets["last_modified_at"] = now.replace(tzinfo=None)
        sets[claimed_by_field(t)] = user  # the reverted sample is shown again, to its annotator
        sets[claimed_at_field(t)] = now
        update: dict = {"$set": sets}
        if unsets:
            update["$unset"] = unsets
        doc = self.coll.find_one_and_update(
            {"_id": ObjectId(record.sample_id), version_field(t): record.version_after},
            update,
            projection={"_id": 1},
        )
        if doc is None:
            message, gone = self._refusal(record.sample_id, t, record.version_after, None, "undo")
            return Outcome(False, message, conflict=not gone, gone=gone)
        previous_path = _path_of(record.previous.get(final_field(t)))
        if record.new_file and record.new_file != previous_path:
            Path(record.new_file).unlink(missing_ok=True)
        return Outcome(True, f"undid {record.action} of {t} on {record.key}")

    def _check_decidable(self, item: Item) -> None:
        if not item.has_suggestion:
            raise ValueError(
                f"{item.key}: {item.task} has no suggestion to decide on (status {item.status})"
            )

    def _new_final_path(self, item: Item) -> Path:
        # unique per write: a concurrent writer of the same sample never touches this file
        name = f"{store.slug(item.key)}.v{item.version + 1}-{secrets.token_hex(4)}.png"
        return store.files_dir(self.name) / final_field(item.task) / name

    def _decide_array(
        self, item: Item, user: str, encoded: np.ndarray, source: str, status: str
    ) -> Outcome:
        task = self.task(item.task)
        path = self._new_final_path(item)
        write_png(path, encoded)
        if task.kind == DEPTH:
            label = fo.Heatmap(map_path=str(path), range=[0.0, float(max(int(encoded.max()), 1))])
        else:
            label = fo.Segmentation(mask_path=str(path))
        return self._decide(item, user, status, path, label.to_dict(), source)

    def _decide(
        self,
        item: Item,
        user: str,
        status: str,
        path: Path | None,
        label: dict | None,
        source: str | None,
    ) -> Outcome:
        """Compare-and-set the decision on (version, round) as loaded; clean up on refusal."""
        t = item.task
        now = _now()
        if label is not None:
            label = dict(label)
            label["_id"] = ObjectId()
            label["mask_path" if "mask_path" in label else "map_path"] = str(path)
        sets = {
            store.status_field(t): status,
            reviewed_by_field(t): user,
            reviewed_at_field(t): now,
            version_field(t): item.version + 1,
            "last_modified_at": now.replace(tzinfo=None),
        }
        unsets = {claimed_by_field(t): "", claimed_at_field(t): ""}
        if label is None:
            unsets[final_field(t)] = ""
            unsets[source_field(t)] = ""
        else:
            sets[final_field(t)] = label
            sets[source_field(t)] = source
        filt = {
            "_id": ObjectId(item.sample_id),
            version_field(t): item.version if item.version else {"$in": [None, 0]},
            round_field(t): item.round,
        }
        doc = self.coll.find_one_and_update(filt, {"$set": sets, "$unset": unsets}, {"_id": 1})
        action = source or status
        if doc is None:
            if path is not None:
                Path(path).unlink(missing_ok=True)
            message, gone = self._refusal(item.sample_id, t, item.version, item.round, action)
            return Outcome(False, message, conflict=not gone, gone=gone)
        self._remove_stale_files(item, path)
        undo = UndoRecord(
            sample_id=item.sample_id,
            key=item.key,
            task=t,
            action=action,
            version_after=item.version + 1,
            previous=dict(item.review),
            new_file=str(path) if path else None,
        )
        return Outcome(True, f"{action}: {t} of {item.key}", undo=undo)

    def _refusal(
        self, sample_id: str, task: str, version: int, round_: int | None, action: str
    ) -> tuple[str, bool]:
        """Why a compare-and-set found nothing to update, in words; and whether the sample is gone."""
        doc = self.coll.find_one({"_id": ObjectId(sample_id)}, self._projection)
        if doc is None:
            return (
                f"not saved: the sample was deleted from dataset {self.name!r} while it was open; "
                f"your {action} was not stored",
                True,
            )
        now_round = doc.get(round_field(task))
        if round_ is not None and now_round != round_:
            return (
                f"not saved: {doc.get('key')} has a new {task} suggestion (round {now_round}) "
                f"since you opened round {round_}; your {action} was not stored. "
                "The new suggestion is shown.",
                False,
            )
        by = doc.get(reviewed_by_field(task)) or "someone"
        at = doc.get(reviewed_at_field(task))
        when = f" at {at:%Y-%m-%d %H:%M:%S} UTC" if at else ""
        status = doc.get(store.status_field(task))
        now_version = int(doc.get(version_field(task)) or 0)
        return (
            f"conflict, not saved: {by} decided {task} of {doc.get('key')} ({status}){when}, after "
            f"you opened it (version {version} → {now_version}); your {action} was not stored. "
            "Their decision is shown now.",
            False,
        )

    def _remove_stale_files(self, item: Item, new_path: Path | None) -> None:
        """Drop this sample's older final files: keep the new one, the one it replaced (an undo
        may need it) and any written at a newer version (a concurrent writer's, in flight)."""
        folder = store.files_dir(self.name) / final_field(item.task)
        if not folder.is_dir():
            return
        keep = {str(new_path) if new_path else None, item.final_path}
        prefix = store.slug(item.key)
        pattern = re.compile(re.escape(prefix) + r"\.v(\d+)-[0-9a-f]+\.png$")
        for p in folder.glob(f"{prefix}.v*.png"):
            m = pattern.match(p.name)
            if m and int(m.group(1)) <= item.version and str(p) not in keep:
                p.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------
# helpers


def ensure_schema(ds: fo.Dataset, tasks: tuple[TaskSpec, ...]) -> None:
    """Declare the review fields (so the FiftyOne App shows them) and the queue's indexes."""
    schema = ds.get_field_schema()
    changed = False

    def add(name: str, ftype, **kwargs) -> None:
        nonlocal changed
        if name not in schema:
            ds.add_sample_field(name, ftype, **kwargs)
            changed = True

    for t in tasks:
        label_type = fo.Heatmap if t.kind == DEPTH else fo.Segmentation
        add(final_field(t.name), fo.EmbeddedDocumentField, embedded_doc_type=label_type)
        add(source_field(t.name), fo.StringField)
        add(reviewed_by_field(t.name), fo.StringField)
        add(reviewed_at_field(t.name), fo.DateTimeField)
        add(version_field(t.name), fo.IntField)
        add(claimed_by_field(t.name), fo.StringField)
        add(claimed_at_field(t.name), fo.DateTimeField)
    indexes = set(ds.list_indexes())
    for t in tasks:
        if confidence_field(t.name) not in schema:
            continue  # nothing suggested yet: the status index alone serves the queue
        compound = [(store.status_field(t.name), 1), (confidence_field(t.name), 1)]
        name = "_".join(f"{f}_1" for f, _ in compound)
        if name not in indexes:
            ds.create_index(compound)
    targets = dict(ds.mask_targets)
    for t in tasks:
        if t.is_classification:
            targets.setdefault(final_field(t.name), dict(enumerate(t.classes)))
    if targets != ds.mask_targets:
        ds.mask_targets = targets
        ds.save()
    if changed:
        log.info("added the review fields to dataset %r", ds.name)


def read_raw(path: str | Path) -> np.ndarray:
    """A stored PNG as its raw array (class ids, depth counts, normal RGB, uint8 score map)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found (was it removed by a newer round?)")
    with Image.open(path) as img:
        return np.asarray(img)


def confident_mask(conf_u8: np.ndarray, tau: float) -> np.ndarray:
    """(H, W) bool: confidence > τ, read from the stored uint8 map (value * 255). The τ preview
    and the confident-region accept both use this, so what is shown is what is saved."""
    return conf_u8.astype(np.float32) / 255.0 > tau


def _invalid_value(task: TaskSpec, encoded: np.ndarray):
    if task.is_classification:
        return 65535 if encoded.dtype == np.uint16 else 255
    return 0


def check_encoded(task: TaskSpec, encoded: np.ndarray, like: np.ndarray) -> None:
    """Check a label in the stored encoding against the suggestion it replaces.

    Raises:
        ValueError: Wrong shape or dtype, or a class id the task does not have.
    """
    if encoded.shape != like.shape or encoded.dtype != like.dtype:
        raise ValueError(
            f"{task.name} label must be {like.shape} {like.dtype} like the suggestion, got "
            f"{encoded.shape} {encoded.dtype}"
        )
    if task.is_classification:
        bad = (encoded >= task.num_classes) & (encoded != _invalid_value(task, encoded))
        if bad.any():
            ids = sorted(set(np.unique(encoded[bad]).tolist()))[:5]
            raise ValueError(
                f"{task.name}: class id(s) {ids} are not classes of this dataset "
                f"(0..{task.num_classes - 1}, {list(task.classes)}); nothing was saved"
            )
    elif task.kind == NORMAL and encoded.ndim != 3:
        raise ValueError(f"{task.name} label must be (H, W, 3) RGB, got {encoded.shape}")
