"""Batched point ops against brute-force numpy references.

Every reference computes squared distances with the same fp32 arithmetic as the library,
``((x - x')² + (y - y')²) + (z - z')²``, so indices (ties included) must match exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from enel.points import ops


# ----------------------------------------------------------------------------------------------------------
# numpy references
# ----------------------------------------------------------------------------------------------------------
def np_sq_dist(q: np.ndarray, p: np.ndarray) -> np.ndarray:
    """``(M, 3), (N, 3) -> (M, N)`` fp32 squared distances, summed in the order x, y, z."""
    q = q.astype(np.float32)
    p = p.astype(np.float32)
    d = np.square(q[:, None, 0] - p[None, :, 0])
    d = d + np.square(q[:, None, 1] - p[None, :, 1])
    return d + np.square(q[:, None, 2] - p[None, :, 2])


def np_fps(xyz: np.ndarray, n_samples: int, start: int = 0) -> np.ndarray:
    """Brute-force FPS on one cloud ``(N, 3)``: ties go to the first index (``np.argmax``)."""
    dist = np.full(len(xyz), 1e10, np.float32)
    far, out = start, []
    for _ in range(n_samples):
        out.append(far)
        dist = np.minimum(dist, np_sq_dist(xyz[far : far + 1], xyz)[0])
        far = int(np.argmax(dist))
    return np.array(out, dtype=np.int64)


def np_knn(q: np.ndarray, p: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force kNN on one cloud: sorted by (squared distance, index)."""
    d = np_sq_dist(q, p)
    idx = np.stack([np.lexsort((np.arange(len(p)), row))[:k] for row in d])
    return idx, np.take_along_axis(d, idx, 1)


def np_voxel(xyz: np.ndarray, size: float, valid: np.ndarray | None = None):
    """Dict-based grid grouping of one cloud: cells numbered in order of their first member."""
    cells = np.floor(xyz.astype(np.float64) / size).astype(np.int64)
    valid = np.ones(len(xyz), bool) if valid is None else valid
    ids: dict[tuple, int] = {}
    assignment = np.full(len(xyz), -1, np.int64)
    for i, cell in enumerate(map(tuple, cells)):
        if valid[i]:
            assignment[i] = ids.setdefault(cell, len(ids))
    members = [np.flatnonzero(assignment == c) for c in range(len(ids))]
    return assignment, members


def grid_cloud(rng: np.random.Generator, n: int, side: int = 4) -> np.ndarray:
    """Points on a small integer grid: many exactly equal distances and duplicate points."""
    return rng.integers(0, side, size=(n, 3)).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------
# farthest point sampling
# ----------------------------------------------------------------------------------------------------------
def test_fps_matches_numpy_brute_force_deterministic_start():
    rng = np.random.default_rng(0)
    xyz = rng.normal(size=(3, 700, 3)).astype(np.float32)
    got = ops.farthest_point_sample(torch.from_numpy(xyz), 200)
    assert got.shape == (3, 200) and got.dtype == torch.long
    for b in range(3):
        np.testing.assert_array_equal(got[b].numpy(), np_fps(xyz[b], 200))
    assert (got[:, 0] == 0).all()


def test_fps_random_start_is_seeded_and_matches_numpy():
    rng = np.random.default_rng(1)
    xyz = torch.from_numpy(rng.normal(size=(4, 500, 3)).astype(np.float32))

    def run(seed):
        return ops.farthest_point_sample(xyz, 64, random_start=True, generator=torch.Generator().manual_seed(seed))

    a, b, c = run(7), run(7), run(8)
    assert torch.equal(a, b)
    assert not torch.equal(a[:, 0], c[:, 0])
    expected_starts = torch.randint(0, 500, (4,), generator=torch.Generator().manual_seed(7))
    assert torch.equal(a[:, 0], expected_starts)
    for i in range(4):
        np.testing.assert_array_equal(a[i].numpy(), np_fps(xyz[i].numpy(), 64, start=int(a[i, 0])))


def test_fps_matches_released_reference_on_tie_free_input():
    rng = np.random.default_rng(2)
    xyz = torch.from_numpy(rng.random((3, 1500, 3), dtype=np.float32))
    starts = torch.tensor([0, 17, 1499])
    ref = ops.farthest_point_sample_reference(xyz, 200, starts)
    assert torch.equal(ops._fps_torch(xyz, 200, starts), ref)
    assert torch.equal(ops.farthest_point_sample(xyz, 200), ops.farthest_point_sample_reference(xyz, 200))


