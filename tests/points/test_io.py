"""Tests for enel.points.io: every format reads back what was written, colour rules, and every bad input.

All files are written here, in ``tmp_path``; every random draw is seeded.
"""

from __future__ import annotations

import json
import re
import struct

import numpy as np
import pytest
import trimesh
from PIL import Image
from plyfile import PlyData, PlyElement

from enel.errors import PointCloudError
from enel.points.io import (
    DEFAULT_COLOR,
    SUPPORTED_EXTENSIONS,
    PointCloud,
    from_array,
    load_point_cloud,
    save_point_cloud,
)

N = 50
MESH_POINTS = 256


@pytest.fixture()
def xyz() -> np.ndarray:
    return np.random.default_rng(0).uniform(-1, 1, (N, 3)).astype(np.float32)


@pytest.fixture()
def rgb8() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (N, 3)).astype(np.uint8)


def _raises(path, *patterns: str):
    """Context: a PointCloudError whose message starts with the file name and matches every pattern."""

    class _Check:
        def __enter__(self):
            self._ctx = pytest.raises(PointCloudError)
            self.info = self._ctx.__enter__()
            return self.info

        def __exit__(self, *exc):
            handled = self._ctx.__exit__(*exc)
            message = str(self.info.value)
            assert message.startswith(str(path)), message
            for pattern in patterns:
                assert re.search(pattern, message), f"{pattern!r} not in {message!r}"
            assert "\n" not in message
            return handled

    return _Check()


# ----------------------------------------------------------------------------------------------------------
# Writers used by the tests
# ----------------------------------------------------------------------------------------------------------
def _write_ply(path, xyz, rgb=None, *, text=False, color_type="u1", faces=None):
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if rgb is not None:
        fields += [(c, color_type) for c in ("red", "green", "blue")]
    vertex = np.empty(len(xyz), dtype=fields)
    for i, axis in enumerate("xyz"):
        vertex[axis] = xyz[:, i]
    if rgb is not None:
        for i, c in enumerate(("red", "green", "blue")):
            vertex[c] = rgb[:, i]
    elements = [PlyElement.describe(vertex, "vertex")]
    if faces is not None:
        face = np.empty(len(faces), dtype=[("vertex_indices", "i4", (3,))])
        face["vertex_indices"] = faces
        elements.append(PlyElement.describe(face, "face"))
    PlyData(elements, text=text, byte_order="<").write(str(path))


def _pcd_header(fields, sizes, types, n, data):
    return (
        "# .PCD v0.7 - Point Cloud Data file format\nVERSION 0.7\n"
        f"FIELDS {' '.join(fields)}\nSIZE {' '.join(map(str, sizes))}\nTYPE {' '.join(types)}\n"
        f"COUNT {' '.join('1' for _ in fields)}\nWIDTH {n}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\n"
        f"POINTS {n}\nDATA {data}\n"
    ).encode("ascii")


def _packed(rgb8: np.ndarray) -> np.ndarray:
    """``(N, 3)`` uint8 -> ``(N,)`` uint32 ``0x00RRGGBB`` (PCL's packed rgb)."""
    c = rgb8.astype(np.uint32)
    return (c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]


def _box_face_colored(unmerge: bool) -> tuple[trimesh.Trimesh, np.ndarray]:
    """A 2 x 1 x 0.5 box whose 12 faces cycle through 4 colours; returns the mesh and (12, 3) uint8 colours."""
    box = trimesh.creation.box(extents=(2.0, 1.0, 0.5))
    if unmerge:
        box.unmerge_vertices()  # each face owns its corners, so exporters that store vertex colours keep them exact
    palette = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]], dtype=np.uint8)
    colors = palette[np.arange(len(box.faces)) % 4]
    box.visual.face_colors = np.hstack([colors, np.full((len(colors), 1), 255, np.uint8)])
    return box, colors


def _on_box_surface(points: np.ndarray, extents=(2.0, 1.0, 0.5), centre=(0.0, 0.0, 0.0)) -> bool:
    scaled = np.abs(points - np.asarray(centre)) / (np.asarray(extents) / 2)
    return bool(np.allclose(scaled.max(axis=1), 1.0, atol=1e-5))


def _export(mesh_or_scene, path):
    """Export with trimesh; a .gltf comes as several files (JSON + buffers), an .obj with its .mtl and image."""
    if path.suffix != ".gltf":
        mesh_or_scene.export(str(path))
        return path
    for name, blob in mesh_or_scene.export(file_type="gltf").items():
        (path.parent / (path.name if name.endswith(".gltf") else name)).write_bytes(blob)
    return path


# ----------------------------------------------------------------------------------------------------------
# Array formats
# ----------------------------------------------------------------------------------------------------------
def test_npy_xyz_rgb_reads_back_exactly(tmp_path, xyz, rgb8):
    rgb = rgb8 / 255.0
    path = tmp_path / "obj_8192.npy"
    np.save(path, np.hstack([xyz, rgb]).astype(np.float32))
    cloud = load_point_cloud(path)
    assert isinstance(cloud, PointCloud) and len(cloud) == N
    assert cloud.xyz.dtype == np.float32 and cloud.rgb.dtype == np.float32
    np.testing.assert_array_equal(cloud.xyz, xyz)
    np.testing.assert_array_equal(cloud.rgb, rgb.astype(np.float32))
    assert cloud.color_source == "file"
    assert cloud.path == path
    np.testing.assert_array_equal(cloud.as_array(), np.hstack([xyz, rgb]).astype(np.float32))


