"""Batching dataset items for :class:`~enel.model.modeling_enel.EnelForCausalLM`.

:class:`EnelCollator` takes items shaped like :class:`~enel.data.pointllm.PointLLMDataset`'s::

    {"input_ids": LongTensor (L_i,), "labels": LongTensor (L_i,) (optional, all or none),
     "point_cloud": FloatTensor (N_i, C) or None, "object_id": anything (optional),
     "class_words": LongTensor (K_i,) (optional: the tokens of the object's class name)}

and returns::

    input_ids       (B, L) int64, padded with pad_token_id (right or left)
    attention_mask  (B, L) int64, 1 on real tokens, 0 on padding
    labels          (B, L) int64, -100 on padding (when the items have labels)
    point_clouds    (B_p, N, C) float: the clouds of the B_p samples that have one, in batch order, when all
                    have the same shape; otherwise a list of length B with None for text-only samples;
                    None when no sample has a cloud (both forms are what the model's forward accepts)
    point_words     (B, K) int64: the token ids of each sample's class name (an item's ``class_words``), -100 on
                    padding and on the rows of items without one; present only when some item has them (they
                    feed the stage-1 class-word alignment, ``ObjectiveConfig.word_align``)
    point_offsets   (B,) int64, index of <point_start> in each padded row, -1 without a point block
    object_ids      list of length B (the items' object_id, None where absent)

``point_offsets`` and ``object_ids`` are **not** arguments of the model's forward, and the forward passes
unknown keyword arguments on to the decoder layers, so a batch must not be splatted into it as is: call
:func:`model_inputs` (which keeps only :data:`MODEL_INPUT_KEYS`), or build the collator with
``return_extras=False`` so that it returns forward arguments only (what a plain HF ``Trainer`` needs).

Labels are set to -100 on padding from the lengths, never by comparing with the pad id: tokenizers whose pad
token is the end-of-turn token (SmolLM2: ``<|im_end|>``) have answers that end in that very id.
"""

from __future__ import annotations

import torch

from .conversation import IGNORE_INDEX
from .errors import DatasetError

__all__ = ["MODEL_INPUT_KEYS", "EnelCollator", "model_inputs"]

MODEL_INPUT_KEYS: tuple[str, ...] = ("input_ids", "attention_mask", "labels", "point_clouds", "point_words")
"""Batch keys that are arguments of :meth:`EnelForCausalLM.forward`."""


def model_inputs(batch: dict) -> dict:
    """Only the forward arguments of a collated batch (:data:`MODEL_INPUT_KEYS` that are present)."""
    return {k: batch[k] for k in MODEL_INPUT_KEYS if k in batch}


def _as_ids(value, what: str, index: int) -> torch.Tensor:
    t = torch.as_tensor(value)
    if t.dim() != 1 or t.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
        raise DatasetError(f"item {index}: {what} must be a 1-D integer sequence, found shape {tuple(t.shape)}, "
                           f"dtype {t.dtype}")
    return t.long()


