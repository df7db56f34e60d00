"""Every kind of bad file: a clear error naming it, nothing of that sample written, the rest intact."""

from __future__ import annotations

import json
from pathlib import Path

import fiftyone as fo
import numpy as np
import pytest
from folder_fixture import make_folder
from PIL import Image

from hitts.app import store
from hitts.app.cli import main
from hitts.app.ingest import ingest
from hitts.model.data.errors import BadInput

BAD = "img_002"


def _truncated_image(root: Path) -> tuple[Path, str]:
    path = root / "images" / f"{BAD}.png"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path, "truncated"


def _label_wrong_size(root: Path) -> tuple[Path, str]:
    path = root / "semseg" / f"{BAD}.png"
    Image.fromarray(np.zeros((5, 7), np.uint8)).save(path)
    return path, "5x7 but the image is 12x16"


def _semseg_wrong_dtype(root: Path) -> tuple[Path, str]:
    path = root / "semseg" / f"{BAD}.png"
    Image.fromarray(np.zeros((12, 16, 3), np.uint8)).save(path)
    return path, "single-channel class-id PNG, got PIL mode RGB"


def _depth_wrong_dtype(root: Path) -> tuple[Path, str]:
    path = root / "depth" / f"{BAD}.png"
    Image.fromarray(np.full((12, 16), 3, np.uint8)).save(path)
    return path, "16-bit PNG"


def _class_out_of_range(root: Path) -> tuple[Path, str]:
    path = root / "semseg" / f"{BAD}.png"
    a = np.zeros((12, 16), np.uint8)
    a[3, 3] = 9
    Image.fromarray(a).save(path)
    return path, "class id(s) [9] out of range"


def _nan_depth(root: Path) -> tuple[Path, str]:
    (root / "depth" / f"{BAD}.png").unlink()
    path = root / "depth" / f"{BAD}.npy"
    a = np.ones((12, 16), np.float32)
    a[2, 2] = np.nan
    np.save(path, a)
    return path, "NaN"


def _negative_depth(root: Path) -> tuple[Path, str]:
    (root / "depth" / f"{BAD}.png").unlink()
    path = root / "depth" / f"{BAD}.npy"
    a = np.ones((12, 16), np.float32)
    a[2, 2] = -1.5
    np.save(path, a)
    return path, "negative depth"


def _non_unit_normal_npy(root: Path) -> tuple[Path, str]:
    (root / "normal" / f"{BAD}.png").unlink()
    path = root / "normal" / f"{BAD}.npy"
    a = np.zeros((12, 16, 3), np.float32)
    a[..., 2] = -2.0
    np.save(path, a)
    return path, "non-unit normals"


def _non_unit_normal_png(root: Path) -> tuple[Path, str]:
    path = root / "normal" / f"{BAD}.png"
    Image.fromarray(np.full((12, 16, 3), 128, np.uint8)).save(path)
    return path, "does not hold unit normals"


def _edge_not_binary(root: Path) -> tuple[Path, str]:
    path = root / "edge" / f"{BAD}.png"
    a = np.zeros((12, 16), np.uint8)
    a[1, 1] = 7
    Image.fromarray(a).save(path)
    return path, "out of range"


CASES = [
    _truncated_image,
    _label_wrong_size,
    _semseg_wrong_dtype,
    _depth_wrong_dtype,
    _class_out_of_range,
    _nan_depth,
    _negative_depth,
    _non_unit_normal_npy,
    _non_unit_normal_png,
    _edge_not_binary,
]


def _files_of(name: str, key: str) -> list[Path]:
    return sorted(store.files_dir(name).rglob(f"{store.slug(key)}.png"))


