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
* FPS starts at index 0 (deterministic tokens); the released code started at a random index.
* The 1×1 convolutions are ``nn.Linear`` layers on channels-last tensors (the same maths, faster on CPUs).
* The positional encoding is computed in fp32 and cast to the feature dtype, so bf16 works (the released code
  crashed in bf16, ENEL issue #2).
* Clouds with fewer points than a stage needs (``max(G₁, k)``) are padded by cycling through their points,
  a deterministic rule that adds no new geometry: FPS picks duplicates only after every distinct point.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import torch
from torch import nn

from ..errors import ConfigError
from ..points import ops

__all__ = ["PointEmbeddingConfig", "PointTokenEmbedding", "PointProjector", "PointTokens"]


@dataclass
class PointEmbeddingConfig:
    """Every size of the token embedding and the projector.

    Attributes:
        use_color: feed xyz + rgb (6 channels) or xyz only (3).
        embed_dim: width of the raw-point embedding (paper: 288).
        num_stages: FPS + kNN stages (paper: 3).
        group_size: k, neighbours per centre, the same for every stage (paper: 81).
        input_points: sets the centre counts: stage ``i`` keeps ``input_points // 2**(i+1)`` centres
            (paper: 1024 → 512, 256, 128).
        dim_expansion: width multiplier per stage (paper: 2 → 576, 1152, 2304).
        lga_blocks: residual bottleneck blocks per stage (released: 1).
        pos_alpha, pos_beta: frequencies of the positional encoding; the released LGA overrides both to 1,
            which makes the encoding plain ``sin(xyz)`` / ``cos(xyz)`` of the normalised offsets.
        pooling: ``"max"`` (released) or ``"maxmean"`` (max + mean over the neighbours).
        std_mode: ``"sample"`` (ours: per-sample std) or ``"batch"`` (released: one std for the batch).
        fps_random_start: in training only, start each FPS at a random index (the released behaviour);
            evaluation always starts at index 0.
        projector_hidden: hidden widths of the projector MLP (paper: [1024, 2048]).
        num_points: the resolution loaders and the CLI resample clouds to before embedding (paper: 8192).
            The embedding itself accepts any number of points.
    """

    use_color: bool = True
    embed_dim: int = 288
    num_stages: int = 3
    group_size: int = 81
    input_points: int = 1024
    dim_expansion: int = 2
    lga_blocks: int = 1
    pos_alpha: float = 1.0
    pos_beta: float = 1.0
    pooling: str = "max"
    std_mode: str = "sample"
    fps_random_start: bool = False
    projector_hidden: list[int] = field(default_factory=lambda: [1024, 2048])
    num_points: int = 8192

    # ---- presets ------------------------------------------------------------------------------------------
    @classmethod
    def paper(cls, **overrides) -> "PointEmbeddingConfig":
        """The released configuration: 288 → 576/1152/2304, k = 81, 8192 input points (≈ 14 M + 13 M params)."""
        return cls(**overrides)

    @classmethod
    def small(cls, **overrides) -> "PointEmbeddingConfig":
        """The CPU configuration: 48 → 96/192/384, k = 16, 2048 input points, still 128 + 1 tokens."""
        base = dict(embed_dim=48, group_size=16, projector_hidden=[576, 576], num_points=2048)
        base.update(overrides)
        return cls(**base)

    @classmethod
    def preset(cls, name: str, **overrides) -> "PointEmbeddingConfig":
        presets = {"paper": cls.paper, "small": cls.small}
        if name not in presets:
            raise ConfigError(f"unknown point embedding preset {name!r}; choose one of {sorted(presets)}")
        return presets[name](**overrides)

    @classmethod
    def from_dict(cls, data: dict | None) -> "PointEmbeddingConfig":
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown point embedding field(s) {unknown}; known fields: {sorted(known)}")
        cfg = cls(**data)
        cfg.validate()
        return cfg

    def to_dict(self) -> dict:
        return asdict(self)

    # ---- derived sizes ------------------------------------------------------------------------------------
    @property
    def in_channels(self) -> int:
        return 6 if self.use_color else 3

    @property
    def stage_centres(self) -> list[int]:
        return [self.input_points // 2 ** (i + 1) for i in range(self.num_stages)]

    @property
    def stage_dims(self) -> list[int]:
        return [self.embed_dim * self.dim_expansion ** (i + 1) for i in range(self.num_stages)]

    @property
    def output_dim(self) -> int:
        return self.stage_dims[-1]

    @property
    def num_tokens(self) -> int:
        """Point tokens handed to the LLM: the geometric tokens plus the class token (paper: 129)."""
        return self.stage_centres[-1] + 1

    @property
    def min_points(self) -> int:
        """Fewest input points the first stage can group without padding."""
        return max(self.stage_centres[0], self.group_size)

    def validate(self) -> None:
        if self.num_stages < 1:
            raise ConfigError("num_stages must be at least 1")
        if self.dim_expansion != 2:
            raise ConfigError("dim_expansion must be 2: the feature expansion concatenates two halves")
        centres = self.stage_centres
        if centres[-1] < 1:
            raise ConfigError(f"input_points={self.input_points} leaves no centres after {self.num_stages} stages")
        for prev, nxt in zip(centres, centres[1:]):
            if self.group_size > prev:
                raise ConfigError(f"group_size={self.group_size} exceeds the {prev} centres of an earlier stage")
        for dim in self.stage_dims:
            if dim % 6:
                raise ConfigError(
                    f"stage width {dim} is not divisible by 6 (sin and cos of 3 coordinates); pick an embed_dim "
                    "divisible by 3"
                )
        if self.pooling not in ("max", "maxmean"):
            raise ConfigError(f"pooling must be 'max' or 'maxmean', not {self.pooling!r}")
        if self.std_mode not in ("sample", "batch"):
            raise ConfigError(f"std_mode must be 'sample' or 'batch', not {self.std_mode!r}")
        if self.group_size < 2:
            raise ConfigError("group_size must be at least 2 (a neighbourhood std needs two points)")

    def flops(self, n_points: int | None = None) -> int:
        """Multiply-accumulates × 2 of the linear layers for one cloud (the dominant cost)."""
        n = n_points or self.num_points
        total = 2 * n * self.in_channels * self.embed_dim
        for g, dim in zip(self.stage_centres, self.stage_dims):
            positions = g * self.group_size
            total += 2 * positions * dim * dim  # linear1 (2C = dim → dim)
            total += self.lga_blocks * 2 * positions * 2 * dim * (dim // 2)  # bottleneck dim → dim/2 → dim
        dims = [self.output_dim, *self.projector_hidden]
        total += sum(2 * self.num_tokens * a * b for a, b in zip(dims, dims[1:]))
        return total


@dataclass
class PointTokens:
    """What the embedding hands to the LLM and to the stage-1 / stage-2 machinery.

    Attributes:
        features: ``(B, T, D)`` token features, ``T = 1 + G`` (class token first), ``D = output_dim``.
        centres: ``(B, G, 3)`` coordinates of the geometric tokens (the last stage's FPS centres).
        patches: ``(B, G, k, 3)`` absolute coordinates of each token's k neighbours in the last stage.
    """

    features: torch.Tensor
    centres: torch.Tensor
    patches: torch.Tensor


class _LinearBN(nn.Module):
    """``Linear → BatchNorm → activation`` over the last dim of a channels-last tensor ``(..., C)``."""

    def __init__(self, c_in: int, c_out: int, bias: bool, act: nn.Module | None):
        super().__init__()
        self.linear = nn.Linear(c_in, c_out, bias=bias)
        self.norm = nn.BatchNorm1d(c_out)
        self.act = act if act is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        shape = y.shape
        y = self.norm(y.reshape(-1, shape[-1])).reshape(shape)
        return self.act(y)


class _Bottleneck(nn.Module):
    """Point-PN's ``Linear2Layer``: ``relu(BN(W2 relu(BN(W1 x))) + x)`` with a C → C/2 → C bottleneck."""

    def __init__(self, dim: int):
        super().__init__()
        self.net1 = _LinearBN(dim, dim // 2, bias=True, act=nn.ReLU())
        self.net2 = _LinearBN(dim // 2, dim, bias=True, act=None)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.net2(self.net1(x)) + x)


def triangular_encoding(offsets: torch.Tensor, dim: int, alpha: float, beta: float) -> torch.Tensor:
    """Point-PN's ``PosE_Geo`` on normalised offsets.

    Args:
        offsets: ``(..., 3)`` normalised neighbour offsets.
        dim: output width, divisible by 6.

    Returns:
        ``(..., dim)`` fp32: for each coordinate ``c`` a block of ``dim/3`` channels
        ``[sin(β x_c / α^{0/f}), cos(β x_c / α^{0/f}), sin(β x_c / α^{1/f}), …]`` with ``f = dim/6``.
    """
    feat_dim = dim // 6
    x = offsets.float() * beta
    if alpha == 1.0:
        # every frequency is 1: compute sin/cos once per coordinate and repeat (the released setting)
        sc = torch.stack([torch.sin(x), torch.cos(x)], dim=-1)  # (..., 3, 2)
        return sc.unsqueeze(-2).expand(*x.shape, feat_dim, 2).reshape(*x.shape[:-1], dim)
    freq = alpha ** (torch.arange(feat_dim, device=x.device, dtype=torch.float32) / feat_dim)
    angles = x.unsqueeze(-1) / freq  # (..., 3, f)
    return torch.stack([torch.sin(angles), torch.cos(angles)], dim=-1).reshape(*x.shape[:-1], dim)


class _Stage(nn.Module):
    """One FPS + kNN + local geometry aggregation + pooling stage."""

    def __init__(self, cfg: PointEmbeddingConfig, centres: int, dim: int):
        super().__init__()
        self.centres = centres
        self.k = cfg.group_size
        self.dim = dim
        self.cfg = cfg
        self.linear1 = _LinearBN(dim, dim, bias=False, act=nn.ReLU())
        self.linear2 = nn.Sequential(*[_Bottleneck(dim) for _ in range(cfg.lga_blocks)])
        self.out_norm = nn.BatchNorm1d(dim)
        self.out_act = nn.GELU()

    def _std(self, t: torch.Tensor) -> torch.Tensor:
        if self.cfg.std_mode == "batch":
            return t.float().std().to(t.dtype)
        return t.float().flatten(1).std(dim=1).to(t.dtype).view(-1, *([1] * (t.dim() - 1)))

    def forward(self, xyz: torch.Tensor, x: torch.Tensor, random_start: bool, generator):
        """``xyz (B, N, 3)``, ``x (B, N, C/2)`` → centres ``(B, G, 3)``, features ``(B, G, C)``, patches ``(B, G, k, 3)``."""
        fps_idx = ops.farthest_point_sample(xyz, self.centres, random_start=random_start, generator=generator)
        fps_idx = fps_idx.to(xyz.device)
        lc_xyz = ops.gather(xyz, fps_idx)  # (B, G, 3)
        lc_x = ops.gather(x, fps_idx)  # (B, G, C/2)
        knn_idx, _ = ops.knn(lc_xyz, xyz, self.k)  # (B, G, k)
        knn_xyz = ops.gather(xyz, knn_idx)  # (B, G, k, 3)
        knn_x = ops.gather(x, knn_idx)  # (B, G, k, C/2)

        rel_xyz = knn_xyz - lc_xyz.unsqueeze(2)
        rel_xyz = rel_xyz / (self._std(rel_xyz) + 1e-5)
        rel_x = knn_x - lc_x.unsqueeze(2)
        rel_x = rel_x / (self._std(rel_x) + 1e-5)
        feats = torch.cat([rel_x, lc_x.unsqueeze(2).expand_as(knn_x)], dim=-1)  # (B, G, k, C)
        feats = self.linear1(feats)
        pe = triangular_encoding(rel_xyz, self.dim, self.cfg.pos_alpha, self.cfg.pos_beta)
        feats = self.linear2(feats + pe.to(feats.dtype))
        pooled = feats.max(dim=2).values
        if self.cfg.pooling == "maxmean":
            pooled = pooled + feats.mean(dim=2)
        pooled = self.out_act(self.out_norm(pooled.reshape(-1, self.dim)).reshape(pooled.shape))
        return lc_xyz, pooled, knn_xyz


class PointTokenEmbedding(nn.Module):
    """Point cloud ``(B, N, 3 or 6)`` → :class:`PointTokens` with ``1 + G`` tokens (paper: 129 × 2304)."""

    def __init__(self, cfg: PointEmbeddingConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.raw_embed = _LinearBN(cfg.in_channels, cfg.embed_dim, bias=False, act=nn.ReLU())
        self.stages = nn.ModuleList(
            [_Stage(cfg, g, d) for g, d in zip(cfg.stage_centres, cfg.stage_dims)]
        )
        self.class_token = nn.Parameter(torch.randn(1, 1, cfg.output_dim))

    def _check(self, points: torch.Tensor) -> torch.Tensor:
        if points.dim() != 3:
            raise ValueError(f"point clouds must be (B, N, C), got shape {tuple(points.shape)}")
        c = points.shape[-1]
        if c == 3 and self.cfg.use_color:
            raise ValueError("this model was built with use_color=True and needs (B, N, 6) xyz + rgb input")
        if c not in (3, 6):
            raise ValueError(f"point clouds need 3 (xyz) or 6 (xyz + rgb) channels, got {c}")
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
            ``(B, G, k, 3)``.
        """
        points = self._check(points)
        xyz = points[..., :3].float()
        x = self.raw_embed(points.to(self.class_token.dtype))
        random_start = self.cfg.fps_random_start and self.training
        patches = None
        for stage in self.stages:
            xyz, x, patches = stage(xyz, x, random_start, generator)
        cls = self.class_token.expand(x.shape[0], -1, -1).to(x.dtype)
        return PointTokens(features=torch.cat([cls, x], dim=1), centres=xyz, patches=patches)


class PointProjector(nn.Module):
    """``(…, output_dim) → (…, hidden)``: ``Linear → GELU`` per hidden width, then a final ``Linear``."""

    def __init__(self, in_dim: int, hidden: list[int], out_dim: int):
        super().__init__()
        dims = [in_dim, *hidden]
        layers: list[nn.Module] = []
        for a, b in zip(dims, dims[1:]):
            layers += [nn.Linear(a, b), nn.GELU()]
        layers.append(nn.Linear(dims[-1], out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())

