"""The splice of point tokens into the token sequence — the one place that knows how (LLaVA's
``prepare_inputs_labels_for_multimodal``, PointLLM's ``<point>`` expansion).

Text side: the ``<point>`` placeholder of a conversation becomes ``<point_start>``, one ``<point_patch>`` per
point token (129 with the paper's embedding), ``<point_end>`` (:func:`expand_point_placeholder`).
Embedding side: the patch embeddings are replaced by the projected point tokens (:func:`splice_point_block`);
the three special tokens have embeddings of their own (:func:`embed_text`), initialised at the mean of the
backbone's embeddings as PointLLM does, so the backbone's vocabulary matrix and ``lm_head`` stay untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import EnelError
from .configuration_enel import POINT_END_TOKEN, POINT_PATCH_TOKEN, POINT_PLACEHOLDER, POINT_START_TOKEN

__all__ = [
    "PointTokenIds",
    "add_point_tokens",
    "expand_point_placeholder",
    "find_point_blocks",
    "embed_text",
    "splice_point_block",
    "match_clouds_to_blocks",
    "point_token_index",
    "geometric_block_start",
]


class SpliceError(EnelError, ValueError):
    """Point blocks and point clouds don't match (a block without a cloud, two blocks in one sample, …)."""


@dataclass(frozen=True)
class PointTokenIds:
    patch: int
    start: int
    end: int

    def as_tuple(self) -> tuple[int, int, int]:
        return (self.patch, self.start, self.end)


def add_point_tokens(tokenizer) -> PointTokenIds:
    """Register ``<point_patch>``, ``<point_start>``, ``<point_end>`` as special tokens (idempotent)."""
    tokens = [POINT_PATCH_TOKEN, POINT_START_TOKEN, POINT_END_TOKEN]
    missing = [t for t in tokens if tokenizer.convert_tokens_to_ids(t) in (None, tokenizer.unk_token_id)]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
    ids = [tokenizer.convert_tokens_to_ids(t) for t in tokens]
    return PointTokenIds(*ids)


def expand_point_placeholder(text: str, num_tokens: int) -> str:
    """Replace the single ``<point>`` of ``text`` by the point block of ``num_tokens`` patch tokens."""
    count = text.count(POINT_PLACEHOLDER)
    if count > 1:
        raise SpliceError(
            f"a conversation contains {count} '{POINT_PLACEHOLDER}' placeholders; ENEL takes one point cloud per "
            "sample, so keep a single <point> in the first user turn"
        )
    block = POINT_START_TOKEN + POINT_PATCH_TOKEN * num_tokens + POINT_END_TOKEN
    return text.replace(POINT_PLACEHOLDER, block)


def find_point_blocks(input_ids: torch.Tensor, ids: PointTokenIds, num_tokens: int) -> torch.Tensor:
    """Locate each sample's point block and check it is well formed.

    Args:
        input_ids: ``(B, L)``.
        num_tokens: patch tokens per block (1 class token + the geometric tokens).

    Returns:
        ``(B,)`` int64 index of ``<point_start>``, ``-1`` for samples without a point block.
    """
    is_start = input_ids == ids.start
    n_start = is_start.sum(1)
    if bool((n_start > 1).any()):
        b = int((n_start > 1).nonzero()[0])
        raise SpliceError(f"sample {b} has {int(n_start[b])} point blocks; ENEL takes one point cloud per sample")
    starts = torch.where(n_start > 0, is_start.long().argmax(1), torch.full_like(n_start, -1))
    n_patch = (input_ids == ids.patch).sum(1)
    n_end = (input_ids == ids.end).sum(1)
    for b in range(input_ids.shape[0]):
        s = int(starts[b])
        if s < 0:
            if int(n_patch[b]) or int(n_end[b]):
                raise SpliceError(f"sample {b} has point tokens but no {POINT_START_TOKEN}")
            continue
        block = point_token_index(starts[b : b + 1], num_tokens + 1)[0]  # the patch tokens, then <point_end>
        ok = (
            int(block[-1]) < input_ids.shape[1]
            and int(n_patch[b]) == num_tokens
            and bool((input_ids[b, block[:-1]] == ids.patch).all())
            and int(input_ids[b, block[-1]]) == ids.end
            and int(n_end[b]) == 1
        )
        if not ok:
            raise SpliceError(
                f"sample {b}: the point block must be {POINT_START_TOKEN}, exactly {num_tokens} "
                f"{POINT_PATCH_TOKEN} tokens and {POINT_END_TOKEN} (was the sequence truncated through the block, "
                "or built for an embedding with another token count?)"
            )
    return starts


