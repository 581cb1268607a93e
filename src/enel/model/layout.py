"""The token sequence each decoder layer sees: masks, positions, the point block, and how it shrinks and regrows.

Without stage-2 aggregation every layer sees the same sequence. With it, the point block gets shorter after an
aggregating layer and longer again after a propagating one, so the model tracks one :class:`SequenceLayout`
per distinct sequence and a :class:`Transition` between a layout and the coarser one built from it.

Conventions (the answers to enel-method.md §3.4; ``docs/aggregation.md`` draws them):

* The point block of a sample is the run of its *geometric* point tokens, ``[block_start, block_start + P)``,
  right after the class token; ``P`` is the same for the whole batch and ``point_valid`` says which slots are
  real (a grid level may hold fewer cells for one cloud than for another). Text, ``<point_start>``, the class
  token and ``<point_end>`` are never touched.
* Text tokens keep their original RoPE positions in every layer. An aggregated token takes the smallest
  position of its members, and aggregated tokens are ordered by that position, so causal order equals position
  order and a group of one token is exactly that token.
* When the block shrinks, the tokens after it move left; the batch keeps a common length by padding at the
  right end; padded slots (inside the block or at the end) are masked out as keys.
* Each decoder layer's KV cache holds the keys of the sequence that layer saw. For generation the model stores
  each layer's key mask of the prompt (:class:`LayerKeyMasks`); a decoding step appends the new tokens' mask
  to every layer's, so cached keys, masks and positions stay consistent for every layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["SequenceLayout", "Transition", "LayerKeyMasks", "additive_mask", "default_position_ids"]


def default_position_ids(attention_mask: torch.Tensor, past: int = 0) -> torch.Tensor:
    """Positions that ignore left padding, as ``generate`` computes them: ``cumsum(mask) - 1``.

    Args:
        attention_mask: ``(B, L)`` 0/1 over the full sequence (past + new tokens).
        past: how many leading entries are already in the cache; only the rest are returned.

    Returns:
        ``(B, L - past)`` int64 (padding positions get 0).
    """
    pos = attention_mask.long().cumsum(-1) - 1
    pos = pos.masked_fill(attention_mask == 0, 0)
    return pos[:, past:]


def additive_mask(key_mask: torch.Tensor, q_len: int, dtype: torch.dtype) -> torch.Tensor:
    """A causal additive mask for the last ``q_len`` queries over ``kv_len`` keys.

    Args:
        key_mask: ``(B, K)`` bool, which keys may be attended at all.
        q_len: number of queries; they are the last ``q_len`` entries of the key sequence.

    Returns:
        ``(B, 1, q_len, K)`` in ``dtype``: 0 where attention is allowed, the dtype's minimum elsewhere.
    """
    kv_len = key_mask.shape[1]
    q_idx = torch.arange(kv_len - q_len, kv_len, device=key_mask.device)
    k_idx = torch.arange(kv_len, device=key_mask.device)
    allowed = (k_idx[None, :] <= q_idx[:, None])[None] & key_mask[:, None, :]  # (B, q, K)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=key_mask.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask.unsqueeze(1)


@dataclass
class SequenceLayout:
    """One sequence as a decoder layer sees it.

    Attributes:
        key_mask: ``(B, L)`` bool, real tokens (False for padding).
        position_ids: ``(B, L)`` int64 RoPE positions.
        block_start: ``(B,)`` int64 index of the first geometric point token, ``-1`` for samples without a cloud.
        point_valid: ``(B, P)`` bool, which block slots hold a real token.
        point_centres: ``(B, P, 3)`` coordinates of the block's tokens (None when unknown).
    """

    key_mask: torch.Tensor
    position_ids: torch.Tensor
    block_start: torch.Tensor
    point_valid: torch.Tensor
    point_centres: torch.Tensor | None = None

    @property
    def length(self) -> int:
        return self.key_mask.shape[1]

    @property
    def block_len(self) -> int:
        return self.point_valid.shape[1]

    @property
    def has_points(self) -> torch.Tensor:
        """``(B,)`` bool."""
        return self.block_start >= 0

    def block_index(self) -> torch.Tensor:
        """``(B, P)`` sequence index of every block slot (clamped to 0 for samples without a cloud)."""
        offs = torch.arange(self.block_len, device=self.block_start.device)
        return (self.block_start.clamp(min=0)[:, None] + offs[None, :]).clamp(max=self.length - 1)

    def gather_block(self, hidden: torch.Tensor) -> torch.Tensor:
        """``(B, L, H) -> (B, P, H)`` the block's hidden states (rows of samples without a cloud are junk)."""
        idx = self.block_index()
        return torch.gather(hidden, 1, idx[..., None].expand(-1, -1, hidden.shape[-1]))

    def scatter_block(self, hidden: torch.Tensor, block: torch.Tensor) -> torch.Tensor:
        """Write ``block (B, P, H)`` into ``hidden (B, L, H)`` at valid slots of samples with a cloud."""
        write = (self.point_valid & self.has_points[:, None])[..., None]
        idx = self.block_index()[..., None].expand(-1, -1, hidden.shape[-1])
        current = torch.gather(hidden, 1, idx)
        return hidden.scatter(1, idx, torch.where(write, block.to(hidden.dtype), current))

    def add_to_block(self, hidden: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """``hidden + delta`` on the valid block slots; ``delta`` is ``(B, P, H)``."""
        write = (self.point_valid & self.has_points[:, None]).to(delta.dtype)[..., None]
        idx = self.block_index()[..., None].expand(-1, -1, hidden.shape[-1])
        return hidden.scatter_add(1, idx, (delta * write).to(hidden.dtype))


@dataclass
class Transition:
    """How a coarse layout was built from a fine one (everything propagation needs to undo it).

    Attributes:
        fine: the layout before aggregation.
        coarse: the layout after aggregation.
        source_index: ``(B, L')`` index into the fine sequence of every coarse position that is not a block slot
            (0 for block slots and padding; see ``source_valid``).
        source_valid: ``(B, L')`` bool, coarse positions copied from the fine sequence.
        group_of: ``(B, P)`` for every fine block slot, the coarse block slot whose feature it receives back
            on propagation (``-1`` for invalid fine slots).
        pre_block: ``(B, P, H)`` the fine block's hidden states before aggregation (the residual source).
    """

    fine: SequenceLayout
    coarse: SequenceLayout
    source_index: torch.Tensor
    source_valid: torch.Tensor
    group_of: torch.Tensor
    pre_block: torch.Tensor


def shrink(
    layout: SequenceLayout,
    hidden: torch.Tensor,
    new_block: torch.Tensor,
    new_valid: torch.Tensor,
    new_positions: torch.Tensor,
    new_centres: torch.Tensor | None,
    group_of: torch.Tensor,
) -> tuple[torch.Tensor, Transition]:
    """Replace each sample's point block by a (shorter) block of aggregated tokens.

    Args:
        layout: the fine layout; ``hidden`` is ``(B, L, H)`` in it.
        new_block: ``(B, P', H)`` aggregated features.
        new_valid: ``(B, P')`` bool, real aggregated slots.
        new_positions: ``(B, P')`` int64 positions of the aggregated tokens.
        new_centres: ``(B, P', 3)`` or None.
        group_of: ``(B, P)`` coarse slot of every fine slot (``-1`` where the fine slot is invalid).

    Returns:
        ``(hidden', transition)`` with ``hidden'`` of shape ``(B, L', H)``.
    """
    batch, length, _ = hidden.shape
    p_old, p_new = layout.block_len, new_block.shape[1]
    has = layout.has_points
    new_len_b = torch.where(has, torch.full_like(layout.block_start, length - p_old + p_new),
                            torch.full_like(layout.block_start, length))
    new_len = int(new_len_b.max())
    j = torch.arange(new_len, device=hidden.device)[None, :].expand(batch, -1)
    bs = layout.block_start.clamp(min=0)[:, None]
    in_block = has[:, None] & (j >= bs) & (j < bs + p_new)
    after = has[:, None] & (j >= bs + p_new)
    src = torch.where(after, j - p_new + p_old, j)
    real = j < new_len_b[:, None]
    source_valid = real & ~in_block
    src = torch.where(source_valid, src, torch.zeros_like(src))

    gathered = torch.gather(hidden, 1, src[..., None].expand(-1, -1, hidden.shape[-1]))
    gathered = gathered * source_valid[..., None].to(gathered.dtype)
    key_mask = torch.gather(layout.key_mask, 1, src) & source_valid
    position_ids = torch.gather(layout.position_ids, 1, src) * source_valid

    coarse = SequenceLayout(
        key_mask=key_mask,
        position_ids=position_ids,
        block_start=layout.block_start.clone(),
        point_valid=new_valid & has[:, None],
        point_centres=new_centres,
    )
    # block slots: features, positions and key mask of the aggregated tokens
    idx = coarse.block_index()
    write = coarse.point_valid
    out = coarse.scatter_block(gathered, new_block)
    coarse.key_mask = coarse.key_mask.scatter(1, idx, torch.gather(coarse.key_mask, 1, idx) | write)
    coarse.position_ids = coarse.position_ids.scatter(
        1, idx, torch.where(write, new_positions, torch.gather(coarse.position_ids, 1, idx))
    )
    transition = Transition(
        fine=layout,
        coarse=coarse,
        source_index=src,
        source_valid=source_valid,
        group_of=group_of,
        pre_block=layout.gather_block(hidden),
    )
    return out, transition


def regrow(transition: Transition, hidden: torch.Tensor, residual: bool) -> torch.Tensor:
    """Undo :func:`shrink`: back to the fine layout, copying each group's feature to its members.

    Args:
        transition: the record :func:`shrink` returned.
        hidden: ``(B, L', H)`` in the coarse layout.
        residual: add the fine block's pre-aggregation features to the propagated ones.

    Returns:
        ``(B, L, H)`` in the fine layout.
    """
    fine, coarse = transition.fine, transition.coarse
    batch, length = fine.key_mask.shape
    h = hidden.shape[-1]
    out = hidden.new_zeros(batch, length, h)
    # non-block tokens: scatter back to where they came from
    src = torch.where(transition.source_valid, transition.source_index, torch.zeros_like(transition.source_index))
    vals = hidden * transition.source_valid[..., None].to(hidden.dtype)
    out = out.scatter_add(1, src[..., None].expand(-1, -1, h), vals)
    # block tokens: unpool
    coarse_block = coarse.gather_block(hidden)  # (B, P', H)
    g = transition.group_of.clamp(min=0)
    unpooled = torch.gather(coarse_block, 1, g[..., None].expand(-1, -1, h))
    if residual:
        unpooled = unpooled + transition.pre_block.to(unpooled.dtype)
    valid = fine.point_valid & (transition.group_of >= 0)
    fine_for_write = SequenceLayout(fine.key_mask, fine.position_ids, fine.block_start, valid, fine.point_centres)
    return fine_for_write.scatter_block(out, unpooled)


@dataclass
class LayerKeyMasks:
    """Per-layer key masks of a prompt, kept on the KV cache so decoding steps can extend them.

    Attributes:
        masks: one ``(B, L_i)`` bool mask per decoder layer, the keys that layer cached for the prompt.
        prompt_len: length of the prompt in the full (un-aggregated) sequence.
    """

    masks: list[torch.Tensor] = field(default_factory=list)
    prompt_len: int = 0

    def for_step(self, layer: int, full_mask: torch.Tensor) -> torch.Tensor:
        """Key mask of ``layer`` for a decoding step: the prompt's mask plus the new tokens' entries.

        Args:
            full_mask: ``(B, prompt_len + t)`` bool, the attention mask over the full sequence so far.
        """
        return torch.cat([self.masks[layer], full_mask[:, self.prompt_len :]], dim=1)

    def reorder(self, beam_idx: torch.Tensor) -> None:
        self.masks = [m.index_select(0, beam_idx.to(m.device)) for m in self.masks]
