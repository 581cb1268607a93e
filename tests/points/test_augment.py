"""Tests for enel.points.transforms: the up axis (to_z_up) and training augmentation (augment_cloud,
random_resolution, rotation_z)."""

from __future__ import annotations

import numpy as np
import pytest

from enel.errors import PointCloudError
from enel.points.transforms import augment_cloud, random_resolution, resample, rotation_z, to_z_up


def _cloud(n: int = 200, c: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, c)).astype(np.float32)


def _procedural_y_up(xyz: np.ndarray) -> np.ndarray:
    """The procedural generator's up_axis="y" mapping (docs/procedural-data.md): (x, y, z) -> (x, z, -y)."""
    return np.stack([xyz[:, 0], xyz[:, 2], -xyz[:, 1]], axis=1)


# ----------------------------------------------------------------------------------------------------------
# to_z_up
# ----------------------------------------------------------------------------------------------------------
def test_to_z_up_hand_computed():
    yup = np.array([[1.0, 2.0, 3.0], [0.0, 1.0, 0.0]])  # the second point is "up" in a y-up file
    np.testing.assert_array_equal(to_z_up(yup, "y"), [[1.0, -3.0, 2.0], [0.0, 0.0, 1.0]])
    np.testing.assert_array_equal(to_z_up(yup, "z"), yup)


def test_to_z_up_undoes_the_procedural_y_up_mapping_and_is_a_proper_rotation():
    xyz = _cloud(50, 3)
    np.testing.assert_array_equal(to_z_up(_procedural_y_up(xyz), "y"), xyz)
    basis = to_z_up(np.eye(3), "y")  # rows: images of e_x, e_y, e_z
    assert np.linalg.det(basis) == pytest.approx(1.0)


def test_to_z_up_keeps_color_dtype_and_input():
    pts = _cloud(20, 6)
    before = pts.copy()
    out = to_z_up(pts, "y")
    assert out.dtype == np.float32 and out.shape == (20, 6)
    np.testing.assert_array_equal(out[:, 3:], pts[:, 3:])
    np.testing.assert_array_equal(pts, before)
    assert to_z_up(np.arange(6).reshape(2, 3), "y").dtype == np.float64


def test_to_z_up_rejects_bad_arguments():
    with pytest.raises(PointCloudError, match="unknown up axis 'x'; choose one of z, y"):
        to_z_up(_cloud(4, 3), "x")
    with pytest.raises(PointCloudError, match=r"expects \(N, C >= 3\) points, got shape \(4, 2\)"):
        to_z_up(np.zeros((4, 2)), "y")


# ----------------------------------------------------------------------------------------------------------
# augment_cloud
# ----------------------------------------------------------------------------------------------------------
def test_rotation_z_quarter_turn_maps_x_to_y():
    np.testing.assert_allclose(rotation_z(np.pi / 2) @ [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], atol=1e-15)
    np.testing.assert_allclose(rotation_z(np.pi / 2) @ [0.0, 0.0, 1.0], [0.0, 0.0, 1.0], atol=1e-15)


def test_yaw_only_is_the_rotation_of_the_first_draw():
    pts = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 2.0], [1.0, 1.0, 1.0]])
    out = augment_cloud(pts, np.random.default_rng(3), scale=(1.0, 1.0), jitter=0.0)
    angle = np.deg2rad(np.random.default_rng(3).uniform(-180.0, 180.0))
    np.testing.assert_allclose(out, pts @ rotation_z(angle).T, atol=1e-12)
    np.testing.assert_allclose(out[0], [np.cos(angle), np.sin(angle), 0.0], atol=1e-12)
    np.testing.assert_allclose(out[1], [0.0, 0.0, 2.0], atol=1e-12)  # the up axis is kept


def test_yaw_stays_within_its_bound():
    pts = np.array([[1.0, 0.0, 0.0]])
    angles = [np.degrees(np.arctan2(*augment_cloud(pts, np.random.default_rng(s), yaw_degrees=20, scale=(1.0, 1.0),
                                                   jitter=0.0)[0, 1::-1])) for s in range(200)]
    assert max(np.abs(angles)) <= 20 and max(angles) > 15 and min(angles) < -15
    with pytest.raises(ValueError, match="yaw_degrees"):
        augment_cloud(pts, np.random.default_rng(0), yaw_degrees=200)


