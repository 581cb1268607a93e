"""``EnelConfig``: a composite config holding the backbone's text config and ENEL's own parts.

Nested parts are stored as plain dicts (so ``config.json`` stays readable) and materialised as dataclasses by
the properties :attr:`EnelConfig.point`, :attr:`EnelConfig.objective` and :attr:`EnelConfig.aggregation_cfg`,
which validate them with clear :class:`~enel.errors.ConfigError` messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from ..errors import ConfigError
from .aggregation import AggregationConfig
from .embedding import PointEmbeddingConfig
from .objectives import ObjectiveConfig
from .subconfig import SubConfig

__all__ = [
    "EnelConfig", "PointBertConfig", "POINT_ENCODERS",
    "POINT_PATCH_TOKEN", "POINT_START_TOKEN", "POINT_END_TOKEN", "POINT_PLACEHOLDER",
]

POINT_PLACEHOLDER = "<point>"
POINT_PATCH_TOKEN = "<point_patch>"
POINT_START_TOKEN = "<point_start>"
POINT_END_TOKEN = "<point_end>"

POINT_ENCODERS = ("embedding", "pointbert")
"""What ``EnelConfig.point_encoder`` accepts: ENEL's token embedding, or the PointLLM-style encoder baseline."""


@dataclass
class PointBertConfig(SubConfig):
    """Sizes of the PointLLM-style baseline encoder (:mod:`enel.model.baseline`) and its projector.

    A Point-BERT ``PointTransformer`` as PointLLM v1.2 uses it (``PointTransformer_8192point_2layer.yaml``,
    pointllm-ecosystem.md §2.1–2.2): FPS picks ``num_group`` centres, each takes its ``group_size`` nearest points,
    a mini-PointNet (6 → 128 → 256, max, concat → 512 → 512 → ``encoder_dims``, max; ``pointnet_dims``) embeds each
    patch, a linear
    layer brings it to ``trans_dim``, a class token is prepended and ``depth`` pre-norm transformer blocks with
    ``num_heads`` heads (the centres' positional MLP added before every block) and a final LayerNorm follow.
    ``num_group + 1`` tokens of ``trans_dim`` go through the projector ``trans_dim → projector_hidden… → hidden``.

    The input (``num_points``, ``use_color``) is the model's ``point_config``, shared by both point paths.

    Attributes:
        num_group: patches, hence point tokens minus the class token (PointLLM: 512 → 513 tokens).
        group_size: points per patch, k of the kNN (PointLLM: 32).
        trans_dim: token width (PointLLM: 384).
        depth: transformer blocks (PointLLM: 12).
        num_heads: attention heads (PointLLM: 6, 64 channels each).
        encoder_dims: width of the mini-PointNet's patch feature (PointLLM: 256).
        pointnet_dims: the mini-PointNet's inner widths ``[a, b, c]``: ``C → a → b``, max, concat (``2b``) ``→ c →
            encoder_dims`` (PointLLM: [128, 256, 512]; its per-point ``512 → 512`` layer is most of the encoder's cost).
        mlp_ratio: hidden width of each block's MLP over ``trans_dim`` (4).
        drop_path_rate: stochastic depth, rising linearly to this rate over the blocks, in training only (0.1).
        fps_random_start: in training only, start each FPS at a random index (PointLLM's ``misc.fps`` always did);
            evaluation starts at index 0, so a cloud's tokens are deterministic.
        projector_hidden: hidden widths of the projector MLP (PointLLM v1.2: [1024, 2048]).
    """

    kind: ClassVar[str] = "point encoder"

    num_group: int = 512
    group_size: int = 32
    trans_dim: int = 384
    depth: int = 12
    num_heads: int = 6
    encoder_dims: int = 256
    pointnet_dims: list[int] = field(default_factory=lambda: [128, 256, 512])
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.1
    fps_random_start: bool = False
    projector_hidden: list[int] = field(default_factory=lambda: [1024, 2048])

    @classmethod
    def paper(cls, **overrides) -> "PointBertConfig":
        """PointLLM v1.2: 512 groups × 32 points, 384-d, 12 blocks, 6 heads (≈ 22 M + 11 M projector params at 7B)."""
        return cls(**overrides)

    @classmethod
    def small(cls, **overrides) -> "PointBertConfig":
        """The CPU size: 128 groups × 16 points (129 tokens, ENEL's paper count; the groups cover a 2048-point cloud
        about once), a mini-PointNet of half PointLLM's widths, 192-d, 4 blocks, 3 heads."""
        base = dict(num_group=128, group_size=16, pointnet_dims=[64, 128, 256], trans_dim=192, depth=4, num_heads=3,
                    projector_hidden=[576, 576])
        base.update(overrides)
        return cls(**base)

    @classmethod
    def from_spec(cls, spec) -> "PointBertConfig":
        """``None`` (the ``small`` preset), a preset name (``small``, ``paper``), a dict of fields (a ``preset`` key
        starts from that preset), or a ``PointBertConfig``."""
        if isinstance(spec, cls):
            return spec
        presets = {"paper": cls.paper, "small": cls.small}
        fields_ = {"preset": spec or "small"} if spec is None or isinstance(spec, str) else spec
        if not isinstance(fields_, dict):
            raise ConfigError(f"encoder_config must be a preset name or a dict of fields, not {type(spec).__name__}")
        fields_ = dict(fields_)
        name = fields_.pop("preset", None)
        if name is None:
            return cls.from_dict(fields_)
        if name not in presets:
            raise ConfigError(f"unknown point encoder preset {name!r}; choose one of {sorted(presets)}")
        return cls.from_dict({**presets[name]().to_dict(), **fields_})

    @property
    def num_tokens(self) -> int:
        """Point tokens handed to the LLM: one per group plus the class token (PointLLM: 513)."""
        return self.num_group + 1

    @property
    def min_points(self) -> int:
        """Fewest input points the grouping takes without padding."""
        return max(self.num_group, self.group_size)

    def validate(self) -> None:
        for name in ("num_group", "group_size", "trans_dim", "depth", "num_heads", "encoder_dims"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"point encoder {name} must be a positive integer, not {getattr(self, name)}")
        if len(self.pointnet_dims) != 3 or any(int(d) < 1 for d in self.pointnet_dims):
            raise ConfigError(f"pointnet_dims lists three positive widths [a, b, c], not {self.pointnet_dims}")
        if self.trans_dim % self.num_heads:
            raise ConfigError(f"trans_dim={self.trans_dim} is not divisible by num_heads={self.num_heads}")
        if self.mlp_ratio <= 0:
            raise ConfigError(f"mlp_ratio must be positive, not {self.mlp_ratio}")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ConfigError(f"drop_path_rate must lie in [0, 1), not {self.drop_path_rate}")
        if any(int(h) < 1 for h in self.projector_hidden):
            raise ConfigError(f"projector_hidden must list positive widths (or be empty), not {self.projector_hidden}")


