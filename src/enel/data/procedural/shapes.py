"""Mesh primitives and the part-based builders of the procedural dataset's categories.

Frame: **z is up**, objects stand on ``z = 0``, their front faces **-y** (the side one sits on, looks at or
drives towards is -y or +x, see each builder), units are roughly metres. Nothing here is normalised: the
generator centres and scales the sampled points afterwards (:func:`enel.data.procedural.generate.pc_norm`).

A mesh is a pair ``(vertices (V, 3) float64, faces (F, 3) int64)``; every primitive below returns one. A builder
takes a :class:`numpy.random.Generator` and returns a :class:`Geometry`: named :class:`Part` s (each a list of
meshes plus the words the language generator may say about it), so that colours are assigned per part and
every fact a caption states is read off the geometry that was built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import trimesh

Mesh = tuple[np.ndarray, np.ndarray]

__all__ = [
    "Mesh",
    "Part",
    "Geometry",
    "BUILDERS",
    "box",
    "cylinder",
    "rod",
    "ellipsoid",
    "torus",
    "lathe",
    "extrude",
    "rotation",
    "transform",
    "mesh_area",
]


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


def _pick(rng: np.random.Generator, options, p=None):
    """One element of ``options`` (a python object, not a numpy scalar)."""
    return options[int(rng.choice(len(options), p=p))]


# ------------------------------------------------------------------------------------------------------------
# Furniture
# ------------------------------------------------------------------------------------------------------------
def build_chair(r: np.random.Generator) -> Geometry:
    w, d, h, t = r.uniform(0.40, 0.55), r.uniform(0.40, 0.52), r.uniform(0.42, 0.50), r.uniform(0.03, 0.06)
    n_legs = 3 if r.random() < 0.25 else 4
    leg_r = r.uniform(0.014, 0.035)
    square = r.random() < 0.5
    seat = Part("seat", [box((w, d, t), (0, 0, h - t / 2))], shape="square" if abs(w - d) < 0.05 else
                "rectangular", where="on top of the legs")
    ix, iy = w / 2 - leg_r - 0.01, d / 2 - leg_r - 0.01
    feet = [(-ix, -iy), (ix, -iy), (-ix, iy), (ix, iy)] if n_legs == 4 else [(-ix, -iy), (ix, -iy), (0, iy)]
    legs = [box((2 * leg_r, 2 * leg_r, h - t), (x, y, (h - t) / 2)) if square else
            cylinder(leg_r, h - t, (x, y, (h - t) / 2), sections=12) for x, y in feet]
    leg_adj = ("thin",) if leg_r < 0.022 else ("thick",) if leg_r > 0.03 else ()
    leg = Part("leg", legs, adjectives=leg_adj, shape="square" if square else "cylindrical",
               where="under the seat", countable=True)
    bh = r.uniform(0.25, 0.7)
    lean = rotation("x", -r.uniform(0.0, 0.18))
    pivot = (0, d / 2 - 0.02, h)
    extra = {}
    if r.random() < 0.6:
        back_meshes = [transform(box((w, 0.04, bh), (0, d / 2 - 0.02, h + bh / 2)), lean, about=pivot)]
        back_adj: tuple[str, ...] = ()
    else:
        n_slats = int(r.integers(3, 6))
        rail = 0.06
        back_meshes = [transform(box((w, 0.04, rail), (0, d / 2 - 0.02, h + bh - rail / 2)), lean, about=pivot)]
        for x in np.linspace(-w / 2 + 0.03, w / 2 - 0.03, n_slats):
            back_meshes.append(transform(box((0.035, 0.03, bh - rail), (x, d / 2 - 0.02, h + (bh - rail) / 2)),
                                         lean, about=pivot))
        back_adj = ("slatted",)
        extra["slats"] = n_slats
    tall = ("tall",) if bh > 0.5 else ("low",) if bh < 0.35 else ()
    back = Part("back", back_meshes, plural="backs", adjectives=tall + back_adj, where="behind the seat")
    parts = [seat, back, leg]
    if r.random() < 0.35:
        ah = r.uniform(0.18, 0.25)
        arms = []
        for s in (-1, 1):
            arms.append(box((0.05, d * 0.85, 0.03), (s * (w / 2 + 0.025), -0.05 * d, h + ah)))
            arms.append(rod((s * (w / 2 + 0.025), -0.4 * d, h), (s * (w / 2 + 0.025), -0.4 * d, h + ah), 0.015))
        parts.append(Part("armrest", arms, where="on both sides of the seat", countable=True, count=2))
    return Geometry(parts, nouns=("armchair", "chair") if len(parts) == 4 else (), extra_counts=extra)


def build_table(r: np.random.Generator) -> Geometry:
    h, t = r.uniform(0.64, 0.78), r.uniform(0.03, 0.05)
    round_top = r.random() < 0.4
    if round_top:
        rad = r.uniform(0.4, 0.65)
        top = Part("top", [cylinder(rad, t, (0, 0, h - t / 2), sections=40)], plural="tops", shape="round",
                   where="at the top")
        n_legs = _pick(r, (1, 3, 4), p=(0.4, 0.3, 0.3))
        spots = [(0.7 * rad * np.cos(a), 0.7 * rad * np.sin(a)) for a in
                 (np.arange(n_legs) * 2 * np.pi / n_legs + (np.pi / 4 if n_legs == 4 else np.pi / 2))]
    else:
        w, d = r.uniform(0.9, 1.6), r.uniform(0.6, 0.95)
        top = Part("top", [box((w, d, t), (0, 0, h - t / 2))], plural="tops",
                   shape="rectangular", where="at the top")
        n_legs = 1 if r.random() < 0.1 else 4
        spots = [(sx * (w / 2 - 0.07), sy * (d / 2 - 0.07)) for sx in (-1, 1) for sy in (-1, 1)]
    parts = [top]
    if n_legs == 1:
        pr = r.uniform(0.04, 0.08)
        parts.append(Part("leg", [cylinder(pr, h - t, (0, 0, (h - t) / 2), sections=16)],
                          adjectives=("central",), shape="cylindrical", where="in the middle", countable=True))
        br = r.uniform(0.22, 0.35)
        parts.append(Part("base", [cylinder(br, 0.04, (0, 0, 0.02), sections=32)], shape="round",
                          where="on the floor"))
        return Geometry(parts, traits=("pedestal",))
    lr = r.uniform(0.02, 0.045)
    square = r.random() < 0.5
    legs = [box((2 * lr, 2 * lr, h - t), (x, y, (h - t) / 2)) if square else
            cylinder(lr, h - t, (x, y, (h - t) / 2), sections=12) for x, y in spots]
    parts.append(Part("leg", legs, adjectives=("thin",) if lr < 0.028 else ("sturdy",),
                      shape="square" if square else "cylindrical", where="under the top", countable=True))
    return Geometry(parts)


def build_stool(r: np.random.Generator) -> Geometry:
    h, sr, t = r.uniform(0.45, 0.8), r.uniform(0.15, 0.2), r.uniform(0.04, 0.06)
    n = 3 if r.random() < 0.5 else 4
    lr = r.uniform(0.012, 0.022)
    splay = r.uniform(1.05, 1.4)
    a0 = r.uniform(0, np.pi)
    angles = a0 + np.arange(n) * 2 * np.pi / n
    top_pts = [(0.7 * sr * np.cos(a), 0.7 * sr * np.sin(a), h - t) for a in angles]
    bot_pts = [(splay * sr * np.cos(a), splay * sr * np.sin(a), 0.0) for a in angles]
    parts = [Part("seat", [cylinder(sr, t, (0, 0, h - t / 2), sections=32)], shape="round", where="on top"),
             Part("leg", [rod(b, a, lr) for a, b in zip(top_pts, bot_pts)], adjectives=("thin", "slanted")
                  if splay > 1.2 else ("thin",), where="under the seat", countable=True)]
    if h > 0.6 and r.random() < 0.6:
        z = 0.32 * h
        ring_r = (0.7 * sr + (splay * sr - 0.7 * sr) * (1 - z / (h - t)))
        parts.append(Part("footrest", [torus(ring_r, 0.012, (0, 0, z))], shape="round",
                          where="around the legs"))
    return Geometry(parts, nouns=("bar stool", "stool") if h > 0.65 else (),
                    traits=("tall",) if h > 0.65 else ("short",) if h < 0.52 else ())


def build_bench(r: np.random.Generator) -> Geometry:
    length, d, h = r.uniform(1.2, 1.8), r.uniform(0.32, 0.45), r.uniform(0.42, 0.48)
    t = 0.04
    n_planks = _pick(r, (1, 2, 3))
    seat_meshes = []
    gap = 0.015
    pw = (d - gap * (n_planks - 1)) / n_planks
    for i in range(n_planks):
        y = -d / 2 + pw / 2 + i * (pw + gap)
        seat_meshes.append(box((length, pw, t), (0, y, h - t / 2)))
    extra = {"planks": n_planks} if n_planks > 1 else {}
    parts = [Part("seat", seat_meshes, adjectives=("long", "slatted") if n_planks > 1 else ("long",),
                  shape="rectangular", where="on top")]
    if r.random() < 0.5:
        lr = r.uniform(0.02, 0.035)
        legs = [box((2 * lr, 2 * lr, h - t), (sx * (length / 2 - 0.1), sy * (d / 2 - 0.05), (h - t) / 2))
                for sx in (-1, 1) for sy in (-1, 1)]
        parts.append(Part("leg", legs, where="under the seat", countable=True))
    else:
        inset = r.uniform(0.05, 0.2)
        legs = [box((0.05, d * 0.95, h - t), (sx * (length / 2 - inset), 0, (h - t) / 2)) for sx in (-1, 1)]
        parts.append(Part("leg", legs, adjectives=("wide", "flat"), where="at both ends", countable=True))
    if r.random() < 0.45:
        bz = h + r.uniform(0.15, 0.3)
        back = [box((length, 0.03, 0.1), (0, d / 2 - 0.015, bz))]
        back += [box((0.04, 0.03, bz - h + 0.05), (sx * (length / 2 - 0.12), d / 2 - 0.015, (h + bz + 0.05) / 2))
                 for sx in (-1, 1)]
        parts.append(Part("backrest", back, where="along the back"))
    return Geometry(parts, traits=("long",), extra_counts=extra)


def build_sofa(r: np.random.Generator) -> Geometry:
    w, d = r.uniform(1.5, 2.4), r.uniform(0.8, 1.0)
    foot, base_top = 0.1, r.uniform(0.38, 0.45)
    arm_w, arm_h = r.uniform(0.14, 0.25), r.uniform(0.58, 0.72)
    back_h, back_t = r.uniform(0.85, 1.0), r.uniform(0.18, 0.25)
    n_cush = _pick(r, (1, 2, 3), p=(0.2, 0.45, 0.35))
    inner = w - 2 * arm_w
    parts = [
        Part("backrest", [box((inner, back_t, back_h - foot), (0, d / 2 - back_t / 2, (back_h + foot) / 2))],
             adjectives=("tall",) if back_h > 0.95 else (), where="at the back"),
        Part("base", [box((inner, d - back_t, base_top - foot), (0, -back_t / 2, (base_top + foot) / 2))],
             where="under the seat cushions"),
        Part("armrest", [box((arm_w, d, arm_h - foot), (s * (w - arm_w) / 2, 0, (arm_h + foot) / 2))
                         for s in (-1, 1)], adjectives=("wide",) if arm_w > 0.21 else (),
             where="on both sides", countable=True),
    ]
    cw = inner / n_cush
    cushions = [box((cw - 0.02, d - back_t - 0.03, 0.12), (-inner / 2 + cw * (i + 0.5), -back_t / 2 - 0.01,
                                                              base_top + 0.06)) for i in range(n_cush)]
    parts.append(Part("seat cushion", cushions, where="on the seat", countable=True))
    legs = [cylinder(0.03, foot, (sx * (w / 2 - 0.08), sy * (d / 2 - 0.08), foot / 2), top_scale=1.3,
                     sections=12) for sx in (-1, 1) for sy in (-1, 1)]
    parts.append(Part("leg", legs, adjectives=("short",), where="under the base", countable=True))
    return Geometry(parts, traits=("long",) if w > 2.1 else ())


def build_bed(r: np.random.Generator) -> Geometry:
    w, length = r.uniform(0.9, 1.8), r.uniform(1.9, 2.2)
    has_legs = r.random() < 0.6
    f0 = 0.15 if has_legs else 0.0
    f1 = f0 + r.uniform(0.15, 0.25)
    mt = r.uniform(0.15, 0.25)
    hb_h = r.uniform(0.8, 1.3)
    frame = Part("frame", [box((w, length, f1 - f0), (0, 0, (f0 + f1) / 2))], where="under the mattress")
    mattress = Part("mattress", [box((w - 0.06, length - 0.1, mt), (0, -0.02, f1 + mt / 2))],
                    plural="mattresses", shape="rectangular", where="on the frame")
    head = Part("headboard", [box((w, 0.06, hb_h), (0, length / 2 + 0.03, hb_h / 2))],
                adjectives=("tall",) if hb_h > 1.1 else (), where="at the head of the bed")
    parts = [frame, mattress, head]
    if r.random() < 0.4:
        parts.append(Part("footboard", [box((w, 0.05, 0.55), (0, -length / 2 - 0.025, 0.275))],
                          where="at the foot of the bed"))
    n_p = 2 if w > 1.3 else 1
    top = f1 + mt
    pillows = [ellipsoid((0.8 * w / (2 * n_p), 0.17, 0.07), ((-w / 2 + w / n_p * (i + 0.5)), length / 2 - 0.25,
                                                                top + 0.05)) for i in range(n_p)]
    parts.append(Part("pillow", pillows, where="near the headboard", countable=True))
    if r.random() < 0.5:
        parts.append(Part("blanket", [box((w - 0.02, 0.6 * length, 0.03), (0, -0.2 * length, top + 0.015))],
                          where="over the mattress"))
    if has_legs:
        parts.append(Part("leg", [box((0.07, 0.07, f0), (sx * (w / 2 - 0.05), sy * (length / 2 - 0.05), f0 / 2))
                                  for sx in (-1, 1) for sy in (-1, 1)], adjectives=("short",),
                          where="under the frame", countable=True))
    return Geometry(parts, traits=("wide",) if w > 1.4 else ("narrow",) if w < 1.1 else ())


def build_bookshelf(r: np.random.Generator) -> Geometry:
    n = int(r.integers(2, 7))
    w, d = r.uniform(0.6, 1.2), r.uniform(0.25, 0.35)
    level = r.uniform(0.28, 0.38)
    t = r.uniform(0.02, 0.03)
    plinth = 0.06
    h = plinth + n * level + t
    frame = [box((t, d, h), (s * (w / 2 - t / 2), 0, h / 2)) for s in (-1, 1)]
    frame.append(box((w, d, t), (0, 0, h - t / 2)))
    frame.append(box((w - 2 * t, 0.02, plinth), (0, -d / 2 + 0.01, plinth / 2)))
    shelves = [box((w - 2 * t, d - 0.01, t), (0, 0, plinth + i * level + t / 2)) for i in range(n)]
    parts = [Part("frame", frame, where="around the shelves"),
             Part("shelf", shelves, plural="shelves", adjectives=("horizontal",), where="inside the frame",
                  countable=True)]
    if r.random() < 0.8:
        parts.append(Part("back panel", [box((w - 2 * t, 0.01, h - t), (0, d / 2 - 0.005, (h - t) / 2))],
                          where="at the back"))
    if r.random() < 0.45:
        books = []
        for i in range(n):
            if r.random() < 0.6:
                x = -w / 2 + t + 0.02
                zb = plinth + i * level + t
                while x < w / 2 - t - 0.06 and r.random() < 0.93:
                    bw, bh = r.uniform(0.02, 0.045), r.uniform(0.6, 0.85) * (level - t)
                    books.append(box((bw, d * 0.75, bh), (x + bw / 2, -0.02, zb + bh / 2)))
                    x += bw + 0.003
        if books:
            parts.append(Part("book", books, where="on the shelves", uncounted=True, count=max(2, len(books))))
    return Geometry(parts, traits=("tall",) if h > 1.5 else ("short",) if h < 1.0 else ())


# ------------------------------------------------------------------------------------------------------------
# Household objects
# ------------------------------------------------------------------------------------------------------------
def build_lamp(r: np.random.Generator) -> Geometry:
    ph = r.uniform(1.2, 1.7)
    square = r.random() < 0.3
    br = r.uniform(0.13, 0.2)
    base = box((2 * br, 2 * br, 0.03), (0, 0, 0.015)) if square else cylinder(br, 0.03, (0, 0, 0.015), sections=32)
    style = _pick(r, ("conical", "cylindrical", "dome-shaped"))
    sh = r.uniform(0.2, 0.3)
    z0 = ph - 0.6 * sh
    if style == "conical":
        rb, rt = r.uniform(0.18, 0.25), r.uniform(0.07, 0.12)
        prof = [(rb, z0), (rt, z0 + sh)]
    elif style == "cylindrical":
        rc = r.uniform(0.14, 0.2)
        prof = [(rc, z0), (rc, z0 + sh)]
    else:
        rd = r.uniform(0.18, 0.25)
        a = np.linspace(0, np.pi / 2, 9)
        prof = [(max(rd * np.cos(x), 0.02), z0 + sh * np.sin(x)) for x in a]
    parts = [Part("shade", [lathe(prof)], shape=style, where="at the top"),
             Part("pole", [cylinder(r.uniform(0.012, 0.02), ph, (0, 0, ph / 2), sections=12)],
                  adjectives=("tall", "thin"), where="in the middle"),
             Part("base", [base], shape="square" if square else "round", where="at the bottom")]
    if r.random() < 0.5:
        parts.append(Part("bulb", [ellipsoid(0.05, (0, 0, z0 + 0.2 * sh))], where="inside the shade"))
    return Geometry(parts, nouns=("floor lamp", "lamp"), traits=("tall",))


def build_umbrella(r: np.random.Generator) -> Geometry:
    n_panels = _pick(r, (6, 8))
    rad, ch = r.uniform(0.45, 0.65), r.uniform(0.15, 0.3)
    shaft = r.uniform(0.8, 1.0)
    top = shaft + 0.1
    a = np.linspace(0, 1, 8)
    prof = [(rad * x, top - ch * x ** 1.6) for x in a]
    prof[0] = (1e-3, top)
    parts = [Part("canopy", [lathe(prof, sections=n_panels)], shape="dome-shaped", where="at the top"),
             Part("shaft", [cylinder(0.012, top + 0.08, (0, 0, (top + 0.08) / 2 + 0.0), sections=10)],
                  adjectives=("long", "thin"), where="under the canopy")]
    if r.random() < 0.6:
        # a J hook: the lower half of a torus in the xz plane, starting at the bottom of the shaft
        hr = r.uniform(0.04, 0.06)
        hook = torus(hr, 0.014, (hr, 0, hr + 0.02), axis="y", half=True, rot=rotation("y", np.pi / 2))
        parts.append(Part("handle", [hook, cylinder(0.014, hr + 0.02, (0, 0, (hr + 0.02) / 2), sections=10)],
                          shape="curved", where="at the bottom"))
    else:
        parts.append(Part("handle", [cylinder(0.025, 0.14, (0, 0, 0.07), sections=16)], shape="straight",
                          where="at the bottom"))
    return Geometry(parts, extra_counts={"panels": n_panels}, traits=("open",))


def build_fan(r: np.random.Generator) -> Geometry:
    n_blades = _pick(r, (3, 4, 5))
    pole_h, br = r.uniform(0.15, 0.35), r.uniform(0.11, 0.16)
    R = r.uniform(0.15, 0.24)
    zc = pole_h + R
    parts = []
    blades = []
    a0 = r.uniform(0, 2 * np.pi / n_blades)
    bw = r.uniform(0.35, 0.6) * R
    outline = np.array([(0.15 * R, 0), (0.4 * R, 0.5 * bw), (0.8 * R, 0.55 * bw), (0.97 * R, 0.2 * bw),
                        (0.97 * R, -0.2 * bw), (0.8 * R, -0.45 * bw), (0.4 * R, -0.4 * bw)])
    for i in range(n_blades):
        blade = extrude(outline, 0.008, plane="xz")
        blade = transform(blade, rotation("x", 0.3))
        blade = transform(blade, rotation("y", a0 + i * 2 * np.pi / n_blades), offset=(0, -0.08, zc))
        blades.append(blade)
    parts.append(Part("blade", blades, where="at the front", countable=True))
    body = [cylinder(0.03, 0.05, (0, -0.07, zc), axis="y", sections=16),
            ellipsoid((0.07, 0.1, 0.07), (0, 0.03, zc)),
            cylinder(0.02, zc, (0, 0.03, zc / 2), sections=12)]
    parts.append(Part("body", [cylinder(br, 0.04, (0, 0.03, 0.02), sections=32)] + body, plural="bodies",
                      where="behind the blades"))
    if r.random() < 0.6:
        parts.append(Part("guard", [torus(R + 0.015, 0.008, (0, y, zc), axis="y") for y in (-0.12, -0.03)]
                          + [rod((R * np.cos(a), -0.12, zc + R * np.sin(a)), (R * np.cos(a), -0.03, zc + R * np.sin(a)),
                                 0.004, sections=6) for a in np.linspace(0, 2 * np.pi, 8, endpoint=False)],
                          shape="round", where="around the blades"))
    return Geometry(parts, nouns=("desk fan", "fan"))


def build_clock(r: np.random.Generator) -> Geometry:
    R = r.uniform(0.15, 0.3)
    rim = r.uniform(0.015, 0.03)
    zc = R + rim
    parts = [Part("face", [cylinder(R, 0.03, (0, 0, zc), axis="y", sections=48)], shape="round",
                  where="in the middle"),
             Part("frame", [torus(R, rim, (0, 0, zc), axis="y")], shape="round", where="around the face")]
    hands = []
    for length, width, ang in ((0.55 * R, 0.03 * R + 0.004, r.uniform(0, 2 * np.pi)),
                               (0.85 * R, 0.02 * R + 0.003, r.uniform(0, 2 * np.pi))):
        hb = box((width, 0.008, length), (0, -0.017, length / 2 - 0.1 * length))
        hands.append(transform(hb, rotation("y", ang), offset=(0, 0, zc)))
    parts.append(Part("hand", hands, adjectives=("thin",), where="on the face", countable=True))
    if r.random() < 0.75:
        n_marks = _pick(r, (4, 12))
        marks = [transform(box((0.02 * R + 0.005, 0.008, 0.12 * R), (0, -0.016, 0.82 * R)),
                           rotation("y", i * 2 * np.pi / n_marks), offset=(0, 0, zc)) for i in range(n_marks)]
        parts.append(Part("hour marker", marks, where="around the edge of the face", countable=True))
    return Geometry(parts, nouns=("wall clock", "clock"), traits=("round",))


def build_monitor(r: np.random.Generator) -> Geometry:
    wide = r.random() < 0.7
    w = r.uniform(0.5, 0.8)
    h = w * (9 / 16 if wide else 3 / 4)
    t = r.uniform(0.03, 0.05)
    z0 = r.uniform(0.1, 0.2)
    zc = z0 + h / 2
    parts = [Part("screen", [box((w - 0.03, 0.008, h - 0.03), (0, -t / 2 - 0.001, zc))],
                  shape="rectangular", adjectives=("flat",), where="at the front"),
             Part("frame", [box((w, t, h), (0, 0, zc))], where="around the screen")]
    neck = box((0.05, 0.03, zc), (0, t / 2 + 0.02, zc / 2))
    parts.append(Part("stand", [neck], where="behind the screen"))
    if r.random() < 0.5:
        base = box((0.25 * w + 0.1, 0.18, 0.02), (0, t / 2, 0.01))
        shape = "rectangular"
    else:
        base = cylinder(0.12, 0.02, (0, t / 2, 0.01), sections=32, radius2=0.09)
        shape = "oval"
    parts.append(Part("base", [base], shape=shape, where="at the bottom"))
    return Geometry(parts, traits=("widescreen",) if wide else ())


def build_laptop(r: np.random.Generator) -> Geometry:
    w, d, t = r.uniform(0.3, 0.38), r.uniform(0.2, 0.26), r.uniform(0.015, 0.022)
    angle = np.deg2rad(r.uniform(95, 130))
    parts = [Part("base", [box((w, d, t), (0, 0, t / 2))], shape="rectangular", where="at the bottom")]
    lid = box((w, 0.01, d), (0, 0, d / 2))
    screen = box((w - 0.03, 0.004, d - 0.03), (0, -0.0055, d / 2))
    rot = rotation("x", angle - np.pi / 2)
    hinge = (0, d / 2, t)
    # the lid rises from the back edge; rotating by (angle - 90 deg) about x tilts it backwards
    lid = transform(transform(lid, rot), offset=hinge)
    screen = transform(transform(screen, rot), offset=hinge)
    parts.append(Part("lid", [lid], where="at the back"))
    parts.append(Part("screen", [screen], shape="rectangular", where="on the inside of the lid"))
    parts.append(Part("keyboard", [box((w - 0.04, 0.45 * d, 0.004), (0, 0.12 * d, t + 0.0005))],
                      where="on the base"))
    parts.append(Part("touchpad", [box((0.3 * w, 0.22 * d, 0.004), (0, -0.3 * d, t + 0.0005))],
                      shape="rectangular", where="in front of the keyboard"))
    return Geometry(parts, traits=("open",))


def build_mug(r: np.random.Generator) -> Geometry:
    R, H = r.uniform(0.04, 0.05), r.uniform(0.085, 0.115)
    taper = r.uniform(0.85, 1.0)
    wall = 0.005
    prof = [(1e-4, 0), (R * taper, 0), (R, H), (R - wall, H), (R * taper - wall, wall), (1e-4, wall)]
    hr = r.uniform(0.26, 0.34) * H
    handle = torus(hr, r.uniform(0.006, 0.009), (0, 0, 0), axis="y", half=True)
    handle = transform(handle, offset=(R - wall, 0, H * 0.52))
    return Geometry([Part("body", [lathe(prof, sections=40)], plural="bodies", shape="cylindrical",
                          where="in the middle"),
                     Part("handle", [handle], shape="curved", where="on the side", countable=True)],
                    traits=("small",))


def build_bowl(r: np.random.Generator) -> Geometry:
    R = r.uniform(0.08, 0.15)
    H = R * r.uniform(0.35, 0.6)
    rb = R * r.uniform(0.3, 0.5)
    wall = 0.006
    s = np.linspace(0, 1, 10)
    outer = [(rb + (R - rb) * np.sin(x * np.pi / 2), H * (1 - np.cos(x * np.pi / 2))) for x in s]
    inner = [(max(rb + (R - rb) * np.sin(x * np.pi / 2) - wall, 1e-4), wall + (H - wall) * (1 - np.cos(x * np.pi / 2)))
             for x in s[::-1]]
    outside = [(1e-4, 0.0)] + outer
    inside = [outer[-1]] + inner + [(1e-4, wall)]
    parts = [Part("exterior", [lathe(outside, sections=40)], where="on the outside of the bowl"),
             Part("interior", [lathe(inside, sections=40)], where="on the inside of the bowl")]
    return Geometry(parts, traits=("shallow",) if H < 0.45 * R else ("deep",), nouns=())


def build_vase(r: np.random.Generator) -> Geometry:
    from scipy.interpolate import PchipInterpolator

    H = r.uniform(0.25, 0.5)
    belly = H * r.uniform(0.22, 0.38)
    zb = r.uniform(0.25, 0.5)
    neck = belly * r.uniform(0.35, 0.7)
    zn = r.uniform(0.75, 0.87)
    lip = neck * r.uniform(1.0, 1.5)
    base = belly * r.uniform(0.45, 0.75)
    f = PchipInterpolator([0, zb, zn, 1.0], [base, belly, neck, lip])  # radius along the relative height
    wall = 0.006
    body_prof = [(1e-4, 0.0)] + [(float(f(z)), float(z * H)) for z in np.linspace(0, zn, 12)]
    neck_prof = [(float(f(z)), float(z * H)) for z in np.linspace(zn, 1.0, 6)]
    neck_prof += [(float(f(z)) - wall, float(z * H)) for z in np.linspace(1.0, 0.15, 12)]  # the inner wall
    parts = [Part("body", [lathe(body_prof, sections=40)], plural="bodies",
                  adjectives=("round",) if belly / H > 0.3 else ("slender",), where="at the bottom"),
             Part("neck", [lathe(neck_prof, sections=40)], adjectives=("narrow",) if neck / belly < 0.5 else ("wide",),
                  shape="flared" if lip / neck > 1.3 else "straight", where="above the body")]
    if r.random() < 0.4:
        zz = _pick(r, (zb, (zb + zn) / 2))
        zlo, zhi = zz * H - 0.012, zz * H + 0.012
        rr = float(max(f(np.linspace(zlo / H, zhi / H, 5)))) + 0.002
        parts.append(Part("band", [lathe([(rr, zlo), (rr, zhi)], sections=40)], adjectives=("decorative",),
                          where="around the body", covers=[cylinder(rr, zhi - zlo, (0, 0, zz * H), sections=40)]))
    return Geometry(parts, traits=("tall",) if H > 0.4 else ("short",) if H < 0.32 else ())


def build_bottle(r: np.random.Generator) -> Geometry:
    H, R = r.uniform(0.22, 0.35), r.uniform(0.028, 0.042)
    body_h = H * r.uniform(0.45, 0.58)
    neck_r = R * r.uniform(0.3, 0.4)
    sh = H * r.uniform(0.08, 0.15)
    cap_h = H * r.uniform(0.05, 0.08)
    s = np.linspace(0, 1, 6)
    shoulder = [(neck_r + (R - neck_r) * np.cos(x * np.pi / 2), body_h + sh * x) for x in s]
    top = H - cap_h
    prof = [(1e-4, 0.0), (R, 0.0), (R, body_h)] + shoulder[1:] + [(neck_r, top), (1e-4, top)]
    parts = [Part("body", [lathe(prof, sections=32)], plural="bodies", shape="cylindrical", where="at the bottom"),
             Part("cap", [cylinder(neck_r * 1.2, cap_h, (0, 0, top + cap_h / 2), sections=24)],
                  where="on top of the neck")]
    if r.random() < 0.6:
        z0, z1 = body_h * r.uniform(0.2, 0.35), body_h * r.uniform(0.6, 0.85)
        parts.append(Part("label", [lathe([(R * 1.01, z0), (R * 1.01, z1)], sections=32)], where="around the body",
                          covers=[cylinder(R * 1.01, z1 - z0, (0, 0, (z0 + z1) / 2), sections=32)]))
    return Geometry(parts, traits=("slender",) if H / R > 7 else ())


def build_guitar(r: np.random.Generator) -> Geometry:
    lb, ub = r.uniform(0.18, 0.22), r.uniform(0.13, 0.16)
    th = r.uniform(0.045, 0.06)
    neck_len = r.uniform(0.45, 0.55)
    z_low, z_up = lb, lb * 2 + ub * 0.55
    body = [cylinder(lb, th, (0, 0, z_low), axis="y", radius2=1.05 * lb, sections=36),
            cylinder(ub, th, (0, 0, z_up), axis="y", sections=32)]
    top_body = z_up + ub * 0.8
    parts = [Part("body", body, plural="bodies", shape="curved", where="at the bottom")]
    parts.append(Part("neck", [box((0.05, 0.03, neck_len), (0, -0.01, top_body + neck_len / 2 - 0.05))],
                      adjectives=("long", "thin"), where="above the body"))
    zh = top_body + neck_len - 0.05
    head = box((0.08, 0.025, 0.18), (0, -0.005, zh + 0.09))
    parts.append(Part("headstock", [head], where="at the top of the neck"))
    pegs = [cylinder(0.007, 0.03, (s * 0.055, -0.005, zh + 0.035 + i * 0.05), axis="x", sections=8)
            for s in (-1, 1) for i in range(3)]
    parts.append(Part("tuning peg", pegs, where="on the headstock", countable=True))
    if r.random() < 0.75:
        parts.append(Part("sound hole", [cylinder(0.045, 0.006, (0, -th / 2 - 0.001, z_up - ub * 0.55), axis="y",
                                                  sections=24)], shape="round", where="on the front of the body"))
    return Geometry(parts, nouns=("acoustic guitar", "guitar") if len(parts) == 5 else ())


# ------------------------------------------------------------------------------------------------------------
# Vehicles
# ------------------------------------------------------------------------------------------------------------
def build_airplane(r: np.random.Generator) -> Geometry:
    L, fr = r.uniform(2.6, 3.4), r.uniform(0.12, 0.19)
    mid = 0.6 * L
    nose = 0.15 * L
    tail = L - mid - nose
    tail_cone = cylinder(0.3 * fr, tail, axis="x", top_scale=1 / 0.3, sections=20)  # narrow end at -x
    v, f = tail_cone
    v = v.copy()
    v[:, 2] += 0.6 * fr * np.clip(-v[:, 0] / (tail / 2), 0, 1)  # the tail sweeps upwards
    fus = [cylinder(fr, mid, (0, 0, 0), axis="x", sections=20),
           ellipsoid((nose, fr, fr), (mid / 2, 0, 0)),
           (v + np.array([-mid / 2 - tail / 2, 0, 0]), f)]
    span, chord = r.uniform(2.2, 3.4), r.uniform(0.35, 0.55)
    sweep = r.uniform(0.1, 0.5)
    xw = r.uniform(-0.05, 0.1) * L
    wing_poly = [(xw + chord / 2, 0), (xw - chord / 2, 0), (xw - chord / 2 - sweep, span / 2),
                 (xw - chord / 2 - sweep + 0.35 * chord, span / 2)]
    wings = [extrude(np.array(wing_poly) * np.array([1, s]), 0.03, plane="xy", offset=-0.4 * fr) for s in (-1, 1)]
    xt = -L / 2 + 0.05 * L
    st_span, st_c = 0.35 * span, 0.5 * chord
    tail_parts = [extrude(np.array([(xt + st_c, 0), (xt, 0), (xt - 0.05, s * st_span / 2),
                                    (xt + 0.3 * st_c - 0.05, s * st_span / 2)]), 0.02, plane="xy",
                          offset=0.7 * fr) for s in (-1, 1)]
    fin_h = r.uniform(0.35, 0.55)
    tail_parts.append(extrude([(xt + st_c * 1.3, 0.8 * fr), (xt - 0.05, 0.8 * fr), (xt - 0.15, 0.8 * fr + fin_h),
                               (xt + 0.1, 0.8 * fr + fin_h)], 0.02, plane="xz"))
    n_eng = _pick(r, (2, 4), p=(0.6, 0.4))
    er, el = r.uniform(0.06, 0.09), r.uniform(0.3, 0.45)
    ys = (0.32,) if n_eng == 2 else (0.25, 0.55)
    engines = []
    for frac in ys:
        y = frac * span / 2
        leading = xw + chord / 2 + frac * (-0.65 * chord - sweep)
        x = leading - 0.2 * el
        for s in (-1, 1):
            engines.append(cylinder(er, el, (x, s * y, -0.4 * fr - er - 0.02), axis="x", sections=16))
    parts = [Part("fuselage", fus, where="in the middle", adjectives=("long",), shape="cylindrical"),
             Part("wing", wings, where="on both sides", countable=True, adjectives=("swept",) if sweep > 0.3
                  else ("wide",)),
             Part("tail", tail_parts, where="at the back"),
             Part("engine", engines, where="under the wings", countable=True, shape="cylindrical")]
    return Geometry(parts, nouns=("jet", "airplane") if n_eng == 4 else ())


def _wheels(xs, ys, radius: float, width: float) -> list[Mesh]:
    return [cylinder(radius, width, (x, y, radius), axis="y", sections=20) for x in xs for y in ys]


def build_car(r: np.random.Generator) -> Geometry:
    L, W = r.uniform(3.8, 4.6), r.uniform(1.6, 1.9)
    clear, bh = 0.22, r.uniform(0.5, 0.65)
    wr = r.uniform(0.3, 0.36)
    body = box((L, W, bh), (0, 0, clear + bh / 2))
    cl = L * r.uniform(0.42, 0.55)
    ch = r.uniform(0.42, 0.55)
    cx = -r.uniform(0.0, 0.12) * L
    z0 = clear + bh
    slope_f, slope_b = r.uniform(0.2, 0.45) * cl, r.uniform(0.1, 0.35) * cl
    cab_poly = [(cx + cl / 2, 0), (cx + cl / 2 - slope_f, ch), (cx - cl / 2 + slope_b, ch), (cx - cl / 2, 0)]
    cabin = extrude(cab_poly, 0.88 * W, plane="xz", center=(0, 0, z0))
    win_poly = [(cx + cl / 2 - 0.12 - 0.8 * slope_f, 0.12), (cx + cl / 2 - slope_f - 0.05, ch - 0.08),
                (cx - cl / 2 + slope_b + 0.05, ch - 0.08), (cx - cl / 2 + 0.12 + 0.8 * slope_b, 0.12)]
    windows = [extrude(win_poly, 0.012, plane="xz", offset=s * (0.44 * W + 0.002), center=(0, 0, z0))
               for s in (-1, 1)]
    parts = [Part("body", [body], plural="bodies", where="at the bottom"),
             Part("cabin", [cabin], where="on top of the body"),
             Part("wheel", _wheels((-0.32 * L, 0.32 * L), (-W / 2 + 0.08, W / 2 - 0.08), wr, 0.22),
                  where="under the body", countable=True, shape="round"),
             Part("window", windows, where="on the sides of the cabin", uncounted=True)]
    return Geometry(parts, traits=("low",) if bh + ch < 1.0 else ())


def build_truck(r: np.random.Generator) -> Geometry:
    W = r.uniform(2.2, 2.5)
    cab_l, cab_h = r.uniform(1.4, 1.8), r.uniform(1.6, 2.0)
    cargo_l, cargo_h = r.uniform(4.0, 6.5), r.uniform(2.2, 2.8)
    n_axles = _pick(r, (3, 4))
    wr = r.uniform(0.45, 0.52)
    z0 = 0.55
    x_front = (cab_l + cargo_l + 0.15) / 2
    cab = box((cab_l, W, cab_h), (x_front - cab_l / 2, 0, z0 + cab_h / 2))
    cargo_x = x_front - cab_l - 0.15 - cargo_l / 2
    cargo = box((cargo_l, W, cargo_h), (cargo_x, 0, z0 + 0.1 + cargo_h / 2))
    chassis = box((cab_l + cargo_l + 0.1, W * 0.7, 0.25), (0, 0, z0 - 0.05))
    rear = [cargo_x - cargo_l / 2 + 0.8 + i * 1.1 for i in range(n_axles - 1)]
    xs = [x_front - 0.6 * cab_l] + rear
    windshield = box((0.012, W * 0.85, 0.5 * cab_h), (x_front + 0.002, 0, z0 + 0.7 * cab_h))
    parts = [Part("cargo box", [cargo], plural="cargo boxes", shape="rectangular", adjectives=("large",),
                  where="at the back"),
             Part("cab", [cab], where="at the front"),
             Part("wheel", _wheels(xs, (-W / 2 + 0.12, W / 2 - 0.12), wr, 0.3), where="under the truck",
                  countable=True, shape="round"),
             Part("chassis", [chassis], plural="chassis", where="under the cab and the cargo box"),
             Part("windshield", [windshield], where="on the front of the cab")]
    return Geometry(parts, traits=("long",) if cargo_l > 5.5 else ())


def build_boat(r: np.random.Generator) -> Geometry:
    L, B, D = r.uniform(3.0, 5.5), r.uniform(1.2, 2.0), r.uniform(0.5, 0.8)
    xs = np.linspace(-L / 2, L / 2, 10)
    sections = []
    for x in xs:
        u = (x + L / 2) / L
        half = B / 2 * (0.85 + 0.15 * np.sin(np.pi * min(u / 0.6, 1) / 2)) * (1 - max(0, (u - 0.55) / 0.45) ** 1.6)
        half = max(half, 0.01)
        deck_z = D + 0.15 * max(0, u - 0.6) / 0.4
        sections.append(np.array([(half, deck_z), (-half, deck_z), (-0.35 * half, 0.0), (0.35 * half, 0.0)]))
    hull, deck = loft(sections, xs, split_edge=0)
    parts = [Part("hull", [hull], where="at the bottom", shape="pointed"),
             Part("deck", [deck], where="on top of the hull")]
    if r.random() < 0.5:
        mh = r.uniform(0.9, 1.3) * L
        mx = r.uniform(0.0, 0.12) * L
        parts.append(Part("mast", [cylinder(0.04, mh, (mx, 0, D + mh / 2), sections=10)], adjectives=("tall",),
                          where="in the middle of the deck"))
        sails = [extrude([(mx - 0.05, D + 0.3), (mx - 0.05, D + mh * 0.95), (mx - 0.45 * L, D + 0.3)], 0.015,
                         plane="xz")]
        if r.random() < 0.5:
            sails.append(extrude([(mx + 0.05, D + 0.2), (mx + 0.05, D + mh * 0.85), (0.47 * L, D + 0.15)], 0.015,
                                 plane="xz"))
        parts.append(Part("sail", sails, shape="triangular", where="on the mast", countable=True))
        return Geometry(parts, nouns=("sailboat", "boat"))
    cl, cw, chh = r.uniform(0.25, 0.4) * L, 0.6 * B, r.uniform(0.4, 0.7)
    cx = -r.uniform(0.0, 0.15) * L
    cabin = extrude([(cx + cl / 2, 0), (cx + cl / 2 - 0.25, chh), (cx - cl / 2, chh), (cx - cl / 2, 0)], cw,
                    plane="xz", center=(0, 0, D))
    parts.append(Part("cabin", [cabin], where="on the deck"))
    return Geometry(parts, nouns=("motorboat", "boat"))


def build_bicycle(r: np.random.Generator) -> Geometry:
    R, wb = r.uniform(0.3, 0.36), r.uniform(1.0, 1.12)
    fr = r.uniform(0.015, 0.022)
    rh, fh = np.array([-wb / 2, 0, R]), np.array([wb / 2, 0, R])
    bb = np.array([-0.05, 0, R - 0.05])
    st = np.array([-0.2, 0, R + 0.55])
    ht = np.array([wb / 2 - 0.16, 0, R + 0.55])
    hb = np.array([wb / 2 - 0.11, 0, R + 0.38])
    frame = [rod(st, ht, fr), rod(bb, hb, fr), rod(bb, st, fr), rod(hb, ht, fr)]
    for s in (-1, 1):
        off = np.array([0, s * 0.05, 0])
        frame += [rod(rh + off, bb + off / 2, fr * 0.7), rod(rh + off, st, fr * 0.7), rod(hb, fh + off * 0.8, fr * 0.8)]
    wheels = [torus(R, r.uniform(0.018, 0.028), c, axis="y") for c in (rh, fh)]
    wheels += [cylinder(0.03, 0.08, c, axis="y", sections=12) for c in (rh, fh)]
    seat = [ellipsoid((0.13, 0.06, 0.03), st + np.array([-0.02, 0, 0.1])),
            rod(st, st + np.array([-0.02, 0, 0.08]), 0.013)]
    bar_top = ht + np.array([0.02, 0, 0.12])
    bar = [rod(ht, bar_top, 0.014), rod(bar_top + np.array([0, -0.25, 0]), bar_top + np.array([0, 0.25, 0]), 0.013)]
    return Geometry([Part("frame", frame, where="between the wheels"),
                     Part("wheel", wheels, count=2, where="at the front and back", shape="round", countable=True,
                          adjectives=("large",) if R > 0.34 else ()),
                     Part("seat", [*seat], where="on top of the frame"),
                     Part("handlebar", bar, where="at the front")], nouns=())


def build_rocket(r: np.random.Generator) -> Geometry:
    R, H = r.uniform(0.12, 0.2), r.uniform(1.2, 2.0)
    zb = 0.25
    nh = r.uniform(0.3, 0.6)
    n_fins = _pick(r, (3, 4))
    parts = [Part("body", [cylinder(R, H, (0, 0, zb + H / 2), sections=24)], plural="bodies", shape="cylindrical",
                  where="in the middle"),
             Part("nose cone", [cylinder(R, nh, (0, 0, zb + H + nh / 2), top_scale=0.0, sections=24)],
                  shape="pointed", where="at the top")]
    fl = r.uniform(0.35, 0.6)
    span = r.uniform(0.2, 0.35)
    fin_poly = [(R * 0.9, zb + fl), (R * 0.9, zb), (R + span, 0.0), (R + span, zb + 0.3 * fl)]
    a0 = r.uniform(0, np.pi / 2)
    fins = [extrude(fin_poly, 0.025, plane="xz", rot=rotation("z", a0 + i * 2 * np.pi / n_fins))
            for i in range(n_fins)]
    parts.append(Part("fin", fins, where="around the base", countable=True, shape="triangular"))
    parts.append(Part("nozzle", [cylinder(R * 0.6, zb, (0, 0, zb / 2), top_scale=0.6, sections=20)],
                      where="at the bottom"))
    if r.random() < 0.5:
        n_win = _pick(r, (1, 2, 3))
        parts.append(Part("window", [cylinder(0.35 * R, 0.02, (0, -R, zb + H * (0.8 - 0.15 * i)), axis="y",
                                              sections=16) for i in range(n_win)],
                          shape="round", where="on the front of the body", countable=True))
    return Geometry(parts, traits=("tall",) if H / R > 10 else ())


# ------------------------------------------------------------------------------------------------------------
# Tools, outdoor objects, buildings
# ------------------------------------------------------------------------------------------------------------
def build_sword(r: np.random.Generator) -> Geometry:
    bl, bw = r.uniform(0.7, 1.0), r.uniform(0.04, 0.07)
    gl, gw = r.uniform(0.15, 0.25), r.uniform(0.018, 0.024)
    z0 = gl + 0.03
    tip = r.uniform(0.06, 0.15)
    blade = extrude([(-bw / 2, z0), (bw / 2, z0), (bw / 2, z0 + bl - tip), (0, z0 + bl), (-bw / 2, z0 + bl - tip)],
                    0.012, plane="xz")
    guard_w = r.uniform(0.16, 0.3)
    parts = [Part("blade", [blade], adjectives=("long", "straight"), shape="pointed", where="at the top"),
             Part("crossguard", [box((guard_w, 0.035, 0.03), (0, 0, z0 - 0.015))], where="between the blade and "
                  "the grip"),
             Part("grip", [cylinder(gw, gl, (0, 0, 0.03 + gl / 2), sections=12)], shape="cylindrical",
                  where="below the crossguard"),
             Part("pommel", [ellipsoid(r.uniform(0.025, 0.035), (0, 0, 0.025))], shape="round",
                  where="at the end of the grip")]
    return Geometry(parts)


def build_hammer(r: np.random.Generator) -> Geometry:
    hl, hr = r.uniform(0.28, 0.4), r.uniform(0.014, 0.02)
    kind = _pick(r, ("claw", "sledge"))
    parts = []
    if kind == "claw":
        hw, hs = r.uniform(0.11, 0.15), r.uniform(0.028, 0.036)
        head = [box((0.4 * hw, hs, hs), (0.15 * hw, 0, hl)),
                cylinder(0.6 * hs, 0.2 * hw, (0.45 * hw, 0, hl), axis="x", sections=16),
                extrude([(-0.05 * hw, hl + hs / 2), (-0.5 * hw, hl - 0.01), (-0.5 * hw, hl - 0.022),
                         (-0.05 * hw, hl - hs / 2)], 0.7 * hs, plane="xz")]
    else:
        hw, hs = r.uniform(0.14, 0.2), r.uniform(0.045, 0.06)
        head = [box((hw, hs, hs), (0, 0, hl))]
    parts.append(Part("head", head, where="at the top", adjectives=("heavy",) if kind == "sledge" else ()))
    parts.append(Part("handle", [cylinder(hr, hl, (0, 0, hl / 2), sections=12)], adjectives=("long",) if hl > 0.35
                      else (), shape="cylindrical", where="under the head"))
    if r.random() < 0.5:
        parts.append(Part("grip", [cylinder(hr + 0.004, 0.4 * hl, (0, 0, 0.2 * hl), sections=12)],
                          where="at the bottom of the handle"))
    return Geometry(parts, nouns=("sledgehammer", "hammer") if kind == "sledge" else ())


def build_ladder(r: np.random.Generator) -> Geometry:
    H, W = r.uniform(1.5, 3.0), r.uniform(0.35, 0.5)
    n = max(4, min(10, int(round(H / r.uniform(0.26, 0.32))) - 1))
    rails = [box((0.05, 0.03, H), (s * W / 2, 0, H / 2)) for s in (-1, 1)]
    gap = H / (n + 1)
    rungs = [cylinder(0.017, W, (0, 0, gap * (i + 1)), axis="x", sections=10) for i in range(n)]
    return Geometry([Part("rail", rails, adjectives=("long",), where="on both sides", countable=True),
                     Part("rung", rungs, adjectives=("horizontal",), where="between the rails", countable=True)],
                    traits=("tall",) if H > 2.3 else ())


def build_tree(r: np.random.Generator) -> Geometry:
    th, tr = r.uniform(0.5, 1.0), r.uniform(0.07, 0.14)
    parts = [Part("trunk", [cylinder(tr, th, (0, 0, th / 2), top_scale=0.8, sections=14)], where="at the bottom")]
    if r.random() < 0.5:
        n = _pick(r, (1, 2, 3))
        base_r = r.uniform(0.6, 0.9)
        cones, z = [], th * 0.8
        for i in range(n):
            rr = base_r * (1 - 0.22 * i)
            hh = rr * r.uniform(1.3, 1.8)
            cones.append(cylinder(rr, hh, (0, 0, z + hh / 2), top_scale=0.0, sections=20))
            z += hh * 0.5
        parts.insert(0, Part("foliage", cones, shape="conical", where="above the trunk", mass=True))
        return Geometry(parts, nouns=("pine tree", "tree"), extra_counts={"tiers": n} if n > 1 else {},
                        palette={"foliage": ("green",)})
    crown = r.uniform(0.55, 0.85)
    n = _pick(r, (1, 3, 4))
    if n == 1:
        blobs = [ellipsoid((crown, crown, crown * r.uniform(0.8, 1.1)), (0, 0, th + 0.7 * crown))]
    else:
        a0 = r.uniform(0, 2 * np.pi)
        blobs = [ellipsoid(0.7 * crown, (0, 0, th + 0.9 * crown))]
        blobs += [ellipsoid(0.55 * crown, (0.5 * crown * np.cos(a0 + i * 2 * np.pi / n),
                                           0.5 * crown * np.sin(a0 + i * 2 * np.pi / n), th + 0.55 * crown))
                  for i in range(n)]
    parts.insert(0, Part("foliage", blobs, shape="round", where="above the trunk", mass=True))
    return Geometry(parts)


def build_house(r: np.random.Generator) -> Geometry:
    W, D, H = r.uniform(1.0, 1.6), r.uniform(0.9, 1.4), r.uniform(0.7, 1.1)
    rh = r.uniform(0.4, 0.7)
    ov = 0.08
    walls = box((W, D, H), (0, 0, H / 2))
    if r.random() < 0.65:
        roof = extrude([(-D / 2 - ov, H), (D / 2 + ov, H), (0, H + rh)], W + 2 * ov, plane="yz")
        roof_shape = "pointed"
    else:
        roof = cylinder((max(W, D) / 2 + ov) * np.sqrt(2), rh, (0, 0, H + rh / 2), top_scale=0.0, sections=4)
        roof = transform(roof, rotation("z", np.pi / 4), about=(0, 0, 0))
        v, f = roof
        v = v.copy()
        v[:, 0] *= (W + 2 * ov) / max(W + 2 * ov, D + 2 * ov)
        v[:, 1] *= (D + 2 * ov) / max(W + 2 * ov, D + 2 * ov)
        roof = (v, f)
        roof_shape = "pyramid-shaped"
    n_win = int(r.integers(1, 5))
    slots = np.linspace(-W / 2, W / 2, n_win + 3)[1:-1]
    door_slot = int(r.integers(0, n_win + 1))
    door_x = slots[door_slot]
    spacing = W / (n_win + 2)
    ws, dw = min(0.17, 0.7 * spacing), min(0.2, 0.8 * spacing)
    windows = [box((ws, 0.02, ws), (x, -D / 2 - 0.004, 0.55 * H)) for i, x in enumerate(slots) if i != door_slot]
    parts = [Part("wall", [walls], where="at the bottom", uncounted=True, count=4),
             Part("roof", [roof], shape=roof_shape, where="on top"),
             Part("door", [box((dw, 0.03, 0.48 * H), (door_x, -D / 2 - 0.008, 0.24 * H))], shape="rectangular",
                  where="on the front"),
             Part("window", windows, shape="square", where="on the front wall", countable=True)]
    if r.random() < 0.5:
        cx = r.uniform(0.15, 0.35) * W * _pick(r, (-1, 1))
        parts.append(Part("chimney", [box((0.14, 0.14, rh * 0.9), (cx, 0.2 * D, H + rh * 0.55))],
                          where="on the roof"))
    return Geometry(parts, traits=("small",) if W * D < 1.2 else ())


def build_snowman(r: np.random.Generator) -> Geometry:
    n = _pick(r, (2, 3), p=(0.35, 0.65))
    r0 = r.uniform(0.3, 0.4)
    radii = [r0 * (0.72 ** i) for i in range(n)]
    z = 0.0
    balls, centers = [], []
    for i, rr in enumerate(radii):
        c = z + rr if i == 0 else z + rr * 0.75
        balls.append(ellipsoid(rr, (0, 0, c)))
        centers.append(c)
        z = c + rr * 0.75
    hr, hc = radii[-1], centers[-1]
    nl = 0.2 * r0 + 0.05  # carrot nose, apex pointing at -y
    parts = [Part("snowball", balls, where="stacked on top of each other", countable=True, shape="round"),
             Part("nose", [transform(cylinder(0.045, nl, axis="y", top_scale=0.0, sections=12), rotation("z", np.pi),
                                     offset=(0, -hr - nl / 2 + 0.03, hc))], shape="conical", where="on the face"),
             Part("eye", [ellipsoid(0.033, (s * 0.35 * hr, -0.9 * hr, hc + 0.3 * hr)) for s in (-1, 1)],
                  where="on the face", countable=True)]
    if r.random() < 0.6:
        parts.append(Part("hat", [cylinder(0.9 * hr, 0.03, (0, 0, hc + 0.85 * hr), sections=28),
                                  cylinder(0.6 * hr, 0.9 * hr, (0, 0, hc + 0.85 * hr + 0.45 * hr), sections=28)],
                          where="on the head"))
    if r.random() < 0.6:
        mc, mr = centers[-2], radii[-2]
        arms = [rod((s * 0.8 * mr, 0, mc + 0.1 * mr), (s * (mr + 0.45), 0, mc + 0.5 * mr + 0.2), 0.015, sections=8)
                for s in (-1, 1)]
        parts.append(Part("arm", arms, adjectives=("thin",), where="on the sides", countable=True))
    if r.random() < 0.5:
        k = _pick(r, (2, 3))
        mc, mr = centers[-2] if n == 3 else centers[0], radii[-2] if n == 3 else radii[0]
        parts.append(Part("button", [ellipsoid(0.032, (0, -mr * np.cos(a), mc + mr * np.sin(a)))
                                     for a in np.linspace(-0.35, 0.35, k)], where="on the front",
                          countable=True))
    return Geometry(parts)


BUILDERS = {
    "airplane": build_airplane,
    "bed": build_bed,
    "bench": build_bench,
    "bicycle": build_bicycle,
    "boat": build_boat,
    "bookshelf": build_bookshelf,
    "bottle": build_bottle,
    "bowl": build_bowl,
    "car": build_car,
    "chair": build_chair,
    "clock": build_clock,
    "fan": build_fan,
    "guitar": build_guitar,
    "hammer": build_hammer,
    "house": build_house,
    "ladder": build_ladder,
    "lamp": build_lamp,
    "laptop": build_laptop,
    "monitor": build_monitor,
    "mug": build_mug,
    "rocket": build_rocket,
    "snowman": build_snowman,
    "sofa": build_sofa,
    "stool": build_stool,
    "sword": build_sword,
    "table": build_table,
    "tree": build_tree,
    "truck": build_truck,
    "umbrella": build_umbrella,
    "vase": build_vase,
}
"""Category name -> builder ``(rng) -> Geometry`` (30 categories)."""
