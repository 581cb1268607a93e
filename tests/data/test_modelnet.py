"""enel.data.modelnet: the class names, the pickle opt-in, the restricted unpickler, the converter, the dataset."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from enel.data.errors import DatasetError, UnsafePickleError
from enel.data.labels import MODELNET40_CLASSES
from enel.data.modelnet import (
    NPZ_KEYS,
    ModelNetDataset,
    convert_modelnet,
    load_modelnet_npz,
    load_modelnet_pickle,
)
from enel.data.modelnet_import import load_modelnet_archive, modelnet40_source
from enel.errors import PointCloudError
from enel.points.transforms import pc_norm, resample, to_z_up


def real_modelnet40() -> Path:
    """The real ModelNet40 training archive (``modelnet40_source()``: $ENEL_MODELNET40, data/modelnet40, or the
    shared folder beside the checkout); skips the test when there is none."""
    source = modelnet40_source()
    if source is None:
        pytest.skip("no ModelNet40 archive found: set ENEL_MODELNET40, run `enel data modelnet40 --from FILE`, "
                    "or put the shared folder beside the checkout (../shared/data/modelnet40)")
    return source


def fake_modelnet(m=5, n=64, seed=0):
    """PointLLM's structure: a list of (n, 6) float32 xyz + unit-normal arrays and a list of (1,) int32 labels."""
    rng = np.random.default_rng(seed)
    points, labels = [], []
    for i in range(m):
        xyz = rng.normal(size=(n, 3)) * (i + 1) + 2.0
        normals = rng.normal(size=(n, 3))
        normals /= np.linalg.norm(normals, axis=1, keepdims=True)
        points.append(np.concatenate([xyz, normals], axis=1).astype(np.float32))
        labels.append(np.array([(7 * i + 3) % 40], dtype=np.int32))
    return points, labels


def write_pickle(path, obj, protocol=pickle.DEFAULT_PROTOCOL):
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=protocol)
    return path


