"""The PointLLM-style baseline: a Point-BERT encoder and an MLP projector in place of ENEL's token embedding.

ENEL's claim is a comparison with PointLLM, whose points reach the LLM through a separately pre-trained, frozen 3D
encoder (pointllm-ecosystem.md §2.1–2.2). This module builds that encoder inside the same model, so that the two
models differ only in how points become tokens: a model with ``EnelConfig.point_encoder="pointbert"`` holds
:class:`PointBertEncoder` (``model.point_backbone``) and :class:`PointLLMProjector` (``model.point_proj``) instead of
the token embedding and its projector, and shares the splice, the backbone, the loss and ``generate()``.

The encoder (PointLLM v1.2's ``PointTransformer``, sizes in :class:`~enel.model.configuration_enel.PointBertConfig`):

1. grouping: FPS picks ``G`` centres, each takes its ``k`` nearest points (:mod:`enel.points.ops`); a patch is its
   points' xyz relative to the centre, with their rgb as it is;
2. a mini-PointNet per patch: ``6 → 128`` (BN, ReLU) ``→ 256``, max over the points, concatenated back to every
   point ``→ 512`` (BN, ReLU) ``→ encoder_dims``, max again (the small size halves these widths);
   ``reduce_dim`` brings it to ``trans_dim``;
3. a class token (with its own position ``cls_pos``) prepended; the centres' positional MLP ``3 → 128 → trans_dim``
   added before **every** block; ``depth`` pre-norm ViT blocks (fused ``qkv`` without bias, scale ``head_dim^-½``,
   exact GELU, LayerNorm eps 1e-5) and a final LayerNorm: ``(B, 1 + G, trans_dim)``, 513 × 384 at PointLLM's size.

Parameter names and shapes are those of PointLLM's checkpoint (``model.point_backbone.*``, ``model.point_proj.*``;
checkpoint-layouts.md §1.4), so its weights load as they are: the patch convolutions are ``nn.Conv1d`` modules
(weights ``(out, in, 1)``), applied as linear layers on channels-last tensors (the same maths).

Differences from PointLLM, each a documented decision:

* FPS starts at index 0 (deterministic tokens); PointLLM always started at a random index
  (``fps_random_start=True`` restores that in training). FPS and kNN break ties by the lowest index.
* Clouds with fewer points than ``max(num_group, group_size)`` are padded by cycling through their points, the
  rule of ENEL's embedding.
* The encoder is pre-trained the way a user without ULIP-2's image-text data would: masked point modelling in the
  Point-MAE style on the training clouds (:func:`pretrain_mae`), not ULIP-2 alignment to OpenCLIP.

:func:`pretrain_mae`: 60 % of the groups are masked; the encoder sees the class token and the visible groups; a
light decoder (:class:`MaskedPointModel`: mask tokens, its own positional MLP, a few blocks) predicts each masked
patch's ``k`` relative xyz from its centre; the loss is Chamfer-L2 (:func:`enel.points.ops.chamfer_l2`). The
decoder is thrown away; the encoder is then frozen for stage 1 as PointLLM's (``enel.train.freezing``), and a
:class:`FeatureStandardizer` fitted to its tokens on the same clouds sits between it and the projector (ours, not
PointLLM's: the identity until fitted).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from ..points import ops
from .configuration_enel import PointBertConfig
from .embedding import PointTokens

__all__ = [
    "PointBertEncoder", "PointLLMProjector", "FeatureStandardizer", "encoder_features", "MiniPointNet",
    "TransformerBlocks", "MaskedPointModel", "pretrain_mae", "MAE_MASK_RATIO",
]

MAE_MASK_RATIO = 0.6
"""Share of the groups Point-MAE masks."""


def _pointwise(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """A kernel-1 ``Conv1d`` (weight ``(out, in, 1)``) on channels-last ``x (…, in)`` → ``(…, out)``."""
    return F.linear(x, conv.weight.squeeze(-1), conv.bias)


def _batch_norm(bn: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
    """``BatchNorm1d`` over the channels of channels-last ``x (…, C)``."""
    return bn(x.reshape(-1, x.shape[-1])).view_as(x)


class MiniPointNet(nn.Module):
    """Point-BERT's patch ``Encoder``: ``(R, k, C)`` patches → ``(R, out_dim)`` features.

    ``first_conv`` (``C → a``, BN, ReLU, ``→ b``), max over the k points, the max concatenated to every point
    (``2b``), ``second_conv`` (``2b → c``, BN, ReLU, ``→ out_dim``), max over the k points; PointLLM's
    ``dims = (a, b, c)`` is (128, 256, 512). Indices 0/1/3 of each ``Sequential`` are the checkpoint's (2 is the ReLU).
    """

    def __init__(self, in_channels: int, out_dim: int, dims=(128, 256, 512)):
        super().__init__()
        a, b, c = (int(d) for d in dims)
        self.first_conv = nn.Sequential(nn.Conv1d(in_channels, a, 1), nn.BatchNorm1d(a), nn.ReLU(inplace=True),
                                        nn.Conv1d(a, b, 1))
        self.second_conv = nn.Sequential(nn.Conv1d(2 * b, c, 1), nn.BatchNorm1d(c), nn.ReLU(inplace=True),
                                         nn.Conv1d(c, out_dim, 1))

    @staticmethod
    def _conv_bn_relu_conv(seq: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
        return _pointwise(seq[3], torch.relu(_batch_norm(seq[1], _pointwise(seq[0], x))))

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        f = self._conv_bn_relu_conv(self.first_conv, patches)  # (R, k, 256)
        g = f.amax(dim=1, keepdim=True).expand_as(f)
        f = self._conv_bn_relu_conv(self.second_conv, torch.cat([g, f], dim=-1))  # (R, k, out_dim)
        return f.amax(dim=1)


class _DropPath(nn.Module):
    """Stochastic depth: in training, zero a sample's residual branch with probability ``p`` (rescaling the rest)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.empty(x.shape[0], *([1] * (x.dim() - 1)), dtype=x.dtype, device=x.device).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class _Attention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` (rows q | k | v, heads contiguous inside each) and no bias."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # scale head_dim^-0.5, as Point-BERT's
        return self.proj(out.transpose(1, 2).reshape(b, t, d))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class _Block(nn.Module):
    """Pre-norm ViT block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))`` (each branch under stochastic depth)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, drop_path: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = _Attention(dim, heads)
        self.drop_path = _DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = _Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class TransformerBlocks(nn.Module):
    """Point-BERT's ``TransformerEncoder``: ``blocks`` applied in turn, the positions added before each one.

    ``forward(x (B, T, D), pos (B, T, D)) → (B, T, D)``.
    """

    def __init__(self, dim: int, depth: int, heads: int, mlp_ratio: float, drop_path_rate: float):
        super().__init__()
        rates = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist() if depth > 1 else [0.0] * depth
        self.blocks = nn.ModuleList([_Block(dim, heads, mlp_ratio, r) for r in rates])

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x + pos)
        return x


def _position_mlp(dim: int) -> nn.Sequential:
    """Positions of the centres: ``3 → 128 → GELU → dim`` (Point-BERT's ``pos_embed``, Point-MAE's decoder's)."""
    return nn.Sequential(nn.Linear(3, 128), nn.GELU(), nn.Linear(128, dim))


class PointBertEncoder(nn.Module):
    """Point cloud ``(B, N, 3 or 6)`` → :class:`~enel.model.embedding.PointTokens` with ``1 + num_group`` tokens of
    ``trans_dim`` (PointLLM: 513 × 384). Parameter names follow PointLLM's ``model.point_backbone.*``."""

    def __init__(self, cfg: PointBertConfig, in_channels: int = 6):
        super().__init__()
        self.cfg = cfg
        self.in_channels = in_channels
        dim = cfg.trans_dim
        self.encoder = MiniPointNet(in_channels, cfg.encoder_dims, cfg.pointnet_dims)
        self.reduce_dim = nn.Linear(cfg.encoder_dims, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.cls_pos = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = _position_mlp(dim)
        self.blocks = TransformerBlocks(dim, cfg.depth, cfg.num_heads, cfg.mlp_ratio, cfg.drop_path_rate)
        self.norm = nn.LayerNorm(dim)

    def group(self, points: torch.Tensor, generator: torch.Generator | None = None):
        """FPS centres and their kNN patches.

        Args:
            points: ``(B, N, C)``, xyz first, then rgb when ``in_channels`` is 6 (a colourless encoder drops it);
                clouds below ``min_points`` are padded by cycling through their points.
            generator: drives the random FPS start (``fps_random_start`` in training).

        Returns:
            ``(patches, centres, neighbours)``: ``(B, G, k, C)`` the patch points, xyz relative to their centre and
            the other channels as they are; ``(B, G, 3)`` the centres; ``(B, G, k, 3)`` the patch points' absolute xyz.
        """
        if points.dim() != 3 or points.shape[-1] not in (3, 6) or points.shape[-1] < self.in_channels:
            raise ValueError(f"the point encoder takes (B, N, {self.in_channels}) clouds, got {tuple(points.shape)}")
        points = points[..., : self.in_channels]
        n = points.shape[1]
        if n < self.cfg.min_points:
            points = points[:, torch.arange(self.cfg.min_points, device=points.device) % n]
        xyz = points[..., :3].float()
        random_start = self.cfg.fps_random_start and self.training
        centre_idx = ops.farthest_point_sample(xyz, self.cfg.num_group, random_start=random_start, generator=generator)
        centres = ops.gather(xyz, centre_idx.to(xyz.device))
        knn_idx, _ = ops.knn(centres, xyz, self.cfg.group_size)
        grouped = ops.gather(points, knn_idx.to(points.device))  # (B, G, k, C)
        neighbours = grouped[..., :3].float()
        relative = (neighbours - centres.unsqueeze(2)).to(points.dtype)
        return torch.cat([relative, grouped[..., 3:]], dim=-1), centres, neighbours

    def embed_groups(self, patches: torch.Tensor) -> torch.Tensor:
        """``(B, G, k, C)`` patches → ``(B, G, trans_dim)`` group tokens (mini-PointNet + ``reduce_dim``)."""
        b, g, k, c = patches.shape
        return self.reduce_dim(self.encoder(patches.reshape(b * g, k, c)).view(b, g, -1))

    def encode(self, tokens: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
        """Group tokens ``(B, T, D)`` at ``centres (B, T, 3)`` → ``(B, 1 + T, D)``: the class token prepended, the
        blocks with the positions added before each, the final norm."""
        b = tokens.shape[0]
        x = torch.cat([self.cls_token.expand(b, -1, -1).to(tokens.dtype), tokens], dim=1)
        pos = torch.cat([self.cls_pos.expand(b, -1, -1), self.pos_embed(centres.to(self.cls_pos.dtype))], dim=1)
        return self.norm(self.blocks(x, pos.to(x.dtype)))

    def forward(self, points: torch.Tensor, generator: torch.Generator | None = None) -> PointTokens:
        """``points (B, N, C)`` → :class:`PointTokens`: features ``(B, 1 + G, trans_dim)``, centres ``(B, G, 3)``,
        patches ``(B, G, k, 3)`` (absolute xyz), no colors."""
        patches, centres, neighbours = self.group(points.to(self.cls_token.dtype), generator)
        features = self.encode(self.embed_groups(patches), centres)
        return PointTokens(features=features, centres=centres, patches=neighbours, colors=None)


class PointLLMProjector(nn.Sequential):
    """PointLLM v1.2's ``point_proj``: ``Linear → GELU`` per hidden width, then ``Linear`` to the LLM's width.

    Keys ``0``, ``2``, ``4`` are the linear layers, as in the checkpoint. It answers the interface of
    :class:`~enel.model.embedding.PointProjector` (``forward(x, colors)``, ``net``) so the model treats both alike.
    """

    def __init__(self, in_dim: int, hidden: list[int], out_dim: int):
        dims = [in_dim, *hidden]
        layers: list[nn.Module] = []
        for a, b in zip(dims, dims[1:]):
            layers += [nn.Linear(a, b), nn.GELU()]
        super().__init__(*layers, nn.Linear(dims[-1], out_dim))

    @property
    def net(self) -> nn.Sequential:
        return self

    @property
    def color(self) -> None:
        """No colour skip: PointLLM has none."""
        return None

    def forward(self, x: torch.Tensor, colors: torch.Tensor | None = None) -> torch.Tensor:
        """``x (…, trans_dim)`` → ``(…, hidden)``; ``colors`` is ignored."""
        for layer in self:
            x = layer(x)
        return x


class FeatureStandardizer(nn.Module):
    """A fixed per-channel standardisation of the frozen encoder's tokens: ``(x − mean) / std``.

    A masked-modelling encoder's tokens are mostly one vector shared by every cloud (after a short Point-MAE run
    on the CPU, 99.8 % of their energy does not differ between clouds; docs/ablations.md), so the projector would
    start from tokens the LLM cannot tell apart. :meth:`fit` sets ``mean`` and ``std`` once, from the encoder's
    tokens on its training clouds, after its pre-training; they are buffers (saved with the model, never
    trained). At ``mean = 0, std = 1`` (the init) it is the identity, which is what PointLLM's own encoder and
    projector need when their checkpoint is loaded.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (…, D)`` → ``(…, D)``."""
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    @torch.no_grad()
    def fit(self, features: torch.Tensor, min_std: float = 1e-6) -> None:
        """Set ``mean`` and ``std`` to those of each channel of ``features (M, T, D)`` over the clouds and tokens."""
        flat = features.detach().float().reshape(-1, features.shape[-1])
        self.mean.copy_(flat.mean(0))
        self.std.copy_(flat.std(0).clamp(min=min_std))


@torch.no_grad()
def encoder_features(encoder: PointBertEncoder, clouds: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """The tokens ``(M, 1 + G, trans_dim)`` of ``clouds (M, N, C)`` from ``encoder`` in eval mode (its mode is
    restored afterwards), computed ``batch_size`` clouds at a time."""
    was_training = encoder.training
    encoder.eval()
    try:
        dtype = encoder.cls_token.dtype
        return torch.cat([encoder(c.to(dtype)).features for c in clouds.split(batch_size)])
    finally:
        encoder.train(was_training)


# ----------------------------------------------------------------------------------------------------------
# Masked point modelling (Point-MAE)
# ----------------------------------------------------------------------------------------------------------
class MaskedPointModel(nn.Module):
    """Point-MAE around a :class:`PointBertEncoder`: mask groups, encode the visible ones, reconstruct the masked.

    Args:
        encoder: the encoder to pre-train (shared, not copied).
        mask_ratio: share of each cloud's groups that are masked (Point-MAE: 0.6).
        decoder_depth: blocks of the light decoder (Point-MAE: 4); its heads are the encoder's.
    """

    def __init__(self, encoder: PointBertEncoder, mask_ratio: float = MAE_MASK_RATIO, decoder_depth: int = 2):
        super().__init__()
        cfg = encoder.cfg
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must lie in (0, 1), got {mask_ratio}")
        self.num_masked = min(cfg.num_group - 1, max(1, round(mask_ratio * cfg.num_group)))
        self.encoder = encoder
        dim = cfg.trans_dim
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.decoder_pos_embed = _position_mlp(dim)
        self.decoder = TransformerBlocks(dim, decoder_depth, cfg.num_heads, cfg.mlp_ratio, cfg.drop_path_rate)
        self.decoder_norm = nn.LayerNorm(dim)
        self.increase_dim = nn.Linear(dim, 3 * cfg.group_size)
        with torch.no_grad():
            self.mask_token.normal_(0.0, 0.02)

    def forward(self, points: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``points (B, N, C)`` → the Chamfer-L2 between the predicted and the true masked patches (a scalar)."""
        patches, centres, _ = self.encoder.group(points, generator)
        b, g, k, _ = patches.shape
        order = torch.rand(b, g, generator=generator).argsort(dim=1).to(patches.device)
        masked, visible = order[:, : self.num_masked], order[:, self.num_masked :]
        tokens = self.encoder.embed_groups(patches)
        encoded = self.encoder.encode(ops.gather(tokens, visible), ops.gather(centres, visible))[:, 1:]
        m = self.num_masked
        x = torch.cat([encoded, self.mask_token.expand(b, m, -1).to(encoded.dtype)], dim=1)
        pos = self.decoder_pos_embed(torch.cat([ops.gather(centres, visible), ops.gather(centres, masked)], dim=1))
        out = self.decoder_norm(self.decoder(x, pos.to(x.dtype))[:, -m:])
        pred = self.increase_dim(out).reshape(b * m, k, 3)
        target = ops.gather(patches[..., :3], masked).reshape(b * m, k, 3)
        return ops.chamfer_l2(pred, target)


def pretrain_mae(
    encoder: PointBertEncoder,
    clouds: torch.Tensor,
    *,
    steps: int,
    batch_size: int = 8,
    lr: float = 1e-3,
    weight_decay: float = 0.05,
    mask_ratio: float = MAE_MASK_RATIO,
    decoder_depth: int = 2,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
    log_every: int = 50,
) -> list[float]:
    """Pre-train ``encoder`` by masked point modelling on ``clouds`` for ``steps`` AdamW steps (cosine schedule).

    Each step draws ``batch_size`` clouds (with replacement, from a generator seeded by ``seed``). The encoder's
    parameters train during the call (its training mode and ``requires_grad`` flags are restored afterwards); the
    decoder is built here and dropped. Point-MAE trained 300 epochs of ShapeNet; a CPU run is far shorter.

    Args:
        encoder: the :class:`PointBertEncoder` to train in place.
        clouds: ``(M, N, C)`` training clouds, C = the encoder's ``in_channels``.

    Returns:
        The loss of every step.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, not {steps}")
    if clouds.dim() != 3 or clouds.shape[0] < 1:
        raise ValueError(f"clouds must be (M, N, C) with M >= 1, got {tuple(clouds.shape)}")
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # the decoder's init and the stochastic depth
    mae = MaskedPointModel(encoder, mask_ratio=mask_ratio, decoder_depth=decoder_depth).to(
        device=clouds.device, dtype=encoder.cls_token.dtype)
    was_training = encoder.training
    flags = [p.requires_grad for p in encoder.parameters()]
    mae.requires_grad_(True)
    mae.train()
    opt = torch.optim.AdamW(mae.parameters(), lr=lr, weight_decay=weight_decay)
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, steps - warmup))))
    losses: list[float] = []
    try:
        for step in range(steps):
            pick = torch.randint(clouds.shape[0], (batch_size,), generator=generator).to(clouds.device)
            loss = mae(clouds[pick].to(encoder.cls_token.dtype), generator)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(mae.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            if log is not None and (step + 1) % log_every == 0:
                log(f"[enel] encoder pre-training (masked point modelling) step {step + 1}/{steps}: "
                    f"Chamfer-L2 {sum(losses[-log_every:]) / log_every:.5f}")
    finally:
        encoder.train(was_training)
        for p, flag in zip(encoder.parameters(), flags):
            p.requires_grad_(flag)
        encoder.zero_grad(set_to_none=True)
    return losses
