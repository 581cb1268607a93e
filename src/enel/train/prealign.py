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

With a colour skip (``point_config.color_skip``) the same steps also align it, on its own parameters: each geometric
token's colour term (``projector.color`` of its patch colour, before it is added) must read, through the frozen word
embeddings, as the name of the palette colour its patch has (:func:`palette_targets`: the palette of
:mod:`enel.data.procedural.colors`, for patches within :data:`COLOUR_RADIUS` of one of its colours; colourless clouds,
rgb all zero, and patches that straddle two colours are left out), the softmax over the colour names. The term is
then rescaled to the RMS of the word embeddings, so a colour enters each token at the size of a word.

Measurements and the runs behind the default's settings: docs/training.md, "Class-word pre-alignment".
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..model.objectives import unit_rows, word_alignment_loss

__all__ = ["class_vocabulary", "restrict_words", "point_terms", "colour_vocabulary", "palette_targets",
           "colour_alignment_loss", "prealign_point_tokens", "COLOUR_RADIUS"]

COLOUR_RADIUS = 0.1
"""A patch colour names a palette colour when it lies within this Euclidean distance of it in rgb ([0, 1]): more than
the procedural parts' jitter (at most 0.04 per channel, 0.07 in all), less than half the closest two palette colours'
distance; a patch mixing two parts' colours lands between them and is left out."""


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