class EnelCollator:
    """Pads text, stacks point clouds and records each sample's point-block offset.

    Args:
        pad_token_id: id written into padding positions.
        point_start_token_id: id of ``<point_start>`` (locates each sample's block: ``point_offsets``).
        point_end_token_id: id of ``<point_end>``; only needed when ``max_length`` may cut a sample that has a
            point block (it proves the block survives the cut). ``config.point_end_token_id``.
        padding_side: ``"right"`` (training, PointLLM's) or ``"left"`` (batched generation).
        max_length: cut longer sequences at the end. A cut through a point block raises :class:`DatasetError`
            (encode with the same ``max_length`` in the dataset, which never cuts a block).
        return_extras: include ``point_offsets`` and ``object_ids`` (default); ``False`` returns only the
            forward arguments.
    """

    def __init__(
        self,
        pad_token_id: int,
        *,
        point_start_token_id: int,
        point_end_token_id: int | None = None,
        padding_side: str = "right",
        max_length: int | None = None,
        return_extras: bool = True,
    ):
        for name, value in (("pad_token_id", pad_token_id), ("point_start_token_id", point_start_token_id),
                            ("point_end_token_id", point_end_token_id)):
            if value is None and name == "point_end_token_id":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise DatasetError(f"{name} must be a non-negative integer token id, got {value!r}")
        if padding_side not in ("right", "left"):
            raise DatasetError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
        if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int)
                                       or max_length < 1):
            raise DatasetError(f"max_length must be a positive integer or None, got {max_length!r}")
        self.pad_token_id = pad_token_id
        self.point_start_token_id = point_start_token_id
        self.point_end_token_id = point_end_token_id
        self.padding_side = padding_side
        self.max_length = max_length
        self.return_extras = return_extras

    @classmethod
    def from_tokenizer(cls, tokenizer, **kwargs) -> "EnelCollator":
        """A collator with the tokenizer's pad id (its eos id when it has no pad token) and point token ids."""
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad is None:
            raise DatasetError("the tokenizer has neither a pad token nor an eos token; pass pad_token_id")
        ids = {}
        for key, token in (("point_start_token_id", "<point_start>"), ("point_end_token_id", "<point_end>")):
            tid = tokenizer.convert_tokens_to_ids(token)
            if tid is None or tid == tokenizer.unk_token_id:
                raise DatasetError(f"the tokenizer has no {token} token; add the point tokens first "
                                   "(enel.model.splice.add_point_tokens, or EnelForCausalLM.from_backbone)")
            ids[key] = tid
        return cls(pad, **ids, **kwargs)

    def __call__(self, items: list[dict]) -> dict:
        """Collate ``items`` (see the module docstring for the layout in and out)."""
        if not items:
            raise DatasetError("cannot collate an empty list of items")
        with_labels = ["labels" in it and it["labels"] is not None for it in items]
        if any(with_labels) and not all(with_labels):
            raise DatasetError("some items have labels and some don't; a batch must be all training or all prompts")
        seqs, labs, object_ids = [], [], []
        for i, it in enumerate(items):
            if "input_ids" not in it:
                raise DatasetError(f"item {i} has no input_ids (keys: {sorted(it)})")
            ids = _as_ids(it["input_ids"], "input_ids", i)
            lab = _as_ids(it["labels"], "labels", i) if with_labels[0] else None
            if lab is not None and lab.shape != ids.shape:
                raise DatasetError(f"item {i}: labels have length {lab.shape[0]} but input_ids {ids.shape[0]}")
            if self.max_length is not None and ids.shape[0] > self.max_length:
                ids, lab = self._truncate(ids, lab, i, it.get("object_id"))
            if ids.shape[0] == 0:
                raise DatasetError(f"item {i} (object {it.get('object_id')!r}) has no tokens")
            seqs.append(ids)
            labs.append(lab)
            object_ids.append(it.get("object_id"))

        batch, length = len(seqs), max(s.shape[0] for s in seqs)
        input_ids = torch.full((batch, length), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((batch, length), dtype=torch.long)
        labels = torch.full((batch, length), IGNORE_INDEX, dtype=torch.long) if with_labels[0] else None
        offsets = torch.full((batch,), -1, dtype=torch.long)
        for b, ids in enumerate(seqs):
            n = ids.shape[0]
            span = slice(0, n) if self.padding_side == "right" else slice(length - n, length)
            input_ids[b, span] = ids
            attention_mask[b, span] = 1
            if labels is not None:
                labels[b, span] = labs[b]
            where = (ids == self.point_start_token_id).nonzero().flatten()
            if where.numel() > 1:
                raise DatasetError(f"item {b} (object {object_ids[b]!r}) has {where.numel()} <point_start> tokens; "
                                   "ENEL takes one point cloud per sample")
            if where.numel() == 1:
                offsets[b] = int(where[0]) + span.start

        out = {"input_ids": input_ids, "attention_mask": attention_mask}
        if labels is not None:
            out["labels"] = labels
        out["point_clouds"] = self._clouds(items, offsets, object_ids)
        words = self._words(items, offsets, object_ids)
        if words is not None:
            out["point_words"] = words
        if self.return_extras:
            out["point_offsets"] = offsets
            out["object_ids"] = object_ids
        return out

    def _truncate(self, ids: torch.Tensor, lab, index: int, object_id):
        keep = self.max_length
        starts = (ids == self.point_start_token_id).nonzero().flatten()
        if starts.numel() and self.point_end_token_id is None:
            raise DatasetError(
                f"item {index} (object {object_id!r}): cutting {ids.shape[0]} tokens to max_length {keep} needs "
                "point_end_token_id to check that the point block survives; pass it, or encode the dataset with the "
                "same max_length"
            )
        ends = (ids == self.point_end_token_id).nonzero().flatten() if starts.numel() else starts
        if starts.numel() and (not ends.numel() or int(ends[-1]) >= keep):
            raise DatasetError(
                f"item {index} (object {object_id!r}): cutting {ids.shape[0]} tokens to max_length {keep} would cut "
                "its point block; encode the dataset with the same max_length (it never cuts a block)"
            )
        return ids[:keep], (lab[:keep] if lab is not None else None)

    @staticmethod
    def _words(items: list[dict], offsets: torch.Tensor, object_ids: list) -> torch.Tensor | None:
        """``(B, K)`` class-name token ids padded with -100, or None when no item has ``class_words``."""
        words = [it.get("class_words") for it in items]
        if all(w is None for w in words):
            return None
        rows = []
        for b, w in enumerate(words):
            if w is None:
                rows.append(torch.empty(0, dtype=torch.long))
                continue
            if int(offsets[b]) < 0:
                raise DatasetError(f"item {b} (object {object_ids[b]!r}) has class_words but no point block")
            t = torch.as_tensor(w)
            t = _as_ids(t, "class_words", b) if t.numel() else t
            if t.numel() == 0 or bool((t < 0).any()):
                raise DatasetError(f"item {b} (object {object_ids[b]!r}): class_words must be non-empty, "
                                   f"non-negative token ids, got {t.tolist()}")
            rows.append(t)
        out = torch.full((len(rows), max(r.numel() for r in rows)), IGNORE_INDEX, dtype=torch.long)
        for b, r in enumerate(rows):
            out[b, : r.numel()] = r
        return out

    @staticmethod
    def _clouds(items: list[dict], offsets: torch.Tensor, object_ids: list):
        clouds = []
        for b, it in enumerate(items):
            cloud = it.get("point_cloud")
            has_block = int(offsets[b]) >= 0
            if (cloud is not None) != has_block:
                what = "has a point cloud but no <point_start> token" if cloud is not None else \
                    "has a point block but no point cloud"
                raise DatasetError(f"item {b} (object {object_ids[b]!r}) {what}")
            if cloud is not None:
                cloud = torch.as_tensor(cloud)
                if cloud.dim() != 2 or not cloud.is_floating_point():
                    raise DatasetError(f"item {b} (object {object_ids[b]!r}): point_cloud must be a float (N, C) "
                                       f"tensor, found shape {tuple(cloud.shape)}, dtype {cloud.dtype}")
            clouds.append(cloud)
        present = [c for c in clouds if c is not None]
        if not present:
            return None
        if all(c.shape == present[0].shape and c.dtype == present[0].dtype for c in present):
            return torch.stack(present)
        return clouds
