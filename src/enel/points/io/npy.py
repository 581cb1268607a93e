"""``.npy`` and ``.npz`` point files (NumPy, never unpickled)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .cloud import RawCloud, fail, raw_from_array

_NPZ_KEYS = ("points", "xyz", "pos", "data")
_NPZ_COLOUR_KEYS = ("rgb", "colors", "colours", "color", "colour")


def read_numpy(p: Path) -> RawCloud:
    """``.npy`` or ``.npz``, told apart by their first bytes (``np.save`` / ``np.savez``), not by the name."""
    with open(p, "rb") as handle:
        magic = handle.read(6)
    if magic != b"\x93NUMPY" and not magic.startswith(b"PK"):
        raise fail(p, "is not a NumPy file (no .npy or .npz header); write it with np.save or np.savez")
    try:
        if magic.startswith(b"PK"):
            with np.load(p, allow_pickle=False) as archive:
                return _raw_from_npz(p, archive)
        return raw_from_array(np.load(p, allow_pickle=False), p, "file")
    except ValueError as exc:
        if "pickle" in str(exc):
            raise fail(
                p,
                "holds pickled Python objects, which are not loaded for safety; save a numeric (N, 3) or (N, 6) "
                "array with np.save",
            ) from None
        raise


def _raw_from_npz(p: Path, archive) -> RawCloud:
    """The single array of the archive, or the one named points / xyz / pos / data (+ a colour array)."""
    keys = list(archive.keys())
    if not keys:
        raise fail(p, "the .npz archive holds no arrays")
    if len(keys) == 1:
        key = keys[0]
    else:
        key = next((k for k in _NPZ_KEYS if k in keys), None)
        if key is None:
            raise fail(
                p,
                f"the .npz archive holds several arrays ({', '.join(keys)}) and none is named "
                f"{', '.join(_NPZ_KEYS)}; rename the point array to 'points'",
            )
    points = archive[key]
    colour_key = next((k for k in _NPZ_COLOUR_KEYS if k in keys and k != key), None)
    if colour_key is not None and points.ndim == 2 and points.shape[1] == 3:
        colours = archive[colour_key]
        if colours.ndim != 2 or colours.shape != points.shape:
            raise fail(p, f"array {colour_key!r} has shape {colours.shape}, expected {points.shape} like {key!r}")
        raw = raw_from_array(np.concatenate([points, colours], axis=1).astype(np.float64), p, "file")
        raw.notes.append(f"points from array {key!r}, colours from array {colour_key!r}")
        return raw
    raw = raw_from_array(points, p, "file")
    if len(keys) > 1:
        raw.notes.append(f"points from array {key!r} of {', '.join(keys)}")
    return raw