def point_terms(model, clouds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(B, N, C)`` clouds → ``(B, G, H)`` the geometric point tokens as the projector's MLP leaves them, before
    the colour skip (the class token dropped: what stage 1's class-word alignment reads), and ``(B, G, 3)`` their
    centred patch colours (None without a colour skip)."""
    inner = model.model
    projector = inner.point_path()[1]
    tokens = inner.embed_points(clouds)
    return projector.net(tokens.features)[:, 1:], tokens.colors


def colour_vocabulary(tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """The palette colours whose name is one token of ``tokenizer`` (" red", " cyan", …): ``(P,)`` their token ids
    and ``(P, 3)`` their rgb in [0, 1] (:data:`enel.data.procedural.colors.PALETTE`)."""
    from ..data.procedural.colors import PALETTE

    ids, rgb = [], []
    for name, value in PALETTE.items():
        tokens = tokenizer(" " + name, add_special_tokens=False)["input_ids"]
        if len(tokens) == 1:
            ids.append(int(tokens[0]))
            rgb.append(value)
    return torch.tensor(ids, dtype=torch.long), torch.tensor(rgb, dtype=torch.float32).reshape(-1, 3)


def palette_targets(clouds: torch.Tensor, colors: torch.Tensor, palette: torch.Tensor,
                    radius: float = COLOUR_RADIUS) -> torch.Tensor:
    """``(B, G)`` the index of the palette colour within ``radius`` of each geometric token's patch colour, -100 where
    none is or where the cloud is colourless.

    Args:
        clouds: ``(B, N, 6)`` the input clouds; one whose rgb is all zero has no colour (PointLLM's rule).
        colors: ``(B, G, 3)`` the tokens' patch colours centred on 0, as the colour skip receives them
            (``PointTokens.colors``: rgb − 0.5).
        palette: ``(P, 3)`` rgb in [0, 1].
    """
    dist, idx = torch.cdist(colors.float() + 0.5, palette.float().to(colors.device)).min(dim=-1)  # (B, G)
    coloured = clouds[..., 3:6].abs().flatten(1).amax(dim=1) > 0  # (B,)
    keep = (dist <= radius) & coloured[:, None]
    return torch.where(keep, idx, torch.full_like(idx, -100))


def colour_alignment_loss(skip: torch.Tensor, targets: torch.Tensor, unit_colours: torch.Tensor,
                          temperature: float) -> torch.Tensor | None:
    """Mean cross-entropy of ``softmax(cos(skip_t, colour_p) / τ)`` over the P colours against each labelled token's
    colour.

    Args:
        skip: ``(B, G, H)`` the colour terms of the geometric tokens.
        targets: ``(B, G)`` palette indices, -100 where a token has no colour name (:func:`palette_targets`).
        unit_colours: ``(P, H)`` the colour names' word embeddings at unit length, without gradient.
        temperature: τ > 0.

    Returns:
        A scalar fp32 tensor over the labelled tokens, or None when no token is labelled.
    """
    keep = targets >= 0
    if not bool(keep.any()):
        return None
    toks = F.normalize(skip[keep].float(), dim=-1).to(unit_colours.dtype)  # (M, H)
    return F.cross_entropy((toks @ unit_colours.t()).float() / temperature, targets[keep])


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
                          warmup_steps: int, seed: int, bf16: bool,
                          colours: tuple[torch.Tensor, torch.Tensor] | None = None, log=print) -> dict:
    """Train the point embedding and the projector's MLP on the class-word alignment alone, and the colour skip on
    the colour-word alignment when ``colours`` is given.

    Args:
        model: an :class:`~enel.model.EnelForCausalLM` with the token embedding and a projector (not the baseline's
            encoder), whose ``objective.word_align_temperature`` sets τ.
        dataset: the stage's training data; items with ``point_cloud`` and ``class_words`` are used, the rest skipped.
        vocab: ``(V',)`` the class-name token ids the softmax runs over (:func:`class_vocabulary`).
        steps, batch_size, lr, warmup_steps: the schedule (AdamW, no weight decay, linear warm-up, cosine to 0).
        seed: seeds the order of the items (augmentation draws from torch's global generator, as in training).
        bf16: run the products under bf16 autocast on the CPU.
        colours: ``(P,)`` the colour names' token ids and ``(P, 3)`` their rgb (:func:`colour_vocabulary`), to align
            the colour skip too (ignored when the model has none); its parameters are disjoint from the rest, so the
            two losses train side by side on the same batches.

    Returns:
        ``{"steps", "samples", "vocabulary", "loss_first", "loss_last", "minutes", "losses", "colour"}``; ``colour``
        is None, or ``{"vocabulary", "labelled", "loss_first", "loss_last", "scale"}`` (``labelled``: the share of
        geometric tokens that had a colour name; ``scale``: the factor that brought the term to the words' RMS).
    """
    inner = model.model
    embedding, projector = inner.point_path()
    params = [p for m in (embedding, projector.net) for p in m.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("word_prealign found no trainable point-embedding parameters (stage 1 trains them)")
    tau = float(model.config.objective.word_align_temperature)
    words_dtype = torch.bfloat16 if bf16 else torch.float32
    unit_vocab = unit_rows(inner.language_model.embed_tokens.weight[vocab], words_dtype)
    skip = projector.color if colours is not None and colours[0].numel() else None
    if skip is not None:
        unit_colours = unit_rows(inner.language_model.embed_tokens.weight[colours[0]], words_dtype)
        palette = colours[1]
        params = params + [p for p in skip.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)

    def factor(i: int) -> float:
        return min(1.0, (i + 1) / max(1, warmup_steps)) * 0.5 * (1.0 + math.cos(math.pi * min(i, steps) / steps))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    dtype = next(iter(params)).dtype
    batches = _batches(dataset, batch_size, torch.Generator().manual_seed(seed))
    was_training = model.training
    model.train()
    losses, colour_losses, labelled, start = [], [], [], time.time()
    try:
        for step in range(steps):
            items = next(batches)
            clouds = torch.stack([it["point_cloud"] for it in items]).to(dtype)
            words = restrict_words(_stack_words(items), vocab)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                geometry, patch_colours = point_terms(model, clouds)
                loss = word_alignment_loss(geometry, words, unit_vocab, tau)
                colour_loss = None
                if skip is not None and patch_colours is not None:
                    targets = palette_targets(clouds, patch_colours, palette)
                    labelled.append(float((targets >= 0).float().mean()))
                    colour_loss = colour_alignment_loss(projector.color_terms(patch_colours), targets,
                                                        unit_colours, tau)
            optimizer.zero_grad(set_to_none=True)
            (loss if colour_loss is None else loss + colour_loss).backward()
            optimizer.step()
            schedule.step()
            losses.append(float(loss.detach()))
            if colour_loss is not None:
                colour_losses.append(float(colour_loss.detach()))
            if (step + 1) % 50 == 0 or step + 1 == steps:
                window = losses[-50:]
                colour_note = f", colour {sum(colour_losses[-50:]) / len(colour_losses[-50:]):.3f}" \
                    if colour_losses else ""
                log(f"[enel] pre-alignment step {step + 1}/{steps}: loss {sum(window) / len(window):.3f}"
                    f"{colour_note} ({(time.time() - start) / 60:.1f} min)")
    finally:
        model.train(was_training)
    colour = None
    if colour_losses:
        colour = {"vocabulary": int(colours[0].numel()), "labelled": round(sum(labelled) / len(labelled), 4),
                  **_ends(colour_losses), "scale": round(_to_word_scale(model, palette), 4)}
    return {"steps": steps, "samples": steps * batch_size, "vocabulary": int(vocab.numel()), **_ends(losses),
            "minutes": round((time.time() - start) / 60, 2), "losses": [round(x, 4) for x in losses],
            "colour": colour}


def _ends(losses: list[float]) -> dict:
    """The mean of the first and of the last quarter's losses (at most 25 steps each)."""
    window = max(1, min(25, len(losses) // 4))
    return {"loss_first": round(sum(losses[:window]) / window, 4),
            "loss_last": round(sum(losses[-window:]) / window, 4)}


@torch.no_grad()
def _to_word_scale(model, palette: torch.Tensor) -> float:
    """Scale the colour skip so its terms for the palette's colours ``(P, 3)`` have the RMS of the word embeddings;
    returns the factor."""
    projector = model.model.point_path()[1]
    terms = projector.color_terms(palette - 0.5).float()  # (P, H)
    factor = float(model.model.word_embedding_rms() / terms.pow(2).mean().sqrt().clamp(min=1e-12))
    skip = projector.color
    skip.weight.mul_(factor)
    if skip.bias is not None:
        skip.bias.mul_(factor)
    return factor
