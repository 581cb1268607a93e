"""Builders of the procedural categories. Vehicles: airplane, car, truck, boat, bicycle, rocket.

Each takes a :class:`numpy.random.Generator` and returns a :class:`~.primitives.Geometry`.
"""

from __future__ import annotations

import numpy as np

from .primitives import Geometry, Mesh, Part, box, cylinder, ellipsoid, extrude, loft, pick, rod, rotation, torus


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
    n_eng = pick(r, (2, 4), p=(0.6, 0.4))
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
    n_axles = pick(r, (3, 4))
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
    n_fins = pick(r, (3, 4))
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
        n_win = pick(r, (1, 2, 3))
        parts.append(Part("window", [cylinder(0.35 * R, 0.02, (0, -R, zb + H * (0.8 - 0.15 * i)), axis="y",
                                              sections=16) for i in range(n_win)],
                          shape="round", where="on the front of the body", countable=True))
    return Geometry(parts, traits=("tall",) if H / R > 10 else ())
