"""The built-in procedural scene generator: indoor rooms with exact labels for four dense tasks.

A scene is a box room (floor, four walls, ceiling) holding a few boxes (turned about the vertical),
spheres and upright cylinders that stand on the floor, seen by a pinhole camera at a random height,
yaw and downward pitch, lit by one point light plus ambient. Every pixel casts one ray
(:mod:`hitts.model.data.scene_render`); the nearest hit gives all labels:

- ``semseg``: the hit surface's class, ids as in :data:`hitts.model.tasks.SCENE_CLASSES`. Complete.
- ``depth``: z-depth along the optical axis in metres, with the invalid pixels (0) of a
  structured-light sensor such as the Kinect behind NYUD-v2 (the only label with holes):
  projector shadows (background pixels just left of a nearer object that a projector
  ``baseline`` metres to the right of the camera cannot see; their width follows the disparity
  jump, so they widen with resolution), a random share of the pixels along object outlines,
  surfaces seen at grazing angles, readings beyond ``max_range`` and a few random dropout blobs.
  Valid depths are exact.
- ``normal``: unit surface normals in the camera frame (OpenCV: x right, y down, z forward), always
  facing the camera (``n · ray < 0``). Complete: the surface is known even where the sensor fails.
- ``edge``: 1 where a pixel's 4-neighbour lies on another class or another object (class
  boundaries and occlusion outlines, which are the depth discontinuities), marked on both sides:
  lines 2 px wide. Creases inside one class (wall meets wall, faces of one box) are not edges.
  Complete.

The image carries the cues: class-typical colour ranges (an object's hue is drawn from its class's
range with probability ``typical_colour``, else from the whole circle) and class-typical textures in
surface coordinates (checker floor, striped walls, plain ceiling, diagonal stripes on boxes,
meridian bands on spheres, rings on cylinders), Lambertian shading with distance fall-off and cast
shadows, a gamma of 2.2 and Gaussian sensor noise.

Intrinsics are shared by all scenes of a size: square pixels, ``fx = fy = (W / 2) / tan(hfov / 2)``,
principal point at the image centre ``((W - 1) / 2, (H - 1) / 2)`` with integer pixel coordinates
at pixel centres.

Files: :func:`generate_scenes` writes the folder layout of :mod:`hitts.model.data.folder`
(``images/``, ``semseg/``, ``depth/``, ``normal/``, ``edge/``, ``classes.json``, ``splits/``,
``meta.json``); the last ``round(count * val_fraction)`` scenes form the val split.

Reproducibility: scene ``i`` of seed ``s`` draws everything from
``numpy.random.SeedSequence([s, i])``, so it does not depend on how many scenes are generated;
``render_scene(s, config)`` is scene 0. Outputs are byte-identical across runs with the same numpy
on the same platform (floating-point library functions may differ in the last bit elsewhere).
"""

from __future__ import annotations

import colorsys
import json
import logging
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from hitts.model.data import scene_render as sr
from hitts.model.data.label_io import (
    DEFAULT_DEPTH_UNIT,
    atomic_write_bytes,
    write_label,
    write_png,
)
from hitts.model.tasks import SCENE_CLASSES, scene_tasks

log = logging.getLogger(__name__)

# Class-typical appearance: HSV ranges (hue in degrees) of the base colours.
_HSV = {
    sr.FLOOR: ((15, 45), (0.25, 0.6), (0.35, 0.65)),  # wood and terracotta
    sr.WALL: ((0, 360), (0.04, 0.2), (0.65, 0.9)),  # pale paint
    sr.CEILING: ((0, 360), (0.0, 0.05), (0.85, 0.95)),  # off-white
    sr.BOX: ((0, 50), (0.5, 0.85), (0.5, 0.85)),  # reds to yellows
    sr.SPHERE: ((190, 260), (0.5, 0.9), (0.45, 0.85)),  # blues
    sr.CYLINDER: ((85, 160), (0.45, 0.85), (0.4, 0.8)),  # greens
}
_OBJECT_CLASSES = (sr.BOX, sr.SPHERE, sr.CYLINDER)
_OBJECT_KEY = 16  # edge keys: room faces use their class id, object k uses _OBJECT_KEY + k


