"""Export of completed labels: round trips through ingest and the public layouts, provenance,
atomic replacement, and refusals."""

from __future__ import annotations

import json
from pathlib import Path

import fiftyone as fo
import numpy as np
import pytest
from fiftyone import ViewField as F
from folder_fixture import make_folder

from hitts.app import store
from hitts.app.cli import main
from hitts.app.completed import final_field
from hitts.app.export import export_dataset
from hitts.app.ingest import ingest
from hitts.exporters.labels import ExportError
from hitts.model.data.label_io import read_label
from hitts.model.data.mtan import NYUv2MtanReader

TASKS = ("semseg", "depth", "normal", "edge")


def _arrays(name: str) -> dict[str, dict[str, np.ndarray]]:
    ds = fo.load_dataset(name)
    info = store.dataset_info(ds)
    out = {}
    for s in ds:
        out[s.key] = {}
        for t in info.tasks:
            label = s[store.gt_field(t.name)]
            if label is not None:
                path = getattr(label, "map_path", None) or label.mask_path
                out[s.key][t.name] = read_label(t, path, depth_unit=info.depth_unit)
    return out


def test_folder_round_trip(tmp_path, dataset_name):
    make_folder(tmp_path / "src", n=5, val=2)
    ingest(tmp_path / "src", dataset_name, progress=False)
    export_dataset(dataset_name, tmp_path / "out", "folder", progress=False)
    again = dataset_name + "-again"
    try:
        ingest(tmp_path / "out", again, progress=False)
        a, b = _arrays(dataset_name), _arrays(again)
        assert a.keys() == b.keys()
        for key in a:
            for t in TASKS:
                np.testing.assert_array_equal(a[key][t], b[key][t])
        assert fo.load_dataset(again).count_values("split") == {"train": 3, "val": 2}
    finally:
        fo.delete_dataset(again)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert {s["labels"]["depth"]["source"] for s in manifest["samples"]} == {"ground-truth"}
    valid = np.asarray(__import__("PIL.Image").Image.open(tmp_path / "out/valid/depth/img_000.png"))
    assert valid.dtype == np.uint8 and set(np.unique(valid)) <= {0, 255} and (valid == 0).any()


def _decide(sample, task: str, label_path: Path, status: str, source: str, reviewer: str):
    """What the review page writes for a decision."""
    sample[store.status_field(task)] = status
    sample[final_field(task)] = fo.Segmentation(mask_path=str(label_path))
    sample[f"final_{task}_source"] = source
    sample[f"{task}_reviewed_by"] = reviewer
    sample[f"{task}_round"] = 0
    sample.save()


def test_provenance_of_reviewed_and_pseudo_labels(tmp_path, dataset_name):
    make_folder(tmp_path / "src", n=6, val=0)
    ingest(tmp_path / "src", dataset_name, setting="one-label", progress=False)
    ds = fo.load_dataset(dataset_name)
    info = store.dataset_info(ds)
    seg = info.task("semseg")
    missing = ds.match(F("semseg_status") == store.MISSING)
    a, b, c = list(missing)[:3]
    fixed = np.zeros((12, 16), np.int64)
    fixed[:, 8:] = 3
    fixed[0, 0] = -1
    path = store.write_label_file(dataset_name, "final_semseg", a.key, seg, fixed, info.depth_unit)
    _decide(a, "semseg", path, store.FIXED, "fixed", "ann1")
    b[store.status_field("semseg")] = store.REJECTED
    b.save()
    # c: an unreviewed suggestion, confident on the left half only
    pred = np.full((12, 16), 2, np.int64)
    pred_path = store.write_label_file(dataset_name, "pred_semseg", c.key, seg, pred, info.depth_unit)
    mp = np.zeros((12, 16), np.uint8)
    mp[:, :8] = 1
    mp_path = store.files_dir(dataset_name) / "mp_semseg" / "c.png"
    __import__("hitts.model.data.label_io", fromlist=["write_png"]).write_png(mp_path, mp)
    c["pred_semseg"] = fo.Segmentation(mask_path=str(pred_path))
    c["mp_semseg"] = fo.Segmentation(mask_path=str(mp_path))
    c[store.status_field("semseg")] = store.SUGGESTED
    c["semseg_round"] = 0
    c.save()

    m = export_dataset(dataset_name, tmp_path / "reviewed", "folder", progress=False)
    by_key = {s["key"]: s for s in m["samples"]}
    assert by_key[a.key]["labels"]["semseg"] == {"source": "fixed", "reviewer": "ann1", "round": 0}
    assert "semseg" not in by_key[b.key]["labels"] and "semseg" not in by_key[c.key]["labels"]
    stem = by_key[a.key]["stem"]
    np.testing.assert_array_equal(read_label(seg, tmp_path / f"reviewed/semseg/{stem}.png"), fixed)

    m = export_dataset(dataset_name, tmp_path / "all", "folder", include_pseudo=True, progress=False)
    by_key = {s["key"]: s for s in m["samples"]}
    assert by_key[c.key]["labels"]["semseg"]["source"] == "pseudo"
    got = read_label(seg, tmp_path / f"all/semseg/{by_key[c.key]['stem']}.png")
    assert (got[:, :8] == 2).all() and (got[:, 8:] == -1).all()  # outside M_p: invalid


