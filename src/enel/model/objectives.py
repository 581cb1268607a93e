"""Stage 1: the self-supervised objectives that ride beside the caption loss (enel-method.md §2).

Each objective is selected by :class:`ObjectiveConfig` and returns *named* loss terms, so training logs show
them apart (``loss_ce`` comes from the model, the rest from here):

* ``masked`` — masked modelling: a fraction of the 128 geometric tokens is replaced by a learnable mask token
  appended *after* the visible ones; the outputs at the mask positions predict the masked tokens' projected
  features (MSE, ``masked_target="feature"``) or point patches (Chamfer-L2, ``"patch"``) → ``loss_mask``.
* ``reconstruction`` — every geometric token reconstructs its own k-point patch (Chamfer-L2,
  ``recon_target="patch"``) or its projected feature (MSE, ``"feature"``) → ``loss_recon``.
* ``contrastive`` — two random rigid transforms of each cloud, the same text; InfoNCE over the batch on the
  mean-pooled point-token outputs → ``loss_contrast``.
* ``distillation`` — MSE between the point-token outputs (through an alignment head) and a frozen teacher's
  per-token features → ``loss_distill``.
* ``word_align`` (beside any of them, weight ``ObjectiveConfig.word_align``; ours, not the paper's) — class-word
  alignment: where the data knows the object's class (the batch's ``point_words``), the projected point tokens are
  read as words through the backbone's frozen token embeddings, and some visible geometric token must read as the
  class name (:func:`word_alignment_loss`) → ``loss_align``. It gives the frozen LLM a token it already knows how to
  name (docs/training.md, "Class-word alignment").
* ``hybrid`` (the default of the stage-1 recipes) — the Hybrid Semantic Loss: masking as above (30 %, never the
  class token), masked positions regress the masked features (MSE), visible positions reconstruct their own
  patches (Chamfer-L2) → ``loss_mask`` + ``loss_recon``.

Masking happens only in training; evaluation and generation always see all tokens. Mask sampling is per
sample and draws from the global torch RNG (or a passed generator), so seeded training is reproducible and a
resumed run continues the same stream (the Trainer restores RNG states).

Released-code details kept: the number of masked tokens is ``int(ratio · 128)`` (38 at 30 %); visible tokens
keep their original order; targets are not detached (``detach_targets`` changes that); the patch head maps
``H → H/2 → H/4 → 3k`` and the feature head ``H → H/4 → H`` (4096 → 2048 → 1024 → 243 and 4096 → 1024 → 4096
at the paper's width). The optional per-layer positional encoding (§2.5, ``per_layer_pe``) adds ``MLP(centre)``
to every point token before every decoder layer; mask tokens get the encoding of the centre they stand for. It
is the model's own module (``EnelModel.point_pos_embed``), not one of these heads, so stage 2 keeps it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..points import ops
from .configuration_enel import ObjectiveConfig
from .splice import point_token_index

__all__ = ["PointObjectives", "PointBlock", "info_nce", "word_alignment_loss", "unit_rows", "EmbeddingTeacher"]

@dataclass
class PointBlock:
    """The point tokens to splice for one batch, and what the objectives need afterwards.

    Attributes:
        features: ``(B, T, H)`` token features in sequence order (class token first).
        centres: ``(B, T-1, 3)`` centre of each geometric slot in sequence order (masked slots: the centre of
            the token they stand for).
        n_visible: geometric tokens before the mask tokens (``T-1`` when nothing is masked).
        masked_index: ``(B, M)`` original indices (0..127) of the masked tokens, in slot order.
        visible_index: ``(B, V)`` original indices of the visible tokens, in slot order.
        target_features: ``(B, 128, H)`` projected features of the geometric tokens (the feature targets).
        patches: ``(B, 128, k, 3)`` the geometric tokens' patches (the patch targets).
        geometry: ``(B, 128, H)`` the geometric tokens before the colour skip, in original order, or None (no
            skip, or nothing reads them): the class-word alignment reads the visible ones, so that it never moves
            the skip (a colourless cloud gives every token the same skip input).
    """

    features: torch.Tensor
    centres: torch.Tensor
    n_visible: int
    masked_index: torch.Tensor | None
    visible_index: torch.Tensor
    target_features: torch.Tensor
    patches: torch.Tensor
    geometry: torch.Tensor | None = None

    @classmethod
    def unmasked(cls, features: torch.Tensor, centres: torch.Tensor, patches: torch.Tensor,
                 detach_targets: bool = False) -> "PointBlock":
        """Every token in its own slot, nothing masked: the block of evaluation, generation and stage 2.

        Args:
            features: ``(B, 1 + G, H)`` projected point tokens (class token first).
            centres: ``(B, G, 3)``; patches: ``(B, G, k, 3)``.
            detach_targets: stop gradients through ``target_features`` (the geometric tokens' features).
        """
        batch, g = features.shape[0], features.shape[1] - 1
        geo = features[:, 1:]
        index = torch.arange(g, device=features.device).expand(batch, g)
        return cls(features, centres, g, None, index, geo.detach() if detach_targets else geo, patches)


def _mlp(dims: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims, dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(nn.GELU())
    return nn.Sequential(*layers)


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE of the paper's Eq. 3 (one direction, a → b), on L2-normalised vectors.

    ``L = mean_i −log( exp(a_i·b_i / τ) / Σ_j exp(a_i·b_j / τ) )``: row i's positive is ``b[i]``, the other rows
    of ``b`` are its negatives.

    Args:
        a, b: ``(B, D)``; normalised here, so only directions matter.
        temperature: τ > 0.

    Returns:
        A scalar fp32 tensor.
    """
    a = F.normalize(a.float(), dim=-1)
    b = F.normalize(b.float(), dim=-1)
    logits = a @ b.t() / temperature
    return F.cross_entropy(logits, torch.arange(a.shape[0], device=a.device))


def word_alignment_loss(tokens: torch.Tensor, words: torch.Tensor, unit_vocab: torch.Tensor,
                        temperature: float) -> torch.Tensor | None:
    """Multiple-instance alignment of point tokens to class-name tokens, read through the word embeddings.

    Each token is read as a distribution over the vocabulary, ``softmax(cos(token, embedding_v) / τ)``; a sample's
    loss is ``-log mean_t p_t(w)`` for each of its class words ``w``, averaged over those words: some token must read
    as the word, the others are free to carry local geometry.

    Args:
        tokens: ``(B, T, H)`` point tokens (the visible geometric ones).
        words: ``(B, K)`` token ids of each sample's class name, -100 on padding; rows of -100 only are skipped.
        unit_vocab: ``(V, H)`` the backbone's token embeddings scaled to unit length (:func:`unit_rows`), without
            gradient.
        temperature: τ > 0.

    Returns:
        A scalar fp32 tensor averaged over the samples that have words, or None when none has.
    """
    has = (words >= 0).any(dim=1)  # (B,)
    if not bool(has.any()):
        return None
    toks = F.normalize(tokens[has].float(), dim=-1).to(unit_vocab.dtype)  # (B_w, T, H)
    logp = torch.log_softmax((toks @ unit_vocab.t()).float() / temperature, dim=-1)  # (B_w, T, V)
    w = words[has]  # (B_w, K)
    valid = w >= 0
    picked = logp.gather(2, w.clamp(min=0).unsqueeze(1).expand(-1, logp.shape[1], -1))  # (B_w, T, K)
    per_word = torch.logsumexp(picked, dim=1) - math.log(logp.shape[1])  # (B_w, K): log mean_t p_t(w)
    per_sample = -(per_word * valid).sum(1) / valid.sum(1)
    return per_sample.mean()


def unit_rows(embeddings: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(V, H)`` → the rows scaled to unit length (zero rows stay zero), detached, in ``dtype``."""
    return F.normalize(embeddings.detach().float(), dim=-1).to(dtype)


class PointObjectives(nn.Module):
    """Mask token, prediction heads and loss computation of the stage-1 objectives."""

    def __init__(self, cfg: ObjectiveConfig, hidden: int, group_size: int):
        super().__init__()
        self.cfg = cfg
        self.group_size = group_size
        uses = self._uses()
        self.mask_token = nn.Parameter(torch.zeros(1, 1, hidden)) if cfg.masks else None
        self.feature_head = _mlp([hidden, max(hidden // 4, 16), hidden]) if "feature" in uses else None
        self.patch_head = (
            _mlp([hidden, max(hidden // 2, 16), max(hidden // 4, 16), 3 * group_size]) if "patch" in uses else None
        )
        self.contrast_head = _mlp([hidden, hidden]) if cfg.name == "contrastive" else None
        self.distill_head = nn.Linear(hidden, cfg.teacher_dim) if cfg.name == "distillation" else None
        self._vocab: tuple[tuple, torch.Tensor] | None = None  # the word-alignment table and what it was made from

    def _uses(self) -> set[str]:
        c = self.cfg
        if c.name == "hybrid":
            return {c.masked_target, c.recon_target}
        if c.name == "masked":
            return {c.masked_target}
        if c.name == "reconstruction":
            return {c.recon_target}
        return set()

    # ---- input side --------------------------------------------------------------------------------------
    def num_masked(self, n_geometric: int) -> int:
        return int(self.cfg.mask_ratio * n_geometric)

    def sample_masks(self, batch: int, n_geometric: int, device, generator: torch.Generator | None = None):
        """Per-sample random masks: ``(B, n)`` bool with exactly ``int(ratio · n)`` True per row.

        Each row is an independent uniform draw of ``int(ratio · n)`` of the ``n`` geometric tokens (the class
        token is not among them); the draws come from ``generator`` (default: the global RNG).
        """
        n_mask = self.num_masked(n_geometric)
        if n_mask < 1:
            raise ConfigError(
                f"mask_ratio={self.cfg.mask_ratio} masks no token of {n_geometric} (int(ratio · {n_geometric}) = 0); "
                f"raise it to at least 1/{n_geometric}"
            )
        noise = torch.rand(batch, n_geometric, generator=generator,
                           device=generator.device if generator is not None else "cpu")
        order = noise.argsort(dim=1)
        mask = torch.zeros(batch, n_geometric, dtype=torch.bool)
        mask.scatter_(1, order[:, :n_mask].cpu(), True)
        return mask.to(device)

    def prepare_block(
        self, features: torch.Tensor, centres: torch.Tensor, patches: torch.Tensor, training: bool,
        generator: torch.Generator | None = None, geometry: torch.Tensor | None = None,
    ) -> PointBlock:
        """Arrange the projected tokens for the splice, masking them when training with a masking objective.

        Args:
            features: ``(B, 1 + G, H)`` projected point tokens (class token first).
            centres: ``(B, G, 3)``; patches: ``(B, G, k, 3)``.
            geometry: ``(B, G, H)`` the geometric tokens before the colour skip, kept on the block
                (:attr:`PointBlock.geometry`).
        """
        plain = PointBlock.unmasked(features, centres, patches, self.cfg.detach_targets)
        plain.geometry = geometry
        if not (training and self.cfg.masks):
            return plain
        batch, t, h = features.shape
        g = t - 1
        geo, targets = features[:, 1:], plain.target_features
        mask = self.sample_masks(batch, g, features.device, generator)
        n_mask = self.num_masked(g)
        # stable sort puts visible tokens first in their original order, then masked ones in original order
        order = torch.argsort(mask.long(), dim=1, stable=True)
        visible_index, masked_index = order[:, : g - n_mask], order[:, g - n_mask :]
        visible = ops.gather(geo, visible_index)
        mask_tokens = self.mask_token.to(geo.dtype).expand(batch, n_mask, h)
        block = torch.cat([features[:, :1], visible, mask_tokens], dim=1)
        block_centres = ops.gather(centres, order)
        return PointBlock(block, block_centres, g - n_mask, masked_index, visible_index, targets, patches, geometry)

    # ---- output side -------------------------------------------------------------------------------------
    def _predict(self, hidden: torch.Tensor, target: str, index: torch.Tensor, block: PointBlock):
        """Loss of the ``target`` head on ``hidden (B, S, H)`` for original token indices ``index (B, S)``."""
        if target == "feature":
            pred = self.feature_head(hidden).float()
            gt = ops.gather(block.target_features, index).float()
            if self.cfg.normalize_targets:
                gt = F.layer_norm(gt, gt.shape[-1:])
            return F.mse_loss(pred, gt)
        pred = self.patch_head(hidden).float().reshape(-1, self.group_size, 3)
        gt = ops.gather(block.patches, index).reshape(-1, block.patches.shape[2], 3)
        return ops.chamfer_l2(pred, gt)

    def losses(self, geometric_hidden: torch.Tensor, block: PointBlock) -> dict[str, torch.Tensor]:
        """Masked / reconstruction terms from the hidden states at the geometric slots ``(B, G, H)``."""
        c = self.cfg
        terms: dict[str, torch.Tensor] = {}
        nv = block.n_visible
        if c.name in ("hybrid", "masked") and block.masked_index is not None:
            terms["loss_mask"] = self._predict(geometric_hidden[:, nv:], c.masked_target, block.masked_index, block)
        if c.name == "hybrid":
            terms["loss_recon"] = self._predict(geometric_hidden[:, :nv], c.recon_target, block.visible_index, block)
        if c.name == "reconstruction":
            terms["loss_recon"] = self._predict(geometric_hidden, c.recon_target, block.visible_index, block)
        return terms

    def contrastive_views(self, points: torch.Tensor, generator: torch.Generator | None = None):
        """Two rigidly transformed copies of ``points (B, N, C)`` (xyz rotated + translated, colour kept)."""
        from ..points.transforms import apply_rigid_torch, random_rigid_transforms

        views = []
        for _ in range(2):
            rot, trans = random_rigid_transforms(points.shape[0], generator=generator,
                                                 max_translation=self.cfg.max_translation,
                                                 device=points.device, dtype=torch.float32)
            xyz = apply_rigid_torch(points[..., :3].float(), rot, trans).to(points.dtype)
            views.append(torch.cat([xyz, points[..., 3:]], dim=-1))
        return views

    def contrastive_loss(self, pooled_a: torch.Tensor, pooled_b: torch.Tensor) -> torch.Tensor:
        return info_nce(self.contrast_head(pooled_a), self.contrast_head(pooled_b), self.cfg.temperature)

    def distill_loss(self, geometric_hidden: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
        """MSE between ``align(hidden) (B, G, D_t)`` and the teacher's ``(B, G, D_t)`` features."""
        pred = self.distill_head(geometric_hidden).float()
        return F.mse_loss(pred, teacher_features.float())

    def unit_vocabulary(self, embeddings: torch.Tensor) -> torch.Tensor:
        """:func:`unit_rows` of the token embeddings, in the autocast dtype when autocast is on, kept between steps
        while the embeddings are unchanged (stage 1 freezes them): re-normalising and casting 49,152 × 576 weights
        each step would cost more than the alignment's own products."""
        dtype = torch.get_autocast_dtype(embeddings.device.type) if torch.is_autocast_enabled(
            embeddings.device.type) else torch.float32
        key = (embeddings.data_ptr(), embeddings._version, tuple(embeddings.shape), embeddings.dtype, dtype)
        if self._vocab is None or self._vocab[0] != key:
            self._vocab = (key, unit_rows(embeddings, dtype))
        return self._vocab[1]

    # ---- what a training step asks of the objectives ---------------------------------------------------------
    @property
    def capture_layers(self) -> set[int] | None:
        """The 1-based decoder layer whose output feeds the heads, or None for the final hidden states."""
        return {self.cfg.head_layer} if self.cfg.head_layer > 0 else None

    def loss_weights(self) -> dict[str, float]:
        """Weight of every named loss term (``loss_ce`` included) in the training loss."""
        c = self.cfg
        return {"loss_ce": c.weight_ce, "loss_mask": c.weight_mask, "loss_recon": c.weight_recon,
                "loss_contrast": c.weight_contrast, "loss_distill": c.weight_distill, "loss_align": c.word_align}

    def training_batch(self, inputs: dict, generator: torch.Generator | None = None) -> dict:
        """The batch a training step runs on: the contrastive objective doubles it (two rigidly transformed views
        of every cloud, the text and labels repeated: sample ``i`` and ``B + i`` are a positive pair); the other
        objectives take it as it is.

        Args:
            inputs: ``input_ids``, ``attention_mask``, ``position_ids``, ``labels`` (``(B, L)`` or None) and
                ``point_clouds`` (``(B_p, N, C)``).
        """
        clouds = inputs.get("point_clouds")
        if self.cfg.name != "contrastive" or clouds is None:
            return inputs
        if not isinstance(clouds, torch.Tensor):
            raise ValueError("the contrastive objective needs point clouds as one (B_p, N, C) tensor")
        view_a, view_b = self.contrastive_views(clouds, generator)
        doubled = {k: torch.cat([v, v]) if v is not None else None for k, v in inputs.items() if k != "point_clouds"}
        return {**doubled, "point_clouds": torch.cat([view_a, view_b])}

    def loss_terms(self, hidden: torch.Tensor, captured: dict | None, block: PointBlock, samples: list[int],
                   starts: torch.Tensor, point_clouds, teacher: nn.Module | None = None,
                   words: torch.Tensor | None = None,
                   embeddings: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The objective's unweighted loss terms for one training step.

        Args:
            hidden: ``(B, L, H)`` final hidden states; ``captured``: ``{layer: (B, L, H)}`` (``head_layer > 0``).
            block: the spliced :class:`PointBlock`; ``samples``: the rows that carry it; ``starts``: ``(B,)`` index
                of ``<point_start>``.
            point_clouds: the clouds of the step (the distillation teacher encodes them).
            teacher: ``(points (B,N,C), centres (B,G,3)) → (B,G,D)`` for the distillation objective.
            words: ``(B, K)`` class-name token ids (-100: none) and ``embeddings`` ``(V, H)`` the token embeddings,
                for the class-word alignment.
        """
        c = self.cfg
        source = captured[c.head_layer] if c.head_layer > 0 else hidden
        rows = torch.tensor(samples, device=source.device)
        block_hidden = source[rows[:, None], point_token_index(starts[rows], block.features.shape[1])]  # (B_p, T, H)
        geo = block_hidden[:, 1:]
        terms = self.losses(geo, block)
        if c.name == "contrastive":
            half = block_hidden.shape[0] // 2
            pooled = block_hidden.float().mean(1)
            terms["loss_contrast"] = self.contrastive_loss(pooled[:half], pooled[half:])
        if c.name == "distillation":
            if teacher is None:
                raise ConfigError("the distillation objective needs a teacher: call model.set_distillation_teacher(...)")
            clouds = point_clouds if isinstance(point_clouds, torch.Tensor) else torch.stack(
                [point_clouds[i] for i in samples])
            terms["loss_distill"] = self.distill_loss(geo, teacher(clouds, block.centres))
        if c.word_align > 0 and words is not None:
            # (B_p, V, H) the visible geometric tokens, before the colour skip when the block has them
            visible = (ops.gather(block.geometry, block.visible_index) if block.geometry is not None
                       else block.features[:, 1:1 + block.n_visible])
            align = word_alignment_loss(visible, words[rows.to(words.device)], self.unit_vocabulary(embeddings),
                                        c.word_align_temperature)
            if align is not None:
                terms["loss_align"] = align
        return terms


class EmbeddingTeacher(nn.Module):
    """A frozen point encoder usable as a distillation teacher: ``(points (B,N,C), centres (B,G,3)) → (B,G,D)``.

    Wraps any module returning :class:`~enel.model.embedding.PointTokens` (e.g. a trained ENEL token embedding
    or a PointLLM-style encoder adapter); its per-token features are moved onto the student's token centres by
    nearest-centre lookup, so teachers with other token layouts plug in unchanged.
    """

    def __init__(self, encoder: nn.Module, project: Callable[[torch.Tensor], torch.Tensor] | None = None):
        super().__init__()
        self.encoder = encoder.eval().requires_grad_(False)
        self.project = project

    def train(self, mode: bool = True):  # a teacher stays in eval mode
        return super().train(False)

    @torch.no_grad()
    def forward(self, points: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
        out = self.encoder(points)
        feats = out.features[:, 1:]
        if self.project is not None:
            feats = self.project(feats)
        idx, _ = ops.knn(centres.float(), out.centres.float(), 1)
        return ops.gather(feats, idx[..., 0].to(feats.device))
