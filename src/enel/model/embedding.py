"""ENEL's point token embedding (a light Point-PN variant) and the projector into the LLM.

Reproduces the released architecture (``pointllm/model/pointnn/point_pn.py``, enel-method.md §1.3–1.4):

1. a raw-point embedding ``Linear(6 → 288, no bias) + BN + ReLU`` on every input point;
2. three stages, each: FPS to ``G`` centres (512, 256, 128), kNN (k = 81) among the current points,
   neighbourhood normalisation, feature expansion (concat with the centre feature), ``Linear + BN + ReLU``,
   the sin/cos "triangular" positional encoding of the normalised offsets *added* to the features,
   a residual bottleneck, max pooling over the k neighbours + BN + GELU; widths 576, 1152, 2304;
3. a learnable class token prepended: ``(B, 129, 2304)``;
4. the projector ``2304 → 1024 → GELU → 2048 → GELU → hidden``.

Differences from the released code, each a documented decision:

* Neighbourhood normalisation divides by one std **per sample** (``std_mode="sample"``); the released code
  uses one std over the whole batch tensor, so a cloud's tokens depended on its batch mates
  (``std_mode="batch"`` restores that behaviour).
* FPS starts at index 0 (deterministic tokens); the released code started at a random index
  (``fps_random_start=True`` restores that in training). FPS and kNN break ties by the lowest index.
* The 1×1 convolutions are ``nn.Linear`` layers on channels-last tensors (the same maths, faster on CPUs).
* The positional encoding is computed in fp32 and cast to the feature dtype, so bf16 works (the released code
  crashed in bf16, ENEL issue #2).
* Clouds with fewer points than the first stage needs (``min_points = max(G₁, k)``) are padded by cycling
  through their points (point ``i`` of the padded cloud is point ``i mod N``), a deterministic rule that adds
  no new geometry. FPS picks every distinct point before any duplicate; once all distinct points are centres
  every remaining distance is 0 and FPS keeps picking the first point, so a cloud with ``n < 128`` distinct
  points yields ``n`` distinct tokens and ``128 - n`` copies of the token of its first point.

Same maths, computed differently (no change of the function, only of its cost):

* ``linear1`` acts on ``[x_j - x_c, x_c]`` (neighbour offset, centre feature). The centre half is the same
  for all k neighbours, so it is computed once per centre: 25 % fewer FLOPs per stage than the released
  ``Conv(2C → 2C)`` on the expanded tensor. :meth:`PointEmbeddingConfig.flops` still counts the released
  layers (the nominal cost); benchmarks report both.
* The encoding's ``C/6`` repeated channels are broadcast, not materialised.
* In eval mode without autograd the forward takes a fused path: BatchNorm folded into the preceding linear
  layer, the neighbourhood std folded into ``linear1``'s weight, and each stage computed a few centres at a
  time so the ``(G·k, C)`` intermediates stay in cache (on these CPUs a fresh 190 MB tensor costs more in page
  faults than the arithmetic applied to it). Training and any forward that needs gradients run layer by layer.

Changed on purpose from the first version of this module: :meth:`PointEmbeddingConfig.flops` counts the token
embedding only (it used to add the projector's hidden layers but not its last layer);
:meth:`PointEmbeddingConfig.projector_flops` counts the projector.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ..points import ops
from .configuration_enel import PointEmbeddingConfig

__all__ = ["PointTokenEmbedding", "PointProjector", "PointTokens", "patch_colors", "count_parameters"]

@dataclass
class PointTokens:
    """What the embedding hands to the LLM and to the stage-1 / stage-2 machinery.

    Attributes:
        features: ``(B, T, D)`` token features, ``T = 1 + G`` (class token first), ``D = output_dim``.
        centres: ``(B, G, 3)`` coordinates of the geometric tokens (the last stage's FPS centres).
        patches: ``(B, G, k, 3)`` absolute coordinates of each token's k neighbours in the last stage.
        colors: ``(B, G, 3)`` each geometric token's patch colour, centred on 0 (rgb − 0.5), for the colour skip
            after the projector when ``color_skip`` is on; otherwise None.
    """

    features: torch.Tensor
    centres: torch.Tensor
    patches: torch.Tensor
    colors: torch.Tensor | None = None


# ----------------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------------
# fused path: a working tile is ``rows × C`` with ``rows ≈ max(_FUSED_MIN_ROWS, _FUSED_TILE_ELEMENTS // C)``,
# rounded down to whole neighbourhoods. Smaller tiles make the fp32 GEMMs lose efficiency; larger ones leave
# the cache and glibc's reusable heap (tiles above 32 MB are mmap-ed, page-faulted in, and unmapped again).
_FUSED_MIN_ROWS = 1536
_FUSED_TILE_ELEMENTS = 2**21


class _LinearBN(nn.Module):
    """``Linear → BatchNorm → (ReLU)`` over the last dim of a channels-last tensor ``(..., C)``."""

    def __init__(self, c_in: int, c_out: int, bias: bool, relu: bool):
        super().__init__()
        self.linear = nn.Linear(c_in, c_out, bias=bias)
        self.norm = nn.BatchNorm1d(c_out)
        self.relu = relu

    def normalise(self, y: torch.Tensor) -> torch.Tensor:
        """BatchNorm (+ ReLU, in place) of an already computed ``linear`` output ``(..., C_out)``."""
        shape = y.shape
        y = self.norm(y.reshape(-1, shape[-1]))
        if self.relu:
            y = torch.relu_(y)  # in place on BatchNorm's own output (not a view): no copy in backward
        return y.reshape(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.normalise(self.linear(x))

    def folded(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """The eval-mode layer as one affine map: ``(weight (C_out, C_in), bias (C_out,))`` in ``dtype``.

        ``BN(W x + b) = (s W) x + s (b - mean) + beta`` with ``s = gamma / sqrt(var + eps)``; folded in fp32.
        """
        norm = self.norm
        scale = norm.weight.float() * torch.rsqrt(norm.running_var.float() + norm.eps)
        bias = self.linear.bias.float() if self.linear.bias is not None else 0.0
        weight = self.linear.weight.float() * scale[:, None]
        shift = (bias - norm.running_mean.float()) * scale + norm.bias.float()
        return weight.to(dtype), shift.to(dtype)


class _Bottleneck(nn.Module):
    """Point-PN's ``Linear2Layer``: ``relu(BN(W2 relu(BN(W1 x))) + x)`` with a C → C/2 → C bottleneck."""

    def __init__(self, dim: int):
        super().__init__()
        self.net1 = _LinearBN(dim, dim // 2, bias=True, relu=True)
        self.net2 = _LinearBN(dim // 2, dim, bias=True, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu_(self.net2(self.net1(x)) + x)


def triangular_encoding(offsets: torch.Tensor, dim: int, alpha: float, beta: float) -> torch.Tensor:
    """Point-PN's ``PosE_Geo`` on normalised offsets, channels last.

    Args:
        offsets: ``(..., 3)`` normalised neighbour offsets.
        dim: output width, divisible by 6.
        alpha, beta: frequency base and scale.

    Returns:
        ``(..., dim)`` fp32: for each coordinate ``c`` a block of ``dim/3`` channels
        ``[sin(β x_c / α^{0/f}), cos(β x_c / α^{0/f}), sin(β x_c / α^{1/f}), …]`` with ``f = dim/6``,
        i.e. channel ``c·2f + 2i + s`` — the channel order of ``PosE_Geo``'s ``(B, dim, G, k)`` output.
    """
    if dim % 6:
        raise ValueError(f"triangular_encoding: dim={dim} is not divisible by 6")
    feat_dim = dim // 6
    x = offsets.float() * beta
    if alpha == 1.0:
        # every frequency is 1: compute sin/cos once per coordinate and repeat (the released setting)
        sc = torch.stack([torch.sin(x), torch.cos(x)], dim=-1)  # (..., 3, 2)
        return sc.unsqueeze(-2).expand(*x.shape, feat_dim, 2).reshape(*x.shape[:-1], dim)
    freq = alpha ** (torch.arange(feat_dim, device=x.device, dtype=torch.float32) / feat_dim)
    angles = x.unsqueeze(-1) / freq  # (..., 3, f)
    return torch.stack([torch.sin(angles), torch.cos(angles)], dim=-1).reshape(*x.shape[:-1], dim)


def _encoding_expansion(dim: int, device, dtype) -> torch.Tensor:
    """``(6, dim)`` 0/1 matrix ``E`` with ``[sin x, cos x, sin y, cos y, sin z, cos z] @ E`` = the ``alpha = 1``
    encoding: row ``2c + s`` has ones at the channels ``c·2f + 2i + s`` of ``triangular_encoding``."""
    f = dim // 6
    channel = torch.arange(dim, device=device)
    row = (channel // (2 * f)) * 2 + channel % 2
    return (row.unsqueeze(0) == torch.arange(6, device=device).unsqueeze(1)).to(dtype)


def _add_encoding(y: torch.Tensor, rel_xyz: torch.Tensor, alpha: float, beta: float, inplace: bool) -> torch.Tensor:
    """``y + triangular_encoding(rel_xyz)`` for contiguous ``y (..., C)``, ``rel_xyz (..., 3)``, in ``y``'s dtype.

    With ``alpha == 1`` the encoding has 6 distinct values per position: it is added as
    ``addmm(y, [sin, cos] (rows, 6), E (6, C))``, one pass of a K = 6 GEMM. A broadcast add over the
    ``(3, C/6, 2)`` channel layout would run with an innermost loop of length 2 (measured 25× slower in
    bf16); materialising the ``(rows, C)`` encoding would cost an extra pass.
    """
    dim = y.shape[-1]
    if alpha == 1.0:
        x = rel_xyz.float() * beta
        sc = torch.stack([torch.sin(x), torch.cos(x)], dim=-1).reshape(-1, 6).to(y.dtype)
        expand = _encoding_expansion(dim, y.device, y.dtype)
        flat = y.reshape(-1, dim)
        out = flat.addmm_(sc, expand) if inplace else torch.addmm(flat, sc, expand)
        return out.view(y.shape)
    pe = triangular_encoding(rel_xyz, dim, alpha, beta).to(y.dtype)
    return y.add_(pe) if inplace else y + pe


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


def _std_all(t: torch.Tensor) -> torch.Tensor:
    """Unbiased std over every element of ``t``, as a 0-d fp32 tensor."""
    with torch.autocast(t.device.type, enabled=False):
        return _StdPerRow.apply(t.reshape(1, -1))[0]


def _std_per_sample(t: torch.Tensor) -> torch.Tensor:
    """Unbiased std over every element of each sample of ``t (B, ...)``: ``(B,)`` fp32."""
    with torch.autocast(t.device.type, enabled=False):
        return _StdPerRow.apply(t.reshape(t.shape[0], -1))


# ----------------------------------------------------------------------------------------------------------
# One stage
# ----------------------------------------------------------------------------------------------------------
class _Stage(nn.Module):
    """One FPS + kNN + local geometry aggregation (LGA) + pooling stage."""

    def __init__(self, cfg: PointEmbeddingConfig, centres: int, dim: int):
        super().__init__()
        self.centres = centres
        self.k = cfg.group_size
        self.dim = dim
        self.cfg = cfg
        self.linear1 = _LinearBN(dim, dim, bias=False, relu=True)
        self.linear2 = nn.Sequential(*[_Bottleneck(dim) for _ in range(cfg.lga_blocks)])
        self.out_norm = nn.BatchNorm1d(dim)
        self.out_act = nn.GELU()

    def forward(self, xyz: torch.Tensor, x: torch.Tensor, random_start: bool, generator, fused: bool):
        """``xyz (B, N, 3)``, ``x (B, N, C/2)`` → centres ``(B, G, 3)``, features ``(B, G, C)``,
        patches ``(B, G, k, 3)``."""
        fps_idx = ops.farthest_point_sample(xyz, self.centres, random_start=random_start, generator=generator)
        fps_idx = fps_idx.to(xyz.device)
        lc_xyz = ops.gather(xyz, fps_idx)  # (B, G, 3)
        knn_idx, _ = ops.knn(lc_xyz, xyz, self.k)  # (B, G, k)
        knn_idx = knn_idx.to(xyz.device)
        knn_xyz = ops.gather(xyz, knn_idx)  # (B, G, k, 3)
        rel_xyz = knn_xyz - lc_xyz.unsqueeze(2)
        rel_xyz = rel_xyz / (self._std(rel_xyz) + 1e-5)
        lga = self._lga_fused if fused else self._lga
        pooled = lga(x, fps_idx, knn_idx, rel_xyz)  # (B, G, C)
        if fused:
            scale, shift = self._out_affine(pooled.dtype)
            pooled = self.out_act(torch.addcmul(shift, pooled, scale))
        else:
            pooled = self.out_act(self.out_norm(pooled.reshape(-1, self.dim)).reshape(pooled.shape))
        return lc_xyz, pooled, knn_xyz

    def _std(self, t: torch.Tensor) -> torch.Tensor:
        """The normalising std of ``t (B, ...)``, shaped to broadcast against it, in ``t``'s dtype."""
        if self.cfg.std_mode == "batch":
            return _std_all(t).to(t.dtype)
        return _std_per_sample(t).to(t.dtype).view(-1, *([1] * (t.dim() - 1)))

    def _pool(self, y: torch.Tensor) -> torch.Tensor:
        """``(..., k, C) → (..., C)``: max (or max + mean) over the neighbours."""
        pooled = _MaxOverNeighbours.apply(y) if y.requires_grad else y.amax(dim=-2)
        if self.cfg.pooling == "maxmean":
            pooled = pooled + y.mean(dim=-2)
        return pooled

    # ---- autograd path (training, or whenever gradients are needed) -------------------------------------
    def _lga(self, x, fps_idx, knn_idx, rel_xyz):
        """Layer by layer, differentiable. ``x (B, N, C/2)`` → pooled ``(B, G, C)``."""
        half = self.dim // 2
        lc_x = ops.gather(x, fps_idx)  # (B, G, C/2)
        rel_x = ops.gather(x, knn_idx) - lc_x.unsqueeze(2)  # (B, G, k, C/2)
        inv_std = 1.0 / (self._std(rel_x) + 1e-5)
        # linear1 acts on [rel_x / std, lc_x]: the centre half is the same for all k neighbours, so it is
        # computed once per centre; the 1/std scale is applied to the product (one pass fewer)
        w_rel, w_centre = self.linear1.linear.weight.split(half, dim=1)
        y_rel = F.linear(rel_x, w_rel)
        y = torch.addcmul(F.linear(lc_x, w_centre).unsqueeze(2), y_rel, inv_std.to(y_rel.dtype))
        y = self.linear1.normalise(y)
        y = _add_encoding(y, rel_xyz, self.cfg.pos_alpha, self.cfg.pos_beta, inplace=False)
        return self._pool(self.linear2(y))

    # ---- fused inference path (eval mode, no autograd) ---------------------------------------------------
    def _out_affine(self, dtype):
        norm = self.out_norm
        scale = norm.weight.float() * torch.rsqrt(norm.running_var.float() + norm.eps)
        shift = norm.bias.float() - norm.running_mean.float() * scale
        return scale.to(dtype), shift.to(dtype)

    def _tiles(self, batch: int, groups: int) -> list[tuple[int, int, int, int]]:
        """Tiles ``(b0, b1, g0, g1)`` of the fused path: whole samples when one fits the row budget (few, large
        ops for small configurations), else runs of centres inside one sample."""
        rows = max(_FUSED_MIN_ROWS, _FUSED_TILE_ELEMENTS // self.dim)
        if groups * self.k <= rows:
            per = rows // (groups * self.k)
            return [(b, min(batch, b + per), 0, groups) for b in range(0, batch, per)]
        chunk = max(1, rows // self.k)
        return [(b, b + 1, g0, min(groups, g0 + chunk)) for b in range(batch) for g0 in range(0, groups, chunk)]

    def _rel_std(self, x_flat, lc_x, gidx, tiles):
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
        if self.cfg.std_mode == "batch":
            return torch.full((batch,), _std_from_sums(sum(count), sum(s1), sum(s2)), dtype=torch.float32)
        return torch.tensor([_std_from_sums(n, a, q) for n, a, q in zip(count, s1, s2)], dtype=torch.float32)

    def _lga_fused(self, x, fps_idx, knn_idx, rel_xyz):
        """Eval-mode LGA with BatchNorm folded into the linear layers, computed a tile at a time.

        Each tile (several whole samples, or a run of centres of one sample; × k neighbours × C channels) runs
        gather → linear1 → ReLU → encoding → bottleneck(s) → pooling on buffers reused from tile to tile,
        instead of sweeping fresh ``(B, G, k, C)`` tensors through memory once per op.
        ``x (B, N, C/2)`` → ``(B, G, C)``; the same maths as :meth:`_lga` in eval mode.
        """
        dtype = x.dtype
        batch, n_points, half = x.shape
        groups, k, dim = fps_idx.shape[1], self.k, self.dim
        tiles = self._tiles(batch, groups)
        max_rows = max((b1 - b0) * (g1 - g0) * k for b0, b1, g0, g1 in tiles)
        x_flat = x.reshape(batch * n_points, half)
        offsets = torch.arange(batch, device=x.device).view(batch, 1, 1) * n_points
        gidx = knn_idx + offsets  # (B, G, k) rows of x_flat
        lc_x = x_flat.index_select(0, (fps_idx + offsets[:, :, 0]).reshape(-1)).view(batch, groups, half)
        inv_std = 1.0 / (self._rel_std(x_flat, lc_x, gidx, tiles) + 1e-5)  # (B,) fp32

        w1, b1_ = self.linear1.folded(torch.float32)
        w_rel, w_centre = w1[:, :half], w1[:, half:]
        centre = torch.addmm(b1_.to(dtype), lc_x.reshape(-1, half), w_centre.to(dtype).t()).view(batch, groups, dim)
        w_rel_t = w_rel.to(dtype).t()
        inv_std_x = inv_std.to(dtype).view(batch, 1)
        blocks = [(blk.net1.folded(dtype), blk.net2.folded(dtype)) for blk in self.linear2]
        alpha, beta = self.cfg.pos_alpha, self.cfg.pos_beta
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
                y.add_(triangular_encoding(rel_xyz[b0:b1, g0:g1], dim, alpha, beta).to(dtype).view(n, dim))
            for (wd, bd), (wu, bu) in blocks:
                y = _linear_add(_linear_relu(y, wd, bd), y, wu, bu).relu_()
            out[b0:b1, g0:g1] = self._pool(y.view(nb, ng, k, dim))
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


# ----------------------------------------------------------------------------------------------------------
# The embedding
# ----------------------------------------------------------------------------------------------------------
class PointTokenEmbedding(nn.Module):
    """Point cloud ``(B, N, 3 or 6)`` → :class:`PointTokens` with ``1 + G`` tokens (paper: 129 × 2304)."""

    def __init__(self, cfg: PointEmbeddingConfig):
        super().__init__()
        self.cfg = cfg
        self.raw_embed = _LinearBN(cfg.in_channels, cfg.embed_dim, bias=False, relu=True)
        self.stages = nn.ModuleList([_Stage(cfg, g, d) for g, d in zip(cfg.stage_centres, cfg.stage_dims)])
        self.class_token = nn.Parameter(torch.randn(1, 1, cfg.output_dim))

    def _check(self, points: torch.Tensor) -> torch.Tensor:
        if points.dim() != 3:
            raise ValueError(f"point clouds must be (B, N, C), got shape {tuple(points.shape)}")
        c = points.shape[-1]
        if c not in (3, 6):
            raise ValueError(f"point clouds need 3 (xyz) or 6 (xyz + rgb) channels, got {c}")
        if c == 3 and self.cfg.use_color:
            raise ValueError("this model was built with use_color=True and needs (B, N, 6) xyz + rgb input")
        if points.shape[0] < 1 or points.shape[1] < 1:
            raise ValueError(f"point clouds must hold at least one cloud of one point, got shape {tuple(points.shape)}")
        if not points.is_floating_point():
            raise ValueError(f"point clouds must be floating point, got {points.dtype}")
        if not self.cfg.use_color:
            points = points[..., :3]
        n = points.shape[1]
        if n < self.cfg.min_points:
            # deterministic padding by cycling through the points (documented rule, see module docstring)
            idx = torch.arange(self.cfg.min_points, device=points.device) % n
            points = points[:, idx]
        return points

    def _use_fused(self, points: torch.Tensor) -> bool:
        """The fused path runs in eval mode when no gradient is needed (BatchNorm uses running statistics)."""
        if self.training:
            return False
        if not torch.is_grad_enabled():
            return True
        return not points.requires_grad and not any(p.requires_grad for p in self.parameters())

    def forward(self, points: torch.Tensor, generator: torch.Generator | None = None) -> PointTokens:
        """Embed clouds.

        Args:
            points: ``(B, N, 6)`` xyz + rgb (or ``(B, N, 3)`` when ``use_color=False``), any N ≥ 1.
            generator: drives the random FPS start when ``fps_random_start`` is set and the module trains.

        Returns:
            :class:`PointTokens` with features ``(B, 1 + G, output_dim)``, centres ``(B, G, 3)`` and patches
            ``(B, G, k, 3)``. Features come in the parameters' dtype, or the autocast dtype under autocast.
        """
        points = self._check(points)
        random_start = self.cfg.fps_random_start and self.training
        if self._use_fused(points):
            device_type = points.device.type
            dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None
            dtype = dtype or self.class_token.dtype
            with torch.no_grad(), torch.autocast(device_type, enabled=False):
                w, b = self.raw_embed.folded(dtype)
                flat = points.reshape(-1, points.shape[-1]).to(dtype)
                x = torch.addmm(b, flat, w.t()).relu_().view(*points.shape[:2], -1)
                return self._stages(points, x, random_start, generator, fused=True)
        x = self.raw_embed(points.to(self.class_token.dtype))
        return self._stages(points, x, random_start, generator, fused=False)

    def _stages(self, points, x, random_start, generator, fused: bool) -> PointTokens:
        """``points (B, N, C)`` (after :meth:`_check`) and their raw embedding ``x (B, N, embed_dim)`` → tokens."""
        xyz = points[..., :3].float()
        patches = None
        for stage in self.stages:
            xyz, x, patches = stage(xyz, x, random_start, generator, fused)
        colors = None  # (B, G, 3) for the colour skip after the projector
        if self.cfg.color_skip:
            colors = (patch_colors(points, xyz, self.cfg.group_size) - 0.5).to(self.class_token.dtype)  # centred
        cls = self.class_token.expand(x.shape[0], -1, -1).to(x.dtype)
        return PointTokens(features=torch.cat([cls, x], dim=1), centres=xyz, patches=patches, colors=colors)


def patch_colors(points: torch.Tensor, centres: torch.Tensor, k: int) -> torch.Tensor:
    """Mean rgb of the ``k`` input points nearest each centre.

    Args:
        points: ``(B, N, 6)`` xyz + rgb.
        centres: ``(B, G, 3)`` token centres (a subset of the points' xyz).
        k: neighbours averaged (at most ``N``).

    Returns:
        ``(B, G, 3)`` in the points' dtype, with no gradient to the coordinates (kNN indices are discrete).
    """
    idx, _ = ops.knn(centres.float(), points[..., :3].float(), min(k, points.shape[1]))
    return ops.gather(points[..., 3:6], idx.to(points.device)).mean(dim=2)


class PointProjector(nn.Module):
    """``(…, output_dim) → (…, hidden)``: ``Linear → GELU`` per hidden width, then a final ``Linear``.

    With ``color=True`` it also holds the colour skip placed after it (``PointEmbeddingConfig.color_skip``):
    ``Linear(3 → hidden)`` of each geometric token's patch colour, added to that token's output.
    """

    def __init__(self, in_dim: int, hidden: list[int], out_dim: int, color: bool = False):
        super().__init__()
        dims = [in_dim, *hidden]
        layers: list[nn.Module] = []
        for a, b in zip(dims, dims[1:]):
            layers += [nn.Linear(a, b), nn.GELU()]
        layers.append(nn.Linear(dims[-1], out_dim))
        self.net = nn.Sequential(*layers)
        self.color = nn.Linear(3, out_dim) if color else None

    def forward(self, x: torch.Tensor, colors: torch.Tensor | None = None) -> torch.Tensor:
        """``x (B, 1 + G, output_dim)`` (or any ``(…, output_dim)``), ``colors (B, G, 3)`` or None
        → ``(…, hidden)``."""
        y = self.net(x)
        if colors is not None and self.color is not None:
            skip = self.color(colors.to(self.color.weight.dtype)).to(y.dtype)  # (B, G, hidden)
            y = torch.cat([y[:, :1], y[:, 1:] + skip], dim=1)
        return y


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())

