"""Synthesize the procedural dataset and write it in PointLLM's layout.

Layout of ``out_dir`` (``N`` = ``num_points``, 8192 by default, as in PointLLM's ``8192_npy``)::

    {N}_npy/{object_id}_{N}.npy        (N, 6) float32: xyz (pc_norm'd, z up) + rgb in [0, 1]
    anno/brief_{split}.json            simple_description records (2 per object)
    anno/complex_{split}.json          detailed_description / single_round / multi_round records
    anno/grounding_{split}.json        single_round records whose questions never name the object (stage 1)
    anno/benchmark_{split}_GT.json     one simple_description record per object, answer = reference caption
    objects.jsonl                      one line of metadata per object (category, label, split, parts, ...)
    class_labels.txt                   one category per line, sorted; line index = label
    manifest.json                      parameters, counts, generator version (written last)

``split`` is ``train``, ``val`` and ``test``. Every file is a pure function of the parameters: each object
draws from its own random streams seeded by ``(seed, category, index)``, so two runs are byte-identical and
adding categories does not change the objects of the others.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import ConfigError
from ...points.transforms import pc_norm
from . import colors as C
from . import language as L
from .categories import CATEGORY_NAMES, CategorySpec, get_spec
from .shapes import Geometry, mesh_area

__all__ = [
    "GENERATOR_VERSION",
    "SPLITS",
    "ProceduralObject",
    "make_object",
    "object_id",
    "sample_surface",
    "solid_planes",
    "split_sizes",
    "synthesize",
    "write_sample",
    "load_objects",
]

GENERATOR_VERSION = "1.3"  # 1.1: anno/grounding_{split}.json; 1.2: three identify records per object in it;
# 1.3: lying guitars, table and desk lamps, deep (CRT) monitors, lower and wider sofas (issue 17, zero-shot)
SPLITS = ("train", "val", "test")
SINGLE_ROUND_PER_OBJECT = 3


# ------------------------------------------------------------------------------------------------------------
# Points
# ------------------------------------------------------------------------------------------------------------
def _plane_dist(x: np.ndarray, planes: np.ndarray) -> np.ndarray:
    """Signed distances ``(N, P)`` of points ``(N, 3)`` to planes ``(P, 4)`` (elementwise: no BLAS threads)."""
    return x[:, 0:1] * planes[:, 0] + x[:, 1:2] * planes[:, 1] + x[:, 2:3] * planes[:, 2] + planes[:, 3]


def solid_planes(mesh) -> tuple | None:
    """``(planes (P, 4), lo (3,), hi (3,), centre (3,), r_in, r_out)`` if ``mesh`` is a closed convex solid.

    A point ``x`` is strictly inside when ``lo < x < hi`` and ``planes[:, :3] @ x + planes[:, 3] < 0`` for every
    plane (outward normals, deduplicated); ``r_in`` / ``r_out`` are the radii of a ball around ``centre`` inside
    / around the solid, which settle most points without the plane test. ``None`` for anything else: open
    shells (lathe profiles, a half torus) and non-convex meshes (a torus) hide nothing.
    """
    v, f = mesh
    if len(f) < 4:
        return None
    e = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    _, cnt = np.unique(e[:, 0] * (len(v) + 1) + e[:, 1], return_counts=True)
    if not np.all(cnt == 2):
        return None
    t = v[f]
    n = np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0])
    norm = np.linalg.norm(n, axis=1)
    scale = float(np.abs(v).max() + 1e-12)
    ok = norm > 1e-12 * scale * scale
    n = n[ok] / norm[ok, None]
    c = v.mean(axis=0)
    d = -(n * t[ok, 0]).sum(axis=1)
    flip = (n @ c + d) > 0  # orient outwards: the centre must be behind every plane
    n[flip], d[flip] = -n[flip], -d[flip]
    planes = np.unique(np.round(np.column_stack([n, d]), 9), axis=0)
    planes = planes[np.argsort((np.arange(len(planes)) * 0.6180339887) % 1.0, kind="stable")]  # spread normals
    if _plane_dist(v, planes).max() > 1e-7 * scale:
        return None  # some vertex in front of a face plane: not convex
    r_in = float(-(planes[:, :3] @ c + planes[:, 3]).max())
    r_out = float(np.sqrt(((v - c) ** 2).sum(axis=1)).max())
    return planes, v.min(axis=0), v.max(axis=0), c, r_in, r_out


def sample_surface(meshes: list, rgbs: list, n: int, rng: np.random.Generator, solids: list | None = None,
                   eps: float = 1e-6) -> np.ndarray:
    """Area-weighted uniform samples on the *visible* union of ``meshes``, coloured per mesh.

    ``meshes``: list of ``(V (v, 3), F (f, 3))``; ``rgbs``: one ``(3,)`` colour per mesh; ``solids``: per-mesh
    index lists of occluders as ``(owner mesh index or -1, planes, lo, hi)`` from :func:`solid_planes`. A sample
    strictly inside (deeper than ``eps``) a solid other than its own mesh is hidden (e.g. the part of a wing
    inside the fuselage, the wall behind a door) and replaced by further samples. Returns ``(n, 6)`` float64
    (xyz + rgb).
    """
    tris = np.concatenate([v[f] for v, f in meshes])  # (T, 3, 3)
    owner = np.concatenate([np.full(len(f), i) for i, (_, f) in enumerate(meshes)])
    cols = np.concatenate([np.broadcast_to(c, (len(f), 3)) for (_, f), c in zip(meshes, rgbs)])
    area = 0.5 * np.linalg.norm(np.cross(tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0]), axis=1)
    cdf = np.cumsum(area)
    out, have = [], 0
    for _ in range(50):
        m = int((n - have) * 1.3) + 64
        idx = np.searchsorted(cdf, rng.random(m) * cdf[-1], side="right").clip(0, len(area) - 1)
        u, w = rng.random((2, m))
        flip = u + w > 1
        u[flip], w[flip] = 1 - u[flip], 1 - w[flip]
        t = tris[idx]
        xyz = t[:, 0] + u[:, None] * (t[:, 1] - t[:, 0]) + w[:, None] * (t[:, 2] - t[:, 0])
        keep = np.ones(m, dtype=bool)
        for own, planes, lo, hi, centre, r_in, r_out in solids or ():
            cand = np.nonzero(keep & np.all((xyz > lo + eps) & (xyz < hi - eps), axis=1) & (owner[idx] != own))[0]
            if not len(cand):
                continue
            r = np.sqrt(((xyz[cand] - centre) ** 2).sum(axis=1))
            keep[cand[r < r_in - eps]] = False
            shell = cand[(r >= r_in - eps) & (r <= r_out)]
            for k in range(0, len(planes), 24):  # most outside points are rejected by the first planes
                if not len(shell):
                    break
                blk = planes[k:k + 24]
                shell = shell[_plane_dist(xyz[shell], blk).max(axis=1) < -eps]
            keep[shell] = False
        pts = np.concatenate([xyz[keep], cols[idx[keep]]], axis=1)
        out.append(pts)
        have += len(pts)
        if have >= n:
            return np.concatenate(out)[:n]
    raise RuntimeError("could not sample enough visible surface points")  # only for a fully hidden object


# ------------------------------------------------------------------------------------------------------------
# One object
# ------------------------------------------------------------------------------------------------------------
@dataclass
class ProceduralObject:
    """One generated object: its cloud, facts, texts and PointLLM records.

    ``points``: ``(num_points, 6)`` float32, xyz normalised into the unit sphere, rgb in [0, 1].
    ``brief`` / ``complex``: PointLLM conversation records; ``benchmark``: the GT record;
    ``qa``: every :class:`.language.QA` used in ``complex`` (with its kind and target, for tests and scoring);
    ``grounding``: the stage-1 records (:func:`.language.grounding_qa`).
    """

    object_id: str
    category: str
    index: int
    points: np.ndarray
    facts: L.ObjectFacts
    caption: str
    detailed: str
    brief: list[dict]
    complex: list[dict]
    benchmark: dict
    qa: list[L.QA]
    color_qa: L.QA
    meta: dict = field(default_factory=dict)
    grounding: list[dict] = field(default_factory=list)


def object_id(category: str, index: int) -> str:
    """The deterministic id of object ``index`` of ``category``: ``proc_{category}_{index:05d}``."""
    return f"proc_{category}_{index:05d}"


def _streams(seed: int, category: str, index: int) -> list[np.random.Generator]:
    ss = np.random.SeedSequence([int(seed), zlib.crc32(category.encode("utf-8")), int(index)])
    return [np.random.default_rng(s) for s in ss.spawn(4)]  # geometry, colours, points, language


def _assign_colors(spec: CategorySpec, geom: Geometry, rng: np.random.Generator) -> dict[str, str]:
    """Colour per part name: one colour per colour group; sometimes (25 %) every group shares the main one."""
    present = {p.name for p in geom.parts}
    groups = [g for g in spec.groups if present.intersection(g.parts)]
    share = rng.random() < 0.25
    out: dict[str, str] = {}
    used: list[str] = []
    for i, g in enumerate(groups):
        allowed = list(g.colors)
        for name in g.parts:
            if name in geom.palette:
                allowed = [c for c in allowed if c in geom.palette[name]] or allowed
        if i > 0 and share and used[0] in allowed:
            c = used[0]
        else:
            fresh = [c for c in allowed if c not in used] or allowed
            c = fresh[int(rng.integers(len(fresh)))]
        used.append(c)
        for name in g.parts:
            out[name] = c
    missing = present - set(out)
    if missing:
        raise RuntimeError(f"{spec.name}: parts {sorted(missing)} have no colour group")
    return out


def _facts(spec: CategorySpec, geom: Geometry, color_of: dict[str, str], areas: dict[str, float],
           rng: np.random.Generator) -> L.ObjectFacts:
    parts = []
    for p in geom.parts:
        fam = spec.group_of(p.name).material
        material = C.MATERIAL_BY_COLOR.get(fam, {}).get(color_of[p.name]) if fam else None
        parts.append(L.PartFact(p.name, p.plural_name, color_of[p.name], p.n, p.adjectives, p.shape, p.where,
                                p.countable, p.mass, material, p.uncounted))
    share: dict[str, float] = {}
    total = sum(areas.values())
    for name, a in areas.items():
        share[color_of[name]] = share.get(color_of[name], 0.0) + a / total
    main = max(sorted(share), key=lambda c: share[c])
    counts = {p.plural_name: p.n for p in geom.parts if p.countable}
    counts.update(geom.extra_counts)
    nouns = geom.nouns or spec.nouns
    noun = nouns[0] if rng.random() < 0.6 else nouns[int(rng.integers(len(nouns)))]
    return L.ObjectFacts(spec.name, noun, parts, main, counts, geom.traits, spec.uses, spec.places,
                         all_nouns=tuple(nouns), color_share={c: round(v, 4) for c, v in sorted(share.items())})


def _conv(turns: list[tuple[str, str]]) -> list[dict]:
    """PointLLM conversations: ``<point>\\n`` before the first human turn only, roles alternating."""
    out = []
    for i, (q, a) in enumerate(turns):
        out.append({"from": "human", "value": (L.POINT_TOKEN + "\n" + q) if i == 0 else q})
        out.append({"from": "gpt", "value": a})
    return out


def _record(oid: str, kind: str, turns: list[tuple[str, str]]) -> dict:
    return {"object_id": oid, "conversation_type": kind, "conversations": _conv(turns)}


def make_object(category: str, index: int = 0, *, seed: int = 0, num_points: int = 8192,
                max_yaw_degrees: float = 15.0, up_axis: str = "z") -> ProceduralObject:
    """Build, colour, sample and describe object ``index`` of ``category`` (deterministic in its arguments)."""
    spec = get_spec(category)
    if up_axis not in ("z", "y"):
        raise ConfigError(f"up_axis must be 'z' or 'y', got {up_axis!r}")
    r_geo, r_col, r_pts, r_txt = _streams(seed, category, index)
    geom = spec.build(r_geo)
    color_of = _assign_colors(spec, geom, r_col)
    rgb_of = {p.name: C.rgb(color_of[p.name], r_col) for p in geom.parts}
    meshes, rgbs, areas, solids = [], [], {}, []
    for p in geom.parts:
        areas[p.name] = sum(mesh_area(m) for m in p.meshes)
        for m in p.meshes:
            sp = solid_planes(m)
            if sp is not None:
                solids.append((len(meshes), *sp))
            meshes.append(m)
            rgbs.append(rgb_of[p.name])
        for cover in p.covers:
            sp = solid_planes(cover)
            if sp is not None:
                solids.append((-1, *sp))
    pts = sample_surface(meshes, rgbs, num_points, r_pts, solids)
    yaw = np.deg2rad(r_pts.uniform(-max_yaw_degrees, max_yaw_degrees)) if max_yaw_degrees > 0 else 0.0
    c, s = np.cos(yaw), np.sin(yaw)
    xyz = pts[:, :3] @ np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]).T
    if up_axis == "y":
        xyz = np.stack([xyz[:, 0], xyz[:, 2], -xyz[:, 1]], axis=1)
    points = np.concatenate([pc_norm(xyz), np.clip(pts[:, 3:], 0.0, 1.0)], axis=1).astype(np.float32)

    facts = _facts(spec, geom, color_of, areas, r_txt)
    oid = object_id(category, index)
    cap = L.caption(facts, r_txt)
    detailed = L.detailed_description(facts, r_txt)
    others = tuple(n for n in CATEGORY_NAMES if n != category)

    brief = [_record(oid, "simple_description", [(L.pick(r_txt, L.BRIEF_PROMPTS), cap)])]
    if r_txt.random() < 0.6:
        brief.append(_record(oid, "simple_description",
                             [(L.pick(r_txt, L.IDENTIFY_PROMPTS), L.identify_answer(facts, r_txt))]))
    else:
        brief.append(_record(oid, "simple_description", [(L.COMPLETION_PROMPT, L.completion_answer(facts, r_txt))]))

    qa_all: list[L.QA] = []
    complex_ = [_record(oid, "detailed_description", [(L.pick(r_txt, L.DETAILED_PROMPTS), detailed)])]
    for qa in L.make_qa(facts, r_txt, SINGLE_ROUND_PER_OBJECT, others):
        complex_.append(_record(oid, "single_round", [(qa.question, qa.answer)]))
        qa_all.append(qa)
    rounds = L.make_qa(facts, r_txt, 3 if r_txt.random() < 0.7 else 2, others)
    turns = [(qa.question if i == 0 else L.follow_up(qa.question, r_txt), qa.answer) for i, qa in enumerate(rounds)]
    complex_.append(_record(oid, "multi_round", turns))
    qa_all.extend(rounds)
    bench = _record(oid, "simple_description", [(L.pick(r_txt, L.BRIEF_PROMPTS), cap)])
    cqa = L.color_qa(facts, r_txt)
    # drawn last from the text stream, so the other files are the same as before grounding existed
    grounding = [_record(oid, "single_round", [(qa.question, qa.answer)]) for qa in L.grounding_qa(facts, r_txt)]

    meta = {
        "object_id": oid,
        "category": category,
        "index": index,
        "noun": facts.noun,
        "caption": cap,
        "main_colour": facts.main_color,
        "main_part": facts.main_part.name,
        "colour_question": cqa.question,
        "colour_answer": cqa.answer,
        "colour": cqa.target,
        "use": facts.uses[0],
        "parts": [{"name": p.name, "colour": p.color, "count": p.count, **({"shape": p.shape} if p.shape else {}),
                   **({"material": p.material} if p.material else {})} for p in facts.parts],
        "counts": dict(sorted(facts.counts.items())),
        "colour_share": facts.color_share,
        "traits": list(facts.traits),
    }
    return ProceduralObject(oid, category, index, points, facts, cap, detailed, brief, complex_, bench, qa_all, cqa,
                            meta, grounding)


# ------------------------------------------------------------------------------------------------------------
# The dataset
# ------------------------------------------------------------------------------------------------------------
def split_sizes(n: int, val_fraction: float, test_fraction: float) -> dict[str, int]:
    """Objects per split for one category of ``n`` objects; a positive fraction always gets at least one."""
    n_val = max(1, int(round(n * val_fraction))) if val_fraction > 0 else 0
    n_test = max(1, int(round(n * test_fraction))) if test_fraction > 0 else 0
    return {"train": n - n_val - n_test, "val": n_val, "test": n_test}


def _validate(objects_per_category, seed, num_points, val_fraction, test_fraction, categories, max_yaw_degrees,
              up_axis) -> list[str]:
    if not isinstance(objects_per_category, (int, np.integer)) or isinstance(objects_per_category, bool):
        raise ConfigError(f"objects_per_category must be an integer, got {objects_per_category!r}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(num_points, (int, np.integer)) or num_points < 1:
        raise ConfigError(f"num_points must be a positive integer, got {num_points!r}")
    for name, v in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not (0.0 <= float(v) < 1.0):
            raise ConfigError(f"{name} must be in [0, 1), got {v!r}")
    if up_axis not in ("z", "y"):
        raise ConfigError(f"up_axis must be 'z' or 'y', got {up_axis!r}")
    if not (0.0 <= float(max_yaw_degrees) <= 180.0):
        raise ConfigError(f"max_yaw_degrees must be in [0, 180], got {max_yaw_degrees!r}")
    sizes = split_sizes(int(objects_per_category), val_fraction, test_fraction)
    if sizes["train"] < 1:
        need = 1 + (val_fraction > 0) + (test_fraction > 0)
        raise ConfigError(f"objects_per_category={objects_per_category} leaves no training object with "
                          f"val_fraction={val_fraction} and test_fraction={test_fraction}; use at least {need} "
                          f"(every category must appear in every split) or smaller fractions")
    if categories is None:
        return list(CATEGORY_NAMES)
    if isinstance(categories, str):
        categories = [c for c in categories.replace(",", " ").split() if c]
    cats = [str(c).strip().lower() for c in categories]
    unknown = [c for c in cats if c not in CATEGORY_NAMES]
    if unknown:
        raise ConfigError(f"unknown procedural categories {unknown}; known: {', '.join(CATEGORY_NAMES)}")
    if len(set(cats)) != len(cats):
        raise ConfigError(f"categories contains duplicates: {cats}")
    if not cats:
        raise ConfigError("categories is empty; pass None for all of them")
    return sorted(cats)


def _dump_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def _manifest_ok(out_dir: Path, params: dict) -> dict | None:
    path = out_dir / "manifest.json"
    if not path.is_file():
        return None
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if m.get("generator_version") != GENERATOR_VERSION or m.get("params") != params:
        return None
    npy = out_dir / m.get("npy_dir", "")
    files = [out_dir / f for f in m.get("files", [])]
    if not npy.is_dir() or not all(f.is_file() for f in files):
        return None
    if sum(1 for _ in npy.glob(f"*_{params['num_points']}.npy")) != sum(m["num_objects"].values()):
        return None
    return m


def _previous_npy_dir(out_dir: Path) -> str | None:
    """The point folder named by an existing ``manifest.json`` (replaced on regeneration), if any."""
    old = out_dir / "manifest.json"
    try:
        name = json.loads(old.read_text(encoding="utf-8")).get("npy_dir") if old.is_file() else None
    except (OSError, ValueError):
        return None
    return name if isinstance(name, str) and name.endswith("_npy") and "/" not in name else None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def synthesize(out_dir, *, objects_per_category: int = 60, seed: int = 0, num_points: int = 8192,
               val_fraction: float = 0.1, test_fraction: float = 0.1, categories=None, progress: bool = True,
               force: bool = False, max_yaw_degrees: float = 15.0, up_axis: str = "z") -> dict:
    """Generate the dataset into ``out_dir`` (layout in the module docstring) and return its manifest.

    Reuses ``out_dir`` untouched when its ``manifest.json`` records the same parameters and generator version
    (``force=True`` regenerates). Files are first written to a temporary folder inside ``out_dir`` and moved
    into place; ``manifest.json`` is written last, so an interrupted run is detected and redone.
    ``categories``: names (or a comma-separated string) from :data:`.categories.CATEGORY_NAMES`; ``None`` = all.
    ``max_yaw_degrees``: each object is turned about the up axis by a uniform angle in ±this.
    ``up_axis``: "z" (default, this generator's frame) or "y" (x, y, z) -> (x, z, -y).
    """
    cats = _validate(objects_per_category, seed, num_points, val_fraction, test_fraction, categories,
                     max_yaw_degrees, up_axis)
    params = {"categories": cats, "max_yaw_degrees": float(max_yaw_degrees), "num_points": int(num_points),
              "objects_per_category": int(objects_per_category), "seed": int(seed),
              "test_fraction": float(test_fraction), "up_axis": up_axis, "val_fraction": float(val_fraction)}
    out_dir = Path(out_dir)
    if not force:
        m = _manifest_ok(out_dir, params)
        if m is not None:
            if progress:
                print(f"[enel.data.procedural] reusing {out_dir} ({sum(m['num_objects'].values())} objects)")
            return m

    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob(".tmp-build-*"):
        _remove(stale)
    previous_npy = _previous_npy_dir(out_dir)
    (out_dir / "manifest.json").unlink(missing_ok=True)  # from here on the folder counts as unfinished
    npy_name = f"{int(num_points)}_npy"
    tmp = out_dir / f".tmp-build-{os.getpid()}"
    (tmp / npy_name).mkdir(parents=True)
    (tmp / "anno").mkdir()

    sizes = split_sizes(int(objects_per_category), val_fraction, test_fraction)
    brief = {s: [] for s in SPLITS}
    complex_ = {s: [] for s in SPLITS}
    grounding = {s: [] for s in SPLITS}
    bench = {s: [] for s in SPLITS}
    counts = {s: {} for s in SPLITS}
    metas = []
    total = len(cats) * int(objects_per_category)
    t0 = time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc="procedural objects", unit="obj", mininterval=2.0)
    try:
        for label, cat in enumerate(cats):
            bounds = np.cumsum([sizes[s] for s in SPLITS])
            for i in range(int(objects_per_category)):
                split = SPLITS[int(np.searchsorted(bounds, i, side="right"))]
                obj = make_object(cat, i, seed=int(seed), num_points=int(num_points),
                                  max_yaw_degrees=float(max_yaw_degrees), up_axis=up_axis)
                np.save(tmp / npy_name / f"{obj.object_id}_{int(num_points)}.npy", obj.points)
                brief[split].extend(obj.brief)
                complex_[split].extend(obj.complex)
                grounding[split].extend(obj.grounding)
                bench[split].append(obj.benchmark)
                counts[split][cat] = counts[split].get(cat, 0) + 1
                metas.append({**obj.meta, "label": label, "split": split})
                if bar is not None:
                    bar.update(1)
        files = []
        for s in SPLITS:
            for stem, recs in (("brief", brief[s]), ("complex", complex_[s]), ("grounding", grounding[s])):
                _dump_json(tmp / "anno" / f"{stem}_{s}.json", recs)
                files.append(f"anno/{stem}_{s}.json")
            _dump_json(tmp / "anno" / f"benchmark_{s}_GT.json", bench[s])
            files.append(f"anno/benchmark_{s}_GT.json")
        (tmp / "objects.jsonl").write_text("".join(json.dumps(m, ensure_ascii=False) + "\n" for m in metas),
                                           encoding="utf-8")
        (tmp / "class_labels.txt").write_text("".join(c + "\n" for c in cats), encoding="utf-8")
        files += ["objects.jsonl", "class_labels.txt"]
        owned = {npy_name, "anno", "objects.jsonl", "class_labels.txt"} | ({previous_npy} if previous_npy else set())
        for name in sorted(owned):
            _remove(out_dir / name)
        for name in (npy_name, "anno", "objects.jsonl", "class_labels.txt"):
            os.replace(tmp / name, out_dir / name)
    finally:
        if bar is not None:
            bar.close()
        shutil.rmtree(tmp, ignore_errors=True)

    manifest = {
        "generator": "enel.data.procedural",
        "generator_version": GENERATOR_VERSION,
        "params": params,
        "num_points": int(num_points),
        "npy_dir": npy_name,
        "up_axis": up_axis,
        "categories": cats,
        "num_categories": len(cats),
        "num_objects": {s: sum(counts[s].values()) for s in SPLITS},
        "counts": {s: dict(sorted(counts[s].items())) for s in SPLITS},
        "records": {f"{stem}_{s}": len(d[s]) for stem, d in (("brief", brief), ("complex", complex_),
                                                              ("grounding", grounding), ("benchmark", bench))
                    for s in SPLITS},
        "files": files,
    }
    tmp_manifest = out_dir / "manifest.json.tmp"
    _dump_json(tmp_manifest, manifest)
    os.replace(tmp_manifest, out_dir / "manifest.json")
    if progress:
        dt = time.perf_counter() - t0
        print(f"[enel.data.procedural] wrote {total} objects ({len(cats)} categories) to {out_dir} in {dt:.1f} s "
              f"({1000 * dt / max(total, 1):.1f} ms/object)")
    return manifest


def load_objects(out_dir, split: str | None = None) -> list[dict]:
    """The per-object metadata of a generated dataset (``objects.jsonl``), optionally of one split."""
    path = Path(out_dir) / "objects.jsonl"
    if not path.is_file():
        raise ConfigError(f"{path} not found; generate the dataset with enel.data.procedural.synthesize first")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r for r in rows if split is None or r["split"] == split]


SAMPLE_CHAIR_INDEX = 2
"""The bundled chair: "a cyan chair with a tall cyan back and four cylindrical brown wooden legs"."""


def write_sample(path, *, category: str = "chair", index: int = SAMPLE_CHAIR_INDEX, seed: int = 0,
                 num_points: int = 8192) -> Path:
    """Write one generated object as a binary little-endian PLY (float x/y/z, uchar red/green/blue).

    The bundled ``enel/assets/sample_chair.ply`` is ``write_sample(path)`` with the defaults (chair 2 of
    seed 0, picked for its contrasting colours and slatted back).
    """
    from plyfile import PlyData, PlyElement

    obj = make_object(category, index, seed=seed, num_points=num_points)
    v = np.empty(len(obj.points), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                                         ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    for i, k in enumerate("xyz"):
        v[k] = obj.points[:, i]
    rgb = np.round(obj.points[:, 3:] * 255.0).clip(0, 255).astype(np.uint8)
    v["red"], v["green"], v["blue"] = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    PlyData([PlyElement.describe(v, "vertex")], text=False, byte_order="<",
            comments=[f"enel procedural {category} {index} seed {seed}: {obj.caption}"]).write(str(path))
    return path
