"""A small analytic ray caster for the ``shapes3d-synth`` scene, and fast vectorised colouring.

Scene (world units, y up): a floor ``y = 0``; a room corner behind the object made of two
vertical walls meeting at 90 degrees at ``(0, 0, -WALL_DISTANCE)``; one solid resting on the floor
at the origin; a white point light above and in front. The *orientation* factor turns the whole
room (walls, object and light) about the vertical axis through the object, i.e. the camera orbits
the scene as in DeepMind's 3D Shapes: the wall corner moves, the object is seen from another
side and its shading and shadow move.

Rendering is split in two, so that a full grid costs only a few multiply-adds per pixel:

1. **Geometry** (:func:`render_geometry`), once per (scale, shape, orientation) combination:
   rays are cast at ``supersample x supersample`` samples per pixel and reduced to four
   per-pixel planes

   * ``floor_term`` - background shading on pixels that belong to the floor (0 elsewhere),
   * ``wall_term``  - background shading on pixels that belong to the walls,
   * ``object_term`` - diffuse object shading times the object's pixel coverage,
   * ``white_term`` - the hue-independent specular highlight of the object.

   Each pixel belongs to the floor *or* to the walls, decided at its centre (no mixing across
   the floor/wall edge); object edges are antialiased over that pixel's background.
2. **Colour** (:meth:`GeometryTable.colourise`): ``pixel = floor_term * rgb(floor_hue) +
   wall_term * rgb(wall_hue) + object_term * rgb(object_hue) + white_term``.

Hence, by construction, the wall hue never changes a floor pixel, the floor hue never changes a
wall pixel, and the object hue changes only pixels the object covers.
Hues are HSV hues ``k / n`` (saturation and value 1), as in 3D Shapes.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

from disdiff.data.solids import Solid, normalise, rot_y

#: Bumped whenever the rendered pixels change, so stale caches are not reused.
RENDERER_VERSION = 4

SHAPE_NAMES = ("cube", "cylinder", "sphere", "capsule")
SCALE_RANGE = (0.75, 1.25)
ORIENTATION_RANGE_DEG = (-30.0, 30.0)

WALL_DISTANCE = 3.6
CAMERA = np.array([0.0, 2.25, 6.0])
LOOK_AT = np.array([0.0, 0.75, 0.0])
HALF_FOV = np.deg2rad(14.0)
LIGHT = np.array([2.5, 4.8, 3.8])
#: The solid's own yaw in the room, so a cube does not face the camera squarely at orientation 0.
AMBIENT = 0.30
DIFFUSE = 0.70
SPECULAR = 0.22
SHININESS = 24.0
SHADOW = 0.55  # fraction of the direct light a shadow removes
FALLOFF = 1.6  # light intensity ~ distance ** -FALLOFF


def hue_to_rgb(hues: np.ndarray) -> np.ndarray:
    """HSV hues in [0, 1) at full saturation and value -> (n, 3) float32 RGB in [0, 1]."""
    return np.array([colorsys.hsv_to_rgb(float(h), 1.0, 1.0) for h in np.ravel(hues)], dtype=np.float32).reshape(-1, 3)


def factor_values(factor_sizes: tuple[int, ...]) -> dict[str, np.ndarray]:
    """The physical value behind each class of each factor, for a (possibly reduced) grid."""
    n_floor, n_wall, n_object, n_scale, n_shape, n_orient = factor_sizes

    def spread(lo: float, hi: float, n: int) -> np.ndarray:
        return np.linspace(lo, hi, n) if n > 1 else np.array([(lo + hi) / 2.0])

    return {
        "floor_hue": np.arange(n_floor) / n_floor,
        "wall_hue": np.arange(n_wall) / n_wall,
        "object_hue": np.arange(n_object) / n_object,
        "scale": spread(*SCALE_RANGE, n_scale),
        "shape": np.array(SHAPE_NAMES[:n_shape]),
        "orientation": spread(*ORIENTATION_RANGE_DEG, n_orient),
    }


# ---------------------------------------------------------------------------------------- geometry
def camera_rays(resolution: int, supersample: int) -> np.ndarray:
    """Unit ray directions (n, n, 3), n = resolution * supersample, rows top to bottom."""
    n = resolution * supersample
    forward = normalise(LOOK_AT - CAMERA)
    right = normalise(np.cross(forward, [0.0, 1.0, 0.0]))
    up = np.cross(right, forward)
    coords = ((np.arange(n) + 0.5) / n) * 2.0 - 1.0
    u = coords[None, :, None] * np.tan(HALF_FOV)
    v = -coords[:, None, None] * np.tan(HALF_FOV)
    return normalise(forward + u * right + v * up)


def _hits_bounding_sphere(o: np.ndarray, d: np.ndarray, center: np.ndarray, radius: float,
                          max_t: np.ndarray | float = np.inf) -> np.ndarray:
    """Which rays o + t d (0 < t < max_t) pass within ``radius`` of ``center`` (a cheap pre-test)."""
    oc = np.broadcast_to(o - center, d.shape)
    b = np.einsum("ij,ij->i", oc, d)
    disc = b * b - (np.einsum("ij,ij->i", oc, oc) - radius * radius)
    root = np.sqrt(np.maximum(disc, 0.0))
    return (disc >= 0) & (root - b > 0) & (-b - root < max_t)


@dataclass
class _Room:
    """Per-orientation background: first surface of every camera sample and its shading inputs."""

    dirs: np.ndarray         # (N, 3) camera ray directions in room coordinates
    origin: np.ndarray       # (3,) camera position in room coordinates
    points: np.ndarray       # (N, 3) hit points on floor/walls
    lit: np.ndarray          # (N,) ambient + direct shading of the background without shadow
    direct: np.ndarray       # (N,) the direct-light part (what a shadow removes)
    from_light: np.ndarray   # (N, 3) unit vectors light -> point
    light_dist: np.ndarray   # (N,) distance light -> point
    pixel: np.ndarray        # (N,) flat pixel index of each sample
    lit_pixels: np.ndarray   # (R, R) pooled ``lit``
    floor_pixel: np.ndarray  # (R, R) bool: the pixel centre sees the floor


def _room(resolution: int, supersample: int, orientation_deg: float) -> _Room:
    turn = rot_y(np.deg2rad(orientation_deg))
    # Turning the room by +angle is the camera turning by -angle in room coordinates.
    dirs = camera_rays(resolution, supersample).reshape(-1, 3) @ turn  # R^T d
    origin = CAMERA @ turn
    corner = np.array([0.0, 0.0, -WALL_DISTANCE])
    normals = [np.array([0.0, 1.0, 0.0]), normalise(np.array([1.0, 0.0, 1.0])), normalise(np.array([-1.0, 0.0, 1.0]))]
    anchors = [np.zeros(3), corner, corner]
    ts = []
    for normal, anchor in zip(normals, anchors):
        denom = dirs @ normal
        with np.errstate(divide="ignore", invalid="ignore"):
            t = ((anchor - origin) @ normal) / denom
        ts.append(np.where((denom < -1e-9) & (t > 0), t, np.inf))
    ts = np.stack(ts, axis=1)
    surface = np.argmin(ts, axis=1)
    t = ts[np.arange(len(ts)), surface]
    t = np.where(np.isfinite(t), t, 1e3)
    points = origin + t[:, None] * dirs
    normal = np.stack(normals)[surface]
    to_light = LIGHT - points
    dist = np.linalg.norm(to_light, axis=1)
    lambert = np.maximum(np.einsum("ij,ij->i", normal, to_light / dist[:, None]), 0.0)
    falloff = np.clip((np.linalg.norm(LIGHT) / dist) ** FALLOFF, 0.0, 1.3)
    direct = DIFFUSE * lambert * falloff
    # darken the corner a little (ambient occlusion), for depth
    occlusion = 1.0 - 0.18 * np.exp(-np.abs(points[:, 0]) * 0.9) * (surface > 0)
    lit = np.minimum((AMBIENT + direct) * occlusion, 1.0)
    direct = np.minimum(direct * occlusion, lit)
    n = resolution * supersample
    rows, cols = np.divmod(np.arange(n * n), n)
    pixel = (rows // supersample) * resolution + cols // supersample
    centre = supersample // 2
    floor_pixel = surface.reshape(n, n)[centre::supersample, centre::supersample] == 0
    return _Room(dirs=dirs, origin=origin, points=points, lit=lit, direct=direct, from_light=-to_light / dist[:, None],
                 light_dist=dist, pixel=pixel, lit_pixels=_pool(lit, resolution, supersample), floor_pixel=floor_pixel)


def _pool(values: np.ndarray, resolution: int, supersample: int) -> np.ndarray:
    return values.reshape(resolution, supersample, resolution, supersample).mean(axis=(1, 3))


def _cone_candidates(apex: np.ndarray, unit_dirs: np.ndarray, center: np.ndarray, radius: float) -> np.ndarray:
    """Indices of rays from ``apex`` whose direction lies in the cone around a bounding sphere."""
    axis = center - apex
    dist = np.linalg.norm(axis)
    if dist <= radius:
        return np.arange(unit_dirs.shape[0])
    cos_half = np.sqrt(1.0 - (radius / dist) ** 2)
    return np.nonzero(unit_dirs @ (axis / dist) >= cos_half - 1e-9)[0]


def _shade_geometry(room: _Room, solid: Solid, resolution: int, supersample: int) -> tuple[np.ndarray, ...]:
    center = np.array([0.0, solid.center_height, 0.0])
    n_pixels = resolution * resolution
    per_sample = 1.0 / (supersample * supersample)

    def pool_sparse(idx: np.ndarray, weights: np.ndarray) -> np.ndarray:
        return (np.bincount(room.pixel[idx], weights, minlength=n_pixels) * per_sample).reshape(resolution, resolution)

    # --- camera rays against the solid
    candidates = _cone_candidates(room.origin, room.dirs, center, solid.bounding_radius)
    hit = np.zeros(room.dirs.shape[0], dtype=bool)
    diffuse = white = coverage = lit_hidden = np.zeros((resolution, resolution))
    if candidates.size:
        o_local = np.repeat(solid.to_local(room.origin[None]), candidates.size, axis=0)
        t = solid.intersect(o_local, solid.dirs_to_local(room.dirs[candidates]))
        found = np.isfinite(t)
        idx, t = candidates[found], t[found]
        hit[idx] = True
        p_room = room.origin + t[:, None] * room.dirs[idx]
        normal = solid.normal_to_room(solid.normal(solid.to_local(p_room)))
        to_light = LIGHT - p_room
        dist = np.linalg.norm(to_light, axis=1)
        l_dir = to_light / dist[:, None]
        lambert = np.maximum(np.einsum("ij,ij->i", normal, l_dir), 0.0)
        falloff = np.clip((np.linalg.norm(LIGHT) / dist) ** FALLOFF, 0.0, 1.3)
        half = normalise(l_dir - room.dirs[idx])
        spec = SPECULAR * np.maximum(np.einsum("ij,ij->i", normal, half), 0.0) ** SHININESS * (lambert > 0)
        shade = np.minimum(AMBIENT + DIFFUSE * lambert * falloff, 1.0)
        diffuse = pool_sparse(idx, shade)
        white = pool_sparse(idx, np.minimum(spec, 1.0 - shade))
        coverage = pool_sparse(idx, np.ones(idx.size))
        lit_hidden = pool_sparse(idx, room.lit[idx])
    # --- shadow of the solid on the visible background
    near = _cone_candidates(LIGHT, room.from_light, center, solid.bounding_radius)
    near = near[~hit[near]]
    darkening = np.zeros((resolution, resolution))
    if near.size:
        t = solid.intersect(solid.to_local(np.repeat(LIGHT[None], near.size, axis=0)),
                            solid.dirs_to_local(room.from_light[near]))
        shadowed = near[t < room.light_dist[near] - 1e-6]
        darkening = pool_sparse(shadowed, SHADOW * room.direct[shadowed])
    background = np.maximum(room.lit_pixels - lit_hidden - darkening, 0.0)
    return (diffuse, white, background * room.floor_pixel, background * ~room.floor_pixel, coverage)


@dataclass
class GeometryTable:
    """Per-geometry planes, indexed ``g = (scale * n_shape + shape) * n_orientation + orientation``.

    All planes are pre-multiplied by 255; ``white_term`` includes the +0.5 of rounding, so that
    ``uint8(floor_term*rgb_f + wall_term*rgb_w + object_term*rgb_o + white_term)`` is the image.
    """

    floor_term: np.ndarray   # (G, R, R) float32
    wall_term: np.ndarray    # (G, R, R)
    object_term: np.ndarray  # (G, R, R)
    white_term: np.ndarray   # (G, R, R)
    coverage: np.ndarray     # (G, R, R) float32 object coverage in [0, 1]
    floor_pixel: np.ndarray  # (G, R, R) bool
    hue_rgb: tuple[np.ndarray, np.ndarray, np.ndarray]  # floor, wall, object colours, each (n, 3) float32

    def __post_init__(self) -> None:
        # Flat positions (into a (G, R, R, 3) block) of every channel of every pixel the object
        # touches: only these differ between object hues, so a block is rendered by copying the
        # background once per object hue and recolouring just these entries.
        pixels = np.flatnonzero(self.object_term > 0)
        self._object_entries = (pixels[:, None] * 3 + np.arange(3)).reshape(-1)
        self._object_values = np.repeat(self.object_term.reshape(-1)[pixels], 3).astype(np.float32)
        self._object_channel = np.tile(np.arange(3), pixels.size)

    @property
    def num_geometries(self) -> int:
        return self.floor_term.shape[0]

    def colourise(self, floor: np.ndarray, wall: np.ndarray, obj: np.ndarray, geometry: np.ndarray) -> np.ndarray:
        """uint8 images (n, R, R, 3) for per-image class arrays (n,) of the three hues and geometry.

        Bit-identical to :meth:`render_block` (same float32 operations in the same order).
        """
        fc, wc, oc = self.hue_rgb
        n, r = len(geometry), self.floor_term.shape[1]
        out = np.empty((n, r, r, 3), dtype=np.uint8)
        chunk = 128  # keep the working set in cache
        acc = np.empty((min(n, chunk), r, r), dtype=np.float32)
        tmp = np.empty_like(acc)
        for start in range(0, n, chunk):
            sl = slice(start, min(start + chunk, n))
            g = geometry[sl]
            a, t = acc[: len(g)], tmp[: len(g)]
            planes = (self.floor_term[g], self.wall_term[g], self.white_term[g], self.object_term[g])
            for c in range(3):
                np.multiply(planes[0], fc[floor[sl], c][:, None, None], out=a)
                np.multiply(planes[1], wc[wall[sl], c][:, None, None], out=t)
                a += t
                a += planes[2]
                np.multiply(planes[3], oc[obj[sl], c][:, None, None], out=t)
                a += t
                out[sl, :, :, c] = a
        return out

    def background_block(self, floor: int, wall: int) -> np.ndarray:
        """float32 (G, R, R, 3): every geometry without the object's diffuse colour."""
        fc, wc, _ = self.hue_rgb
        base = np.empty(self.floor_term.shape + (3,), dtype=np.float32)
        for c in range(3):
            base[..., c] = self.floor_term * fc[floor, c] + self.wall_term * wc[wall, c] + self.white_term
        return base

    def render_block(self, floor: int, wall: int, out: np.ndarray) -> None:
        """Fill ``out`` (n_object_hue, G, R, R, 3) uint8: every object hue and geometry for one floor/wall hue."""
        oc = self.hue_rgb[2]
        base = self.background_block(floor, wall)
        base_u8 = base.astype(np.uint8)
        base_at_object = base.reshape(-1)[self._object_entries]
        contiguous = out[0].flags.c_contiguous
        target = out[0] if contiguous else np.empty_like(base_u8)
        for o in range(oc.shape[0]):
            if contiguous:
                target = out[o]
            target[...] = base_u8
            values = base_at_object + self._object_values * oc[o][self._object_channel]
            target.reshape(-1)[self._object_entries] = values  # float -> uint8 truncation (+0.5 is in white_term)
            if not contiguous:
                out[o] = target


