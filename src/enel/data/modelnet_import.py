"""Bringing a user's ModelNet40 into the project: import, load, find.

ModelNet40's licence (Princeton: academic research only; the CAD models' copyright stays with their authors)
forbids shipping it in the package or the repository, so each user imports the copy they have into the
git-ignored ``data/modelnet40`` folder:

* :func:`import_modelnet40` (``enel data modelnet40 --from FILE``) reads one of three sources, recognised by
  content, not by name:

  1. an ``.npz`` like the project's shared ``modelnet40_1024_train.npz``: ``points (M, N, 3|6)`` (xyz first),
     ``labels (M,)``, ``class_names``, optional ``object_ids``. Frame: z-up, except the archive
     ``enel data convert-modelnet`` writes from PointLLM's pickle (exactly ``points`` with 6 columns,
     ``labels``, ``class_names``), which keeps PointLLM's y-up;
  2. PointLLM's ``modelnet40_test_8192pts_fps.dat`` (a pickle: needs ``allow_pickle=True``; read with the
     numpy-only unpickler of :mod:`enel.data.modelnet`): the test split, normals dropped, y-up;
  3. Princeton's ``ModelNet40.zip`` of ``.off`` meshes, or the folder it unpacks to
     (``ModelNet40/<class>/{train,test}/<class>_NNNN.off``), z-up: each mesh is sampled on its surface —
     ``8 * num_points`` area-weighted points (``trimesh.sample.sample_surface``, seeded per object), then
     farthest point sampling down to ``num_points`` (default 1,024) for an even cover. Many Princeton files
     have the malformed header ``OFF123 456 0`` (keyword and counts on one line); the OFF reader here
     (vectorised numpy; trimesh only samples) takes both headers.

  Every split is written to ``<out>/modelnet40_{split}.npz`` (atomically: a temporary file renamed into
  place) with the arrays :data:`ARCHIVE_KEYS`: ``points`` float16 ``(M, N, 3)`` xyz **z-up**, each cloud
  through ``pc_norm`` (centred, farthest point at radius 1); ``labels`` int16 ``(M,)``; ``class_names (40,)``
  unicode in PointLLM's spelling (:data:`~enel.data.labels.MODELNET40_CLASSES`); ``object_ids (M,)``
  unicode (``chair_0001`` from meshes and npz files that have them, ``test_00000`` by index otherwise).
  ``<out>/manifest.json`` and ``<out>/README.md`` name the source file, its sha256, the date and the licence.

* :func:`load_modelnet_archive` reads such an archive (and the shared file) into a :class:`ModelNetArchive`.
* :func:`modelnet40_source` finds the training archive: ``$ENEL_MODELNET40``, else the imported
  ``data/modelnet40/modelnet40_train.npz``, else ``../shared/data/modelnet40/modelnet40_1024_train.npz``
  (relative to the current folder, then to the repository root of an editable install).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import sys
import warnings
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..points.transforms import UP_AXES, to_z_up
from .errors import DatasetError, DatasetWarning, UnsafePickleError
from .labels import MODELNET40_CLASSES
from .modelnet import NPZ_KEYS, load_modelnet_pickle, read_npz_arrays
from .pointllm import object_seed

__all__ = [
    "ARCHIVE_KEYS",
    "SPLITS",
    "ENV_VAR",
    "LICENCE",
    "DEFAULT_OUT",
    "ModelNetArchive",
    "archive_path",
    "load_modelnet_archive",
    "import_modelnet40",
    "detect_format",
    "modelnet40_source",
]

ARCHIVE_KEYS: tuple[str, ...] = ("points", "labels", "class_names", "object_ids")
SPLITS: tuple[str, ...] = ("train", "test")
ENV_VAR = "ENEL_MODELNET40"
DEFAULT_OUT = Path("data") / "modelnet40"
OVERSAMPLE = 8
"""Mesh sampling: ``OVERSAMPLE * num_points`` area-weighted surface points, then FPS to ``num_points``."""

LICENCE = (
    "ModelNet40 (Princeton, https://modelnet.cs.princeton.edu) is for academic research only; the CAD models' "
    "copyright stays with their authors. Use it to train and evaluate; never ship it inside the enel package, "
    "its releases or a git repository."
)

_FORMATS = {
    "npz": "an .npz archive (points, labels, class_names[, object_ids])",
    "pickle": "PointLLM's modelnet40_test_8192pts_fps.dat (a pickle)",
    "princeton": "Princeton's ModelNet40.zip of .off meshes (or its unpacked folder)",
}
# <anything>/<class>/<split>/<name>.off, e.g. ModelNet40/night_stand/train/night_stand_0001.off
_OFF_ENTRY = re.compile(r"(?:^|/)([A-Za-z_]+)/(train|test)/([A-Za-z_]+_\d+)\.off$")


# ----------------------------------------------------------------------------------------------------------
# Reading an archive
# ----------------------------------------------------------------------------------------------------------
class ModelNetArchive(NamedTuple):
    """One split of ModelNet40 in memory, z-up, each cloud in the unit sphere.

    Attributes:
        points: ``(M, N, 3)`` float32 xyz.
        labels: ``(M,)`` int64, indices into ``class_names``.
        class_names: the label names (PointLLM's spelling, ``"night stand"``).
        object_ids: ``(M,)`` names (``"chair_0001"``, or ``"{split}_{i:05d}"`` when the archive has none).
    """

    points: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    object_ids: tuple[str, ...]


def archive_path(out_dir, split: str) -> Path:
    """``<out_dir>/modelnet40_{split}.npz``, where :func:`import_modelnet40` writes a split."""
    return Path(out_dir) / f"modelnet40_{split}.npz"


def _split_from_name(path: Path) -> str | None:
    stem = path.name.lower()
    found = [s for s in SPLITS if s in stem]
    return found[0] if len(found) == 1 else None


def _unicode_1d(arr: np.ndarray, path: Path, key: str) -> tuple[str, ...]:
    if arr.ndim != 1 or arr.dtype.kind != "U" or not len(arr):
        raise DatasetError(f"{path}: {key} must be a non-empty 1-D array of strings, found shape {arr.shape}, "
                           f"dtype {arr.dtype}")
    return tuple(str(v) for v in arr)


def load_modelnet_archive(path, *, split: str | None = None) -> ModelNetArchive:
    """Read a ModelNet40 ``.npz`` (what :func:`import_modelnet40` writes, or the shared training file).

    Args:
        path: the archive; read with ``np.load(allow_pickle=False)``.
        split: names synthesised object ids (``"{split}_{i:05d}"``) when the archive has no ``object_ids``;
            default: ``train`` / ``test`` from the file name, else ``object``.

    Returns:
        :class:`ModelNetArchive` (points float32, labels int64).

    Raises:
        DatasetError: missing file, not an ``.npz``, missing keys, points not ``(M, N, 3)`` numbers (an archive
            from ``enel data convert-modelnet`` holds PointLLM's 6 columns, y-up: import it first), labels out
            of range, non-finite coordinates, ``object_ids`` of the wrong length.
    """
    path = Path(path)
    arrays = read_npz_arrays(path, NPZ_KEYS, ("object_ids",),
                             hint="import your ModelNet40 with `enel data modelnet40 --from FILE`")
    points, labels, names = arrays["points"], arrays["labels"], arrays["class_names"]
    ids = arrays.get("object_ids")
    class_names = _unicode_1d(names, path, "class_names")
    if points.ndim != 3 or points.dtype.kind not in "fiu":
        raise DatasetError(f"{path}: points must be a numeric (M, N, 3) array, found shape {points.shape}, "
                           f"dtype {points.dtype}")
    if points.shape[2] != 3:
        raise DatasetError(
            f"{path}: points have {points.shape[2]} columns, expected 3 (xyz). An archive from "
            "`enel data convert-modelnet` holds PointLLM's xyz + normals in its y-up frame: import it with "
            f"`enel data modelnet40 --from {path}` (normals dropped, turned z-up) and load what that writes"
        )
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or len(labels) != len(points):
        raise DatasetError(f"{path}: labels must be (M,) integers with M = {len(points)} point sets, found shape "
                           f"{labels.shape}, dtype {labels.dtype}")
    if len(labels) == 0:
        raise DatasetError(f"{path}: the archive holds no objects")
    bad = np.flatnonzero((labels < 0) | (labels >= len(class_names)))
    if bad.size:
        raise DatasetError(f"{path}: label {int(labels[bad[0]])} of object {int(bad[0])} is outside the "
                           f"{len(class_names)} classes [0, {len(class_names)})")
    xyz = points.astype(np.float32)
    if not np.isfinite(xyz).all():
        raise DatasetError(f"{path}: point coordinates contain NaN or infinite values")
    if ids is not None:
        object_ids = _unicode_1d(ids, path, "object_ids")
        if len(object_ids) != len(points):
            raise DatasetError(f"{path}: {len(object_ids)} object_ids for {len(points)} point sets")
    else:
        prefix = split or _split_from_name(path) or "object"
        object_ids = tuple(f"{prefix}_{i:05d}" for i in range(len(points)))
    return ModelNetArchive(xyz, labels.astype(np.int64), class_names, object_ids)


# ----------------------------------------------------------------------------------------------------------
# Finding it
# ----------------------------------------------------------------------------------------------------------
def modelnet40_source() -> Path | None:
    """Where the ModelNet40 training archive is, or ``None`` when there is none.

    In order:

    1. ``$ENEL_MODELNET40``, a file path (set but not an existing file: :class:`DatasetError`);
    2. ``data/modelnet40/modelnet40_train.npz`` (imported with ``enel data modelnet40``), relative to the
       current folder;
    3. ``../shared/data/modelnet40/modelnet40_1024_train.npz`` relative to the current folder;
    4. 2 and 3 relative to the repository root of an editable install (the folder holding ``pyproject.toml``
       above ``src/enel``).

    Returns:
        the absolute path of the first that exists, or ``None``.
    """
    value = os.environ.get(ENV_VAR, "")
    if value:
        path = Path(value).expanduser()
        if not path.is_file():
            what = "is a directory" if path.is_dir() else "does not exist"
            raise DatasetError(f"{ENV_VAR}={value} {what}: set it to a ModelNet40 .npz file (e.g. the "
                               "data/modelnet40/modelnet40_train.npz that `enel data modelnet40 --from FILE` "
                               f"writes) or unset it")
        return path.resolve()
    relative = [DEFAULT_OUT / "modelnet40_train.npz",
                Path("..") / "shared" / "data" / "modelnet40" / "modelnet40_1024_train.npz"]
    candidates = list(relative)
    import enel

    root = Path(enel.__file__).resolve().parents[2]
    if (root / "pyproject.toml").is_file():
        candidates += [root / p for p in relative]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    return None


# ----------------------------------------------------------------------------------------------------------
# Recognising a source
# ----------------------------------------------------------------------------------------------------------
def _off_entries(names) -> list[tuple[str, str, str, str]]:
    """``[(entry, class folder, split, object id)]`` for the names that follow ModelNet's layout, sorted."""
    found = []
    for name in names:
        if name.startswith("__MACOSX/") or "/._" in name:
            continue
        m = _OFF_ENTRY.search(name.replace("\\", "/"))
        if m:
            found.append((name, m.group(1), m.group(2), m.group(3)))
    return sorted(found, key=lambda e: (e[2], e[1], e[3]))


def detect_format(path) -> str:
    """``"npz"``, ``"pickle"`` or ``"princeton"`` (a zip or folder of ModelNet40 ``.off`` meshes), by content.

    Raises:
        DatasetError: missing, unreadable or none of the three (the message lists what is accepted).
    """
    path = Path(path)
    accepted = "; ".join(_FORMATS.values())
    if path.is_dir():
        if any(True for _ in path.rglob("*.off")):
            return "princeton"
        raise DatasetError(f"{path}: a folder without .off meshes; expected ModelNet40/<class>/{{train,test}}/"
                           f"<class>_NNNN.off. Accepted sources: {accepted}")
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    with open(path, "rb") as fh:
        head = fh.read(8)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if not n.endswith("/")]
        if names and all(n.endswith(".npy") for n in names):
            return "npz"
        if _off_entries(names):
            return "princeton"
        shown = ", ".join(repr(n) for n in names[:3]) or "nothing"
        raise DatasetError(
            f"{path}: a zip without ModelNet40's layout (found {shown}{' …' if len(names) > 3 else ''}); "
            "expected Princeton's ModelNet40.zip with ModelNet40/<class>/{train,test}/<class>_NNNN.off entries, "
            "or an .npz of numpy arrays"
        )
    if head[:1] == b"\x80" or path.suffix.lower() in (".dat", ".pkl", ".pickle"):
        return "pickle"
    raise DatasetError(f"{path}: unknown ModelNet40 format; accepted sources: {accepted}")


# ----------------------------------------------------------------------------------------------------------
# The three readers: each returns {split: (xyz (M, N, 3) float, labels (M,) int64, object_ids [str])}
# ----------------------------------------------------------------------------------------------------------
def _canonical_class(name: str, path: Path) -> int:
    spelled = name.strip().replace("_", " ").lower()
    if spelled not in MODELNET40_CLASSES:
        raise DatasetError(f"{path}: class {name!r} is not one of ModelNet40's 40 classes "
                           f"({', '.join(MODELNET40_CLASSES[:3])}, …)")
    return MODELNET40_CLASSES.index(spelled)


def _read_npz(path: Path, split: str | None, up: str | None):
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in NPZ_KEYS if k not in npz.files]
            if missing:
                raise DatasetError(f"{path}: the archive lacks {', '.join(missing)} (has {', '.join(npz.files)}); "
                                   "a ModelNet40 .npz needs points (M, N, 3|6), labels (M,) and class_names (40,), "
                                   "object_ids (M,) optional")
            keys = set(npz.files)
            points, labels, names = npz["points"], npz["labels"], npz["class_names"]
            ids = npz["object_ids"] if "object_ids" in keys else None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DatasetError(f"{path}: not a readable .npz archive ({exc})") from None
    if points.ndim != 3 or points.shape[2] < 3 or points.dtype.kind not in "fiu" or not len(points):
        raise DatasetError(f"{path}: points must be a numeric (M, N, 3) or (M, N, 6) array, found shape "
                           f"{points.shape}, dtype {points.dtype}")
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or len(labels) != len(points):
        raise DatasetError(f"{path}: labels must be (M,) integers with M = {len(points)}, found shape "
                           f"{labels.shape}, dtype {labels.dtype}")
    source_names = _unicode_1d(names, path, "class_names")
    if labels.min() < 0 or labels.max() >= len(source_names):
        raise DatasetError(f"{path}: labels outside [0, {len(source_names)}), the range of its class_names")
    remap = np.array([_canonical_class(n, path) for n in source_names], dtype=np.int64)
    split = split or _split_from_name(path)
    if split is None:
        raise DatasetError(f"{path}: the file name does not say which split it holds; pass --split train|test "
                           "(split='train' or 'test')")
    if ids is not None:
        object_ids = list(_unicode_1d(ids, path, "object_ids"))
        if len(object_ids) != len(points):
            raise DatasetError(f"{path}: {len(object_ids)} object_ids for {len(points)} point sets")
    else:
        object_ids = [f"{split}_{i:05d}" for i in range(len(points))]
    pointllm_archive = keys == set(NPZ_KEYS) and points.shape[2] == 6  # what convert_modelnet writes
    frame = up or ("y" if pointllm_archive else "z")
    note = "y (an `enel data convert-modelnet` archive: PointLLM's frame)" if pointllm_archive and not up else frame
    return {split: (points[..., :3], remap[labels.astype(np.int64)], object_ids)}, frame, note