def test_fps_ties_pick_the_first_index():
    rng = np.random.default_rng(3)
    xyz = grid_cloud(rng, 400)
    got = ops.farthest_point_sample(torch.from_numpy(xyz)[None], 60)[0].numpy()
    np.testing.assert_array_equal(got, np_fps(xyz, 60))
    # spelled out on a square: from corner 0, the two adjacent corners (1, 2) tie at distance 1 but the
    # opposite corner (3) is farther; then 1 and 2 tie at distance 1 and the lower index wins
    square = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]]])
    assert ops.farthest_point_sample(square, 4)[0].tolist() == [0, 3, 1, 2]
    # the released loop agrees on ties (torch.max returns the first maximal index)
    ref = ops.farthest_point_sample_reference(torch.from_numpy(xyz)[None], 60)[0].numpy()
    np.testing.assert_array_equal(got, ref)


def test_fps_duplicates_come_after_every_distinct_point():
    rng = np.random.default_rng(4)
    distinct = rng.normal(size=(30, 3)).astype(np.float32)
    xyz = np.concatenate([distinct, distinct[::-1], distinct])  # every point three times
    got = ops.farthest_point_sample(torch.from_numpy(xyz)[None], 40)[0].numpy()
    np.testing.assert_array_equal(got, np_fps(xyz, 40))
    assert sorted(got[:30].tolist()) == list(range(30))  # the first copy (lowest index) of each point
    assert (got[30:] == 0).all()  # then every distance is 0 and the first index wins


def test_fps_batch_equals_each_cloud_alone():
    rng = np.random.default_rng(5)
    clouds = [rng.normal(size=(600, 3)).astype(np.float32), grid_cloud(rng, 600), rng.random((600, 3), np.float32)]
    batch = ops.farthest_point_sample(torch.from_numpy(np.stack(clouds)), 100)
    for b, cloud in enumerate(clouds):
        assert torch.equal(batch[b], ops.farthest_point_sample(torch.from_numpy(cloud)[None], 100)[0])


def test_fps_torch_fallback_equals_compiled_kernel():
    rng = np.random.default_rng(6)
    xyz = torch.from_numpy(np.stack([rng.normal(size=(900, 3)), grid_cloud(rng, 900)]).astype(np.float32))
    compiled = ops.farthest_point_sample(xyz, 150, random_start=True, generator=torch.Generator().manual_seed(0))
    starts = compiled[:, 0]
    assert torch.equal(ops._fps_torch(xyz, 150, starts), compiled)
    # fp64 / fp16 input: distances are computed in fp32 on both paths
    assert torch.equal(ops._fps_torch(xyz.double(), 150, starts), compiled)
    assert torch.equal(ops.farthest_point_sample(xyz.double(), 150), ops.farthest_point_sample(xyz, 150))


def test_fps_numpy_wrapper_and_thread_counts():
    rng = np.random.default_rng(7)
    xyz = rng.normal(size=(8, 300, 3)).astype(np.float32)
    np.testing.assert_array_equal(ops.farthest_point_sample_np(xyz[0], 50, start=3), np_fps(xyz[0], 50, start=3))
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            results.append(ops.farthest_point_sample(torch.from_numpy(xyz), 50))
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(results[0], r) for r in results[1:])


@pytest.mark.parametrize(
    "shape, n, err",
    [
        ((10, 3), 2, "(B, N, 3)"),
        ((1, 10, 2), 2, "(B, N, 3)"),
        ((1, 10, 3), 0, "cannot pick"),
        ((1, 10, 3), 11, "cannot pick"),
    ],
)
def test_fps_errors(shape, n, err):
    with pytest.raises(ValueError, match=err.replace("(", r"\(").replace(")", r"\)")):
        ops.farthest_point_sample(torch.zeros(shape), n)


def test_fps_and_knn_reject_non_finite_coordinates():
    xyz = torch.rand(1, 20, 3)
    xyz[0, 4, 1] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        ops.farthest_point_sample(xyz, 5)
    with pytest.raises(ValueError, match="finite"):
        ops.knn(torch.rand(1, 2, 3), xyz, 3)
    with pytest.raises(ValueError, match="start index"):
        ops.farthest_point_sample_np(np.zeros((5, 3)), 2, start=5)


