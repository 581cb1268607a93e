"""Builders of the procedural categories. Household objects: lamp, umbrella, fan, clock, monitor, laptop, mug, bowl, vase, bottle, guitar.

Each takes a :class:`numpy.random.Generator` and returns a :class:`~.primitives.Geometry`.
"""

from __future__ import annotations

import numpy as np

from .primitives import Geometry, Part, box, cylinder, ellipsoid, extrude, lathe, pick, rod, rotation, torus, transform


def build_lamp(r: np.random.Generator) -> Geometry:
    """A floor lamp (tall pole), a table lamp (a short body under a wide shade) or a desk lamp (a jointed arm)."""
    kind = pick(r, ("floor", "table", "desk"), p=(0.4, 0.35, 0.25))
    if kind == "desk":
        return _desk_lamp(r)
    square = r.random() < 0.3
    if kind == "floor":
        ph, br, pole_r = r.uniform(1.2, 1.7), r.uniform(0.13, 0.2), r.uniform(0.012, 0.02)
        sh, scale = r.uniform(0.2, 0.3), 1.0
    else:
        ph, br, pole_r = r.uniform(0.3, 0.5), r.uniform(0.09, 0.14), r.uniform(0.025, 0.06)
        sh, scale = r.uniform(0.22, 0.35), r.uniform(1.1, 1.4)
    base = box((2 * br, 2 * br, 0.03), (0, 0, 0.015)) if square else cylinder(br, 0.03, (0, 0, 0.015), sections=32)
    style = pick(r, ("conical", "cylindrical", "dome-shaped"))
    z0 = ph - 0.6 * sh
    if style == "conical":
        rb, rt = r.uniform(0.18, 0.25) * scale, r.uniform(0.07, 0.12) * scale
        prof = [(rb, z0), (rt, z0 + sh)]
    elif style == "cylindrical":
        rc = r.uniform(0.14, 0.2) * scale
        prof = [(rc, z0), (rc, z0 + sh)]
    else:
        rd = r.uniform(0.18, 0.25) * scale
        a = np.linspace(0, np.pi / 2, 9)
        prof = [(max(rd * np.cos(x), 0.02), z0 + sh * np.sin(x)) for x in a]
    pole_words = ("tall", "thin") if kind == "floor" else ("short",)
    parts = [Part("shade", [lathe(prof)], shape=style, where="at the top"),
             Part("pole", [cylinder(pole_r, ph, (0, 0, ph / 2), sections=12)],
                  adjectives=pole_words, where="in the middle"),
             Part("base", [base], shape="square" if square else "round", where="at the bottom")]
    if r.random() < 0.5:
        parts.append(Part("bulb", [ellipsoid(0.05, (0, 0, z0 + 0.2 * sh))], where="inside the shade"))
    if kind == "floor":
        return Geometry(parts, nouns=("floor lamp", "lamp"), traits=("tall",))
    return Geometry(parts, nouns=("table lamp", "lamp"))


def _desk_lamp(r: np.random.Generator) -> Geometry:
    """A desk lamp: a round base, a lower and an upper arm meeting at an elbow, a conical head at the end."""
    br = r.uniform(0.07, 0.11)
    lower, upper = r.uniform(0.3, 0.45), r.uniform(0.25, 0.4)
    tilt = np.deg2rad(r.uniform(10, 35))        # the lower arm leans back from vertical
    reach = np.deg2rad(r.uniform(-25, 15))      # the upper arm's angle above horizontal, reaching forward
    p0 = np.array([0.0, 0.0, 0.03])
    p1 = p0 + lower * np.array([0.0, np.sin(tilt), np.cos(tilt)])
    p2 = p1 + upper * np.array([0.0, -np.cos(reach), np.sin(reach)])
    arm_r = r.uniform(0.008, 0.014)
    hr, hh = r.uniform(0.06, 0.1), r.uniform(0.1, 0.16)
    head = cylinder(hr, hh, (0.0, 0.0, 0.0), top_scale=r.uniform(0.3, 0.5), sections=24)
    head = transform(head, rotation("x", np.pi), offset=(p2[0], p2[1], p2[2] - hh / 2 + 0.02))
    parts = [Part("shade", [head], shape="conical", where="at the end of the arm"),
             Part("arm", [rod(p0, p1, arm_r), rod(p1, p2, arm_r)], adjectives=("thin",),
                  where="above the base"),
             Part("base", [cylinder(br, 0.03, (0, 0, 0.015), sections=32)], shape="round",
                  where="at the bottom")]
    return Geometry(parts, nouns=("desk lamp", "lamp"))


