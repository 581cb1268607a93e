"""Batched point-cloud operations on torch tensors.

Every function takes batched clouds ``(B, N, 3)`` and is pure: no module state, no randomness that a
``torch.Generator`` doesn't control. Shapes are given in each docstring.

* :func:`farthest_point_sample` — FPS with a deterministic start (index 0) or a seeded random start.
  On the CPU it runs a compiled loop (numba) over the batch in parallel; on an accelerator it runs a
  vectorised torch loop. Both produce the indices of the released ENEL / Point-BERT loop
  (:func:`farthest_point_sample_reference`) on tie-free inputs.
* :func:`knn` — k nearest neighbours of queries ``(B, M, 3)`` among points ``(B, N, 3)``, chunked over the
  queries so that a 100k-point cloud never materialises a full ``M × N`` matrix at once.
* :func:`gather` — index a batched tensor with batched indices of any trailing shape.
* :func:`chamfer_l2` — Chamfer-L2 in the form of Point-MAE's ``ChamferDistanceL2`` (enel-method.md §2.3).
* :func:`voxel_group` — assign points to the cells of a regular grid, per sample, with a variable number of
  occupied cells (stage-2 dynamic grid sampling).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "farthest_point_sample",
    "farthest_point_sample_reference",
    "farthest_point_sample_np",
    "knn",
    "gather",
    "square_distance",
    "chamfer_l2",
    "VoxelGroups",
    "voxel_group",
]

_KNN_CHUNK_ELEMENTS = 2**24  # at most ~16.7 M distances (64 MiB in fp32) per chunk and batch element


# ----------------------------------------------------------------------------------------------------------
# Farthest point sampling
# ----------------------------------------------------------------------------------------------------------
def _numba_fps():
    """Compile (once, cached on disk) the CPU FPS kernel; ``None`` when numba is unavailable."""
    global _NUMBA_FPS
    if _NUMBA_FPS is not None:
        return _NUMBA_FPS or None
    try:
        from numba import njit, prange
    except ImportError:  # pragma: no cover - numba is a declared dependency
        _NUMBA_FPS = False
        return None

    @njit(parallel=True, cache=True, fastmath=False, nogil=True)
    def _fps(xyz, n_samples, starts):  # pragma: no cover - compiled
        batch, n_points, _ = xyz.shape
        out = np.empty((batch, n_samples), np.int64)
        for b in prange(batch):
            dist = np.full(n_points, 1e10, np.float32)
            far = starts[b]
            for i in range(n_samples):
                out[b, i] = far
                cx = xyz[b, far, 0]
                cy = xyz[b, far, 1]
                cz = xyz[b, far, 2]
                best = np.float32(-1.0)
                best_j = 0
                for j in range(n_points):
                    dx = xyz[b, j, 0] - cx
                    dy = xyz[b, j, 1] - cy
                    dz = xyz[b, j, 2] - cz
                    d = dx * dx + dy * dy + dz * dz
                    if d < dist[j]:
                        dist[j] = d
                    if dist[j] > best:
                        best = dist[j]
                        best_j = j
                far = best_j
        return out

    _NUMBA_FPS = _fps
    return _fps


_NUMBA_FPS = None


def _start_indices(batch: int, n_points: int, random_start: bool, generator: torch.Generator | None, device):
    if not random_start:
        return torch.zeros(batch, dtype=torch.long, device=device)
    gen_device = generator.device if generator is not None else torch.device("cpu")
    starts = torch.randint(0, n_points, (batch,), generator=generator, device=gen_device)
    return starts.to(device)


def _fps_torch(xyz: torch.Tensor, n_samples: int, starts: torch.Tensor) -> torch.Tensor:
    """Vectorised torch loop (accelerators); the same arithmetic as the reference, fewer kernels."""
    batch, n_points, _ = xyz.shape
    out = torch.empty(batch, n_samples, dtype=torch.long, device=xyz.device)
    dist = torch.full((batch, n_points), 1e10, dtype=xyz.dtype, device=xyz.device)
    batch_idx = torch.arange(batch, device=xyz.device)
    far = starts
    for i in range(n_samples):
        out[:, i] = far
        centre = xyz[batch_idx, far].unsqueeze(1)
        torch.minimum(dist, ((xyz - centre) ** 2).sum(-1), out=dist)
        far = dist.argmax(-1)
    return out


def farthest_point_sample(
    xyz: torch.Tensor,
    n_samples: int,
    *,
    random_start: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Farthest point sampling.

    Args:
        xyz: ``(B, N, 3)`` coordinates (any float dtype; distances are computed in fp32).
        n_samples: number of centres ``G`` to pick, ``1 <= G <= N``.
        random_start: start from a random index per sample (drawn from ``generator``) instead of index 0.
        generator: the ``torch.Generator`` for the random start; seeded runs are reproducible.

    Returns:
        ``(B, G)`` int64 indices into ``N``, in the order FPS picked them (the first is the start).
    """
    if xyz.dim() != 3 or xyz.shape[-1] != 3:
        raise ValueError(f"farthest_point_sample expects (B, N, 3) coordinates, got shape {tuple(xyz.shape)}")
    batch, n_points, _ = xyz.shape
    if not 1 <= n_samples <= n_points:
        raise ValueError(f"cannot pick {n_samples} centres from {n_points} points")
    starts = _start_indices(batch, n_points, random_start, generator, xyz.device)
    pts = xyz.detach().float()
    kernel = _numba_fps() if pts.device.type == "cpu" else None
    if kernel is None:
        return _fps_torch(pts, n_samples, starts)
    idx = kernel(np.ascontiguousarray(pts.numpy()), int(n_samples), starts.numpy().astype(np.int64))
    return torch.from_numpy(idx)


