"""Stage 2: Hierarchical Geometry Aggregation inside the LLM (enel-method.md §3).

The authors never released this part; this module is our implementation of the paper's description, with
the open questions of §3.4 answered in code (and in ``docs/aggregation.md``):

* **Grouping** of the 128 geometric point tokens by their 3D coordinates, either by **FPS + kNN** (the v1
  paper: 128 → 64 → 32 …, k = 16, 8 …) or by a **dynamic voxel grid** (v4: cell size
  ``s_i = α·exp(Σ_{j≤i} β_j)``, ``β_j = γ·tanh(θ_j) + β_ctr``, clamped to ``[s_min, s_max]``, a variable number
  of cells per sample). A hard voxel assignment gives θ no gradient, so θ is fixed per run (documented choice):
  by default θ_j = 1, the paper's ~1/8 reduction on unit-sphere objects (a draw from N(0, 1), the paper's
  init, often reduces nothing), or drawn with a recorded seed, or given.
* **Gated self-attention** inside each group: ``F' = tanh(α)·Attn(F) + F`` with α a learnable scalar starting
  at 0, so the attention adds nothing until training opens the gate (the pooling still merges tokens: a
  stage-1 model with aggregation switched on computes the same function only where every group holds one
  token). The attention has its own projections with a bottleneck width (the authors' internal runs: 256). Only real members are
  keys and are pooled (the paper pads short groups with the group mean; here padding is masked, so its content
  is irrelevant and a cloud's result never depends on the largest group of its batch mates). Grid cells are
  disjoint, so the grid path runs per token with a "same cell" attention mask and segment pooling, with no
  padded slots at all; the overlapping FPS groups run on ``(B, G, K)`` slots.
* **Pooling** to one token per group: ``max``, ``mean`` or ``maxmean`` = ``(max + mean) / 2``. The paper sums
  max and mean inside Point-PN, but in the LLM's residual stream the sum would double a token's scale; the
  average keeps it (a group of one token pools to itself). The aggregated token's coordinate is the mean of
  its members' coordinates; its RoPE position is the smallest member position.
* **Propagation** copies each group's feature back to its members (grid unpooling). With FPS + kNN the groups
  overlap, so every token receives the feature of its *nearest* centre. The paper does not say whether a skip
  adds anything back (the authors' final run had their ``residual`` flag off, ``residual="none"``).
  ``residual="add"`` adds the pre-aggregation features; ``residual="detail"`` adds each token's *difference
  from its group's pooled feature* at aggregation time, a U-Net-like skip: a token gets back its own
  pre-aggregation state plus what the coarse layers added to its group, so the fine detail pooling removed
  is not lost (a token alone in its group, with the gate closed, gets back its own state and update; a
  merged token its own state plus its group's update).
* **Schedule**: layers are numbered from 1 and every event runs at the *end* of the layer it names:
  ``aggregate_after: [1, 2, 3]`` aggregates at the end of layers 1–3, ``propagate_after: [5, 6, 7]`` regrows
  the block at the end of layers 5–7. The layers after the last aggregation up to and including the first
  propagation run on the coarsest sequence; the paper's H counts them (:func:`coarsest_layers`), so
  ``H = propagate_after[0] − aggregate_after[-1]``. The default is the paper's two blocks with its best H = 2
  (aggregate after 1–3, propagate after 5–7; again 11–13 / 15–17 of 32). Its appendix ("aggregation at
  layers 1–3, two LLM layers, propagation at layers 6–8") can also be read with the propagations at the end of
  layers 6–8, which puts three layers on the coarsest sequence; that was this library's default before
  issue 18 and is what ``smollm2_stage2`` still pins (docs/aggregation.md). A schedule written for
  ``reference_layers`` (the paper's 32) is mapped onto a backbone of depth L by ``round_half_up(l · L /
  reference)``; a mapping that merges two events, or a schedule that does not close (every aggregation
  propagated before the last layer, properly nested), is refused with a clear message.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..points import ops
from .configuration_enel import AggregationConfig
from . import layout as L

__all__ = ["HierarchicalAggregation", "GatedGroupAttention", "resolve_schedule", "coarsest_layers"]


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def resolve_schedule(cfg: AggregationConfig, num_layers: int) -> list[tuple[int, str, int, int]]:
    """Map the schedule onto a backbone of ``num_layers`` layers and check that it closes.

    Returns:
        Events ``(layer_index, kind, block, level)`` sorted by layer, with 0-based ``layer_index`` (the event
        runs at the end of that layer), ``kind`` in {"aggregate", "propagate"} and ``level`` the depth of the
        aggregation stack the event creates (aggregate) or removes (propagate).
    """
    scale = num_layers / cfg.reference_layers
    events = []
    for b, block in enumerate(cfg.schedule):
        for lvl, layer in enumerate(block["aggregate_after"]):
            events.append((_round_half_up(layer * scale), "aggregate", b, lvl))
        n = len(block["propagate_after"])
        for i, layer in enumerate(block["propagate_after"]):
            events.append((_round_half_up(layer * scale), "propagate", b, n - 1 - i))
    layers = [e[0] for e in events]
    hint = (f" (the schedule is written for {cfg.reference_layers} layers and mapped onto {num_layers}; "
            f"give an explicit schedule with reference_layers={num_layers})")
    if len(set(layers)) != len(layers):
        raise ConfigError("aggregation schedule puts two events after the same layer" + hint)
    if any(layer < 1 for layer in layers):
        raise ConfigError("aggregation schedule has an event before layer 1" + hint)
    if any(layer >= num_layers for layer in layers):
        raise ConfigError(
            f"aggregation schedule does not close: every aggregation must be propagated before the last layer "
            f"({num_layers}), but events fall after layers {sorted(x for x in layers if x >= num_layers)}" + hint
        )
    events.sort()
    stack: list[tuple[int, int]] = []
    for layer, kind, b, lvl in events:
        if kind == "aggregate":
            if stack and stack[-1][0] != b:
                raise ConfigError(f"aggregation block {b} starts before block {stack[-1][0]} is propagated" + hint)
            if lvl != len(stack):
                raise ConfigError(f"aggregation schedule of block {b} is out of order" + hint)
            stack.append((b, lvl))
        else:
            if not stack or stack[-1] != (b, lvl):
                raise ConfigError(
                    f"aggregation schedule does not close: the propagation after layer {layer} has no matching "
                    "aggregation (propagations must undo aggregations in reverse order)" + hint
                )
            stack.pop()
    if stack:
        raise ConfigError("aggregation schedule does not close: some aggregations are never propagated" + hint)
    return [(layer - 1, kind, b, lvl) for layer, kind, b, lvl in events]


def coarsest_layers(cfg: AggregationConfig, num_layers: int) -> list[list[int]]:
    """The 1-based layers that run on each block's coarsest sequence, after mapping onto ``num_layers``.

    An event runs at the end of its layer, so these are the layers after the block's last aggregation up to and
    including its first propagation; their count is the paper's H (2 for the default schedule).
    """
    events = resolve_schedule(cfg, num_layers)
    spans = []
    for b in range(len(cfg.schedule)):
        last = max(i for i, kind, block, _ in events if block == b and kind == "aggregate")
        first = min(i for i, kind, block, _ in events if block == b and kind == "propagate")
        spans.append(list(range(last + 2, first + 2)))  # 0-based event indices → 1-based layers
    return spans


class GatedGroupAttention(nn.Module):
    """``F' = tanh(α)·Attn(F) + F`` inside each group; α is a scalar (held as shape ``(1,)``) starting at 0.

    Pre-norm (RMSNorm), multi-head attention with its own q/k/v/o projections through a bottleneck width
    ``attn_dim``. Only real members attend and are attended to; padded slots of short groups are masked out as
    keys, so a group's result never depends on the size of the largest group of the batch.

    Cost: the norm and the q/k/v projection run once per *token* of the fine block (``B·P`` rows), not once per
    group slot (``B·G·K`` rows, eight times more for the v1 FPS level 128 → 64 × k 16, whose groups overlap);
    the output projection runs on the real member slots only. The result is the same as projecting every slot.
    Disjoint groups (grid cells) use :meth:`forward_partition`, which has no padded slots at all.
    """

    def __init__(self, hidden: int, attn_dim: int, heads: int, gate: bool, eps: float = 1e-6):
        super().__init__()
        self.heads = heads
        self.norm = nn.RMSNorm(hidden, eps=eps)
        self.qkv = nn.Linear(hidden, 3 * attn_dim, bias=False)
        self.out = nn.Linear(attn_dim, hidden, bias=False)
        self.use_gate = gate
        self.gate = nn.Parameter(torch.zeros(1))  # (1,), not 0-d: FSDP shards only parameters with a dimension

    def forward(self, tokens: torch.Tensor, members: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Attend inside every group and add the gated result to each member.

        Args:
            tokens: ``(B, P, H)`` hidden states of the fine point block.
            members: ``(B, G, K)`` int64 indices into ``P`` of each group's members (ignored where not ``valid``).
            valid: ``(B, G, K)`` bool, real member slots.

        Returns:
            ``(B, G, K, H)``: ``F + tanh(α)·Attn(F)`` at real member slots, where ``F`` is the member's hidden
            state; other slots hold the state of token ``members.clamp(min=0)`` (finite, to be masked by the caller).
        """
        batch, n_groups, k = members.shape
        hidden = tokens.shape[-1]
        idx = members.clamp(min=0)
        feats = ops.gather(tokens, idx)  # (B, G, K, H)
        qkv = ops.gather(self.qkv(self.norm(tokens)), idx)  # (B, G, K, 3·D): projected once per token
        qkv = qkv.reshape(batch * n_groups, k, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        q, kk, v = qkv.unbind(0)  # (B·G, heads, K, D/heads)
        flat_valid = valid.reshape(batch * n_groups, k)
        keep = flat_valid | ~flat_valid.any(-1, keepdim=True)  # a group with no real slot attends to itself
        y = F.scaled_dot_product_attention(q, kk, v, attn_mask=keep[:, None, None, :])
        y = y.transpose(1, 2).reshape(batch * n_groups * k, -1)  # (B·G·K, D)
        if bool(flat_valid.all()):
            o = self.out(y)
        else:  # the output projection on real slots only (padding can be most of a grid level's slots)
            rows = flat_valid.reshape(-1).nonzero().squeeze(1)
            real = self.out(y.index_select(0, rows))
            o = real.new_zeros(y.shape[0], hidden).index_copy(0, rows, real)
        return self._gated(feats, o.reshape(batch, n_groups, k, hidden))

    def forward_partition(self, tokens: torch.Tensor, group_of: torch.Tensor) -> torch.Tensor:
        """The same attention for *disjoint* groups (grid cells), computed per token without padded slots.

        Every token attends to the tokens of its own group: one masked attention over the whole block, whose
        ``P × P`` mask is "same group". For disjoint groups this equals :meth:`forward` on the padded groups, but
        the projections, the residual and the pooling run on ``B·P`` rows instead of ``B·G·K`` (a grid level
        whose largest cell holds 10 tokens while most hold 1 or 2 has ~9× more padded slots than tokens).

        Args:
            tokens: ``(B, P, H)`` hidden states of the fine block.
            group_of: ``(B, P)`` int64 group of every token, ``-1`` for tokens in no group.

        Returns:
            ``(B, P, H)``: ``F + tanh(α)·Attn(F)`` for tokens in a group; other rows are ``F + tanh(α)·(junk)``.
        """
        batch, p, hidden = tokens.shape
        qkv = self.qkv(self.norm(tokens)).reshape(batch, p, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        q, kk, v = qkv.unbind(0)  # (B, heads, P, D/heads)
        same = (group_of[:, :, None] == group_of[:, None, :]) & (group_of >= 0)[:, None, :]
        same = same | torch.eye(p, dtype=torch.bool, device=tokens.device)  # a token outside every group: itself
        y = F.scaled_dot_product_attention(q, kk, v, attn_mask=same[:, None])
        o = self.out(y.transpose(1, 2).reshape(batch, p, -1))
        return self._gated(tokens, o)

    def _gated(self, feats: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
        o = o.to(feats.dtype)
        if not self.use_gate:
            return feats + o
        return torch.addcmul(feats, torch.tanh(self.gate).to(feats.dtype), o)  # F + tanh(α)·o in one pass


def _pool(groups: torch.Tensor, valid: torch.Tensor, how: str) -> torch.Tensor:
    """``groups (S, K, H)``, ``valid (S, K)`` → ``(S, H)``: ``max``, ``mean`` or ``(max + mean) / 2`` over valid slots.

    A row without any valid slot pools to 0.
    """
    if bool(valid.all()):  # FPS groups and grid levels whose cells all hold K tokens: no masking needed
        mean = groups.mean(1)
        if how == "mean":
            return mean
        mx = groups.amax(1)
        return mx if how == "max" else 0.5 * (mx + mean)
    w = valid.to(groups.dtype)
    count = w.sum(1, keepdim=True).clamp(min=1)
    mean = torch.bmm((w / count).unsqueeze(1), groups).squeeze(1)  # one fused pass over the groups
    if how == "mean":
        return mean
    mx = groups.masked_fill(~valid[..., None], float("-inf")).amax(1)
    mx = torch.where(valid.any(1, keepdim=True), mx, mean)
    return mx if how == "max" else 0.5 * (mx + mean)


def _pool_segments(x: torch.Tensor, group_of: torch.Tensor, n_groups: int, how: str) -> torch.Tensor:
    """Pool the rows of each disjoint group: ``x (B, P, H)``, ``group_of (B, P)`` (``-1``: none) → ``(B, G, H)``.

    The same values as :func:`_pool` on the padded groups (an empty group pools to 0), computed with one
    ``index_add`` (sum) and one ``scatter_reduce`` (max) over the ``B·P`` rows.
    """
    batch, p, h = x.shape
    ok = (group_of >= 0).reshape(-1)
    b = torch.arange(batch, device=x.device)[:, None]
    target = (b * n_groups + group_of).reshape(-1)[ok]
    rows = x.reshape(batch * p, h)[ok]
    count = torch.zeros(batch * n_groups, dtype=x.dtype, device=x.device).index_add(
        0, target, torch.ones_like(target, dtype=x.dtype))
    mean = x.new_zeros(batch * n_groups, h).index_add(0, target, rows) / count.clamp(min=1)[:, None]
    if how == "mean":
        return mean.view(batch, n_groups, h)
    mx = x.new_zeros(batch * n_groups, h).scatter_reduce(0, target[:, None].expand(-1, h), rows, "amax",
                                                          include_self=False)
    out = mx if how == "max" else 0.5 * (mx + mean)
    return out.view(batch, n_groups, h)


@dataclass
class _Groups:
    """Groups of fine block slots for one aggregation level.

    members: ``(B, G, K)`` fine slot indices (``-1`` padding); member_valid ``(B, G, K)``;
    group_valid ``(B, G)``; group_of ``(B, P)`` coarse slot per fine slot for propagation (-1 if invalid).
    """

    members: torch.Tensor
    member_valid: torch.Tensor
    group_valid: torch.Tensor
    group_of: torch.Tensor


def _grid_groups(centres: torch.Tensor, valid: torch.Tensor, size: float) -> _Groups:
    vg = ops.voxel_group(centres, size, valid=valid)
    members = vg.members
    member_valid = members >= 0
    group_valid = vg.counts > 0
    return _Groups(members, member_valid, group_valid, vg.assignment)


def _fps_groups(centres: torch.Tensor, has_points: torch.Tensor, n_centres: int, k: int) -> _Groups:
    """FPS + kNN groups (v1): ``centres (B, P, 3)``, ``has_points (B,)`` → :class:`_Groups` with ``G = n_centres``.

    Every block slot of a sample with a cloud is a real token at every FPS level (the count per level is fixed),
    so only samples without a cloud (text-only rows of a mixed batch) have no groups.
    """
    p = centres.shape[1]
    n_centres, k = min(n_centres, p), min(k, p)
    fps_idx = ops.farthest_point_sample(centres, n_centres).to(centres.device)  # (B, G)
    seeds = ops.gather(centres, fps_idx)
    members, _ = ops.knn(seeds, centres, k)  # (B, G, k) overlapping groups, the centre first
    members = members.to(centres.device)
    assign, _ = ops.knn(centres, seeds, 1)  # nearest centre of every token, for propagation
    has = has_points.to(centres.device)
    group_of = torch.where(has[:, None], assign[..., 0].to(centres.device), torch.full_like(assign[..., 0], -1))
    return _Groups(
        members,
        has[:, None, None].expand_as(members).clone(),
        has[:, None].expand(-1, n_centres).clone(),
        group_of,
    )


class HierarchicalAggregation(nn.Module):
    """Aggregation and propagation of point tokens between decoder layers.

    One gated attention module per (block, level). :meth:`aggregate` and :meth:`propagate` work on a
    :class:`~enel.model.layout.SequenceLayout` and the hidden states in it.
    """

    def __init__(self, cfg: AggregationConfig, hidden: int, num_layers: int, eps: float = 1e-6):
        super().__init__()
        self.cfg = cfg
        self.events = resolve_schedule(cfg, num_layers)
        self.blocks = len(cfg.schedule)
        self.attn = nn.ModuleList(
            [
                GatedGroupAttention(hidden, cfg.attn_dim, cfg.attn_heads, cfg.gate, eps)
                for _ in range(self.blocks * cfg.levels)
            ]
        )
        self._cell_sizes = cfg.cell_sizes() if cfg.grouping == "grid" else []

    def event_after(self, layer_idx: int) -> tuple[str, int, int] | None:
        for layer, kind, b, lvl in self.events:
            if layer == layer_idx:
                return kind, b, lvl
        return None

    def _group(self, layout: L.SequenceLayout, level: int) -> _Groups:
        centres = layout.point_centres
        if centres is None:
            raise ValueError("aggregation needs the point token coordinates (layout.point_centres)")
        has = layout.has_points
        if self.cfg.grouping == "grid":
            return _grid_groups(centres, layout.point_valid & has[:, None], self._cell_sizes[level])
        if not bool(layout.point_valid[has].all()):
            raise ValueError("FPS grouping expects every block slot of a sample with a cloud to hold a token")
        return _fps_groups(centres, has, self.cfg.fps_centres[level], self.cfg.fps_k[level])

    def aggregate(self, hidden: torch.Tensor, layout: L.SequenceLayout, block: int, level: int):
        """Group, attend, pool and shrink the point block.

        Args:
            hidden: ``(B, L, H)`` in ``layout``.
            block, level: which aggregation (selects the attention module and, for the grid, the cell size).

        Returns:
            ``(hidden', transition)``: ``hidden' (B, L', H)`` in ``transition.coarse``, where the block of ``P``
            slots became one of ``G`` slots (the largest group count in the batch), one per group, ordered by
            position.
        """
        groups = self._group(layout, level)
        fine = layout.gather_block(hidden)  # (B, P, H)
        batch, n_groups, k = groups.members.shape
        h = fine.shape[-1]
        mv = groups.member_valid
        attn = self.attn[block * self.cfg.levels + level]
        if self.cfg.grouping == "grid":  # disjoint cells: per token, no padded slots
            pooled = _pool_segments(attn.forward_partition(fine, groups.group_of), groups.group_of, n_groups,
                                    self.cfg.pooling)
        else:  # overlapping kNN groups, every slot real
            attended = attn(fine, groups.members, mv)  # (B, G, K, H)
            pooled = _pool(attended.reshape(batch * n_groups, k, h), mv.reshape(batch * n_groups, k),
                           self.cfg.pooling).reshape(batch, n_groups, h)
        skip = fine
        if self.cfg.residual == "detail":  # each token's difference from its group's pooled feature
            skip = fine - ops.gather(pooled, groups.group_of.clamp(min=0))

        # coordinates, positions and order of the aggregated tokens
        idx = groups.members.clamp(min=0)
        c = ops.gather(layout.point_centres, idx)  # (B, G, K, 3)
        cw = mv[..., None].to(c.dtype)
        new_centres = (c * cw).sum(2) / cw.sum(2).clamp(min=1)
        block_pos = torch.gather(layout.position_ids, 1, layout.block_index())  # (B, P)
        pos = torch.gather(block_pos, 1, idx.reshape(batch, -1)).reshape(batch, n_groups, k)
        big = torch.iinfo(pos.dtype).max
        rep = pos.masked_fill(~mv, big).min(2).values  # (B, G)
        rep = torch.where(groups.group_valid, rep, torch.full_like(rep, big))
        order = torch.argsort(rep, dim=1, stable=True)  # valid groups first, by position
        inverse = torch.argsort(order, dim=1)
        pooled = torch.gather(pooled, 1, order[..., None].expand(-1, -1, h))
        new_centres = torch.gather(new_centres, 1, order[..., None].expand(-1, -1, 3))
        new_valid = torch.gather(groups.group_valid, 1, order)
        new_pos = torch.where(new_valid, torch.gather(rep, 1, order), torch.zeros_like(rep))
        group_of = torch.where(groups.group_of >= 0, torch.gather(inverse, 1, groups.group_of.clamp(min=0)),
                               torch.full_like(groups.group_of, -1))
        return L.shrink(layout, hidden, pooled, new_valid, new_pos, new_centres, group_of, pre_block=skip)

    def propagate(self, hidden: torch.Tensor, transition: L.Transition) -> torch.Tensor:
        """Copy each group's feature back to its members: ``(B, L', H)`` → ``(B, L, H)``."""
        return L.regrow(transition, hidden, residual=self.cfg.residual != "none")
