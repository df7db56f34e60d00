"""Ray casting for the generated scenes: the room, the objects on its floor, their looks, the light.

Frames. The world has x to the right, y up (the floor is ``y = 0``) and z into the room: the
camera stands near the wall ``z = 0`` and looks roughly towards ``+z``. The camera frame is
OpenCV's: x right, y down, z along the optical axis. Camera rays are cast with direction vectors
whose camera-frame z is 1, so the ray parameter ``t`` of a hit is its z-depth in metres.

Arrays hold one value per ray. A vector field is a tuple of three ``(N,)`` arrays ``(x, y, z)``
(type :data:`Vec`), which keeps every numpy operation on contiguous memory; a single point or
direction may be a tuple of floats and broadcasts.

Every surface answers the same four questions: where a ray first hits it (``intersect``), its
outward normal at a hit point (``normal``), its albedo there (``albedo``, textured in surface
coordinates, with the texture faded out where a pixel spans more than half a period) and its class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

Vec = tuple  # (x, y, z): three (N,) float64 arrays, or three floats
EPS = 1e-6  # metres (rays are about 1 m long per unit t); hits closer than this are ignored
TWO_PI = 2.0 * math.pi

FLOOR, WALL, CEILING, BOX, SPHERE, CYLINDER = range(6)  # indices into tasks.SCENE_CLASSES


def dot(a: Vec, b: Vec) -> np.ndarray:
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def take(v: Vec, idx: np.ndarray) -> Vec:
    """The rows ``idx`` of a vector field."""
    return v[0][idx], v[1][idx], v[2][idx]


def _near_root(a: np.ndarray, b_half: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Smaller root of ``a t^2 + 2 b_half t + c = 0`` where real and ahead (> EPS), else inf."""
    disc = b_half * b_half - a * c
    with np.errstate(invalid="ignore"):
        t = (-b_half - np.sqrt(disc)) / a  # NaN where disc < 0
    return np.where(t > EPS, t, np.inf)  # NaN > EPS is False


def wave(u: np.ndarray, sharpness: float = 1.5) -> np.ndarray:
    """A soft square wave in [0, 1] with period 1: the stripe profile of every texture."""
    return np.clip(0.5 + sharpness * np.sin(TWO_PI * u), 0.0, 1.0)


def fade(period: float, footprint: np.ndarray) -> np.ndarray:
    """Texture contrast kept where one pixel covers ``footprint`` metres: 1 below a quarter period,
    0 above half a period (the Nyquist limit), so far or grazing textures turn flat, not aliased."""
    return np.clip(2.0 - 4.0 * footprint / period, 0.0, 1.0)


@dataclass(frozen=True)
class Look:
    """How a surface looks.

    Attributes:
        color: Linear RGB albedo in [0, 1].
        contrast: How far the texture's dark phase darkens the albedo (0: plain).
        period: Texture period in metres.
    """

    color: tuple[float, float, float]
    contrast: float
    period: float

    def albedo(self, m: np.ndarray, footprint: np.ndarray) -> np.ndarray:
        """(M, 3) albedo from the texture value ``m`` (M,) in [0, 1] and pixel footprints (M,)."""
        k = 1.0 - self.contrast * fade(self.period, footprint) * m
        return k[:, None] * np.asarray(self.color)[None, :]


@dataclass(frozen=True)
class Camera:
    """A pinhole camera.

    Attributes:
        position: Optical centre in the world, metres.
        rotation: (3, 3) world-to-camera rotation; its rows are the camera's right, down and
            forward axes in world coordinates.
        fx, fy, cx, cy: Intrinsics in pixels; pixel ``(u, v)`` (column, row, integer at pixel
            centres) looks along camera-frame ``((u - cx) / fx, (v - cy) / fy, 1)``.
    """

    position: tuple[float, float, float]
    rotation: np.ndarray
    fx: float
    fy: float
    cx: float
    cy: float

    @staticmethod
    def look(
        position: tuple[float, float, float], yaw: float, pitch: float, **intrinsics: float
    ) -> Camera:
        """A camera turned by ``yaw`` (radians, + to the right) and ``pitch`` (+ up) from +z."""
        c_yaw, s_yaw = math.cos(yaw), math.sin(yaw)
        c_pitch, s_pitch = math.cos(pitch), math.sin(pitch)
        forward = (s_yaw * c_pitch, s_pitch, c_yaw * c_pitch)
        right = (c_yaw, 0.0, -s_yaw)
        down = (s_yaw * s_pitch, -c_pitch, c_yaw * s_pitch)  # orthogonal to both, y < 0
        return Camera(position, np.array([right, down, forward]), **intrinsics)

    def rays(self, height: int, width: int) -> Vec:
        """World directions of the pixel rays, row-major, each (H * W,); camera-frame z is 1."""
        u = (np.arange(width, dtype=np.float64) - self.cx) / self.fx
        v = (np.arange(height, dtype=np.float64) - self.cy) / self.fy
        dc = (np.tile(u, height), np.repeat(v, width), 1.0)
        r = self.rotation  # world = R^T camera
        return tuple(r[0, i] * dc[0] + r[1, i] * dc[1] + r[2, i] for i in range(3))

    def to_camera(self, v: Vec) -> Vec:
        """Rotate world vectors into the camera frame."""
        r = self.rotation
        return tuple(r[i, 0] * v[0] + r[i, 1] * v[1] + r[i, 2] * v[2] for i in range(3))