def farthest_point_sample_np(xyz: np.ndarray, n_samples: int, start: int = 0) -> np.ndarray:
    """FPS on one numpy cloud ``(N, 3)``; returns ``(G,)`` int64 indices. Same algorithm as above."""
    pts = torch.as_tensor(np.ascontiguousarray(xyz, dtype=np.float32)).unsqueeze(0)
    n_points = pts.shape[1]
    if not 0 <= start < n_points:
        raise ValueError(f"start index {start} outside a cloud of {n_points} points")
    kernel = _numba_fps()
    starts = np.array([start], dtype=np.int64)
    if kernel is None:  # pragma: no cover
        return _fps_torch(pts, n_samples, torch.from_numpy(starts))[0].numpy()
    if not 1 <= n_samples <= n_points:
        raise ValueError(f"cannot pick {n_samples} centres from {n_points} points")
    return kernel(pts.numpy(), int(n_samples), starts)[0]


def farthest_point_sample_reference(xyz: torch.Tensor, n_samples: int, starts: torch.Tensor | None = None):
    """The released ENEL / Point-BERT FPS (``misc.fps``), kept as the baseline for benchmarks and tests.

    A Python loop over centres updating a running distance; ``(B, N, 3) -> (B, G)``.
    """
    batch, n_points, _ = xyz.shape
    centroids = torch.zeros(batch, n_samples, dtype=torch.long, device=xyz.device)
    distance = torch.ones(batch, n_points, device=xyz.device) * 1e10
    farthest = starts if starts is not None else torch.zeros(batch, dtype=torch.long, device=xyz.device)
    batch_indices = torch.arange(batch, dtype=torch.long, device=xyz.device)
    for i in range(n_samples):
        centroids[:, i] = farthest
        centroid = xyz[batch_indices, farthest, :].view(batch, 1, 3)
        dist = torch.sum((xyz - centroid) ** 2, -1)
        distance = torch.min(distance, dist)
        farthest = torch.max(distance, -1)[1]
    return centroids


