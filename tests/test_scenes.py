"""The procedural scene generator: label forms, geometry, sensor holes, determinism, files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from hitts.model.data import scene_render as sr
from hitts.model.data.folder import FolderReader
from hitts.model.data.label_io import read_image, read_label
from hitts.model.data.scenes import (
    SceneConfig,
    generate_scenes,
    render_scene,
    scene_stem,
    split_sizes,
)
from hitts.model.tasks import SCENE_CLASSES, scene_tasks, valid_mask

CFG = SceneConfig()
N_SCENES = 12


@pytest.fixture(scope="module")
def scenes():
    return [render_scene(7, CFG, index=i) for i in range(N_SCENES)]


def _unit_rays(cfg: SceneConfig) -> np.ndarray:
    """(H, W, 3) unit camera-frame pixel rays from the stated intrinsics."""
    k = cfg.intrinsics()
    v, u = np.mgrid[: cfg.height, : cfg.width].astype(np.float64)
    ray = np.stack([(u - k["cx"]) / k["fx"], (v - k["cy"]) / k["fy"], np.ones_like(u)], axis=-1)
    return ray / np.linalg.norm(ray, axis=-1, keepdims=True)


def _tree_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file()
    }


# ----------------------------------------------------------------------------------------------
# rendered arrays


def test_shapes_dtypes_and_ranges(scenes):
    h, w = CFG.height, CFG.width
    for s in scenes:
        assert s.image.shape == (h, w, 3) and s.image.dtype == np.uint8
        assert s.semseg.shape == (h, w) and s.semseg.dtype == np.int64
        assert s.depth.shape == (h, w) and s.depth.dtype == np.float32
        assert s.normal.shape == (h, w, 3) and s.normal.dtype == np.float32
        assert s.edge.shape == (h, w) and s.edge.dtype == np.int64
        assert 0 <= s.semseg.min() and s.semseg.max() < len(SCENE_CLASSES)
        assert set(np.unique(s.edge)) <= {0, 1}
        assert np.all(np.isfinite(s.depth)) and s.depth.min() >= 0
        assert s.depth.max() <= CFG.max_range
        assert np.all(np.isfinite(s.normal))
        assert s.image.std() > 10  # not blank


def test_other_sizes_and_options():
    cfg = SceneConfig(height=40, width=72, shadows=False, noise_std=0.0, objects=(0, 0))
    s = render_scene(1, cfg)
    assert s.image.shape == (40, 72, 3) and s.depth.shape == (40, 72)
    assert set(np.unique(s.semseg)) <= {0, 1, 2}  # no objects: floor, wall, ceiling only


def test_normals_are_unit_complete_and_face_the_camera(scenes):
    rays = _unit_rays(CFG)
    for s in scenes:
        norm = np.linalg.norm(s.normal, axis=-1)
        np.testing.assert_allclose(norm, 1.0, atol=1e-5)  # complete: no invalid normals
        facing = np.sum(s.normal * rays, axis=-1)
        assert facing.max() < 0
        assert np.median(facing) < -0.2


def test_floor_normal_matches_the_depth_plane(scenes):
    """Back-projected floor depths lie on one plane whose normal is the floor's normal label, the
    camera's up direction (negative y in the OpenCV camera frame), at the camera's height."""
    k = CFG.intrinsics()
    v, u = np.mgrid[: CFG.height, : CFG.width].astype(np.float64)
    for s in scenes:
        floor = (s.semseg == 0) & (s.depth > 0)
        assert floor.sum() > 100
        z = s.depth[floor].astype(np.float64)
        x, y = (u[floor] - k["cx"]) / k["fx"] * z, (v[floor] - k["cy"]) / k["fy"] * z
        pts = np.stack([x, y, z], axis=1)  # (M, 3) camera-frame points
        centre = pts.mean(0)
        plane_n = np.linalg.svd(pts - centre, full_matrices=False)[2][-1]
        labels = s.normal[s.semseg == 0].astype(np.float64)
        np.testing.assert_allclose(labels, labels[0][None].repeat(len(labels), 0), atol=1e-5)
        n = labels[0]
        assert abs(abs(plane_n @ n) - 1) < 1e-4  # same plane orientation as the depths
        assert n[1] < -0.85  # up is -y; pitch is small
        height = -(centre @ n)  # the camera is at distance `height` above the floor plane
        assert CFG.camera_height[0] - 1e-3 <= height <= CFG.camera_height[1] + 1e-3


def test_all_classes_appear(scenes):
    seen = set()
    for s in scenes:
        seen |= set(np.unique(s.semseg).tolist())
    assert seen == set(range(len(SCENE_CLASSES)))


def test_depth_is_mostly_valid_with_some_holes(scenes):
    valid = np.array([(s.depth > 0).mean() for s in scenes])
    assert valid.min() > 0.85
    assert np.all(valid < 1.0)  # every scene has sensor holes
    for s in scenes:
        assert s.depth[s.depth > 0].min() > 0.3  # nothing sits on the lens


def test_projector_shadow_width_follows_the_disparity_jump():
    depth = np.full((4, 60), 4.0)
    depth[:, 30:] = 1.0  # a near object on the right half
    fx, baseline = 100.0, 0.075
    shadow = sr.projector_shadow(depth, fx, baseline)
    width = fx * baseline * (1 / 1.0 - 1 / 4.0)  # 5.6 px of background the projector cannot see
    expected = np.zeros(60, dtype=bool)
    expected[30 - int(np.floor(width)) : 30] = True
    assert np.array_equal(shadow[0], expected)
    assert not sr.projector_shadow(np.full((4, 60), 2.0), fx, baseline).any()


def test_edges_cover_class_boundaries_and_stay_thin(scenes):
    for s in scenes:
        dh = s.semseg[:, 1:] != s.semseg[:, :-1]
        dv = s.semseg[1:] != s.semseg[:-1]
        assert dh.any() or dv.any()
        assert np.all(s.edge[:, 1:][dh] == 1) and np.all(s.edge[:, :-1][dh] == 1)
        assert np.all(s.edge[1:][dv] == 1) and np.all(s.edge[:-1][dv] == 1)
        assert 0.01 < s.edge.mean() < 0.2
        # a 2 px line: no edge pixel is the centre of a 3x3 all-edge block
        e = s.edge.astype(bool)
        block = np.ones_like(e[1:-1, 1:-1])
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                block &= e[1 + dy : e.shape[0] - 1 + dy, 1 + dx : e.shape[1] - 1 + dx]
        assert block.mean() < 0.01


def test_edges_cover_depth_discontinuities(scenes):
    """Neighbours whose valid depths differ by more than 20% sit on an edge (smooth surfaces stay
    below about 11% between neighbouring pixels at these sizes)."""
    for s in scenes:
        d, e = s.depth.astype(np.float64), s.edge
        for a, b, ea, eb in ((d[:, 1:], d[:, :-1], e[:, 1:], e[:, :-1]),
                             (d[1:], d[:-1], e[1:], e[:-1])):
            both = (a > 0) & (b > 0)
            jump = np.zeros_like(a)
            jump[both] = np.abs(a - b)[both] / np.minimum(a, b)[both]
            assert np.all(ea[jump > 0.2] == 1) and np.all(eb[jump > 0.2] == 1)


def test_image_colour_is_a_cue_for_the_class(scenes):
    """A nearest-class-mean classifier on pixel colours alone beats chance by far."""
    pixels = np.concatenate([s.image.reshape(-1, 3) for s in scenes]).astype(np.float64)
    labels = np.concatenate([s.semseg.ravel() for s in scenes])
    means = np.stack([pixels[labels == c].mean(0) for c in range(len(SCENE_CLASSES))])
    assert np.min([np.linalg.norm(means[a] - means[b]) for a in range(6) for b in range(a)]) > 10
    pred = np.argmin(((pixels[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    recall = [np.mean(pred[labels == c] == c) for c in range(len(SCENE_CLASSES))]
    assert np.mean(recall) > 0.4  # chance: 1/6


def test_same_seed_same_arrays_other_seed_other_arrays():
    a, b = render_scene(3, CFG, index=2), render_scene(3, CFG, index=2)
    for name in ("image", "semseg", "depth", "normal", "edge"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.image, render_scene(4, CFG, index=2).image)
    assert not np.array_equal(a.image, render_scene(3, CFG, index=3).image)


def test_config_checks():
    with pytest.raises(ValueError, match="room_width"):
        SceneConfig(room_width=(5.0, 4.0))
    with pytest.raises(ValueError, match="8x8"):
        SceneConfig(height=4)
    with pytest.raises(ValueError, match="max_range"):
        SceneConfig(max_range=100.0)


# ----------------------------------------------------------------------------------------------
# files


SMALL = SceneConfig(height=48, width=64)


def test_files_round_trip_through_label_io(tmp_path):
    out = generate_scenes(tmp_path / "ds", 3, SMALL, seed=5, val_fraction=0.34, progress=False)
    tasks = {t.name: t for t in scene_tasks()}
    meta = json.loads((out / "meta.json").read_text())
    assert meta["seed"] == 5 and meta["count"] == 3 and meta["size"] == [48, 64]
    assert meta["depth_unit"] == 0.001 and set(meta["intrinsics"]) == {"fx", "fy", "cx", "cy"}
    assert json.loads((out / "classes.json").read_text()) == {"semseg": list(SCENE_CLASSES)}
    assert (out / "splits" / "train.txt").read_text().split() == [scene_stem(0), scene_stem(1)]
    assert (out / "splits" / "val.txt").read_text().split() == [scene_stem(2)]
    for i in range(3):
        s, stem = render_scene(5, SMALL, index=i), scene_stem(i)
        assert np.array_equal(read_image(out / "images" / f"{stem}.png"), s.image)
        hw = s.image.shape[:2]
        semseg = read_label(tasks["semseg"], out / "semseg" / f"{stem}.png", hw)
        edge = read_label(tasks["edge"], out / "edge" / f"{stem}.png", hw)
        depth = read_label(tasks["depth"], out / "depth" / f"{stem}.png", hw)
        normal = read_label(tasks["normal"], out / "normal" / f"{stem}.png", hw)
        assert np.array_equal(semseg, s.semseg) and np.array_equal(edge, s.edge)
        assert np.array_equal(valid_mask("depth", depth), s.depth > 0)
        assert np.abs(depth - s.depth).max() <= 0.0005 + 1e-6  # millimetre rounding
        assert valid_mask("normal", normal).all()
        assert np.abs(normal - s.normal).max() < 0.01  # 8-bit quantisation


def test_folder_reader_reads_the_output(tmp_path):
    out = generate_scenes(tmp_path / "ds", 5, SMALL, seed=1, progress=False)
    reader = FolderReader(out)
    assert [t.name for t in reader.tasks] == ["semseg", "depth", "normal", "edge"]
    items = reader.items()
    assert [it.split for it in items] == ["train"] * 4 + ["val"]
    ex = reader.load(items[-1])
    assert ex.image.shape == (48, 64, 3) and set(ex.labels) == {"semseg", "depth", "normal", "edge"}


def test_files_are_byte_identical_and_resumable(tmp_path):
    a = generate_scenes(tmp_path / "a", 4, SMALL, seed=9, progress=False)
    b = generate_scenes(tmp_path / "b", 2, SMALL, seed=9, progress=False)
    (b / "images" / f"{scene_stem(1)}.png").unlink()  # an interrupted scene
    generate_scenes(b, 4, SMALL, seed=9, progress=False)  # resume and extend
    generate_scenes(a, 4, SMALL, seed=9, progress=False)  # a rerun changes nothing
    assert _tree_hashes(a) == _tree_hashes(b)
    c = generate_scenes(tmp_path / "c", 4, SMALL, seed=10, progress=False)
    ha, hc = _tree_hashes(a), _tree_hashes(c)
    assert all(ha[k] != hc[k] for k in ha if k.startswith("images/"))


def test_refuses_foreign_or_mismatched_folders(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(ValueError, match=str(a_file)):
        generate_scenes(a_file, 1, SMALL, seed=0, progress=False)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="no meta.json"):
        generate_scenes(foreign, 1, SMALL, seed=0, progress=False)
    out = generate_scenes(tmp_path / "ds", 2, SMALL, seed=0, progress=False)
    with pytest.raises(ValueError, match="seed"):
        generate_scenes(out, 2, SMALL, seed=1, progress=False)
    with pytest.raises(ValueError, match="size"):
        generate_scenes(out, 2, SceneConfig(height=48, width=72), seed=0, progress=False)
    with pytest.raises(ValueError, match="count"):
        generate_scenes(out, 1, SMALL, seed=0, progress=False)
    with pytest.raises(ValueError, match="val_fraction"):
        generate_scenes(tmp_path / "new", 2, SMALL, seed=0, val_fraction=1.5, progress=False)


def test_split_sizes_round_half_up():
    assert split_sizes(10, 0.2) == (8, 2)
    assert split_sizes(5, 0.5) == (2, 3)
    assert split_sizes(3, 0.0) == (3, 0)
