"""enel.data.modelnet_import: importing the three ModelNet40 sources, loading archives, finding the data."""

from __future__ import annotations

import hashlib
import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

import enel
from enel.cli import main
from enel.data import modelnet_import as mi
from enel.data.errors import DatasetError, UnsafePickleError
from enel.data.labels import MODELNET40_CLASSES
from enel.data.modelnet import convert_modelnet
from enel.data.modelnet_import import (
    ARCHIVE_KEYS,
    ModelNetArchive,
    detect_format,
    import_modelnet40,
    load_modelnet_archive,
    modelnet40_source,
)
from enel.points.transforms import pc_norm

CHAIR, NIGHT_STAND = MODELNET40_CLASSES.index("chair"), MODELNET40_CLASSES.index("night stand")


# ----------------------------------------------------------------------------------------------------------
# Tiny sources made here
# ----------------------------------------------------------------------------------------------------------
def box_off(size=(1.0, 1.0, 3.0), offset=(0.0, 0.0, 0.0), malformed=False) -> bytes:
    """An axis-aligned box as OFF text; ``malformed`` writes Princeton's one-line header ``OFF8 12 0``."""
    sx, sy, sz = size
    v = np.array([[x, y, z] for x in (0, sx) for y in (0, sy) for z in (0, sz)]) + offset
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    faces = [t for a, b, c, d in quads for t in ((a, b, c), (a, c, d))]
    head = "OFF8 12 0\n" if malformed else "OFF\n8 12 0\n"
    body = "".join(f"{x} {y} {z}\n" for x, y, z in v) + "".join(f"3 {a} {b} {c}\n" for a, b, c in faces)
    return (head + body).encode()


MESHES = {  # 2 classes x 2 meshes, one per split, two with the malformed header
    "ModelNet40/chair/train/chair_0001.off": box_off((1, 1, 3)),
    "ModelNet40/chair/test/chair_0002.off": box_off((1, 2, 3), (5, 5, 5), malformed=True),
    "ModelNet40/night_stand/train/night_stand_0001.off": box_off((2, 1, 4), malformed=True),
    "ModelNet40/night_stand/test/night_stand_0002.off": box_off((1, 1, 2), (-3, 0, 1)),
}


def write_zip(path: Path, entries=MESHES) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("ModelNet40/README.txt", "not a mesh")
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


def y_up_cloud() -> np.ndarray:
    """Six points on the axes of a y-up frame (+y up) with unit normals: ``(6, 6)`` float32."""
    xyz = np.array([[0, 1, 0], [0, -1, 0], [1, 0, 0], [-1, 0, 0], [0, 0, 1], [0, 0, -1]], dtype=np.float32)
    return np.concatenate([xyz, xyz], axis=1)


def write_pointllm_pickle(path: Path) -> Path:
    points = [y_up_cloud(), y_up_cloud() * [2, 2, 2, 1, 1, 1]]
    with open(path, "wb") as fh:
        pickle.dump((points, [np.array([CHAIR], np.int32), np.array([NIGHT_STAND], np.int32)]), fh)
    return path


def on_box_surface(xyz: np.ndarray, tol: float = 2e-3) -> bool:
    """Every point of an axis-aligned box's surface has a coordinate at that axis' minimum or maximum."""
    lo, hi = xyz.min(0), xyz.max(0)
    return bool(((np.abs(xyz - lo) < tol) | (np.abs(xyz - hi) < tol)).any(axis=1).all())


# ----------------------------------------------------------------------------------------------------------
# Princeton's zip of OFF meshes
# ----------------------------------------------------------------------------------------------------------
def test_off_reader_takes_both_headers_polygons_and_comments():
    good, bad = mi._parse_off(box_off()), mi._parse_off(box_off(malformed=True))
    np.testing.assert_array_equal(good[0], bad[0])
    np.testing.assert_array_equal(good[1], bad[1])
    assert good[0].shape == (8, 3) and good[1].shape == (12, 3)
    vertices, faces = mi._parse_off(b"# a quad and a triangle\nOFF 4 2 0\n0 0 0\n1 0 0\n1 1 0\n0 1 0\n"
                                    b"4 0 1 2 3\n3 0 1 3\n")
    assert faces.tolist() == [[0, 1, 2], [0, 2, 3], [0, 1, 3]]  # the quad fanned into two triangles
    for broken, message in [(b"PLY\n", "not an OFF file"), (b"OFF\n4 1 0\n0 0 0\n", "truncated: 4 vertices"),
                            (b"OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 7\n", "outside")]:
        with pytest.raises(ValueError, match=message):
            mi._parse_off(broken)
    xyz = mi._sample_off(box_off(malformed=True), 32, seed=0)
    assert xyz.shape == (32, 3) and on_box_surface(xyz, 1e-9)