# ----------------------------------------------------------------------------------------------------------
# Neighbours, gather, distances
# ----------------------------------------------------------------------------------------------------------
def square_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances ``(B, M, 3), (B, N, 3) -> (B, M, N)``, exact (no ``|a|²-2ab+|b|²`` cancellation)."""
    a = a.unsqueeze(2)
    b = b.unsqueeze(1)
    d = (a[..., 0] - b[..., 0]).square_()
    d += (a[..., 1] - b[..., 1]).square_()
    d += (a[..., 2] - b[..., 2]).square_()
    return d


def knn(
    queries: torch.Tensor,
    points: torch.Tensor,
    k: int,
    *,
    chunk_elements: int = _KNN_CHUNK_ELEMENTS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """k nearest neighbours of each query among ``points``.

    Args:
        queries: ``(B, M, 3)``.
        points: ``(B, N, 3)``.
        k: neighbours per query, ``1 <= k <= N``.
        chunk_elements: upper bound on ``chunk × N`` distances computed at once per batch element.

    Returns:
        ``(idx, sq_dist)``: ``(B, M, k)`` int64 indices into ``N`` sorted by increasing distance (ties broken
        by the lower index), and the matching ``(B, M, k)`` squared distances (fp32).
    """
    if queries.dim() != 3 or points.dim() != 3 or queries.shape[-1] != 3 or points.shape[-1] != 3:
        raise ValueError(f"knn expects (B, M, 3) and (B, N, 3), got {tuple(queries.shape)}, {tuple(points.shape)}")
    if queries.shape[0] != points.shape[0]:
        raise ValueError(f"batch sizes differ: {queries.shape[0]} queries vs {points.shape[0]} clouds")
    n_points = points.shape[1]
    if not 1 <= k <= n_points:
        raise ValueError(f"k={k} neighbours requested from a cloud of {n_points} points")
    q = queries.detach().float()
    p = points.detach().float()
    step = max(1, chunk_elements // max(1, n_points * max(1, q.shape[0])))
    out_idx, out_d = [], []
    for start in range(0, q.shape[1], step):
        d = square_distance(q[:, start : start + step], p)
        idx, dist = _k_smallest_lowest_index(d, k)
        out_idx.append(idx)
        out_d.append(dist)
    return torch.cat(out_idx, 1), torch.cat(out_d, 1)


def _k_smallest_lowest_index(d: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k smallest entries of each row of ``d (B, M, N)``, ties broken by the lower index, sorted.

    ``topk`` alone picks an unspecified member of a tie at the k-th place; a full sort is O(N log N) per row.
    This takes the k-th smallest value from ``topk`` and then selects, in index order, every strictly closer
    point plus the lowest-indexed points at exactly that distance.
    """
    kth = d.topk(k, dim=-1, largest=False, sorted=True).values[..., -1:]
    closer = d < kth
    tied = d == kth
    need = k - closer.sum(-1, keepdim=True)
    chosen = closer | (tied & (tied.cumsum(-1) <= need))
    idx = chosen.nonzero()[:, -1].view(*d.shape[:-1], k)  # exactly k per row, in index order
    dist = torch.gather(d, -1, idx)
    order = torch.sort(dist, dim=-1, stable=True).indices  # stable: equal distances keep index order
    return torch.gather(idx, -1, order), torch.gather(dist, -1, order)


