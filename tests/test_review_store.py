"""Review decisions in a real FiftyOne dataset: queue order and filters, claims, accept /
accept-confident / reject / fix, compare-and-set conflicts, undo, stale rounds, deleted samples.

The datasets are built the way a user builds them (generate scenes, ``hitts ingest --setting
one-label``, then :func:`hitts.app.suggest.suggest`), with a scripted predictor in place of a
trained network so that confidences, and therefore the confident regions, are known.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import fiftyone as fo
import numpy as np
import pytest
from fiftyone import ViewField as F
from PIL import Image

from hitts.app import store
from hitts.app.cli import main
from hitts.app.review_store import (
    ACCEPTED_CONFIDENT,
    QueueFilter,
    ReviewStore,
    confident_mask,
    final_field,
    read_raw,
    source_field,
)
from hitts.app.suggest import suggest
from hitts.model.data.label_io import read_label
from hitts.model.data.scenes import SceneConfig, generate_scenes
from hitts.model.tasks import DEPTH, NORMAL, scene_tasks

TASKS = ("semseg", "depth", "normal", "edge")


class ScriptedPredictor:
    """Stands in for a trained model: labels and confidences follow from the image, so a test
    knows them. Confidence rises left to right (0.2 to 1.0) plus a per-image offset, so samples
    differ in mean confidence and every τ keeps a known share of the pixels."""

    engine = "scripted"
    provider = "none"

    def __init__(self):
        self.tasks = scene_tasks()
        self.size = (32, 48)

    def predict(self, images: list[np.ndarray]) -> list[dict[str, dict[str, np.ndarray]]]:
        out = []
        for img in images:
            h, w = img.shape[:2]
            grey = img.astype(np.float32).mean(axis=-1) / 255.0
            ramp = np.broadcast_to(np.linspace(0.2, 1.0, w, dtype=np.float32), (h, w))
            offset = (float(grey.mean()) - 0.5) * 0.3
            conf = np.clip(ramp + offset, 0.0, 1.0)
            mf = np.broadcast_to(np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None], (h, w))
            normal = np.zeros((h, w, 3), np.float32)
            normal[..., 2] = 1.0
            normal[:, : w // 2] = (0.6, 0.0, 0.8)
            result = {}
            for t in self.tasks:
                if t.name == "semseg":
                    label = (grey * 5.99).astype(np.int64)
                elif t.name == "edge":
                    label = (np.abs(np.diff(grey, axis=1, append=grey[:, -1:])) > 0.05).astype(
                        np.int64
                    )
                elif t.kind == DEPTH:
                    label = (1.0 + 4.0 * grey).astype(np.float32)
                else:
                    label = normal
                result[t.name] = {
                    "label": label,
                    "confidence": conf,
                    "mf": mf,
                    "fine_score": 0.5 + 0.5 * conf,
                }
            out.append(result)
        return out


@pytest.fixture(scope="session")
def review_scenes(tmp_path_factory) -> Path:
    root = tmp_path_factory.getbasetemp() / "review-scenes"  # shared by the review test modules
    # a second call (from another module) finds the scenes done and returns
    generate_scenes(
        root, 16, SceneConfig(height=32, width=48), seed=3, val_fraction=0.25, progress=False
    )
    return root


def make_reviewable(scenes: Path, name: str, checkpoint_dir: Path) -> None:
    """Ingest ``scenes`` as ``name`` (one-label) and suggest every missing task."""
    assert main(["ingest", str(scenes), "--name", name, "--setting", "one-label", "-q"]) == 0
    checkpoint = checkpoint_dir / "scripted.ckpt"
    checkpoint.write_bytes(b"scripted predictor, round 0")
    report = suggest(name, ScriptedPredictor(), checkpoint, progress=False)
    assert report.labels > 0


_TEMPLATE: dict[str, str] = {}  # one template per session, whichever test module asks first


@pytest.fixture(scope="session")
def review_template(review_scenes, tmp_path_factory) -> str:
    """A suggested dataset made once per session (files in a session folder); tests clone it."""
    if "name" not in _TEMPLATE:
        name = f"t-review-{uuid.uuid4().hex[:8]}"
        home = tmp_path_factory.mktemp("review-home")
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("HITTS_HOME", str(home))
            make_reviewable(review_scenes, name, home)
            ReviewStore(name)  # declares the review fields and indexes once
        _TEMPLATE["name"] = name
    yield _TEMPLATE["name"]
    if fo.dataset_exists(_TEMPLATE["name"]):
        fo.delete_dataset(_TEMPLATE["name"])


def clone_reviewable(template: str, name: str, **store_kwargs) -> ReviewStore:
    """A private copy of the template (its suggestion files are shared, read-only)."""
    fo.load_dataset(template).clone(name, persistent=True)
    return ReviewStore(name, **store_kwargs)


@pytest.fixture
def rs(review_template, dataset_name) -> ReviewStore:
    return clone_reviewable(review_template, dataset_name)


def _sample(name: str, sample_id: str) -> fo.Sample:
    ds = fo.load_dataset(name)
    ds.reload()
    return ds[sample_id]


def _final_files(rs: ReviewStore, task: str) -> list[Path]:
    folder = store.files_dir(rs.name) / final_field(task)
    return sorted(folder.glob("*.png")) if folder.is_dir() else []


# ----------------------------------------------------------------------------------------------
# the queue


def test_queue_order_filter_and_position(rs):
    total = rs.coll.count_documents({"semseg_status": "suggested"})
    assert total >= 4  # one-label: most train samples miss a given task
    seen, cursor = [], None
    q = QueueFilter("semseg")
    for _ in range(total):
        item = rs.next_item(q, "ann", cursor)
        seen.append(item.confidence)
        assert rs.counts(q, "ann", item).position == len(seen)
        cursor = item.cursor
    assert seen == sorted(seen) and len(set(seen)) == total
    # the end wraps around to the start
    assert rs.next_item(q, "ann", cursor).confidence == seen[0]
    down = rs.next_item(QueueFilter("semseg", descending=True), "ann")
    assert down.confidence == seen[-1]
    mid = (seen[1] + seen[2]) / 2
    only_high = rs.next_item(QueueFilter("semseg", conf_min=mid), "ann")
    assert only_high.confidence == seen[2]
    assert rs.next_item(QueueFilter("semseg", conf_min=0.99), "ann") is None
    labeled = rs.next_item(QueueFilter("semseg", status="labeled"), "ann")
    assert (
        labeled.status == "labeled" and not labeled.has_suggestion and "semseg" in labeled.gt_paths
    )
    counts = rs.counts(q, "ann", None)
    assert counts.total == total and counts.remaining["semseg"] == total
    with pytest.raises(ValueError, match="no task"):
        rs.next_item(QueueFilter("nope"), "ann")
    with pytest.raises(ValueError, match="status must be"):
        rs.next_item(QueueFilter("semseg", status="weird"), "ann")


def test_claims_give_annotators_different_samples(rs):
    q = QueueFilter("depth")
    total = rs.coll.count_documents({"depth_status": "suggested"})
    a = rs.next_item(q, "alice")
    b = rs.next_item(q, "bob")
    assert a.sample_id != b.sample_id
    assert rs.load(a.sample_id, "depth").claimed_by == "alice"
    assert rs.counts(q, "bob", b).claimed_by_others == 1
    # alice asking again gets her own claimed item back first (it is still hers)
    assert rs.next_item(q, "alice").sample_id == a.sample_id
    # racing threads: every claim is distinct
    got, lock = [], threading.Lock()

    def grab(user):
        item = rs.next_item(q, user)
        with lock:
            got.append(None if item is None else item.sample_id)

    threads = [threading.Thread(target=grab, args=(f"u{i}",)) for i in range(total)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [g for g in got if g is not None]
    assert len(ids) == len(set(ids)) == total - 2  # alice and bob hold two
    assert got.count(None) == 2
    rs.release(a.sample_id, "depth", "alice")
    assert rs.next_item(q, "carol").sample_id == a.sample_id
    # a claim expires
    short = ReviewStore(rs.name, claim_seconds=0.05)
    time.sleep(0.1)
    assert short.next_item(q, "dave") is not None


# ----------------------------------------------------------------------------------------------
# decisions


def test_accept_writes_final_label_status_and_who(rs):
    item = rs.next_item(QueueFilter("semseg"), "alice")
    out = rs.accept(item, "alice")
    assert out.ok, out.message
    s = _sample(rs.name, item.sample_id)
    assert s.semseg_status == "accepted" and s.semseg_reviewed_by == "alice"
    assert s.semseg_round == 0 and s.semseg_version == 1
    assert s[source_field("semseg")] == "accepted"
    assert s.semseg_claimed_by is None
    assert abs((s.semseg_reviewed_at - s.last_modified_at).total_seconds()) < 1
    final = Path(s.final_semseg.mask_path)
    assert final.parent == store.files_dir(rs.name) / "final_semseg"
    assert final.read_bytes() == Path(item.pred_path).read_bytes()
    info = rs.info
    label = read_label(info.task("semseg"), final, depth_unit=info.depth_unit)
    assert label.shape == (32, 48) and label.min() >= 0
    # FiftyOne sees the decision like any field (the App filters on it)
    ds = fo.load_dataset(rs.name)
    assert len(ds.match(F("semseg_status") == "accepted")) == 1
    assert ds.mask_targets["final_semseg"][0] == "floor"
    # a depth accept keeps the heatmap's range
    d = rs.next_item(QueueFilter("depth"), "alice")
    assert rs.accept(d, "alice").ok
    s = _sample(rs.name, d.sample_id)
    assert isinstance(s.final_depth, fo.Heatmap) and s.final_depth.range == list(
        d.pred_label["range"]
    )


@pytest.mark.parametrize("task", ["semseg", "depth", "normal"])
def test_accept_confident_makes_the_rest_invalid(rs, task):
    item = rs.next_item(QueueFilter(task), "alice")
    tau = 0.6
    out = rs.accept_confident(item, "alice", tau)
    assert out.ok, out.message
    s = _sample(rs.name, item.sample_id)
    assert s[store.status_field(task)] == "accepted"
    assert s[source_field(task)] == ACCEPTED_CONFIDENT
    spec = rs.task(task)
    final = read_label(
        spec,
        s[final_field(task)].mask_path if task != "depth" else s.final_depth.map_path,
        depth_unit=rs.info.depth_unit,
    )
    pred = read_label(spec, item.pred_path, depth_unit=rs.info.depth_unit)
    keep = confident_mask(read_raw(item.conf_path), tau)
    assert 0.1 < keep.mean() < 0.9  # the scripted ramp keeps part of the image
    if task == "semseg":
        assert np.all(final[~keep] == -1)
    elif task == "depth":
        assert np.all(final[~keep] == 0)
    else:
        assert np.all(final[~keep] == 0)
    np.testing.assert_allclose(final[keep], pred[keep], atol=1e-3 if spec.kind == NORMAL else 0)
    with pytest.raises(ValueError, match="τ must be"):
        rs.accept_confident(rs.load(item.sample_id, task), "alice", 1.5)


def test_reject_clears_the_final_label(rs):
    item = rs.next_item(QueueFilter("semseg"), "alice")
    assert rs.accept(item, "alice").ok
    again = rs.load(item.sample_id, "semseg")
    assert again.version == 1 and again.final_path
    out = rs.reject(again, "bob")
    assert out.ok
    s = _sample(rs.name, item.sample_id)
    assert s.semseg_status == "rejected" and s.semseg_reviewed_by == "bob"
    assert s.final_semseg is None and s[source_field("semseg")] is None
    assert s.pred_semseg is not None  # the suggestion itself stays, for the record


def test_fix_checks_class_ids_and_shape(rs):
    item = rs.next_item(QueueFilter("semseg"), "alice")
    pred = read_raw(item.pred_path)
    fixed = pred.copy()
    fixed[:8] = 3
    fixed[8:10] = 255
    assert rs.fix(item, "alice", fixed).ok
    s = _sample(rs.name, item.sample_id)
    assert s.semseg_status == "fixed" and s[source_field("semseg")] == "fixed"
    label = read_label(rs.task("semseg"), s.final_semseg.mask_path)
    assert np.all(label[:8] == 3) and np.all(label[8:10] == -1)
    other = rs.next_item(QueueFilter("semseg"), "alice")
    bad = read_raw(other.pred_path).copy()
    bad[0, 0] = 9
    with pytest.raises(ValueError, match=r"class id\(s\) \[9\]"):
        rs.fix(other, "alice", bad)
    with pytest.raises(ValueError, match="like the suggestion"):
        rs.fix(other, "alice", bad[:10])
    assert _sample(rs.name, other.sample_id).semseg_status == "suggested"
    assert len(_final_files(rs, "semseg")) == 1  # nothing was written for the refused fixes


def test_older_decision_never_overwrites_a_newer_one(rs):
    a_view = rs.next_item(QueueFilter("semseg"), "alice")
    b_view = rs.load(a_view.sample_id, "semseg")  # bob opened the same sample (e.g. by key)
    assert rs.reject(b_view, "bob").ok
    out = rs.accept(a_view, "alice")
    assert not out.ok and out.conflict
    assert "bob" in out.message and "rejected" in out.message and "UTC" in out.message
    s = _sample(rs.name, a_view.sample_id)
    assert s.semseg_status == "rejected" and s.semseg_reviewed_by == "bob"
    assert _final_files(rs, "semseg") == []  # alice's file was removed again
    # racing decisions on one loaded version: exactly one wins
    item = rs.next_item(QueueFilter("semseg"), "carol")  # everyone loaded version 0
    results = []

    def decide(user):
        results.append(rs.accept(item, user).ok)

    threads = [threading.Thread(target=decide, args=(f"u{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 5 + [True]
    assert len(_final_files(rs, "semseg")) == 1


def test_undo_restores_and_is_version_checked(rs):
    item = rs.next_item(QueueFilter("depth"), "alice")
    first = rs.accept(item, "alice")
    second = rs.accept_confident(rs.load(item.sample_id, "depth"), "alice", 0.5)
    assert first.ok and second.ok
    assert len(_final_files(rs, "depth")) == 2
    back = rs.undo(second.undo, "alice")
    assert back.ok, back.message
    s = _sample(rs.name, item.sample_id)
    assert s.depth_status == "accepted" and s.final_depth_source == "accepted"
    assert Path(s.final_depth.map_path).read_bytes() == Path(item.pred_path).read_bytes()
    assert s.depth_version == 3 and s.depth_round == 0
    assert len(_final_files(rs, "depth")) == 1
    # an undo of a decision someone has since replaced is refused
    current = rs.load(item.sample_id, "depth")
    assert rs.reject(current, "bob").ok
    refused = rs.undo(first.undo, "alice")
    assert not refused.ok and "bob" in refused.message
    assert _sample(rs.name, item.sample_id).depth_status == "rejected"
    # undo all the way back to the suggestion
    again = rs.next_item(QueueFilter("normal"), "alice")
    done = rs.reject(again, "alice")
    assert rs.undo(done.undo, "alice").ok
    s = _sample(rs.name, again.sample_id)
    assert s.normal_status == "suggested" and s.normal_reviewed_by is None
    assert s.normal_claimed_by == "alice"  # shown again to the one who undid


def test_new_round_and_deleted_sample_refuse_the_decision(rs):
    item = rs.next_item(QueueFilter("semseg"), "alice")
    ds = fo.load_dataset(rs.name)
    s = ds[item.sample_id]
    s["semseg_round"] = 1  # a newer suggest run replaced the suggestion meanwhile
    s.save()
    out = rs.accept(item, "alice")
    assert not out.ok and "round 1" in out.message
    gone = rs.next_item(QueueFilter("depth"), "alice")
    ds.delete_samples([gone.sample_id])
    out = rs.reject(gone, "alice")
    assert not out.ok and out.gone and "deleted" in out.message
    assert rs.load(gone.sample_id, "depth") is None
    assert _final_files(rs, "semseg") == []


def test_schema_and_indexes(rs):
    ds = fo.load_dataset(rs.name)
    schema = ds.get_field_schema()
    for t in TASKS:
        for f in (
            final_field(t),
            source_field(t),
            f"{t}_reviewed_by",
            f"{t}_reviewed_at",
            f"{t}_version",
            f"{t}_claimed_by",
            f"{t}_claimed_at",
        ):
            assert f in schema, f
        assert f"{t}_status_1_{t}_confidence_1" in ds.list_indexes()
    ReviewStore(rs.name)  # opening again changes nothing
    with pytest.raises(ValueError, match="no dataset named"):
        ReviewStore("no-such-dataset")


def test_stored_encodings_are_read_back_as_written(rs):
    item = rs.next_item(QueueFilter("normal"), "alice")
    raw = read_raw(item.pred_path)
    assert raw.dtype == np.uint8 and raw.shape == (32, 48, 3)
    with Image.open(item.pred_path) as img:
        assert img.mode == "RGB"
    depth = rs.next_item(QueueFilter("depth"), "alice")
    assert read_raw(depth.pred_path).dtype == np.uint16
    with pytest.raises(FileNotFoundError, match="not found"):
        read_raw(Path(item.pred_path).with_name("missing.png"))
