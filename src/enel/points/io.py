"""Point-cloud files in and out.

:func:`load_point_cloud` reads one file into a :class:`PointCloud`: ``xyz (N, 3)`` float32 and ``rgb (N, 3)``
float32 in ``[0, 1]``, plus where the colour came from and notes on what was done to the data. Point formats
are read as stored; meshes are sampled on their surface (area-weighted, seeded), carrying vertex, face or
texture colours. :func:`from_array` applies the same checks to an array, and :func:`save_point_cloud` writes
``.ply`` or ``.npy``.

Libraries: ``numpy`` for ``.npy`` / ``.npz`` and text, ``plyfile`` for ``.ply`` point clouds, ``trimesh`` for
meshes (and ``.ply`` files with faces). ``.pcd`` has a small parser here because neither library reads it.

Colour rules (also in ``docs/point-io.md``):

* colours end up in ``[0, 1]``. Typed 8-bit / 16-bit colour fields (PLY ``uchar``, PCD packed ``rgb``, mesh
  colours) are divided by 255 / 65535. Untyped colours (float fields, array columns) with a maximum above 1
  are taken as 0–255 and divided by 255; ``colour_source`` and ``notes`` say so.
* negative colours, colours above 255, and NaN / inf colours raise :class:`~enel.errors.PointCloudError`,
  except that three extra columns that are unit vectors with a negative entry are recognised as normals
  (ModelNet40 ``normal_resampled`` files): they are ignored and the default colour is used.
* a cloud without colour is filled with ``default_colour`` (black, as PointLLM feeds colourless ModelNet40);
  ``colour_source`` starts with ``"default"`` and a note says so.

Every problem with a file raises :class:`~enel.errors.PointCloudError` whose message starts with the file
name, says what is wrong and, where there is one, the fix. Exceptions from the parsers are wrapped the same
way, so a caller never sees a raw numpy / plyfile / trimesh traceback.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path

import numpy as np

from enel.errors import PointCloudError

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_COLOUR",
    "POINT_EXTENSIONS",
    "MESH_EXTENSIONS",
    "SUPPORTED_EXTENSIONS",
    "SAVE_EXTENSIONS",
    "PointCloud",
    "load_point_cloud",
    "from_array",
    "save_point_cloud",
]

DEFAULT_MAX_BYTES: int = 1 << 30
"""Files larger than this (1 GiB) are refused before reading; pass ``max_bytes`` to change it per call."""

DEFAULT_COLOUR: tuple[float, float, float] = (0.0, 0.0, 0.0)
"""Colour given to points whose file has none: black, as PointLLM feeds colourless ModelNet40."""

POINT_EXTENSIONS: tuple[str, ...] = (".npy", ".npz", ".ply", ".pcd", ".xyz", ".txt", ".pts")
MESH_EXTENSIONS: tuple[str, ...] = (".obj", ".off", ".stl", ".glb", ".gltf")
SUPPORTED_EXTENSIONS: tuple[str, ...] = POINT_EXTENSIONS + MESH_EXTENSIONS
SAVE_EXTENSIONS: tuple[str, ...] = (".ply", ".npy")

_NPZ_KEYS = ("points", "xyz", "pos", "data")
_NPZ_COLOUR_KEYS = ("rgb", "colors", "colours", "color", "colour")
_COLOUR_FIELDS = (("red", "green", "blue"), ("r", "g", "b"), ("diffuse_red", "diffuse_green", "diffuse_blue"))
_TYPED_COLOUR_SCALE = {1: 255.0, 2: 65535.0}  # unsigned integer colour fields, by byte size
_NORMAL_TOLERANCE = 1e-2


# ----------------------------------------------------------------------------------------------------------
# The result
# ----------------------------------------------------------------------------------------------------------
@dataclass
class PointCloud:
    """One point cloud with colour.

    Attributes:
        xyz: ``(N, 3)`` float32 coordinates, finite.
        rgb: ``(N, 3)`` float32 colours in ``[0, 1]``.
        colour_source: where ``rgb`` came from: ``"file"``, ``"file (0-255 rescaled)"``,
            ``"default (file has no colour)"``, ``"mesh vertex colours"``, ``"mesh face colours"``,
            ``"mesh texture"``, ``"mesh material colour"`` (several joined by ``" + "`` for scenes whose parts
            differ), or the ``source`` given to :func:`from_array`.
        path: the file it was read from, or ``None``.
        notes: human-readable notes on what was done (colour filled or rescaled, mesh sampled, …).
    """

    xyz: np.ndarray
    rgb: np.ndarray
    colour_source: str
    path: Path | None = None
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.xyz = np.ascontiguousarray(self.xyz, dtype=np.float32)
        self.rgb = np.ascontiguousarray(self.rgb, dtype=np.float32)
        if self.xyz.ndim != 2 or self.xyz.shape[1] != 3 or self.rgb.shape != self.xyz.shape:
            raise PointCloudError(
                f"PointCloud needs xyz (N, 3) and rgb (N, 3) of the same N, got {self.xyz.shape} and {self.rgb.shape}"
            )

    def __len__(self) -> int:
        return int(self.xyz.shape[0])

    def as_array(self) -> np.ndarray:
        """``(N, 6)`` float32: ``xyz`` then ``rgb``, PointLLM's layout."""
        return np.concatenate([self.xyz, self.rgb], axis=1)