@dataclass
class SceneConfig:
    """How scenes are drawn. Lengths in metres, angles in degrees, (lo, hi) ranges are uniform."""

    height: int = 96  # image rows; 3:4 like NYUD-v2's 480x640 and small enough to train on a CPU
    width: int = 128  # image columns
    hfov_deg: float = 62.0  # horizontal field of view, about that of the Kinect v1 behind NYUD-v2
    room_width: tuple[float, float] = (3.5, 7.0)  # x extent: a small bedroom to a living room
    room_length: tuple[float, float] = (4.5, 8.0)  # z extent; the back wall stays in sensor range
    room_height: tuple[float, float] = (2.4, 3.2)  # floor to ceiling
    camera_height: tuple[float, float] = (0.9, 1.8)  # a table top to a raised hand
    camera_pitch_deg: tuple[float, float] = (-25.0, -2.0)  # looking a little down: the floor shows
    camera_yaw_deg: tuple[float, float] = (-25.0, 25.0)  # small: the front wall stays out of view
    objects: tuple[int, int] = (3, 7)  # per scene, inclusive; one finding no free spot is dropped
    object_distance: tuple[float, float] = (1.2, 6.0)  # from the camera, along the floor
    typical_colour: float = 0.85  # chance an object's hue comes from its class's range, not any hue
    light_power: tuple[float, float] = (0.8, 1.3)  # direct irradiance factor of the point light
    ambient: tuple[float, float] = (0.12, 0.3)  # irradiance in shadow
    light_falloff: float = 3.5  # distance at which the direct light has halved
    shadows: bool = True  # objects cast shadows: a strong depth cue, at about 30% more render time
    noise_std: float = 0.015  # Gaussian sensor noise on the [0, 1] image, after the gamma
    max_range: float = 10.0  # farther depth readings are invalid, as with the Kinect
    baseline: float = 0.075  # camera-projector distance of the depth sensor (Kinect v1: 7.5 cm)
    outline_dropout: float = 0.3  # chance a pixel next to an object's outline has no depth
    grazing_cos: float = 0.08  # surfaces seen at a smaller |cos| of the view angle give no depth
    dropout_blobs: float = 1.0  # mean number of random elliptic depth holes per image

    def __post_init__(self) -> None:
        if self.height < 8 or self.width < 8:
            raise ValueError(f"scene size must be at least 8x8, got {self.height}x{self.width}")
        if not 10.0 <= self.hfov_deg <= 150.0:
            raise ValueError(f"hfov_deg must be in [10, 150], got {self.hfov_deg}")
        for name in (
            "room_width",
            "room_length",
            "room_height",
            "camera_height",
            "camera_pitch_deg",
            "camera_yaw_deg",
            "objects",
            "object_distance",
            "light_power",
            "ambient",
        ):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"{name}: expected (lo, hi) with lo <= hi, got ({lo}, {hi})")
        if self.objects[0] < 0:
            raise ValueError(f"objects: expected counts >= 0, got {self.objects}")
        if not 0.0 <= self.typical_colour <= 1.0 or not 0.0 <= self.outline_dropout <= 1.0:
            raise ValueError("typical_colour and outline_dropout are probabilities, in [0, 1]")
        if not 0.0 < self.max_range <= 65.535:
            raise ValueError(
                f"max_range must be in (0, 65.535] m (16-bit millimetres), got {self.max_range}"
            )
        if min(self.noise_std, self.baseline, self.grazing_cos, self.dropout_blobs) < 0:
            raise ValueError("noise_std, baseline, grazing_cos and dropout_blobs must be >= 0")

    def intrinsics(self) -> dict[str, float]:
        """``fx, fy, cx, cy`` in pixels (integer coordinates at pixel centres)."""
        fx = (self.width / 2) / math.tan(math.radians(self.hfov_deg) / 2)
        return {"fx": fx, "fy": fx, "cx": (self.width - 1) / 2, "cy": (self.height - 1) / 2}

    def to_dict(self) -> dict:
        """JSON-ready fields (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass
class Scene:
    """One rendered scene; labels in the canonical forms of :mod:`hitts.model.tasks`.

    Attributes:
        image: (H, W, 3) uint8 RGB.
        semseg: (H, W) int64 class ids into ``SCENE_CLASSES``; no invalid pixels.
        depth: (H, W) float32 z-depth in metres, 0 = invalid.
        normal: (H, W, 3) float32 unit normals in the camera frame; no invalid pixels.
        edge: (H, W) int64 in {0, 1}.
    """

    image: np.ndarray
    semseg: np.ndarray
    depth: np.ndarray
    normal: np.ndarray
    edge: np.ndarray

    def labels(self) -> dict[str, np.ndarray]:
        """Task name (as in :func:`hitts.model.tasks.scene_tasks`) -> label."""
        return {
            "semseg": self.semseg,
            "depth": self.depth,
            "normal": self.normal,
            "edge": self.edge,
        }


@dataclass(frozen=True)
class Layout:
    """What a scene is made of, before rendering."""

    camera: sr.Camera
    room: sr.Room
    objects: tuple[sr.Shape, ...]
    light: sr.Light


# ----------------------------------------------------------------------------------------------
# drawing a layout


def _colour(
    rng: np.random.Generator, class_id: int, typical: bool = True
) -> tuple[float, float, float]:
    """A linear-RGB albedo from the class's HSV ranges (any hue when not ``typical``)."""
    (h0, h1), sat, val = _HSV[class_id]
    hue = rng.uniform(h0, h1) if typical else rng.uniform(0, 360)
    rgb = colorsys.hsv_to_rgb((hue % 360) / 360, rng.uniform(*sat), rng.uniform(*val))
    return tuple(float(c) ** 2.2 for c in rgb)  # sRGB-ish to linear


