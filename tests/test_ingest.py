"""Ingest into a real FiftyOne database: layout, idempotence, settings, status, torch dataset."""

from __future__ import annotations

from pathlib import Path

import fiftyone as fo
import numpy as np
import pytest
import torch
from conftest import DATA
from folder_fixture import make_folder

from hitts.app import store
from hitts.app.ingest import ingest
from hitts.model.data.label_io import read_label
from hitts.model.data.torch_dataset import MultiTaskDataset

TASKS = ("semseg", "depth", "normal", "edge")


def _label_path(sample, field):
    label = sample[field]
    return None if label is None else Path(getattr(label, "map_path", None) or label.mask_path)


def test_folder_full_roundtrip_and_idempotent(tmp_path, dataset_name):
    written = make_folder(tmp_path / "src", n=6)
    report = ingest(tmp_path / "src", dataset_name, progress=False)
    assert (report.added, report.already_there, report.skipped) == (6, 0, [])
    ds = fo.load_dataset(dataset_name)
    assert len(ds) == 6
    assert ds.count_values("split") == {"train": 4, "val": 2}
    info = store.dataset_info(ds)
    assert [t.name for t in info.tasks] == list(TASKS)
    for sample in ds:
        for task in info.tasks:
            assert sample[store.status_field(task.name)] == store.LABELED
            got = read_label(
                task, _label_path(sample, store.gt_field(task.name)), depth_unit=info.depth_unit
            )
            want = written[sample.key][task.name]
            if task.kind == "depth":
                np.testing.assert_allclose(got, want, atol=0.0006)
            elif task.kind == "normal":
                np.testing.assert_allclose(got, want, atol=0.01)
            else:
                np.testing.assert_array_equal(got, want)
    again = ingest(tmp_path / "src", dataset_name, progress=False)
    assert (again.added, again.already_there) == (0, 6)
    assert len(fo.load_dataset(dataset_name)) == 6


def test_one_label_setting_hides_and_keeps_hidden_truth(tmp_path, dataset_name):
    make_folder(tmp_path / "src", n=14, val=2)
    ingest(tmp_path / "src", dataset_name, setting="one-label", seed=3, progress=False)
    ds = fo.load_dataset(dataset_name)
    per_task = {t: 0 for t in TASKS}
    for sample in ds:
        visible = [t for t in TASKS if sample[store.gt_field(t)] is not None]
        hidden = [t for t in TASKS if sample[store.hidden_field(t)] is not None]
        assert sorted(visible + hidden) == sorted(TASKS)
        if sample.split == "val":
            assert hidden == []
            continue
        assert len(visible) == 1
        per_task[visible[0]] += 1
        for t in hidden:
            assert sample[store.status_field(t)] == store.MISSING
    assert sorted(per_task.values()) == [3, 3, 3, 3]  # 12 train images dealt evenly
    report = store.status_report(dataset_name)
    assert report.tasks["semseg"]["labeled"] == 3 + 2
    assert report.tasks["semseg"]["missing"] == 9
    assert report.setting == "one-label"


def _visible_sets(name):
    ds = fo.load_dataset(name)
    return {s.key: tuple(t for t in TASKS if s[store.gt_field(t)] is not None) for s in ds}


def test_settings_are_reproducible_by_seed(tmp_path):
    make_folder(tmp_path / "src", n=20, val=0)
    names = ["t-seed-a", "t-seed-b", "t-seed-c"]
    try:
        for name, seed in zip(names, (7, 7, 8), strict=False):
            ingest(tmp_path / "src", name, setting="random-labels", seed=seed, progress=False)
        a, b, c = (_visible_sets(n) for n in names)
        assert a == b
        assert a != c
        assert all(1 <= len(v) <= 3 for v in a.values())
    finally:
        for n in names:
            if fo.dataset_exists(n):
                fo.delete_dataset(n)


def test_few_shot_setting(tmp_path, dataset_name):
    make_folder(tmp_path / "src", n=10, val=0)
    ingest(tmp_path / "src", dataset_name, setting="few-shot:normal:3", progress=False)
    report = store.status_report(dataset_name)
    assert report.tasks["normal"]["labeled"] == 3
    assert report.tasks["depth"]["labeled"] == 10


def test_other_setting_on_existing_dataset_is_refused(tmp_path, dataset_name):
    make_folder(tmp_path / "src", n=4)
    ingest(tmp_path / "src", dataset_name, setting="one-label", progress=False)
    with pytest.raises(ValueError, match="setting"):
        ingest(tmp_path / "src", dataset_name, setting="full", progress=False)