@dataclass
class _Raw:
    """What a reader found, before the shared checks.

    ``xyz (N, 3)``; ``rgb (N, 3)`` or ``None``. ``colour_scale`` divides ``rgb`` when the file's type fixes the
    range (8-bit: 255); ``None`` means detect 0–1 vs 0–255 from the values. ``missing`` says why ``rgb`` is
    ``None`` (goes into ``colour_source``).
    """

    xyz: np.ndarray
    rgb: np.ndarray | None = None
    colour_source: str = "file"
    colour_scale: float | None = None
    missing: str = "file has no colour"
    notes: list[str] = field(default_factory=list)


def _fail(label: object, problem: str) -> PointCloudError:
    return PointCloudError(f"{label}: {problem}")


def _detail(exc: BaseException) -> str:
    """``Type: message`` of a third-party exception on one line, at most 200 characters of message."""
    message = re.sub(r"\s+", " ", str(exc)).strip()[:200]
    return f"{type(exc).__name__}: {message or 'no detail'}"


def _fmt_triple(colour) -> str:
    return "(" + ", ".join(f"{float(c):g}" for c in colour) + ")"


def _check_default_colour(default_colour) -> np.ndarray:
    colour = np.asarray(default_colour, dtype=np.float64).reshape(-1)
    if colour.shape != (3,) or not np.isfinite(colour).all() or colour.min() < 0 or colour.max() > 1:
        raise PointCloudError(f"default_colour must be three values in [0, 1], got {default_colour!r}")
    return colour


# ----------------------------------------------------------------------------------------------------------
# Shared checks
# ----------------------------------------------------------------------------------------------------------
def _finish(raw: _Raw, *, label: object, path: Path | None, default_colour, source: str) -> PointCloud:
    """Validate ``raw`` and turn it into a :class:`PointCloud`; ``source`` names the input in colour notes."""
    colour = _check_default_colour(default_colour)
    xyz = np.asarray(raw.xyz, dtype=np.float64)
    n = xyz.shape[0]
    notes = list(raw.notes)
    if n == 0:
        raise _fail(label, "contains no points")
    bad = ~np.isfinite(xyz).all(axis=1)
    if bad.any():
        raise _fail(
            label,
            f"{int(bad.sum())} of {n} points have NaN or infinite coordinates "
            f"({int(np.isnan(xyz).sum())} NaN and {int(np.isinf(xyz).sum())} inf values); "
            "remove those points (e.g. keep arr[np.isfinite(arr).all(axis=1)]) and save the file again",
        )
    if np.abs(xyz).max() > np.finfo(np.float32).max:
        raise _fail(label, f"coordinates up to {np.abs(xyz).max():g} do not fit in float32; rescale the cloud")
    if n == 1:
        raise _fail(label, "contains a single point; a point cloud needs at least two distinct points")
    if float(np.ptp(xyz, axis=0).max()) == 0.0:
        raise _fail(
            label,
            f"all {n} points are identical at {_fmt_triple(xyz[0])}; a point cloud needs at least two distinct points",
        )

    if raw.rgb is None:
        rgb = np.broadcast_to(colour, (n, 3))
        colour_source = f"default ({raw.missing})"
        notes.append(f"no colour in {source}: filled with {_fmt_triple(colour)}")
    else:
        rgb, colour_source = _check_colour(raw, label, notes)
    return PointCloud(xyz=xyz, rgb=rgb, colour_source=colour_source, path=path, notes=notes)


def _check_colour(raw: _Raw, label: object, notes: list[str]) -> tuple[np.ndarray, str]:
    """``rgb (N, 3)`` in any accepted range -> ``(N, 3)`` in ``[0, 1]`` and the colour source."""
    rgb = np.asarray(raw.rgb, dtype=np.float64)
    if not np.isfinite(rgb).all():
        count = int((~np.isfinite(rgb)).sum())
        raise _fail(label, f"{count} colour values are NaN or infinite; colours must be numbers in [0, 1] or 0-255")
    if (rgb < 0).any():
        raise _fail(
            label,
            f"{int((rgb < 0).sum())} colour values are negative (minimum {rgb.min():g}); "
            "colours must be in [0, 1] or 0-255",
        )
    peak = float(rgb.max())
    if raw.colour_scale is not None:
        if peak > raw.colour_scale:
            raise _fail(label, f"colour values up to {peak:g} exceed the {raw.colour_scale:g} of their type")
        return rgb / raw.colour_scale, raw.colour_source
    if peak > 255:
        raise _fail(
            label,
            f"colour values go up to {peak:g}, outside [0, 255]; colours must be in [0, 1] or 0-255 "
            "(are the columns after x, y, z really r, g, b?)",
        )
    if peak > 1:
        notes.append(f"colours in 0-255 (maximum {peak:g}): divided by 255")
        return rgb / 255.0, f"{raw.colour_source} (0-255 rescaled)"
    return rgb, raw.colour_source