def test_princeton_zip_round_trip_both_splits(tmp_path):
    src = write_zip(tmp_path / "ModelNet40.zip")
    assert detect_format(src) == "princeton"
    written = import_modelnet40(src, tmp_path / "out", num_points=64)
    assert written == {"test": tmp_path / "out" / "modelnet40_test.npz",
                       "train": tmp_path / "out" / "modelnet40_train.npz"}
    with np.load(written["train"], allow_pickle=False) as npz:
        assert set(npz.files) == set(ARCHIVE_KEYS)
        assert npz["points"].dtype == np.float16 and npz["points"].shape == (2, 64, 3)
        assert npz["labels"].dtype == np.int16 and npz["labels"].tolist() == [CHAIR, NIGHT_STAND]
        assert npz["object_ids"].tolist() == ["chair_0001", "night_stand_0001"]
        assert tuple(npz["class_names"]) == MODELNET40_CLASSES
    test = load_modelnet_archive(written["test"])
    assert isinstance(test, ModelNetArchive) and test.points.dtype == np.float32 and test.labels.dtype == np.int64
    assert test.object_ids == ("chair_0002", "night_stand_0002")
    for cloud in (*test.points, *load_modelnet_archive(written["train"]).points):
        np.testing.assert_allclose(cloud.mean(0), 0, atol=0.06)  # FPS points, centred by pc_norm
        assert np.linalg.norm(cloud, axis=1).max() == pytest.approx(1.0, abs=1e-3)
        assert on_box_surface(cloud)
        extent = cloud.max(0) - cloud.min(0)
        assert extent.argmax() == 2  # the boxes are tallest along z: no axis was turned
    assert len({tuple(p) for p in test.points[0]}) == 64  # FPS: distinct points

    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    entry = manifest["splits"]["train"]
    assert entry["source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert entry["objects"] == 2 and entry["points_per_object"] == 64 and "farthest point" in entry["points"]
    assert "academic research only" in manifest["licence"] and "never ship" in manifest["licence"]
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "academic research only" in readme and entry["source_sha256"] in readme and "imported" in readme


def test_princeton_sampling_is_seeded_per_object_and_folder_equals_zip(tmp_path):
    src = write_zip(tmp_path / "ModelNet40.zip")
    a = import_modelnet40(src, tmp_path / "a", num_points=32, seed=3)
    b = import_modelnet40(src, tmp_path / "b", num_points=32, seed=3, split="test")  # one split alone
    c = import_modelnet40(src, tmp_path / "c", num_points=32, seed=4)
    assert set(b) == {"test"} and not (tmp_path / "b" / "modelnet40_train.npz").exists()
    pa, pb, pc = (load_modelnet_archive(x["test"]).points for x in (a, b, c))
    np.testing.assert_array_equal(pa, pb)
    assert not np.array_equal(pa, pc)
    folder = tmp_path / "unpacked"
    with zipfile.ZipFile(src) as zf:
        zf.extractall(folder)
    assert detect_format(folder) == "princeton"
    d = import_modelnet40(folder, tmp_path / "d", num_points=32, seed=3)
    np.testing.assert_array_equal(load_modelnet_archive(d["train"]).points, load_modelnet_archive(a["train"]).points)


def test_unsampleable_meshes_are_skipped_with_a_warning_and_an_error_when_none_is_left(tmp_path):
    entries = dict(MESHES)
    entries["ModelNet40/chair/train/chair_0003.off"] = b"OFF\n3 0 0\n0 0 0\n1 0 0\n0 1 0\n"  # no faces
    with pytest.warns(mi.DatasetWarning, match=r"skipped 1 of 5 meshes.*chair_0003\.off"):
        out = import_modelnet40(write_zip(tmp_path / "m.zip", entries), tmp_path / "out", num_points=16)
    assert load_modelnet_archive(out["train"]).object_ids == ("chair_0001", "night_stand_0001")
    bad = write_zip(tmp_path / "bad.zip", {"ModelNet40/chair/train/chair_0001.off": b"OFF\n3 0 0\n0 0 0\n"})
    with pytest.raises(DatasetError, match=r"none of its 1 meshes could be sampled"):
        import_modelnet40(bad, tmp_path / "out2", num_points=16)


def test_zip_without_modelnet_layout_and_unknown_classes(tmp_path):
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as zf:
        zf.writestr("photos/cat.jpg", b"\xff\xd8")
    with pytest.raises(DatasetError, match=r"other\.zip: a zip without ModelNet40's layout \(found 'photos/cat\.jpg'\)"
                                           r".*ModelNet40/<class>/\{train,test\}/<class>_NNNN\.off"):
        import_modelnet40(tmp_path / "other.zip", tmp_path / "out")
    odd = write_zip(tmp_path / "odd.zip", {"ModelNet40/spaceship/train/spaceship_0001.off": box_off()})
    with pytest.raises(DatasetError, match="class 'spaceship' is not one of ModelNet40's 40 classes"):
        import_modelnet40(odd, tmp_path / "out")
    only_train = write_zip(tmp_path / "t.zip", {k: v for k, v in MESHES.items() if "/train/" in k})
    with pytest.raises(DatasetError, match=r"no test meshes"):
        import_modelnet40(only_train, tmp_path / "out", split="test")


# ----------------------------------------------------------------------------------------------------------
# PointLLM's pickle
# ----------------------------------------------------------------------------------------------------------
def test_pickle_is_turned_from_y_up_to_z_up(tmp_path):
    src = write_pointllm_pickle(tmp_path / "modelnet40_test_8192pts_fps.dat")
    assert detect_format(src) == "pickle"
    written = import_modelnet40(src, tmp_path / "out", allow_pickle=True)
    assert set(written) == {"test"}
    got = load_modelnet_archive(written["test"])
    # y-up (x, y, z) -> z-up (x, -z, y): +y (up) becomes +z, +z becomes -y; already unit-sphere, so exact
    expected = np.array([[0, 0, 1], [0, 0, -1], [1, 0, 0], [-1, 0, 0], [0, -1, 0], [0, 1, 0]], dtype=np.float32)
    np.testing.assert_array_equal(got.points[0], expected)
    np.testing.assert_array_equal(got.points[1], expected)  # scaled into the unit sphere
    assert got.labels.tolist() == [CHAIR, NIGHT_STAND]
    assert got.object_ids == ("test_00000", "test_00001")
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["splits"]["test"]["source_up"] == "y"


def test_pickle_needs_the_opt_in_and_is_the_test_split(tmp_path):
    src = write_pointllm_pickle(tmp_path / "m.dat")
    with pytest.raises(UnsafePickleError, match=r"m\.dat is a Python pickle.*run code.*--allow-pickle"):
        import_modelnet40(src, tmp_path / "out")
    with pytest.raises(DatasetError, match="holds the test split; drop --split train"):
        import_modelnet40(src, tmp_path / "out", allow_pickle=True, split="train")
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------------------
# An npz
# ----------------------------------------------------------------------------------------------------------
def test_npz_round_trip_with_remapped_class_names_and_columns_dropped(tmp_path):
    rng = np.random.default_rng(0)
    points = rng.normal(size=(3, 50, 6)) * 3 + 1  # not normalised, xyz + normals
    names = np.array(["night_stand", "chair"])  # underscored, not in ModelNet order
    np.savez(tmp_path / "my_train_set.npz", points=points, labels=np.array([0, 1, 1]), class_names=names,
             object_ids=np.array(["a_1", "b_1", "b_2"]))
    assert detect_format(tmp_path / "my_train_set.npz") == "npz"
    written = import_modelnet40(tmp_path / "my_train_set.npz", tmp_path / "out")
    got = load_modelnet_archive(written["train"])
    assert got.labels.tolist() == [NIGHT_STAND, CHAIR, CHAIR] and got.object_ids == ("a_1", "b_1", "b_2")
    for i in range(3):  # z-up already: only pc_norm, then float16
        np.testing.assert_allclose(got.points[i], pc_norm(points[i, :, :3]), atol=1e-3)
    # no object_ids, split given, resampled
    np.savez(tmp_path / "plain.npz", points=points[..., :3], labels=np.array([0, 1, 1]), class_names=names)
    with pytest.raises(DatasetError, match=r"plain\.npz: the file name does not say which split.*--split train\|test"):
        import_modelnet40(tmp_path / "plain.npz", tmp_path / "out")
    written = import_modelnet40(tmp_path / "plain.npz", tmp_path / "out", split="test", num_points=20)
    got = load_modelnet_archive(written["test"])
    assert got.points.shape == (3, 20, 3) and got.object_ids == ("test_00000", "test_00001", "test_00002")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert set(manifest["splits"]) == {"train", "test"}  # the earlier import is kept


def test_convert_modelnet_archive_keeps_pointllms_y_up(tmp_path):
    npz = convert_modelnet(write_pointllm_pickle(tmp_path / "m.dat"), tmp_path / "modelnet40_test_8192pts.npz",
                           allow_pickle=True)
    with pytest.raises(DatasetError, match=r"6 columns.*enel data modelnet40 --from"):
        load_modelnet_archive(npz)
    got = load_modelnet_archive(import_modelnet40(npz, tmp_path / "out")["test"])
    assert got.points[0][0].tolist() == [0, 0, 1]  # +y turned to +z
    forced = load_modelnet_archive(import_modelnet40(npz, tmp_path / "out2", up="z")["test"])
    assert forced.points[0][0].tolist() == [0, 1, 0]


def test_npz_with_wrong_keys_or_values(tmp_path):
    np.savez(tmp_path / "train.npz", xyz=np.zeros((2, 8, 3)))
    with pytest.raises(DatasetError, match=r"train\.npz: the archive lacks points, labels, class_names"):
        import_modelnet40(tmp_path / "train.npz", tmp_path / "out")
    np.savez(tmp_path / "train2.npz", points=np.ones((1, 8, 3)), labels=np.array([0]), class_names=np.array(["ufo"]))
    with pytest.raises(DatasetError, match="class 'ufo' is not one of ModelNet40's 40 classes"):
        import_modelnet40(tmp_path / "train2.npz", tmp_path / "out")
    np.savez(tmp_path / "train3.npz", points=np.ones((1, 8, 3)), labels=np.array([3]), class_names=np.array(["chair"]))
    with pytest.raises(DatasetError, match=r"labels outside \[0, 1\)"):
        import_modelnet40(tmp_path / "train3.npz", tmp_path / "out")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DatasetError, match=r"notes\.txt: unknown ModelNet40 format; accepted sources: an \.npz"):
        import_modelnet40(tmp_path / "notes.txt", tmp_path / "out")
    with pytest.raises(DatasetError, match="file not found"):
        import_modelnet40(tmp_path / "absent.zip", tmp_path / "out")


