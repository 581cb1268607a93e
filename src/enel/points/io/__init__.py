"""Point-cloud files in and out.

:func:`load_point_cloud` reads one file into a :class:`PointCloud`: ``xyz (N, 3)`` float32 and ``rgb (N, 3)``
float32 in ``[0, 1]``, plus where the colour came from and notes on what was done to the data. Point formats
are read as stored; meshes are sampled on their surface (area-weighted, seeded), carrying vertex, face or
texture colours. :func:`from_array` applies the same checks to an array, and :func:`save_point_cloud` writes
``.ply`` or ``.npy``.

One reader per format, each returning the raw columns it found (:class:`~enel.points.io.cloud.RawCloud`) for
the shared checks of :mod:`enel.points.io.cloud`: :mod:`.npy` (``.npy`` / ``.npz``, numpy), :mod:`.text`
(``.xyz`` / ``.txt`` / ``.pts``, numpy), :mod:`.ply` (``plyfile``), :mod:`.pcd` (``pypcd4``: ascii, binary and
binary_compressed) and :mod:`.mesh` (``trimesh``: meshes and ``.ply`` files with faces). This module picks
the reader by extension and turns any parser failure into one message.

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

from pathlib import Path

import numpy as np

from enel.errors import PointCloudError

from .cloud import DEFAULT_COLOUR, PointCloud, check_default_colour, describe_error, fail, finish_cloud, from_array
from .mesh import read_mesh
from .npy import read_numpy
from .pcd import read_pcd
from .ply import read_ply, write_ply
from .text import read_text

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

POINT_EXTENSIONS: tuple[str, ...] = (".npy", ".npz", ".ply", ".pcd", ".xyz", ".txt", ".pts")
MESH_EXTENSIONS: tuple[str, ...] = (".obj", ".off", ".stl", ".glb", ".gltf")
SUPPORTED_EXTENSIONS: tuple[str, ...] = POINT_EXTENSIONS + MESH_EXTENSIONS
SAVE_EXTENSIONS: tuple[str, ...] = (".ply", ".npy")

_POINT_READERS = {
    ".npy": read_numpy,
    ".npz": read_numpy,
    ".pcd": read_pcd,
    ".xyz": read_text,
    ".txt": read_text,
    ".pts": read_text,
}


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
    check_default_colour(default_colour)
    try:
        p = Path(path)
    except TypeError:
        raise PointCloudError(f"expected a file path, got {type(path).__name__}") from None
    ext = p.suffix.lower()
    if not p.exists():
        raise fail(p, "file not found")
    if p.is_dir():
        raise fail(p, "is a directory, not a point-cloud file")
    if ext not in SUPPORTED_EXTENSIONS:
        raise fail(
            p,
            f"unsupported extension {ext or '(none)'!r}; supported: {', '.join(SUPPORTED_EXTENSIONS)}",
        )
    size = p.stat().st_size
    if size > max_bytes:
        raise fail(
            p,
            f"file is {size:,} bytes, over the limit of {max_bytes:,} bytes; raise max_bytes if the file is "
            "meant to be this large",
        )
    if size == 0:
        raise fail(p, "file is empty (0 bytes)")
    try:
        if ext in MESH_EXTENSIONS:
            raw = read_mesh(p, mesh_points, seed, default_colour)
        elif ext == ".ply":
            raw = read_ply(p, mesh_points, seed, default_colour)
        else:
            raw = _POINT_READERS[ext](p)
    except PointCloudError:
        raise
    except MemoryError:
        raise fail(p, "not enough memory to read this file; lower mesh_points or load a smaller file") from None
    except OSError as exc:  # permissions, a missing .gltf buffer or .obj texture, ...
        raise fail(p, f"could not read this {ext[1:].upper()} file ({describe_error(exc)})") from exc
    except Exception as exc:  # any parser failure becomes a one-line message naming the file
        raise fail(
            p, f"could not read this {ext[1:].upper()} file, it looks corrupt or truncated ({describe_error(exc)})"
        ) from exc
    return finish_cloud(raw, label=p, path=p, default_colour=default_colour, source="file")


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
        raise fail(p, f"cannot save as {ext or '(no extension)'!r}; supported: {', '.join(SAVE_EXTENSIONS)}")
    if not isinstance(cloud, PointCloud):
        cloud = from_array(cloud)
    try:
        if ext == ".npy":
            with open(p, "wb") as handle:
                np.save(handle, cloud.as_array())
        else:
            write_ply(p, cloud)
    except OSError as exc:
        raise fail(p, f"could not write the file ({exc.strerror or exc})") from exc
    return p