def _raw_from_array(array, label: object, source: str) -> _Raw:
    """Split a numeric ``(N, C)`` array into xyz and colour columns.

    ``C == 3``: xyz. ``C == 6``: xyz + rgb, unless columns 4-6 are unit normals (then no colour). ``C >= 7``:
    the first six as for ``C == 6``, the rest ignored (noted), except ``(3, C)`` and ``(6, C)``, which are
    taken for transposed clouds and refused. Structured arrays go through their field names.
    """
    arr = np.asarray(array)
    if arr.dtype.names:
        return _raw_from_fields({name: arr[name] for name in arr.dtype.names}, label, source)
    if arr.dtype.kind not in "iuf":
        raise _fail(label, f"holds values of dtype {arr.dtype}, expected numbers: an (N, 3) or (N, 6) array")
    if arr.size == 0:
        raise _fail(label, f"contains no points (shape {arr.shape})")
    transposed = arr.ndim == 2 and arr.shape[0] in (3, 6) and arr.shape[1] > 6
    if arr.ndim != 2 or (arr.shape[1] not in (3, 6) and arr.shape[1] < 7) or transposed:
        raise _fail(label, f"has shape {arr.shape}: expected (N, 3) xyz or (N, 6) xyz + rgb{_shape_hint(arr.shape)}")
    raw = _Raw(xyz=arr[:, :3], colour_source=source, missing=f"{source} has no colour")
    if arr.shape[1] > 6:
        raw.notes.append(f"columns 7-{arr.shape[1]} ignored: only x, y, z, r, g, b (the first six) are used")
    if arr.shape[1] >= 6:
        extra = np.asarray(arr[:, 3:6], dtype=np.float64)
        if _looks_like_normals(extra):
            raw.missing = f"{source} has normals, no colour"
            raw.notes.append("columns 4-6 are unit normals, not colours: ignored")
        else:
            raw.rgb = extra
    return raw


def _shape_hint(shape: tuple[int, ...]) -> str:
    if len(shape) == 2 and shape[0] in (3, 6) and shape[1] > 6:
        return f"; it looks transposed, save array.T (shape ({shape[1]}, {shape[0]}))"
    if len(shape) == 3:
        return "; this looks like a batch of clouds, save one (N, C) cloud per file"
    if len(shape) == 2 and shape[1] in (4, 5):
        return "; drop the extra columns (e.g. intensity or alpha) or pad colour to three channels"
    return ""


def _looks_like_normals(extra: np.ndarray) -> bool:
    """True when ``extra (N, 3)`` holds unit vectors with a negative entry (colours are never negative)."""
    if not np.isfinite(extra).all() or not (extra < 0).any():
        return False
    norms = np.linalg.norm(extra, axis=1)
    return bool(np.abs(norms - 1.0).max() < _NORMAL_TOLERANCE)


def _raw_from_fields(fields: dict[str, np.ndarray], label: object, source: str = "file") -> _Raw:
    """Named 1-D columns (PLY properties, PCD fields, structured arrays) -> xyz and colour."""
    lower = {name.lower(): np.asarray(values) for name, values in fields.items()}
    if not all(axis in lower for axis in "xyz"):
        raise _fail(label, f"has no x, y, z fields (fields found: {', '.join(fields) or 'none'})")
    for name in "xyz":
        if lower[name].ndim != 1 or lower[name].dtype.kind not in "iuf":
            raise _fail(label, f"field {name!r} is not one number per point (dtype {lower[name].dtype})")
    raw = _Raw(xyz=np.stack([lower[a].astype(np.float64) for a in "xyz"], axis=1), colour_source=source)
    for names in _COLOUR_FIELDS:
        if all(n in lower for n in names):
            columns = [lower[n] for n in names]
            if any(c.ndim != 1 or c.dtype.kind not in "iuf" for c in columns):
                raise _fail(label, f"colour fields {', '.join(names)} are not one number per point")
            raw.rgb = np.stack([c.astype(np.float64) for c in columns], axis=1)
            scale = _TYPED_COLOUR_SCALE.get(columns[0].dtype.itemsize) if columns[0].dtype.kind == "u" else None
            if scale is not None:
                raw.colour_scale = scale
                raw.colour_source = f"{source} (0-{scale:g} rescaled)"
            break
    else:
        raw.missing = f"{source} has no colour"
    return raw


# ----------------------------------------------------------------------------------------------------------
# Public entry points
# ----------------------------------------------------------------------------------------------------------
def from_array(array, *, source: str = "array", default_colour=DEFAULT_COLOUR, path=None) -> PointCloud:
    """Validate an array and wrap it as a :class:`PointCloud`.

    Args:
        array: ``(N, 3)`` xyz, ``(N, 6)`` xyz + rgb (rgb in ``[0, 1]`` or 0-255), or ``(N, C >= 7)`` whose first
            six columns are xyz + rgb (the rest is ignored and noted; ``(3, C)`` / ``(6, C)`` are refused as
            transposed). Six columns whose last three are unit vectors with a negative entry are taken as
            xyz + normals: the normals are dropped. A structured array with fields ``x, y, z`` (and
            ``red, green, blue`` or ``r, g, b``) works too.
        source: names the input in messages and in ``colour_source`` (``"array"``, ``"array (0-255
            rescaled)"``, ``"default (array has no colour)"``).
        default_colour: colour in ``[0, 1]`` for a cloud without one.
        path: recorded in the result and used instead of ``source`` in error messages.

    Returns:
        A :class:`PointCloud` with ``xyz (N, 3)`` and ``rgb (N, 3)`` float32.

    Raises:
        PointCloudError: empty, wrong shape, NaN / inf values, all points identical, colours out of range.
    """
    label = path if path is not None else source
    raw = _raw_from_array(array, label, source)
    return _finish(raw, label=label, path=Path(path) if path is not None else None, default_colour=default_colour,
                   source=source)