# ----------------------------------------------------------------------------------------------------------
# Loading archives, atomic writes
# ----------------------------------------------------------------------------------------------------------
def test_load_archive_synthesises_ids_and_checks(tmp_path):
    np.savez(tmp_path / "modelnet40_test.npz", points=np.ones((2, 4, 3), np.float16), labels=np.array([1, 2], np.int16),
             class_names=np.array(MODELNET40_CLASSES))
    got = load_modelnet_archive(tmp_path / "modelnet40_test.npz")
    assert got.object_ids == ("test_00000", "test_00001") and got.labels.dtype == np.int64
    assert load_modelnet_archive(tmp_path / "modelnet40_test.npz", split="val").object_ids[0] == "val_00000"
    np.savez(tmp_path / "x.npz", points=np.ones((2, 4, 3)), labels=np.array([1, 40]),
             class_names=np.array(MODELNET40_CLASSES))
    with pytest.raises(DatasetError, match=r"label 40 of object 1 is outside the 40 classes"):
        load_modelnet_archive(tmp_path / "x.npz")
    np.savez(tmp_path / "y.npz", points=np.ones((2, 4, 3)), labels=np.array([1, 2]),
             class_names=np.array(MODELNET40_CLASSES), object_ids=np.array(["a"]))
    with pytest.raises(DatasetError, match=r"1 object_ids for 2 point sets"):
        load_modelnet_archive(tmp_path / "y.npz")
    with pytest.raises(DatasetError, match=r"not found; import your ModelNet40 with `enel data modelnet40 --from FILE`"):
        load_modelnet_archive(tmp_path / "none.npz")