def test_npy_xyz_only_gets_default_color_reported(tmp_path, xyz):
    path = tmp_path / "plain.npy"
    np.save(path, xyz)
    cloud = load_point_cloud(path)
    np.testing.assert_array_equal(cloud.xyz, xyz)
    np.testing.assert_array_equal(cloud.rgb, np.zeros((N, 3), np.float32))
    assert DEFAULT_COLOR == (0.0, 0.0, 0.0)
    assert cloud.color_source == "default (file has no colour)"
    assert "no colour in file: filled with (0, 0, 0)" in cloud.notes
    grey = load_point_cloud(path, default_color=(0.5, 0.5, 0.5))
    np.testing.assert_array_equal(grey.rgb, np.full((N, 3), 0.5, np.float32))
    assert "no colour in file: filled with (0.5, 0.5, 0.5)" in grey.notes


def test_npy_colors_in_0_255_are_detected_and_rescaled(tmp_path, xyz, rgb8):
    path = tmp_path / "c255.npy"
    np.save(path, np.hstack([xyz, rgb8.astype(np.float32)]))
    cloud = load_point_cloud(path)
    np.testing.assert_allclose(cloud.rgb, rgb8 / 255.0, atol=1e-7)
    assert cloud.color_source == "file (0-255 rescaled)"
    assert any("divided by 255" in note for note in cloud.notes)


def test_npy_normals_are_not_taken_for_colors(tmp_path, xyz):
    normals = np.random.default_rng(2).normal(size=(N, 3))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    path = tmp_path / "airplane_0001.npy"
    np.save(path, np.hstack([xyz, normals]).astype(np.float32))
    cloud = load_point_cloud(path)
    np.testing.assert_array_equal(cloud.rgb, np.zeros((N, 3), np.float32))
    assert cloud.color_source == "default (file has normals, no colour)"


def test_npy_normals_with_placeholder_rows_are_still_normals(tmp_path):
    """ModelNet40's normal_resampled files write a face without a normal as (1, 1, 1); a few such rows among unit
    normals must not turn the normals into (negative) colours."""
    rng = np.random.default_rng(3)
    pts = rng.uniform(-1, 1, (1000, 3))
    normals = rng.normal(size=(1000, 3))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    normals[[7, 300, 301, 999]] = 1.0
    path = tmp_path / "glass_box_0160.npy"
    np.save(path, np.hstack([pts, normals]).astype(np.float32))
    cloud = load_point_cloud(path)
    np.testing.assert_array_equal(cloud.rgb, np.zeros((1000, 3), np.float32))
    assert cloud.color_source == "default (file has normals, no colour)"
    assert any("4 of the 1000 normals are not unit vectors" in note for note in cloud.notes)

    normals[:20] = rng.uniform(-1, 1, (20, 3)) * 3  # 2 % of the rows not unit: not normals, and negative colours
    np.save(path, np.hstack([pts, normals]).astype(np.float32))
    with pytest.raises(PointCloudError, match="negative"):
        load_point_cloud(path)


def test_npz_single_array_named_key_and_separate_color(tmp_path, xyz, rgb8):
    single = tmp_path / "single.npz"
    np.savez(single, arr_0=np.hstack([xyz, rgb8 / 255.0]))
    np.testing.assert_array_equal(load_point_cloud(single).xyz, xyz)

    named = tmp_path / "named.npz"
    np.savez(named, labels=np.arange(N), xyz=xyz)
    cloud = load_point_cloud(named)
    np.testing.assert_array_equal(cloud.xyz, xyz)
    assert any("'xyz'" in note for note in cloud.notes)

    split = tmp_path / "split.npz"
    np.savez(split, points=xyz, rgb=rgb8)
    cloud = load_point_cloud(split)
    np.testing.assert_array_equal(cloud.xyz, xyz)
    np.testing.assert_allclose(cloud.rgb, rgb8 / 255.0, atol=1e-7)


# ----------------------------------------------------------------------------------------------------------
# PLY point clouds
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text", [True, False], ids=["ascii", "binary"])
def test_ply_points_with_uchar_color(tmp_path, xyz, rgb8, text):
    path = tmp_path / "cloud.ply"
    _write_ply(path, xyz, rgb8, text=text)
    cloud = load_point_cloud(path)
    np.testing.assert_array_equal(cloud.xyz, xyz)
    np.testing.assert_array_equal(cloud.rgb, (rgb8 / 255.0).astype(np.float32))
    assert cloud.color_source == "file (0-255 rescaled)"


@pytest.mark.parametrize("text", [True, False], ids=["ascii", "binary"])
def test_ply_points_without_color(tmp_path, xyz, text):
    path = tmp_path / "plain.ply"
    _write_ply(path, xyz, text=text)
    cloud = load_point_cloud(path, default_color=(1.0, 1.0, 1.0))
    np.testing.assert_array_equal(cloud.xyz, xyz)
    np.testing.assert_array_equal(cloud.rgb, np.ones((N, 3), np.float32))
    assert cloud.color_source.startswith("default")


