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
* The encoding (``alpha = 1``) is added as one K = 6 matmul, the neighbourhood std comes from sums with a one-pass
  backward, and the max pooling has an ``amax`` forward: three kernels of :mod:`enel.model.embedding_fused`, each
  the same function as the plain torch expression named where it is called.
* In eval mode without autograd the forward takes the fused path of :mod:`enel.model.embedding_fused` (BatchNorm
  folded into the linear layers, each stage computed a few centres at a time); this module is the layer-by-layer
  forward, which training and any forward that needs gradients run, and the tests hold the two equal.

Changed on purpose from the first version of this module: :meth:`PointEmbeddingConfig.flops` counts the token
embedding only (it used to add the projector's hidden layers but not its last layer);
:meth:`PointEmbeddingConfig.projector_flops` counts the projector.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ..points import ops
from . import embedding_fused as fused
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

    def forward(self, xyz: torch.Tensor, x: torch.Tensor, random_start: bool, generator):
        """``xyz (B, N, 3)``, ``x (B, N, C/2)`` → centres ``(B, G, 3)``, features ``(B, G, C)``,
        patches ``(B, G, k, 3)``."""
        lc_xyz, fps_idx, knn_idx, knn_xyz, rel_xyz = self.group(xyz, random_start, generator)
        half = self.dim // 2
        lc_x = ops.gather(x, fps_idx)  # (B, G, C/2)
        rel_x = ops.gather(x, knn_idx) - lc_x.unsqueeze(2)  # (B, G, k, C/2)
        inv_std = 1.0 / (self.std(rel_x) + 1e-5)
        # linear1 acts on [rel_x / std, lc_x]: the centre half is the same for all k neighbours, so it is
        # computed once per centre; the 1/std scale is applied to the product (one pass fewer)
        w_rel, w_centre = self.linear1.linear.weight.split(half, dim=1)
        y_rel = F.linear(rel_x, w_rel)
        y = torch.addcmul(F.linear(lc_x, w_centre).unsqueeze(2), y_rel, inv_std.to(y_rel.dtype))
        y = self.linear1.normalise(y)
        if self.cfg.pos_alpha == 1.0:  # y + self.encoding(rel_xyz), as one K = 6 matmul
            y = fused.add_encoding(y, rel_xyz, self.cfg.pos_beta)
        else:
            y = y + self.encoding(rel_xyz).to(y.dtype)
        pooled = self.pool(self.linear2(y))  # (B, G, C)
        pooled = self.out_act(self.out_norm(pooled.reshape(-1, self.dim)).reshape(pooled.shape))
        return lc_xyz, pooled, knn_xyz

    def group(self, xyz: torch.Tensor, random_start: bool, generator):
        """FPS centres and their kNN neighbourhoods of ``xyz (B, N, 3)``: centres ``(B, G, 3)``, FPS indices
        ``(B, G)``, kNN indices ``(B, G, k)``, neighbours ``(B, G, k, 3)`` and normalised offsets ``(B, G, k, 3)``."""
        fps_idx = ops.farthest_point_sample(xyz, self.centres, random_start=random_start, generator=generator)
        fps_idx = fps_idx.to(xyz.device)
        lc_xyz = ops.gather(xyz, fps_idx)  # (B, G, 3)
        knn_idx, _ = ops.knn(lc_xyz, xyz, self.k)  # (B, G, k)
        knn_idx = knn_idx.to(xyz.device)
        knn_xyz = ops.gather(xyz, knn_idx)  # (B, G, k, 3)
        rel_xyz = knn_xyz - lc_xyz.unsqueeze(2)
        rel_xyz = rel_xyz / (self.std(rel_xyz) + 1e-5)
        return lc_xyz, fps_idx, knn_idx, knn_xyz, rel_xyz

    def std(self, t: torch.Tensor) -> torch.Tensor:
        """The normalising std of ``t (B, ...)``: one per sample (or one for the batch with ``std_mode="batch"``),
        shaped to broadcast against ``t``, in ``t``'s dtype."""
        if self.cfg.std_mode == "batch":
            return fused.std_all(t).to(t.dtype)
        return fused.std_per_sample(t).to(t.dtype).view(-1, *([1] * (t.dim() - 1)))

    def encoding(self, rel_xyz: torch.Tensor) -> torch.Tensor:
        """The positional encoding of normalised offsets ``(..., 3)`` → ``(..., C)`` fp32."""
        return triangular_encoding(rel_xyz, self.dim, self.cfg.pos_alpha, self.cfg.pos_beta)

    def pool(self, y: torch.Tensor) -> torch.Tensor:
        """``(..., k, C) → (..., C)``: max (or max + mean) over the neighbours."""
        pooled = fused.max_over_neighbours(y)
        if self.cfg.pooling == "maxmean":
            pooled = pooled + y.mean(dim=-2)
        return pooled


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
        if fused.applies(self, points):  # eval mode without autograd: the same tokens, computed faster
            return fused.embed(self, points, random_start, generator)
        x = self.raw_embed(points.to(self.class_token.dtype))  # (B, N, embed_dim)
        xyz, patches = points[..., :3].float(), None
        for stage in self.stages:
            xyz, x, patches = stage(xyz, x, random_start, generator)
        return self.tokens(points, xyz, x, patches)

    def tokens(self, points, xyz, x, patches) -> PointTokens:
        """The last stage's centres ``xyz (B, G, 3)``, features ``x (B, G, C)`` and ``patches (B, G, k, 3)`` of
        ``points (B, N, C)`` (after :meth:`_check`) → :class:`PointTokens`, the class token first."""
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
        return self.add_color(self.net(x), colors)

    def color_terms(self, colors: torch.Tensor) -> torch.Tensor:
        """``colors (B, G, 3)`` centred patch colours → ``(B, G, hidden)`` the colour skip's terms, in its weights'
        dtype (needs ``color=True``)."""
        return self.color(colors.to(self.color.weight.dtype))

    def add_color(self, y: torch.Tensor, colors: torch.Tensor | None) -> torch.Tensor:
        """``y (B, 1 + G, hidden)`` projected tokens (class token first) plus the colour skip of ``colors (B, G, 3)``
        on the geometric ones; ``y`` itself without a skip or colours."""
        if colors is None or self.color is None:
            return y
        skip = self.color_terms(colors).to(y.dtype)  # (B, G, hidden)
        return torch.cat([y[:, :1], y[:, 1:] + skip], dim=1)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())