def test_archive_write_is_atomic(tmp_path, monkeypatch):
    src = write_pointllm_pickle(tmp_path / "m.dat")
    out = tmp_path / "out"
    first = import_modelnet40(src, out, allow_pickle=True)["test"]
    before = first.read_bytes()

    def broken_savez(fh, **arrays):
        fh.write(b"PK\x03\x04 half an archive")
        raise OSError("disk full")

    monkeypatch.setattr(mi.np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        import_modelnet40(src, out, allow_pickle=True)
    assert first.read_bytes() == before  # the old archive is intact
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "manifest.json", "modelnet40_test.npz"]


# ----------------------------------------------------------------------------------------------------------
# Finding the data
# ----------------------------------------------------------------------------------------------------------
def test_source_from_the_environment(tmp_path, monkeypatch):
    archive = tmp_path / "mine.npz"
    archive.write_bytes(b"x")
    monkeypatch.setenv("ENEL_MODELNET40", str(archive))
    assert modelnet40_source() == archive.resolve()
    monkeypatch.setenv("ENEL_MODELNET40", str(tmp_path / "missing.npz"))
    with pytest.raises(DatasetError, match=r"ENEL_MODELNET40=.*missing\.npz does not exist.*or unset it"):
        modelnet40_source()
    monkeypatch.setenv("ENEL_MODELNET40", str(tmp_path))
    with pytest.raises(DatasetError, match="ENEL_MODELNET40=.* is a directory"):
        modelnet40_source()


