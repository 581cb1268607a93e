"""Batched point-cloud operations on torch tensors.

Every function takes batched clouds ``(B, N, 3)`` and is pure: no module state, no randomness that a
``torch.Generator`` doesn't control. Shapes are given in each docstring.

* :func:`farthest_point_sample` — FPS with a deterministic start (index 0) or a seeded random start.
* :func:`knn` — k nearest neighbours of queries ``(B, M, 3)`` among points ``(B, N, 3)``, sorted by distance,
  ties broken by the lower index.
* :func:`gather` — index a batched tensor with batched indices of any trailing shape.
* :func:`chamfer_l2` — Chamfer-L2 in the form of Point-MAE's ``ChamferDistanceL2`` (enel-method.md §2.3).
* :func:`voxel_group` — assign points to the cells of a regular grid, per sample, with a variable number of
  occupied cells (stage-2 dynamic grid sampling).

How FPS and kNN run
-------------------
On the CPU both run compiled numba kernels. Each kernel is serial and releases the GIL; a small thread pool
with ``torch.get_num_threads()`` workers splits the batch (FPS) or the queries (kNN) between threads. We do
not use numba's own ``parallel=True``: its default OpenMP layer competes with torch's spinning OpenMP workers
on the same cores (measured: a 0.7 ms kernel took 8 ms right after a torch op), and switching numba's
threading layer is a process-wide setting that a library should not touch. kNN keeps ``k`` candidates per
query in a sorted buffer (insertion sort), so it needs ``O(N)`` memory per query instead of an ``M × N``
distance matrix. On an accelerator (or without numba) both run vectorised torch loops:
:func:`_fps_torch` and :func:`_knn_torch` (the latter chunked over queries).

Ties are defined, not left to the backend: FPS picks the **first** index among equally far points (the
behaviour of ``torch.max`` in the released loop :func:`farthest_point_sample_reference`), and kNN orders
neighbours by ``(squared distance, index)``. All paths compute squared distances with the same fp32
arithmetic, ``((x - x')² + (y - y')²) + (z - z')²``, so they return identical indices.

Coordinates must be finite: FPS and kNN raise ``ValueError`` on NaN or infinite input.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
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

_KNN_CHUNK_ELEMENTS = 2**24  # torch path: at most ~16.7 M distances (64 MiB in fp32) per chunk


# ----------------------------------------------------------------------------------------------------------
# Compiled CPU kernels and the thread pool that runs them
# ----------------------------------------------------------------------------------------------------------
_KERNELS: dict | None = None


def _numba_kernels() -> dict | None:
    """Compile (once; cached on disk) the serial CPU kernels; ``None`` when numba is unavailable."""
    global _KERNELS
    if _KERNELS is not None:
        return _KERNELS or None
    try:
        from numba import njit
    except ImportError:  # pragma: no cover - numba is a declared dependency
        _KERNELS = {}
        return None

    @njit(cache=True, nogil=True)
    def fps_range(p, n_samples, starts, out, lo, hi):  # pragma: no cover - compiled
        """FPS of clouds ``lo .. hi-1``; ``p (B, 3, N)`` fp32 (coordinate-major), ``out (B, G)``."""
        n_points = p.shape[2]
        dist = np.empty(n_points, np.float32)
        for b in range(lo, hi):
            xs = p[b, 0]
            ys = p[b, 1]
            zs = p[b, 2]
            dist[:] = np.float32(1e10)
            far = starts[b]
            for i in range(n_samples):
                out[b, i] = far
                cx = xs[far]
                cy = ys[far]
                cz = zs[far]
                for j in range(n_points):  # vectorisable: no loop-carried dependency
                    dx = xs[j] - cx
                    dy = ys[j] - cy
                    dz = zs[j] - cz
                    d = dx * dx + dy * dy + dz * dz
                    if d < dist[j]:
                        dist[j] = d
                best = dist[0]
                for j in range(1, n_points):
                    if dist[j] > best:
                        best = dist[j]
                for j in range(n_points):  # the first index at the maximum
                    if dist[j] == best:
                        far = j
                        break

    @njit(cache=True, nogil=True)
    def knn_range(q, p, k, idx, out_d, lo, hi):  # pragma: no cover - compiled
        """kNN of flat queries ``lo .. hi-1`` (``t = b * M + m``); ``q (B, M, 3)``, ``p (B, 3, N)``."""
        n_queries = q.shape[1]
        n_points = p.shape[2]
        d = np.empty(n_points, np.float32)
        for t in range(lo, hi):
            b = t // n_queries
            m = t - b * n_queries
            xs = p[b, 0]
            ys = p[b, 1]
            zs = p[b, 2]
            qx = q[b, m, 0]
            qy = q[b, m, 1]
            qz = q[b, m, 2]
            for j in range(n_points):
                dx = xs[j] - qx
                dy = ys[j] - qy
                dz = zs[j] - qz
                d[j] = dx * dx + dy * dy + dz * dz
            bd = out_d[b, m]
            bi = idx[b, m]
            count = 0
            for j in range(n_points):  # ascending j: an equal distance never displaces a lower index
                dj = d[j]
                if count < k:
                    pos = count
                    count += 1
                elif dj < bd[k - 1]:
                    pos = k - 1
                else:
                    continue
                while pos > 0 and bd[pos - 1] > dj:
                    bd[pos] = bd[pos - 1]
                    bi[pos] = bi[pos - 1]
                    pos -= 1
                bd[pos] = dj
                bi[pos] = j

    _KERNELS = {"fps": fps_range, "knn": knn_range}
    return _KERNELS


_POOL: ThreadPoolExecutor | None = None
_POOL_KEY: tuple[int, int] | None = None
_POOL_LOCK = threading.Lock()


def _pool(workers: int) -> ThreadPoolExecutor:
    """A process-local pool of ``workers`` helper threads (rebuilt after ``fork`` or a thread-count change)."""
    global _POOL, _POOL_KEY
    key = (os.getpid(), workers)
    with _POOL_LOCK:
        if _POOL is None or _POOL_KEY != key:
            if _POOL is not None and _POOL_KEY[0] == key[0]:
                _POOL.shutdown(wait=False)
            _POOL = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="enel-points")
            _POOL_KEY = key
    return _POOL


def _run_split(kernel, n_items: int, min_items: int, *args) -> None:
    """Run ``kernel(*args, lo, hi)`` over ``[0, n_items)`` on ``torch.get_num_threads()`` threads.

    The range is cut into a few chunks per thread (at least ``min_items`` items each) that the calling thread
    and the pool threads take in turn, so a thread slowed down by another process (or by torch's OpenMP
    workers still spinning after the previous op) simply takes fewer chunks.
    """
    workers = max(1, min(torch.get_num_threads(), n_items // max(1, min_items)))
    if workers == 1:
        kernel(*args, 0, n_items)
        return
    n_chunks = max(workers, min(n_items // max(1, min_items), 4 * workers))
    bounds = np.linspace(0, n_items, n_chunks + 1).astype(np.int64).tolist()
    chunks = iter(list(zip(bounds[:-1], bounds[1:])))
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                chunk = next(chunks, None)
            if chunk is None:
                return
            kernel(*args, chunk[0], chunk[1])

    futures = [_pool(workers - 1).submit(work) for _ in range(workers - 1)]
    try:
        work()
    finally:
        for f in futures:
            f.result()


def _coordinate_major(xyz: torch.Tensor) -> np.ndarray:
    """``(B, N, 3)`` CPU tensor -> contiguous fp32 ``(B, 3, N)`` numpy array (vectorisable inner loops)."""
    return np.ascontiguousarray(xyz.detach().float().numpy().transpose(0, 2, 1))


def _check_finite(name: str, t: torch.Tensor | np.ndarray) -> None:
    # numpy for CPU data: a single-threaded pass over a few kB, no wake-up of torch's worker threads
    ok = np.isfinite(t).all() if isinstance(t, np.ndarray) else bool(torch.isfinite(t).all())
    if not ok:
        raise ValueError(f"{name}: coordinates must be finite (found NaN or inf)")


# ----------------------------------------------------------------------------------------------------------
# Farthest point sampling
# ----------------------------------------------------------------------------------------------------------
def _start_indices(batch: int, n_points: int, random_start: bool, generator: torch.Generator | None, device):
    if not random_start:
        return torch.zeros(batch, dtype=torch.long, device=device)
    gen_device = generator.device if generator is not None else torch.device("cpu")
    starts = torch.randint(0, n_points, (batch,), generator=generator, device=gen_device)
    return starts.to(device)


def _fps_torch(xyz: torch.Tensor, n_samples: int, starts: torch.Tensor) -> torch.Tensor:
    """Vectorised torch FPS ``(B, N, 3), G, (B,) -> (B, G)`` (accelerators); same arithmetic and ties as the kernel."""
    batch, n_points, _ = xyz.shape
    xyz = xyz.float()
    out = torch.empty(batch, n_samples, dtype=torch.long, device=xyz.device)
    dist = torch.full((batch, n_points), 1e10, dtype=torch.float32, device=xyz.device)
    batch_idx = torch.arange(batch, device=xyz.device)
    far = starts.to(xyz.device)
    for i in range(n_samples):
        out[:, i] = far
        diff = xyz - xyz[batch_idx, far].unsqueeze(1)
        d = diff[..., 0].square()
        d += diff[..., 1].square()
        d += diff[..., 2].square()
        torch.minimum(dist, d, out=dist)
        far = dist.argmax(-1)  # the first index at the maximum
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
        xyz: ``(B, N, 3)`` finite coordinates (any float dtype; distances are computed in fp32).
        n_samples: number of centres ``G`` to pick, ``1 <= G <= N``.
        random_start: start from a random index per sample (drawn from ``generator``) instead of index 0.
        generator: the ``torch.Generator`` for the random start; seeded runs are reproducible.

    Returns:
        ``(B, G)`` int64 indices into ``N`` on ``xyz.device``, in the order FPS picked them (the first is the
        start). Among equally far points the lowest index is picked, so duplicates of a chosen point are only
        picked once every distinct point has been.
    """
    if xyz.dim() != 3 or xyz.shape[-1] != 3:
        raise ValueError(f"farthest_point_sample expects (B, N, 3) coordinates, got shape {tuple(xyz.shape)}")
    batch, n_points, _ = xyz.shape
    if not 1 <= n_samples <= n_points:
        raise ValueError(f"cannot pick {n_samples} centres from {n_points} points")
    starts = _start_indices(batch, n_points, random_start, generator, xyz.device)
    kernels = _numba_kernels() if xyz.device.type == "cpu" else None
    if kernels is None:
        _check_finite("farthest_point_sample", xyz)
        return _fps_torch(xyz.detach(), n_samples, starts)
    pts = _coordinate_major(xyz)
    _check_finite("farthest_point_sample", pts)
    out = np.empty((batch, n_samples), np.int64)
    _run_split(kernels["fps"], batch, 1, pts, int(n_samples), starts.numpy(), out)
    return torch.from_numpy(out)