def _room(rng: np.random.Generator, cfg: SceneConfig) -> sr.Room:
    w, length, h = (
        rng.uniform(*cfg.room_width),
        rng.uniform(*cfg.room_length),
        rng.uniform(*cfg.room_height),
    )
    floor = sr.Look(_colour(rng, sr.FLOOR), rng.uniform(0.15, 0.4), rng.uniform(0.3, 0.8))
    wall = sr.Look(_colour(rng, sr.WALL), rng.uniform(0.03, 0.12), rng.uniform(0.08, 0.3))
    ceiling = sr.Look(_colour(rng, sr.CEILING), 0.0, 1.0)
    faces = (
        sr.Plane(1, 0.0, 1.0, sr.FLOOR, floor, (0, 2)),
        sr.Plane(1, h, -1.0, sr.CEILING, ceiling),
        sr.Plane(0, -w / 2, 1.0, sr.WALL, wall, (2,)),
        sr.Plane(0, w / 2, -1.0, sr.WALL, wall, (2,)),
        sr.Plane(2, 0.0, 1.0, sr.WALL, wall, (0,)),
        sr.Plane(2, length, -1.0, sr.WALL, wall, (0,)),
    )
    return sr.Room(w, length, h, faces)


def _shape(rng: np.random.Generator, cfg: SceneConfig) -> sr.Shape:
    """A random object of a random class, its footprint centred on the world origin."""
    class_id = _OBJECT_CLASSES[rng.integers(len(_OBJECT_CLASSES))]
    colour = _colour(rng, class_id, typical=rng.random() < cfg.typical_colour)
    contrast = rng.uniform(0.2, 0.5)
    if class_id == sr.SPHERE:
        radius = rng.uniform(0.15, 0.5)
        sectors = int(rng.choice((4, 6, 8)))
        look = sr.Look(colour, contrast, 2 * math.pi * radius / sectors)  # band at the equator
        return sr.Sphere(0.0, 0.0, radius, look, sectors)
    if class_id == sr.CYLINDER:
        look = sr.Look(colour, contrast, rng.uniform(0.08, 0.2))
        return sr.Cylinder(0.0, 0.0, rng.uniform(0.12, 0.4), rng.uniform(0.3, 1.4), look)
    look = sr.Look(colour, contrast, rng.uniform(0.06, 0.16))
    half_x, half_z = rng.uniform(0.15, 0.6, size=2)
    return sr.Box(
        0.0,
        0.0,
        float(half_x),
        float(half_z),
        rng.uniform(0.25, 1.2),
        rng.uniform(0, math.pi / 2),
        look,
    )