def gather(values: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Batched gather along dim 1.

    Args:
        values: ``(B, N, *C)``.
        idx: ``(B, *S)`` int64 indices into ``N``.

    Returns:
        ``(B, *S, *C)``: ``out[b, s...] = values[b, idx[b, s...]]``.
    """
    batch = values.shape[0]
    if idx.shape[0] != batch:
        raise ValueError(f"gather: batch of values {batch} != batch of indices {idx.shape[0]}")
    flat = idx.reshape(batch, -1)
    trailing = values.shape[2:]
    expanded = flat.view(batch, -1, *([1] * len(trailing))).expand(batch, flat.shape[1], *trailing)
    out = torch.gather(values, 1, expanded)
    return out.view(*idx.shape, *trailing)


def chamfer_l2(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Chamfer-L2 of Point-MAE's ``ChamferDistanceL2`` (enel-method.md §2.3).

    ``mean_i min_j ||a_i - b_j||² + mean_j min_i ||b_j - a_i||²`` with squared distances, each mean taken over
    every point of every set in the batch.

    Args:
        pred: ``(S, P, 3)`` predicted point sets.
        target: ``(S, Q, 3)`` target point sets.

    Returns:
        A scalar tensor (fp32).
    """
    if pred.dim() != 3 or target.dim() != 3 or pred.shape[0] != target.shape[0]:
        raise ValueError(f"chamfer_l2 expects (S, P, 3) and (S, Q, 3), got {tuple(pred.shape)}, {tuple(target.shape)}")
    d = square_distance(pred.float(), target.float())
    return d.min(dim=2).values.mean() + d.min(dim=1).values.mean()


# ----------------------------------------------------------------------------------------------------------
# Voxel grouping
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VoxelGroups:
    """The cells a batch of clouds falls into.

    Attributes:
        assignment: ``(B, N)`` int64, the cell index (``0 .. num_cells[b] - 1``) of each point; cells are
            numbered in the order of their first member, so a cloud whose points all sit in different
            cells keeps its point order.
        num_cells: ``(B,)`` int64, occupied cells per sample.
        members: ``(B, C, K)`` int64 point indices of each cell, ``C = max(num_cells)``,
            ``K = max occupancy``; slots beyond a cell's occupancy hold ``-1``.
        counts: ``(B, C)`` int64 occupancy of each cell (0 for cells beyond ``num_cells[b]``).
    """

    assignment: torch.Tensor
    num_cells: torch.Tensor
    members: torch.Tensor
    counts: torch.Tensor


def voxel_group(xyz: torch.Tensor, cell_size: float | torch.Tensor, valid: torch.Tensor | None = None) -> VoxelGroups:
    """Group points by a regular grid of cubic cells, per sample.

    Args:
        xyz: ``(B, N, 3)`` coordinates.
        cell_size: edge length of a cell, a float or a ``(B,)`` tensor (one size per sample).
        valid: optional ``(B, N)`` bool; invalid points get assignment ``-1`` and join no cell.

    Returns:
        :class:`VoxelGroups`. The grid is anchored at the origin, so the grouping of a cloud does not
        depend on its batch mates.
    """
    if xyz.dim() != 3 or xyz.shape[-1] != 3:
        raise ValueError(f"voxel_group expects (B, N, 3), got {tuple(xyz.shape)}")
    batch, n_points, _ = xyz.shape
    size = torch.as_tensor(cell_size, dtype=torch.float64, device=xyz.device).reshape(-1)
    if size.numel() == 1:
        size = size.expand(batch)
    if size.numel() != batch or bool((size <= 0).any()):
        raise ValueError("cell_size must be positive, one value or one per sample")
    if valid is None:
        valid = torch.ones(batch, n_points, dtype=torch.bool, device=xyz.device)
    cells = torch.floor(xyz.detach().double() / size.view(batch, 1, 1)).long()  # (B, N, 3)
    assignment = torch.full((batch, n_points), -1, dtype=torch.long, device=xyz.device)
    num_cells = torch.zeros(batch, dtype=torch.long, device=xyz.device)
    for b in range(batch):
        keep = valid[b].nonzero().squeeze(1)
        if keep.numel() == 0:
            continue
        _, inverse = torch.unique(cells[b, keep], dim=0, return_inverse=True)
        # renumber cells by the first member's position so that the cell order follows the point order
        first = torch.full((int(inverse.max()) + 1,), n_points, dtype=torch.long, device=xyz.device)
        first.scatter_reduce_(0, inverse, torch.arange(keep.numel(), device=xyz.device), reduce="amin")
        rank = torch.empty_like(first)
        rank[torch.argsort(first)] = torch.arange(first.numel(), device=xyz.device)
        assignment[b, keep] = rank[inverse]
        num_cells[b] = first.numel()
    n_cells = int(num_cells.max()) if batch else 0
    counts = torch.zeros(batch, max(n_cells, 1), dtype=torch.long, device=xyz.device)
    for b in range(batch):
        a = assignment[b]
        ok = a >= 0
        counts[b].scatter_add_(0, a[ok], torch.ones_like(a[ok]))
    max_k = int(counts.max()) if n_cells else 1
    members = torch.full((batch, max(n_cells, 1), max(max_k, 1)), -1, dtype=torch.long, device=xyz.device)
    for b in range(batch):
        a = assignment[b]
        order = torch.argsort(torch.where(a >= 0, a, n_cells + 1), stable=True)
        order = order[: int(counts[b].sum())]
        cell_of = a[order]
        start = torch.cumsum(counts[b], 0) - counts[b]
        slot = torch.arange(order.numel(), device=xyz.device) - start[cell_of]
        members[b, cell_of, slot] = order
    return VoxelGroups(assignment=assignment, num_cells=num_cells, members=members, counts=counts)