def load_point_cloud(
    path,
    *,
    mesh_points: int = 8192,
    seed: int = 0,
    max_bytes: int = DEFAULT_MAX_BYTES,
    default_colour=DEFAULT_COLOUR,
) -> PointCloud:
    """Read a point cloud or a mesh file.

    Args:
        path: a file with one of :data:`SUPPORTED_EXTENSIONS` (case-insensitive).
        mesh_points: number of points sampled on a mesh's surface (point formats keep all their points).
        seed: seed of the surface sampling; the same seed gives the same points.
        max_bytes: refuse files larger than this (for ``.gltf`` only the JSON file itself is counted).
        default_colour: colour in ``[0, 1]`` for a file without colour.

    Returns:
        A :class:`PointCloud`: ``xyz (N, 3)``, ``rgb (N, 3)`` float32, ``N = mesh_points`` for meshes.

    Raises:
        PointCloudError: the message names the file, the problem and, where there is one, the fix.
    """
    if isinstance(mesh_points, bool) or not isinstance(mesh_points, (int, np.integer)) or mesh_points < 1:
        raise PointCloudError(f"mesh_points must be a positive integer, got {mesh_points!r}")
    _check_default_colour(default_colour)
    try:
        p = Path(path)
    except TypeError:
        raise PointCloudError(f"expected a file path, got {type(path).__name__}") from None
    ext = p.suffix.lower()
    if not p.exists():
        raise _fail(p, "file not found")
    if p.is_dir():
        raise _fail(p, "is a directory, not a point-cloud file")
    if ext not in SUPPORTED_EXTENSIONS:
        raise _fail(
            p,
            f"unsupported extension {ext or '(none)'!r}; supported: {', '.join(SUPPORTED_EXTENSIONS)}",
        )
    size = p.stat().st_size
    if size > max_bytes:
        raise _fail(
            p,
            f"file is {size:,} bytes, over the limit of {max_bytes:,} bytes; raise max_bytes if the file is "
            "meant to be this large",
        )
    if size == 0:
        raise _fail(p, "file is empty (0 bytes)")
    try:
        if ext in MESH_EXTENSIONS:
            raw = _read_mesh_file(p, mesh_points, seed, default_colour)
        elif ext == ".ply":
            raw = _read_ply(p, mesh_points, seed, default_colour)
        else:
            raw = _POINT_READERS[ext](p)
    except PointCloudError:
        raise
    except MemoryError:
        raise _fail(p, "not enough memory to read this file; lower mesh_points or load a smaller file") from None
    except OSError as exc:  # permissions, a missing .gltf buffer or .obj texture, ...
        raise _fail(p, f"could not read this {ext[1:].upper()} file ({_detail(exc)})") from exc
    except Exception as exc:  # any parser failure becomes a one-line message naming the file
        raise _fail(
            p, f"could not read this {ext[1:].upper()} file, it looks corrupt or truncated ({_detail(exc)})"
        ) from exc
    return _finish(raw, label=p, path=p, default_colour=default_colour, source="file")


def save_point_cloud(path, cloud: PointCloud | np.ndarray) -> Path:
    """Write a cloud to ``.ply`` (binary little-endian, float32 x y z + uchar red green blue) or ``.npy``.

    Args:
        path: destination; its extension picks the format (:data:`SAVE_EXTENSIONS`).
        cloud: a :class:`PointCloud`, or an array accepted by :func:`from_array` (``(N, 3)`` / ``(N, 6)``).

    Returns:
        The path written. ``.npy`` holds ``(N, 6)`` float32 xyz + rgb in ``[0, 1]`` (PointLLM's layout);
        ``.ply`` rounds colours to 8 bits.

    Raises:
        PointCloudError: unsupported extension, invalid cloud, or the file cannot be written.
    """
    p = Path(path)
    ext = p.suffix.lower()
    if ext not in SAVE_EXTENSIONS:
        raise _fail(p, f"cannot save as {ext or '(no extension)'!r}; supported: {', '.join(SAVE_EXTENSIONS)}")
    if not isinstance(cloud, PointCloud):
        cloud = from_array(cloud)
    try:
        if ext == ".npy":
            with open(p, "wb") as handle:
                np.save(handle, cloud.as_array())
        else:
            _write_ply(p, cloud)
    except OSError as exc:
        raise _fail(p, f"could not write the file ({exc.strerror or exc})") from exc
    return p


def _write_ply(p: Path, cloud: PointCloud) -> None:
    from plyfile import PlyData, PlyElement

    vertex = np.empty(
        len(cloud), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")]
    )
    for i, axis in enumerate("xyz"):
        vertex[axis] = cloud.xyz[:, i]
    rgb = np.clip(np.round(cloud.rgb * 255.0), 0, 255).astype(np.uint8)
    for i, channel in enumerate(("red", "green", "blue")):
        vertex[channel] = rgb[:, i]
    PlyData([PlyElement.describe(vertex, "vertex")], text=False, byte_order="<",
            comments=["enel point cloud"]).write(str(p))


