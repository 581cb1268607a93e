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
* Each decoder layer's KV cache holds the keys of the sequence that layer saw. For generation the cache
  (:class:`EnelCache`) also holds each layer's key mask of the prompt (:class:`LayerKeyMasks`) and reorders it
  with the keys; a decoding step appends the new tokens' mask to every layer's, so cached keys, masks and
  positions stay consistent for every layer.

:class:`LayerPlan` puts this together for one forward pass: the decoder loop asks it for each layer's inputs
(mask, positions, rotary embeddings; the per-layer positional encoding added to the point block) and hands it
each layer's output (aggregation and propagation events change the layout the next layer sees).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from transformers import DynamicCache

from ..points import ops

__all__ = ["SequenceLayout", "Transition", "LayerKeyMasks", "EnelCache", "LayerPlan", "additive_mask",
           "default_position_ids"]


def _select_rows(rows: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``rows (R, H)`` picked by ``index (B, N)`` → ``(B, N, H)``.

    One ``index_select`` forward and one ``index_add_`` backward (:func:`enel.points.ops.gather`): every sequence
    rebuild below is a single row copy, not a chain of gather / where / scatter passes over ``(B, L, H)``.
    """
    return ops.gather(rows.unsqueeze(0), index.reshape(1, -1))[0].view(*index.shape, rows.shape[-1])


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
        group_maps: for a coarse layout, the ``group_of`` map of every aggregation between the full block and
            this one, outermost first: ``group_maps[k]`` is ``(B, P_k)``, the slot one level coarser of each slot
            of level ``k`` (``-1``: none). Empty for the full sequence.
    """

    key_mask: torch.Tensor
    position_ids: torch.Tensor
    block_start: torch.Tensor
    point_valid: torch.Tensor
    point_centres: torch.Tensor | None = None
    group_maps: tuple = ()

    @classmethod
    def of_prompt(cls, key_mask: torch.Tensor, position_ids: torch.Tensor, block_start: torch.Tensor,
                  n_geometric: int, samples: list[int] = (), centres: torch.Tensor | None = None) -> "SequenceLayout":
        """The full sequence of a prompt, every geometric slot of a sample with a cloud real.

        Args:
            key_mask, position_ids: ``(B, L)``.
            block_start: ``(B,)`` first geometric token (:func:`enel.model.splice.geometric_block_start`).
            n_geometric: ``P``, geometric tokens per block.
            samples, centres: the rows with a cloud and their token centres ``(B_p, P, 3)`` (None: unknown).
        """
        batch = key_mask.shape[0]
        valid = (block_start >= 0)[:, None].expand(batch, n_geometric).clone()
        full = None
        if centres is not None:
            full = torch.zeros(batch, n_geometric, 3, dtype=torch.float32, device=key_mask.device)
            full[torch.tensor(list(samples), device=key_mask.device)] = centres.float()
        return cls(key_mask, position_ids, block_start, valid, full)

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
        batch, length, h = hidden.shape
        rows = torch.arange(batch, device=hidden.device)[:, None] * length + self.block_index()
        return _select_rows(hidden.reshape(batch * length, h), rows)

    def _writable(self) -> torch.Tensor:
        """``(B, P)`` bool: block slots that hold a real token of a sample with a cloud."""
        return self.point_valid & self.has_points[:, None]

    def scatter_block(self, hidden: torch.Tensor, block: torch.Tensor) -> torch.Tensor:
        """Write ``block (B, P, H)`` into ``hidden (B, L, H)`` at valid slots of samples with a cloud."""
        batch, length, h = hidden.shape
        p = self.block_len
        dev = hidden.device
        pos = torch.arange(length, device=dev)[None, :]
        bs = self.block_start.clamp(min=0)[:, None]
        slot = (pos - bs).clamp(0, max(p - 1, 0))
        write = self.has_points[:, None] & (pos >= bs) & (pos < bs + p)
        write = write & torch.gather(self._writable(), 1, slot)
        b = torch.arange(batch, device=dev)[:, None]
        index = torch.where(write, batch * length + b * p + slot, b * length + pos)
        rows = torch.cat([hidden.reshape(batch * length, h), block.reshape(batch * p, h).to(hidden.dtype)])
        return _select_rows(rows, index)

    def add_to_block(self, hidden: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """``hidden + delta`` on the valid block slots; ``delta`` is ``(B, P, H)``."""
        batch, length, h = hidden.shape
        write = self._writable()
        b = torch.arange(batch, device=hidden.device)[:, None]
        rows = (b * length + self.block_index())[write]
        out = hidden.reshape(batch * length, h).index_add(0, rows, delta[write].to(hidden.dtype))
        return out.view(batch, length, h)


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
        pre_block: ``(B, P, H)`` what propagation adds back when it has a residual: the fine block's hidden states
            before aggregation, or (the detail skip) their difference from their group's pooled feature.
        fine_index: ``(B, L)`` row of ``cat(coarse hidden rows, one zero row)`` that every fine position takes
            back on propagation (built by :func:`regrow` on first use).
    """

    fine: SequenceLayout
    coarse: SequenceLayout
    source_index: torch.Tensor
    source_valid: torch.Tensor
    group_of: torch.Tensor
    pre_block: torch.Tensor
    fine_index: torch.Tensor | None = None


def shrink(
    layout: SequenceLayout,
    hidden: torch.Tensor,
    new_block: torch.Tensor,
    new_valid: torch.Tensor,
    new_positions: torch.Tensor,
    new_centres: torch.Tensor | None,
    group_of: torch.Tensor,
    pre_block: torch.Tensor | None = None,
) -> tuple[torch.Tensor, Transition]:
    """Replace each sample's point block by a (shorter) block of aggregated tokens.

    Args:
        layout: the fine layout; ``hidden`` is ``(B, L, H)`` in it.
        new_block: ``(B, P', H)`` aggregated features.
        new_valid: ``(B, P')`` bool, real aggregated slots.
        new_positions: ``(B, P')`` int64 positions of the aggregated tokens.
        new_centres: ``(B, P', 3)`` or None.
        group_of: ``(B, P)`` coarse slot of every fine slot (``-1`` where the fine slot is invalid).
        pre_block: ``(B, P, H)`` kept for the residual; default ``layout.gather_block(hidden)``.

    Returns:
        ``(hidden', transition)`` with ``hidden'`` of shape ``(B, L', H)``: ``L' = L - P + P'`` when every
        sample has a cloud, else ``L`` (text-only samples keep their length; the others are padded on the right).
        Text keeps its states, key mask and positions; empty block slots and right padding are zero rows,
        masked out as keys.
    """
    batch, length, h = hidden.shape
    dev = hidden.device
    p_old, p_new = layout.block_len, new_block.shape[1]
    has = layout.has_points
    new_len_b = torch.where(has, torch.full_like(layout.block_start, length - p_old + p_new),
                            torch.full_like(layout.block_start, length))
    new_len = int(new_len_b.max())
    j = torch.arange(new_len, device=dev)[None, :].expand(batch, -1)
    bs = layout.block_start.clamp(min=0)[:, None]
    in_block = has[:, None] & (j >= bs) & (j < bs + p_new)
    after = has[:, None] & (j >= bs + p_new)
    src = torch.where(after, j - p_new + p_old, j)
    source_valid = (j < new_len_b[:, None]) & ~in_block
    src = torch.where(source_valid, src, torch.zeros_like(src))
    slot = (j - bs).clamp(0, max(p_new - 1, 0))
    block_valid = new_valid & has[:, None]
    write = in_block & torch.gather(block_valid, 1, slot)

    # one row copy builds the coarse sequence: text rows, aggregated rows, or a zero row
    b = torch.arange(batch, device=dev)[:, None]
    zero_row = batch * length + batch * p_new
    index = torch.where(source_valid, b * length + src,
                        torch.where(write, batch * length + b * p_new + slot, torch.full_like(src, zero_row)))
    rows = torch.cat([hidden.reshape(batch * length, h), new_block.reshape(batch * p_new, h).to(hidden.dtype),
                      hidden.new_zeros(1, h)])
    out = _select_rows(rows, index)

    key_mask = torch.where(source_valid, torch.gather(layout.key_mask, 1, src), write)
    position_ids = torch.where(
        source_valid,
        torch.gather(layout.position_ids, 1, src),
        torch.where(write, torch.gather(new_positions, 1, slot), torch.zeros_like(src)),
    )
    coarse = SequenceLayout(
        key_mask=key_mask,
        position_ids=position_ids,
        block_start=layout.block_start.clone(),
        point_valid=block_valid,
        point_centres=new_centres,
        group_maps=layout.group_maps + (group_of,),
    )
    transition = Transition(
        fine=layout,
        coarse=coarse,
        source_index=src,
        source_valid=source_valid,
        group_of=group_of,
        pre_block=pre_block if pre_block is not None else layout.gather_block(hidden),
    )
    return out, transition


def _regrow_index(transition: Transition, coarse_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, L)`` rows of ``cat(coarse rows, zero row)`` for every fine position, and ``(B, L)`` block writes."""
    fine = transition.fine
    batch, length = fine.key_mask.shape
    dev = fine.key_mask.device
    p_old, p_new = fine.block_len, transition.coarse.block_len
    has = fine.has_points[:, None]
    bs = fine.block_start.clamp(min=0)[:, None]
    i = torch.arange(length, device=dev)[None, :].expand(batch, -1)
    in_block = has & (i >= bs) & (i < bs + p_old)
    after = has & (i >= bs + p_old)
    slot = (i - bs).clamp(0, max(p_old - 1, 0))
    group = torch.gather(transition.group_of, 1, slot)  # the coarse block slot of each fine block slot
    write = in_block & torch.gather(fine.point_valid, 1, slot) & (group >= 0)
    b = torch.arange(batch, device=dev)[:, None]
    text = b * coarse_len + torch.where(after, i - p_old + p_new, i)
    block = b * coarse_len + bs + group.clamp(min=0)
    index = torch.where(in_block, torch.where(write, block, torch.full_like(i, batch * coarse_len)), text)
    return index, write


def regrow(transition: Transition, hidden: torch.Tensor, residual: bool) -> torch.Tensor:
    """Undo :func:`shrink`: back to the fine layout, copying each group's feature to its members.

    Args:
        transition: the record :func:`shrink` returned.
        hidden: ``(B, L', H)`` in the coarse layout.
        residual: add ``transition.pre_block`` to the propagated features of the valid fine slots.

    Returns:
        ``(B, L, H)`` in the fine layout: every non-block position takes back the state of the coarse position
        it was copied to, every valid block slot the state of its group's coarse slot; other block slots are 0.
    """
    batch, coarse_len, h = hidden.shape
    if transition.fine_index is None or transition.fine_index.shape[0] != batch:
        transition.fine_index, _ = _regrow_index(transition, coarse_len)
    rows = torch.cat([hidden.reshape(batch * coarse_len, h), hidden.new_zeros(1, h)])
    out = _select_rows(rows, transition.fine_index)
    if residual:
        fine = transition.fine
        valid = fine.point_valid & (transition.group_of >= 0)
        write = SequenceLayout(fine.key_mask, fine.position_ids, fine.block_start, valid, fine.point_centres)
        out = write.add_to_block(out, transition.pre_block)
    return out


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

    def additive_masks(self, full_mask: torch.Tensor, q_len: int, dtype: torch.dtype) -> list[torch.Tensor]:
        """Every layer's additive mask (:func:`additive_mask`) for a decoding step, built once per distinct prompt
        mask: without aggregation all layers cached the same prompt and share one mask (one build per step, not
        one per layer).

        Args:
            full_mask: ``(B, prompt_len + t)`` bool, the attention mask over the full sequence so far.
            q_len: the new tokens of this step.
        """
        built: dict[int, torch.Tensor] = {}
        out = []
        for layer, prompt in enumerate(self.masks):
            mask = built.get(id(prompt))
            if mask is None:
                mask = built[id(prompt)] = additive_mask(self.for_step(layer, full_mask), q_len, dtype)
            out.append(mask)
        return out

    @classmethod
    def uniform(cls, prompt_mask: torch.Tensor, num_layers: int) -> "LayerKeyMasks":
        """Every layer cached the same prompt (no aggregation): ``prompt_mask (B, L)`` for all of them."""
        return cls([prompt_mask] * num_layers, prompt_mask.shape[1])

    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        done: dict[int, torch.Tensor] = {}  # layers that shared a prompt mask keep sharing it
        self.masks = [done[id(m)] if id(m) in done else done.setdefault(id(m), fn(m)) for m in self.masks]

    def reorder(self, beam_idx: torch.Tensor) -> None:
        """Take the rows ``beam_idx (B',)`` (beam search's reorder, or a batch selection)."""
        self._map(lambda m: m.index_select(0, beam_idx.to(m.device)))

    def repeat_interleave(self, repeats: int) -> None:
        """Repeat every row ``repeats`` times, as ``generate`` expands a batch for beams or return sequences."""
        self._map(lambda m: m.repeat_interleave(repeats, dim=0))


class EnelCache(DynamicCache):
    """The KV cache of an ENEL model: a ``DynamicCache`` that also owns each layer's key mask of the prompt.

    With aggregation, layers cache prompts of different lengths (the point block is shorter in the layers between
    an aggregation and its propagation), so a decoding step needs each layer's own prompt mask
    (:class:`LayerKeyMasks`, set by the prompt's forward pass). Beam search's :meth:`reorder_cache` and the batch
    expansions of ``generate`` move the masks with the cached keys, so they stay right by construction.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.key_masks: LayerKeyMasks | None = None

    def step_masks(self, full_mask: torch.Tensor, num_layers: int) -> LayerKeyMasks:
        """The prompt masks a decoding step extends (``full_mask (B, past + t)``): each layer's own."""
        if self.key_masks is None:
            return LayerKeyMasks.uniform(full_mask[:, : self.get_seq_length()], num_layers)
        return self.key_masks

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        super().reorder_cache(beam_idx)
        if self.key_masks is not None:
            self.key_masks.reorder(beam_idx)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        super().batch_select_indices(indices)
        if self.key_masks is not None:
            self.key_masks.reorder(indices)

    def batch_repeat_interleave(self, repeats: int) -> None:
        super().batch_repeat_interleave(repeats)
        if self.key_masks is not None:
            self.key_masks.repeat_interleave(repeats)


class LayerPlan:
    """The per-layer plan of one forward pass: what each decoder layer is given, and what happens after it.

    For a prompt (:meth:`for_prompt`) the plan starts from the full :class:`SequenceLayout`, adds the per-layer
    positional encoding to the point block before every layer (when given), runs the aggregation events the
    schedule puts after a layer (keeping the stack of transitions that propagation undoes) and records every
    layer's key mask for the KV cache (:meth:`key_masks`) and, when asked, every layer's layout (:attr:`layouts`).
    For a decoding step (:meth:`for_step`) each layer's mask extends the prompt mask that layer cached.

    The decoder loop asks :meth:`enter` for a layer's inputs and hands :meth:`leave` its output.
    """

    def __init__(self, rotary: Callable, hidden: torch.Tensor, *, layout: SequenceLayout | None = None,
                 position_ids: torch.Tensor | None = None, step_masks: list[torch.Tensor] | None = None,
                 positional: Callable[[torch.Tensor], torch.Tensor] | None = None, aggregation=None,
                 record_layouts: bool = False):
        self.rotary = rotary
        self.positional = positional
        self.aggregation = aggregation
        self.layouts: list[SequenceLayout] | None = [] if record_layouts and layout is not None else None
        self._step_masks = step_masks
        self._prompt_masks: list[torch.Tensor] = []
        self._stack: list[Transition] = []
        self.layout = None
        if layout is not None:
            self._use(layout, hidden)
        else:
            self.position_ids = position_ids
            self.position_embeddings = rotary(hidden, position_ids=position_ids)

    @classmethod
    def for_prompt(cls, layout: SequenceLayout, rotary: Callable, hidden: torch.Tensor, *,
                   positional: Callable[[torch.Tensor], torch.Tensor] | None = None, aggregation=None,
                   record_layouts: bool = False) -> "LayerPlan":
        """A pass over a whole prompt.

        Args:
            layout: the full sequence; ``hidden`` ``(B, L, H)`` the embeddings in it.
            rotary: the backbone's rotary embedding, ``rotary(hidden, position_ids=...) → (cos, sin)``.
            positional: ``centres (B, P, 3) → (B, P, H)`` added to the point block before every layer.
            aggregation: a :class:`~enel.model.aggregation.HierarchicalAggregation` (its ``event_after``,
                ``aggregate`` and ``propagate``), or None.
        """
        return cls(rotary, hidden, layout=layout, positional=positional, aggregation=aggregation,
                   record_layouts=record_layouts)

    @classmethod
    def for_step(cls, key_masks: LayerKeyMasks, full_mask: torch.Tensor, position_ids: torch.Tensor,
                 rotary: Callable, hidden: torch.Tensor) -> "LayerPlan":
        """A decoding step of ``hidden (B, t, H)`` new tokens after a cached prompt.

        Args:
            key_masks: every layer's prompt mask (:meth:`EnelCache.step_masks`).
            full_mask: ``(B, past + t)`` bool over the full sequence so far; ``position_ids``: ``(B, t)``.
        """
        masks = key_masks.additive_masks(full_mask, hidden.shape[1], hidden.dtype)
        return cls(rotary, hidden, position_ids=position_ids, step_masks=masks)

    def _use(self, layout: SequenceLayout, hidden: torch.Tensor) -> None:
        self.layout = layout
        self.position_ids = layout.position_ids
        self.position_embeddings = self.rotary(hidden, position_ids=layout.position_ids)
        self._mask = additive_mask(layout.key_mask, layout.length, hidden.dtype)

    def enter(self, i: int, hidden: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Layer ``i``'s input (``hidden`` with the positional encoding added) and its keyword arguments."""
        if self.layout is None:  # a decoding step: each layer extends its own prompt mask
            mask = self._step_masks[i]
        else:
            mask = self._mask
            self._prompt_masks.append(self.layout.key_mask)
            if self.layouts is not None:
                self.layouts.append(self.layout)
            if self.positional is not None:
                hidden = self.layout.add_to_block(hidden, self.positional(self.layout.point_centres))
        return hidden, {"attention_mask": mask, "position_ids": self.position_ids,
                        "position_embeddings": self.position_embeddings}

    def leave(self, i: int, hidden: torch.Tensor) -> torch.Tensor:
        """Layer ``i``'s output, aggregated or propagated when the schedule says so (the next layer's input)."""
        event = self.aggregation.event_after(i) if self.aggregation is not None else None
        if event is None:
            return hidden
        kind, block, level = event
        if kind == "aggregate":
            hidden, transition = self.aggregation.aggregate(hidden, self.layout, block, level)
            self._stack.append(transition)
            layout = transition.coarse
        else:
            transition = self._stack.pop()
            hidden = self.aggregation.propagate(hidden, transition)
            layout = transition.fine
        self._use(layout, hidden)
        return hidden

    def key_masks(self) -> LayerKeyMasks:
        """Every layer's key mask of the prompt this plan ran (for :class:`EnelCache`)."""
        return LayerKeyMasks(self._prompt_masks, self._prompt_masks[0].shape[1])