class _RunsShell:
    """Unpickling this calls os.system, which would create the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Evals:
    def __reduce__(self):
        return (eval, ("__import__('pathlib').Path(__import__('os').environ['ENEL_TEST_MARKER']).touch()",))


# ----------------------------------------------------------------------------------------------------------
# Class names
# ----------------------------------------------------------------------------------------------------------
def test_forty_class_names_in_modelnet_order_with_spaces():
    assert len(MODELNET40_CLASSES) == 40 and len(set(MODELNET40_CLASSES)) == 40
    underscored = [c.replace(" ", "_") for c in MODELNET40_CLASSES]
    assert underscored == sorted(underscored)  # ModelNet40's label order is alphabetical
    assert all("_" not in c for c in MODELNET40_CLASSES)
    for name in ("flower pot", "glass box", "night stand", "range hood", "tv stand"):
        assert name in MODELNET40_CLASSES
    assert MODELNET40_CLASSES.index("airplane") == 0 and MODELNET40_CLASSES.index("xbox") == 39


def test_class_names_match_the_real_modelnet40_archive():
    source = real_modelnet40()
    archive = load_modelnet_archive(source)
    assert archive.class_names == MODELNET40_CLASSES
    names_file = source.parent / "shape_names.txt"  # the official order, one name a line, beside the shared file
    if names_file.is_file():
        lines = [line.strip() for line in names_file.read_text().splitlines() if line.strip()]
        assert [c.replace("_", " ") for c in lines] == list(MODELNET40_CLASSES)


def test_the_real_archive_is_z_up_unit_sphere_clouds_of_all_classes():
    archive = load_modelnet_archive(real_modelnet40())
    m, n, c = archive.points.shape
    assert c == 3 and n >= 1024 and m == len(archive.labels) == len(archive.object_ids)
    assert set(archive.labels.tolist()) == set(range(40))
    radius = np.linalg.norm(archive.points, axis=2).max(axis=1)
    np.testing.assert_allclose(radius, 1.0, atol=2e-3)
    np.testing.assert_allclose(archive.points.mean(axis=1), 0.0, atol=2e-3)
    for name in ("bottle", "person", "chair"):  # upright objects are tallest along z in a z-up frame
        clouds = archive.points[archive.labels == MODELNET40_CLASSES.index(name)]
        extent = clouds.max(axis=1) - clouds.min(axis=1)
        assert (extent.argmax(axis=1) == 2).mean() > 0.8, name
    assert archive.object_ids[int(np.flatnonzero(archive.labels == 0)[0])].startswith("airplane_")


# ----------------------------------------------------------------------------------------------------------
# The pickle: opt-in and restricted unpickler
# ----------------------------------------------------------------------------------------------------------
def test_pickle_refused_without_opt_in(tmp_path):
    path = write_pickle(tmp_path / "modelnet40_test_8192pts_fps.dat", fake_modelnet())
    for flag in (False, 1, "yes"):
        with pytest.raises(UnsafePickleError) as err:
            load_modelnet_pickle(path, allow_pickle=flag)
        message = str(err.value)
        assert "unpickling" in message and "arbitrary code" in message
        assert "allow_pickle=True" in message and "enel data convert-modelnet" in message and "--allow-pickle" in message
    with pytest.raises(UnsafePickleError):
        ModelNetDataset(path)
    with pytest.raises(UnsafePickleError):
        convert_modelnet(path, tmp_path / "out.npz")
    assert not (tmp_path / "out.npz").exists()


def test_refusal_happens_before_reading(tmp_path):
    marker = tmp_path / "ran"
    path = write_pickle(tmp_path / "evil.dat", _RunsShell(marker))
    with pytest.raises(UnsafePickleError, match="refusing to unpickle"):
        load_modelnet_pickle(path)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_pickle_accepted_with_opt_in(tmp_path, protocol):
    points, labels = fake_modelnet()
    path = write_pickle(tmp_path / "m.dat", (points, labels), protocol)
    got_points, got_labels = load_modelnet_pickle(path, allow_pickle=True)
    assert got_points.dtype == np.float32 and got_points.shape == (5, 64, 6)
    np.testing.assert_array_equal(got_points, np.stack(points))
    assert got_labels.dtype == np.int64 and got_labels.tolist() == [int(lab[0]) for lab in labels]


def test_list_form_and_plain_int_labels_are_accepted(tmp_path):
    points, labels = fake_modelnet(m=3)
    path = write_pickle(tmp_path / "m.dat", [points, [int(lab[0]) for lab in labels]])
    _, got = load_modelnet_pickle(path, allow_pickle=True)
    assert got.tolist() == [int(lab[0]) for lab in labels]


@pytest.mark.parametrize("payload", ["os.system", "eval"])
def test_restricted_unpickler_rejects_code_and_does_not_run_it(tmp_path, monkeypatch, payload):
    marker = tmp_path / "ran"
    monkeypatch.setenv("ENEL_TEST_MARKER", str(marker))
    evil = _RunsShell(marker) if payload == "os.system" else _Evals()
    # hidden inside the real structure, where a naive loader would build it
    points, labels = fake_modelnet(m=2)
    path = write_pickle(tmp_path / "evil.dat", (points, [labels[0], evil]))
    # sanity: an unrestricted unpickler really would run it
    check = write_pickle(tmp_path / "check.dat", evil)
    with open(check, "rb") as fh:
        pickle.load(fh)
    assert marker.exists()
    marker.unlink()

    with pytest.raises(UnsafePickleError, match=r"evil\.dat: .*references (posix|os|nt)\.system|references builtins\.eval"):
        load_modelnet_pickle(path, allow_pickle=True)
    assert not marker.exists()


def test_malformed_pickles_raise_clear_errors(tmp_path):
    points, labels = fake_modelnet(m=3)
    cases = {
        "triple.dat": ((points, labels, labels), r"expected a \(list_of_points, list_of_labels\) pair"),
        "counts.dat": ((points, labels[:2]), r"3 point sets but 2 labels"),
        "label.dat": ((points, [np.array([40])] * 3), r"label 0 is 40, outside the 40 classes"),
        "shape.dat": ((points[:2] + [points[2][:10]], labels), r"point set 2 has shape \(10, 6\)"),
        "strings.dat": ((["a", "b", "c"], labels), r"point set 0 must be a numeric \(N, 6\) array"),
    }
    for name, (obj, message) in cases.items():
        path = write_pickle(tmp_path / name, obj)
        with pytest.raises(DatasetError, match=message):
            load_modelnet_pickle(path, allow_pickle=True)
    (tmp_path / "junk.dat").write_bytes(b"\x80\x04not a pickle")
    with pytest.raises(DatasetError, match=r"junk\.dat: not a readable ModelNet40 pickle"):
        load_modelnet_pickle(tmp_path / "junk.dat", allow_pickle=True)
    with pytest.raises(DatasetError, match="not found"):
        load_modelnet_pickle(tmp_path / "absent.dat", allow_pickle=True)


# ----------------------------------------------------------------------------------------------------------
# Converter and dataset
# ----------------------------------------------------------------------------------------------------------
def test_converter_round_trip_is_pickle_free_and_lossless(tmp_path):
    points, labels = fake_modelnet()
    src = write_pickle(tmp_path / "m.dat", (points, labels))
    out = convert_modelnet(src, tmp_path / "sub" / "modelnet40_test", allow_pickle=True)
    assert out == tmp_path / "sub" / "modelnet40_test.npz" and out.is_file()
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]
    with np.load(out, allow_pickle=False) as npz:  # readable without unpickling
        assert set(npz.files) == set(NPZ_KEYS)
        np.testing.assert_array_equal(npz["points"], np.stack(points))
        assert npz["labels"].dtype == np.int64
    pts, labs, names = load_modelnet_npz(out)
    np.testing.assert_array_equal(pts, np.stack(points))
    assert labs.tolist() == [int(lab[0]) for lab in labels] and names == MODELNET40_CLASSES

    from_pickle = ModelNetDataset(src, allow_pickle=True)
    from_npz = ModelNetDataset(out)  # no opt-in needed
    assert len(from_pickle) == len(from_npz) == 5
    for i in range(5):
        a, b = from_pickle[i], from_npz[i]
        assert torch.equal(a["point_cloud"], b["point_cloud"])
        assert (a["label"], a["label_name"], a["object_id"]) == (b["label"], b["label_name"], b["object_id"])


def test_items_are_black_normalised_xyz_with_label_names(tmp_path):
    points, labels = fake_modelnet()
    ds = ModelNetDataset(write_pickle(tmp_path / "m.dat", (points, labels)), allow_pickle=True)
    for i in range(len(ds)):
        item = ds[i]
        assert set(item) == {"point_cloud", "label", "label_name", "object_id"}
        cloud = item["point_cloud"]
        assert cloud.dtype == torch.float32 and cloud.shape == (64, 6)
        assert not cloud[:, 3:].any()  # normals dropped, colour zero
        # PointLLM's file is y-up: (x, y, z) comes out as (x, -z, y), the project's z-up frame
        np.testing.assert_allclose(cloud[:, :3].numpy(), pc_norm(points[i][:, :3])[:, [0, 2, 1]] * [1, -1, 1],
                                   atol=1e-6)
        assert item["label"] == int(labels[i][0])
        assert item["label_name"] == MODELNET40_CLASSES[item["label"]]
        assert item["object_id"] == i
    assert ds[-1]["object_id"] == 4
    with pytest.raises(IndexError):
        ds[5]


def test_resampling_modelnet(tmp_path):
    points, labels = fake_modelnet()
    ds = ModelNetDataset(write_pickle(tmp_path / "m.dat", (points, labels)), allow_pickle=True, num_points=16)
    cloud = ds[2]["point_cloud"]
    assert cloud.shape == (16, 6)
    np.testing.assert_allclose(cloud[:, :3].numpy(), to_z_up(pc_norm(resample(points[2][:, :3], 16)), "y"),
                               atol=1e-6)
    stored = ModelNetDataset(tmp_path / "m.dat", allow_pickle=True, num_points=16, up="z")
    np.testing.assert_allclose(stored[2]["point_cloud"][:, :3].numpy(), pc_norm(resample(points[2][:, :3], 16)),
                               atol=1e-6)
    with pytest.raises(PointCloudError, match="unknown up axis"):
        ModelNetDataset(tmp_path / "m.dat", allow_pickle=True, up="x")
    rnd = ModelNetDataset(tmp_path / "m.dat", allow_pickle=True, num_points=16, resample_method="random", seed=1)
    assert torch.equal(rnd[2]["point_cloud"], rnd[2]["point_cloud"])
    assert not torch.equal(rnd[2]["point_cloud"], cloud)


def test_bad_npz_archives(tmp_path):
    np.savez(tmp_path / "partial.npz", points=np.zeros((2, 8, 6), np.float32))
    with pytest.raises(DatasetError, match=r"partial\.npz: the archive lacks labels, class_names"):
        load_modelnet_npz(tmp_path / "partial.npz")
    np.savez(tmp_path / "objects.npz", points=np.zeros((2, 8, 6), np.float32), labels=np.array([0, 1]),
             class_names=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(DatasetError, match=r"objects\.npz: not a readable \.npz archive"):
        ModelNetDataset(tmp_path / "objects.npz")
    with pytest.raises(DatasetError, match="not found"):
        ModelNetDataset(tmp_path / "none.npz")