def test_ply_uchar_scale_comes_from_the_type_not_the_values(tmp_path, xyz):
    # 8-bit colours that happen to be all 0 or 1 are still 0-255 values: 1 means 1/255, not full intensity
    path = tmp_path / "dark.ply"
    _write_ply(path, xyz, np.random.default_rng(3).integers(0, 2, (N, 3)).astype(np.uint8))
    cloud = load_point_cloud(path)
    assert cloud.rgb.max() == pytest.approx(1 / 255)


def test_ply_float_and_ushort_colors(tmp_path, xyz, rgb8):
    floats = tmp_path / "float.ply"
    _write_ply(floats, xyz, (rgb8 / 255.0).astype(np.float32), color_type="<f4")
    cloud = load_point_cloud(floats)
    np.testing.assert_array_equal(cloud.rgb, (rgb8 / 255.0).astype(np.float32))
    assert cloud.color_source == "file"

    ushort = tmp_path / "ushort.ply"
    rgb16 = rgb8.astype(np.uint16) * 257
    _write_ply(ushort, xyz, rgb16, color_type="<u2")
    cloud = load_point_cloud(ushort)
    np.testing.assert_allclose(cloud.rgb, rgb8 / 255.0, atol=1e-6)
    assert cloud.color_source == "file (0-65535 rescaled)"


# ----------------------------------------------------------------------------------------------------------
# PCD
# ----------------------------------------------------------------------------------------------------------
def test_pcd_binary_packed_float_rgb(tmp_path, xyz, rgb8):
    table = np.empty(N, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<f4")])
    for i, axis in enumerate("xyz"):
        table[axis] = xyz[:, i]
    table["rgb"] = _packed(rgb8).view(np.float32)
    path = tmp_path / "binary.pcd"
    header = _pcd_header(["x", "y", "z", "rgb"], [4, 4, 4, 4], ["F", "F", "F", "F"], N, "binary")
    path.write_bytes(header + table.tobytes())
    cloud = load_point_cloud(path)
    np.testing.assert_array_equal(cloud.xyz, xyz)
    np.testing.assert_array_equal(cloud.rgb, (rgb8 / 255.0).astype(np.float32))
    assert cloud.color_source == "file (0-255 rescaled)"


def test_pcd_binary_rgba_uint_and_padding_field(tmp_path, xyz, rgb8):
    table = np.empty(N, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("_", "<f4"), ("rgba", "<u4")])
    for i, axis in enumerate("xyz"):
        table[axis] = xyz[:, i]
    table["_"] = 0
    table["rgba"] = _packed(rgb8) | np.uint32(0x80 << 24)  # alpha in the top byte is ignored
    path = tmp_path / "rgba.pcd"
    header = _pcd_header(["x", "y", "z", "_", "rgba"], [4, 4, 4, 4, 4], ["F", "F", "F", "F", "U"], N, "binary")
    path.write_bytes(header + table.tobytes())
    cloud = load_point_cloud(path)
    np.testing.assert_array_equal(cloud.xyz, xyz)
    np.testing.assert_array_equal(cloud.rgb, (rgb8 / 255.0).astype(np.float32))


def test_pcd_binary_separate_uchar_rgb(tmp_path, xyz, rgb8):
    table = np.empty(N, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("r", "u1"), ("g", "u1"), ("b", "u1")])
    for i, axis in enumerate("xyz"):
        table[axis] = xyz[:, i]
    for i, c in enumerate("rgb"):
        table[c] = rgb8[:, i]
    path = tmp_path / "sep.pcd"
    fields, sizes, types = ["x", "y", "z", "r", "g", "b"], [4, 4, 4, 1, 1, 1], ["F", "F", "F", "U", "U", "U"]
    header = _pcd_header(fields, sizes, types, N, "binary")
    path.write_bytes(header + table.tobytes())
    cloud = load_point_cloud(path)
    np.testing.assert_array_equal(cloud.rgb, (rgb8 / 255.0).astype(np.float32))


@pytest.mark.parametrize("style", ["float", "integer"])
def test_pcd_ascii_packed_rgb_both_pcl_styles(tmp_path, xyz, rgb8, style):
    packed = _packed(rgb8)
    if style == "float":  # older PCL prints the float whose bits hold the colour
        tokens = [repr(float(v)) for v in packed.view(np.float32)]
    else:  # PCL >= 1.8 prints the uint32
        tokens = [str(int(v)) for v in packed]
    rows = "".join(f"{x!r} {y!r} {z!r} {c}\n" for (x, y, z), c in zip(xyz.tolist(), tokens))
    path = tmp_path / "ascii.pcd"
    header = _pcd_header(["x", "y", "z", "rgb"], [4, 4, 4, 4], ["F", "F", "F", "F"], N, "ascii")
    path.write_bytes(header + rows.encode())
    cloud = load_point_cloud(path)
    np.testing.assert_array_equal(cloud.xyz, xyz)
    np.testing.assert_array_equal(cloud.rgb, (rgb8 / 255.0).astype(np.float32))