def _read_pickle(path: Path, split: str | None, allow_pickle: bool, up: str | None):
    if allow_pickle is not True:
        raise UnsafePickleError(
            f"{path} is a Python pickle (PointLLM's modelnet40_test_8192pts_fps.dat), and unpickling a file can "
            "run code from it: if you trust its source, pass --allow-pickle (allow_pickle=True); it is read with "
            "a numpy-only unpickler"
        )
    if split not in (None, "test"):
        raise DatasetError(f"{path}: PointLLM's ModelNet40 pickle holds the test split; drop --split {split} "
                           "or pass --split test")
    points, labels = load_modelnet_pickle(path, allow_pickle=True)
    ids = [f"test_{i:05d}" for i in range(len(points))]
    frame = up or "y"
    return {"test": (points[..., :3], labels, ids)}, frame, frame


def _parse_off(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """An OFF file's bytes → ``vertices (V, 3)`` float64, ``faces (F, 3)`` int64 (polygons fan-triangulated).

    Vectorised (about 6× faster than trimesh's reader on ModelNet meshes). Reads both the standard header and
    Princeton's malformed one, ``OFF123 456 0`` (keyword and counts on one line); ``#`` lines are comments.
    """
    lines = [ln for ln in data.split(b"\n") if ln.strip() and not ln.lstrip().startswith(b"#")]
    if not lines or lines[0].strip()[:3].upper() != b"OFF":
        raise ValueError("not an OFF file (the first line is not OFF)")
    inline = lines[0].strip()[3:].split()
    counts, body = (inline, lines[1:]) if inline else (lines[1].split() if len(lines) > 1 else [], lines[2:])
    if len(counts) < 2:
        raise ValueError("no vertex and face counts after OFF")
    nv, nf = int(counts[0]), int(counts[1])
    tokens = b" ".join(body).split()
    if len(tokens) < 3 * nv:
        raise ValueError(f"truncated: {nv} vertices declared, {len(tokens) // 3} found")
    vertices = np.array(tokens[: 3 * nv], dtype=np.float64).reshape(nv, 3)
    rest = np.array(tokens[3 * nv :], dtype=np.int64)
    if len(rest) >= 4 * nf and (rest[: 4 * nf].reshape(nf, 4)[:, 0] == 3).all():  # all triangles: the usual case
        faces = rest[: 4 * nf].reshape(nf, 4)[:, 1:]
    else:
        triangles, i = [], 0
        for _ in range(nf):
            k = int(rest[i]) if i < len(rest) else 0
            polygon = rest[i + 1 : i + 1 + k]
            if k < 3 or len(polygon) < k:
                raise ValueError(f"truncated or degenerate face list ({nf} faces declared)")
            triangles.extend((polygon[0], polygon[j], polygon[j + 1]) for j in range(1, k - 1))
            i += 1 + k
        faces = np.array(triangles, dtype=np.int64).reshape(-1, 3)
    if faces.size and (faces.min() < 0 or faces.max() >= nv):
        raise ValueError(f"a face refers to a vertex outside [0, {nv})")
    return vertices, faces


def _sample_off(data: bytes, num_points: int, seed: int) -> np.ndarray:
    """An OFF mesh's bytes → ``(num_points, 3)`` float64 surface points: area-weighted sampling, then FPS."""
    import trimesh

    from ..points.ops import farthest_point_sample_np

    vertices, faces = _parse_off(data)
    if len(faces) == 0:
        raise ValueError("no faces to sample")
    if not np.isfinite(vertices).all():
        raise ValueError("non-finite vertex coordinates")
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    if not mesh.area > 0:
        raise ValueError("the surface has zero area")
    dense, _ = trimesh.sample.sample_surface(mesh, OVERSAMPLE * num_points, seed=seed)
    dense = np.asarray(dense, dtype=np.float64)
    return dense[farthest_point_sample_np(dense, num_points, start=0)]


def _read_princeton(path: Path, split: str | None, num_points: int, seed: int, up: str | None, progress: bool):
    if path.is_dir():
        entries = _off_entries(str(p.relative_to(path)) for p in path.rglob("*.off"))
        read = lambda name: (path / name).read_bytes()  # noqa: E731
        zf = None
    else:
        zf = zipfile.ZipFile(path)
        entries = _off_entries(zf.namelist())
        read = zf.read
    try:
        if split is not None:
            entries = [e for e in entries if e[2] == split]
            if not entries:
                raise DatasetError(f"{path}: no {split} meshes (ModelNet40/<class>/{split}/*.off) in it")
        labels_of = {cls: _canonical_class(cls, path) for cls in {e[1] for e in entries}}
        out: dict[str, tuple[list, list, list]] = {}
        skipped: list[str] = []
        for done, (name, cls, part, oid) in enumerate(entries, 1):
            try:
                xyz = _sample_off(read(name), num_points, object_seed(seed, oid))
            except Exception as exc:  # trimesh raises many kinds; one bad mesh is skipped, counted, reported
                skipped.append(f"{name} ({type(exc).__name__}: {exc})")
            else:
                clouds, labels, ids = out.setdefault(part, ([], [], []))
                clouds.append(xyz)
                labels.append(labels_of[cls])
                ids.append(oid)
            if progress and (done % 500 == 0 or done == len(entries)):
                print(f"sampled {done}/{len(entries)} meshes", file=sys.stderr, flush=True)
    finally:
        if zf is not None:
            zf.close()
    if not out:
        raise DatasetError(f"{path}: none of its {len(entries)} meshes could be sampled; first: {skipped[0]}")
    if skipped:
        warnings.warn(f"{path}: skipped {len(skipped)} of {len(entries)} meshes that could not be sampled, "
                      f"e.g. {skipped[0]}", DatasetWarning, stacklevel=3)
    frame = up or "z"
    splits = {s: (np.stack(c), np.array(lab, dtype=np.int64), ids) for s, (c, lab, ids) in out.items()}
    return splits, frame, frame, skipped


# ----------------------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------------------
def _pc_norm_batch(xyz: np.ndarray, chunk: int = 256) -> np.ndarray:
    """:func:`~enel.points.transforms.pc_norm` on every cloud of ``(M, N, 3)`` → float16, in float64 chunks."""
    out = np.empty(xyz.shape, dtype=np.float16)
    for start in range(0, len(xyz), chunk):
        part = xyz[start : start + chunk].astype(np.float64)
        centred = part - part.mean(axis=1, keepdims=True)
        radius = np.sqrt((centred**2).sum(axis=2)).max(axis=1)
        out[start : start + chunk] = centred / np.where(radius > 0, radius, 1.0)[:, None, None]
    return out


def _atomic_write(target: Path, write) -> None:
    """``write(file_object)`` into a temporary sibling, then rename it over ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_archive(target: Path, xyz: np.ndarray, labels: np.ndarray, object_ids: list[str]) -> None:
    arrays = dict(points=_pc_norm_batch(xyz), labels=labels.astype(np.int16),
                  class_names=np.array(MODELNET40_CLASSES), object_ids=np.array(object_ids))
    _atomic_write(target, lambda fh: np.savez(fh, **arrays))


def _sha256(path: Path) -> str:
    if path.is_dir():
        return "(a folder: not hashed)"
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _readme(manifest: dict) -> str:
    lines = ["# ModelNet40, imported", "",
             "Written by `enel data modelnet40 --from FILE` (enel.data.modelnet_import). Do not commit or ship it.",
             "", f"Licence: {manifest['licence']}", "", f"Frame: {manifest['frame']}", ""]
    for split, entry in sorted(manifest["splits"].items()):
        lines += [f"## {entry['file']}", "",
                  f"- {entry['objects']} objects × {entry['points_per_object']} points, split `{split}`",
                  f"- source: `{entry['source']}` ({entry['source_format']}, up axis {entry['source_up']})",
                  f"- source sha256: `{entry['source_sha256']}`",
                  f"- imported: {entry['imported']}",
                  f"- points: {entry['points']}", ""]
        if entry.get("skipped"):
            lines += [f"- skipped {len(entry['skipped'])} meshes that could not be sampled (listed in manifest.json)",
                      ""]
    return "\n".join(lines)


def import_modelnet40(source, out_dir=DEFAULT_OUT, *, split: str | None = None, allow_pickle: bool = False,
                      seed: int = 0, num_points: int | None = None, up: str | None = None,
                      progress: bool = False) -> dict[str, Path]:
    """Import a user's ModelNet40 into ``out_dir`` (see the module docstring for the sources and the output).

    Args:
        source: an ``.npz``, PointLLM's ``.dat`` pickle, Princeton's ``ModelNet40.zip`` or its unpacked folder.
        out_dir: where ``modelnet40_{split}.npz``, ``manifest.json`` and ``README.md`` go (default
            ``data/modelnet40``, git-ignored). Splits already there from other sources are kept.
        split: ``"train"`` or ``"test"``: which split an ``.npz`` holds (default: from its file name); for the
            zip, import only that split (default both); the pickle is always ``test``.
        allow_pickle: the explicit opt-in to unpickle PointLLM's ``.dat``.
        seed: seeds the mesh sampling (per object, so a split imported alone gets the same points).
        num_points: points per cloud: meshes are sampled to it (default 1,024); point sources are resampled
            to it by FPS (default: keep theirs).
        up: override the source's up axis (``"z"`` or ``"y"``); default the format's own (see the docstring).
        progress: print mesh-sampling progress to stderr.

    Returns:
        ``{split: path of the archive written}``.
    """
    if split not in (None, *SPLITS):
        raise DatasetError(f"unknown split {split!r}; choose train or test")
    if up not in (None, *UP_AXES):
        raise DatasetError(f"unknown up axis {up!r}; choose one of {', '.join(UP_AXES)}")
    if num_points is not None and (isinstance(num_points, bool) or not isinstance(num_points, (int, np.integer))
                                   or num_points < 1):
        raise DatasetError(f"num_points must be a positive integer, got {num_points!r}")
    path = Path(source)
    fmt = detect_format(path)
    skipped: list[str] = []
    if fmt == "npz":
        splits, frame, frame_note = _read_npz(path, split, up)
        sampling = "as stored in the source"
    elif fmt == "pickle":
        splits, frame, frame_note = _read_pickle(path, split, allow_pickle, up)
        sampling = "as stored in the source (normals dropped)"
    else:
        n = num_points or 1024
        splits, frame, frame_note, skipped = _read_princeton(path, split, n, seed, up, progress)
        sampling = (f"{OVERSAMPLE * n} area-weighted surface points per mesh (trimesh.sample.sample_surface, "
                    f"seed {seed} mixed with the object id), then farthest point sampling to {n}")
        num_points = None  # already sampled
    if num_points is not None:
        from ..points.transforms import resample

        sampling += f", then FPS-resampled to {num_points}"
        splits = {s: (np.stack([resample(c, int(num_points), method="fps") for c in xyz]), lab, ids)
                  for s, (xyz, lab, ids) in splits.items()}

    out_dir = Path(out_dir)
    digest = _sha256(path)
    today = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    manifest_path = out_dir / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
        manifest["splits"] = dict(manifest.get("splits", {}))
    except (OSError, ValueError, AttributeError):
        manifest = {"splits": {}}
    manifest.update(dataset="ModelNet40", licence=LICENCE,
                    frame="z-up; each cloud centred on its centroid and scaled so its farthest point is at radius 1")
    written: dict[str, Path] = {}
    for name, (xyz, labels, ids) in sorted(splits.items()):
        if frame != "z":
            xyz = to_z_up(xyz.reshape(-1, 3), frame).reshape(xyz.shape)
        target = archive_path(out_dir, name)
        _write_archive(target, xyz, labels, ids)
        written[name] = target
        manifest["splits"][name] = {
            "file": target.name, "objects": int(len(labels)), "points_per_object": int(xyz.shape[1]),
            "source": str(path.resolve()), "source_format": _FORMATS[fmt], "source_sha256": digest,
            "source_up": frame_note, "points": sampling, "imported": today,
            "skipped": [s for s in skipped if f"/{name}/" in s.replace("\\", "/")],
        }
    _atomic_write(manifest_path, lambda fh: fh.write(json.dumps(manifest, indent=1).encode()))
    _atomic_write(out_dir / "README.md", lambda fh: fh.write(_readme(manifest).encode()))
    return written