def test_nyuv2_mtan_and_segmentation_directory(tmp_path, dataset_name):
    make_folder(tmp_path / "src", n=4, val=1, tasks=("semseg", "depth", "normal"))
    ingest(tmp_path / "src", dataset_name, progress=False)
    out = str(tmp_path / "mtan")
    assert main(["export", dataset_name, "--format", "nyuv2-mtan", "--out", out, "-q"]) == 0
    reader = NYUv2MtanReader(tmp_path / "mtan")
    original = _arrays(dataset_name)
    manifest = json.loads((tmp_path / "mtan" / "manifest.json").read_text())
    for entry, item in zip(manifest["samples"], reader.items(), strict=True):
        ex = reader.load(item)
        want = original[entry["key"]]
        np.testing.assert_array_equal(ex.labels["semseg"], want["semseg"])
        np.testing.assert_allclose(ex.labels["depth"], want["depth"], atol=1e-6)
        np.testing.assert_allclose(ex.labels["normal"], want["normal"], atol=1e-5)

    out = tmp_path / "segdir"
    assert main(["export", dataset_name, "--format", "fiftyone-segmentation", "--out", str(out), "-q"]) == 0
    imported = fo.Dataset.from_dir(dataset_dir=str(out), dataset_type=fo.types.ImageSegmentationDirectory,
                                   label_field="seg")
    try:
        assert len(imported) == 4
        for s in imported:
            mask = s.seg.get_mask() if hasattr(s.seg, "get_mask") else s.seg.mask
            key = Path(s.filepath).stem  # the fixture's keys are file-name safe: stem == key
            mask = mask.astype(np.int64)
            np.testing.assert_array_equal(np.where(mask == 255, -1, mask), original[key]["semseg"])
    finally:
        imported.delete()


def test_atomic_replace_and_refusals(tmp_path, dataset_name, caplog):
    make_folder(tmp_path / "src", n=3, val=0)
    ingest(tmp_path / "src", dataset_name, progress=False)
    out = tmp_path / "out"
    export_dataset(dataset_name, out, "folder", progress=False)
    (out / "stray.txt").write_text("from before")
    with pytest.raises(ExportError, match="not empty"):
        export_dataset(dataset_name, out, "folder", progress=False)
    assert (out / "stray.txt").exists()  # refused: untouched
    export_dataset(dataset_name, out, "folder", overwrite=True, progress=False)
    assert not (out / "stray.txt").exists()  # replaced whole, never mixed
    assert not any(p.name.startswith(".out") for p in tmp_path.iterdir())  # no temp folders left
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["export", dataset_name, "--format", "folder", "--out", str(afile), "-q"]) == 2
    assert "is a file" in caplog.text
    with pytest.raises(ExportError, match="no samples"):
        export_dataset(dataset_name, tmp_path / "none", "folder", split="val", progress=False)


def test_keys_cannot_escape_the_export_folder(tmp_path, dataset_name):
    make_folder(tmp_path / "src", n=2, val=0)
    ingest(tmp_path / "src", dataset_name, progress=False)
    ds = fo.load_dataset(dataset_name)
    s = ds.first()
    s.key = "../../escape/../../x"
    s.save()
    m = export_dataset(dataset_name, tmp_path / "out", "folder", progress=False)
    stems = [e["stem"] for e in m["samples"]]
    assert all("/" not in st and ".." not in st for st in stems)
    assert not (tmp_path / "escape").exists()
    written = {p.resolve() for p in (tmp_path / "out").rglob("*")}
    assert all(p.is_relative_to((tmp_path / "out").resolve()) for p in written)
