"""Builders of the procedural categories. Furniture: chair, table, stool, bench, sofa, bed, bookshelf.

Each takes a :class:`numpy.random.Generator` and returns a :class:`~.primitives.Geometry`.
"""

from __future__ import annotations

import numpy as np

from .primitives import Geometry, Part, box, cylinder, ellipsoid, pick, rod, rotation, torus, transform


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
        n_legs = pick(r, (1, 3, 4), p=(0.4, 0.3, 0.3))
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
    n_planks = pick(r, (1, 2, 3))
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
    w, d = r.uniform(1.6, 2.6), r.uniform(0.8, 1.0)
    foot, base_top = 0.1, r.uniform(0.36, 0.45)
    arm_w, arm_h = r.uniform(0.14, 0.25), r.uniform(0.55, 0.7)
    back_h, back_t = r.uniform(0.72, 0.95), r.uniform(0.18, 0.25)
    n_cush = pick(r, (1, 2, 3), p=(0.2, 0.45, 0.35))
    inner = w - 2 * arm_w
    parts = [
        Part("backrest", [box((inner, back_t, back_h - foot), (0, d / 2 - back_t / 2, (back_h + foot) / 2))],
             adjectives=("tall",) if back_h > 0.9 else (), where="at the back"),
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
    return Geometry(parts, traits=("long",) if w > 2.2 else ())


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
