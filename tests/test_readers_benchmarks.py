"""Readers of the benchmark layouts (MTAN ``.npy``, ``PASCAL_MT``) and of MTPSL's split files."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from fixtures_benchmarks import (
    HW,
    PERSON_ID,
    PLAIN_ID,
    VAL_ID,
    human_parts_mat,
    make_mtan,
    make_pascal,
)
from PIL import Image

from hitts.model.data.errors import BadInput
from hitts.model.data.label_io import encode_depth
from hitts.model.data.mtan import CityscapesMtanReader, NYUv2MtanReader
from hitts.model.data.pascal_context import PascalContextReader
from hitts.model.data.source import SourceItem
from hitts.model.data.split_files import read_split_file

_HERE = Path(__file__).resolve().parent
SETTINGS = next(
    (p for p in (_HERE / "data/mtpsl-settings", _HERE.parents[1] / "shared/data/mtpsl-settings")
     if p.is_dir()),
    None,
)
needs_settings = pytest.mark.skipif(SETTINGS is None, reason="MTPSL split files not available")


def expect_bad(fn, path: Path, *words: str) -> BadInput:
    """Call ``fn``; it must raise BadInput naming ``path`` and saying each of ``words``."""
    with pytest.raises(BadInput) as info:
        fn()
    message = str(info.value)
    assert str(path) in message, message
    for word in words:
        assert word.lower() in message.lower(), message
    return info.value


# ----------------------------------------------------------------------------------------------
# MTAN layouts


def test_nyuv2_items_sorted_numerically_with_existing_labels(tmp_path):
    root = make_mtan(tmp_path, n_train=12, n_val=2)
    (root / "train/depth/5.npy").unlink()
    reader = NYUv2MtanReader(root)
    items = reader.items()
    assert [it.key for it in items] == [f"train/{i}" for i in range(12)] + ["val/0", "val/1"]
    assert items[0].tasks == ("semseg", "depth", "normal")
    assert items[5].tasks == ("semseg", "normal")
    assert [t.name for t in reader.tasks] == ["semseg", "depth", "normal"]
    assert reader.task("semseg").num_classes == 13 and reader.depth_unit == 0.001


def test_nyuv2_load_gives_canonical_labels(tmp_path):
    root = make_mtan(tmp_path)
    reader = NYUv2MtanReader(root)
    ex = reader.load(reader.items()[0])
    assert ex.key == "train/0" and ex.split == "train" and ex.image_path is None
    assert ex.image.dtype == np.uint8 and ex.image.shape == (*HW, 3)
    np.testing.assert_array_equal(ex.image, np.round(np.load(root / "train/image/0.npy") * 255))
    semseg, depth, normal = ex.labels["semseg"], ex.labels["depth"], ex.labels["normal"]
    assert semseg.dtype == np.int64 and semseg.min() == -1 and semseg.max() <= 12
    np.testing.assert_array_equal(semseg, np.load(root / "train/label/0.npy").astype(np.int64))
    assert depth.dtype == np.float32 and depth.shape == HW and depth[0, 0] == 0
    assert normal.shape == (*HW, 3) and np.all(normal[0, :3] == 0)
    assert np.allclose(np.linalg.norm(normal[1:], axis=-1), 1, atol=1e-5)


@pytest.mark.parametrize(
    "folders, num_classes, expected",
    [(("label_7",), None, 7), (("label_19",), None, 19), (("label_7", "label_19"), None, 7),
     (("label_7", "label_19"), 19, 19)],
)
def test_cityscapes_class_count(tmp_path, folders, num_classes, expected):
    root = make_mtan(tmp_path, dataset="cityscapes", label_folders=folders)
    reader = CityscapesMtanReader(root, num_classes=num_classes)
    assert reader.num_classes == expected and reader.task("semseg").num_classes == expected
    assert [t.name for t in reader.tasks] == ["semseg", "depth"]
    item = reader.items()[0]
    assert item.labels["semseg"].parent.name == f"label_{expected}"
    assert reader.load(item).labels["semseg"].max() < expected


def test_cityscapes_class_count_errors(tmp_path):
    root = make_mtan(tmp_path, dataset="cityscapes", label_folders=("label_7",))
    missing = root / "train/label_19"
    expect_bad(lambda: CityscapesMtanReader(root, num_classes=19), missing, "label_7")
    with pytest.raises(ValueError, match="7 or 19"):
        CityscapesMtanReader(root, num_classes=5)


def test_cityscapes_depth_unit_keeps_the_disparity_precision(tmp_path):
    root = make_mtan(tmp_path, dataset="cityscapes")
    reader = CityscapesMtanReader(root)
    depth = reader.load(reader.items()[0]).labels["depth"]
    counts = encode_depth(depth, reader.depth_unit)  # what the store writes
    np.testing.assert_array_equal(counts, np.round(depth.astype(np.float64) * 65536))
    np.testing.assert_allclose(counts * reader.depth_unit, depth, rtol=0, atol=1e-7)
    assert 65535 * reader.depth_unit > 0.4922  # the largest value of the released data fits


@pytest.mark.parametrize("reader_cls", [NYUv2MtanReader, CityscapesMtanReader])
def test_mtan_root_without_train_folder(tmp_path, reader_cls):
    expect_bad(lambda: reader_cls(tmp_path / "missing"), tmp_path / "missing", "train", "image")
    (tmp_path / "stray.txt").write_text("x")
    expect_bad(lambda: reader_cls(tmp_path), tmp_path, "ROOT/train", "stray.txt")


def _unit(hw=HW) -> np.ndarray:
    n = np.zeros((*hw, 3), np.float32)
    n[..., 2] = 1
    return n


MTAN_BAD = {
    "image missing": ("image", None, "file not found"),
    "label missing": ("label", None, "file not found"),
    "image shape": ("image", np.zeros(HW), "shape"),
    "image dtype": ("image", np.zeros((*HW, 3), np.uint8), "dtype"),
    "image nan": ("image", np.full((*HW, 3), np.nan), "NaN"),
    "image 0..255": ("image", np.full((*HW, 3), 200.0), "[0, 1]"),
    "class id": ("label", np.full(HW, 13.0, np.float32), "out of range"),
    "label nan": ("label", np.full(HW, np.nan, np.float32), "NaN"),
    "label hw": ("label", np.zeros((8, 10), np.float32), "8x10"),
    "label fraction": ("label", np.full(HW, 1.5, np.float32), "non-integer"),
    "depth dtype": ("depth", np.ones((*HW, 1), np.int32), "dtype"),
    "depth nan": ("depth", np.full((*HW, 1), np.nan, np.float32), "NaN"),
    "depth shape": ("depth", np.ones((*HW, 2), np.float32), "shape"),
    "depth negative": ("depth", -np.ones((*HW, 1), np.float32), "negative"),
    "normal non-unit": ("normal", 2 * _unit(), "non-unit"),
    "normal shape": ("normal", np.ones(HW, np.float32), "shape"),
    "normal pickled": ("normal", np.array([{"n": 1}], dtype=object), "unreadable"),
}


@pytest.mark.parametrize("case", list(MTAN_BAD))
def test_mtan_bad_files_are_named(tmp_path, case):
    folder, array, word = MTAN_BAD[case]
    root = make_mtan(tmp_path)
    reader = NYUv2MtanReader(root)
    item = reader.items()[0]
    path = root / "train" / folder / "0.npy"
    if array is None:
        path.unlink()
    else:
        np.save(path, array, allow_pickle=array.dtype == object)
    expect_bad(lambda: reader.load(item), path, word)


# ----------------------------------------------------------------------------------------------
# PASCAL_MT


def test_pascal_items(tmp_path):
    root = make_pascal(tmp_path / "PASCAL_MT")
    reader = PascalContextReader(tmp_path)  # the folder holding PASCAL_MT works too
    assert reader.root == root
    items = {it.key: it for it in reader.items()}
    assert list(items) == [f"train/{PERSON_ID}", f"train/{PLAIN_ID}", f"val/{VAL_ID}"]
    person, plain, val = items.values()
    assert person.tasks == ("semseg", "human_parts", "sal", "normal", "edge")
    assert person.labels["semseg"] == root / f"semseg/VOC12/{PERSON_ID}.png"
    assert plain.labels["semseg"] == root / f"semseg/pascal-context/{PLAIN_ID}.png"
    assert "human_parts" not in plain.labels  # ImageSets/Parts lists no person
    assert val.tasks == ("semseg", "human_parts", "normal", "edge")
    assert [t.name for t in reader.tasks] == ["semseg", "human_parts", "sal", "normal", "edge"]


def test_pascal_load_derives_labels_as_the_reference(tmp_path):
    root = make_pascal(tmp_path)
    reader = PascalContextReader(root)
    items = {it.key: it for it in reader.items()}
    ex = reader.load(items[f"train/{PERSON_ID}"])
    assert ex.image.shape == (*HW, 3) and ex.image.dtype == np.uint8
    assert ex.image_path == root / f"JPEGImages/{PERSON_ID}.jpg"
    semseg = np.asarray(Image.open(root / f"semseg/VOC12/{PERSON_ID}.png")).astype(np.int64)
    semseg[semseg == 255] = -1
    np.testing.assert_array_equal(ex.labels["semseg"], semseg)
    parts = np.zeros(HW, np.int64)
    parts[0:2], parts[2:4, 0:4], parts[6:8] = 1, 3, 6  # head, upper arm, lower leg (foot)
    np.testing.assert_array_equal(ex.labels["human_parts"], parts)
    sal = ex.labels["sal"]
    assert set(np.unique(sal)) == {0, 1} and np.all(sal[:, 0] == 0) and np.all(sal[:, 1] == 1)
    normal = ex.labels["normal"]
    png = np.asarray(Image.open(root / f"normals_distill/{PERSON_ID}.png")) / 127.5 - 1
    assert np.allclose(normal[:, :6], png[:, :6], atol=0.01)  # chair: NYUD class, kept
    assert np.all(normal[:, 6:] == 0)  # aeroplane: no NYUD normals, invalid
    edge = np.zeros(HW, np.int64)
    edge[1:, 5] = 1  # the thinned Laplacian of the chair / aeroplane boundary
    np.testing.assert_array_equal(ex.labels["edge"], edge)
    val = reader.load(items[f"val/{VAL_ID}"])
    assert sorted(val.labels) == ["edge", "normal", "semseg"]  # a person without part masks


def test_pascal_root_errors(tmp_path):
    expect_bad(lambda: PascalContextReader(tmp_path), tmp_path, "JPEGImages", "ImageSets")
    root = make_pascal(tmp_path / "p")
    parts = root / "ImageSets/Parts/train.txt"
    good = parts.read_text()
    parts.write_text("{not json")
    expect_bad(lambda: PascalContextReader(root).items(), parts, "JSON")
    parts.write_text(good)
    ids = root / "ImageSets/Context/train.txt"
    ids.write_text(f"{PERSON_ID}\n{PERSON_ID}\n")
    expect_bad(lambda: PascalContextReader(root).items(), ids, "more than once")


def _png(path: Path, array: np.ndarray) -> None:
    Image.fromarray(array).save(path)


PASCAL_BAD = {
    "image missing": (f"JPEGImages/{PERSON_ID}.jpg", lambda p: p.unlink(), "file not found"),
    "semseg class": (f"semseg/VOC12/{PERSON_ID}.png",
                     lambda p: _png(p, np.full(HW, 30, np.uint8)), "out of range"),
    "semseg hw": (f"semseg/VOC12/{PERSON_ID}.png",
                  lambda p: _png(p, np.zeros((8, 10), np.uint8)), "8x10"),
    "sal rgb": (f"sal_distill/{PERSON_ID}.png",
                lambda p: _png(p, np.zeros((*HW, 3), np.uint8)), "mode"),
    "normal non-unit": (f"normals_distill/{PERSON_ID}.png",
                        lambda p: _png(p, np.full((*HW, 3), 160, np.uint8)), "unit normals"),
    "normal grey": (f"normals_distill/{PERSON_ID}.png",
                    lambda p: _png(p, np.zeros(HW, np.uint8)), "mode"),
    "parts no anno": (f"human_parts/{PERSON_ID}.mat",
                      lambda p: scipy.io.savemat(p, {"foo": 1}), "anno"),
    "parts unknown": (f"human_parts/{PERSON_ID}.mat",
                      lambda p: human_parts_mat(p, [(15, [("tail", np.ones(HW))])], HW), "tail"),
    "parts corrupt": (f"human_parts/{PERSON_ID}.mat",
                      lambda p: p.write_bytes(b"MATLAB garbage"), "unreadable"),
    "no LabelMap": (f"pascal-context/trainval/{PERSON_ID}.mat",
                    lambda p: scipy.io.savemat(p, {"Map": np.zeros(HW)}), "LabelMap"),
    "LabelMap hw": (f"pascal-context/trainval/{PERSON_ID}.mat",
                    lambda p: scipy.io.savemat(p, {"LabelMap": np.zeros((8, 10))}), "8x10"),
}


@pytest.mark.parametrize("case", list(PASCAL_BAD))
def test_pascal_bad_files_are_named(tmp_path, case):
    rel, spoil, word = PASCAL_BAD[case]
    root = make_pascal(tmp_path)
    reader = PascalContextReader(root)
    item = next(it for it in reader.items() if it.key == f"train/{PERSON_ID}")
    spoil(root / rel)
    expect_bad(lambda: reader.load(item), root / rel, word)


# ----------------------------------------------------------------------------------------------
# split files


def train_items(keys, n_val: int = 3) -> list[SourceItem]:
    """Items ``train/{key}`` plus a few val items."""
    items = [SourceItem(f"train/{k}", "train", Path(f"{k}.npy")) for k in keys]
    return items + [SourceItem(f"val/{i}", "val", Path(f"v{i}.npy")) for i in range(n_val)]


@needs_settings
def test_nyuv2_published_settings():
    tasks = ("semseg", "depth", "normal")
    one = read_split_file(SETTINGS / "nyuv2_settings/onelabel.pth", train_items(range(795)), tasks)
    assert len(one) == 795 and all(len(kept) == 1 for kept in one.values())
    assert Counter(t for kept in one.values() for t in kept) == dict.fromkeys(tasks, 265)
    rand_path = SETTINGS / "nyuv2_settings/randomlabels.pth"
    rand = read_split_file(rand_path, train_items(range(795)), tasks)
    assert Counter(len(kept) for kept in rand.values()) == {1: 405, 2: 390}


@needs_settings
def test_cityscapes_published_setting():
    kept = read_split_file(
        SETTINGS / "cityscapes_settings/onelabel.pth", train_items(range(2975)), ("semseg", "depth")
    )
    assert len(kept) == 2975 and all(len(k) == 1 for k in kept.values())


@needs_settings
@pytest.mark.parametrize("name", ["onelabel", "randomlabels"])
def test_pascal_published_settings(name):
    path = SETTINGS / f"pascal_settings/{name}.npy"
    reference = np.load(path, allow_pickle=True).item()  # a trusted copy, to compare against
    ids = sorted(set().union(*reference.values()))
    tasks = ("semseg", "human_parts", "sal", "normal", "edge")
    kept = read_split_file(path, train_items([*ids, "2099_999999"]), tasks)
    assert kept["train/2099_999999"] == ()
    file_names = {"semseg": "semseg", "human_parts": "human_parts", "sal": "sal",
                  "normal": "normals", "edge": "edge"}
    for task, file_name in file_names.items():
        expected = {f"train/{i}" for i in reference[file_name]}
        assert {k for k, v in kept.items() if task in v} == expected
    if name == "onelabel":
        assert len(ids) == 4998 and all(len(kept[f"train/{i}"]) == 1 for i in ids)


class _Mkdir:
    """Pickles as a call to os.mkdir: loading it must not create the folder."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (str(self.target),))


