"""The point embedding's fast kernels: the fused CPU inference path, and the custom autograd functions training uses.

:mod:`enel.model.embedding` is the embedding written layer by layer; it runs every forward that needs gradients,
and calls three kernels from here that compute the same function as a plain torch expression, faster on CPUs:

* :func:`std_per_sample` / :func:`std_all` (``torch.std`` over each sample / the whole tensor, unbiased): the
  forward from sums, the backward in one pass (custom autograd, :class:`_StdPerRow`);
* :func:`max_over_neighbours` (``y.amax(dim=-2)``): ``amax`` with a backward that sends the gradient to every
  neighbour equal to the maximum (custom autograd, :class:`_MaxOverNeighbours`);
* :func:`add_encoding` (``y + triangular_encoding(offsets)``): the encoding added as one K = 6 matmul.

In eval mode without autograd, :func:`embed` replaces the layer-by-layer forward (:func:`applies` says when):
BatchNorm folded into the preceding linear layer, the neighbourhood std folded into ``linear1``'s weight, and each
stage computed a few centres at a time so the ``(G·k, C)`` intermediates stay in cache (on these CPUs a fresh
190 MB tensor costs more in page faults than the arithmetic applied to it). ``tests/model/test_embedding.py``
holds both paths equal: the same tokens from :func:`embed` as from the layer-by-layer forward, and the same
outputs and gradients from the kernels as from the plain torch expressions above.

The functions take the embedding's modules (``PointTokenEmbedding``, ``_Stage``, ``_LinearBN``) as arguments; this
module does not import :mod:`enel.model.embedding`.
"""

from __future__ import annotations

import math

import torch

__all__ = ["applies", "embed", "std_per_sample", "std_all", "max_over_neighbours", "add_encoding", "fold_linear_bn"]

# a working tile is ``rows × C`` with ``rows ≈ max(_FUSED_MIN_ROWS, _FUSED_TILE_ELEMENTS // C)``, rounded down to
# whole neighbourhoods. Smaller tiles make the fp32 GEMMs lose efficiency; larger ones leave the cache and glibc's
# reusable heap (tiles above 32 MB are mmap-ed, page-faulted in, and unmapped again).
_FUSED_MIN_ROWS = 1536
_FUSED_TILE_ELEMENTS = 2**21


