"""Class-word pre-alignment of the point embedding, before stage 1 (ours, not the paper's).

Stage 1's class-word alignment (``objective.word_align``, :func:`enel.model.objectives.word_alignment_loss`) pulls
some visible point token of each cloud towards the frozen word embedding of its class name, so the frozen LLM gets
a token it already knows how to name. Inside stage 1 every sample of that loss costs a pass through all the
decoder layers. The point embedding and the projector alone cost a small share of that, so this runs the same
loss on them alone, on many more clouds, before the LLM sees any:

* the point tokens are the projector's output before the colour skip (what stage 1's alignment reads), for every
  geometric token (nothing is masked);
* the softmax runs over the class-name tokens the training data uses (ModelNet40's 40 names, the procedural
  nouns: ~90 tokens), not SmolLM2's 49,152: the same loss restricted to a vocabulary of the names, ~1/500 of the
  products;
* its own AdamW on the point embedding and the projector's MLP, a linear warm-up and a cosine decay to 0, batches
  drawn in a seeded order from the stage's training data, as the loaders prepare them (augmented alike).

Measurements and the runs behind the default's settings: docs/training.md, "Class-word pre-alignment".
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence

import torch

from ..errors import ConfigError
from ..model.objectives import unit_rows, word_alignment_loss

__all__ = ["class_vocabulary", "restrict_words", "geometry_tokens", "prealign_point_tokens"]


def class_vocabulary(words: Iterable[torch.Tensor]) -> torch.Tensor:
    """``(V',)`` the sorted distinct token ids of the class names ``words`` (each ``(K_i,)``)."""
    ids = sorted({int(t) for w in words for t in w.reshape(-1).tolist()})
    if not ids:
        raise ConfigError("word_prealign needs class names in the training data (ModelNet40's labels or the "
                          "procedural nouns); this data has none: set word_prealign.steps=0")
    return torch.tensor(ids, dtype=torch.long)


def restrict_words(words: torch.Tensor, vocab: torch.Tensor) -> torch.Tensor:
    """``(B, K)`` token ids (-100: padding) → their positions in ``vocab`` ``(V',)``, -100 kept.

    Raises ConfigError when a word is not in ``vocab``.
    """
    valid = words >= 0
    pos = torch.searchsorted(vocab, words.clamp(min=0))
    pos = pos.clamp(max=vocab.numel() - 1)
    if bool((valid & (vocab[pos] != words)).any()):
        raise ConfigError("a class word is missing from the pre-alignment vocabulary")
    return torch.where(valid, pos, torch.full_like(words, -100))


def geometry_tokens(model, clouds: torch.Tensor) -> torch.Tensor:
    """``(B, N, C)`` clouds → ``(B, G, H)`` the geometric point tokens as the projector's MLP leaves them, before
    the colour skip (the class token dropped): what stage 1's class-word alignment reads."""
    inner = model.model
    projector = inner.point_path()[1]
    tokens = inner.embed_points(clouds)
    return projector.net(tokens.features)[:, 1:]


def _batches(dataset, batch_size: int, generator: torch.Generator) -> Iterable[list[dict]]:
    """Endless batches of ``batch_size`` items that carry a cloud and class words, in a seeded order."""
    while True:
        batch, usable = [], 0
        for i in torch.randperm(len(dataset), generator=generator).tolist():
            item = dataset[i]
            if item.get("point_cloud") is None or item.get("class_words") is None:
                continue
            usable += 1
            batch.append(item)
            if len(batch) == batch_size:
                yield batch
                batch = []
        if usable < batch_size:
            raise ConfigError(f"word_prealign needs at least word_prealign.batch_size={batch_size} training items "
                              f"with a cloud and a class name; the data has {usable}")


def _stack_words(items: Sequence[dict]) -> torch.Tensor:
    """``(B, K)`` the items' class words, padded with -100."""
    width = max(len(it["class_words"]) for it in items)
    words = torch.full((len(items), width), -100, dtype=torch.long)
    for b, it in enumerate(items):
        words[b, : len(it["class_words"])] = it["class_words"]
    return words


def prealign_point_tokens(model, dataset, vocab: torch.Tensor, *, steps: int, batch_size: int, lr: float,
                          warmup_steps: int, seed: int, bf16: bool, log=print) -> dict:
    """Train the point embedding and the projector's MLP on the class-word alignment alone.

    Args:
        model: an :class:`~enel.model.EnelForCausalLM` with the token embedding and a projector (not the baseline's
            encoder), whose ``objective.word_align_temperature`` sets τ.
        dataset: the stage's training data; items with ``point_cloud`` and ``class_words`` are used, the rest skipped.
        vocab: ``(V',)`` the class-name token ids the softmax runs over (:func:`class_vocabulary`).
        steps, batch_size, lr, warmup_steps: the schedule (AdamW, no weight decay, linear warm-up, cosine to 0).
        seed: seeds the order of the items (augmentation draws from torch's global generator, as in training).
        bf16: run the products under bf16 autocast on the CPU.

    Returns:
        ``{"steps", "samples", "vocabulary", "loss_first", "loss_last", "minutes", "losses"}``.
    """
    inner = model.model
    embedding, projector = inner.point_path()
    params = [p for m in (embedding, projector.net) for p in m.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("word_prealign found no trainable point-embedding parameters (stage 1 trains them)")
    tau = float(model.config.objective.word_align_temperature)
    unit_vocab = unit_rows(inner.language_model.embed_tokens.weight[vocab], torch.bfloat16 if bf16 else torch.float32)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)

    def factor(i: int) -> float:
        return min(1.0, (i + 1) / max(1, warmup_steps)) * 0.5 * (1.0 + math.cos(math.pi * min(i, steps) / steps))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    dtype = next(iter(params)).dtype
    batches = _batches(dataset, batch_size, torch.Generator().manual_seed(seed))
    was_training = model.training
    model.train()
    losses, start = [], time.time()
    try:
        for step in range(steps):
            items = next(batches)
            clouds = torch.stack([it["point_cloud"] for it in items]).to(dtype)
            words = restrict_words(_stack_words(items), vocab)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = word_alignment_loss(geometry_tokens(model, clouds), words, unit_vocab, tau)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(float(loss.detach()))
            if (step + 1) % 50 == 0 or step + 1 == steps:
                window = losses[-50:]
                log(f"[enel] pre-alignment step {step + 1}/{steps}: loss {sum(window) / len(window):.3f} "
                    f"({(time.time() - start) / 60:.1f} min)")
    finally:
        model.train(was_training)
    window = max(1, min(25, len(losses) // 4))
    return {"steps": steps, "samples": steps * batch_size, "vocabulary": int(vocab.numel()),
            "loss_first": round(sum(losses[:window]) / window, 4), "loss_last": round(sum(losses[-window:]) / window, 4),
            "minutes": round((time.time() - start) / 60, 2), "losses": [round(x, 4) for x in losses]}