def build_umbrella(r: np.random.Generator) -> Geometry:
    n_panels = pick(r, (6, 8))
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
    n_blades = pick(r, (3, 4, 5))
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
        n_marks = pick(r, (4, 12))
        marks = [transform(box((0.02 * R + 0.005, 0.008, 0.12 * R), (0, -0.016, 0.82 * R)),
                           rotation("y", i * 2 * np.pi / n_marks), offset=(0, 0, zc)) for i in range(n_marks)]
        parts.append(Part("hour marker", marks, where="around the edge of the face", countable=True))
    return Geometry(parts, nouns=("wall clock", "clock"), traits=("round",))


def build_monitor(r: np.random.Generator) -> Geometry:
    """A flat panel on a stand or, one time in three, a deep one (a CRT's housing behind the frame)."""
    wide = r.random() < 0.7
    w = r.uniform(0.5, 0.8)
    h = w * (9 / 16 if wide else 3 / 4)
    t = r.uniform(0.03, 0.05)
    deep = r.random() < 1 / 3
    z0 = r.uniform(0.02, 0.06) if deep else r.uniform(0.1, 0.2)
    zc = z0 + h / 2
    parts = [Part("screen", [box((w - 0.03, 0.008, h - 0.03), (0, -t / 2 - 0.001, zc))],
                  shape="rectangular", adjectives=() if deep else ("flat",), where="at the front"),
             Part("frame", [box((w, t, h), (0, 0, zc))], where="around the screen")]
    back_d = 0.0
    if deep:
        back_d = w * r.uniform(0.35, 0.7)
        parts.append(Part("back", [box((0.8 * w, back_d, 0.8 * h), (0, t / 2 + back_d / 2, zc))],
                          adjectives=("deep",), where="behind the screen"))
    neck = box((0.05, 0.03, zc), (0, t / 2 + 0.02 + back_d * 0.4, zc / 2))
    parts.append(Part("stand", [neck], where="behind the screen" if not deep else "under the back"))
    bd = r.uniform(0.18, 0.3)
    if r.random() < 0.5:
        base = box((0.25 * w + 0.1, bd, 0.02), (0, t / 2 + back_d * 0.4, 0.01))
        shape = "rectangular"
    else:
        base = cylinder(0.12, 0.02, (0, t / 2 + back_d * 0.4, 0.01), sections=32, radius2=bd / 2)
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
        zz = pick(r, (zb, (zb + zn) / 2))
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
    """An acoustic guitar standing on its body or, one time in two, lying on its back (its front facing up)."""
    lb, ub = r.uniform(0.18, 0.22), r.uniform(0.13, 0.16)
    th = r.uniform(0.045, 0.06)
    neck_len = r.uniform(0.45, 0.55)
    lying = r.random() < 0.5
    z_low, z_up = lb, lb * 2 + ub * 0.55
    body = [cylinder(lb, th, (0, 0, z_low), axis="y", radius2=1.05 * lb, sections=36),
            cylinder(ub, th, (0, 0, z_up), axis="y", sections=32)]
    top_body = z_up + ub * 0.8
    parts = [Part("body", body, plural="bodies", shape="curved",
                  where="at one end" if lying else "at the bottom")]
    parts.append(Part("neck", [box((0.05, 0.03, neck_len), (0, -0.01, top_body + neck_len / 2 - 0.05))],
                      adjectives=("long", "thin"), where="attached to the body" if lying else "above the body"))
    zh = top_body + neck_len - 0.05
    head = box((0.08, 0.025, 0.18), (0, -0.005, zh + 0.09))
    parts.append(Part("headstock", [head], where="at the end of the neck"))
    pegs = [cylinder(0.007, 0.03, (s * 0.055, -0.005, zh + 0.035 + i * 0.05), axis="x", sections=8)
            for s in (-1, 1) for i in range(3)]
    parts.append(Part("tuning peg", pegs, where="on the headstock", countable=True))
    if r.random() < 0.75:
        parts.append(Part("sound hole", [cylinder(0.045, 0.006, (0, -th / 2 - 0.001, z_up - ub * 0.55), axis="y",
                                                  sections=24)], shape="round", where="on the front of the body"))
    if lying:
        # turn the front (-y) up: a rotation of -90 degrees about x, then back onto z = 0
        rot = rotation("x", -np.pi / 2)
        for p in parts:
            p.meshes = [transform(m, rot) for m in p.meshes]
        floor = min(float(v[:, 2].min()) for p in parts for v, _ in p.meshes)
        for p in parts:
            p.meshes = [transform(m, offset=(0.0, 0.0, -floor)) for m in p.meshes]
    return Geometry(parts, nouns=("acoustic guitar", "guitar") if len(parts) == 5 else ())