# ----------------------------------------------------------------------------------------------------------
# Kernels of the layer-by-layer path (training, or whenever gradients are needed)
# ----------------------------------------------------------------------------------------------------------
class _MaxOverNeighbours(torch.autograd.Function):
    """``(..., k, C) → (..., C)``: max over the neighbours (``amax``, 3× faster than ``max`` with indices).

    The backward sends the gradient to every neighbour equal to the maximum (``torch.max`` picks one). The
    pooled tensors are ReLU outputs, so ties are exact zeros, where the ReLU stops the gradient either way.
    """

    @staticmethod
    def forward(ctx, y: torch.Tensor) -> torch.Tensor:
        out = y.amax(dim=-2)
        ctx.save_for_backward(y, out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        y, out = ctx.saved_tensors
        return torch.where(y == out.unsqueeze(-2), grad.unsqueeze(-2), 0)


def max_over_neighbours(y: torch.Tensor) -> torch.Tensor:
    """``y.amax(dim=-2)``, ``(..., k, C) → (..., C)``; with a gradient through :class:`_MaxOverNeighbours`."""
    return _MaxOverNeighbours.apply(y) if y.requires_grad else y.amax(dim=-2)


def _row_sums(flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(R, n) → (Σ x, Σ x²)`` per row, accumulated in fp32 (fp64 for fp64 input).

    Many times faster on CPUs than the Welford kernel of ``torch.std``. The squares are summed as 2-norms of
    blocks of 256 values, squared and summed pairwise: one norm over a whole row accumulates sequentially
    (7e-4 relative error over 12 M values, measured), 256-value blocks keep it at 5e-8.
    """
    rows, n = flat.shape
    f = flat.to(torch.promote_types(flat.dtype, torch.float32))
    block = math.gcd(n, 256)
    if block < 32:  # an odd size: one norm per row
        block = n
    squares = torch.linalg.vector_norm(f.reshape(-1, block), dim=1).square().view(rows, -1).sum(1)
    return f.sum(1), squares


def _std_from_sums(n: int, s1, s2):
    """Unbiased std from ``n`` values' sum and sum of squares (tensors or floats), kept away from 0."""
    var = (s2 - s1 * s1 / n) / (n - 1)
    if isinstance(var, torch.Tensor):
        return var.clamp_min(1e-20).sqrt()
    return max(var, 1e-20) ** 0.5


class _StdPerRow(torch.autograd.Function):
    """Unbiased std of each row of ``flat (R, n)`` → ``(R,)`` (fp32, or fp64 for fp64 input).

    Forward from sums (:func:`_row_sums`); backward in one pass, ``∂std/∂x = (x − mean) / ((n − 1) std)``, in
    ``flat``'s dtype (autograd through the sums would take four passes). A row whose variance is 0 gets a
    zero gradient.
    """

    @staticmethod
    def forward(ctx, flat: torch.Tensor) -> torch.Tensor:
        n = flat.shape[1]
        s1, s2 = _row_sums(flat)
        std = _std_from_sums(n, s1, s2)
        ctx.save_for_backward(flat, s1 / n, std)
        return std

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        flat, mean, std = ctx.saved_tensors
        coef = torch.where(std > 1e-10, grad / ((flat.shape[1] - 1) * std), 0.0)
        return torch.addcmul((-mean * coef).to(flat.dtype)[:, None], flat, coef.to(flat.dtype)[:, None])


def std_all(t: torch.Tensor) -> torch.Tensor:
    """``t.std()``: unbiased std over every element of ``t``, as a 0-d fp32 tensor (:class:`_StdPerRow`)."""
    with torch.autocast(t.device.type, enabled=False):
        return _StdPerRow.apply(t.reshape(1, -1))[0]


def std_per_sample(t: torch.Tensor) -> torch.Tensor:
    """``t.flatten(1).std(1)``: unbiased std over every element of each sample of ``t (B, ...)``, ``(B,)`` fp32
    (:class:`_StdPerRow`)."""
    with torch.autocast(t.device.type, enabled=False):
        return _StdPerRow.apply(t.reshape(t.shape[0], -1))


def _encoding_expansion(dim: int, device, dtype) -> torch.Tensor:
    """``(6, dim)`` 0/1 matrix ``E`` with ``[sin x, cos x, sin y, cos y, sin z, cos z] @ E`` = the ``alpha = 1``
    encoding: row ``2c + s`` has ones at the channels ``c·2f + 2i + s`` of ``triangular_encoding``."""
    f = dim // 6
    channel = torch.arange(dim, device=device)
    row = (channel // (2 * f)) * 2 + channel % 2
    return (row.unsqueeze(0) == torch.arange(6, device=device).unsqueeze(1)).to(dtype)


def add_encoding(y: torch.Tensor, rel_xyz: torch.Tensor, beta: float) -> torch.Tensor:
    """``y + triangular_encoding(rel_xyz, C, alpha=1, beta)`` for contiguous ``y (..., C)``, ``rel_xyz (..., 3)``,
    in ``y``'s dtype.

    With ``alpha == 1`` (the released setting) the encoding has 6 distinct values per position: it is added as
    ``addmm(y, [sin, cos] (rows, 6), E (6, C))``, one pass of a K = 6 GEMM. A broadcast add over the
    ``(3, C/6, 2)`` channel layout would run with an innermost loop of length 2 (measured 25× slower in
    bf16); materialising the ``(rows, C)`` encoding would cost an extra pass.
    """
    dim = y.shape[-1]
    x = rel_xyz.float() * beta
    sc = torch.stack([torch.sin(x), torch.cos(x)], dim=-1).reshape(-1, 6).to(y.dtype)
    expand = _encoding_expansion(dim, y.device, y.dtype)
    return torch.addmm(y.reshape(-1, dim), sc, expand).view(y.shape)


# ----------------------------------------------------------------------------------------------------------
# The fused inference path (eval mode, no autograd)
# ----------------------------------------------------------------------------------------------------------
def applies(embedding, points: torch.Tensor) -> bool:
    """Whether :func:`embed` runs: in eval mode, when no gradient is needed (BatchNorm uses running statistics)."""
    if embedding.training:
        return False
    if not torch.is_grad_enabled():
        return True
    return not points.requires_grad and not any(p.requires_grad for p in embedding.parameters())


def embed(embedding, points: torch.Tensor, random_start: bool, generator):
    """``PointTokenEmbedding.forward`` in eval mode without autograd, for checked ``points (B, N, C)``."""
    device_type = points.device.type
    dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None
    dtype = dtype or embedding.class_token.dtype
    with torch.no_grad(), torch.autocast(device_type, enabled=False):
        w, b = fold_linear_bn(embedding.raw_embed, dtype)
        flat = points.reshape(-1, points.shape[-1]).to(dtype)
        x = torch.addmm(b, flat, w.t()).relu_().view(*points.shape[:2], -1)
        xyz, patches = points[..., :3].float(), None
        for stage in embedding.stages:
            lc_xyz, fps_idx, knn_idx, knn_xyz, rel_xyz = stage.group(xyz, random_start, generator)
            scale, shift = fold_batchnorm(stage.out_norm, x.dtype)
            pooled = _lga(stage, x, fps_idx, knn_idx, rel_xyz)  # (B, G, C)
            xyz, x, patches = lc_xyz, stage.out_act(torch.addcmul(shift, pooled, scale)), knn_xyz
        return embedding.tokens(points, xyz, x, patches)


def fold_batchnorm(norm, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """An eval-mode ``BatchNorm1d`` as ``y = x · scale + shift``: ``(scale (C,), shift (C,))`` in ``dtype``."""
    scale = norm.weight.float() * torch.rsqrt(norm.running_var.float() + norm.eps)
    shift = norm.bias.float() - norm.running_mean.float() * scale
    return scale.to(dtype), shift.to(dtype)


def fold_linear_bn(layer, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """An eval-mode ``_LinearBN`` (before its ReLU) as one affine map: ``(weight (C_out, C_in), bias (C_out,))``.

    ``BN(W x + b) = (s W) x + s (b - mean) + beta`` with ``s = gamma / sqrt(var + eps)``; folded in fp32.
    """
    norm = layer.norm
    scale, _ = fold_batchnorm(norm, torch.float32)
    bias = layer.linear.bias.float() if layer.linear.bias is not None else 0.0
    shift = (bias - norm.running_mean.float()) * scale + norm.bias.float()
    return (layer.linear.weight.float() * scale[:, None]).to(dtype), shift.to(dtype)


def _tiles(stage, batch: int, groups: int) -> list[tuple[int, int, int, int]]:
    """Tiles ``(b0, b1, g0, g1)`` of the fused path: whole samples when one fits the row budget (few, large
    ops for small configurations), else runs of centres inside one sample."""
    rows = max(_FUSED_MIN_ROWS, _FUSED_TILE_ELEMENTS // stage.dim)
    if groups * stage.k <= rows:
        per = rows // (groups * stage.k)
        return [(b, min(batch, b + per), 0, groups) for b in range(0, batch, per)]
    chunk = max(1, rows // stage.k)
    return [(b, b + 1, g0, min(groups, g0 + chunk)) for b in range(batch) for g0 in range(0, groups, chunk)]

def _rel_std(stage, x_flat, lc_x, gidx, tiles):
    """Pass 1 of the fused path: the std of ``rel_x`` per sample (or for the batch), ``(B,)`` fp32.

    Offsets are formed in fp32 whatever the compute dtype; sums are accumulated per tile in fp32 and
    across tiles in float64.
    """
    batch, groups, k = gidx.shape
    half = x_flat.shape[1]
    x32, lc32 = x_flat.float(), lc_x.float()
    count, s1, s2 = [0] * batch, [0.0] * batch, [0.0] * batch
    for b0, b1, g0, g1 in tiles:
        rel = x32.index_select(0, gidx[b0:b1, g0:g1].reshape(-1)).view(b1 - b0, g1 - g0, k, half)
        rel.sub_(lc32[b0:b1, g0:g1].unsqueeze(2))
        sums, squares = _row_sums(rel.view(b1 - b0, -1))
        for b, a, q in zip(range(b0, b1), sums.tolist(), squares.tolist()):
            count[b] += (g1 - g0) * k * half
            s1[b] += a
            s2[b] += q
    if stage.cfg.std_mode == "batch":
        return torch.full((batch,), _std_from_sums(sum(count), sum(s1), sum(s2)), dtype=torch.float32)
    return torch.tensor([_std_from_sums(n, a, q) for n, a, q in zip(count, s1, s2)], dtype=torch.float32)

def _lga(stage, x, fps_idx, knn_idx, rel_xyz):
    """Eval-mode LGA with BatchNorm folded into the linear layers, computed a tile at a time.

    Each tile (several whole samples, or a run of centres of one sample; × k neighbours × C channels) runs
    gather → linear1 → ReLU → encoding → bottleneck(s) → pooling on buffers reused from tile to tile,
    instead of sweeping fresh ``(B, G, k, C)`` tensors through memory once per op.
    ``x (B, N, C/2)`` → ``(B, G, C)``; the same maths as ``_Stage._lga`` in eval mode.
    """
    dtype = x.dtype
    batch, n_points, half = x.shape
    groups, k, dim = fps_idx.shape[1], stage.k, stage.dim
    tiles = _tiles(stage, batch, groups)
    max_rows = max((b1 - b0) * (g1 - g0) * k for b0, b1, g0, g1 in tiles)
    x_flat = x.reshape(batch * n_points, half)
    offsets = torch.arange(batch, device=x.device).view(batch, 1, 1) * n_points
    gidx = knn_idx + offsets  # (B, G, k) rows of x_flat
    lc_x = x_flat.index_select(0, (fps_idx + offsets[:, :, 0]).reshape(-1)).view(batch, groups, half)
    inv_std = 1.0 / (_rel_std(stage, x_flat, lc_x, gidx, tiles) + 1e-5)  # (B,) fp32

    w1, b1_ = fold_linear_bn(stage.linear1, torch.float32)
    w_rel, w_centre = w1[:, :half], w1[:, half:]
    centre = torch.addmm(b1_.to(dtype), lc_x.reshape(-1, half), w_centre.to(dtype).t()).view(batch, groups, dim)
    w_rel_t = w_rel.to(dtype).t()
    inv_std_x = inv_std.to(dtype).view(batch, 1)
    blocks = [(fold_linear_bn(blk.net1, dtype), fold_linear_bn(blk.net2, dtype)) for blk in stage.linear2]
    alpha, beta = stage.cfg.pos_alpha, stage.cfg.pos_beta
    if alpha == 1.0:  # 6 distinct values per position, for the whole stage at once: (B, G·k, 6)
        scaled = rel_xyz.float() * beta
        sincos = torch.stack([scaled.sin(), scaled.cos()], dim=-1).to(dtype).view(batch, groups * k, 6)
        expand = _encoding_expansion(dim, x.device, dtype)
    out = torch.empty(batch, groups, dim, dtype=dtype, device=x.device)
    rel_buf = torch.empty(max_rows, half, dtype=dtype, device=x.device)
    y_buf = torch.empty(max_rows, dim, dtype=dtype, device=x.device)
    folded_for: dict[int, torch.Tensor] = {}
    for b0, b1, g0, g1 in tiles:
        nb, ng = b1 - b0, g1 - g0
        n = nb * ng * k
        rel, y = rel_buf[:n], y_buf[:n]
        torch.index_select(x_flat, 0, gidx[b0:b1, g0:g1].reshape(-1), out=rel)
        rel.view(nb, ng, k, half).sub_(lc_x[b0:b1, g0:g1].unsqueeze(2))
        if nb == 1:  # one sample: fold its 1/std into the weight instead of scaling the rows
            if b0 not in folded_for:
                folded_for = {b0: (w_rel * inv_std[b0]).to(dtype).t()}
            weight = folded_for[b0]
        else:
            rel.view(nb, -1).mul_(inv_std_x[b0:b1])
            weight = w_rel_t
        torch.mm(rel, weight, out=y)
        y.view(nb, ng, k, dim).add_(centre[b0:b1, g0:g1].unsqueeze(2)).relu_()
        if alpha == 1.0:
            y.addmm_(sincos[b0:b1, g0 * k : g1 * k].reshape(n, 6), expand)
        else:
            y.add_(stage.encoding(rel_xyz[b0:b1, g0:g1]).to(dtype).view(n, dim))
        for (wd, bd), (wu, bu) in blocks:
            y = _linear_add(_linear_relu(y, wd, bd), y, wu, bu).relu_()
        out[b0:b1, g0:g1] = stage.pool(y.view(nb, ng, k, dim))
    return out


def _mkldnn_linear_ok(dtype: torch.dtype) -> bool:
    """Whether oneDNN's fused ``linear + ReLU`` / ``linear + add`` ops run (and agree with torch) for ``dtype``."""
    if dtype not in _MKLDNN_OK:
        ok = False
        try:
            if torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise"):
                g = torch.Generator().manual_seed(0)
                x, w, b, o = (torch.randn(*s, generator=g).to(dtype) for s in ((5, 8), (4, 8), (4,), (5, 4)))
                ref = torch.addmm(b, x, w.t())
                fused_relu = torch.ops.mkldnn._linear_pointwise(x, w, b, "relu", [], "")
                fused_add = torch.ops.mkldnn._linear_pointwise.binary(x, o, w, b, "add")
                tol = 1e-5 if dtype == torch.float32 else 5e-2
                ok = bool(
                    torch.allclose(fused_relu.float(), ref.relu().float(), atol=tol, rtol=tol)
                    and torch.allclose(fused_add.float(), (ref + o).float(), atol=tol, rtol=tol)
                )
        except Exception:  # an older / newer torch without these ops: plain ops below
            ok = False
        _MKLDNN_OK[dtype] = ok
    return _MKLDNN_OK[dtype]


_MKLDNN_OK: dict[torch.dtype, bool] = {}


def _linear_relu(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``relu(x @ w.T + b)`` for ``x (R, I)``, ``w (O, I)``: one oneDNN call on CPUs that have it."""
    if x.device.type == "cpu" and _mkldnn_linear_ok(x.dtype):
        return torch.ops.mkldnn._linear_pointwise(x, w, b, "relu", [], "")
    return torch.addmm(b, x, w.t()).relu_()


def _linear_add(x: torch.Tensor, other: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``x @ w.T + b + other`` for ``x (R, I)``, ``w (O, I)``, ``other (R, O)``: one oneDNN call where possible."""
    if x.device.type == "cpu" and _mkldnn_linear_ok(x.dtype):
        return torch.ops.mkldnn._linear_pointwise.binary(x, other, w, b, "add")
    return torch.addmm(b, x, w.t()).add_(other)