# ----------------------------------------------------------------------------------------------------------
# Point formats
# ----------------------------------------------------------------------------------------------------------
def _read_numpy(p: Path) -> _Raw:
    """``.npy`` or ``.npz``, told apart by their first bytes (``np.save`` / ``np.savez``), not by the name."""
    with open(p, "rb") as handle:
        magic = handle.read(6)
    if magic != b"\x93NUMPY" and not magic.startswith(b"PK"):
        raise _fail(p, "is not a NumPy file (no .npy or .npz header); write it with np.save or np.savez")
    try:
        if magic.startswith(b"PK"):
            with np.load(p, allow_pickle=False) as archive:
                return _raw_from_npz(p, archive)
        return _raw_from_array(np.load(p, allow_pickle=False), p, "file")
    except ValueError as exc:
        if "pickle" in str(exc):
            raise _fail(
                p,
                "holds pickled Python objects, which are not loaded for safety; save a numeric (N, 3) or (N, 6) "
                "array with np.save",
            ) from None
        raise


def _raw_from_npz(p: Path, archive) -> _Raw:
    """The single array of the archive, or the one named points / xyz / pos / data (+ a colour array)."""
    keys = list(archive.keys())
    if not keys:
        raise _fail(p, "the .npz archive holds no arrays")
    if len(keys) == 1:
        key = keys[0]
    else:
        key = next((k for k in _NPZ_KEYS if k in keys), None)
        if key is None:
            raise _fail(
                p,
                f"the .npz archive holds several arrays ({', '.join(keys)}) and none is named "
                f"{', '.join(_NPZ_KEYS)}; rename the point array to 'points'",
            )
    points = archive[key]
    colour_key = next((k for k in _NPZ_COLOUR_KEYS if k in keys and k != key), None)
    if colour_key is not None and points.ndim == 2 and points.shape[1] == 3:
        colours = archive[colour_key]
        if colours.ndim != 2 or colours.shape != points.shape:
            raise _fail(p, f"array {colour_key!r} has shape {colours.shape}, expected {points.shape} like {key!r}")
        raw = _raw_from_array(np.concatenate([points, colours], axis=1).astype(np.float64), p, "file")
        raw.notes.append(f"points from array {key!r}, colours from array {colour_key!r}")
        return raw
    raw = _raw_from_array(points, p, "file")
    if len(keys) > 1:
        raw.notes.append(f"points from array {key!r} of {', '.join(keys)}")
    return raw


_TEXT_SEPARATORS = re.compile(r"[,;\s]+")
_COMMA_SEMICOLON_TO_SPACE = str.maketrans(",;", "  ")


def _read_text(p: Path) -> _Raw:
    """``.xyz`` / ``.txt`` / ``.pts``: one point per line, separated by spaces, tabs, commas or semicolons.

    Leading lines that are not numbers are a header and skipped; ``#`` starts a comment. A first line holding a
    single integer is a point count (Leica PTS). ``.pts`` also takes Leica's 4 columns (x y z intensity) and
    7 columns (x y z intensity r g b); the intensity is dropped.
    """
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise _fail(
            p, "is not a text file (it holds non-UTF-8 bytes); expected one 'x y z [r g b]' line per point"
        ) from None
    lines = text.splitlines()
    notes: list[str] = []
    first, header = _first_numeric_line(lines)
    if header:
        notes.append(f"{header} header line(s) skipped")
    if first is None:
        raise _fail(p, "contains no points")
    second, _ = _first_numeric_line(lines, first + 1)
    head = _numbers(lines[first])
    if second is not None and len(head) == 1 and len(_numbers(lines[second])) > 1 and head[0].is_integer():
        notes.append(f"first line is a point count ({int(head[0])}): skipped")
        first = second
    arr = _parse_rows(p, lines, first)
    if notes and notes[-1].startswith("first line is a point count") and int(head[0]) != len(arr):
        notes.append(f"the point count {int(head[0])} differs from the {len(arr)} rows read")
    if p.suffix.lower() == ".pts" and arr.shape[1] in (4, 7):
        arr = np.delete(arr, 3, axis=1)
        notes.append("column 4 (Leica PTS intensity) ignored")
    raw = _raw_from_array(arr, p, "file")
    raw.notes[:0] = notes
    return raw


def _numbers(line: str) -> list[float] | None:
    """The numbers of one text line (``[]`` for a blank or comment line), or ``None`` if it is not numeric."""
    content = line.split("#", 1)[0].strip()
    try:
        return [float(t) for t in _TEXT_SEPARATORS.split(content) if t]
    except ValueError:
        return None


def _first_numeric_line(lines: list[str], start: int = 0) -> tuple[int | None, int]:
    """Index of the first line of numbers at or after ``start``, and how many non-numeric lines came before."""
    skipped = 0
    for index in range(start, len(lines)):
        values = _numbers(lines[index])
        if values is None:
            skipped += 1
        elif values:
            return index, skipped
    return None, skipped


def _parse_rows(p: Path, lines: list[str], first: int) -> np.ndarray:
    """Lines ``first..`` as an ``(N, C)`` float64 array: numpy's C parser, or a line-by-line diagnosis."""
    body = "\n".join(lines[first:]).translate(_COMMA_SEMICOLON_TO_SPACE)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.loadtxt(StringIO(body), dtype=np.float64, comments="#", ndmin=2)
    except ValueError:
        pass
    width = None
    for number in range(first, len(lines)):
        values = _numbers(lines[number])
        if values is None:
            raise _fail(p, f"line {number + 1} is not a row of numbers: {lines[number].strip()[:60]!r}")
        if not values:
            continue
        if width is None:
            width = len(values)
        elif len(values) != width:
            raise _fail(
                p,
                f"rows have different numbers of columns ({width} in the first row, "
                f"{len(values)} in line {number + 1})",
            )
    raise _fail(p, "could not parse the rows of numbers")  # pragma: no cover - loadtxt failed on valid rows