# ----------------------------------------------------------------------------------------------------------
# kNN
# ----------------------------------------------------------------------------------------------------------
def _check_knn(queries: np.ndarray, points: np.ndarray, k: int, idx: torch.Tensor, dist: torch.Tensor):
    assert idx.shape == dist.shape == (len(queries), queries.shape[1], k)
    assert idx.dtype == torch.long and dist.dtype == torch.float32
    for b in range(len(queries)):
        ref_idx, ref_d = np_knn(queries[b], points[b], k)
        np.testing.assert_array_equal(idx[b].numpy(), ref_idx)
        np.testing.assert_array_equal(dist[b].numpy(), ref_d)


def test_knn_matches_numpy_brute_force():
    rng = np.random.default_rng(10)
    points = rng.normal(size=(2, 500, 3)).astype(np.float32)
    queries = rng.normal(size=(2, 70, 3)).astype(np.float32)
    idx, dist = ops.knn(torch.from_numpy(queries), torch.from_numpy(points), 17)
    _check_knn(queries, points, 17, idx, dist)


def test_knn_ties_and_duplicates_order_by_index():
    rng = np.random.default_rng(11)
    points = np.stack([grid_cloud(rng, 300, side=3), np.repeat(rng.normal(size=(30, 3)), 10, 0)]).astype(np.float32)
    queries = np.stack([grid_cloud(rng, 40, side=3), points[1, ::7][:40]]).astype(np.float32)
    for k in (1, 9, 27, 300):
        idx, dist = ops.knn(torch.from_numpy(queries), torch.from_numpy(points), k)
        _check_knn(queries, points, k, idx, dist)
    # spelled out: query at the origin, points 1 and 3 tie at distance 1, point 0 duplicates point 2
    pts = torch.tensor([[[2.0, 0, 0], [1, 0, 0], [2, 0, 0], [0, 1, 0]]])
    idx, dist = ops.knn(torch.zeros(1, 1, 3), pts, 4)
    assert idx[0, 0].tolist() == [1, 3, 0, 2] and dist[0, 0].tolist() == [1, 1, 4, 4]


@pytest.mark.parametrize("chunk_elements", [1, 500, 7_777, 2**24])
def test_knn_chunking_gives_identical_results(chunk_elements):
    rng = np.random.default_rng(12)
    points = torch.from_numpy(np.stack([grid_cloud(rng, 250), rng.normal(size=(250, 3)).astype(np.float32)]))
    queries = points[:, ::3]
    full_idx, full_d = ops.knn(queries, points, 12)
    t_idx, t_d = ops._knn_torch(queries, points, 12, chunk_elements=chunk_elements)
    assert torch.equal(t_idx, full_idx) and torch.equal(t_d, full_d)
    p_idx, p_d = ops.knn(queries, points, 12, chunk_elements=chunk_elements)
    assert torch.equal(p_idx, full_idx) and torch.equal(p_d, full_d)
    _check_knn(queries.numpy(), points.numpy(), 12, full_idx, full_d)


def test_knn_batch_of_different_clouds_equals_each_alone():
    rng = np.random.default_rng(13)
    points = torch.from_numpy(np.stack([rng.normal(size=(400, 3)) * s for s in (0.1, 1.0, 30.0)]).astype(np.float32))
    queries = torch.from_numpy(rng.normal(size=(3, 50, 3)).astype(np.float32))
    idx, dist = ops.knn(queries, points, 8)
    for b in range(3):
        one_idx, one_d = ops.knn(queries[b : b + 1], points[b : b + 1], 8)
        assert torch.equal(idx[b], one_idx[0]) and torch.equal(dist[b], one_d[0])


@pytest.mark.parametrize(
    "q_shape, p_shape, k, err",
    [
        ((1, 4, 3), (1, 10, 2), 3, "expects"),
        ((4, 3), (1, 10, 3), 3, "expects"),
        ((2, 4, 3), (1, 10, 3), 3, "batch sizes"),
        ((1, 4, 3), (1, 10, 3), 0, "neighbours"),
        ((1, 4, 3), (1, 10, 3), 11, "neighbours"),
    ],
)
def test_knn_errors(q_shape, p_shape, k, err):
    with pytest.raises(ValueError, match=err):
        ops.knn(torch.zeros(q_shape), torch.zeros(p_shape), k)