def test_pcd_ascii_without_color_drops_nan_points(tmp_path, xyz):
    rows = [f"{x!r} {y!r} {z!r}" for x, y, z in xyz.tolist()]
    rows[3] = "nan nan nan"  # PCL's invalid point (organised clouds)
    path = tmp_path / "nan.pcd"
    header = _pcd_header(["x", "y", "z"], [4, 4, 4], ["F", "F", "F"], N, "ascii")
    path.write_bytes(header + ("\n".join(rows) + "\n").encode())
    cloud = load_point_cloud(path)
    np.testing.assert_array_equal(cloud.xyz, np.delete(xyz, 3, axis=0))
    assert cloud.color_source.startswith("default")
    assert any("1 invalid points" in note for note in cloud.notes)


# ----------------------------------------------------------------------------------------------------------
# Text formats
# ----------------------------------------------------------------------------------------------------------
def test_xyz_whitespace_three_columns(tmp_path, xyz):
    path = tmp_path / "cloud.xyz"
    path.write_text("".join(f"{x!r}\t{y!r}  {z!r}\n" for x, y, z in xyz.tolist()))
    cloud = load_point_cloud(path)
    np.testing.assert_array_equal(cloud.xyz, xyz)
    assert cloud.color_source == "default (file has no colour)"


def test_txt_comma_separated_with_header_and_0_255_color(tmp_path, xyz, rgb8):
    lines = ["x,y,z,r,g,b", "# exported by a scanner"]
    lines += [",".join([repr(v) for v in p] + [str(int(c)) for c in col]) for p, col in zip(xyz.tolist(), rgb8)]
    path = tmp_path / "cloud.txt"
    path.write_text("\n".join(lines) + "\n")
    cloud = load_point_cloud(path)
    np.testing.assert_array_equal(cloud.xyz, xyz)
    np.testing.assert_allclose(cloud.rgb, rgb8 / 255.0, atol=1e-7)
    assert cloud.color_source == "file (0-255 rescaled)"
    assert "1 header line(s) skipped" in cloud.notes


def test_txt_modelnet_style_normals(tmp_path, xyz):
    normals = np.tile([0.0, -1.0, 0.0], (N, 1))
    path = tmp_path / "chair_0001.txt"
    path.write_text("".join(",".join(f"{v:.6f}" for v in row) + "\n" for row in np.hstack([xyz, normals])))
    cloud = load_point_cloud(path)
    np.testing.assert_allclose(cloud.xyz, xyz, atol=1e-6)
    assert cloud.color_source == "default (file has normals, no colour)"


def test_pts_leica_count_line_and_intensity(tmp_path, xyz, rgb8):
    lines = [str(N)] + [
        " ".join([repr(v) for v in p] + ["-1200"] + [str(int(c)) for c in col]) for p, col in zip(xyz.tolist(), rgb8)
    ]
    path = tmp_path / "scan.pts"
    path.write_text("\n".join(lines) + "\n")
    cloud = load_point_cloud(path)
    np.testing.assert_array_equal(cloud.xyz, xyz)
    np.testing.assert_allclose(cloud.rgb, rgb8 / 255.0, atol=1e-7)
    assert any("point count" in note for note in cloud.notes)
    assert any("intensity" in note for note in cloud.notes)


# ----------------------------------------------------------------------------------------------------------
# Meshes
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ext", [".obj", ".glb", ".gltf", ".ply"])
def test_mesh_face_colors_carry_over(tmp_path, ext):
    # .ply keeps face colours; OBJ / glTF store vertex colours, exact on an unmerged box
    box, colors = _box_face_colored(unmerge=ext != ".ply")
    path = _export(box, tmp_path / f"box{ext}")
    cloud = load_point_cloud(path, mesh_points=MESH_POINTS, seed=3)
    assert len(cloud) == MESH_POINTS
    assert _on_box_surface(cloud.xyz)
    assert cloud.color_source == ("mesh face colours" if ext == ".ply" else "mesh vertex colours")
    # the colour of each point is the colour of the face it lies on: recover the face from the samples
    _, faces, _ = trimesh.sample.sample_surface(box, MESH_POINTS, seed=3, return_barycentric=True)
    np.testing.assert_allclose(cloud.rgb, colors[faces] / 255.0, atol=1e-6)
    assert f"mesh sampled: {MESH_POINTS} points (area-weighted, seed 3)" in cloud.notes


def test_mesh_vertex_colors_are_interpolated_barycentrically(tmp_path):
    box = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    # colour = position + 0.5 at the corners (0 or 255 per channel); a linear function interpolates exactly
    corner = ((box.vertices + 0.5) * 255).round().astype(np.uint8)
    box.visual.vertex_colors = np.hstack([corner, np.full((8, 1), 255, np.uint8)])
    path = _export(box, tmp_path / "vc.obj")
    cloud = load_point_cloud(path, mesh_points=MESH_POINTS)
    assert cloud.color_source == "mesh vertex colours"
    np.testing.assert_allclose(cloud.rgb, cloud.xyz + 0.5, atol=1e-5)
    assert len(np.unique(cloud.rgb.round(3), axis=0)) > MESH_POINTS // 2  # interpolated, not per-corner


def _textured_quad(material) -> trimesh.Trimesh:
    """The unit square in z = 0 with uv = (x, y); the 2 x 2 texture makes red = u and green = v (bilinear)."""
    vertices = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], dtype=np.float64)
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    visual = trimesh.visual.TextureVisuals(uv=vertices[:, :2].copy(), material=material)
    return trimesh.Trimesh(vertices, faces, visual=visual, process=False)