def render_geometry(factor_sizes: tuple[int, ...], resolution: int, supersample: int = 4) -> GeometryTable:
    """Ray-cast every (scale, shape, orientation) combination once; see the module docstring."""
    n_floor, n_wall, n_object, n_scale, n_shape, n_orient = factor_sizes
    if n_shape > len(SHAPE_NAMES):
        raise ValueError(f"shapes3d-synth has {len(SHAPE_NAMES)} shapes {SHAPE_NAMES}; factor size {n_shape} requested")
    values = factor_values(factor_sizes)
    n_geometry = n_scale * n_shape * n_orient
    planes = np.zeros((5, n_geometry, resolution, resolution), dtype=np.float32)
    floor_pixel = np.zeros((n_geometry, resolution, resolution), dtype=bool)
    rooms = [_room(resolution, supersample, float(angle)) for angle in values["orientation"]]
    for sc in range(n_scale):
        for sh in range(n_shape):
            solid = Solid(SHAPE_NAMES[sh], float(values["scale"][sc]))
            for o, room in enumerate(rooms):
                g = (sc * n_shape + sh) * n_orient + o
                planes[:, g] = _shade_geometry(room, solid, resolution, supersample)
                floor_pixel[g] = room.floor_pixel
    diffuse, white, floor_bg, wall_bg, coverage = planes
    return GeometryTable(
        floor_term=floor_bg * np.float32(255.0),
        wall_term=wall_bg * np.float32(255.0),
        object_term=diffuse * np.float32(255.0),
        white_term=white * np.float32(255.0) + np.float32(0.5),
        coverage=coverage,
        floor_pixel=floor_pixel,
        hue_rgb=tuple(hue_to_rgb(values[k]) for k in ("floor_hue", "wall_hue", "object_hue")),
    )
