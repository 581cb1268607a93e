"""``EnelForCausalLM``: a decoder-only LLM with point tokens spliced into its input, no 3D encoder.

Structure (the Hugging Face composite layout of LLaVA):

* :class:`EnelModel` owns the backbone's base model (``language_model``: embeddings, decoder layers, final norm,
  rotary embedding — any Llama-family model), the point token embedding, the projector, the embeddings of the
  three point special tokens, and, when configured, the stage-1 objective heads and the stage-2 aggregation;
* :class:`EnelForCausalLM` adds ``lm_head`` (tied to the input embeddings when the backbone ties them), the
  losses and ``generate()``.

The decoder loop is written out here (as ``LlamaModel.forward`` does) because ENEL needs to act between
layers: the per-layer positional encoding of point tokens (stage 1) and the aggregation / propagation that
shortens and regrows the point block (stage 2). Masks, positions and the KV cache follow
:mod:`enel.model.layout`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModel, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import ModelOutput

from ..errors import ConfigError
from . import layout as L
from .aggregation import GatedGroupAttention, HierarchicalAggregation
from .configuration_enel import EnelConfig, PointEmbeddingConfig
from .embedding import PointProjector, PointTokenEmbedding, PointTokens
from .objectives import PointBlock, PointObjectives
from .splice import (
    PointTokenIds,
    embed_text,
    find_point_blocks,
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
        cache: the KV cache (with each layer's prompt key masks attached) when ``use_cache``.
        hidden_states: the input of every decoder layer and the final output, when asked for (with aggregation
            their lengths differ between layers).
        point_block: the spliced point tokens and the stage-1 targets (None without clouds).
        point_samples: indices of the samples that carry a cloud.
        point_starts: ``(B,)`` index of ``<point_start>`` per sample (``-1`` without a cloud).
        captured: ``{layer_number: hidden (B, L, H)}`` for layers asked for with ``capture_layers``.
    """

    last_hidden_state: torch.Tensor | None = None
    cache: object | None = None
    hidden_states: tuple | None = None
    point_block: PointBlock | None = None
    point_samples: list | None = None
    point_starts: torch.Tensor | None = None
    captured: dict | None = None


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
            color = module.point_projector.color
            if color is not None:  # the scale decides what stage 1 reads first (docs/training.md)
                init.normal_(color.weight, mean=0.0, std=point.color_skip_std)
                init.zeros_(color.bias)
        elif isinstance(module, PointObjectives) and module.mask_token is not None:
            mask_std = self.config.objective.mask_token_std
            if mask_std:
                init.normal_(module.mask_token, mean=0.0, std=mask_std)
            else:  # zeros, drawing nothing from the RNG
                init.zeros_(module.mask_token)
        elif isinstance(module, GatedGroupAttention):
            init.constant_(module.gate, self.config.aggregation.gate_init)