@pytest.mark.parametrize("corrupt", CASES, ids=lambda f: f.__name__.strip("_"))
def test_bad_file_stops_ingest_and_names_it(tmp_path, dataset_name, corrupt):
    root = tmp_path / "src"
    make_folder(root, n=5, val=0)
    path, problem = corrupt(root)
    with pytest.raises(BadInput) as err:
        ingest(root, dataset_name, progress=False)
    assert err.value.path == path
    assert problem in str(err.value)
    ds = fo.load_dataset(dataset_name)
    # what came before the bad item is stored whole; the bad one and after it are not
    assert sorted(ds.values("key")) == ["img_000", "img_001"]
    assert _files_of(dataset_name, BAD) == []
    for key in ("img_000", "img_001"):
        assert len(_files_of(dataset_name, key)) == 4


@pytest.mark.parametrize(
    "corrupt",
    [_truncated_image, _nan_depth, _non_unit_normal_png],
    ids=lambda f: f.__name__.strip("_"),
)
def test_skip_bad_lists_and_goes_on(tmp_path, dataset_name, corrupt):
    root = tmp_path / "src"
    make_folder(root, n=5, val=0)
    path, _ = corrupt(root)
    report = ingest(root, dataset_name, skip_bad=True, progress=False)
    assert report.added == 4
    assert [e.path for e in report.skipped] == [path]
    assert BAD not in fo.load_dataset(dataset_name).values("key")
    assert _files_of(dataset_name, BAD) == []
    # fixing the file and running again adds just that item
    make_folder(root, n=5, val=0)
    if path.suffix == ".npy":
        path.unlink()
    again = ingest(root, dataset_name, progress=False)
    assert (again.added, again.already_there) == (1, 4)


def test_stop_then_rerun_after_fix_completes(tmp_path, dataset_name):
    root = tmp_path / "src"
    make_folder(root, n=5, val=0)
    _class_out_of_range(root)
    with pytest.raises(BadInput):
        ingest(root, dataset_name, progress=False)
    make_folder(root, n=5, val=0)  # the same bytes again: fixed
    report = ingest(root, dataset_name, progress=False)
    assert (report.added, report.already_there) == (3, 2)


def test_label_without_image(tmp_path, dataset_name):
    root = tmp_path / "src"
    make_folder(root, n=3, val=0)
    stray = root / "depth" / "other_xyz.png"
    stray.write_bytes((root / "depth" / "img_000.png").read_bytes())
    with pytest.raises(BadInput, match="no image in images/ matches") as err:
        ingest(root, dataset_name, progress=False)
    assert err.value.path == stray
    assert not fo.dataset_exists(dataset_name)


def test_split_list_names_missing_image(tmp_path, dataset_name):
    root = tmp_path / "src"
    make_folder(root, n=3, val=1)
    (root / "splits" / "val.txt").write_text("img_002\nimg_404\n")
    with pytest.raises(BadInput, match="line 2: no image with stem 'img_404'") as err:
        ingest(root, dataset_name, progress=False)
    assert err.value.path == root / "splits" / "val.txt"


def test_missing_classes_json(tmp_path, dataset_name):
    root = tmp_path / "src"
    make_folder(root, n=2, val=0)
    (root / "classes.json").unlink()
    with pytest.raises(BadInput, match="needs classes.json"):
        ingest(root, dataset_name, progress=False)
    (root / "classes.json").write_text(json.dumps({"semseg": "floor"}))
    with pytest.raises(BadInput, match="class names"):
        ingest(root, dataset_name, progress=False)


def test_missing_source_folder(tmp_path, dataset_name):
    with pytest.raises(BadInput, match="not a folder"):
        ingest(tmp_path / "nope", dataset_name, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInput, match="no image folder"):
        ingest(tmp_path / "empty", dataset_name, progress=False)


def test_cli_reports_bad_file_and_exit_code(tmp_path, dataset_name, capsys, caplog):
    root = tmp_path / "src"
    make_folder(root, n=4, val=0)
    path, _ = _truncated_image(root)
    assert main(["ingest", str(root), "--name", dataset_name, "-q"]) == 2
    assert str(path) in caplog.text
    assert main(["ingest", str(root), "--name", dataset_name, "-q", "--skip-bad"]) == 0
    out = capsys.readouterr().out
    assert "skipped 1 bad item(s)" in out and str(path) in out
