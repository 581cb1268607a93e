"""Builders of the procedural categories. Tools, outdoor objects and buildings: sword, hammer, ladder, tree, house, snowman.

Each takes a :class:`numpy.random.Generator` and returns a :class:`~.primitives.Geometry`.
"""

from __future__ import annotations

import numpy as np

from .primitives import Geometry, Part, box, cylinder, ellipsoid, extrude, pick, rod, rotation, transform


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
    kind = pick(r, ("claw", "sledge"))
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
        n = pick(r, (1, 2, 3))
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
    n = pick(r, (1, 3, 4))
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
        cx = r.uniform(0.15, 0.35) * W * pick(r, (-1, 1))
        parts.append(Part("chimney", [box((0.14, 0.14, rh * 0.9), (cx, 0.2 * D, H + rh * 0.55))],
                          where="on the roof"))
    return Geometry(parts, traits=("small",) if W * D < 1.2 else ())


def build_snowman(r: np.random.Generator) -> Geometry:
    n = pick(r, (2, 3), p=(0.35, 0.65))
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
        k = pick(r, (2, 3))
        mc, mr = centers[-2] if n == 3 else centers[0], radii[-2] if n == 3 else radii[0]
        parts.append(Part("button", [ellipsoid(0.032, (0, -mr * np.cos(a), mc + mr * np.sin(a)))
                                     for a in np.linspace(-0.35, 0.35, k)], where="on the front",
                          countable=True))
    return Geometry(parts)