# ----------------------------------------------------------------------------------------------------------
# gather, chamfer
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("trailing", [(), (3,), (5, 2)])
@pytest.mark.parametrize("idx_shape", [(7,), (4, 6)])
def test_gather_matches_numpy_fancy_indexing(trailing, idx_shape):
    rng = np.random.default_rng(20)
    values = rng.normal(size=(3, 11, *trailing)).astype(np.float32)
    idx = rng.integers(0, 11, size=(3, *idx_shape))
    got = ops.gather(torch.from_numpy(values), torch.from_numpy(idx))
    expected = np.stack([values[b][idx[b]] for b in range(3)])
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got.numpy(), expected)


def test_gather_gradient_counts_each_use():
    values = torch.zeros(2, 5, 3, requires_grad=True)
    idx = torch.tensor([[0, 0, 4], [1, 2, 2]])
    ops.gather(values, idx).sum().backward()
    counts = torch.tensor([[2, 0, 0, 0, 1], [0, 1, 2, 0, 0]], dtype=torch.float32)
    assert torch.equal(values.grad, counts[..., None].expand(2, 5, 3))


def test_gather_errors():
    with pytest.raises(ValueError, match="batch"):
        ops.gather(torch.zeros(2, 5, 3), torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        ops.gather(torch.zeros(2, 5, 3), torch.tensor([[0, 5], [0, 1]]))  # 5 would read the next cloud
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        ops.gather(torch.zeros(2, 5, 3), torch.tensor([[0, -1], [0, 1]]))
    with pytest.raises(ValueError, match="integers"):
        ops.gather(torch.zeros(2, 5, 3), torch.zeros(2, 4))


def np_chamfer(a: np.ndarray, b: np.ndarray) -> float:
    a_to_b = [np_sq_dist(a[s], b[s]).min(1) for s in range(len(a))]
    b_to_a = [np_sq_dist(b[s], a[s]).min(1) for s in range(len(a))]
    return float(np.concatenate(a_to_b).astype(np.float64).mean() + np.concatenate(b_to_a).astype(np.float64).mean())


def test_chamfer_l2_matches_numpy_brute_force():
    rng = np.random.default_rng(21)
    a = rng.normal(size=(5, 40, 3)).astype(np.float32)
    b = rng.normal(size=(5, 27, 3)).astype(np.float32)
    got = ops.chamfer_l2(torch.from_numpy(a), torch.from_numpy(b))
    assert got.dim() == 0 and got.dtype == torch.float32
    assert got.item() == pytest.approx(np_chamfer(a, b), rel=1e-5)
    assert ops.chamfer_l2(torch.from_numpy(a), torch.from_numpy(a)).item() == 0.0
    # not symmetric in the number of points but symmetric in the roles
    assert ops.chamfer_l2(torch.from_numpy(b), torch.from_numpy(a)).item() == pytest.approx(got.item(), rel=1e-6)


def test_chamfer_l2_gradient_and_errors():
    pred = torch.zeros(1, 1, 3, requires_grad=True)
    target = torch.tensor([[[1.0, 0, 0], [3, 0, 0]]])
    loss = ops.chamfer_l2(pred, target)  # pred->target: 1; target->pred: (1 + 9) / 2
    assert loss.item() == pytest.approx(6.0)
    loss.backward()
    # d/dp of (p-1)² + ((p-1)² + (p-3)²)/2 at 0: -2 + (-2 - 6)/2 = -6
    assert pred.grad[0, 0].tolist() == pytest.approx([-6.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="chamfer_l2"):
        ops.chamfer_l2(torch.zeros(2, 4, 3), torch.zeros(3, 4, 3))
    with pytest.raises(ValueError, match="chamfer_l2"):
        ops.chamfer_l2(torch.zeros(2, 4, 2), torch.zeros(2, 4, 2))
    with pytest.raises(ValueError, match="empty"):
        ops.chamfer_l2(torch.zeros(2, 0, 3), torch.zeros(2, 4, 3))


# ----------------------------------------------------------------------------------------------------------
# voxel grouping
# ----------------------------------------------------------------------------------------------------------
def _check_voxels(groups: ops.VoxelGroups, xyz: np.ndarray, sizes, valid=None):
    batch = len(xyz)
    assert groups.num_cells.shape == (batch,)
    n_cells_max = groups.members.shape[1]
    for b in range(batch):
        assignment, members = np_voxel(xyz[b], sizes[b], None if valid is None else valid[b])
        np.testing.assert_array_equal(groups.assignment[b].numpy(), assignment)
        assert int(groups.num_cells[b]) == len(members)
        counts = groups.counts[b].numpy()
        assert counts.shape == (n_cells_max,)
        np.testing.assert_array_equal(counts[: len(members)], [len(m) for m in members])
        assert (counts[len(members) :] == 0).all()
        for c, m in enumerate(members):
            row = groups.members[b, c].numpy()
            np.testing.assert_array_equal(row[: len(m)], m)  # members in point order
            assert (row[len(m) :] == -1).all()
        assert (groups.members[b, len(members) :] == -1).all()
        # consistency: every assigned point is listed exactly once, in its own cell
        listed = groups.members[b][groups.members[b] >= 0]
        assert sorted(listed.tolist()) == np.flatnonzero(assignment >= 0).tolist()
    assert groups.members.shape[2] == max(1, int(groups.counts.max()))


def test_voxel_group_matches_dict_reference_with_variable_cells():
    rng = np.random.default_rng(30)
    xyz = np.stack([rng.normal(size=(300, 3)), rng.normal(size=(300, 3)) * 0.1, rng.random((300, 3)) * 5])
    xyz = xyz.astype(np.float32)
    groups = ops.voxel_group(torch.from_numpy(xyz), 0.5)
    _check_voxels(groups, xyz, [0.5] * 3)
    assert len(set(groups.num_cells.tolist())) == 3  # a different number of cells per sample


def test_voxel_group_per_sample_sizes_and_valid_masks():
    rng = np.random.default_rng(31)
    xyz = (rng.normal(size=(3, 200, 3)) * 2).astype(np.float32)
    sizes = [0.25, 1.0, 4.0]
    valid = rng.random((3, 200)) > 0.3
    valid[2] = False  # a sample with no valid point
    groups = ops.voxel_group(torch.from_numpy(xyz), torch.tensor(sizes), torch.from_numpy(valid))
    _check_voxels(groups, xyz, sizes, valid)
    assert int(groups.num_cells[2]) == 0 and (groups.assignment[2] == -1).all()


def test_voxel_group_one_cell_and_one_cell_per_point():
    rng = np.random.default_rng(32)
    inside = (rng.random((1, 50, 3)) * 0.9 + 0.05).astype(np.float32)  # all in the cell [0, 1)³
    groups = ops.voxel_group(torch.from_numpy(inside), 1.0)
    _check_voxels(groups, inside, [1.0])
    assert int(groups.num_cells[0]) == 1 and groups.members[0, 0].tolist() == list(range(50))

    spread = rng.permutation(np.arange(40))[:, None] * np.array([[1.0, 0.0, 0.0]]) + 0.5
    spread = spread[None].astype(np.float32)  # 40 points in 40 different unit cells, in shuffled order
    groups = ops.voxel_group(torch.from_numpy(spread), 1.0)
    _check_voxels(groups, spread, [1.0])
    assert groups.assignment[0].tolist() == list(range(40))  # cell order follows point order
    assert groups.members.shape == (1, 40, 1) and groups.members[0, :, 0].tolist() == list(range(40))


def test_voxel_group_negative_coordinates_use_floor():
    xyz = torch.tensor([[[-0.1, 0.0, 0.0], [0.1, 0.0, 0.0], [-0.9, 0.0, 0.0], [-1.5, 0.0, 0.0]]])
    groups = ops.voxel_group(xyz, 1.0)
    assert groups.assignment[0].tolist() == [0, 1, 0, 2]  # cells x = -1, 0, -1, -2 (floor, not truncation)
    _check_voxels(groups, xyz.numpy(), [1.0])


def test_voxel_group_errors():
    with pytest.raises(ValueError, match="expects"):
        ops.voxel_group(torch.zeros(5, 3), 1.0)
    with pytest.raises(ValueError, match="positive"):
        ops.voxel_group(torch.zeros(2, 5, 3), 0.0)
    with pytest.raises(ValueError, match="positive"):
        ops.voxel_group(torch.zeros(2, 5, 3), torch.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="valid"):
        ops.voxel_group(torch.zeros(2, 5, 3), 1.0, torch.ones(2, 4, dtype=torch.bool))