def test_scale_is_per_axis_and_within_bounds_over_seeds():
    ones = np.ones((4, 3))
    factors = np.stack([augment_cloud(ones, np.random.default_rng(s), yaw_degrees=0, jitter=0.0)[0]
                        for s in range(200)])
    assert factors.min() >= 0.8 and factors.max() <= 1.25
    assert factors.min() < 0.82 and factors.max() > 1.23  # the whole range is used
    assert not np.allclose(factors[:, 0], factors[:, 1])  # anisotropic
    np.testing.assert_array_equal(augment_cloud(ones, np.random.default_rng(0), yaw_degrees=0, jitter=0.0,
                                                scale=(2.0, 2.0)), 2 * ones)


def test_jitter_is_clipped_and_centred():
    pts = np.zeros((5000, 3))
    noise = augment_cloud(pts, np.random.default_rng(0), yaw_degrees=0, scale=(1.0, 1.0), jitter=0.05, jitter_clip=0.02)
    assert np.abs(noise).max() == pytest.approx(0.02)  # with sigma 0.05, many draws reach the clip
    assert abs(noise.mean()) < 2e-3
    small = augment_cloud(pts, np.random.default_rng(0), yaw_degrees=0, scale=(1.0, 1.0), jitter=0.01)
    assert 0.008 < small.std() < 0.012 and np.abs(small).max() <= 0.05


def test_colors_untouched_dtype_shape_purity_and_seeded_determinism():
    pts = _cloud(300, 6)
    before = pts.copy()
    a = augment_cloud(pts, np.random.default_rng(7))
    b = augment_cloud(pts, np.random.default_rng(7))
    c = augment_cloud(pts, np.random.default_rng(8))
    assert a.shape == (300, 6) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    np.testing.assert_array_equal(a[:, 3:], pts[:, 3:])
    np.testing.assert_array_equal(pts, before)
    assert augment_cloud(pts[:, :3], np.random.default_rng(7)).shape == (300, 3)


@pytest.mark.parametrize("kwargs, match", [
    ({"scale": (0.0, 1.0)}, "scale must be"),
    ({"scale": (1.2, 1.0)}, "scale must be"),
    ({"jitter": -0.1}, "jitter and jitter_clip must be >= 0"),
])
def test_augment_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        augment_cloud(_cloud(), np.random.default_rng(0), **kwargs)
    with pytest.raises(ValueError, match=r"\(N, C >= 3\)"):
        augment_cloud(np.zeros((5, 2)), np.random.default_rng(0))


# ----------------------------------------------------------------------------------------------------------
# random_resolution
# ----------------------------------------------------------------------------------------------------------
def test_random_resolution_follows_the_documented_draws():
    pts = _cloud(400, 6)
    out = random_resolution(pts, np.random.default_rng(5), 128, min_fraction=0.25)
    rng = np.random.default_rng(5)
    k = int(rng.integers(100, 400, endpoint=True))
    subset = pts[np.sort(rng.choice(400, size=k, replace=False))]
    expected = resample(subset, 128, method="fps", seed=int(rng.integers(0, 2**31 - 1)))
    np.testing.assert_array_equal(out, expected)
    assert out.shape == (128, 6) and out.dtype == np.float32


def test_random_resolution_rows_come_from_the_input_and_sizes_vary():
    pts = _cloud(64, 6)
    rows = {tuple(r) for r in pts}
    for seed in range(20):
        out = random_resolution(pts, np.random.default_rng(seed), 100)  # up: duplicates of a subset
        assert out.shape == (100, 6) and all(tuple(r) in rows for r in out)
        assert len({tuple(r) for r in out}) >= 32  # min_fraction 0.5 keeps at least half
    full = random_resolution(pts, np.random.default_rng(0), 64, min_fraction=1.0)
    np.testing.assert_array_equal(full, pts)  # all kept, same size: a copy in input order
    one = random_resolution(pts[:1], np.random.default_rng(0), 5, min_fraction=0.1)
    assert one.shape == (5, 6) and (one == pts[0]).all()


def test_random_resolution_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"min_fraction must be in \(0, 1\]"):
        random_resolution(_cloud(), np.random.default_rng(0), 10, min_fraction=0.0)
    with pytest.raises(ValueError, match="N >= 1"):
        random_resolution(np.zeros((0, 3)), np.random.default_rng(0), 10)
    with pytest.raises(PointCloudError, match="positive integer n"):
        random_resolution(_cloud(), np.random.default_rng(0), 0)
