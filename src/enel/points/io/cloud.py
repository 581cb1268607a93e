"""The :class:`PointCloud` every reader returns, the raw columns a reader finds (:class:`RawCloud`), and the
checks every input goes through: coordinates finite and distinct, colours in range, colour fields and
columns told apart from normals. :func:`from_array` is the same checks on an in-memory array."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from enel.errors import PointCloudError

DEFAULT_COLOR: tuple[float, float, float] = (0.0, 0.0, 0.0)
"""Colour given to points whose file has none: black, as PointLLM feeds colourless ModelNet40."""

COLOR_FIELDS = (("red", "green", "blue"), ("r", "g", "b"), ("diffuse_red", "diffuse_green", "diffuse_blue"))
_TYPED_COLOR_SCALE = {1: 255.0, 2: 65535.0}  # unsigned integer colour fields, by byte size
_NORMAL_TOLERANCE = 1e-2
_NORMAL_SHARE = 0.99
"""Columns 4-6 are normals when they hold a negative entry (colours never do) and at least this share of their rows
are unit vectors: ModelNet40's "normal_resampled" files write a face without a normal as (1, 1, 1) (4 of the 156
files of the shared subset, 5-52 rows of 10,000 each)."""


@dataclass
class PointCloud:
    """One point cloud with colour.

    Attributes:
        xyz: ``(N, 3)`` float32 coordinates, finite.
        rgb: ``(N, 3)`` float32 colours in ``[0, 1]``.
        color_source: where ``rgb`` came from: ``"file"``, ``"file (0-255 rescaled)"``,
            ``"default (file has no colour)"``, ``"mesh vertex colours"``, ``"mesh face colours"``,
            ``"mesh texture"``, ``"mesh material colour"`` (several joined by ``" + "`` for scenes whose parts
            differ), or the ``source`` given to :func:`from_array`.
        path: the file it was read from, or ``None``.
        notes: human-readable notes on what was done (colour filled or rescaled, mesh sampled, …).
    """

    xyz: np.ndarray
    rgb: np.ndarray
    color_source: str
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
class RawCloud:
    """What a reader found, before the shared checks.

    ``xyz (N, 3)``; ``rgb (N, 3)`` or ``None``. ``color_scale`` divides ``rgb`` when the file's type fixes the
    range (8-bit: 255); ``None`` means detect 0–1 vs 0–255 from the values. ``missing`` says why ``rgb`` is
    ``None`` (goes into ``color_source``).
    """

    xyz: np.ndarray
    rgb: np.ndarray | None = None
    color_source: str = "file"
    color_scale: float | None = None
    missing: str = "file has no colour"
    notes: list[str] = field(default_factory=list)


def fail(label: object, problem: str) -> PointCloudError:
    return PointCloudError(f"{label}: {problem}")


def describe_error(exc: BaseException) -> str:
    """``Type: message`` of a third-party exception on one line, at most 200 characters of message."""
    message = re.sub(r"\s+", " ", str(exc)).strip()[:200]
    return f"{type(exc).__name__}: {message or 'no detail'}"


def format_color(color) -> str:
    return "(" + ", ".join(f"{float(c):g}" for c in color) + ")"


def check_default_color(default_color) -> np.ndarray:
    color = np.asarray(default_color, dtype=np.float64).reshape(-1)
    if color.shape != (3,) or not np.isfinite(color).all() or color.min() < 0 or color.max() > 1:
        raise PointCloudError(f"default_color must be three values in [0, 1], got {default_color!r}")
    return color


# ----------------------------------------------------------------------------------------------------------
# Shared checks
# ----------------------------------------------------------------------------------------------------------
def finish_cloud(raw: RawCloud, *, label: object, path: Path | None, default_color, source: str) -> PointCloud:
    """Validate ``raw`` and turn it into a :class:`PointCloud`; ``source`` names the input in colour notes."""
    color = check_default_color(default_color)
    xyz = np.asarray(raw.xyz, dtype=np.float64)
    n = xyz.shape[0]
    notes = list(raw.notes)
    if n == 0:
        raise fail(label, "contains no points")
    bad = ~np.isfinite(xyz).all(axis=1)
    if bad.any():
        raise fail(
            label,
            f"{int(bad.sum())} of {n} points have NaN or infinite coordinates "
            f"({int(np.isnan(xyz).sum())} NaN and {int(np.isinf(xyz).sum())} inf values); "
            "remove those points (e.g. keep arr[np.isfinite(arr).all(axis=1)]) and save the file again",
        )
    if np.abs(xyz).max() > np.finfo(np.float32).max:
        raise fail(label, f"coordinates up to {np.abs(xyz).max():g} do not fit in float32; rescale the cloud")
    if n == 1:
        raise fail(label, "contains a single point; a point cloud needs at least two distinct points")
    if float(np.ptp(xyz, axis=0).max()) == 0.0:
        raise fail(
            label,
            f"all {n} points are identical at {format_color(xyz[0])}; a point cloud needs at least two distinct points",
        )

    if raw.rgb is None:
        rgb = np.broadcast_to(color, (n, 3))
        color_source = f"default ({raw.missing})"
        notes.append(f"no colour in {source}: filled with {format_color(color)}")
    else:
        rgb, color_source = _check_color(raw, label, notes)
    return PointCloud(xyz=xyz, rgb=rgb, color_source=color_source, path=path, notes=notes)


def _check_color(raw: RawCloud, label: object, notes: list[str]) -> tuple[np.ndarray, str]:
    """``rgb (N, 3)`` in any accepted range -> ``(N, 3)`` in ``[0, 1]`` and the colour source."""
    rgb = np.asarray(raw.rgb, dtype=np.float64)
    if not np.isfinite(rgb).all():
        count = int((~np.isfinite(rgb)).sum())
        raise fail(label, f"{count} colour values are NaN or infinite; colours must be numbers in [0, 1] or 0-255")
    if (rgb < 0).any():
        raise fail(
            label,
            f"{int((rgb < 0).sum())} colour values are negative (minimum {rgb.min():g}); "
            "colours must be in [0, 1] or 0-255",
        )
    peak = float(rgb.max())
    if raw.color_scale is not None:
        if peak > raw.color_scale:
            raise fail(label, f"colour values up to {peak:g} exceed the {raw.color_scale:g} of their type")
        return rgb / raw.color_scale, raw.color_source
    if peak > 255:
        raise fail(
            label,
            f"colour values go up to {peak:g}, outside [0, 255]; colours must be in [0, 1] or 0-255 "
            "(are the columns after x, y, z really r, g, b?)",
        )
    if peak > 1:
        notes.append(f"colours in 0-255 (maximum {peak:g}): divided by 255")
        return rgb / 255.0, f"{raw.color_source} (0-255 rescaled)"
    return rgb, raw.color_source


def raw_from_array(array, label: object, source: str) -> RawCloud:
    """Split a numeric ``(N, C)`` array into xyz and colour columns.

    ``C == 3``: xyz. ``C == 6``: xyz + rgb, unless columns 4-6 are unit normals (then no colour). ``C >= 7``:
    the first six as for ``C == 6``, the rest ignored (noted), except ``(3, C)`` and ``(6, C)``, which are
    taken for transposed clouds and refused. Structured arrays go through their field names.
    """
    arr = np.asarray(array)
    if arr.dtype.names:
        return raw_from_fields({name: arr[name] for name in arr.dtype.names}, label, source)
    if arr.dtype.kind not in "iuf":
        raise fail(label, f"holds values of dtype {arr.dtype}, expected numbers: an (N, 3) or (N, 6) array")
    if arr.size == 0:
        raise fail(label, f"contains no points (shape {arr.shape})")
    transposed = arr.ndim == 2 and arr.shape[0] in (3, 6) and arr.shape[1] > 6
    if arr.ndim != 2 or (arr.shape[1] not in (3, 6) and arr.shape[1] < 7) or transposed:
        raise fail(label, f"has shape {arr.shape}: expected (N, 3) xyz or (N, 6) xyz + rgb{_shape_hint(arr.shape)}")
    raw = RawCloud(xyz=arr[:, :3], color_source=source, missing=f"{source} has no colour")
    if arr.shape[1] > 6:
        raw.notes.append(f"columns 7-{arr.shape[1]} ignored: only x, y, z, r, g, b (the first six) are used")
    if arr.shape[1] >= 6:
        extra = np.asarray(arr[:, 3:6], dtype=np.float64)
        unit = _normal_rows(extra)
        if unit is not None:
            raw.missing = f"{source} has normals, no colour"
            raw.notes.append("columns 4-6 are unit normals, not colours: ignored")
            if not unit.all():
                raw.notes.append(f"{int((~unit).sum())} of the {len(extra)} normals are not unit vectors (a mesh "
                                 "face without a normal, e.g. (1, 1, 1)): ignored with the rest")
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


def _normal_rows(extra: np.ndarray) -> np.ndarray | None:
    """``(N,)`` which rows of ``extra (N, 3)`` are unit vectors, when the columns are normals: a negative entry
    (colours are never negative) and at least :data:`_NORMAL_SHARE` of the rows unit vectors; None otherwise."""
    if not np.isfinite(extra).all() or not (extra < 0).any():
        return None
    unit = np.abs(np.linalg.norm(extra, axis=1) - 1.0) < _NORMAL_TOLERANCE
    return unit if unit.mean() >= _NORMAL_SHARE else None


def raw_from_fields(fields: dict[str, np.ndarray], label: object, source: str = "file") -> RawCloud:
    """Named 1-D columns (PLY properties, PCD fields, structured arrays) -> xyz and colour."""
    lower = {name.lower(): np.asarray(values) for name, values in fields.items()}
    if not all(axis in lower for axis in "xyz"):
        raise fail(label, f"has no x, y, z fields (fields found: {', '.join(fields) or 'none'})")
    for name in "xyz":
        if lower[name].ndim != 1 or lower[name].dtype.kind not in "iuf":
            raise fail(label, f"field {name!r} is not one number per point (dtype {lower[name].dtype})")
    raw = RawCloud(xyz=np.stack([lower[a].astype(np.float64) for a in "xyz"], axis=1), color_source=source)
    for names in COLOR_FIELDS:
        if all(n in lower for n in names):
            columns = [lower[n] for n in names]
            if any(c.ndim != 1 or c.dtype.kind not in "iuf" for c in columns):
                raise fail(label, f"colour fields {', '.join(names)} are not one number per point")
            raw.rgb = np.stack([c.astype(np.float64) for c in columns], axis=1)
            scale = _TYPED_COLOR_SCALE.get(columns[0].dtype.itemsize) if columns[0].dtype.kind == "u" else None
            if scale is not None:
                raw.color_scale = scale
                raw.color_source = f"{source} (0-{scale:g} rescaled)"
            break
    else:
        raw.missing = f"{source} has no colour"
    return raw


def from_array(array, *, source: str = "array", default_color=DEFAULT_COLOR, path=None) -> PointCloud:
    """Validate an array and wrap it as a :class:`PointCloud`.

    Args:
        array: ``(N, 3)`` xyz, ``(N, 6)`` xyz + rgb (rgb in ``[0, 1]`` or 0-255), or ``(N, C >= 7)`` whose first
            six columns are xyz + rgb (the rest is ignored and noted; ``(3, C)`` / ``(6, C)`` are refused as
            transposed). Six columns whose last three are unit vectors with a negative entry are taken as
            xyz + normals: the normals are dropped. A structured array with fields ``x, y, z`` (and
            ``red, green, blue`` or ``r, g, b``) works too.
        source: names the input in messages and in ``color_source`` (``"array"``, ``"array (0-255
            rescaled)"``, ``"default (array has no colour)"``).
        default_color: colour in ``[0, 1]`` for a cloud without one.
        path: recorded in the result and used instead of ``source`` in error messages.

    Returns:
        A :class:`PointCloud` with ``xyz (N, 3)`` and ``rgb (N, 3)`` float32.

    Raises:
        PointCloudError: empty, wrong shape, NaN / inf values, all points identical, colours out of range.
    """
    label = path if path is not None else source
    raw = raw_from_array(array, label, source)
    return finish_cloud(raw, label=label, path=Path(path) if path is not None else None, default_color=default_color,
                   source=source)
