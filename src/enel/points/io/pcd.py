"""PCL ``.pcd`` through ``pypcd4``: DATA ascii, binary and binary_compressed, with our checks and messages.

FIELDS x y z are required; colour comes from ``rgb`` (packed into a float or uint32: ``0x00RRGGBB``),
``rgba`` (uint32 ``0xAARRGGBB``) or separate ``r g b``. Points with NaN coordinates are PCL's invalid points
(organised clouds from depth sensors): they are dropped and counted in the notes.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from .cloud import COLOUR_FIELDS, RawCloud, describe_error, fail, raw_from_fields

_HEADER_FIX = ("expected PCL's header: FIELDS, SIZE, TYPE, COUNT, WIDTH, HEIGHT, POINTS, then DATA ascii, binary "
               "or binary_compressed")


def read_pcd(p: Path) -> RawCloud:
    """The points of a ``.pcd`` file: the header checked here, the data read by ``pypcd4``."""
    from pypcd4 import PointCloud as PcdFile

    data = p.read_bytes()
    lines, offset = _header_lines(p, data)
    meta = _metadata(p, lines)
    _check_body_size(p, meta, data[offset:])
    try:
        table = np.atleast_1d(PcdFile.from_fileobj(io.BytesIO(data)).pc_data)
    except Exception as exc:  # a corrupt compressed block, rows that do not match the fields, ...
        raise fail(p, f"could not read the PCD {meta.data.value} data ({describe_error(exc)}); the file looks "
                      "corrupt or truncated: export it again") from exc
    columns = {name: table[name] for name in table.dtype.names}
    fields = {k: v for k, v in columns.items() if k not in ("rgb", "rgba")}
    packed = columns.get("rgb", columns.get("rgba"))
    if packed is not None and not any(all(c in fields for c in group) for group in COLOUR_FIELDS):
        packed = _packed_bits(packed, ascii_text=meta.data.value == "ascii")
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


def _header_lines(p: Path, data: bytes) -> tuple[list[str], int]:
    """The header's lines up to and including DATA (comments dropped) and the offset of the first data byte."""
    lines: list[str] = []
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
        lines.append(line)
        if line.split()[0].upper() == "DATA":
            return lines, pos


def _metadata(p: Path, lines: list[str]):
    """``pypcd4.MetaData`` of the header, or a message naming the field that is wrong."""
    import pydantic
    from pypcd4 import MetaData
    from pypcd4.pypcd4 import PCD_TYPE_TO_NUMPY_TYPE

    try:
        meta = MetaData.parse_header(lines)
    except pydantic.ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]).upper()
        if where == "DATA":
            raise fail(p, f"PCD DATA mode {error.get('input')!r} is unknown; expected ascii, binary or "
                          "binary_compressed") from None
        raise fail(p, f"PCD header: {where or 'a line'} is missing or invalid ({error['msg']}); {_HEADER_FIX}") \
            from None
    if not len(meta.fields) == len(meta.size) == len(meta.type) == len(meta.count):
        raise fail(p, "PCD header: FIELDS, SIZE, TYPE and COUNT have different lengths")
    for name, kind, size in zip(meta.fields, meta.type, meta.size):
        if (kind, size) not in PCD_TYPE_TO_NUMPY_TYPE:
            raise fail(p, f"PCD field {name!r} has an unknown TYPE {kind} / SIZE {size}")
    return meta


def _check_body_size(p: Path, meta, body: bytes) -> None:
    """A binary body holds ``POINTS`` rows of the fields' bytes; an ascii body ``POINTS`` non-blank lines."""
    n = meta.points
    if meta.data.value == "binary":
        need = n * meta.build_dtype().itemsize
        if len(body) < need:
            raise fail(p, f"truncated: the header declares {n} points ({need:,} bytes) but {len(body):,} bytes follow")
    elif meta.data.value == "ascii":
        rows = sum(1 for line in body.splitlines() if line.strip())
        if rows < n:
            raise fail(p, f"truncated: the header declares {n} points but {rows} rows follow")
        if rows > n:
            raise fail(p, f"the header declares {n} points but {rows} rows follow")


def _packed_bits(packed: np.ndarray, ascii_text: bool) -> np.ndarray:
    """Packed colours ``(N,)`` -> ``(N,)`` uint32 ``0x??RRGGBB``.

    A float field holds the colour in its bits (``0x00RRGGBB`` is a float below 1e-37). In ascii files PCL
    >= 1.8 prints the uint32 itself, which reads back as a float of at least 1: that value is the colour.
    """
    if packed.dtype.kind != "f":
        return packed.astype(np.uint32)
    bits = np.ascontiguousarray(packed, dtype=np.float32).view(np.uint32).copy()
    if ascii_text:
        printed = np.isfinite(packed) & (packed >= 1)
        bits[printed] = packed[printed].astype(np.uint64).astype(np.uint32)
    return bits