@dataclass(frozen=True)
class Plane:
    """One face of the room, seen from inside.

    Attributes:
        axis: World axis the face is perpendicular to (0: x, 1: y, 2: z).
        offset: Its coordinate on that axis.
        sign: +1 or -1: the inward normal is ``sign`` times the axis.
        class_id: FLOOR, WALL or CEILING.
        look: Colour and texture.
        pattern_axes: World axes of the texture: () plain, (a,) stripes across axis a,
            (a, b) a checkerboard.
    """

    axis: int
    offset: float
    sign: float
    class_id: int
    look: Look
    pattern_axes: tuple[int, ...] = ()

    def normal(self, p: Vec) -> Vec:
        n = [np.zeros_like(p[0]) for _ in range(3)]
        n[self.axis][:] = self.sign
        return tuple(n)

    def albedo(self, p: Vec, footprint: np.ndarray) -> np.ndarray:
        axes, period = self.pattern_axes, self.look.period
        if not axes:
            m = np.zeros_like(p[0])
        elif len(axes) == 1:
            m = wave(p[axes[0]] / period)
        else:  # checkerboard: the product of two waves changes sign across every tile border
            s0 = np.sin(TWO_PI * p[axes[0]] / period)
            m = np.clip(0.5 + 3.0 * s0 * np.sin(TWO_PI * p[axes[1]] / period), 0.0, 1.0)
        return self.look.albedo(m, footprint)


@dataclass(frozen=True)
class Room:
    """An axis-aligned box room: x in [-width/2, width/2], y in [0, height], z in [0, length].

    Attributes:
        faces: The six :class:`Plane` s in the order floor, ceiling, left, right, front, back.
    """

    width: float
    length: float
    height: float
    faces: tuple[Plane, ...]

    def intersect(self, o: Vec, d: Vec) -> tuple[np.ndarray, np.ndarray]:
        """Exit distance ``t`` (N,) of rays from a point inside, and the face index (N,) hit."""
        lo = (-self.width / 2, 0.0, 0.0)
        hi = (self.width / 2, self.height, self.length)
        ts = []
        with np.errstate(divide="ignore", invalid="ignore"):
            for i in range(3):
                t = (np.where(d[i] > 0, hi[i], lo[i]) - o[i]) / d[i]
                ts.append(np.where(t > 0, t, np.inf))  # -inf/NaN from a zero component: never hit
        axis = np.argmin(np.stack(ts), axis=0)
        t = np.minimum(np.minimum(ts[0], ts[1]), ts[2])
        face = np.choose(
            axis,
            (
                np.where(d[0] > 0, 3, 2),  # right / left wall
                np.where(d[1] > 0, 1, 0),  # ceiling / floor
                np.where(d[2] > 0, 5, 4),  # back / front wall
            ),
        )
        return t, face


@dataclass(frozen=True)
class Sphere:
    """A sphere resting on the floor, centre ``(x, radius, z)``; ``sectors`` meridian bands."""

    x: float
    z: float
    radius: float
    look: Look
    sectors: int
    class_id: int = SPHERE

    @property
    def footprint_radius(self) -> float:
        return self.radius

    def intersect(self, o: Vec, d: Vec) -> np.ndarray:
        ox, oy, oz = o[0] - self.x, o[1] - self.radius, o[2] - self.z
        a = dot(d, d)
        b = d[0] * ox + d[1] * oy + d[2] * oz
        c = ox * ox + oy * oy + oz * oz - self.radius**2
        return _near_root(a, b, c)

    def normal(self, p: Vec) -> Vec:
        r = self.radius
        return (p[0] - self.x) / r, (p[1] - r) / r, (p[2] - self.z) / r

    def albedo(self, p: Vec, footprint: np.ndarray) -> np.ndarray:
        angle = np.arctan2(p[2] - self.z, p[0] - self.x)
        return self.look.albedo(wave(angle * self.sectors / TWO_PI), footprint)