def embed_text(
    embed_tokens: torch.nn.Embedding, special: torch.Tensor, input_ids: torch.Tensor, ids: PointTokenIds
) -> torch.Tensor:
    """Token embeddings ``(B, T, H)`` with the point special tokens taken from ``special (3, H)`` (patch, start, end).

    Works whether or not the special ids fall inside the backbone's vocabulary matrix. Each row of ``special`` is
    placed by a ``torch.where`` on its token's mask, not by indexing ``special`` with a per-position kind: the
    backward of an index with repeated entries accumulates into ``special`` with ``index_put_(accumulate=True)``,
    which on a multi-threaded CPU adds in a different order each time, so the same seed trained a different model
    (docs/training.md, "Reproducibility").
    """
    vocab = embed_tokens.num_embeddings
    masks = [input_ids == tid for tid in ids.as_tuple()]  # (B, T) each: patch, start, end
    is_special = masks[0] | masks[1] | masks[2]
    safe_ids = torch.where(is_special | (input_ids >= vocab) | (input_ids < 0), torch.zeros_like(input_ids), input_ids)
    embeds = embed_tokens(safe_ids)
    if bool(is_special.any()):
        special = special.to(embeds.dtype)
        for k, mask in enumerate(masks):
            embeds = torch.where(mask[..., None], special[k], embeds)
    return embeds


def match_clouds_to_blocks(point_clouds, starts: torch.Tensor) -> tuple[list[int], object]:
    """Pair point clouds with the samples that have a point block.

    ``point_clouds`` is a tensor ``(B_p, N, C)`` assigned in order to the ``B_p`` samples that have a block, or
    a list of length B with one ``(N_i, C)`` tensor or None per sample.

    Returns:
        ``(samples, clouds)``: indices of the samples with a block, and the clouds in that order (a tensor
        ``(B_p, N, C)`` or a list of ``(N_i, C)`` tensors).
    """
    has = (starts >= 0).nonzero().flatten().tolist()
    if point_clouds is None:
        if has:
            raise SpliceError(f"samples {has} contain a point block but no point cloud was given")
        return [], None
    if isinstance(point_clouds, (list, tuple)):
        if len(point_clouds) != starts.shape[0]:
            raise SpliceError(
                f"got {len(point_clouds)} point clouds for a batch of {starts.shape[0]} samples; pass one entry "
                "(a cloud or None) per sample"
            )
        for b, cloud in enumerate(point_clouds):
            if (cloud is None) == (b in has):
                what = "has a point block but no cloud" if cloud is None else "has a cloud but no <point> block"
                raise SpliceError(f"sample {b} {what}")
        return has, [point_clouds[b] for b in has]
    if point_clouds.dim() != 3:
        raise SpliceError(f"point clouds must be (B, N, C), got shape {tuple(point_clouds.shape)}")
    if point_clouds.shape[0] != len(has):
        raise SpliceError(
            f"got {point_clouds.shape[0]} point clouds but {len(has)} samples contain a point block; "
            "pass one cloud per <point> (or a per-sample list with None for text-only samples)"
        )
    return has, point_clouds


def point_token_index(starts: torch.Tensor, count: int, first: int = 0) -> torch.Tensor:
    """Sequence index of point tokens ``first … first + count − 1`` of every block: ``start + 1 + t``.

    The one place that knows where a block's tokens sit relative to its ``<point_start>``: token 0 (the class
    token) right after it, the geometric tokens 1 … G after that, ``<point_end>`` at token ``G + 1``.

    Args:
        starts: ``(B,)`` index of ``<point_start>`` per sample (only samples with a block are meaningful).

    Returns:
        ``(B, count)`` int64.
    """
    t = torch.arange(first, first + count, device=starts.device)
    return starts[:, None] + 1 + t[None, :]


def geometric_block_start(starts: torch.Tensor) -> torch.Tensor:
    """``(B,)`` index of the first geometric point token (``<point_start>`` + 2), ``-1`` for samples without a block."""
    first = point_token_index(starts, 1, first=1)[:, 0]
    return torch.where(starts >= 0, first, torch.full_like(starts, -1))


def splice_point_block(
    embeds: torch.Tensor, starts: torch.Tensor, samples: list[int], block: torch.Tensor
) -> torch.Tensor:
    """Replace the patch embeddings of ``samples`` by ``block (B_p, T, H)`` (positions ``start+1 … start+T``)."""
    if not samples:
        return embeds
    out = embeds.clone()
    rows = torch.tensor(samples, device=embeds.device)
    out[rows[:, None], point_token_index(starts[rows], block.shape[1])] = block.to(out.dtype)
    return out