def _gradient_image() -> Image.Image:
    pixels = np.zeros((2, 2, 3), np.uint8)
    pixels[:, 1, 0] = 255  # right column red (u = 1)
    pixels[0, :, 1] = 255  # top row green (v = 1)
    return Image.fromarray(pixels)


@pytest.mark.parametrize("ext", [".obj", ".glb"])
def test_mesh_texture_is_sampled_at_interpolated_uv(tmp_path, ext):
    if ext == ".obj":
        material = trimesh.visual.material.SimpleMaterial(image=_gradient_image())
    else:
        material = trimesh.visual.material.PBRMaterial(baseColorTexture=_gradient_image())
    path = _export(_textured_quad(material), tmp_path / f"quad{ext}")
    cloud = load_point_cloud(path, mesh_points=MESH_POINTS)
    assert cloud.color_source == "mesh texture"
    np.testing.assert_allclose(cloud.xyz[:, 2], 0.0, atol=1e-6)
    np.testing.assert_allclose(cloud.rgb[:, 0], cloud.xyz[:, 0], atol=1 / 255)
    np.testing.assert_allclose(cloud.rgb[:, 1], cloud.xyz[:, 1], atol=1 / 255)
    np.testing.assert_array_equal(cloud.rgb[:, 2], 0.0)


@pytest.mark.parametrize("ext", [".obj", ".off", ".stl"])
def test_mesh_without_color_is_sampled_and_filled(tmp_path, ext):
    box = trimesh.creation.box(extents=(2.0, 1.0, 0.5))
    path = _export(box, tmp_path / f"plain{ext}")
    cloud = load_point_cloud(path, mesh_points=MESH_POINTS)
    assert len(cloud) == MESH_POINTS
    assert _on_box_surface(cloud.xyz)
    assert cloud.color_source == "default (file has no colour)"
    np.testing.assert_array_equal(cloud.rgb, 0.0)


def test_mesh_sampling_is_seeded(tmp_path):
    path = _export(trimesh.creation.box(extents=(2.0, 1.0, 0.5)), tmp_path / "box.stl")
    a = load_point_cloud(path, mesh_points=MESH_POINTS, seed=11)
    b = load_point_cloud(path, mesh_points=MESH_POINTS, seed=11)
    c = load_point_cloud(path, mesh_points=MESH_POINTS, seed=12)
    np.testing.assert_array_equal(a.xyz, b.xyz)
    assert not np.allclose(a.xyz, c.xyz)
    assert len(load_point_cloud(path, mesh_points=1000).xyz) == 1000


def test_glb_scene_of_two_meshes_keeps_transforms_and_colors(tmp_path):
    box = trimesh.creation.box(extents=(2.0, 1.0, 0.5))
    box.visual.face_colors = [255, 0, 0, 255]
    cylinder = trimesh.creation.cylinder(radius=0.5, height=1.0, sections=16)
    cylinder.visual.face_colors = [0, 0, 255, 255]
    scene = trimesh.Scene()
    scene.add_geometry(box, node_name="box")
    shift = trimesh.transformations.translation_matrix([4.0, 0.0, 0.0])
    scene.add_geometry(cylinder, node_name="cylinder", transform=shift)
    path = _export(scene, tmp_path / "scene.glb")

    cloud = load_point_cloud(path, mesh_points=1000)
    assert len(cloud) == 1000
    red = np.all(cloud.rgb == [1, 0, 0], axis=1)
    blue = np.all(cloud.rgb == [0, 0, 1], axis=1)
    assert (red | blue).all()
    assert _on_box_surface(cloud.xyz[red])
    placed = cylinder.copy()
    placed.apply_transform(shift)
    _, distance, _ = trimesh.proximity.closest_point_naive(placed, cloud.xyz[blue].astype(np.float64))
    assert distance.max() < 1e-5
    expected = box.area / (box.area + cylinder.area)
    assert abs(red.mean() - expected) < 0.06  # area-weighted across the parts
    assert any("2 meshes" in note for note in cloud.notes)


def test_scene_parts_without_color_get_default(tmp_path):
    box = trimesh.creation.box(extents=(2.0, 1.0, 0.5))
    box.visual.face_colors = [255, 0, 0, 255]
    plain = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    scene = trimesh.Scene()
    scene.add_geometry(box, node_name="red")
    scene.add_geometry(plain, node_name="plain", transform=trimesh.transformations.translation_matrix([5, 0, 0]))
    cloud = load_point_cloud(_export(scene, tmp_path / "mixed.glb"), mesh_points=400, default_color=(0, 1, 0))
    far = cloud.xyz[:, 0] > 3
    assert far.any() and (~far).any()
    np.testing.assert_array_equal(cloud.rgb[far], np.tile([0, 1, 0], (far.sum(), 1)))
    np.testing.assert_array_equal(cloud.rgb[~far], np.tile([1, 0, 0], ((~far).sum(), 1)))
    assert any("parts without colour" in note for note in cloud.notes)


# ----------------------------------------------------------------------------------------------------------
# Saving
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ext", [".ply", ".npy"])
def test_save_then_load_round_trip(tmp_path, xyz, rgb8, ext):
    cloud = from_array(np.hstack([xyz, rgb8 / 255.0]))
    written = save_point_cloud(tmp_path / f"out{ext}", cloud)
    assert written == tmp_path / f"out{ext}"
    back = load_point_cloud(written)
    np.testing.assert_array_equal(back.xyz, cloud.xyz)
    np.testing.assert_allclose(back.rgb, cloud.rgb, atol=1e-7)