def _objects(
    rng: np.random.Generator,
    cfg: SceneConfig,
    room: sr.Room,
    cam_xz: tuple[float, float],
    yaw: float,
) -> tuple[sr.Shape, ...]:
    """Objects on the floor in view, clear of each other, of the walls and of the camera."""
    half_fov = math.radians(cfg.hfov_deg) / 2
    placed: list[sr.Shape] = []
    for _ in range(int(rng.integers(cfg.objects[0], cfg.objects[1] + 1))):
        shape = _shape(rng, cfg)
        r = shape.footprint_radius
        for _try in range(20):
            dist = rng.uniform(*cfg.object_distance)
            angle = yaw + rng.uniform(-0.85, 0.85) * half_fov
            x, z = cam_xz[0] + dist * math.sin(angle), cam_xz[1] + dist * math.cos(angle)
            inside = abs(x) <= room.width / 2 - r - 0.05 and r + 0.05 <= z <= room.length - r - 0.05
            clear = math.hypot(x - cam_xz[0], z - cam_xz[1]) >= r + 0.5 and all(
                math.hypot(x - o.x, z - o.z) >= r + o.footprint_radius + 0.05 for o in placed
            )
            if inside and clear:
                placed.append(replace(shape, x=x, z=z))
                break
    return tuple(placed)


def sample_layout(rng: np.random.Generator, cfg: SceneConfig) -> Layout:
    """Draw a room, a camera in it near the front wall, objects and a light."""
    room = _room(rng, cfg)
    cam_x = rng.uniform(-0.25, 0.25) * room.width
    cam_z = rng.uniform(0.3, 1.0)
    cam_y = min(rng.uniform(*cfg.camera_height), room.height - 0.3)
    yaw = math.radians(rng.uniform(*cfg.camera_yaw_deg))
    pitch = math.radians(rng.uniform(*cfg.camera_pitch_deg))
    camera = sr.Camera.look((cam_x, cam_y, cam_z), yaw, pitch, **cfg.intrinsics())
    objects = _objects(rng, cfg, room, (cam_x, cam_z), yaw)
    light = sr.Light(
        position=(
            rng.uniform(-0.35, 0.35) * room.width,
            room.height - rng.uniform(0.3, 0.6),
            rng.uniform(0.25, 0.75) * room.length,
        ),
        power=rng.uniform(*cfg.light_power),
        ambient=rng.uniform(*cfg.ambient),
        falloff=cfg.light_falloff,
    )
    return Layout(camera, room, objects, light)


# ----------------------------------------------------------------------------------------------
# rendering