def test_bad_setting_text(tmp_path, dataset_name):
    make_folder(tmp_path / "src", n=4)
    for text in ("two-labels", "few-shot:nope:3", "few-shot:depth:0", "one-label:3"):
        with pytest.raises(ValueError):
            ingest(tmp_path / "src", dataset_name, setting=text, progress=False)
    assert not fo.dataset_exists(dataset_name)


def test_real_nyu_frames_ingest_as_depth_only(dataset_name):
    report = ingest(DATA / "nyu-demo", dataset_name, progress=False)
    assert report.added == 3
    ds = fo.load_dataset(dataset_name)
    info = store.dataset_info(ds)
    assert [t.name for t in info.tasks] == ["depth"]
    for sample in ds:
        assert sample.metadata.width == 640 and sample.metadata.height == 480
        depth = read_label(
            info.tasks[0], _label_path(sample, "gt_depth"), depth_unit=info.depth_unit
        )
        assert depth.shape == (480, 640)
        valid = depth > 0
        assert 0.5 < valid.mean() <= 1.0
        assert 0.3 < np.median(depth[valid]) < 10.0  # metres, an indoor room


def test_torch_dataset_yields_present_tasks(tmp_path, dataset_name):
    make_folder(tmp_path / "src", n=8, val=0)
    ingest(tmp_path / "src", dataset_name, setting="one-label", progress=False)
    ds = fo.load_dataset(dataset_name)
    info = store.dataset_info(ds)
    records = store.labelled_images(ds.match(fo.ViewField("split") == "train"), TASKS)
    data = MultiTaskDataset(records, info.tasks, size=(24, 32), depth_unit=info.depth_unit)
    loader = torch.utils.data.DataLoader(data, batch_size=8)
    batch = next(iter(loader))
    assert batch["image"].shape == (8, 3, 24, 32)
    assert batch["present"].shape == (8, 4)
    assert torch.all(batch["present"].sum(1) == 1)  # one-label
    assert (
        batch["target/semseg"].shape == (8, 24, 32) and batch["target/semseg"].dtype == torch.int64
    )
    assert batch["target/depth"].shape == (8, 24, 32)
    assert batch["target/normal"].shape == (8, 3, 24, 32)
    for i, task in enumerate(TASKS):
        valid = batch[f"valid/{task}"]
        present = batch["present"][:, i]
        assert not valid[~present].any()  # an absent task has no valid pixel
        assert valid[present].float().mean() > 0.8
    n = batch["target/normal"].permute(0, 2, 3, 1)[batch["valid/normal"]]
    torch.testing.assert_close(n.norm(dim=-1), torch.ones(len(n)), atol=1e-4, rtol=0)


def test_torch_dataset_flip_negates_normal_x(tmp_path, dataset_name):
    make_folder(tmp_path / "src", n=2, val=0, tasks=("normal",))
    ingest(tmp_path / "src", dataset_name, progress=False)
    ds = fo.load_dataset(dataset_name)
    info = store.dataset_info(ds)
    records = store.labelled_images(ds, ("normal",))
    plain = MultiTaskDataset(records, info.tasks)[0]
    torch.manual_seed(0)
    flipped = None
    for _ in range(20):
        item = MultiTaskDataset(records, info.tasks, hflip=True)[0]
        if not torch.equal(item["image"], plain["image"]):
            flipped = item
            break
    assert flipped is not None
    want = plain["target/normal"].flip(-1)
    want[0] = -want[0]
    torch.testing.assert_close(flipped["target/normal"], want)


def test_edge_png_with_invalid_pixels_reads_back(tmp_path):
    from hitts.model.data.label_io import write_label
    from hitts.model.tasks import EDGE, EDGE_CLASSES, TaskSpec

    task = TaskSpec("edge", EDGE, EDGE_CLASSES)
    label = np.array([[0, 1, -1, 0]], np.int64)
    write_label(task, tmp_path / "e.png", label)
    np.testing.assert_array_equal(read_label(task, tmp_path / "e.png"), label)
    binary = tmp_path / "b.png"
    from PIL import Image

    Image.fromarray(np.array([[0, 255, 0]], np.uint8)).save(binary)
    np.testing.assert_array_equal(read_label(task, binary), [[0, 1, 0]])