def _read_ply(p: Path, mesh_points: int, seed: int, default_colour) -> _Raw:
    """A PLY with faces is a mesh (sampled by :func:`_read_mesh_file`); otherwise its vertices are the points."""
    from plyfile import PlyData

    with open(p, "rb") as handle:
        if handle.read(4).rstrip(b"\r\n") != b"ply":
            raise _fail(p, "is not a PLY file (it does not start with the line 'ply')")
    ply = PlyData.read(str(p))
    elements = [e.name for e in ply.elements]
    if "vertex" not in elements:
        raise _fail(p, f"has no 'vertex' element (elements: {', '.join(elements) or 'none'})")
    if "face" in elements and ply["face"].count > 0:
        return _read_mesh_file(p, mesh_points, seed, default_colour)
    vertex = ply["vertex"].data
    return _raw_from_fields({name: vertex[name] for name in vertex.dtype.names}, p)


# ----------------------------------------------------------------------------------------------------------
# PCD (PCL): neither plyfile nor trimesh reads it
# ----------------------------------------------------------------------------------------------------------
_PCD_KINDS = {"F": "f", "I": "i", "U": "u"}


def _read_pcd(p: Path) -> _Raw:
    """PCL ``.pcd``, DATA ascii or binary (little-endian).

    FIELDS x y z are required; colour comes from ``rgb`` (packed into a float or uint32: ``0x00RRGGBB``),
    ``rgba`` (uint32 ``0xAARRGGBB``) or separate ``r g b``. Points with NaN coordinates are PCL's invalid
    points (organised clouds from depth sensors): they are dropped and counted in the notes.
    """
    data = p.read_bytes()
    header, offset = _pcd_header(p, data)
    names = header.get("FIELDS")
    if not names:
        raise _fail(p, "PCD header has no FIELDS line")
    sizes = [int(v) for v in header.get("SIZE", [])]
    types = [t.upper() for t in header.get("TYPE", [])]
    counts = [int(v) for v in header.get("COUNT", ["1"] * len(names))]
    if not (len(sizes) == len(types) == len(counts) == len(names)):
        raise _fail(p, "PCD header: FIELDS, SIZE, TYPE and COUNT have different lengths")
    if "POINTS" in header:
        n = int(header["POINTS"][0])
    else:
        n = int(header.get("WIDTH", ["0"])[0]) * int(header.get("HEIGHT", ["1"])[0])
    mode = (header.get("DATA") or ["?"])[0].lower()
    if mode == "binary_compressed":
        raise _fail(
            p,
            "DATA binary_compressed PCD files are not supported; convert it to binary or ascii first, e.g. "
            "`pcl_convert_pcd_ascii_binary in.pcd out.pcd 1` (PCL) or "
            "`open3d.io.write_point_cloud('out.ply', open3d.io.read_point_cloud('in.pcd'))`",
        )
    dtype = _pcd_dtype(p, names, sizes, types, counts)
    if mode == "binary":
        need = n * dtype.itemsize
        body = data[offset : offset + need]
        if len(body) < need:
            raise _fail(p, f"truncated: the header declares {n} points ({need:,} bytes) but {len(body):,} bytes follow")
        table = np.frombuffer(body, dtype=dtype, count=n)
        columns = {name: table[name] for name in dtype.names}
        for name in ("rgb", "rgba"):
            if name in columns:
                columns[name] = np.ascontiguousarray(columns[name]).view("<u4")
    elif mode == "ascii":
        columns = _pcd_ascii_columns(p, data[offset:], n, names, types, counts)
    else:
        raise _fail(p, f"PCD DATA mode {mode!r} is unknown; expected ascii, binary or binary_compressed")
    fields = {k: v for k, v in columns.items() if k not in ("rgb", "rgba")}
    packed = columns.get("rgb", columns.get("rgba"))
    if packed is not None and not any(all(c in fields for c in group) for group in _COLOUR_FIELDS):
        packed = np.asarray(packed).astype(np.uint32)
        fields["red"] = ((packed >> 16) & 255).astype(np.uint8)
        fields["green"] = ((packed >> 8) & 255).astype(np.uint8)
        fields["blue"] = (packed & 255).astype(np.uint8)
    raw = _raw_from_fields(fields, p)
    invalid = np.isnan(raw.xyz).any(axis=1)
    if len(invalid) and invalid.all():
        raise _fail(p, f"all {len(invalid)} points are invalid (NaN coordinates)")
    if invalid.any():
        keep = ~invalid
        raw.xyz = raw.xyz[keep]
        raw.rgb = raw.rgb[keep] if raw.rgb is not None else None
        raw.notes.append(f"{int(invalid.sum())} invalid points (NaN coordinates, PCL's marker) dropped")
    return raw


def _pcd_header(p: Path, data: bytes) -> tuple[dict[str, list[str]], int]:
    """Header lines up to and including DATA -> ({KEY: values}, offset of the first data byte)."""
    header: dict[str, list[str]] = {}
    pos = 0
    while True:
        end = data.find(b"\n", pos)
        if end < 0:
            raise _fail(p, "PCD header ends before its DATA line (not a PCD file, or truncated)")
        try:
            line = data[pos:end].decode("ascii").strip()
        except UnicodeDecodeError:
            raise _fail(p, "PCD header holds non-ASCII bytes (not a PCD file?)") from None
        pos = end + 1
        if not line or line.startswith("#"):
            continue
        key, *values = line.split()
        header[key.upper()] = values
        if key.upper() == "DATA":
            return header, pos