def test_source_search_order(tmp_path, monkeypatch):
    monkeypatch.delenv("ENEL_MODELNET40", raising=False)
    fake_repo = tmp_path / "repo"
    (fake_repo / "src" / "enel").mkdir(parents=True)
    (fake_repo / "pyproject.toml").write_text("")
    monkeypatch.setattr(enel, "__file__", str(fake_repo / "src" / "enel" / "__init__.py"))
    work = tmp_path / "work" / "checkout"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    assert modelnet40_source() is None

    shared_by_repo = tmp_path / "shared" / "data" / "modelnet40" / "modelnet40_1024_train.npz"
    shared_by_repo.parent.mkdir(parents=True)
    shared_by_repo.write_bytes(b"x")  # ../shared beside the repo
    assert modelnet40_source() == shared_by_repo.resolve()
    repo_data = fake_repo / "data" / "modelnet40" / "modelnet40_train.npz"
    repo_data.parent.mkdir(parents=True)
    repo_data.write_bytes(b"x")
    assert modelnet40_source() == repo_data.resolve()
    shared_by_cwd = tmp_path / "work" / "shared" / "data" / "modelnet40" / "modelnet40_1024_train.npz"
    shared_by_cwd.parent.mkdir(parents=True)
    shared_by_cwd.write_bytes(b"x")
    assert modelnet40_source() == shared_by_cwd.resolve()
    imported = work / "data" / "modelnet40" / "modelnet40_train.npz"
    imported.parent.mkdir(parents=True)
    imported.write_bytes(b"x")
    assert modelnet40_source() == imported.resolve()


# ----------------------------------------------------------------------------------------------------------
# The command
# ----------------------------------------------------------------------------------------------------------
def test_cli_imports_and_reports_errors_on_one_line(tmp_path, capsys):
    src = write_pointllm_pickle(tmp_path / "m.dat")
    assert main(["data", "modelnet40", "--from", str(src), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--allow-pickle" in err and len(err.strip().splitlines()) == 1
    assert main(["data", "modelnet40", "--from", str(src), "--out", str(tmp_path / "out"), "--allow-pickle",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"test": str(tmp_path / "out" / "modelnet40_test.npz")}
    zip_src = write_zip(tmp_path / "ModelNet40.zip")
    assert main(["data", "modelnet40", "--from", str(zip_src), "--out", str(tmp_path / "z"), "--points", "16",
                 "--split", "train"]) == 0
    out = capsys.readouterr()
    assert "modelnet40_train.npz (train)" in out.out and "never commit or ship" in out.out
    assert "sampled 2/2 meshes" in out.err