def farthest_point_sample_np(xyz: np.ndarray, n_samples: int, start: int = 0) -> np.ndarray:
    """FPS on one numpy cloud ``(N, 3)``; returns ``(G,)`` int64 indices. Same algorithm as above."""
    pts = torch.as_tensor(np.ascontiguousarray(xyz, dtype=np.float32))
    if pts.dim() != 2 or pts.shape[-1] != 3:
        raise ValueError(f"farthest_point_sample_np expects (N, 3) coordinates, got shape {tuple(pts.shape)}")
    n_points = pts.shape[0]
    if not 0 <= start < n_points:
        raise ValueError(f"start index {start} outside a cloud of {n_points} points")
    if not 1 <= n_samples <= n_points:
        raise ValueError(f"cannot pick {n_samples} centres from {n_points} points")
    _check_finite("farthest_point_sample_np", pts)
    starts = torch.tensor([start], dtype=torch.long)
    kernels = _numba_kernels()
    if kernels is None:  # pragma: no cover
        return _fps_torch(pts.unsqueeze(0), n_samples, starts)[0].numpy()
    out = np.empty((1, n_samples), np.int64)
    kernels["fps"](_coordinate_major(pts.unsqueeze(0)), int(n_samples), starts.numpy(), out, 0, 1)
    return out[0]


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
    """Squared distances ``(B, M, 3), (B, N, 3) -> (B, M, N)``, exact (no ``|a|²-2ab+|b|²`` cancellation)."""
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
        queries: ``(B, M, 3)`` finite coordinates.
        points: ``(B, N, 3)`` finite coordinates.
        k: neighbours per query, ``1 <= k <= N``.
        chunk_elements: torch path only (accelerators): upper bound on the distances computed at once,
            ``chunk × N × B``. The CPU kernel needs ``O(N)`` memory per thread and ignores it.

    Returns:
        ``(idx, sq_dist)``: ``(B, M, k)`` int64 indices into ``N`` sorted by increasing distance (ties broken
        by the lower index), and the matching ``(B, M, k)`` squared distances (fp32), on ``queries.device``.
    """
    if queries.dim() != 3 or points.dim() != 3 or queries.shape[-1] != 3 or points.shape[-1] != 3:
        raise ValueError(f"knn expects (B, M, 3) and (B, N, 3), got {tuple(queries.shape)}, {tuple(points.shape)}")
    if queries.shape[0] != points.shape[0]:
        raise ValueError(f"batch sizes differ: {queries.shape[0]} queries vs {points.shape[0]} clouds")
    if queries.device != points.device:
        raise ValueError(f"queries on {queries.device} but points on {points.device}")
    n_points = points.shape[1]
    if not 1 <= k <= n_points:
        raise ValueError(f"k={k} neighbours requested from a cloud of {n_points} points")
    kernels = _numba_kernels() if points.device.type == "cpu" else None
    if kernels is None:
        _check_finite("knn queries", queries)
        _check_finite("knn points", points)
        return _knn_torch(queries, points, k, chunk_elements=chunk_elements)
    batch, n_queries = queries.shape[:2]
    q = np.ascontiguousarray(queries.detach().float().numpy())
    p = _coordinate_major(points)
    _check_finite("knn queries", q)
    _check_finite("knn points", p)
    idx = np.empty((batch, n_queries, k), np.int64)
    dist = np.empty((batch, n_queries, k), np.float32)
    _run_split(kernels["knn"], batch * n_queries, 16, q, p, int(k), idx, dist)
    return torch.from_numpy(idx), torch.from_numpy(dist)


def _knn_torch(
    queries: torch.Tensor, points: torch.Tensor, k: int, *, chunk_elements: int = _KNN_CHUNK_ELEMENTS
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`knn` with torch ops, chunked over the queries: ``(B, M, 3), (B, N, 3) -> (B, M, k) × 2``."""
    q = queries.detach().float()
    p = points.detach().float()
    batch, n_points = p.shape[:2]
    step = max(1, chunk_elements // max(1, n_points * max(1, batch)))
    out_idx, out_d = [], []
    for start in range(0, q.shape[1], step):
        d = square_distance(q[:, start : start + step], p)
        idx, dist = _k_smallest_lowest_index(d, k)
        out_idx.append(idx)
        out_d.append(dist)
    if not out_idx:  # no queries
        empty = torch.empty(batch, 0, k, device=q.device)
        return empty.long(), empty
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
    """Batched gather along dim 1 (differentiable with respect to ``values``).

    Args:
        values: ``(B, N, *C)``.
        idx: ``(B, *S)`` integer indices into ``N``, ``0 <= idx < N``.

    Returns:
        ``(B, *S, *C)``: ``out[b, s...] = values[b, idx[b, s...]]``.
    """
    if values.dim() < 2:
        raise ValueError(f"gather: values must be (B, N, ...), got shape {tuple(values.shape)}")
    if idx.dim() < 1 or idx.shape[0] != values.shape[0]:
        raise ValueError(f"gather: batch of values {values.shape[0]} != batch of indices {tuple(idx.shape)[:1]}")
    if idx.dtype.is_floating_point or idx.dtype == torch.bool:
        raise ValueError(f"gather: indices must be integers, got {idx.dtype}")
    batch, n = values.shape[:2]
    trailing = values.shape[2:]
    if idx.numel():
        if idx.device.type == "cpu":  # numpy: no wake-up of torch's worker threads for a small reduction
            flat_idx = idx.detach().numpy()
            lo, hi = int(flat_idx.min()), int(flat_idx.max())
        else:
            lo, hi = (int(v) for v in torch.aminmax(idx))
        if lo < 0 or hi >= n:
            raise ValueError(f"gather: indices must lie in [0, {n}), got [{lo}, {hi}]")
    offsets = torch.arange(batch, device=idx.device, dtype=torch.long).view(batch, *([1] * (idx.dim() - 1))) * n
    flat = (idx.long() + offsets).reshape(-1)
    out = _RowGather.apply(values.reshape(batch * n, *trailing), flat)
    return out.view(*idx.shape, *trailing)


class _RowGather(torch.autograd.Function):
    """``rows (R, *C)[idx (M,)] -> (M, *C)``: one ``index_select`` forward (a row copy per index, faster than
    ``torch.gather`` with an expanded index) and one ``index_add_`` backward (on the CPU, autograd's own
    backward of ``index_select`` is an order of magnitude slower)."""

    @staticmethod
    def forward(ctx, rows: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(idx)
        ctx.n_rows = rows.shape[0]
        return rows.index_select(0, idx)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (idx,) = ctx.saved_tensors
        grad_rows = grad.new_zeros(ctx.n_rows, *grad.shape[1:]).index_add_(0, idx, grad)
        return grad_rows, None


def chamfer_l2(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Chamfer-L2 of Point-MAE's ``ChamferDistanceL2`` (enel-method.md §2.3).

    ``mean_i min_j ||a_i - b_j||² + mean_j min_i ||b_j - a_i||²`` with squared distances, each mean taken over
    every point of every set in the batch.

    Args:
        pred: ``(S, P, 3)`` predicted point sets.
        target: ``(S, Q, 3)`` target point sets.

    Returns:
        A scalar tensor (fp32), differentiable with respect to both inputs.
    """
    if (
        pred.dim() != 3
        or target.dim() != 3
        or pred.shape[0] != target.shape[0]
        or pred.shape[-1] != 3
        or target.shape[-1] != 3
    ):
        raise ValueError(f"chamfer_l2 expects (S, P, 3) and (S, Q, 3), got {tuple(pred.shape)}, {tuple(target.shape)}")
    if pred.shape[1] == 0 or target.shape[1] == 0:
        raise ValueError("chamfer_l2: point sets must not be empty")
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
    elif valid.shape != (batch, n_points) or valid.dtype != torch.bool:
        raise ValueError(
            f"valid must be a (B, N) = ({batch}, {n_points}) bool mask, got {tuple(valid.shape)} {valid.dtype}"
        )
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

