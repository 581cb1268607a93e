"""Which parameters train in each stage, and at which learning rate — the one place for the freezing rules.

Stage 1, *LLM-embedded Semantic Encoding* (enel-method.md §2.1, Table 2):

* trainable: the first ``K`` decoder layers (``trainable_layers``, default 4; the paper tried 2, 4, 8, 12 and
  found 4 best), the point token embedding (PointLLM's ``fix_pointnet=False``; ``train_embedding``), the
  projector, the embeddings of ``<point_patch>`` / ``<point_start>`` / ``<point_end>``
  (``model.model.point_special_embeds``), the per-layer positional encoding of the point tokens
  (``model.model.point_pos_embed``, when the model has one) and every stage-1 objective module (mask token,
  heads);
* frozen: every other backbone weight — the vocabulary embedding matrix, the remaining decoder layers, the
  final norm — and ``lm_head`` (tied to the vocabulary matrix for SmolLM2 and the tiny backbones; the point
  special tokens have their own parameter, so nothing of the backbone's vocabulary needs to train). Frozen
  layers still pass gradients from the losses (taken after the last layer) down to the trainable ones.
* a negative ``K`` trains the *last* ``|K|`` layers instead (an option of the authors' internal code, unused in
  the paper); ``K = 0`` trains no decoder layer (PointLLM's stage 1).

Stage 2, instruction tuning (full fine-tuning, enel-method.md §3.2 item 9, §4): every LLM weight (vocabulary
embedding, all layers, final norm, ``lm_head``), the point embedding (``train_embedding``), the projector, the
special-token embeddings, the per-layer positional encoding a stage-1 model brought along and the aggregation
modules train; stage-1 objective modules, if the model still has them, stay frozen. ``trainable_layers`` has no meaning in stage 2 and is ignored there.

New modules (not part of the backbone) that exist in the model train in both stages: the aggregation modules
in a stage-1 model would otherwise be dead weight, since their gate starts closed.

The PointLLM-style encoder baseline (``point_encoder="pointbert"``, :mod:`enel.model.baseline`): its encoder
(group ``point_encoder``, ``model.model.point_backbone``) is frozen in both stages and kept in eval mode, as
PointLLM's ``fix_pointnet=True``; it is pre-trained before stage 1 by masked point modelling
(:func:`enel.model.baseline.pretrain_mae`). Its projector (``point_proj``) trains like ENEL's (group ``projector``);
``train_embedding`` concerns ENEL's token embedding only.

A frozen point embedding is also kept in eval mode during training (a forward pre-hook), so its BatchNorm
layers use and keep their running statistics instead of the batch's — "frozen" means the tokens don't move.

:func:`parameter_groups` splits the trainable parameters for the optimiser: the new modules at ``lr_new``,
the backbone's weights at ``lr_llm`` (paper stage 1: 4e-4 for both, PointLLM used 2e-3; Table 2 shows the
smaller rate is what makes trainable early layers pay off).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import ConfigError

__all__ = [
    "STAGES",
    "DEFAULT_TRAINABLE_LAYERS",
    "GROUPS",
    "NEW_GROUPS",
    "LLM_GROUPS",
    "FreezeReport",
    "apply_stage",
    "trainable_layer_indices",
    "classify_parameters",
    "parameter_groups",
    "trainable_parameters",
]

STAGES = (1, 2)
DEFAULT_TRAINABLE_LAYERS = 4

#: parameter groups, new modules first, then the backbone's
NEW_GROUPS = ("point_embedding", "point_encoder", "projector", "special_embeds", "positional", "objectives",
              "aggregation")
LLM_GROUPS = ("llm_embed_tokens", "llm_layers", "llm_norm", "llm_other", "lm_head")
GROUPS = NEW_GROUPS + LLM_GROUPS

@dataclass
class FreezeReport:
    """What :func:`apply_stage` left trainable.

    Attributes:
        stage: 1 or 2.
        trainable_layers: 0-based indices of the decoder layers that train.
        num_layers: decoder layers of the backbone.
        train_embedding: whether the point token embedding trains.
        groups: ``{group: (trainable, total)}`` parameter counts (shared/tied tensors counted once).
    """

    stage: int
    trainable_layers: list[int]
    num_layers: int
    train_embedding: bool
    groups: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def trainable(self) -> int:
        return sum(t for t, _ in self.groups.values())

    @property
    def total(self) -> int:
        return sum(n for _, n in self.groups.values())

    def as_dict(self) -> dict:
        """JSON-friendly: counts per group plus totals (for logs and run records)."""
        return {
            "stage": self.stage,
            "trainable_layers": list(self.trainable_layers),
            "num_layers": self.num_layers,
            "train_embedding": self.train_embedding,
            "groups": {k: {"trainable": t, "total": n} for k, (t, n) in self.groups.items()},
            "trainable": self.trainable,
            "total": self.total,
        }

    def __str__(self) -> str:
        layers = _describe_layers(self.trainable_layers, self.num_layers)
        pct = 100.0 * self.trainable / max(1, self.total)
        lines = [
            f"stage {self.stage}: {_fmt(self.trainable)} of {_fmt(self.total)} parameters trainable ({pct:.2f} %); "
            f"decoder layers: {layers}",
            f"  {'group':<18}{'trainable':>12}{'total':>12}",
        ]
        for name, (t, n) in self.groups.items():
            lines.append(f"  {name:<18}{_fmt(t):>12}{_fmt(n):>12}")
        return "\n".join(lines)


def _fmt(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1e6:.2f} M"
    if n >= 10_000:
        return f"{n / 1e3:.1f} k"
    return str(n)


def _describe_layers(idx: list[int], total: int) -> str:
    if not idx:
        return f"none of {total}"
    if idx == list(range(idx[0], idx[-1] + 1)):
        span = f"{idx[0] + 1}" if len(idx) == 1 else f"{idx[0] + 1}-{idx[-1] + 1}"
        return f"{span} of {total} (1-based)"
    return f"{[i + 1 for i in idx]} of {total} (1-based)"


# ----------------------------------------------------------------------------------------------------------
# Parameter classification
# ----------------------------------------------------------------------------------------------------------
def _parts(model: nn.Module):
    """``(enel_model, lm_head or None)`` for an ``EnelForCausalLM`` or an ``EnelModel``."""
    if hasattr(model, "language_model") and hasattr(model, "point_path"):
        return model, None
    inner = getattr(model, "model", None)
    if inner is not None and hasattr(inner, "language_model") and hasattr(inner, "point_path"):
        return inner, getattr(model, "lm_head", None)
    raise ConfigError(
        f"freezing rules apply to an ENEL model (EnelForCausalLM or EnelModel), got {type(model).__name__}"
    )


def _is_baseline(enel) -> bool:
    """The model carries the PointLLM-style encoder baseline instead of ENEL's token embedding."""
    return enel.config.point_encoder == "pointbert"