def render_layout(layout: Layout, cfg: SceneConfig, rng: np.random.Generator) -> Scene:
    """Cast one ray per pixel and build the image and the four labels; ``rng`` draws the noise."""
    h, w = cfg.height, cfg.width
    cam, room, objects = layout.camera, layout.room, layout.objects
    o = cam.position
    d = cam.rays(h, w)  # each (N,), N = H * W
    t, owner = sr.cast(o, d, room, objects)  # (N,), (N,)
    p = tuple(o[i] + t * d[i] for i in range(3))  # hit points
    d_len = np.sqrt(sr.dot(d, d))

    surfaces: tuple[sr.Surface, ...] = room.faces + objects
    n = tuple(np.empty_like(t) for _ in range(3))  # world normals
    albedo = np.empty((t.size, 3))
    cos_view = np.empty_like(t)  # cosine between the normal and the way back to the camera
    for s, surface in enumerate(surfaces):
        idx = np.flatnonzero(owner == s)
        if idx.size == 0:
            continue
        ps = sr.take(p, idx)
        ns = surface.normal(ps)
        for i in range(3):
            n[i][idx] = ns[i]
        cos_s = -sr.dot(ns, sr.take(d, idx)) / d_len[idx]
        cos_view[idx] = cos_s
        footprint = t[idx] * d_len[idx] / (cam.fx * np.maximum(cos_s, 0.1))  # metres per pixel
        albedo[idx] = surface.albedo(ps, footprint)

    # image: Lambertian shading, gamma, sensor noise
    irr = sr.irradiance(p, n, layout.light, objects if cfg.shadows else ())
    radiance = np.clip(albedo * irr[:, None], 0.0, 1.0).reshape(h, w, 3)
    img = radiance ** (1 / 2.2) + cfg.noise_std * rng.standard_normal((h, w, 3))
    image = (np.clip(img, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)

    # labels
    class_of = np.array([s.class_id for s in surfaces], dtype=np.int64)
    semseg = class_of[owner].reshape(h, w)
    key_of = np.concatenate(
        [class_of[: len(room.faces)], _OBJECT_KEY + np.arange(len(objects), dtype=np.int64)]
    )
    edge = sr.neighbour_change(key_of[owner].reshape(h, w)).astype(np.int64)
    normal = np.stack(cam.to_camera(n), axis=-1).reshape(h, w, 3).astype(np.float32)

    depth = t.reshape(h, w)
    invalid = depth > cfg.max_range
    invalid |= cos_view.reshape(h, w) < cfg.grazing_cos
    if cfg.baseline > 0:
        invalid |= sr.projector_shadow(depth, cam.fx, cfg.baseline)
    obj = np.where(owner >= len(room.faces), owner, -1).reshape(h, w)
    outline = np.flatnonzero(sr.neighbour_change(obj))
    invalid.flat[outline[rng.random(outline.size) < cfg.outline_dropout]] = True
    invalid |= sr.blobs(rng, h, w, cfg.dropout_blobs)
    depth = np.where(invalid, 0.0, depth).astype(np.float32)
    return Scene(image=image, semseg=semseg, depth=depth, normal=normal, edge=edge)


def scene_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of scene ``index`` of a dataset drawn with ``seed``."""
    return np.random.default_rng(np.random.SeedSequence([seed, index]))


def render_scene(seed: int, config: SceneConfig, index: int = 0) -> Scene:
    """Render scene ``index`` of seed ``seed``; the same arguments always give the same arrays."""
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    rng = scene_rng(seed, index)
    return render_layout(sample_layout(rng, config), config, rng)


# ----------------------------------------------------------------------------------------------
# writing a dataset

GENERATOR = "hitts.scenes"
GENERATOR_VERSION = 1  # raise whenever a change alters the pixels of any scene
LABEL_DIRS = ("semseg", "depth", "normal", "edge")


def scene_stem(index: int) -> str:
    """File stem of scene ``index``: ``scene_000123``."""
    return f"scene_{index:06d}"


def split_sizes(count: int, val_fraction: float) -> tuple[int, int]:
    """(train, val) counts: the last ``round(count * val_fraction)`` scenes (half up) are val."""
    n_val = int(math.floor(count * val_fraction + 0.5))
    return count - n_val, n_val


def _meta(config: SceneConfig, seed: int, count: int, val_fraction: float) -> dict:
    return {
        "generator": GENERATOR,
        "version": GENERATOR_VERSION,
        "seed": seed,
        "count": count,
        "val_fraction": val_fraction,
        "size": [config.height, config.width],
        "intrinsics": config.intrinsics(),
        "depth_unit": DEFAULT_DEPTH_UNIT,
        "classes": list(SCENE_CLASSES),
        "config": config.to_dict(),
    }


def _json_bytes(obj: object) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def _check_existing(out: Path, meta: dict) -> None:
    """Refuse (ValueError naming ``out``) to write into anything but an empty folder or a matching
    earlier run of the generator."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file; generate needs a new or generated folder")
    meta_path = out / "meta.json"
    if not meta_path.is_file():
        if out.is_dir() and any(out.iterdir()):
            raise ValueError(
                f"{out} is not empty and holds no meta.json: not a generated scene folder; "
                "choose a new or empty folder"
            )
        return
    try:
        old = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{out}: meta.json is not readable JSON ({e})") from None
    if not isinstance(old, dict):
        raise ValueError(f"{out}: meta.json is not a JSON object")
    problems = [
        f"{k} {old.get(k)!r} there, {meta[k]!r} now"
        for k in ("generator", "version", "seed", "size")
        if old.get(k) != meta[k]
    ]
    old_cfg = old.get("config") if isinstance(old.get("config"), dict) else {}
    fields = [
        k for k, v in meta["config"].items() if k not in ("height", "width") and old_cfg.get(k) != v
    ]
    if fields:
        problems.append("scene settings " + ", ".join(fields))
    if problems:
        raise ValueError(
            f"{out} holds scenes generated differently ({'; '.join(problems)}); use a new folder, "
            "or the same seed, size and settings to resume"
        )
    if int(old.get("count", 0)) > meta["count"]:
        raise ValueError(
            f"{out} holds {old['count']} scenes; generating {meta['count']} would leave the rest "
            f"outside the splits; use a new folder or a count of at least {old['count']}"
        )


