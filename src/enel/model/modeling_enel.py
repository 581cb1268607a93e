"""``EnelForCausalLM``: a decoder-only LLM with point tokens spliced into its input, no 3D encoder.

Structure (the Hugging Face composite layout of LLaVA):

* :class:`EnelModel` owns the backbone's base model (``language_model``: embeddings, decoder layers, final norm,
  rotary embedding — any Llama-family model), the point token embedding, the projector, the embeddings of the
  three point special tokens, and, when configured, the stage-1 objective heads and the stage-2 aggregation;
* :class:`EnelForCausalLM` adds ``lm_head`` (tied to the input embeddings when the backbone ties them), the
  losses and ``generate()``.

``EnelModel.forward`` reads as a short story: the splice (:meth:`EnelModel.prepare_point_inputs`, the point
tokens into the embeddings), the per-layer plan (:class:`~enel.model.layout.LayerPlan`: masks, positions, the
per-layer positional encoding of the point tokens, the aggregation / propagation that shortens and regrows the
point block), and the decoder loop, written out as ``LlamaModel.forward`` writes it, asking the plan for each
layer's inputs and handing it each layer's output. The KV cache is an :class:`~enel.model.layout.EnelCache`.
``EnelForCausalLM.forward`` sums the named loss terms; what is specific to a stage-1 objective (the contrastive
objective's doubled batch, the heads, the distillation teacher) lives in :mod:`enel.model.objectives`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModel, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.conversion_mapping import register_checkpoint_conversion_mapping
from transformers.core_model_loading import ConversionOps, WeightConverter, WeightRenaming, rename_source_key
from transformers.modeling_outputs import ModelOutput

from ..errors import ConfigError
from . import layout as L
from .aggregation import GatedGroupAttention, HierarchicalAggregation
from .baseline import FeatureStandardizer, PointBertEncoder, PointLLMProjector
from .configuration_enel import EnelConfig, PointBertConfig, PointEmbeddingConfig
from .decoding import CompiledDecoding
from .embedding import PointProjector, PointTokenEmbedding, PointTokens
from .objectives import PointBlock, PointObjectives
from .splice import (
    PointTokenIds,
    embed_text,
    find_point_blocks,
    geometric_block_start,
    match_clouds_to_blocks,
    splice_point_block,
)

__all__ = [
    "EnelModel", "EnelForCausalLM", "EnelPreTrainedModel", "EnelCausalLMOutput", "EnelModelOutput", "point_token_spread",
]


@dataclass
class EnelModelOutput(ModelOutput):
    """Output of :class:`EnelModel`.

    Attributes:
        last_hidden_state: ``(B, L, H)`` after the final norm.
        cache: the KV cache (an :class:`~enel.model.layout.EnelCache`, holding each layer's prompt key mask) when
            ``use_cache``.
        hidden_states: the input of every decoder layer and the final output, when asked for (with aggregation
            their lengths differ between layers).
        point_block: the spliced point tokens and the stage-1 targets (None without clouds).
        point_samples: indices of the samples that carry a cloud.
        point_starts: ``(B,)`` index of ``<point_start>`` per sample (``-1`` without a cloud).
        captured: ``{layer_number: hidden (B, L, H)}`` for layers asked for with ``capture_layers``.
        layouts: with ``output_layouts``, the :class:`~enel.model.layout.SequenceLayout` each decoder layer saw
            (one per layer; with aggregation the point block is shorter in the aggregated layers).
    """

    last_hidden_state: torch.Tensor | None = None
    cache: object | None = None
    hidden_states: tuple | None = None
    point_block: PointBlock | None = None
    point_samples: list | None = None
    point_starts: torch.Tensor | None = None
    captured: dict | None = None
    layouts: tuple | None = None


@dataclass
class PointInputs:
    """What :meth:`EnelModel.prepare_point_inputs` hands the decoder.

    Attributes:
        embeds: ``(B, L, H)`` input embeddings, point tokens spliced in.
        block: the spliced point tokens and the stage-1 targets (None without clouds).
        samples: indices of the samples that carry a cloud.
        starts: ``(B,)`` index of ``<point_start>`` per sample (``-1`` without a cloud).
    """

    embeds: torch.Tensor
    block: PointBlock | None
    samples: list
    starts: torch.Tensor


@dataclass
class EnelCausalLMOutput(ModelOutput):
    """Output of :class:`EnelForCausalLM`; ``loss_terms`` holds each named loss (``loss_ce``, ``loss_mask``, …),
    ``diagnostics`` training-time measurements that are not part of the loss (``point_spread``)."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    cache: object | None = None
    hidden_states: tuple | None = None
    loss_terms: dict | None = None
    diagnostics: dict | None = None


def point_token_spread(tokens: torch.Tensor) -> torch.Tensor | None:
    """Share of the point tokens' energy that differs between the clouds of a batch, in [0, 1].

    ``tokens``: ``(B, T, H)`` projected point tokens (the LLM's inputs), token ``t`` of every cloud describing the
    same slot. Returns ``Σ‖x_bt − mean_b x_bt‖² / Σ‖x_bt‖²`` (no gradient), or None for ``B < 2``. Word embeddings
    sit near 0.8 on this scale; a value falling towards 0 in training means the point tokens are collapsing into
    a fixed soft prompt that tells the LLM nothing about the cloud.
    """
    if tokens.shape[0] < 2:
        return None
    x = tokens.detach().float()
    return (x - x.mean(0, keepdim=True)).pow(2).sum() / x.pow(2).sum().clamp(min=1e-12)


class PointPositionalEncoding(nn.Sequential):
    """The per-layer positional encoding of the point tokens (enel-method.md §2.5): ``MLP(3 → 128 → H)`` of each
    token's 3D centre, added to the point block before every decoder layer (stage 1 and, kept, stage 2)."""

    def __init__(self, hidden: int):
        super().__init__(nn.Linear(3, 128), nn.GELU(), nn.Linear(128, hidden))

    def forward(self, centres: torch.Tensor) -> torch.Tensor:
        """``centres (B, P, 3)`` → ``(B, P, H)``."""
        return super().forward(centres.to(self[0].weight.dtype))


class GateShape(ConversionOps):
    """The aggregation gate α as saved (a 0-d tensor, the format of every saved model) ↔ as held (shape ``(1,)``:
    FSDP cannot shard a 0-d parameter). Loading reshapes to ``(1,)``, saving back to ``()``."""

    def __init__(self, shape: tuple[int, ...] = (1,)):
        self.shape = shape

    @torch.no_grad()
    def convert(self, input_dict, source_patterns, target_patterns, **kwargs):
        tensors = next(iter(input_dict.values()))
        tensor = tensors[0] if isinstance(tensors, list) else tensors
        return {kwargs["full_layer_name"]: tensor.reshape(self.shape)}  # the key is kept, only the shape changes

    @property
    def reverse_op(self) -> ConversionOps:
        return GateShape(() if self.shape == (1,) else (1,))


#: saved checkpoints of earlier versions → today's modules (transformers converts at load, and back at save)
CHECKPOINT_CONVERSIONS = [
    WeightRenaming("model.objectives.pos_embed.", "model.point_pos_embed."),
    WeightConverter(r"aggregation\.attn\.(\d+)\.gate", r"aggregation.attn.\1.gate", [GateShape()]),
]
register_checkpoint_conversion_mapping("enel", CHECKPOINT_CONVERSIONS, overwrite=True)


def to_current_format(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict as files hold it (earlier names, 0-d gates) → this version's, by :data:`CHECKPOINT_CONVERSIONS`.

    ``from_pretrained`` applies the table itself; a raw ``load_state_dict`` of a saved file (the Trainer's
    ``--resume``) goes through this, so a resumed run gets every weight back instead of dropping renamed ones.
    """
    renames = [c for c in CHECKPOINT_CONVERSIONS if isinstance(c, WeightRenaming)]
    converters = [c for c in CHECKPOINT_CONVERSIONS if isinstance(c, WeightConverter)]
    out = {}
    for key, tensor in state_dict.items():
        name, pattern = rename_source_key(key, renames, converters)
        for conv in (c for c in converters if pattern in c.source_patterns):
            for op in conv.operations:
                converted = op.convert({name: tensor}, conv.source_patterns, conv.target_patterns, full_layer_name=name)
                tensor = converted[name]
        out[name] = tensor
    return out


class EnelPreTrainedModel(PreTrainedModel):
    config: EnelConfig
    config_class = EnelConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["LlamaDecoderLayer", "MistralDecoderLayer", "Qwen2DecoderLayer"]
    _supports_sdpa = True
    _supports_flash_attn = False
    _supports_flex_attn = False
    _can_compile_fullgraph = False

    def _init_weights(self, module):
        """The new modules start at the scales the config names (``PointEmbeddingConfig.class_token_std``, …)."""
        super()._init_weights(module)
        std = getattr(self.config.text_config, "initializer_range", 0.02)
        point = self.config.point
        if isinstance(module, PointTokenEmbedding):
            init.normal_(module.class_token, mean=0.0, std=point.class_token_std)
        elif isinstance(module, EnelModel):
            init.normal_(module.point_special_embeds, mean=0.0, std=std)
            # here, not under PointProjector: transformers skips the init of a custom module without parameters
            # of its own, and the projector's are all in its children
            color = module.point_path()[1].color
            if color is not None:  # the scale decides what stage 1 reads first (docs/training.md)
                init.normal_(color.weight, mean=0.0, std=point.color_skip_std)
                init.zeros_(color.bias)
        elif isinstance(module, FeatureStandardizer):  # the identity until fitted
            init.zeros_(module.mean)
            init.ones_(module.std)
        elif isinstance(module, PointBertEncoder):  # Point-BERT's init of its two learned tokens
            init.normal_(module.cls_token, mean=0.0, std=0.02)
            init.normal_(module.cls_pos, mean=0.0, std=0.02)
        elif isinstance(module, PointObjectives) and module.mask_token is not None:
            mask_std = self.config.objective.mask_token_std
            if mask_std:
                init.normal_(module.mask_token, mean=0.0, std=mask_std)
            else:  # zeros, drawing nothing from the RNG
                init.zeros_(module.mask_token)
        elif isinstance(module, GatedGroupAttention):
            init.constant_(module.gate, self.config.aggregation.gate_init)


class EnelModel(EnelPreTrainedModel):
    """Backbone base model + point token embedding + projector (+ per-layer positional encoding, + stage-1 heads,
    + stage-2 aggregation).

    With ``config.point_encoder="pointbert"`` the PointLLM-style baseline replaces the embedding and its projector:
    ``point_backbone`` (:class:`~enel.model.baseline.PointBertEncoder`) and ``point_proj``, named as in PointLLM's
    checkpoint, with ``point_feature_norm`` (:class:`~enel.model.baseline.FeatureStandardizer`, fitted after the
    encoder's pre-training) between them; :meth:`point_path` returns whichever pair the model has.
    """

    def __init__(self, config: EnelConfig):
        super().__init__(config)
        text = config.text_config
        pcfg = config.point
        self.language_model = AutoModel.from_config(text)
        if config.point_encoder == "pointbert":
            ecfg = config.encoder
            self.point_backbone = PointBertEncoder(ecfg, pcfg.in_channels)
            self.point_proj = PointLLMProjector(ecfg.trans_dim, ecfg.projector_hidden, text.hidden_size)
            self.point_feature_norm = FeatureStandardizer(ecfg.trans_dim)
        else:
            self.point_embedding = PointTokenEmbedding(pcfg)
            self.point_projector = PointProjector(pcfg.output_dim, pcfg.projector_hidden, text.hidden_size,
                                                  color=pcfg.color_skip)
        # embeddings of <point_patch>, <point_start>, <point_end>
        self.point_special_embeds = nn.Parameter(torch.zeros(3, text.hidden_size))
        obj, agg = config.objective, config.aggregation
        self.objectives = PointObjectives(obj, text.hidden_size, pcfg.group_size) if obj.active else None
        self.point_pos_embed = PointPositionalEncoding(text.hidden_size) if config.per_layer_pe else None
        eps = getattr(text, "rms_norm_eps", 1e-6)
        self.aggregation = (
            HierarchicalAggregation(agg, text.hidden_size, text.num_hidden_layers, eps) if agg.enabled else None
        )
        self.compiled_decoding: CompiledDecoding | None = None  # EnelForCausalLM.compile_decoding
        self.post_init()

    # ---- helpers -----------------------------------------------------------------------------------------
    @property
    def point_token_ids(self) -> PointTokenIds:
        c = self.config
        if min(c.point_patch_token_id, c.point_start_token_id, c.point_end_token_id) < 0:
            raise ConfigError("the config has no point token ids; build the model with EnelForCausalLM.from_backbone")
        return PointTokenIds(c.point_patch_token_id, c.point_start_token_id, c.point_end_token_id)

    def get_input_embeddings(self):
        return self.language_model.embed_tokens

    def set_input_embeddings(self, value):
        self.language_model.embed_tokens = value

    def point_path(self) -> tuple[nn.Module, nn.Module]:
        """``(encoder, projector)``: the modules that turn clouds into point tokens (``PointTokens``) and project
        their features to the LLM's width — the token embedding, or the PointLLM-style encoder baseline."""
        if self.config.point_encoder == "pointbert":
            return self.point_backbone, self.point_proj
        return self.point_embedding, self.point_projector

    def embed_points(self, clouds, generator: torch.Generator | None = None) -> PointTokens:
        """Clouds ``(B, N, C)`` or a list of ``(N_i, C)`` → :class:`PointTokens` (one call per distinct size)."""
        emb = self.point_path()[0]
        dtype = (emb.cls_token if isinstance(emb, PointBertEncoder) else emb.class_token).dtype
        if isinstance(clouds, torch.Tensor):
            tokens = emb(clouds.to(dtype), generator=generator)
        else:
            outs = [emb(c.unsqueeze(0).to(dtype), generator=generator) for c in clouds]
            tokens = PointTokens(
                features=torch.cat([o.features for o in outs]),
                centres=torch.cat([o.centres for o in outs]),
                patches=torch.cat([o.patches for o in outs]),
                colors=torch.cat([o.colors for o in outs]) if outs[0].colors is not None else None,
            )
        if isinstance(emb, PointBertEncoder):
            tokens.features = self.point_feature_norm(tokens.features)
        return tokens

    @torch.no_grad()
    def word_embedding_rms(self) -> torch.Tensor:
        """The RMS of the backbone's word embeddings over every entry (0.136 for SmolLM2), a 0-d fp32 tensor: the
        scale new point tokens and the aligned colour skip are brought to."""
        return self.language_model.embed_tokens.weight.float().pow(2).mean().sqrt()

    @torch.no_grad()
    def match_point_token_scale(self, batch: int = 4, seed: int = 0) -> float:
        """Scale the projector's last layer so new point tokens start at the RMS of the word embeddings.

        With the usual N(0, 0.02) init a 3-layer projector emits tokens ~8× smaller than SmolLM2's word
        embeddings, and the first hundreds of steps go into growing them. This rescales once, at construction,
        from a fixed batch of random unit-sphere clouds (deterministic for ``seed``). Returns the factor.
        :meth:`EnelForCausalLM.from_backbone` calls it when ``PointEmbeddingConfig.match_token_scale`` is on (the
        default; our change, not the paper's).
        """
        g = torch.Generator().manual_seed(seed)
        n = self.config.point.num_points
        clouds = torch.rand(batch, n, 6, generator=g)
        xyz = clouds[..., :3] - clouds[..., :3].mean(1, keepdim=True)
        clouds[..., :3] = xyz / xyz.norm(dim=-1).amax(1).view(-1, 1, 1)
        was_training = self.training
        self.eval()
        try:
            projector = self.point_path()[1]
            tokens = self.embed_points(clouds[..., : self.config.point.in_channels])
            feats = projector(tokens.features.float(), tokens.colors)
        finally:
            self.train(was_training)
        ratio = float(self.word_embedding_rms() / feats.pow(2).mean().sqrt().clamp(min=1e-12))
        last = projector.net[-1]
        last.weight.mul_(ratio)
        if last.bias is not None:
            last.bias.mul_(ratio)
        return ratio

    def _point_params_anchor(self) -> torch.Tensor:
        """0 · (sum of the point modules' parameters): keeps them in the graph for text-only batches (DDP/FSDP)."""
        return sum(p.sum() for module in self.point_path() for p in module.parameters()) * 0.0

    def prepare_point_inputs(
        self,
        input_ids: torch.LongTensor | None,
        inputs_embeds: torch.Tensor | None,
        point_clouds=None,
        past: int = 0,
        point_generator: torch.Generator | None = None,
    ) -> PointInputs:
        """The splice (LLaVA's ``prepare_inputs_labels_for_multimodal``): token embeddings with each prompt's
        ``<point_patch>`` run replaced by its cloud's projected point tokens.

        Args:
            input_ids: ``(B, L)`` (they locate the point blocks), or None with ``inputs_embeds`` ``(B, L, H)``.
            point_clouds: ``(B_p, N, C)`` for the ``B_p`` samples with a block, or a per-sample list.
            past: tokens already in the KV cache; point blocks only appear in a prompt (``past == 0``).
            point_generator: RNG for stage-1 mask sampling and random FPS starts (default: the global RNG).
        """
        if inputs_embeds is not None:
            if point_clouds is not None:
                raise ValueError("point clouds need input_ids (to locate the <point> blocks), not inputs_embeds")
            batch = inputs_embeds.shape[0]
            starts = torch.full((batch,), -1, dtype=torch.long, device=inputs_embeds.device)
            return PointInputs(inputs_embeds, None, [], starts)
        ids = self.point_token_ids
        embeds = embed_text(self.language_model.embed_tokens, self.point_special_embeds, input_ids, ids)
        starts = torch.full((input_ids.shape[0],), -1, dtype=torch.long, device=input_ids.device)
        if past > 0:
            if point_clouds is not None and bool((input_ids == ids.start).any()):
                raise ValueError("a point block can only appear in the prompt, not in tokens appended to a cache")
            return PointInputs(embeds, None, [], starts)
        starts = find_point_blocks(input_ids, ids, self.config.num_point_tokens)
        samples, clouds = match_clouds_to_blocks(point_clouds, starts)
        if not samples:
            if self.training:
                embeds = embeds + self._point_params_anchor().to(embeds.dtype)
            return PointInputs(embeds, None, samples, starts)
        tokens = self.embed_points(clouds, generator=point_generator)
        projector = self.point_path()[1]
        geometry = None
        if self.objectives is not None and self.config.objective.word_align > 0 and isinstance(projector,
                                                                                             PointProjector):
            geometry = projector.net(tokens.features)  # (B, 1 + G, H): the class-word alignment reads these
            feats = projector.add_color(geometry, tokens.colors)
            geometry = geometry[:, 1:]
        else:
            feats = projector(tokens.features, tokens.colors)
        if self.objectives is not None:
            block = self.objectives.prepare_block(feats, tokens.centres, tokens.patches, self.training,
                                                  point_generator, geometry=geometry)
        else:
            block = PointBlock.unmasked(feats, tokens.centres, tokens.patches)
        return PointInputs(splice_point_block(embeds, starts, samples, block.features), block, samples, starts)

    def layer_plan(self, points: PointInputs, full_mask: torch.Tensor, position_ids: torch.Tensor, cache,
                   past: int, output_layouts: bool = False) -> L.LayerPlan:
        """The :class:`~enel.model.layout.LayerPlan` of this pass: a prompt's layout, positional encoding and
        aggregation, or a decoding step's per-layer masks (``full_mask (B, past + L)`` bool)."""
        lm = self.language_model
        if past > 0:
            key_masks = (cache.step_masks(full_mask, len(lm.layers)) if isinstance(cache, L.EnelCache)
                         else L.LayerKeyMasks.uniform(full_mask[:, :past], len(lm.layers)))
            return L.LayerPlan.for_step(key_masks, full_mask, position_ids, lm.rotary_emb, points.embeds)
        block = points.block
        layout = L.SequenceLayout.of_prompt(full_mask, position_ids, geometric_block_start(points.starts),
                                            self.config.num_point_tokens - 1, points.samples,
                                            block.centres if block is not None else None)
        return L.LayerPlan.for_prompt(
            layout, lm.rotary_emb, points.embeds,
            positional=self.point_pos_embed if block is not None else None,
            aggregation=self.aggregation if points.samples else None,
            record_layouts=output_layouts,
        )

    def _attention_mask(self, attention_mask, batch: int, length: int, device) -> torch.Tensor:
        """``(B, past + L)`` bool over the cached and the new tokens (all ones when not given)."""
        if attention_mask is None:
            return torch.ones(batch, length, dtype=torch.bool, device=device)
        if attention_mask.dim() != 2 or attention_mask.shape[1] != length:
            raise ValueError(f"attention_mask must be 2-D (B, past + L) = ({batch}, {length}), "
                             f"got {tuple(attention_mask.shape)}")
        return attention_mask.bool()

    # ---- forward -----------------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache=None,
        inputs_embeds: torch.Tensor | None = None,
        point_clouds=None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        output_layouts: bool | None = None,
        capture_layers: set[int] | None = None,
        point_generator: torch.Generator | None = None,
        past_key_values=None,
        **kwargs,
    ) -> EnelModelOutput:
        """Run the LMM.

        Args:
            input_ids: ``(B, L)`` token ids (required when point clouds are given: they locate the blocks).
            attention_mask: ``(B, past + L)`` 0/1 over the cached and the new tokens.
            position_ids: ``(B, L)``; default ``cumsum(attention_mask) - 1`` (left padding safe).
            cache: a transformers ``Cache`` (an :class:`~enel.model.layout.EnelCache` is made when ``use_cache``
                and none is given); a cache holding a prompt continues it (point blocks only in prompts).
            point_clouds: ``(B_p, N, C)`` for the ``B_p`` samples with a point block, or a per-sample list.
            output_layouts: return the :class:`~enel.model.layout.SequenceLayout` every layer saw (prompts only).
            capture_layers: 1-based decoder layer numbers whose outputs to return in ``captured``.
            point_generator: RNG for stage-1 mask sampling and random FPS starts (default: the global RNG).
        """
        cache = cache if cache is not None else past_key_values
        use_cache = use_cache if use_cache is not None else cache is not None
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if use_cache and cache is None:
            cache = L.EnelCache(config=self.config.get_text_config(decoder=True))
        past = cache.get_seq_length() if cache is not None else 0
        ref = input_ids if input_ids is not None else inputs_embeds[..., 0]
        full_mask = self._attention_mask(attention_mask, ref.shape[0], past + ref.shape[1], ref.device)
        if position_ids is None:
            position_ids = L.default_position_ids(full_mask, past)
        points = self.prepare_point_inputs(input_ids, inputs_embeds, point_clouds, past, point_generator)
        plan = self.layer_plan(points, full_mask, position_ids, cache, past, bool(output_layouts))

        hidden, all_hidden, captured = points.embeds, (), {}
        step = self._compiled_step(past, points.embeds, use_cache, output_hidden_states, capture_layers)
        for i, layer in enumerate(self.language_model.layers):
            hidden, layer_inputs = plan.enter(i, hidden)
            if output_hidden_states:
                all_hidden += (hidden,)
            if step is not None:
                hidden = step.layer(i, hidden, cache, **layer_inputs)
            else:
                hidden = layer(hidden, cache=cache, use_cache=use_cache, **layer_inputs, **kwargs)
            if capture_layers and (i + 1) in capture_layers:
                captured[i + 1] = hidden
            hidden = plan.leave(i, hidden)
        hidden = self.language_model.norm(hidden)
        if output_hidden_states:
            all_hidden += (hidden,)

        if use_cache and past == 0:
            self._keep_prompt_masks(cache, plan)
        return EnelModelOutput(
            last_hidden_state=hidden,
            cache=cache if use_cache else None,
            hidden_states=all_hidden if output_hidden_states else None,
            point_block=points.block,
            point_samples=points.samples,
            point_starts=points.starts,
            captured=captured or None,
            layouts=tuple(plan.layouts) if plan.layouts is not None else None,
        )

    def _compiled_step(self, past: int, embeds: torch.Tensor, use_cache: bool, output_hidden_states, capture_layers
                       ) -> CompiledDecoding | None:
        """The compiled decoding step when there is one and this pass is a decoding step it runs: new tokens after a
        cached sequence (``embeds (B, t, H)``, :meth:`CompiledDecoding.covers`), no per-layer outputs asked for."""
        step = self.compiled_decoding
        if step is None or past == 0 or not use_cache or output_hidden_states or capture_layers:
            return None
        return step if step.covers(embeds) else None

    def _keep_prompt_masks(self, cache, plan: L.LayerPlan) -> None:
        if isinstance(cache, L.EnelCache):
            cache.key_masks = plan.key_masks()
        elif self.aggregation is not None:
            raise ValueError(f"a model with aggregation caches each layer's prompt mask: pass an EnelCache "
                             f"(enel.model.layout.EnelCache), not a {type(cache).__name__}")


class EnelForCausalLM(EnelPreTrainedModel, GenerationMixin):
    """ENEL: point tokens in, text out. Build one with :meth:`from_backbone`, reload with ``from_pretrained``."""

    _tied_weights_keys = {"lm_head.weight": "model.language_model.embed_tokens.weight"}

    def __init__(self, config: EnelConfig):
        super().__init__(config)
        self.model = EnelModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self._teacher: list[nn.Module] = []  # distillation teacher, kept out of the state dict
        self.post_init()

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """``nn.Module.load_state_dict`` of a state dict in this version's or a saved file's format
        (:func:`to_current_format`)."""
        return super().load_state_dict(to_current_format(state_dict), strict=strict, assign=assign)

    def get_input_embeddings(self):
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, value):
        self.lm_head = value

    def set_distillation_teacher(self, teacher: nn.Module | None) -> None:
        """A frozen module ``(points (B,N,C), centres (B,G,3)) → (B,G,D)`` for the distillation objective."""
        self._teacher = [teacher.eval().requires_grad_(False)] if teacher is not None else []

    # ---- construction ------------------------------------------------------------------------------------
    @classmethod
    def from_backbone(
        cls,
        backbone: str | None = None,
        *,
        point_config=None,
        point_encoder: str = "embedding",
        encoder_config=None,
        objective_config: dict | None = None,
        aggregation_config: dict | None = None,
        conversation_template: str = "chat",
        dtype: torch.dtype | None = None,
        seed: int | None = 0,
    ):
        """A new ENEL model around a pretrained (or tiny random) backbone; returns ``(model, tokenizer)``.

        Args:
            backbone: ``"smollm2"`` (default), ``"tiny-llama"``, ``"tiny-qwen2"`` or a local HF folder.
            point_config: a preset name (``"small"``, ``"paper"``), a dict (``{"preset": "small", ...}``
                overrides a preset), or a ``PointEmbeddingConfig``. With the encoder baseline only its ``num_points``
                and ``use_color`` are read.
            point_encoder: ``"embedding"`` (ENEL) or ``"pointbert"`` (the PointLLM-style encoder baseline).
            encoder_config: the baseline encoder's preset (``"small"``, ``"paper"``) or dict of fields.
            seed: seeds the initialisation of the new modules (None leaves the global RNG alone).
        """
        from .backbones import DEFAULT_BACKBONE, load_backbone
        from .splice import add_point_tokens

        if seed is not None:
            torch.manual_seed(seed)
        pcfg = PointEmbeddingConfig.from_spec(point_config)
        causal, tokenizer = load_backbone(backbone, dtype=dtype)
        ids = add_point_tokens(tokenizer)
        text_config = causal.config
        config = EnelConfig(
            text_config=text_config,
            point_config=pcfg.to_dict(),
            point_encoder=point_encoder,
            encoder_config=PointBertConfig.from_spec(encoder_config).to_dict() if point_encoder == "pointbert" else None,
            objective_config=objective_config,
            aggregation_config=aggregation_config,
            point_patch_token_id=ids.patch,
            point_start_token_id=ids.start,
            point_end_token_id=ids.end,
            conversation_template=conversation_template,
            backbone=str(backbone or DEFAULT_BACKBONE),
        )
        model = cls(config)
        model.model.language_model.load_state_dict(causal.model.state_dict())
        if not config.tie_word_embeddings:
            model.lm_head.load_state_dict(causal.lm_head.state_dict())
        model.tie_weights()
        with torch.no_grad():
            mean = model.model.language_model.embed_tokens.weight.mean(0)
            model.model.point_special_embeds.copy_(mean.expand_as(model.model.point_special_embeds))
        if pcfg.match_token_scale:  # ours, not the paper's (PointEmbeddingConfig.match_token_scale)
            model.model.match_point_token_scale(seed=seed or 0)
        if dtype is not None:
            model = model.to(dtype)
        del causal
        return model, tokenizer

    # ---- forward -----------------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache=None,
        inputs_embeds: torch.Tensor | None = None,
        point_clouds=None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        output_hidden_states: bool | None = None,
        point_generator: torch.Generator | None = None,
        past_key_values=None,
        point_words: torch.LongTensor | None = None,
        **kwargs,
    ) -> EnelCausalLMOutput:
        """Logits and, with ``labels``, the training loss: cross-entropy plus the active stage-1 objective.

        ``labels`` are ``(B, L)`` with -100 on everything that is not an assistant answer (see
        :mod:`enel.data.conversation`). ``loss_terms`` reports every term unweighted. In training mode with
        labels, logits are computed only where a label is set and ``logits`` is returned as None. ``point_words``
        ``(B, K)``: each sample's class-name token ids (-100: unknown) for the class-word alignment
        (``ObjectiveConfig.word_align``); only training with labels reads them.
        """
        cache = cache if cache is not None else past_key_values
        kwargs.pop("return_dict", None)
        kwargs.pop("output_attentions", None)
        obj = self.model.objectives if self.training and labels is not None else None
        if obj is not None:  # the contrastive objective runs on a doubled batch
            batch = obj.training_batch(dict(input_ids=input_ids, attention_mask=attention_mask,
                                            position_ids=position_ids, labels=labels, point_clouds=point_clouds,
                                            point_words=point_words),
                                       point_generator)
            input_ids, attention_mask, position_ids = batch["input_ids"], batch["attention_mask"], batch["position_ids"]
            labels, point_clouds, point_words = batch["labels"], batch["point_clouds"], batch["point_words"]
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            point_clouds=point_clouds,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
            capture_layers=obj.capture_layers if obj is not None else None,
            point_generator=point_generator,
            **kwargs,
        )
        hidden = out.last_hidden_state
        if labels is None:
            return EnelCausalLMOutput(logits=self._logits(hidden, logits_to_keep), cache=out.cache,
                                      hidden_states=out.hidden_states)
        # the point block is input, never a target (the backbone's lm_head can't even emit these ids)
        for tid in self.model.point_token_ids.as_tuple():
            labels = labels.masked_fill(labels == tid, -100)
        logits = None
        if self.training and isinstance(logits_to_keep, int) and not logits_to_keep:
            terms = {"loss_ce": self._sparse_cross_entropy(hidden, labels)}
        else:
            logits = self._logits(hidden, logits_to_keep)
            terms = {"loss_ce": self.loss_function(logits=logits, labels=labels,
                                                   vocab_size=self.config.text_config.vocab_size)}
        if obj is not None and out.point_block is not None:
            terms.update(obj.loss_terms(hidden, out.captured, out.point_block, out.point_samples, out.point_starts,
                                        point_clouds, teacher=self._teacher[0] if self._teacher else None,
                                        words=point_words, embeddings=self.model.language_model.embed_tokens.weight))
        weights = obj.loss_weights() if obj is not None else {}
        loss = sum(weights.get(name, 1.0) * value for name, value in terms.items())
        diagnostics = None
        if self.training and out.point_block is not None:
            spread = point_token_spread(out.point_block.target_features)
            diagnostics = {"point_spread": spread} if spread is not None else None
        return EnelCausalLMOutput(loss=loss, logits=logits, cache=out.cache, hidden_states=out.hidden_states,
                                  loss_terms=terms, diagnostics=diagnostics)

    def compile_decoding(self, enabled: bool = True) -> bool:
        """Run the decoding steps of ``generate()`` (no-grad passes of one new token after a cached sequence, for up
        to :data:`~enel.model.decoding.MAX_SAMPLES` samples) through compiled layer functions,
        :class:`~enel.model.decoding.CompiledDecoding`: the same maths, faster on a CPU, with logits that differ
        from the eager step's in the last bits.

        The first decoding step after this call compiles, once per process (inductor's on-disk cache shortens it in
        a later process), so it pays off over long or many answers, not a single short one; docs/training.md
        ("Speed") has the numbers. Prompts, training and larger batches keep the layers' own forward.
        ``enabled=False`` goes back to the eager step.

        Returns:
            Whether decoding is compiled now: False for a backbone whose layers are not the Llama-family structure
            :meth:`CompiledDecoding.supports` checks (its decoding stays eager).
        """
        if not isinstance(enabled, bool):
            raise TypeError(f"enabled must be True or False, not {enabled!r}")
        lm = self.model.language_model
        supported = enabled and CompiledDecoding.supports(lm, self.lm_head)
        self.model.compiled_decoding = CompiledDecoding(lm, self.lm_head) if supported else None
        return supported

    def _logits(self, hidden: torch.Tensor, logits_to_keep: int | torch.Tensor) -> torch.Tensor:
        if isinstance(logits_to_keep, int):
            hidden = hidden[:, -logits_to_keep:] if logits_to_keep else hidden
        else:
            hidden = hidden[:, logits_to_keep]
        step = self.model.compiled_decoding
        if step is not None and step.covers(hidden):
            return step.logits(hidden)
        return self.lm_head(hidden)

    def _sparse_cross_entropy(self, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The shifted mean cross-entropy over the labelled tokens, with logits only where a label is set.

        Training: with ~10-20 % of the tokens labelled this saves most of the lm_head's cost (2 · hidden · vocab
        FLOPs per token, forward and backward).
        """
        targets = labels[:, 1:]
        picked = targets != -100
        selected = self.lm_head(hidden[:, :-1][picked]).float()
        if not bool(picked.any()):
            return selected.sum() * 0.0
        return torch.nn.functional.cross_entropy(selected, targets[picked])

    # ---- generation --------------------------------------------------------------------------------------
    def _prepare_cache_for_generation(self, generation_config, model_kwargs: dict, *args, **kwargs):
        """``generate()``'s default cache is an :class:`~enel.model.layout.EnelCache` (each layer's prompt mask
        travels with the keys, through beam search's reorders); other cache implementations go to transformers."""
        if (model_kwargs.get("cache") is None and generation_config.use_cache is not False
                and generation_config.cache_implementation in (None, "dynamic")):
            model_kwargs["cache"] = L.EnelCache(config=self.config.get_text_config(decoder=True))
            return
        super()._prepare_cache_for_generation(generation_config, model_kwargs, *args, **kwargs)

    def prepare_inputs_for_generation(self, input_ids, point_clouds=None, cache=None, is_first_iteration=False,
                                      **kwargs):
        inputs = super().prepare_inputs_for_generation(
            input_ids, cache=cache, is_first_iteration=is_first_iteration, **kwargs
        )
        prompt_step = cache is None or cache.get_seq_length() == 0
        if point_clouds is not None and prompt_step:
            inputs["point_clouds"] = point_clouds
        return inputs
