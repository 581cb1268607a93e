"""PCL ``.pcd``: a small parser, because neither plyfile nor trimesh reads it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .cloud import COLOUR_FIELDS, RawCloud, fail, raw_from_fields

_PCD_KINDS = {"F": "f", "I": "i", "U": "u"}


def read_pcd(p: Path) -> RawCloud:
    """PCL ``.pcd``, DATA ascii or binary (little-endian).

    FIELDS x y z are required; colour comes from ``rgb`` (packed into a float or uint32: ``0x00RRGGBB``),
    ``rgba`` (uint32 ``0xAARRGGBB``) or separate ``r g b``. Points with NaN coordinates are PCL's invalid
    points (organised clouds from depth sensors): they are dropped and counted in the notes.
    """
    data = p.read_bytes()
    header, offset = _pcd_header(p, data)
    names = header.get("FIELDS")
    if not names:
        raise fail(p, "PCD header has no FIELDS line")
    sizes = [int(v) for v in header.get("SIZE", [])]
    types = [t.upper() for t in header.get("TYPE", [])]
    counts = [int(v) for v in header.get("COUNT", ["1"] * len(names))]
    if not (len(sizes) == len(types) == len(counts) == len(names)):
        raise fail(p, "PCD header: FIELDS, SIZE, TYPE and COUNT have different lengths")
    if "POINTS" in header:
        n = int(header["POINTS"][0])
    else:
        n = int(header.get("WIDTH", ["0"])[0]) * int(header.get("HEIGHT", ["1"])[0])
    mode = (header.get("DATA") or ["?"])[0].lower()
    if mode == "binary_compressed":
        raise fail(
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
            raise fail(p, f"truncated: the header declares {n} points ({need:,} bytes) but {len(body):,} bytes follow")
        table = np.frombuffer(body, dtype=dtype, count=n)
        columns = {name: table[name] for name in dtype.names}
        for name in ("rgb", "rgba"):
            if name in columns:
                columns[name] = np.ascontiguousarray(columns[name]).view("<u4")
    elif mode == "ascii":
        columns = _pcd_ascii_columns(p, data[offset:], n, names, types, counts)
    else:
        raise fail(p, f"PCD DATA mode {mode!r} is unknown; expected ascii, binary or binary_compressed")
    fields = {k: v for k, v in columns.items() if k not in ("rgb", "rgba")}
    packed = columns.get("rgb", columns.get("rgba"))
    if packed is not None and not any(all(c in fields for c in group) for group in COLOUR_FIELDS):
        packed = np.asarray(packed).astype(np.uint32)
        fields["red"] = ((packed >> 16) & 255).astype(np.uint8)
        fields["green"] = ((packed >> 8) & 255).astype(np.uint8)
        fields["blue"] = (packed & 255).astype(np.uint8)
    raw = raw_from_fields(fields, p)
    invalid = np.isnan(raw.xyz).any(axis=1)
    if len(invalid) and invalid.all():
        raise fail(p, f"all {len(invalid)} points are invalid (NaN coordinates)")
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
            raise fail(p, "PCD header ends before its DATA line (not a PCD file, or truncated)")
        try:
            line = data[pos:end].decode("ascii").strip()
        except UnicodeDecodeError:
            raise fail(p, "PCD header holds non-ASCII bytes (not a PCD file?)") from None
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
            raise fail(p, f"PCD field {name!r} has an unknown TYPE {kind} / SIZE {size}")
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
        raise fail(p, f"truncated: the header declares {n} points but {len(lines)} rows follow")
    if len(lines) > n:
        raise fail(p, f"the header declares {n} points but {len(lines)} rows follow")
    bad = next((i for i, row in enumerate(lines) if len(row) != width), None)
    if bad is not None:
        raise fail(p, f"data row {bad + 1} has {len(lines[bad])} values, the header declares {width}")
    tokens = np.asarray(lines, dtype=str).reshape(n, width)
    columns: dict[str, np.ndarray] = {}
    start = 0
    for name, kind, count in zip(names, types, counts):
        col = tokens[:, start]
        start += count
        if name not in ("x", "y", "z", "rgb", "rgba", "r", "g", "b", "red", "green", "blue"):
            continue
        if count != 1:
            raise fail(p, f"PCD field {name!r} has COUNT {count}, expected 1")
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