def _pcd_dtype(p: Path, names, sizes, types, counts) -> np.dtype:
    parts = []
    seen: set[str] = set()
    for i, (name, size, kind, count) in enumerate(zip(names, sizes, types, counts)):
        if kind not in _PCD_KINDS or size not in (1, 2, 4, 8) or (kind == "F" and size not in (4, 8)):
            raise _fail(p, f"PCD field {name!r} has an unknown TYPE {kind} / SIZE {size}")
        if name in seen or name == "_":  # PCL pads with repeated "_" fields
            name = f"_pad{i}"
        seen.add(name)
        parts.append((name, f"<{_PCD_KINDS[kind]}{size}", (count,) if count > 1 else ()))
    return np.dtype(parts)


def _pcd_ascii_columns(p: Path, body: bytes, n: int, names, types, counts) -> dict[str, np.ndarray]:
    """Parse the ascii rows; only x y z and colour fields are converted."""
    lines = [line.split() for line in body.decode("ascii").splitlines() if line.strip()]
    width = sum(counts)
    if len(lines) < n:
        raise _fail(p, f"truncated: the header declares {n} points but {len(lines)} rows follow")
    if len(lines) > n:
        raise _fail(p, f"the header declares {n} points but {len(lines)} rows follow")
    bad = next((i for i, row in enumerate(lines) if len(row) != width), None)
    if bad is not None:
        raise _fail(p, f"data row {bad + 1} has {len(lines[bad])} values, the header declares {width}")
    tokens = np.asarray(lines, dtype=str).reshape(n, width)
    columns: dict[str, np.ndarray] = {}
    start = 0
    for name, kind, count in zip(names, types, counts):
        col = tokens[:, start]
        start += count
        if name not in ("x", "y", "z", "rgb", "rgba", "r", "g", "b", "red", "green", "blue"):
            continue
        if count != 1:
            raise _fail(p, f"PCD field {name!r} has COUNT {count}, expected 1")
        if name in ("rgb", "rgba") and kind == "F":
            columns[name] = _pcd_packed_ascii(col)
        elif kind == "F":
            columns[name] = col.astype(np.float64)
        else:
            is_channel = name in ("r", "g", "b", "red", "green", "blue")
            columns[name] = col.astype(np.int64).astype(np.uint8 if is_channel else np.int64)
    return columns


def _pcd_packed_ascii(col: np.ndarray) -> np.ndarray:
    """Packed colours written as text: integers (PCL >= 1.8 writes the uint32) or floats (older PCL writes
    the float whose bits hold ``0x00RRGGBB``) -> ``(N,)`` uint32."""
    integer = np.char.isdigit(col)
    out = np.empty(col.shape[0], dtype=np.uint32)
    out[integer] = col[integer].astype(np.uint64).astype(np.uint32)
    out[~integer] = col[~integer].astype(np.float32).view(np.uint32)
    return out


_POINT_READERS = {
    ".npy": _read_numpy,
    ".npz": _read_numpy,
    ".pcd": _read_pcd,
    ".xyz": _read_text,
    ".txt": _read_text,
    ".pts": _read_text,
}


# ----------------------------------------------------------------------------------------------------------
# Meshes
# ----------------------------------------------------------------------------------------------------------
def _read_mesh_file(p: Path, n: int, seed: int, default_colour) -> _Raw:
    """Load a mesh or scene with trimesh and sample ``n`` points on its surface (all parts together)."""
    import trimesh

    if p.suffix.lower() == ".gltf":
        try:
            json.loads(p.read_text(encoding="utf-8"))
        except ValueError:  # JSONDecodeError and UnicodeDecodeError
            raise _fail(p, "is not a glTF file (a .gltf file is JSON; a binary glTF should be named .glb)") from None
    loaded = trimesh.load(str(p), process=False)
    if isinstance(loaded, trimesh.Scene):
        parts = list(loaded.dump())  # world transforms applied
    else:
        parts = [loaded]
    meshes = [g for g in parts if isinstance(g, trimesh.Trimesh) and len(g.faces) > 0]
    if not meshes:
        vertices = sum(len(getattr(g, "vertices", ())) for g in parts)
        if vertices:
            raise _fail(
                p,
                f"is a mesh file with {vertices} vertices but no faces, so there is no surface to sample; to use "
                "the vertices as points, save them as a point cloud (.ply without faces, .xyz or .npy)",
            )
        raise _fail(p, f"holds no geometry (an empty or invalid {p.suffix[1:].upper()} file)")
    raw = _sample_meshes(p, meshes, n, seed, default_colour)
    if len(meshes) > 1:
        raw.notes.append(f"{len(meshes)} meshes of the scene sampled together")
    return raw