def test_saved_ply_is_binary_little_endian_float_xyz_uchar_rgb(tmp_path, xyz):
    path = save_point_cloud(tmp_path / "out.ply", np.hstack([xyz, np.full((N, 3), 0.5)]))
    ply = PlyData.read(str(path))
    assert not ply.text and ply.byte_order == "<"
    props = {p.name: p.val_dtype for p in ply["vertex"].properties}
    assert props == {"x": "f4", "y": "f4", "z": "f4", "red": "u1", "green": "u1", "blue": "u1"}
    np.testing.assert_array_equal(ply["vertex"]["red"], 128)


def test_saved_npy_is_n_by_6_float32(tmp_path, xyz):
    path = save_point_cloud(tmp_path / "out.npy", xyz)
    arr = np.load(path)
    assert arr.shape == (N, 6) and arr.dtype == np.float32
    np.testing.assert_array_equal(arr[:, :3], xyz)
    np.testing.assert_array_equal(arr[:, 3:], 0.0)


def test_save_rejects_other_extensions_and_unwritable_paths(tmp_path, xyz):
    with _raises(tmp_path / "out.pcd", r"cannot save as '\.pcd'", r"\.ply, \.npy"):
        save_point_cloud(tmp_path / "out.pcd", xyz)
    missing_dir = tmp_path / "nope" / "out.ply"
    with _raises(missing_dir, "could not write"):
        save_point_cloud(missing_dir, xyz)


# ----------------------------------------------------------------------------------------------------------
# from_array
# ----------------------------------------------------------------------------------------------------------
def test_from_array_shapes_and_sources(xyz, rgb8):
    cloud = from_array(xyz)
    assert cloud.color_source == "default (array has no colour)"
    assert cloud.path is None
    cloud = from_array(np.hstack([xyz, rgb8]), source="upload")
    assert cloud.color_source == "upload (0-255 rescaled)"
    wide = np.hstack([xyz, rgb8 / 255.0, np.ones((N, 2))])
    cloud = from_array(wide)
    np.testing.assert_allclose(cloud.rgb, rgb8 / 255.0, atol=1e-7)
    assert any("columns 7-8 ignored" in note for note in cloud.notes)