def _complete(out: Path, stem: str) -> bool:
    return all((out / d / f"{stem}.png").is_file() for d in ("images", *LABEL_DIRS))


def generate_scenes(
    out: str | Path,
    count: int,
    config: SceneConfig,
    seed: int,
    val_fraction: float = 0.2,
    progress: bool = True,
) -> Path:
    """Render ``count`` scenes into the folder layout of :mod:`hitts.model.data.folder`.

    Writes ``images/``, ``semseg/`` (8-bit ids), ``depth/`` (16-bit mm), ``normal/`` (RGB),
    ``edge/`` (8-bit 0/1), ``classes.json``, ``splits/{train,val}.txt`` (the last
    ``round(count * val_fraction)`` scenes are val) and ``meta.json``. Every file is written
    atomically; a scene's image is written after its labels, so an image means a complete scene.

    Resuming: scenes whose five files exist are skipped; since scene ``i`` depends only on
    ``(seed, i)``, a resumed or extended run gives the same bytes as one uninterrupted run.

    Args:
        out: The dataset folder; created if missing. It must be empty or hold an earlier run with
            the same seed, size and settings and at most ``count`` scenes (else ValueError).
        count: Number of scenes, >= 1.
        config: Scene settings.
        seed: Dataset seed, >= 0.
        val_fraction: Share of the scenes in the val split, in [0, 1].
        progress: Show a tqdm progress bar.

    Returns:
        ``out``.
    """
    out = Path(out)
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if not 0.0 <= val_fraction <= 1.0:
        raise ValueError(f"val_fraction must be in [0, 1], got {val_fraction}")
    meta = _meta(config, seed, count, val_fraction)
    _check_existing(out, meta)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "meta.json", _json_bytes(meta))
    atomic_write_bytes(out / "classes.json", _json_bytes({"semseg": list(SCENE_CLASSES)}))

    tasks = scene_tasks()
    stems = [scene_stem(i) for i in range(count)]
    skipped = 0
    for i in tqdm(range(count), desc=f"generating {out.name}", unit="scene", disable=not progress):
        if _complete(out, stems[i]):
            skipped += 1
            continue
        scene = render_scene(seed, config, index=i)
        labels = scene.labels()
        for task in tasks:
            write_label(task, out / task.name / f"{stems[i]}.png", labels[task.name])
        write_png(out / "images" / f"{stems[i]}.png", scene.image)

    n_train, _ = split_sizes(count, val_fraction)
    for split, part in (("train", stems[:n_train]), ("val", stems[n_train:])):
        text = "".join(s + "\n" for s in part)
        atomic_write_bytes(out / "splits" / f"{split}.txt", text.encode())
    log.info(
        "%s: %d scenes (%d rendered, %d already there), %d train / %d val",
        out,
        count,
        count - skipped,
        skipped,
        n_train,
        count - n_train,
    )
    return out