class EnelConfig(PreTrainedConfig):
    r"""Configuration of :class:`~enel.model.modeling_enel.EnelForCausalLM`.

    Args:
        text_config: the backbone's config (Llama, Mistral or Qwen2 family), a dict or a config object.
        point_config: :class:`~enel.model.embedding.PointEmbeddingConfig` as a dict (token embedding + projector).
            Its ``num_points`` and ``use_color`` describe the input of either point path.
        point_encoder: how points become tokens: ``"embedding"`` (ENEL's token embedding, ``point_config``) or
            ``"pointbert"`` (the PointLLM-style encoder baseline, ``encoder_config``; :mod:`enel.model.baseline`).
        encoder_config: :class:`PointBertConfig` as a dict, with ``point_encoder="pointbert"`` only (None otherwise).
        objective_config: :class:`~enel.model.objectives.ObjectiveConfig` as a dict (stage-1 self-supervised losses).
        aggregation_config: :class:`~enel.model.aggregation.AggregationConfig` as a dict (stage-2 aggregation).
        point_patch_token_id, point_start_token_id, point_end_token_id: ids of the special tokens in the tokenizer.
        conversation_template: ``"chat"`` (the backbone tokenizer's own chat template) or ``"vicuna_v1_1"``.
        backbone: provenance, the backbone spec the model was built from.
        training_state: what training the weights have seen, e.g. ``{"stage": 1, "steps": 400}``; an empty dict
            marks a freshly initialised model whose text means nothing yet.
    """

    model_type = "enel"
    sub_configs_defaults = {"text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama")}

    text_config: dict | PreTrainedConfig | None = None
    point_config: dict | None = None
    objective_config: dict | None = None
    aggregation_config: dict | None = None
    point_encoder: str = "embedding"
    encoder_config: dict | None = None
    point_patch_token_id: int = -1
    point_start_token_id: int = -1
    point_end_token_id: int = -1
    conversation_template: str = "chat"
    backbone: str = ""
    training_state: dict | None = None
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if not self.tie_word_embeddings and getattr(self.text_config, "tie_word_embeddings", False):
            self.tie_word_embeddings = True
        self.point_config = PointEmbeddingConfig.from_dict(self.point_config).to_dict()
        self.objective_config = ObjectiveConfig.from_dict(self.objective_config).to_dict()
        self.aggregation_config = AggregationConfig.from_dict(self.aggregation_config).to_dict()
        if self.point_encoder not in POINT_ENCODERS:
            raise ConfigError(f"point_encoder must be one of {list(POINT_ENCODERS)}, not {self.point_encoder!r}")
        if self.point_encoder == "pointbert":
            self.encoder_config = PointBertConfig.from_spec(self.encoder_config).to_dict()
        elif self.encoder_config is not None:
            raise ConfigError("encoder_config sizes the PointLLM-style encoder: set point_encoder='pointbert' too")
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
    def encoder(self) -> PointBertConfig:
        """The baseline encoder's sizes (``point_encoder="pointbert"`` only)."""
        if self.point_encoder != "pointbert":
            raise ConfigError(f"this model's point path is {self.point_encoder!r}; it has no encoder_config")
        return PointBertConfig.from_dict(self.encoder_config)

    @property
    def num_point_tokens(self) -> int:
        return self.encoder.num_tokens if self.point_encoder == "pointbert" else self.point.num_tokens

    @property
    def is_trained(self) -> bool:
        return bool(self.training_state and self.training_state.get("steps", 0) > 0)