class EnelModel(EnelPreTrainedModel):
    """Backbone base model + point token embedding + projector (+ stage-1 heads, + stage-2 aggregation)."""

    def __init__(self, config: EnelConfig):
        super().__init__(config)
        text = config.text_config
        pcfg = config.point
        self.language_model = AutoModel.from_config(text)
        self.point_embedding = PointTokenEmbedding(pcfg)
        self.point_projector = PointProjector(pcfg.output_dim, pcfg.projector_hidden, text.hidden_size,
                                              color=pcfg.color_skip)
        # embeddings of <point_patch>, <point_start>, <point_end>
        self.point_special_embeds = nn.Parameter(torch.zeros(3, text.hidden_size))
        obj, agg = config.objective, config.aggregation
        self.objectives = PointObjectives(obj, text.hidden_size, pcfg.group_size) if obj.active else None
        eps = getattr(text, "rms_norm_eps", 1e-6)
        self.aggregation = (
            HierarchicalAggregation(agg, text.hidden_size, text.num_hidden_layers, eps) if agg.enabled else None
        )
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

    def embed_points(self, clouds, generator: torch.Generator | None = None) -> PointTokens:
        """Clouds ``(B, N, C)`` or a list of ``(N_i, C)`` → :class:`PointTokens` (one call per distinct size)."""
        emb = self.point_embedding
        dtype = emb.class_token.dtype
        if isinstance(clouds, torch.Tensor):
            return emb(clouds.to(dtype), generator=generator)
        outs = [emb(c.unsqueeze(0).to(dtype), generator=generator) for c in clouds]
        return PointTokens(
            features=torch.cat([o.features for o in outs]),
            centres=torch.cat([o.centres for o in outs]),
            patches=torch.cat([o.patches for o in outs]),
            colors=torch.cat([o.colors for o in outs]) if outs[0].colors is not None else None,
        )

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
            tokens = self.embed_points(clouds)
            feats = self.point_projector(tokens.features.float(), tokens.colors)
        finally:
            self.train(was_training)
        target = self.language_model.embed_tokens.weight.float().pow(2).mean().sqrt()
        ratio = float(target / feats.pow(2).mean().sqrt().clamp(min=1e-12))
        last = self.point_projector.net[-1]
        last.weight.mul_(ratio)
        if last.bias is not None:
            last.bias.mul_(ratio)
        return ratio

    def _point_params_anchor(self) -> torch.Tensor:
        """0 · (sum of the point modules' parameters): keeps them in the graph for text-only batches (DDP/FSDP)."""
        total = sum(p.sum() for p in self.point_embedding.parameters()) + sum(
            p.sum() for p in self.point_projector.parameters()
        )
        return total * 0.0

    def _full_layout(self, key_mask, position_ids, starts, block: PointBlock | None, samples) -> L.SequenceLayout:
        batch = key_mask.shape[0]
        n_geo = self.config.num_point_tokens - 1
        has = starts >= 0
        block_start = torch.where(has, starts + 2, torch.full_like(starts, -1))
        valid = has[:, None].expand(batch, n_geo).clone()
        centres = None
        if block is not None:
            centres = torch.zeros(batch, n_geo, 3, dtype=torch.float32, device=key_mask.device)
            centres[torch.tensor(samples, device=key_mask.device)] = block.centres.float()
        return L.SequenceLayout(key_mask, position_ids, block_start, valid, centres)

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
            cache: a transformers ``Cache``; a cache holding a prompt continues it (point blocks only in prompts).
            point_clouds: ``(B_p, N, C)`` for the ``B_p`` samples with a point block, or a per-sample list.
            capture_layers: 1-based decoder layer numbers whose outputs to return in ``captured``.
            point_generator: RNG for stage-1 mask sampling and random FPS starts (default: the global RNG).
        """
        cache = cache if cache is not None else past_key_values
        lm = self.language_model
        use_cache = use_cache if use_cache is not None else (cache is not None)
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if use_cache and cache is None:
            from transformers import DynamicCache

            cache = DynamicCache(config=self.config.get_text_config(decoder=True))
        past = cache.get_seq_length() if cache is not None else 0
        ref = input_ids if input_ids is not None else inputs_embeds[..., 0]
        batch, q_len = ref.shape
        full_mask = attention_mask
        if full_mask is None:
            full_mask = torch.ones(batch, past + q_len, dtype=torch.long, device=ref.device)
        if full_mask.dim() != 2 or full_mask.shape[1] != past + q_len:
            raise ValueError(
                f"attention_mask must be 2-D (B, past + L) = ({batch}, {past + q_len}), got {tuple(full_mask.shape)}"
            )
        key_mask_full = full_mask.bool()
        if position_ids is None:
            position_ids = L.default_position_ids(full_mask, past)

        # embeddings and the splice (prompt only)
        block, samples = None, []
        starts = torch.full((batch,), -1, dtype=torch.long, device=ref.device)
        if inputs_embeds is None:
            ids = self.point_token_ids
            embeds = embed_text(lm.embed_tokens, self.point_special_embeds, input_ids, ids)
            if past == 0:
                starts = find_point_blocks(input_ids, ids, self.config.num_point_tokens)
                samples, clouds = match_clouds_to_blocks(point_clouds, starts)
                if samples:
                    tokens = self.embed_points(clouds, generator=point_generator)
                    feats = self.point_projector(tokens.features, tokens.colors)
                    if self.objectives is not None:
                        block = self.objectives.prepare_block(
                            feats, tokens.centres, tokens.patches, self.training, point_generator
                        )
                    else:
                        n_geo = feats.shape[1] - 1
                        index = torch.arange(n_geo, device=feats.device).expand(feats.shape[0], n_geo)
                        block = PointBlock(feats, tokens.centres, n_geo, None, index, feats[:, 1:], tokens.patches)
                    embeds = splice_point_block(embeds, starts, samples, block.features)
                elif self.training:
                    embeds = embeds + self._point_params_anchor().to(embeds.dtype)
            elif point_clouds is not None and bool((input_ids == ids.start).any()):
                raise ValueError("a point block can only appear in the prompt, not in tokens appended to a cache")
        else:
            if point_clouds is not None:
                raise ValueError("point clouds need input_ids (to locate the <point> blocks), not inputs_embeds")
            embeds = inputs_embeds

        # the decoder
        hidden = embeds
        step_masks = getattr(cache, "enel_key_masks", None) if past > 0 else None
        if past > 0 and step_masks is None:
            step_masks = L.LayerKeyMasks([key_mask_full[:, :past]] * len(lm.layers), past)
        layout = None
        if past == 0:
            layout = self._full_layout(key_mask_full, position_ids, starts, block, samples)
        pe = self.objectives is not None and self.objectives.pos_embed is not None and block is not None
        agg = self.aggregation if (self.aggregation is not None and past == 0 and samples) else None

        def prepare(lay):
            pos = lay.position_ids if lay is not None else position_ids
            return lm.rotary_emb(hidden, position_ids=pos)

        pos_emb = prepare(layout)
        mask4d = L.additive_mask(layout.key_mask, layout.length, hidden.dtype) if layout is not None else None
        step_mask4d = step_masks.additive_masks(key_mask_full, q_len, hidden.dtype) if layout is None else None
        prompt_masks: list[torch.Tensor] = []
        stack: list[L.Transition] = []
        all_hidden = () if output_hidden_states else None
        captured: dict[int, torch.Tensor] = {}
        for i, layer in enumerate(lm.layers):
            if layout is None:  # a decoding step: each layer extends its own prompt mask
                mask4d = step_mask4d[i]
            else:
                prompt_masks.append(layout.key_mask)
            if pe:
                hidden = layout.add_to_block(hidden, self.objectives.positional(layout.point_centres))
            if output_hidden_states:
                all_hidden += (hidden,)
            hidden = layer(
                hidden,
                attention_mask=mask4d,
                position_ids=layout.position_ids if layout is not None else position_ids,
                cache=cache,
                use_cache=use_cache,
                position_embeddings=pos_emb,
                **kwargs,
            )
            if capture_layers and (i + 1) in capture_layers:
                captured[i + 1] = hidden
            event = agg.event_after(i) if agg is not None else None
            if event is not None:
                kind, blk, lvl = event
                if kind == "aggregate":
                    hidden, transition = agg.aggregate(hidden, layout, blk, lvl)
                    stack.append(transition)
                    layout = transition.coarse
                else:
                    transition = stack.pop()
                    hidden = agg.propagate(hidden, transition)
                    layout = transition.fine
                pos_emb = prepare(layout)
                mask4d = L.additive_mask(layout.key_mask, layout.length, hidden.dtype)
        hidden = lm.norm(hidden)
        if output_hidden_states:
            all_hidden += (hidden,)
        if use_cache and past == 0:
            cache.enel_key_masks = L.LayerKeyMasks(prompt_masks, q_len)
        return EnelModelOutput(
            last_hidden_state=hidden,
            cache=cache if use_cache else None,
            hidden_states=all_hidden,
            point_block=block,
            point_samples=samples,
            point_starts=starts,
            captured=captured or None,
        )


class EnelForCausalLM(EnelPreTrainedModel, GenerationMixin):
    """ENEL: point tokens in, text out. Build one with :meth:`from_backbone`, reload with ``from_pretrained``."""

    _tied_weights_keys = {"lm_head.weight": "model.language_model.embed_tokens.weight"}

    def __init__(self, config: EnelConfig):
        super().__init__(config)
        self.model = EnelModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self._teacher: list[nn.Module] = []  # distillation teacher, kept out of the state dict
        self.post_init()

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
                overrides a preset), or a ``PointEmbeddingConfig``.
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
        **kwargs,
    ) -> EnelCausalLMOutput:
        """Logits and, with ``labels``, the training loss: cross-entropy plus the active stage-1 objective.

        ``labels`` are ``(B, L)`` with -100 on everything that is not an assistant answer (see
        :mod:`enel.data.conversation`). ``loss_terms`` reports every term unweighted. In training mode with
        labels, logits are computed only where a label is set and ``logits`` is returned as None.
        """
        cache = cache if cache is not None else past_key_values
        obj = self.model.objectives
        train_obj = obj is not None and self.training and labels is not None
        kwargs.pop("return_dict", None)
        kwargs.pop("output_attentions", None)

        contrast = train_obj and obj.cfg.name == "contrastive" and point_clouds is not None
        if contrast:
            if not isinstance(point_clouds, torch.Tensor):
                raise ValueError("the contrastive objective needs point clouds as one (B_p, N, C) tensor")
            view_a, view_b = obj.contrastive_views(point_clouds, point_generator)
            point_clouds = torch.cat([view_a, view_b])
            input_ids = torch.cat([input_ids, input_ids])
            labels = torch.cat([labels, labels])
            attention_mask = torch.cat([attention_mask, attention_mask]) if attention_mask is not None else None
            position_ids = torch.cat([position_ids, position_ids]) if position_ids is not None else None

        head_layer = obj.cfg.head_layer if train_obj else -1
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            point_clouds=point_clouds,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
            capture_layers={head_layer} if head_layer > 0 else None,
            point_generator=point_generator,
            **kwargs,
        )
        hidden = out.last_hidden_state
        if labels is not None:
            # the point block is input, never a target (the backbone's lm_head can't even emit these ids)
            for tid in self.model.point_token_ids.as_tuple():
                labels = labels.masked_fill(labels == tid, -100)
        sparse = labels is not None and self.training and isinstance(logits_to_keep, int) and not logits_to_keep
        if sparse:
            # training: only the supervised positions need logits. With ~10-20 % of the tokens labelled this saves
            # most of the lm_head's cost (2 · hidden · vocab FLOPs per token, forward and backward); the loss equals
            # the usual shifted mean cross-entropy over the labelled tokens.
            targets = labels[:, 1:]
            picked = targets != -100
            logits = None
            selected = self.lm_head(hidden[:, :-1][picked]).float()
            loss_ce = (torch.nn.functional.cross_entropy(selected, targets[picked]) if bool(picked.any())
                       else selected.sum() * 0.0)
        else:
            keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) and logits_to_keep else slice(None)
            logits = self.lm_head(hidden[:, keep] if isinstance(logits_to_keep, int) else hidden[:, logits_to_keep])

        loss, terms = None, None
        if labels is not None:
            if not sparse:
                loss_ce = self.loss_function(logits=logits, labels=labels,
                                             vocab_size=self.config.text_config.vocab_size)
            terms = {"loss_ce": loss_ce}
            loss = obj.cfg.weight_ce * loss_ce if train_obj else loss_ce
            if train_obj and out.point_block is not None:
                loss, terms = self._objective_losses(out, hidden, point_clouds, loss, terms)
        diagnostics = None
        if self.training and labels is not None and out.point_block is not None:
            spread = point_token_spread(out.point_block.target_features)
            diagnostics = {"point_spread": spread} if spread is not None else None
        return EnelCausalLMOutput(loss=loss, logits=logits, cache=out.cache, hidden_states=out.hidden_states,
                                  loss_terms=terms, diagnostics=diagnostics)

    def _objective_losses(self, out: EnelModelOutput, final_hidden, point_clouds, loss, terms):
        obj = self.model.objectives
        cfg = obj.cfg
        source = out.captured[cfg.head_layer] if cfg.head_layer > 0 else final_hidden
        rows = torch.tensor(out.point_samples, device=source.device)
        starts = out.point_starts[rows]
        n_tok = out.point_block.features.shape[1]
        pos = starts[:, None] + 1 + torch.arange(n_tok, device=source.device)[None, :]  # cls + geometric
        block_hidden = source[rows[:, None], pos]  # (B_p, T, H)
        geo = block_hidden[:, 1:]
        weights = {"loss_mask": cfg.weight_mask, "loss_recon": cfg.weight_recon}
        for name, value in obj.losses(geo, out.point_block).items():
            terms[name] = value
            loss = loss + weights[name] * value
        if cfg.name == "contrastive":
            half = block_hidden.shape[0] // 2
            pooled = block_hidden.float().mean(1)
            value = obj.contrastive_loss(pooled[:half], pooled[half:])
            terms["loss_contrast"] = value
            loss = loss + cfg.weight_contrast * value
        if cfg.name == "distillation":
            if not self._teacher:
                raise ConfigError("the distillation objective needs a teacher: call model.set_distillation_teacher(...)")
            clouds = point_clouds if isinstance(point_clouds, torch.Tensor) else torch.stack(
                [point_clouds[i] for i in out.point_samples])
            target = self._teacher[0](clouds, out.point_block.centres)
            value = obj.distill_loss(geo, target)
            terms["loss_distill"] = value
            loss = loss + cfg.weight_distill * value
        return loss, terms

    # ---- generation --------------------------------------------------------------------------------------
    def prepare_inputs_for_generation(self, input_ids, point_clouds=None, cache=None, is_first_iteration=False,
                                      **kwargs):
        inputs = super().prepare_inputs_for_generation(
            input_ids, cache=cache, is_first_iteration=is_first_iteration, **kwargs
        )
        prompt_step = cache is None or cache.get_seq_length() == 0
        if point_clouds is not None and prompt_step:
            inputs["point_clouds"] = point_clouds
        return inputs
