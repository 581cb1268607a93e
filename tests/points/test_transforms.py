"""Tests for enel.points.transforms: pc_norm, resample, rigid transforms (numpy and batched torch)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from enel.errors import PointCloudError
from enel.points.ops import farthest_point_sample_np
from enel.points.transforms import (
    apply_rigid,
    apply_rigid_torch,
    pc_norm,
    random_rigid_transforms,
    random_rotation,
    resample,
)


def _cloud(n: int, c: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, c)).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------
# pc_norm
# ----------------------------------------------------------------------------------------------------------
def test_pc_norm_matches_hand_computation():
    xyz = np.array([[0, 0, 0], [2, 0, 0], [0, 4, 0], [2, 4, 4]], dtype=np.float32)
    # centroid (1, 2, 1); offsets (-1,-2,-1), (1,-2,-1), (-1,2,-1), (1,2,3); largest radius sqrt(14)
    expected = np.array([[-1, -2, -1], [1, -2, -1], [-1, 2, -1], [1, 2, 3]], dtype=np.float64) / np.sqrt(14.0)
    out = pc_norm(xyz)
    assert out.dtype == np.float32 and out.shape == (4, 3)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-7)


def test_pc_norm_unit_sphere_and_centroid_and_purity():
    xyz = _cloud(500, 3) * 7.0 + 3.0
    before = xyz.copy()
    out = pc_norm(xyz)
    np.testing.assert_array_equal(xyz, before)  # input untouched
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-6)
    assert np.linalg.norm(out, axis=1).max() == pytest.approx(1.0, abs=1e-6)


def test_pc_norm_zero_radius_is_centred_not_nan():
    out = pc_norm(np.full((5, 3), 2.5, dtype=np.float32))
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out, np.zeros((5, 3), np.float32))


@pytest.mark.parametrize("shape", [(5, 6), (5,), (0, 3)])
def test_pc_norm_rejects_wrong_shapes(shape):
    with pytest.raises(PointCloudError, match="pc_norm expects"):
        pc_norm(np.zeros(shape, np.float32))


# ----------------------------------------------------------------------------------------------------------
# resample
# ----------------------------------------------------------------------------------------------------------
def test_resample_fps_equals_farthest_point_sample_np():
    pts = _cloud(300)
    out = resample(pts, 64, method="fps")
    idx = farthest_point_sample_np(pts[:, :3], 64, start=0)
    np.testing.assert_array_equal(out, pts[idx])  # colours travel with their points
    assert out.dtype == pts.dtype


def test_resample_fps_is_deterministic_and_ignores_seed():
    pts = _cloud(300)
    np.testing.assert_array_equal(resample(pts, 50, seed=1), resample(pts, 50, seed=2))


def test_resample_random_down_is_seeded_subset_without_repeats():
    pts = _cloud(300)
    a = resample(pts, 100, method="random", seed=3)
    b = resample(pts, 100, method="random", seed=3)
    c = resample(pts, 100, method="random", seed=4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    rows = {tuple(r) for r in pts.tolist()}
    assert len({tuple(r) for r in a.tolist()}) == 100  # no point twice
    assert all(tuple(r) in rows for r in a.tolist())


@pytest.mark.parametrize("method", ["fps", "random"])
def test_resample_up_keeps_all_points_then_seeded_duplicates(method):
    pts = _cloud(40)
    out = resample(pts, 100, method=method, seed=5)
    assert out.shape == (100, 6)
    np.testing.assert_array_equal(out[:40], pts)
    rows = {tuple(r) for r in pts.tolist()}
    assert all(tuple(r) in rows for r in out[40:].tolist())
    np.testing.assert_array_equal(out, resample(pts, 100, method=method, seed=5))
    assert not np.array_equal(out, resample(pts, 100, method=method, seed=6))


def test_resample_same_size_returns_a_copy():
    pts = _cloud(32)
    out = resample(pts, 32)
    np.testing.assert_array_equal(out, pts)
    out[0, 0] = -1.0
    assert pts[0, 0] != -1.0


@pytest.mark.parametrize(
    ("points", "n", "method", "match"),
    [
        (np.zeros((10, 2)), 5, "fps", "N, C >= 3"),
        (np.zeros((0, 3)), 5, "fps", "N, C >= 3"),
        (np.zeros((10, 3)), 0, "fps", "positive integer"),
        (np.zeros((10, 3)), 5, "voxel", "unknown resample method"),
    ],
)
def test_resample_rejects_bad_arguments(points, n, method, match):
    with pytest.raises(PointCloudError, match=match):
        resample(points, n, method=method)


# ----------------------------------------------------------------------------------------------------------
# numpy rigid transforms
# ----------------------------------------------------------------------------------------------------------
def test_random_rotation_is_proper_and_seeded():
    r1 = random_rotation(np.random.default_rng(0))
    r2 = random_rotation(np.random.default_rng(0))
    r3 = random_rotation(np.random.default_rng(1))
    np.testing.assert_array_equal(r1, r2)
    assert not np.allclose(r1, r3)
    np.testing.assert_allclose(r1 @ r1.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(r1) == pytest.approx(1.0, abs=1e-12)


def test_random_rotation_is_uniform_in_the_mean():
    # Under the Haar measure E[R] = 0; a rotation about a fixed axis (or the identity) would not pass.
    rng = np.random.default_rng(0)
    mean = np.mean([random_rotation(rng) for _ in range(4000)], axis=0)
    assert np.abs(mean).max() < 0.05


def test_apply_rigid_matches_formula_and_preserves_distances():
    rng = np.random.default_rng(2)
    xyz = _cloud(50, 3)
    rot, shift = random_rotation(rng), np.array([0.5, -1.0, 2.0])
    out = apply_rigid(xyz, rot, shift)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[7], rot @ xyz[7].astype(np.float64) + shift, atol=1e-6)
    d_in = np.linalg.norm(xyz[:, None] - xyz[None], axis=-1)
    d_out = np.linalg.norm(out[:, None] - out[None], axis=-1)
    np.testing.assert_allclose(d_out, d_in, atol=1e-5)


def test_apply_rigid_rejects_bad_shapes():
    with pytest.raises(ValueError, match="apply_rigid expects"):
        apply_rigid(np.zeros((4, 3)), np.eye(4), np.zeros(3))


# ----------------------------------------------------------------------------------------------------------
# torch rigid transforms
# ----------------------------------------------------------------------------------------------------------
def test_random_rigid_transforms_proper_rotations_and_bounded_translations():
    R, t = random_rigid_transforms(64, generator=torch.Generator().manual_seed(0), max_translation=0.3)
    assert R.shape == (64, 3, 3) and t.shape == (64, 3)
    assert R.dtype == torch.float32 and t.dtype == torch.float32
    eye = torch.eye(3).expand(64, 3, 3)
    torch.testing.assert_close(R @ R.transpose(1, 2), eye, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(64), atol=1e-5, rtol=0)
    assert t.abs().max() <= 0.3
    assert t.abs().max() > 0.15  # the range is used, not collapsed to 0
    assert (R - R[0]).abs().amax(dim=(1, 2))[1:].min() > 1e-3  # every sample differs from the first


def test_random_rigid_transforms_seeded_reproducible():
    a = random_rigid_transforms(8, generator=torch.Generator().manual_seed(7))
    b = random_rigid_transforms(8, generator=torch.Generator().manual_seed(7))
    c = random_rigid_transforms(8, generator=torch.Generator().manual_seed(8))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a[0], c[0])


def test_random_rigid_transforms_dtype_and_uniform_mean():
    R, t = random_rigid_transforms(4000, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert R.dtype == torch.float64 and t.dtype == torch.float64
    assert R.mean(0).abs().max() < 0.05
    assert t.mean(0).abs().max() < 0.02


def test_apply_rigid_torch_preserves_distances_and_matches_numpy():
    gen = torch.Generator().manual_seed(3)
    xyz = torch.rand(3, 40, 3, generator=gen)
    R, t = random_rigid_transforms(3, generator=gen)
    out = apply_rigid_torch(xyz, R, t)
    assert out.shape == (3, 40, 3)
    def dist(x):  # exact pairwise distances (cdist's matrix-product form loses precision near 0)
        return (x[:, :, None] - x[:, None]).norm(dim=-1)

    torch.testing.assert_close(dist(out), dist(xyz), atol=1e-5, rtol=0)
    for b in range(3):
        expected = apply_rigid(xyz[b].numpy(), R[b].numpy(), t[b].numpy())
        np.testing.assert_allclose(out[b].numpy(), expected, atol=1e-6)


def test_apply_rigid_torch_is_differentiable_and_rejects_bad_shapes():
    xyz = torch.rand(2, 5, 3, requires_grad=True)
    R, t = random_rigid_transforms(2, generator=torch.Generator().manual_seed(0))
    apply_rigid_torch(xyz, R, t).sum().backward()
    assert xyz.grad is not None and xyz.grad.shape == (2, 5, 3)
    with pytest.raises(ValueError, match="apply_rigid_torch expects"):
        apply_rigid_torch(torch.rand(2, 5, 3), R[:1], t[:1])
    with pytest.raises(ValueError, match="apply_rigid_torch expects"):
        apply_rigid_torch(torch.rand(5, 3), R, t)


def test_model_input_resamples_then_normalises():
    from enel.points.transforms import model_input, pc_norm, resample, with_zero_color

    rng = np.random.default_rng(0)
    pts = np.concatenate([rng.normal(size=(300, 3)) * 5 + 2, rng.uniform(size=(300, 3))], axis=1)
    out = model_input(pts, 64)
    ref = resample(pts, 64)  # the order matters: normalising first would centre on all 300 points
    assert out.dtype == np.float32 and out.shape == (64, 6)
    np.testing.assert_allclose(out[:, :3], pc_norm(ref[:, :3]), atol=1e-6)
    np.testing.assert_array_equal(out[:, 3:], ref[:, 3:].astype(np.float32))
    # normalised last: the 64 points themselves are centred and reach radius 1 (normalising the 300 first
    # would leave the FPS subset off-centre)
    np.testing.assert_allclose(out[:, :3].mean(0), 0, atol=1e-5)
    assert np.linalg.norm(out[:, :3], axis=1).max() == pytest.approx(1.0, abs=1e-5)
    assert np.abs(resample(pc_norm(pts[:, :3]), 64).mean(0)).max() > 1e-3
    zero = with_zero_color(out[:, :3])
    assert zero.shape == (64, 6) and not zero[:, 3:].any() and np.array_equal(zero[:, :3], out[:, :3])