def test_from_array_structured(xyz, rgb8):
    table = np.empty(N, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    for i, axis in enumerate("xyz"):
        table[axis] = xyz[:, i]
    for i, c in enumerate(("red", "green", "blue")):
        table[c] = rgb8[:, i]
    cloud = from_array(table)
    np.testing.assert_array_equal(cloud.xyz, xyz)
    np.testing.assert_array_equal(cloud.rgb, (rgb8 / 255.0).astype(np.float32))


@pytest.mark.parametrize(
    ("array", "pattern"),
    [
        (np.zeros((0, 3)), "contains no points"),
        (np.zeros((5, 4)), r"has shape \(5, 4\)"),
        (np.zeros((5, 2)), r"has shape \(5, 2\)"),
        (np.zeros(6), r"has shape \(6,\)"),
        (np.zeros((2, 5, 3)), "batch of clouds"),
        (np.zeros((3, 100)), "transposed"),
        (np.ones((5, 3)), "all 5 points are identical"),
        (np.array([["a", "b", "c"]]), "expected numbers"),
    ],
)
def test_from_array_rejects(array, pattern):
    with _raises("array", pattern):
        from_array(array)


def test_from_array_error_names_the_path_when_given():
    with _raises("some/cloud.npy", "contains no points"):
        from_array(np.zeros((0, 3)), path="some/cloud.npy")


# ----------------------------------------------------------------------------------------------------------
# Bad input: every case raises PointCloudError naming the file
# ----------------------------------------------------------------------------------------------------------
def test_missing_file(tmp_path):
    with _raises(tmp_path / "absent.ply", "file not found"):
        load_point_cloud(tmp_path / "absent.ply")


def test_directory_instead_of_file(tmp_path):
    folder = tmp_path / "folder.ply"
    folder.mkdir()
    with _raises(folder, "is a directory"):
        load_point_cloud(folder)


def test_unknown_extension_lists_the_supported_ones(tmp_path):
    path = tmp_path / "cloud.las"
    path.write_bytes(b"LASF")
    with _raises(path, r"unsupported extension '\.las'", *[re.escape(e) for e in SUPPORTED_EXTENSIONS]):
        load_point_cloud(path)


def test_file_over_the_size_limit(tmp_path, xyz):
    path = tmp_path / "big.npy"
    np.save(path, xyz)
    size = path.stat().st_size
    with _raises(path, f"{size:,} bytes", "limit of 100 bytes", "max_bytes"):
        load_point_cloud(path, max_bytes=100)
    assert len(load_point_cloud(path, max_bytes=size)) == N


@pytest.mark.parametrize(
    ("name", "content", "pattern"),
    [
        ("zero.ply", b"", r"file is empty \(0 bytes\)"),
        ("header_only.xyz", b"x y z\n", "contains no points"),
        ("none.pcd", _pcd_header(["x", "y", "z"], [4, 4, 4], ["F", "F", "F"], 0, "ascii"), "contains no points"),
        ("none.ply", None, "contains no points"),
        ("none.npy", None, "contains no points"),
    ],
)
def test_empty_cloud(tmp_path, name, content, pattern):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    elif name.endswith(".ply"):
        _write_ply(path, np.zeros((0, 3), np.float32))
    else:
        np.save(path, np.zeros((0, 3), np.float32))
    with _raises(path, pattern):
        load_point_cloud(path)


def test_nan_and_inf_are_counted(tmp_path, xyz):
    bad = xyz.copy()
    bad[0, 0] = np.nan
    bad[1, :] = np.nan
    bad[2, 2] = np.inf
    path = tmp_path / "nan.npy"
    np.save(path, bad)
    with _raises(path, "3 of 50 points have NaN or infinite coordinates", "4 NaN and 1 inf"):
        load_point_cloud(path)
    text = tmp_path / "nan.xyz"
    text.write_text("0 0 0\n1 1 1\nnan 2 2\n")
    with _raises(text, "1 of 3 points"):
        load_point_cloud(text)


def test_nan_color(tmp_path, xyz):
    arr = np.hstack([xyz, np.full((N, 3), 0.5)])
    arr[4, 4] = np.nan
    path = tmp_path / "nancolour.npy"
    np.save(path, arr)
    with _raises(path, "1 colour values are NaN"):
        load_point_cloud(path)


@pytest.mark.parametrize(
    ("shape", "pattern"),
    [((N, 4), r"has shape \(50, 4\)"), ((N, 2), r"has shape \(50, 2\)"), ((N,), r"has shape \(50,\)")],
)
def test_wrong_column_count_npy(tmp_path, shape, pattern):
    path = tmp_path / "wrong.npy"
    np.save(path, np.random.default_rng(0).random(shape))
    with _raises(path, pattern, r"expected \(N, 3\)"):
        load_point_cloud(path)


def test_wrong_column_count_text(tmp_path):
    four = tmp_path / "four.xyz"
    four.write_text("0 0 0 1\n1 1 1 1\n")
    with _raises(four, r"has shape \(2, 4\)"):
        load_point_cloud(four)
    ragged = tmp_path / "ragged.txt"
    ragged.write_text("0 0 0\n1 1 1\n2 2\n")
    with _raises(ragged, "different numbers of columns", "line 3"):
        load_point_cloud(ragged)
    middle = tmp_path / "middle.txt"
    middle.write_text("0 0 0\n1 1 1\nhello world\n")
    with _raises(middle, "line 3 is not a row of numbers"):
        load_point_cloud(middle)


def test_all_points_identical(tmp_path):
    path = tmp_path / "same.ply"
    _write_ply(path, np.tile(np.float32([1, 2, 3]), (10, 1)))
    with _raises(path, r"all 10 points are identical at \(1, 2, 3\)"):
        load_point_cloud(path)
    single = tmp_path / "single.xyz"
    single.write_text("1 2 3\n")
    with _raises(single, "single point"):
        load_point_cloud(single)


@pytest.mark.parametrize(
    ("color", "pattern"),
    [(-0.5, "colour values are negative"), (300.0, r"up to 300, outside \[0, 255\]")],
)
def test_color_out_of_range(tmp_path, xyz, color, pattern):
    arr = np.hstack([xyz, np.full((N, 3), 0.5)])
    arr[7, 3] = color
    path = tmp_path / "colour.npy"
    np.save(path, arr)
    with _raises(path, pattern):
        load_point_cloud(path)


def test_truncated_binary_ply(tmp_path, xyz, rgb8):
    path = tmp_path / "cut.ply"
    _write_ply(path, xyz, rgb8)
    path.write_bytes(path.read_bytes()[:-40])
    with _raises(path, "could not read this PLY file", "corrupt or truncated"):
        load_point_cloud(path)


def test_npy_with_bad_header_or_garbage_or_pickle(tmp_path):
    bad_header = tmp_path / "bad.npy"
    bad_header.write_bytes(b"\x93NUMPY\x01\x00garbage garbage garbage")
    with _raises(bad_header, "could not read this NPY file"):
        load_point_cloud(bad_header)
    garbage = tmp_path / "garbage.npy"
    garbage.write_bytes(np.random.default_rng(0).bytes(300))
    with _raises(garbage, "not a NumPy file"):
        load_point_cloud(garbage)
    pickled = tmp_path / "objects.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with _raises(pickled, "pickled Python objects", "np.save"):
        load_point_cloud(pickled)


def test_npz_with_unknown_keys_lists_them(tmp_path, xyz):
    path = tmp_path / "many.npz"
    np.savez(path, verts=xyz, other=xyz)
    with _raises(path, "verts, other", "points"):
        load_point_cloud(path)


@pytest.mark.parametrize(
    ("ext", "pattern"),
    [
        (".glb", "could not read this GLB file"),
        (".gltf", "is not a glTF file"),
        (".stl", "holds no geometry"),
        (".obj", "holds no geometry"),
        (".off", "could not read this OFF file"),
        (".ply", "is not a PLY file"),
        (".npz", "is not a NumPy file"),
        (".pcd", "PCD header"),
    ],
)
def test_garbage_bytes(tmp_path, ext, pattern):
    path = tmp_path / f"garbage{ext}"
    path.write_bytes(np.random.default_rng(1).bytes(600))
    with _raises(path, pattern):
        load_point_cloud(path, mesh_points=MESH_POINTS)


def test_truncated_glb(tmp_path):
    box, _ = _box_face_colored(unmerge=False)
    path = _export(box, tmp_path / "cut.glb")
    path.write_bytes(path.read_bytes()[:200])
    with _raises(path, "GLB"):
        load_point_cloud(path, mesh_points=MESH_POINTS)


def test_gltf_with_missing_buffer(tmp_path):
    path = _export(trimesh.creation.box(), tmp_path / "box.gltf")
    buffers = [b["uri"] for b in json.loads(path.read_text())["buffers"]]
    (tmp_path / buffers[0]).unlink()
    with _raises(path, "could not read this GLTF file"):
        load_point_cloud(path, mesh_points=MESH_POINTS)


def test_mesh_without_faces(tmp_path):
    path = tmp_path / "verts.obj"
    path.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\n")
    with _raises(path, "4 vertices but no faces", "no surface to sample", r"\.xyz or \.npy"):
        load_point_cloud(path)


def test_mesh_with_zero_area(tmp_path):
    path = tmp_path / "flat.obj"
    path.write_text("v 0 0 0\nv 1 0 0\nv 2 0 0\nf 1 2 3\n")
    with _raises(path, "zero area"):
        load_point_cloud(path)


def test_pcd_binary_compressed(tmp_path, xyz, rgb8):
    """PCL's layout, written here: uint32 compressed and raw sizes, then LZF over the fields one after another."""
    import lzf

    columns = b"".join([np.ascontiguousarray(xyz[:, i]).tobytes() for i in range(3)]
                       + [_packed(rgb8).view(np.float32).tobytes()])
    block = lzf.compress(columns, 2 * len(columns))  # random floats do not shrink: allow a larger block
    header = _pcd_header(["x", "y", "z", "rgb"], [4, 4, 4, 4], ["F", "F", "F", "F"], N, "binary_compressed")
    path = tmp_path / "packed.pcd"
    path.write_bytes(header + struct.pack("<II", len(block), len(columns)) + block)
    cloud = load_point_cloud(path)
    np.testing.assert_array_equal(cloud.xyz, xyz)
    np.testing.assert_array_equal(cloud.rgb, (rgb8 / 255.0).astype(np.float32))
    corrupt = tmp_path / "corrupt.pcd"
    corrupt.write_bytes(header + struct.pack("<II", len(block), len(columns)) + b"\xff" * len(block))
    with _raises(corrupt, "could not read the PCD binary_compressed data", "corrupt or truncated"):
        load_point_cloud(corrupt)


def test_pcd_header_problems_name_the_field(tmp_path):
    unknown = tmp_path / "mode.pcd"
    unknown.write_bytes(_pcd_header(["x", "y", "z"], [4, 4, 4], ["F", "F", "F"], 2, "zipped") + b"\x00" * 24)
    with _raises(unknown, "DATA mode 'zipped' is unknown", "ascii, binary or binary_compressed"):
        load_point_cloud(unknown)
    half = tmp_path / "half.pcd"
    half.write_bytes(_pcd_header(["x", "y", "z"], [4, 4, 4], ["F", "F", "F"], 2, "ascii").replace(b"SIZE", b"SIZ")
                     + b"0 0 0\n1 1 1\n")
    with _raises(half, "PCD header: SIZE is missing", "FIELDS, SIZE, TYPE"):
        load_point_cloud(half)
    odd = tmp_path / "odd.pcd"
    odd.write_bytes(_pcd_header(["x", "y", "z"], [4, 4, 2], ["F", "F", "F"], 2, "ascii") + b"0 0 0\n1 1 1\n")
    with _raises(odd, "field 'z' has an unknown TYPE F / SIZE 2"):
        load_point_cloud(odd)


def test_pcd_truncated(tmp_path, xyz):
    binary = tmp_path / "cut.pcd"
    binary.write_bytes(_pcd_header(["x", "y", "z"], [4, 4, 4], ["F", "F", "F"], N, "binary") + xyz.tobytes()[:-7])
    with _raises(binary, "truncated", f"declares {N} points"):
        load_point_cloud(binary)
    ascii_ = tmp_path / "cut_ascii.pcd"
    ascii_.write_bytes(_pcd_header(["x", "y", "z"], [4, 4, 4], ["F", "F", "F"], N, "ascii") + b"0 0 0\n1 1 1\n")
    with _raises(ascii_, "truncated", "2 rows follow"):
        load_point_cloud(ascii_)
    no_data = tmp_path / "header.pcd"
    no_data.write_bytes(b"VERSION 0.7\nFIELDS x y z\n")
    with _raises(no_data, "ends before its DATA line"):
        load_point_cloud(no_data)


def test_binary_garbage_with_text_extension(tmp_path):
    path = tmp_path / "garbage.xyz"
    path.write_bytes(b"\xff\xfe\x00\x81" * 50)
    with _raises(path, "not a text file"):
        load_point_cloud(path)


def test_bad_arguments():
    with pytest.raises(PointCloudError, match="default_color"):
        from_array(np.eye(3), default_color=(0, 0, 255))
    with pytest.raises(PointCloudError, match="mesh_points"):
        load_point_cloud("whatever.obj", mesh_points=0)