@dataclass(frozen=True)
class Cylinder:
    """An upright cylinder standing on the floor; textured with horizontal rings."""

    x: float
    z: float
    radius: float
    height: float
    look: Look
    class_id: int = CYLINDER

    @property
    def footprint_radius(self) -> float:
        return self.radius

    def intersect(self, o: Vec, d: Vec) -> np.ndarray:
        ox, oz = o[0] - self.x, o[2] - self.z
        a = d[0] * d[0] + d[2] * d[2]
        b = d[0] * ox + d[2] * oz
        c = ox * ox + oz * oz - self.radius**2
        with np.errstate(divide="ignore", invalid="ignore"):
            t_side = _near_root(a, b, c)
            y = o[1] + t_side * d[1]
            t_side = np.where((y >= 0) & (y <= self.height), t_side, np.inf)
            t_cap = (self.height - o[1]) / d[1]  # the top, only from above
            cx, cz = ox + t_cap * d[0], oz + t_cap * d[2]
            on_cap = (d[1] < 0) & (t_cap > EPS) & (cx * cx + cz * cz <= self.radius**2)
        return np.minimum(t_side, np.where(on_cap, t_cap, np.inf))

    def normal(self, p: Vec) -> Vec:
        dx, dz = p[0] - self.x, p[2] - self.z
        rho = np.maximum(np.sqrt(dx * dx + dz * dz), 1e-12)
        cap = (self.height - p[1]) < (self.radius - rho)  # nearer to the top than to the side
        zero = np.zeros_like(rho)
        nx, nz = np.where(cap, zero, dx / rho), np.where(cap, zero, dz / rho)
        return nx, np.where(cap, 1.0, zero), nz

    def albedo(self, p: Vec, footprint: np.ndarray) -> np.ndarray:
        return self.look.albedo(wave(p[1] / self.look.period), footprint)


