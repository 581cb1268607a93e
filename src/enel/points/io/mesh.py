"""Meshes through ``trimesh`` (``.obj``, ``.off``, ``.stl``, ``.glb``, ``.gltf`` and PLY with faces): points
sampled on the surface (area-weighted, seeded), coloured from the texture, vertex, face or material colours."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .cloud import RawCloud, check_default_colour, fail, format_colour

def read_mesh(p: Path, n: int, seed: int, default_colour) -> RawCloud:
    """Load a mesh or scene with trimesh and sample ``n`` points on its surface (all parts together)."""
    import trimesh

    if p.suffix.lower() == ".gltf":
        try:
            json.loads(p.read_text(encoding="utf-8"))
        except ValueError:  # JSONDecodeError and UnicodeDecodeError
            raise fail(p, "is not a glTF file (a .gltf file is JSON; a binary glTF should be named .glb)") from None
    loaded = trimesh.load(str(p), process=False)
    if isinstance(loaded, trimesh.Scene):
        parts = list(loaded.dump())  # world transforms applied
    else:
        parts = [loaded]
    meshes = [g for g in parts if isinstance(g, trimesh.Trimesh) and len(g.faces) > 0]
    if not meshes:
        vertices = sum(len(getattr(g, "vertices", ())) for g in parts)
        if vertices:
            raise fail(
                p,
                f"is a mesh file with {vertices} vertices but no faces, so there is no surface to sample; to use "
                "the vertices as points, save them as a point cloud (.ply without faces, .xyz or .npy)",
            )
        raise fail(p, f"holds no geometry (an empty or invalid {p.suffix[1:].upper()} file)")
    raw = _sample_meshes(p, meshes, n, seed, default_colour)
    if len(meshes) > 1:
        raw.notes.append(f"{len(meshes)} meshes of the scene sampled together")
    return raw


def _sample_meshes(p: Path, meshes, n: int, seed: int, default_colour) -> RawCloud:
    """Area-weighted surface samples over all ``meshes``: ``(n, 3)`` points, each coloured by its own mesh."""
    import trimesh

    vertices, faces, starts = [], [], [0]
    offset = 0
    for mesh in meshes:
        v = np.asarray(mesh.vertices, dtype=np.float64)
        f = np.asarray(mesh.faces, dtype=np.int64)
        if not np.isfinite(v).all():
            raise fail(p, f"{int((~np.isfinite(v).all(axis=1)).sum())} mesh vertices have NaN or infinite coordinates")
        if f.min() < 0 or f.max() >= len(v):
            raise fail(p, "mesh faces refer to vertices that do not exist (corrupt file)")
        vertices.append(v)
        faces.append(f + offset)
        offset += len(v)
        starts.append(starts[-1] + len(f))
    combined = trimesh.Trimesh(
        vertices=np.concatenate(vertices), faces=np.concatenate(faces), process=False, validate=False
    )
    area = float(combined.area_faces.sum())
    if not np.isfinite(area) or area <= 0:
        raise fail(p, "the mesh surface has zero area (every face is degenerate), so no points can be sampled")
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
    raw = RawCloud(xyz=points, notes=[f"mesh sampled: {n} points (area-weighted, seed {seed})"])
    if not coloured.any():
        raw.missing = "file has no colour"
        return raw
    if not coloured.all():
        fill = check_default_colour(default_colour)
        rgb[~coloured] = fill
        raw.notes.append(
            f"{int((~coloured).sum())} points lie on parts without colour: filled with {format_colour(fill)}"
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
