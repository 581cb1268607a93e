"""``.ply`` through ``plyfile``: vertices are the points; a PLY with faces is a mesh and goes to
:func:`~enel.points.io.mesh.read_mesh`. Writing is binary little-endian, float32 x y z + uchar colour."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .cloud import PointCloud, RawCloud, fail, raw_from_fields
from .mesh import read_mesh

def read_ply(p: Path, mesh_points: int, seed: int, default_colour) -> RawCloud:
    """A PLY with faces is a mesh (sampled by :func:`read_mesh`); otherwise its vertices are the points."""
    from plyfile import PlyData

    with open(p, "rb") as handle:
        if handle.read(4).rstrip(b"\r\n") != b"ply":
            raise fail(p, "is not a PLY file (it does not start with the line 'ply')")
    ply = PlyData.read(str(p))
    elements = [e.name for e in ply.elements]
    if "vertex" not in elements:
        raise fail(p, f"has no 'vertex' element (elements: {', '.join(elements) or 'none'})")
    if "face" in elements and ply["face"].count > 0:
        return read_mesh(p, mesh_points, seed, default_colour)
    vertex = ply["vertex"].data
    return raw_from_fields({name: vertex[name] for name in vertex.dtype.names}, p)


def write_ply(p: Path, cloud: PointCloud) -> None:
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