@dataclass(frozen=True)
class Box:
    """A box standing on the floor, turned by ``yaw`` radians about the vertical; diagonal stripes.

    Attributes:
        x, z: Centre of the footprint.
        half_x, half_z: Half extents along the box's own horizontal axes.
        height: Extent along y, from the floor up.
    """

    x: float
    z: float
    half_x: float
    half_z: float
    height: float
    yaw: float
    look: Look
    class_id: int = BOX

    @property
    def footprint_radius(self) -> float:
        return math.hypot(self.half_x, self.half_z)

    def _local(self, vx: np.ndarray, vz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        return c * vx + s * vz, -s * vx + c * vz

    def intersect(self, o: Vec, d: Vec) -> np.ndarray:
        ox, oz = self._local(o[0] - self.x, o[2] - self.z)
        dx, dz = self._local(d[0], d[2])
        slabs = (
            (ox, dx, -self.half_x, self.half_x),
            (o[1], d[1], 0.0, self.height),
            (oz, dz, -self.half_z, self.half_z),
        )
        near, far = -np.inf, np.inf
        with np.errstate(divide="ignore", invalid="ignore"):
            for oi, di, lo, hi in slabs:
                t1, t2 = (lo - oi) / di, (hi - oi) / di
                near = np.maximum(near, np.minimum(t1, t2))  # NaN (ray in a face plane) → miss
                far = np.minimum(far, np.maximum(t1, t2))
            hit = (near <= far) & (near > EPS)
        return np.where(hit, near, np.inf)

    def normal(self, p: Vec) -> Vec:
        lx, lz = self._local(p[0] - self.x, p[2] - self.z)
        h2 = self.height / 2
        q = np.stack([np.abs(lx) / self.half_x, np.abs(p[1] - h2) / h2, np.abs(lz) / self.half_z])
        axis = np.argmax(q, axis=0)  # the face the point lies on
        nx = np.where(axis == 0, np.sign(lx), 0.0)
        nz = np.where(axis == 2, np.sign(lz), 0.0)
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        return c * nx - s * nz, np.where(axis == 1, 1.0, 0.0), s * nx + c * nz

    def albedo(self, p: Vec, footprint: np.ndarray) -> np.ndarray:
        lx, lz = self._local(p[0] - self.x, p[2] - self.z)
        return self.look.albedo(wave((lx + p[1] + lz) / self.look.period), footprint)


Shape = Sphere | Cylinder | Box
Surface = Plane | Sphere | Cylinder | Box


@dataclass(frozen=True)
class Light:
    """A point light with ambient fill.

    Attributes:
        position: World position, metres.
        power: Irradiance factor of the direct light at distance 0 on a facing surface.
        ambient: Irradiance everywhere, shadows included.
        falloff: Distance (m) at which the direct irradiance has halved:
            ``1 / (1 + (r / falloff)^2)``.
    """

    position: tuple[float, float, float]
    power: float
    ambient: float
    falloff: float


def cast(o: Vec, d: Vec, room: Room, objects: tuple[Shape, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Nearest hits of camera rays from ``o`` inside the room.

    Returns:
        ``t`` (N,) ray parameter of the hit and ``owner`` (N,) int64: the room face index (0..5)
        or ``6 + k`` for ``objects[k]``.
    """
    t, owner = room.intersect(o, d)
    for k, obj in enumerate(objects):
        tk = obj.intersect(o, d)
        closer = tk < t
        t = np.where(closer, tk, t)
        owner[closer] = len(room.faces) + k
    return t, owner


def irradiance(p: Vec, n: Vec, light: Light, occluders: tuple[Shape, ...]) -> np.ndarray:
    """Lambertian irradiance (M,) at points ``p`` with unit normals ``n``, with cast shadows from
    ``occluders`` (pass an empty tuple for none)."""
    to_light = tuple(light.position[i] - p[i] for i in range(3))
    dist = np.sqrt(dot(to_light, to_light))
    cos = np.maximum(dot(n, to_light) / dist, 0.0)
    lit = cos > 0
    if occluders and lit.any():
        idx = np.flatnonzero(lit)
        start = tuple(p[i][idx] + 1e-4 * n[i][idx] for i in range(3))  # off the surface
        seg = tuple(light.position[i] - start[i] for i in range(3))
        blocked = np.zeros(idx.size, dtype=bool)
        for obj in occluders:
            blocked |= obj.intersect(start, seg) < 1.0  # t = 1 is the light
        cos[idx[blocked]] = 0.0
    return light.ambient + light.power * cos / (1.0 + (dist / light.falloff) ** 2)


# ----------------------------------------------------------------------------------------------
# label and sensor helpers on (H, W) maps


def neighbour_change(key: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels whose right, left, lower or upper neighbour has another ``key``."""
    out = np.zeros(key.shape, dtype=bool)
    dh = key[:, 1:] != key[:, :-1]
    dv = key[1:] != key[:-1]
    out[:, 1:] |= dh
    out[:, :-1] |= dh
    out[1:] |= dv
    out[:-1] |= dv
    return out


def projector_shadow(depth: np.ndarray, fx: float, baseline: float) -> np.ndarray:
    """(H, W) bool: pixels a projector ``baseline`` m right of the camera cannot light.

    The projector sees pixel ``u`` at column ``u - disp(u)``, ``disp = fx * baseline / depth``;
    a pixel is shadowed when a pixel ``u + k`` lands at or left of it there:
    ``disp(u + k) - k >= disp(u)``.
    """
    disp = fx * baseline / depth
    reach = min(int(math.ceil(disp.max() - disp.min())), depth.shape[1] - 1)
    shadow = np.zeros(depth.shape, dtype=bool)
    for k in range(1, reach + 1):
        shadow[:, :-k] |= disp[:, k:] - k >= disp[:, :-k]
    return shadow


def blobs(rng: np.random.Generator, h: int, w: int, mean: float) -> np.ndarray:
    """(H, W) bool: a Poisson number of random ellipses, semi-axes 1-4% of the width."""
    out = np.zeros((h, w), dtype=bool)
    rows, cols = np.arange(h)[:, None], np.arange(w)[None, :]
    for _ in range(rng.poisson(mean)):
        v, u = rng.uniform(0, h), rng.uniform(0, w)
        a, b = rng.uniform(0.01, 0.04, size=2) * w
        out |= ((cols - u) / a) ** 2 + ((rows - v) / b) ** 2 <= 1.0
    return out