def _npy(path: Path, obj) -> Path:
    np.save(path, np.array(obj, dtype=object), allow_pickle=True)
    return path


def _bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _txt(path: Path) -> Path:
    path.write_text("1 0")
    return path


def _pth(path: Path, obj) -> Path:
    torch.save(obj, path)
    return path


PASCAL_TASKS = ("semseg", "human_parts", "sal", "normal", "edge")
_LISTS = {"semseg": ["a"], "human_parts": [], "sal": ["b"], "normals": [], "edge": []}


@needs_settings
def test_split_file_shape_errors():
    nyu = SETTINGS / "nyuv2_settings/onelabel.pth"
    tasks = ("semseg", "depth", "normal")
    expect_bad(lambda: read_split_file(nyu, train_items(range(794)), tasks), nyu, "795 rows", "794")
    expect_bad(lambda: read_split_file(nyu, train_items(range(795)), tasks[:2]), nyu, "3 columns")
    keys = [f"x{i}" for i in range(795)]
    expect_bad(lambda: read_split_file(nyu, train_items(keys), tasks), nyu, "train/0", "not among")


SPLIT_BAD = {
    "values": (lambda p: _pth(p, {"labels_weights": torch.tensor([[0.5, 1.0]])}), "0 or 1"),
    "key": (lambda p: _pth(p, {"weights": torch.ones(1, 2)}), "labels_weights"),
    "type": (lambda p: _pth(p, [1, 2]), "dict"),
    "not tensor": (lambda p: _pth(p, {"labels_weights": [[1.0, 0.0]]}), "tensor"),
    "1-d": (lambda p: _pth(p, {"labels_weights": torch.ones(2)}), "shape"),
    "garbage": (lambda p: _bytes(p, b"not a torch file"), "unreadable"),
    "pth code": (lambda p: _pth(p, {"labels_weights": _Mkdir(p.parent / "pwned")}), "unreadable"),
    "npy code": (lambda p: _npy(p.with_suffix(".npy"), {"semseg": _Mkdir(p.parent / "pwned")}),
                 "refusing"),
    "npy not dict": (lambda p: _npy(p.with_suffix(".npy"), "semseg"), "dict"),
    "npy 1-d": (lambda p: _npy(p.with_suffix(".npy"), ["a", "b"]), "matrix"),
    "npy ids": (lambda p: _npy(p.with_suffix(".npy"), {**_LISTS, "sal": ["zz"]}), "zz"),
    "npy task": (lambda p: _npy(p.with_suffix(".npy"), {**_LISTS, "depth": []}), "depth"),
    "npy tasks": (lambda p: _npy(p.with_suffix(".npy"), {"semseg": ["a"]}), "has tasks"),
    "npy strings": (lambda p: _npy(p.with_suffix(".npy"), {**_LISTS, "edge": [1, 2]}), "strings"),
    "suffix": (lambda p: _txt(p.with_suffix(".txt")), "unknown split file type"),
}


@pytest.mark.parametrize("case", list(SPLIT_BAD))
def test_split_file_bad_files_are_named(tmp_path, case):
    make, word = SPLIT_BAD[case]
    path = make(tmp_path / "split.pth")
    is_pascal = path.suffix == ".npy"
    items = train_items(["a", "b"] if is_pascal else range(1))
    tasks = PASCAL_TASKS if is_pascal else ("semseg", "depth")
    expect_bad(lambda: read_split_file(path, items, tasks), path, word)
    assert not (tmp_path / "pwned").exists()


def test_split_file_numeric_npy_and_missing_file(tmp_path):
    path = tmp_path / "eye.npy"
    np.save(path, np.eye(2))
    kept = read_split_file(path, train_items(range(2)), ("semseg", "depth"))
    assert kept == {"train/0": ("semseg",), "train/1": ("depth",)}
    expect_bad(lambda: read_split_file(tmp_path / "no.pth", [], ("semseg",)), tmp_path / "no.pth",
               "not found")