def _decoder_layers(enel) -> nn.ModuleList:
    layers = getattr(enel.language_model, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise ConfigError("the backbone has no `layers` ModuleList of decoder layers (not a Llama-family model?)")
    return layers


def classify_parameters(model: nn.Module) -> dict[str, list[tuple[str, nn.Parameter, int | None]]]:
    """Every unique parameter of the model, by group.

    Returns:
        ``{group: [(name, parameter, layer_index or None), ...]}`` for the groups of :data:`GROUPS` (tied
        tensors appear once, under the first name ``named_parameters`` gives them). A parameter that fits no
        group raises :class:`~enel.errors.ConfigError`: a new module must get its rule here.
    """
    enel, lm_head = _parts(model)
    lm = enel.language_model
    layers = _decoder_layers(enel)
    owner: dict[int, tuple[str, int | None]] = {}

    def claim(module: nn.Module | None, group: str, layer: int | None = None):
        if module is None:
            return
        for p in module.parameters():
            owner.setdefault(id(p), (group, layer))

    claim(getattr(enel, "point_embedding", None), "point_embedding")
    claim(getattr(enel, "point_backbone", None), "point_encoder")  # the encoder baseline's
    claim(enel.point_path()[1], "projector")
    owner.setdefault(id(enel.point_special_embeds), ("special_embeds", None))
    claim(getattr(enel, "point_pos_embed", None), "positional")
    claim(getattr(enel, "objectives", None), "objectives")
    claim(getattr(enel, "aggregation", None), "aggregation")
    claim(lm.get_input_embeddings(), "llm_embed_tokens")
    for i, layer in enumerate(layers):
        claim(layer, "llm_layers", i)
    claim(getattr(lm, "norm", None), "llm_norm")
    claim(lm, "llm_other")  # anything else the backbone owns (none for Llama / Qwen2 / Mistral)
    claim(lm_head, "lm_head")  # only reached when lm_head is not tied to the vocabulary matrix

    out: dict[str, list] = {g: [] for g in GROUPS}
    for name, p in model.named_parameters():  # deduplicates tied tensors
        if id(p) not in owner:
            raise ConfigError(
                f"parameter {name!r} belongs to no freezing group; add its module to enel.train.freezing"
            )
        group, layer = owner[id(p)]
        out[group].append((name, p, layer))
    return out


def trainable_layer_indices(num_layers: int, trainable_layers: int) -> list[int]:
    """0-based decoder layers that train in stage 1.

    ``K > 0``: the first K; ``K < 0``: the last ``|K|``; ``K = 0``: none.
    """
    if isinstance(trainable_layers, bool) or not isinstance(trainable_layers, int):
        raise ConfigError(f"trainable_layers must be an integer, got {trainable_layers!r}")
    if abs(trainable_layers) > num_layers:
        raise ConfigError(
            f"trainable_layers={trainable_layers} but the backbone has only {num_layers} decoder layers "
            f"(use -{num_layers}..{num_layers}; negative values train the last |K| layers)"
        )
    if trainable_layers >= 0:
        return list(range(trainable_layers))
    return list(range(num_layers + trainable_layers, num_layers))


# ----------------------------------------------------------------------------------------------------------
# Stages
# ----------------------------------------------------------------------------------------------------------
def _keep_eval(module: nn.Module, args) -> None:
    """Forward pre-hook of a frozen point embedding: BatchNorm uses its running statistics and keeps them."""
    if module.training:
        module.train(False)


def _set_embedding_hook(enel, frozen: bool) -> None:
    """Install (once) or remove the eval-mode hook on the point path's encoder; found by identity, so copies of a
    model behave too."""
    encoder = enel.point_path()[0]
    hooks = encoder._forward_pre_hooks
    for key in [k for k, fn in hooks.items() if fn is _keep_eval]:
        del hooks[key]
    if frozen:
        encoder.register_forward_pre_hook(_keep_eval)


def apply_stage(
    model: nn.Module, stage: int, *, trainable_layers: int = DEFAULT_TRAINABLE_LAYERS, train_embedding: bool = True
) -> FreezeReport:
    """Set ``requires_grad`` on every parameter by the rules of ``stage`` (see the module docstring).

    Args:
        model: an ``EnelForCausalLM`` (or its ``EnelModel``).
        stage: 1 (pre-training) or 2 (instruction tuning).
        trainable_layers: stage 1 only: ``K > 0`` the first K decoder layers train, ``K < 0`` the last ``|K|``,
            0 none. Ignored in stage 2, where every layer trains.
        train_embedding: the point token embedding trains (the paper: yes in both stages). When False it is
            frozen and kept in eval mode. The encoder baseline's encoder is frozen whatever it says.

    Returns:
        A :class:`FreezeReport` (``str()`` of it is a table for the logs).
    """
    if stage not in STAGES:
        raise ConfigError(f"stage must be 1 (pre-training) or 2 (instruction tuning), got {stage!r}")
    groups = classify_parameters(model)
    enel, _ = _parts(model)
    num_layers = len(_decoder_layers(enel))
    if stage == 1:
        layers = set(trainable_layer_indices(num_layers, trainable_layers))
        train = {"projector", "special_embeds", "positional", "objectives", "aggregation"}
    else:
        layers = set(range(num_layers))
        train = {"projector", "special_embeds", "positional", "aggregation", *LLM_GROUPS}
    if _is_baseline(enel):  # PointLLM's fix_pointnet=True: pre-trained apart, frozen in both stages
        train_embedding = False
    if train_embedding:
        train.add("point_embedding")

    counts: dict[str, tuple[int, int]] = {}
    for group, items in groups.items():
        trainable = total = 0
        for _, p, layer in items:
            on = group in train or (group == "llm_layers" and layer in layers)
            p.requires_grad_(on)
            total += p.numel()
            trainable += p.numel() if on else 0
        if total:
            counts[group] = (trainable, total)
    _set_embedding_hook(enel, frozen=not train_embedding)
    return FreezeReport(
        stage=stage,
        trainable_layers=sorted(layers),
        num_layers=num_layers,
        train_embedding=bool(train_embedding),
        groups=counts,
    )


# ----------------------------------------------------------------------------------------------------------
# Optimiser groups
# ----------------------------------------------------------------------------------------------------------
def _no_decay_ids(enel) -> set[int]:
    """Parameters exempt from weight decay besides every bias / norm / scalar: the learned tokens."""
    encoder = enel.point_path()[0]
    ids = {id(enel.point_special_embeds), id(encoder.cls_token if _is_baseline(enel) else encoder.class_token)}
    objectives = getattr(enel, "objectives", None)
    if objectives is not None and getattr(objectives, "mask_token", None) is not None:
        ids.add(id(objectives.mask_token))
    return ids


def parameter_groups(
    model: nn.Module, *, lr_new: float, lr_llm: float, weight_decay: float = 0.0
) -> list[dict]:
    """Optimiser parameter groups of the *trainable* parameters.

    New modules (point embedding, projector, special-token embeddings, per-layer positional encoding, objective
    heads and mask token, aggregation) get ``lr_new``; the backbone's weights (vocabulary embedding, decoder layers, norm,
    ``lm_head``) get ``lr_llm``. With ``weight_decay > 0`` each side is split once more: biases, norms,
    scalars and the learned tokens (class token, mask token, special embeddings) get no decay, as the HF
    ``Trainer`` does for biases and norms.

    Returns:
        ``[{"name", "params", "lr", "weight_decay"}, ...]`` without empty groups, ready for
        ``torch.optim.AdamW(groups, lr=lr_new)``.
    """
    for key, value in (("lr_new", lr_new), ("lr_llm", lr_llm), ("weight_decay", weight_decay)):
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ConfigError(f"{key} must be a finite number >= 0, got {value!r}")
    enel, _ = _parts(model)
    no_decay = _no_decay_ids(enel)
    buckets: dict[str, list[nn.Parameter]] = {"new": [], "new_no_decay": [], "llm": [], "llm_no_decay": []}
    for group, items in classify_parameters(model).items():
        side = "new" if group in NEW_GROUPS else "llm"
        for _, p, _ in items:
            if not p.requires_grad:
                continue
            exempt = weight_decay > 0 and (p.ndim < 2 or id(p) in no_decay)
            buckets[side + ("_no_decay" if exempt else "")].append(p)
    if not any(buckets.values()):
        raise ConfigError("the model has no trainable parameters; call enel.train.freezing.apply_stage first")
    out = []
    for name, params in buckets.items():
        if not params:
            continue
        lr = lr_new if name.startswith("new") else lr_llm
        wd = 0.0 if name.endswith("no_decay") else float(weight_decay)
        out.append({"name": name, "params": params, "lr": float(lr), "weight_decay": wd})
    return out


def trainable_parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    """``{name: parameter}`` of the parameters that currently require grad (tied tensors once)."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}