def _sample_meshes(p: Path, meshes, n: int, seed: int, default_colour) -> _Raw:
    """Area-weighted surface samples over all ``meshes``: ``(n, 3)`` points, each coloured by its own mesh."""
    import trimesh

    vertices, faces, starts = [], [], [0]
    offset = 0
    for mesh in meshes:
        v = np.asarray(mesh.vertices, dtype=np.float64)
        f = np.asarray(mesh.faces, dtype=np.int64)
        if not np.isfinite(v).all():
            raise _fail(p, f"{int((~np.isfinite(v).all(axis=1)).sum())} mesh vertices have NaN or infinite coordinates")
        if f.min() < 0 or f.max() >= len(v):
            raise _fail(p, "mesh faces refer to vertices that do not exist (corrupt file)")
        vertices.append(v)
        faces.append(f + offset)
        offset += len(v)
        starts.append(starts[-1] + len(f))
    combined = trimesh.Trimesh(
        vertices=np.concatenate(vertices), faces=np.concatenate(faces), process=False, validate=False
    )
    area = float(combined.area_faces.sum())
    if not np.isfinite(area) or area <= 0:
        raise _fail(p, "the mesh surface has zero area (every face is degenerate), so no points can be sampled")
    points, face_index, bary = trimesh.sample.sample_surface(combined, n, seed=seed, return_barycentric=True)

    rgb = np.empty((n, 3), dtype=np.float64)
    coloured = np.zeros(n, dtype=bool)
    sources: list[str] = []
    for i, mesh in enumerate(meshes):
        sel = (face_index >= starts[i]) & (face_index < starts[i + 1])
        if not sel.any():
            continue
        colours, source = _mesh_colours(mesh, face_index[sel] - starts[i], bary[sel])
        if colours is None:
            continue
        rgb[sel] = colours
        coloured[sel] = True
        if source not in sources:
            sources.append(source)
    raw = _Raw(xyz=points, notes=[f"mesh sampled: {n} points (area-weighted, seed {seed})"])
    if not coloured.any():
        raw.missing = "file has no colour"
        return raw
    if not coloured.all():
        fill = _check_default_colour(default_colour)
        rgb[~coloured] = fill
        raw.notes.append(
            f"{int((~coloured).sum())} points lie on parts without colour: filled with {_fmt_triple(fill)}"
        )
    raw.rgb = rgb
    raw.colour_scale = 1.0
    raw.colour_source = " + ".join(sources)
    return raw


def _mesh_colours(mesh, faces: np.ndarray, bary: np.ndarray) -> tuple[np.ndarray | None, str | None]:
    """Colours in ``[0, 1]`` of points on ``mesh``: ``faces (k,)`` local face indices, ``bary (k, 3)``.

    Texture: UVs interpolated barycentrically, then the image sampled bilinearly (times a glTF base colour
    factor). Vertex colours: interpolated barycentrically. Face colours: the face's colour. A material
    without texture: its colour. Alpha is ignored. Returns ``(None, None)`` when the mesh has no colour.
    """
    from trimesh.visual import ColorVisuals, TextureVisuals
    from trimesh.visual.color import uv_to_interpolated_color
    from trimesh.visual.material import PBRMaterial

    visual = mesh.visual
    corners = np.asarray(mesh.faces)[faces]  # (k, 3) vertex indices
    if isinstance(visual, TextureVisuals):
        material = visual.material
        if _is_placeholder_material(material):
            return None, None
        is_pbr = isinstance(material, PBRMaterial)
        image = getattr(material, "baseColorTexture" if is_pbr else "image", None)
        factor = getattr(material, "baseColorFactor", None) if is_pbr else None
        uv = visual.uv
        if image is not None and uv is not None and len(uv) == len(mesh.vertices):
            uv_points = (np.asarray(uv, dtype=np.float64)[corners] * bary[:, :, None]).sum(axis=1)
            colours = uv_to_interpolated_color(uv_points, image)[:, :3].astype(np.float64) / 255.0
            if factor is not None:
                colours = colours * (np.asarray(factor, dtype=np.float64)[:3] / 255.0)
            return colours, "mesh texture"
        main = factor if is_pbr else getattr(material, "diffuse", None)
        if main is None or (not is_pbr and np.array_equal(np.asarray(main)[:3], _TRIMESH_DEFAULT_DIFFUSE)):
            return None, None
        colour = np.asarray(main, dtype=np.float64)[:3] / 255.0
        return np.broadcast_to(colour, (len(faces), 3)), "mesh material colour"
    if isinstance(visual, ColorVisuals):
        kind = visual.kind
        if kind == "vertex":
            vc = np.asarray(visual.vertex_colors, dtype=np.float64)[:, :3] / 255.0
            return (vc[corners] * bary[:, :, None]).sum(axis=1), "mesh vertex colours"
        if kind == "face":
            return np.asarray(visual.face_colors, dtype=np.float64)[faces, :3] / 255.0, "mesh face colours"
    return None, None


_TRIMESH_DEFAULT_DIFFUSE = np.array([102, 102, 102], dtype=np.uint8)  # what trimesh gives an OBJ without Kd
_TRIMESH_PLACEHOLDER_PIXEL = np.array([100, 100, 100, 255], dtype=np.uint8)


def _is_placeholder_material(material) -> bool:
    """True for the material trimesh invents for UVs without a material file (a grey 2 x 2 image).

    An OBJ with ``vt`` lines but no ``.mtl`` (e.g. Spot) would otherwise read as a grey texture; it has no
    colour.
    """
    from trimesh.visual.material import SimpleMaterial

    image = getattr(material, "image", None)
    if not isinstance(material, SimpleMaterial) or image is None or image.size != (2, 2):
        return False
    pixels = np.asarray(image.convert("RGBA")).reshape(-1, 4)
    return bool((pixels == _TRIMESH_PLACEHOLDER_PIXEL).all())
