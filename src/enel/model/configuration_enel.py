"""``EnelConfig``: a composite config holding the backbone's text config and ENEL's own parts.

Nested parts are stored as plain dicts (so ``config.json`` stays readable) and materialised as dataclasses by
the properties :attr:`EnelConfig.point`, :attr:`EnelConfig.objective` and :attr:`EnelConfig.aggregation_cfg`,
which validate them with clear :class:`~enel.errors.ConfigError` messages.
"""

from __future__ import annotations

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .aggregation import AggregationConfig
from .embedding import PointEmbeddingConfig
from .objectives import ObjectiveConfig

__all__ = ["EnelConfig", "POINT_PATCH_TOKEN", "POINT_START_TOKEN", "POINT_END_TOKEN", "POINT_PLACEHOLDER"]

POINT_PLACEHOLDER = "<point>"
POINT_PATCH_TOKEN = "<point_patch>"
POINT_START_TOKEN = "<point_start>"
POINT_END_TOKEN = "<point_end>"


class EnelConfig(PreTrainedConfig):
    r"""Configuration of :class:`~enel.model.modeling_enel.EnelForCausalLM`.

    Args:
        text_config: the backbone's config (Llama, Mistral or Qwen2 family), a dict or a config object.
        point_config: :class:`~enel.model.embedding.PointEmbeddingConfig` as a dict (token embedding + projector).
        objective_config: :class:`~enel.model.objectives.ObjectiveConfig` as a dict (stage-1 self-supervised losses).
        aggregation_config: :class:`~enel.model.aggregation.AggregationConfig` as a dict (stage-2 aggregation).
        point_patch_token_id, point_start_token_id, point_end_token_id: ids of the special tokens in the tokenizer.
        conversation_template: ``"chat"`` (the backbone tokenizer's own chat template) or ``"vicuna_v1_1"``.
        backbone: provenance, the backbone spec the model was built from.
        training_state: what training the weights have seen, e.g. ``{"stage": 1, "steps": 400}``; an empty dict
            marks a freshly initialised model whose text means nothing yet.
        per_layer_pe: add a positional encoding of each point token's 3D centre before every decoder layer (the
            model's own module, so it stays when stage 2 drops the stage-1 objectives); set from the objective's
            ``per_layer_pe``, where stage-1 configs ask for it.
    """

    model_type = "enel"
    sub_configs_defaults = {"text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama")}

    text_config: dict | PreTrainedConfig | None = None
    point_config: dict | None = None
    objective_config: dict | None = None
    aggregation_config: dict | None = None
    point_patch_token_id: int = -1
    point_start_token_id: int = -1
    point_end_token_id: int = -1
    conversation_template: str = "chat"
    backbone: str = ""
    training_state: dict | None = None
    tie_word_embeddings: bool = False
    per_layer_pe: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if not self.tie_word_embeddings and getattr(self.text_config, "tie_word_embeddings", False):
            self.tie_word_embeddings = True
        self.point_config = PointEmbeddingConfig.from_dict(self.point_config).to_dict()
        self.objective_config = ObjectiveConfig.from_dict(self.objective_config).to_dict()
        self.aggregation_config = AggregationConfig.from_dict(self.aggregation_config).to_dict()
        self.per_layer_pe = bool(self.per_layer_pe or self.objective_config.get("per_layer_pe"))
        if self.training_state is None:
            self.training_state = {}

    # materialised views -----------------------------------------------------------------------------------
    @property
    def point(self) -> PointEmbeddingConfig:
        return PointEmbeddingConfig.from_dict(self.point_config)

    @property
    def objective(self) -> ObjectiveConfig:
        return ObjectiveConfig.from_dict(self.objective_config)

    @property
    def aggregation(self) -> AggregationConfig:
        return AggregationConfig.from_dict(self.aggregation_config)

    @property
    def num_point_tokens(self) -> int:
        return self.point.num_tokens

    @property
    def is_trained(self) -> bool:
        return bool(self.training_state and self.training_state.get("steps", 0) > 0)
