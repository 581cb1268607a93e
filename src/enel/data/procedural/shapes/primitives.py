"""Mesh primitives and the types the builders return.

A mesh is a pair ``(vertices (V, 3) float64, faces (F, 3) int64)``; every primitive below returns one, in the
frame of :mod:`enel.data.procedural.shapes` (z up, roughly metres).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import trimesh

Mesh = tuple[np.ndarray, np.ndarray]


# ------------------------------------------------------------------------------------------------------------
# Data types
# ------------------------------------------------------------------------------------------------------------
@dataclass
class Part:
    """One named part of an object (e.g. the legs of a chair: one part, four meshes).

    ``name`` is the singular noun ("leg"), ``plural`` its plural ("legs", default ``name + "s"``).
    ``adjectives`` are non-colour words a caption may put before the noun ("thin"); ``shape`` is a word that
    answers "What shape is the {name}?" ("round"); ``where`` a location phrase ("under the seat").
    ``countable`` parts get "How many {plural}?" questions; their count is ``count`` or ``len(meshes)``.
    A part that is not countable is one thing (a chair's back made of slats is one back) unless
    ``uncounted``: then it is several things whose number text never states ("red books", "white walls").
    ``mass`` marks mass nouns ("foliage") that take no article and no plural.
    ``covers``: closed convex solids that are not sampled but hide what lies inside them (a label hides the
    bottle surface under it); closed convex meshes in ``meshes`` hide what lies inside them anyway.
    """

    name: str
    meshes: list[Mesh]
    plural: str | None = None
    adjectives: tuple[str, ...] = ()
    shape: str | None = None
    where: str | None = None
    countable: bool = False
    count: int | None = None
    mass: bool = False
    uncounted: bool = False
    covers: list[Mesh] = field(default_factory=list)

    @property
    def n(self) -> int:
        """How many of this part there are (1 for a part that is neither countable nor uncounted)."""
        if self.count is not None:
            return self.count
        return len(self.meshes) if (self.countable or self.uncounted) else 1

    @property
    def plural_name(self) -> str:
        return self.plural or self.name + "s"


@dataclass
class Geometry:
    """What a builder returns: parts in description order, plus object-level words.

    ``nouns``: object-specific names that replace the category's default nouns ("sailboat"); every one must be
    a synonym of the category (tested). ``traits``: object-level adjectives ("tall", "low").
    ``extra_counts``: countable facts that are not whole parts, e.g. ``{"slats": 4}`` for a slatted back.
    ``palette``: part name -> colours this variant allows (narrows the category's colour group, e.g. a pine
    tree's foliage is green even though autumn-coloured broadleaf crowns are allowed).
    """

    parts: list[Part]
    nouns: tuple[str, ...] = ()
    traits: tuple[str, ...] = ()
    extra_counts: dict[str, int] = field(default_factory=dict)
    palette: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def part(self, name: str) -> Part:
        for p in self.parts:
            if p.name == name:
                return p
        raise KeyError(name)


# ------------------------------------------------------------------------------------------------------------
# Primitives
# ------------------------------------------------------------------------------------------------------------
def rotation(axis: str | np.ndarray, angle: float) -> np.ndarray:
    """A ``(3, 3)`` rotation by ``angle`` radians about ``axis`` ("x", "y", "z" or a 3-vector)."""
    if isinstance(axis, str):
        axis = {"x": (1.0, 0.0, 0.0), "y": (0.0, 1.0, 0.0), "z": (0.0, 0.0, 1.0)}[axis]
    a = np.asarray(axis, dtype=np.float64)
    a = a / np.linalg.norm(a)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


def _z_to(direction: np.ndarray) -> np.ndarray:
    """A rotation ``(3, 3)`` taking +z to the unit vector ``direction``."""
    d = np.asarray(direction, dtype=np.float64)
    d = d / np.linalg.norm(d)
    z = np.array([0.0, 0.0, 1.0])
    c = float(z @ d)
    if c > 1 - 1e-9:
        return np.eye(3)
    if c < -1 + 1e-9:
        return rotation("x", np.pi)
    return rotation(np.cross(z, d), np.arccos(c))


_AXIS = {"z": np.eye(3), "x": _z_to(np.array([1.0, 0, 0])), "y": _z_to(np.array([0, 1.0, 0]))}


def transform(mesh: Mesh, rot: np.ndarray | None = None, offset=(0.0, 0.0, 0.0), about=(0.0, 0.0, 0.0)) -> Mesh:
    """Rotate ``mesh`` by ``rot (3, 3)`` about the point ``about``, then translate by ``offset``."""
    v, f = mesh
    about = np.asarray(about, dtype=np.float64)
    if rot is not None:
        v = (v - about) @ np.asarray(rot).T + about
    return v + np.asarray(offset, dtype=np.float64), f


@lru_cache(maxsize=None)
def _unit_cylinder(sections: int) -> Mesh:
    m = trimesh.creation.cylinder(radius=1.0, height=1.0, sections=sections)
    return np.asarray(m.vertices, dtype=np.float64), np.asarray(m.faces, dtype=np.int64)


@lru_cache(maxsize=None)
def _unit_sphere(subdivisions: int) -> Mesh:
    m = trimesh.creation.icosphere(subdivisions=subdivisions, radius=1.0)
    return np.asarray(m.vertices, dtype=np.float64), np.asarray(m.faces, dtype=np.int64)


@lru_cache(maxsize=None)
def _unit_box() -> Mesh:
    m = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    return np.asarray(m.vertices, dtype=np.float64), np.asarray(m.faces, dtype=np.int64)


def box(size, center=(0.0, 0.0, 0.0), rot: np.ndarray | None = None) -> Mesh:
    """An axis-aligned box of extents ``size (3,)`` centred at ``center``, optionally rotated about it."""
    v, f = _unit_box()
    v = v * np.asarray(size, dtype=np.float64)
    if rot is not None:
        v = v @ np.asarray(rot).T
    return v + np.asarray(center, dtype=np.float64), f


def cylinder(radius: float, height: float, center=(0.0, 0.0, 0.0), axis: str = "z", top_scale: float = 1.0,
             sections: int = 24, radius2: float | None = None) -> Mesh:
    """A closed cylinder (frustum when ``top_scale != 1``, cone when 0) along ``axis`` centred at ``center``.

    ``radius2`` makes the cross-section elliptical (second semi-axis). The "top" is the ``+axis`` end.
    """
    v, f = _unit_cylinder(sections)
    v = v.copy()
    top = v[:, 2] > 0
    v[top, :2] *= top_scale
    v[:, 0] *= radius
    v[:, 1] *= radius if radius2 is None else radius2
    v[:, 2] *= height
    return v @ _AXIS[axis].T + np.asarray(center, dtype=np.float64), f


def rod(p0, p1, radius: float, sections: int = 12) -> Mesh:
    """A cylinder of ``radius`` from point ``p0 (3,)`` to point ``p1 (3,)``."""
    p0, p1 = np.asarray(p0, dtype=np.float64), np.asarray(p1, dtype=np.float64)
    d = p1 - p0
    v, f = cylinder(radius, float(np.linalg.norm(d)), sections=sections)
    return v @ _z_to(d).T + (p0 + p1) / 2, f


def ellipsoid(radii, center=(0.0, 0.0, 0.0), subdivisions: int = 2) -> Mesh:
    """An ellipsoid with semi-axes ``radii (3,)`` (a sphere if a scalar) centred at ``center``."""
    v, f = _unit_sphere(subdivisions)
    return v * np.broadcast_to(np.asarray(radii, dtype=np.float64), (3,)) + np.asarray(center, float), f


def torus(major: float, minor: float, center=(0.0, 0.0, 0.0), axis: str = "z", half: bool = False,
          rot: np.ndarray | None = None) -> Mesh:
    """A torus around ``axis``; ``half`` keeps the ``x >= 0`` half (a C shape, e.g. a mug handle).

    The half is cut before ``axis``/``rot`` are applied, so for ``axis="y"`` the C opens towards -x.
    """
    m = trimesh.creation.torus(major, minor, major_sections=32, minor_sections=10)
    v, f = np.asarray(m.vertices, dtype=np.float64), np.asarray(m.faces, dtype=np.int64)
    if half:
        keep = v[f].mean(axis=1)[:, 0] >= -1e-9
        f = f[keep]
    v = v @ _AXIS[axis].T
    if rot is not None:
        v = v @ np.asarray(rot).T
    return v + np.asarray(center, dtype=np.float64), f


def lathe(profile, center=(0.0, 0.0, 0.0), sections: int = 32) -> Mesh:
    """Revolve a profile ``(K, 2)`` of ``(radius, z)`` points around the z axis (an open or closed shell)."""
    m = trimesh.creation.revolve(np.asarray(profile, dtype=np.float64), sections=sections)
    return np.asarray(m.vertices, dtype=np.float64) + np.asarray(center, float), np.asarray(m.faces, np.int64)


def extrude(polygon, depth: float, plane: str = "xz", offset: float = 0.0, rot: np.ndarray | None = None,
            center=(0.0, 0.0, 0.0)) -> Mesh:
    """Extrude a star-shaped polygon ``(K, 2)`` (e.g. a fin, a sail, a roof gable) into a slab.

    ``plane`` names the polygon's two axes; the slab's thickness ``depth`` runs along the third axis,
    centred at ``offset`` on it. ``rot`` then rotates about the origin and ``center`` translates.
    """
    poly = np.asarray(polygon, dtype=np.float64)
    k = len(poly)
    u, w = poly[:, 0], poly[:, 1]
    lo, hi = offset - depth / 2, offset + depth / 2
    if plane == "xz":
        a = np.stack([u, np.full(k, lo), w], 1)
        b = np.stack([u, np.full(k, hi), w], 1)
    elif plane == "xy":
        a = np.stack([u, w, np.full(k, lo)], 1)
        b = np.stack([u, w, np.full(k, hi)], 1)
    elif plane == "yz":
        a = np.stack([np.full(k, lo), u, w], 1)
        b = np.stack([np.full(k, hi), u, w], 1)
    else:
        raise ValueError(f"plane must be 'xz', 'xy' or 'yz', got {plane!r}")
    ca, cb = a.mean(0, keepdims=True), b.mean(0, keepdims=True)
    v = np.concatenate([a, b, ca, cb])
    i = np.arange(k)
    j = (i + 1) % k
    faces = [np.stack([i, j, np.full(k, 2 * k)], 1), np.stack([k + j, k + i, np.full(k, 2 * k + 1)], 1),
             np.stack([i, k + i, j], 1), np.stack([j, k + i, k + j], 1)]
    if rot is not None:
        v = v @ np.asarray(rot).T
    return v + np.asarray(center, float), np.concatenate(faces).astype(np.int64)


def loft(sections: list[np.ndarray], xs, split_edge: int | None = None) -> tuple[Mesh, Mesh | None]:
    """Skin cross-sections ``(K, 2)`` of ``(y, z)`` points placed at x positions ``xs``.

    Returns ``(surface, split)``: the side faces spanned by polygon edge ``split_edge`` (edge i runs from
    vertex i to i+1) come back as a separate mesh (e.g. a boat's deck), the rest plus the first section's
    cap as ``surface``.
    """
    k = len(sections[0])
    v = np.concatenate([np.column_stack([np.full(k, x), s]) for x, s in zip(xs, sections)])
    main, split = [], []
    for s in range(len(xs) - 1):
        for e in range(k):
            a, b = s * k + e, s * k + (e + 1) % k
            quad = [[a, a + k, b], [b, a + k, b + k]]
            (split if e == split_edge else main).extend(quad)
    c = len(v)
    v = np.vstack([v, v[:k].mean(0, keepdims=True)])
    main.extend([[(e + 1) % k, e, c] for e in range(k)])
    surface = (v, np.asarray(main, dtype=np.int64))
    return surface, ((v, np.asarray(split, dtype=np.int64)) if split else None)


def mesh_area(mesh: Mesh) -> float:
    """Total surface area of a mesh."""
    v, f = mesh
    t = v[f]
    return float(0.5 * np.linalg.norm(np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]), axis=1).sum())


def pick(rng: np.random.Generator, options, p=None):
    """One element of ``options`` (a python object, not a numpy scalar)."""
    return options[int(rng.choice(len(options), p=p))]
