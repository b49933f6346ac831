"""The solids of the ``shapes3d-synth`` scene (cube, cylinder, sphere, capsule): their sizes and
analytic ray intersections and normals, in the object's own frame. The scene, the lighting and the
per-pixel terms are in :mod:`disdiff.data.render`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: The solid is turned by this angle about the vertical, so that a cube shows two faces.
OBJECT_YAW = np.deg2rad(28.0)


def rot_y(angle: float) -> np.ndarray:
    """Rotation matrix about the vertical (y) axis by ``angle`` radians."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def normalise(v: np.ndarray) -> np.ndarray:
    """``v`` scaled to unit length along its last axis."""
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


@dataclass(frozen=True)
class Solid:
    """One solid resting on the floor at the room's origin, turned by OBJECT_YAW about the vertical."""

    shape: str
    scale: float

    @property
    def size(self) -> dict[str, float]:
        s = self.scale
        return {
            "cube": {"half": 0.5 * s},
            "cylinder": {"radius": 0.5 * s, "half": 0.55 * s},
            "sphere": {"radius": 0.6 * s},
            "capsule": {"radius": 0.36 * s, "half": 0.46 * s},
        }[self.shape]

    @property
    def center_height(self) -> float:
        """Height of the local origin above the floor, so the solid rests on the floor."""
        size = self.size
        return size["half"] if self.shape in ("cube", "cylinder") else size["radius"]

    @property
    def bounding_radius(self) -> float:
        size = self.size
        radius = {"cube": lambda: np.sqrt(3.0) * size["half"],
                  "cylinder": lambda: np.hypot(size["radius"], size["half"]),
                  "sphere": lambda: size["radius"],
                  "capsule": lambda: size["radius"] + size["half"]}[self.shape]()
        return float(radius) * 1.001

    def to_local(self, points: np.ndarray) -> np.ndarray:
        center = np.array([0.0, self.center_height, 0.0])
        return (points - center) @ rot_y(OBJECT_YAW)  # row vectors: p @ R == R^T p

    def dirs_to_local(self, dirs: np.ndarray) -> np.ndarray:
        return dirs @ rot_y(OBJECT_YAW)

    def normal_to_room(self, normals: np.ndarray) -> np.ndarray:
        return normals @ rot_y(OBJECT_YAW).T

    # Ray intersection in the local frame: origins o, directions d (n, 3) -> distance t (inf: miss).
    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        return getattr(self, "_hit_" + self.shape)(o, d)

    def normal(self, p: np.ndarray) -> np.ndarray:
        """Outward unit normals at local surface points p (n, 3)."""
        size = self.size
        if self.shape == "cube":
            axis = np.argmax(np.abs(p), axis=1)
            n = np.zeros_like(p)
            n[np.arange(len(p)), axis] = np.sign(p[np.arange(len(p)), axis])
            return n
        if self.shape == "sphere":
            return normalise(p)
        if self.shape == "cylinder":
            radial = np.hypot(p[:, 0], p[:, 2]) / size["radius"]
            cap = np.abs(p[:, 1]) / size["half"] >= radial
            side = normalise(p * np.array([1.0, 0.0, 1.0]) + 1e-12)
            top = np.stack([np.zeros(len(p)), np.sign(p[:, 1]), np.zeros(len(p))], axis=1)
            return np.where(cap[:, None], top, side)
        # capsule: away from the closest point of the axis segment
        axis_point = np.stack([np.clip(p[:, 0], -size["half"], size["half"]), np.zeros(len(p)), np.zeros(len(p))], axis=1)
        return normalise(p - axis_point + 1e-12)

    @staticmethod
    def _sphere(o: np.ndarray, d: np.ndarray, center: np.ndarray, radius: float) -> np.ndarray:
        oc = o - center
        b = np.einsum("ij,ij->i", oc, d)
        c = np.einsum("ij,ij->i", oc, oc) - radius * radius
        disc = b * b - c
        t = -b - np.sqrt(np.maximum(disc, 0.0))
        return np.where((disc >= 0) & (t > 1e-6), t, np.inf)

    def _hit_sphere(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        return self._sphere(o, d, np.zeros(3), self.size["radius"])

    def _hit_cube(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        h = self.size["half"]
        safe = np.where(np.abs(d) < 1e-12, 1e-12, d)
        t1, t2 = (-h - o) / safe, (h - o) / safe
        t_near = np.max(np.minimum(t1, t2), axis=1)
        t_far = np.min(np.maximum(t1, t2), axis=1)
        return np.where((t_far >= t_near) & (t_near > 1e-6), t_near, np.inf)

    @staticmethod
    def _hit_tube(o: np.ndarray, d: np.ndarray, axis: int, r: float, h: float) -> np.ndarray:
        """First t > 0 at which o + t d meets the side of the cylinder of radius ``r`` around the
        coordinate axis ``axis`` through the origin, within |p[axis]| <= h; inf where it misses."""
        u, v = (i for i in range(3) if i != axis)
        a = d[:, u] ** 2 + d[:, v] ** 2
        b = o[:, u] * d[:, u] + o[:, v] * d[:, v]
        c = o[:, u] ** 2 + o[:, v] ** 2 - r * r
        disc = b * b - a * c
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
        along = o[:, axis] + t * d[:, axis]
        return np.where((disc >= 0) & (a > 1e-12) & (t > 1e-6) & (np.abs(along) <= h), t, np.inf)

    def _hit_cylinder(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        r, h = self.size["radius"], self.size["half"]
        t_side = self._hit_tube(o, d, 1, r, h)
        safe = np.where(np.abs(d[:, 1]) < 1e-12, 1e-12, d[:, 1])
        cap_y = np.where(d[:, 1] < 0, h, -h)
        t_cap = (cap_y - o[:, 1]) / safe
        px, pz = o[:, 0] + t_cap * d[:, 0], o[:, 2] + t_cap * d[:, 2]
        t_cap = np.where((t_cap > 1e-6) & (px * px + pz * pz <= r * r), t_cap, np.inf)
        return np.minimum(t_side, t_cap)

    def _hit_capsule(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        r, h = self.size["radius"], self.size["half"]
        t_side = self._hit_tube(o, d, 0, r, h)  # a cylinder around the x axis, plus the two end spheres
        t_a = self._sphere(o, d, np.array([h, 0.0, 0.0]), r)
        t_b = self._sphere(o, d, np.array([-h, 0.0, 0.0]), r)
        return np.minimum(t_side, np.minimum(t_a, t_b))
