"""Tiny datasets in the public benchmark layouts (MTAN ``.npy``, ``PASCAL_MT``) for reader tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

from hitts.model.data.label_io import encode_normal

HW = (8, 12)
PERSON_ID, PLAIN_ID, VAL_ID = "2008_000002", "2008_000010", "2009_000001"
CHAIR, AEROPLANE = 72, 2  # PASCAL-Context ids: chair has NYUD normals, aeroplane has not


def unit_normals(rng: np.random.Generator, hw: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) float32 random unit vectors."""
    n = rng.normal(size=(*hw, 3))
    return (n / np.linalg.norm(n, axis=-1, keepdims=True)).astype(np.float32)


def make_mtan(
    root: Path,
    *,
    dataset: str = "nyuv2",
    n_train: int = 3,
    n_val: int = 2,
    hw: tuple[int, int] = HW,
    label_folders: tuple[str, ...] = ("label_7",),
    seed: int = 0,
) -> Path:
    """Write ``root/{train,val}/{image,label*,depth[,normal]}/{i}.npy`` as MTAN stores them.

    Args:
        dataset: ``"nyuv2"`` (label, depth in metres, normal) or ``"cityscapes"`` (the
            ``label_folders``, depth as disparity / 256).
        label_folders: Cityscapes label folders to write (``label_7`` / ``label_19``).
    """
    rng = np.random.default_rng(seed)
    h, w = hw
    for split, n in (("train", n_train), ("val", n_val)):
        d = root / split
        labels = ("label", "normal") if dataset == "nyuv2" else label_folders
        for sub in ("image", "depth", *labels):
            (d / sub).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            np.save(d / "image" / f"{i}.npy", rng.integers(0, 256, (h, w, 3)) / 255.0)
            if dataset == "nyuv2":
                label = rng.integers(-1, 13, (h, w)).astype(np.float32)
                np.save(d / "label" / f"{i}.npy", label)
                depth = rng.uniform(0.5, 10.0, (h, w, 1)).astype(np.float32)
                normal = unit_normals(rng, hw)
                normal[0, :3] = 0.0  # a few invalid pixels
                np.save(d / "normal" / f"{i}.npy", normal)
            else:
                for folder in label_folders:
                    classes = int(folder.split("_")[1])
                    label = rng.integers(-1, classes, (h, w)).astype(np.float32)
                    np.save(d / folder / f"{i}.npy", label)
                counts = rng.integers(1, 32258, (h, w, 1))  # official 16-bit disparity PNG values
                depth = ((counts - 1) / 65536.0).astype(np.float32)
            depth[0, 0] = 0.0  # invalid
            np.save(d / "depth" / f"{i}.npy", depth)
    return root


# ----------------------------------------------------------------------------------------------
# PASCAL_MT


def _struct_array(fields: tuple[str, ...], rows: list[tuple]) -> np.ndarray:
    """A 1xN MATLAB struct array for scipy.io.savemat."""
    array = np.empty((1, len(rows)), dtype=[(f, "O") for f in fields])
    for j, row in enumerate(rows):
        array[0, j] = row
    return array


def human_parts_mat(
    path: Path, objects: list[tuple[int, list[tuple[str, np.ndarray]]]], hw: tuple[int, int]
) -> None:
    """Write a PASCAL-Part ``anno`` struct; ``objects``: [(class_ind, [(part_name, mask), ...])]."""
    rows = []
    for class_ind, parts in objects:
        mask = np.zeros(hw, np.uint8)
        for _, m in parts:
            mask |= m.astype(np.uint8)
        part_array = _struct_array(("part_name", "mask"), parts) if parts else np.zeros((0, 0))
        rows.append(("obj", np.array([[class_ind]], np.uint8), mask, part_array))
    objects_array = _struct_array(("class", "class_ind", "mask", "parts"), rows)
    scipy.io.savemat(path, {"anno": {"imname": path.stem, "objects": objects_array}})


def person_parts(hw: tuple[int, int]) -> list[tuple[str, np.ndarray]]:
    """A person: head in rows 0-1, left upper arm rows 2-3 cols 0-3, right foot rows 6-7."""
    head, arm, foot = (np.zeros(hw, np.uint8) for _ in range(3))
    head[0:2] = 1
    arm[2:4, 0:4] = 1
    foot[6:8] = 1
    return [("head", head), ("luarm", arm), ("rfoot", foot)]


def label_map(hw: tuple[int, int]) -> np.ndarray:
    """(H, W) uint16 PASCAL-Context map: chair on the left half, aeroplane on the right."""
    lm = np.full(hw, CHAIR, np.uint16)
    lm[:, hw[1] // 2 :] = AEROPLANE
    return lm


def make_pascal(root: Path, hw: tuple[int, int] = HW, seed: int = 0) -> Path:
    """Write a ``PASCAL_MT`` folder with two train ids (one with a person) and one val id.

    ``PERSON_ID`` has every label, its semseg under ``semseg/VOC12``; ``PLAIN_ID`` has no person
    (per ``ImageSets/Parts``) and its semseg under ``semseg/pascal-context``; ``VAL_ID`` has a
    person without part masks and no saliency file.
    """
    rng = np.random.default_rng(seed)
    h, w = hw
    ids = {"train": [PLAIN_ID, PERSON_ID], "val": [VAL_ID]}
    for sub in ("JPEGImages", "ImageSets/Context", "ImageSets/Parts", "semseg/VOC12",
                "semseg/pascal-context", "human_parts", "normals_distill", "sal_distill",
                "pascal-context/trainval"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for split, split_ids in ids.items():
        (root / "ImageSets/Context" / f"{split}.txt").write_text("\n".join(split_ids) + "\n")
    parts_lists = {"train": {PERSON_ID: [15, 9], PLAIN_ID: [9]}, "val": {VAL_ID: [15]}}
    for split, listing in parts_lists.items():
        (root / "ImageSets/Parts" / f"{split}.txt").write_text(json.dumps(listing))
    for id_ in (PERSON_ID, PLAIN_ID, VAL_ID):
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(root / "JPEGImages" / f"{id_}.jpg", quality=95)
        semseg = rng.integers(0, 21, hw).astype(np.uint8)
        semseg[0, 0] = 255
        folder = "semseg/pascal-context" if id_ == PLAIN_ID else "semseg/VOC12"
        Image.fromarray(semseg).save(root / folder / f"{id_}.png")
        objects = {PERSON_ID: [(15, person_parts(hw)), (9, [])], PLAIN_ID: [(9, [])],
                   VAL_ID: [(15, [])]}[id_]
        human_parts_mat(root / "human_parts" / f"{id_}.mat", objects, hw)
        Image.fromarray(encode_normal(unit_normals(rng, hw))).save(
            root / "normals_distill" / f"{id_}.png"
        )
        if id_ != VAL_ID:
            grey = np.tile(np.linspace(0, 255, w).round().astype(np.uint8), (h, 1))
            grey[:, 0], grey[:, 1] = 127, 128  # either side of the 0.5 threshold
            Image.fromarray(grey).save(root / "sal_distill" / f"{id_}.png")
        context = root / "pascal-context/trainval" / f"{id_}.mat"
        scipy.io.savemat(context, {"LabelMap": label_map(hw)})
    return root
