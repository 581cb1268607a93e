"""ENEL's configuration: ``EnelConfig`` and the three parts it nests, with no torch and no numba at import.

* :class:`PointEmbeddingConfig`: the point token embedding and the projector (``EnelConfig.point_config``);
* :class:`ObjectiveConfig`: the stage-1 self-supervised objectives (``EnelConfig.objective_config``);
* :class:`AggregationConfig`: the stage-2 hierarchical geometry aggregation (``EnelConfig.aggregation_config``);
* :class:`PointBertConfig`: the PointLLM-style encoder baseline that replaces the token embedding when
  ``EnelConfig.point_encoder`` is ``"pointbert"`` (``EnelConfig.encoder_config``).

Nested parts are stored as plain dicts (so ``config.json`` stays readable) and read as dataclasses through
:attr:`EnelConfig.point`, :attr:`EnelConfig.objective` and :attr:`EnelConfig.aggregation`, parsed once and again
only when the dicts change. Every rule on a field, and every rule between fields (the objective with the
aggregation, the objective's head layer with the backbone's depth), is checked here and raises a
:class:`~enel.errors.ConfigError` naming the field and the fix; the modules built from a config trust it.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field, fields
from typing import ClassVar, TypeVar

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from ..errors import ConfigError

__all__ = [
    "EnelConfig", "PointEmbeddingConfig", "ObjectiveConfig", "AggregationConfig", "PointBertConfig", "SubConfig",
    "OBJECTIVES", "POINT_ENCODERS",
    "POINT_PATCH_TOKEN", "POINT_START_TOKEN", "POINT_END_TOKEN", "POINT_PLACEHOLDER",
]

T = TypeVar("T", bound="SubConfig")


class SubConfig:
    """The dict round trip shared by the parts ``EnelConfig`` nests: unknown keys are refused with the list of known
    ones, and every instance is validated when it is built. Subclasses are ``@dataclass`` es that set ``kind`` (used in
    error messages) and ``validate()``."""

    kind: ClassVar[str] = "config"
    removed: ClassVar[dict] = {}
    """Options that were removed: ``{name: (accepts(value, data) -> bool, why)}``. A saved value that ``accepts``
    (the value that meant "off") is dropped; any other is refused with ``why`` and the fix."""

    @classmethod
    def from_dict(cls: type[T], data: dict | None) -> T:
        """Build and validate from a plain dict (``None`` → the defaults); unknown keys raise ``ConfigError``."""
        data = dict(data or {})
        for name, (accepts, why) in cls.removed.items():
            if name in data and not accepts(data[name], data):
                raise ConfigError(
                    f"this {cls.kind} config sets {name}={data[name]!r}, an option removed after enel 0.1.0 ({why}; "
                    f"docs/training.md); retrain without it, or load this model with enel 0.1.0"
                )
        data = {k: v for k, v in data.items() if k not in cls.removed}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown {cls.kind} field(s) {unknown}; known fields: {sorted(known)}")
        return cls(**data)

    def __post_init__(self) -> None:
        self.validate()

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> None:  # pragma: no cover - every subclass overrides it
        """Raise ``ConfigError`` naming the bad field and its allowed values."""


@dataclass
class PointEmbeddingConfig(SubConfig):
    """Every size of the token embedding and the projector.

    Attributes:
        use_color: feed xyz + rgb (6 channels) or xyz only (3).
        embed_dim: width of the raw-point embedding (paper: 288).
        num_stages: FPS + kNN stages (paper: 3).
        group_size: k, neighbours per centre, the same for every stage (paper: 81).
        input_points: sets the centre counts: stage ``i`` keeps ``input_points // 2**(i+1)`` centres
            (paper: 1024 → 512, 256, 128).
        dim_expansion: width multiplier per stage (paper: 2 → 576, 1152, 2304).
        lga_blocks: residual bottleneck blocks per stage (released: 1).
        pos_alpha, pos_beta: frequencies of the positional encoding; the released LGA overrides both to 1,
            which makes the encoding plain ``sin(xyz)`` / ``cos(xyz)`` of the normalised offsets.
        pooling: ``"max"`` (released) or ``"maxmean"`` (max + mean over the neighbours).
        std_mode: ``"sample"`` (ours: per-sample std) or ``"batch"`` (released: one std for the batch).
        fps_random_start: in training only, start each FPS at a random index (the released behaviour);
            evaluation always starts at index 0.
        color_skip: ours, off in the released configuration. Adds ``Linear(3 → hidden)`` of each geometric token's
            patch colour (the mean rgb of the ``group_size`` input points nearest its centre, centred on 0.5) to
            that token after the projector, in the LLM's width, so the projector's GELUs never mix the colour into
            the geometry. The three stages mix colour with geometry and max-pool it away: linear probes on the CPU
            default found a cloud's main colour in 86 % of held-out clouds after stage 1 of the embedding but in
            35 % after stage 3 (docs/training.md, "Where the colour goes"); stage 1 of the CPU default with the
            skip: 93 % category / 85 % colour (docs/training.md, "The colour skip after the projector"). The
            weights live in :class:`~enel.model.embedding.PointProjector`. Needs ``use_color``.
        projector_hidden: hidden widths of the projector MLP (paper: [1024, 2048]).
        num_points: the resolution loaders and the CLI resample clouds to before embedding (paper: 8192).
            The embedding itself accepts any number of points.
        match_token_scale: ours, not the paper's. :meth:`EnelForCausalLM.from_backbone` scales the projector's last
            layer once so that a new model's point tokens start at the RMS of the backbone's word embeddings (on
            SmolLM2 the usual N(0, 0.02) init leaves them ~8× smaller, and the first hundreds of steps go into growing
            them). It applies to every backbone, the 7B recipes included; ``False`` keeps the plain initialisation
            (the released code's).
        class_token_std: a new model's class token starts at N(0, class_token_std²) (1.0).
        color_skip_std: a new model's colour skip starts at N(0, color_skip_std²), bias 0 (0.12: measured on
            SmolLM2, whose word embeddings have RMS 0.136 and whose geometric point tokens vary by ~0.04 RMS around
            their mean; at 0.024 stage 1 never read the colour, 18 %, at 0.12 it did, 85 %, and kept the category,
            93 %; docs/training.md, "The colour skip after the projector").

    Options removed after enel 0.1.0 (``class_token``, ``color_skip_at``, ``color_token``): a saved config that
    carries one at the value that means "off" loads; any other value is refused with the reason and the fix.
    """

    kind: ClassVar[str] = "point embedding"
    removed: ClassVar[dict] = {
        "class_token": (lambda value, data: value == "learned",
                        "class_token='pooled' (the learned class token plus the max over the geometric tokens) did "
                        "not help: 71.1 % category against 77.2 % with the learned token on the CPU default"),
        "color_token": (lambda value, data: value is False,
                        "color_token (a colour histogram in the class token) split the difference: 75 % category / "
                        "48 % colour, where the colour skip after the projector gives 93 % / 85 %"),
        "color_skip_at": (lambda value, data: value == "llm" or not data.get("color_skip"),
                          "color_skip_at='features' (the colour skip before the projector) traded the category for "
                          "the colour (63 % / 92 % at its default scale); the skip now always adds after the "
                          "projector, as color_skip_at='llm' did (93 % / 85 %)"),
    }

    use_color: bool = True
    embed_dim: int = 288
    num_stages: int = 3
    group_size: int = 81
    input_points: int = 1024
    dim_expansion: int = 2
    lga_blocks: int = 1
    pos_alpha: float = 1.0
    pos_beta: float = 1.0
    pooling: str = "max"
    std_mode: str = "sample"
    fps_random_start: bool = False
    color_skip: bool = False
    projector_hidden: list[int] = field(default_factory=lambda: [1024, 2048])
    num_points: int = 8192
    match_token_scale: bool = True
    class_token_std: float = 1.0
    color_skip_std: float = 0.12

    # ---- presets ------------------------------------------------------------------------------------------
    @classmethod
    def paper(cls, **overrides) -> "PointEmbeddingConfig":
        """The released configuration: 288 → 576/1152/2304, k = 81, 8192 input points (≈ 14 M + 13 M params)."""
        return cls(**overrides)

    @classmethod
    def small(cls, **overrides) -> "PointEmbeddingConfig":
        """The CPU configuration: 48 → 96/192/384, k = 16, 2048 input points, still 128 + 1 tokens."""
        base = dict(embed_dim=48, group_size=16, projector_hidden=[576, 576], num_points=2048)
        base.update(overrides)
        return cls(**base)

    @classmethod
    def preset(cls, name: str, **overrides) -> "PointEmbeddingConfig":
        presets = {"paper": cls.paper, "small": cls.small}
        if name not in presets:
            raise ConfigError(f"unknown point embedding preset {name!r}; choose one of {sorted(presets)}")
        return presets[name](**overrides)

    @classmethod
    def from_spec(cls, spec) -> "PointEmbeddingConfig":
        """A config from what recipes and ``from_backbone`` accept: ``None`` (the ``small`` preset), a preset
        name, a dict of fields (a ``preset`` key starts from that preset, the other keys override it), or a
        ``PointEmbeddingConfig``."""
        if spec is None or isinstance(spec, str):
            return cls.preset(spec or "small")
        if isinstance(spec, cls):
            return spec
        if not isinstance(spec, dict):
            raise ConfigError(f"point_config must be a preset name or a dict of fields, not {type(spec).__name__}")
        fields_ = dict(spec)
        if "preset" in fields_:
            cfg = cls.preset(fields_.pop("preset"))
            return cls.from_dict({**cfg.to_dict(), **fields_})
        return cls.from_dict(fields_)

    # ---- derived sizes ------------------------------------------------------------------------------------
    @property
    def in_channels(self) -> int:
        return 6 if self.use_color else 3

    @property
    def stage_centres(self) -> list[int]:
        return [self.input_points // 2 ** (i + 1) for i in range(self.num_stages)]

    @property
    def stage_dims(self) -> list[int]:
        return [self.embed_dim * self.dim_expansion ** (i + 1) for i in range(self.num_stages)]

    @property
    def output_dim(self) -> int:
        return self.stage_dims[-1]

    @property
    def num_tokens(self) -> int:
        """Point tokens handed to the LLM: the geometric tokens plus the class token (paper: 129)."""
        return self.stage_centres[-1] + 1

    @property
    def min_points(self) -> int:
        """Fewest input points the first stage can group without padding."""
        return max(self.stage_centres[0], self.group_size)

    def validate(self) -> None:
        for name in ("embed_dim", "input_points", "num_points"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be a positive integer, not {getattr(self, name)}")
        if self.lga_blocks < 0:
            raise ConfigError(f"lga_blocks must be 0 or more, not {self.lga_blocks}")
        if any(int(h) < 1 for h in self.projector_hidden):
            raise ConfigError(f"projector_hidden must list positive widths (or be empty), not {self.projector_hidden}")
        if self.num_stages < 1:
            raise ConfigError("num_stages must be at least 1")
        if self.dim_expansion != 2:
            raise ConfigError("dim_expansion must be 2: the feature expansion concatenates two halves")
        centres = self.stage_centres
        if centres[-1] < 1:
            raise ConfigError(f"input_points={self.input_points} leaves no centres after {self.num_stages} stages")
        for prev, nxt in zip(centres, centres[1:]):
            if self.group_size > prev:
                raise ConfigError(f"group_size={self.group_size} exceeds the {prev} centres of an earlier stage")
        for dim in self.stage_dims:
            if dim % 6:
                raise ConfigError(
                    f"stage width {dim} is not divisible by 6 (sin and cos of 3 coordinates); pick an embed_dim "
                    "divisible by 3"
                )
        if self.pooling not in ("max", "maxmean"):
            raise ConfigError(f"pooling must be 'max' or 'maxmean', not {self.pooling!r}")
        if self.color_skip and not self.use_color:
            raise ConfigError("color_skip=True needs use_color=True (it carries the points' rgb)")
        if self.std_mode not in ("sample", "batch"):
            raise ConfigError(f"std_mode must be 'sample' or 'batch', not {self.std_mode!r}")
        if self.group_size < 2:
            raise ConfigError("group_size must be at least 2 (a neighbourhood std needs two points)")
        for name in ("class_token_std", "color_skip_std"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} is a standard deviation, 0 or more, not {getattr(self, name)}")

    def flops(self, n_points: int | None = None) -> int:
        """Nominal FLOPs (2 × multiply-accumulates) of the token embedding's linear layers for one cloud.

        Counts the released layers: the raw-point embedding on ``n_points`` (default ``num_points``; clouds
        below ``min_points`` count as padded), then per stage ``linear1`` (``C → C`` on ``G·k`` positions) and
        ``lga_blocks`` bottlenecks (``C → C/2 → C``). BatchNorm, activations, FPS and kNN are not counted;
        nor is the projector (:meth:`projector_flops`).
        """
        n = max(n_points or self.num_points, self.min_points)
        total = 2 * n * self.in_channels * self.embed_dim
        for g, dim in zip(self.stage_centres, self.stage_dims):
            positions = g * self.group_size
            total += 2 * positions * dim * dim  # linear1 (2C = dim → dim)
            total += self.lga_blocks * 2 * positions * 2 * dim * (dim // 2)  # bottleneck dim → dim/2 → dim
        return total

    def projector_flops(self, hidden_size: int) -> int:
        """FLOPs of :class:`PointProjector` (``output_dim → projector_hidden… → hidden_size``) for one cloud."""
        dims = [self.output_dim, *self.projector_hidden, hidden_size]
        return sum(2 * self.num_tokens * a * b for a, b in zip(dims, dims[1:]))


OBJECTIVES = ("none", "hybrid", "masked", "reconstruction", "contrastive", "distillation")


@dataclass
class ObjectiveConfig(SubConfig):
    """Which stage-1 objective runs beside the cross-entropy, and its settings.

    Attributes:
        name: one of ``none``, ``hybrid``, ``masked``, ``reconstruction``, ``contrastive``, ``distillation``.
        mask_ratio: fraction of the geometric tokens masked (paper: 0.3; also tried 0.6).
        masked_target: what masked tokens predict, ``feature`` (MSE) or ``patch`` (Chamfer-L2).
        recon_target: what visible tokens reconstruct, ``patch`` (Chamfer-L2) or ``feature`` (MSE).
        weight_ce, weight_mask, weight_recon, weight_contrast, weight_distill: loss weights (paper: all 1).
        temperature: InfoNCE temperature.
        max_translation: translation range of the contrastive views' rigid transforms.
        head_layer: hidden states feeding the heads: ``-1`` the final ones after the final norm (paper), ``k ≥ 1``
            the output of decoder layer k (e.g. the last trainable layer, an internal variant).
        detach_targets: stop gradients through the feature targets (the released code does not).
        normalize_targets: compare features after a per-token layer norm without affine parameters (as MAE's
            normalised-pixel targets): the feature MSE then neither grows nor shrinks with the scale of the point
            tokens, which training changes (the released code compares raw features).
        per_layer_pe: add a positional encoding of each point token's 3D centre before every decoder layer.
        teacher_dim: feature width of the distillation teacher.
        mask_token_std: a new model's mask token starts at N(0, mask_token_std²); 0 (the default) starts it at zeros.
        word_align: weight of the class-word alignment (``loss_align``, our addition, not the paper's): for samples
            whose data source knows the object's class (a batch's ``point_words``), the projected point tokens are
            read as words through the backbone's own token embeddings, and some visible geometric token must read as
            the class name (:func:`enel.model.objectives.word_alignment_loss`). 0 (the default) leaves it out. It runs
            beside any objective, ``none`` included.
        word_align_temperature: temperature of that reading (cosine similarity to every token embedding / τ).
    """

    kind: ClassVar[str] = "objective"

    name: str = "none"
    mask_ratio: float = 0.3
    masked_target: str = "feature"
    recon_target: str = "patch"
    weight_ce: float = 1.0
    weight_mask: float = 1.0
    weight_recon: float = 1.0
    weight_contrast: float = 1.0
    weight_distill: float = 1.0
    temperature: float = 0.1
    max_translation: float = 0.2
    head_layer: int = -1
    detach_targets: bool = False
    normalize_targets: bool = False
    per_layer_pe: bool = False
    teacher_dim: int = 0
    mask_token_std: float = 0.0
    word_align: float = 0.0
    word_align_temperature: float = 0.05

    def validate(self) -> None:
        if self.name not in OBJECTIVES:
            raise ConfigError(f"unknown stage-1 objective {self.name!r}; choose one of {list(OBJECTIVES)}")
        if not 0.0 < self.mask_ratio < 1.0:
            raise ConfigError(f"mask_ratio must lie in (0, 1), got {self.mask_ratio}")
        for key in ("masked_target", "recon_target"):
            if getattr(self, key) not in ("feature", "patch"):
                raise ConfigError(f"{key} must be 'feature' or 'patch', not {getattr(self, key)!r}")
        if self.temperature <= 0:
            raise ConfigError("temperature must be positive")
        if self.name == "distillation" and self.teacher_dim <= 0:
            raise ConfigError("the distillation objective needs teacher_dim, the width of the teacher's features")
        if self.head_layer == 0 or self.head_layer < -1:
            raise ConfigError("head_layer is -1 (final hidden states) or a 1-based decoder layer number")
        if self.mask_token_std < 0:
            raise ConfigError(f"mask_token_std is a standard deviation, 0 or more, not {self.mask_token_std}")
        if self.word_align < 0:
            raise ConfigError(f"word_align is a loss weight, 0 (off) or more, not {self.word_align}")
        if self.word_align_temperature <= 0:
            raise ConfigError(f"word_align_temperature must be positive, not {self.word_align_temperature}")

    @property
    def masks(self) -> bool:
        return self.name in ("hybrid", "masked")

    @property
    def active(self) -> bool:
        """Whether training adds anything to the cross-entropy (an objective or the class-word alignment)."""
        return self.name != "none" or self.word_align > 0


def _paper_schedule() -> list[dict]:
    """The paper's two blocks (App. A.2) with its best H = 2 layers on the coarsest sequence (every event runs at
    the end of its layer: layers 4–5 and 14–15 of 32 see the coarsest sequence; enel.model.aggregation)."""
    return [
        {"aggregate_after": [1, 2, 3], "propagate_after": [5, 6, 7]},
        {"aggregate_after": [11, 12, 13], "propagate_after": [15, 16, 17]},
    ]


@dataclass
class AggregationConfig(SubConfig):
    """Settings of hierarchical geometry aggregation (off unless ``enabled``).

    Attributes:
        enabled: insert aggregation / propagation into the decoder.
        grouping: ``"grid"`` (v4 dynamic grid sampling) or ``"fps"`` (v1 FPS + kNN).
        schedule: blocks of ``{"aggregate_after": [...], "propagate_after": [...]}``, 1-based layer numbers,
            written for a ``reference_layers``-deep backbone; each event runs at the end of the layer it names,
            so ``propagate_after[0] − aggregate_after[-1]`` layers (the paper's H) see the coarsest sequence.
            Default: the paper's 32-layer schedule with H = 2 (aggregate after 1–3, propagate after 5–7; again
            11–13 / 15–17).
        reference_layers: the depth the schedule is written for; set it to the backbone's depth to use the
            numbers as they are.
        fps_centres: tokens kept by each FPS aggregation level (v1: 64, 32; a third level 16).
        fps_k: neighbours per centre at each FPS level (v1: 16, 8).
        grid_alpha, grid_min, grid_max: α and the clamp range ``[s_min, s_max]`` of the cell size.
        grid_theta: θ_j per level. Left empty: θ_j = 1 at every level (cells ≈ 0.063, 0.20, 0.63 for l = 3, the
            ~1/8 token reduction the paper reports), or a draw from N(0, 1) when ``grid_theta_seed`` is set.
        pooling: ``"max"``, ``"mean"`` or ``"maxmean"``.
        gate: use the ``tanh(α)`` gate (off = the paper's "− gate mechanism" ablation, the attention output is
            added with weight 1).
        attn_heads, attn_dim: heads and bottleneck width of the in-group attention.
        residual: what propagation adds to the copied-back group feature: ``"none"`` (the authors' final run),
            ``"add"`` (the token's pre-aggregation state) or ``"detail"`` (the token's pre-aggregation state minus
            its group's pooled feature).
        gate_init: the value α of every ``tanh(α)`` gate starts at in a new model (0: the attention adds nothing
            until training opens the gate).
    """

    kind: ClassVar[str] = "aggregation"

    enabled: bool = False
    grouping: str = "grid"
    schedule: list[dict] = field(default_factory=_paper_schedule)
    reference_layers: int = 32
    fps_centres: list[int] = field(default_factory=lambda: [64, 32, 16])
    fps_k: list[int] = field(default_factory=lambda: [16, 8, 4])
    grid_alpha: float = 0.02
    grid_min: float = 0.02
    grid_max: float = 1.0
    grid_theta: list[float] = field(default_factory=list)
    grid_theta_seed: int | None = None
    pooling: str = "maxmean"
    gate: bool = True
    attn_heads: int = 4
    attn_dim: int = 256
    residual: str = "none"
    gate_init: float = 0.0

    RESIDUALS: ClassVar[tuple[str, ...]] = ("none", "add", "detail")

    def __post_init__(self) -> None:
        if self.residual is False:  # configs written before the detail skip held a bool; false meant "none"
            self.residual = "none"
        elif self.residual is True:
            raise ConfigError('aggregation residual=true is the boolean spelling removed after enel 0.1.0; it meant '
                              '"add": write residual: "add" (the same skip) in the config')
        super().__post_init__()

    @property
    def levels(self) -> int:
        """Aggregation levels per block (the paper's ``l``)."""
        return max((len(b.get("aggregate_after", [])) for b in self.schedule), default=0)

    def validate(self) -> None:
        if self.grouping not in ("grid", "fps"):
            raise ConfigError(f"aggregation grouping must be 'grid' or 'fps', not {self.grouping!r}")
        if self.pooling not in ("max", "mean", "maxmean"):
            raise ConfigError(f"aggregation pooling must be 'max', 'mean' or 'maxmean', not {self.pooling!r}")
        if not 0 < self.grid_min <= self.grid_max:
            raise ConfigError("grid cell sizes need 0 < grid_min <= grid_max")
        if self.residual not in self.RESIDUALS:
            raise ConfigError(f"aggregation residual must be one of {list(self.RESIDUALS)}, not {self.residual!r}")
        if self.attn_dim % self.attn_heads:
            raise ConfigError(f"attn_dim={self.attn_dim} is not divisible by attn_heads={self.attn_heads}")
        for block in self.schedule:
            if set(block) - {"aggregate_after", "propagate_after"}:
                raise ConfigError(
                    f"a schedule block has keys {sorted(block)}; use 'aggregate_after' and 'propagate_after'"
                )
            agg, prop = block.get("aggregate_after", []), block.get("propagate_after", [])
            if len(agg) != len(prop) or not agg:
                raise ConfigError(
                    f"schedule block {block} does not close: every aggregation needs one propagation "
                    f"({len(agg)} aggregations, {len(prop)} propagations)"
                )
        if self.grouping == "fps":
            if len(self.fps_k) != len(self.fps_centres):
                raise ConfigError("fps_centres and fps_k need one entry per aggregation level")
            if self.enabled and self.levels > len(self.fps_centres):
                raise ConfigError(
                    f"the schedule aggregates {self.levels} times per block but fps_centres has only "
                    f"{len(self.fps_centres)} levels"
                )
            prev = None
            for c, k in zip(self.fps_centres, self.fps_k):
                if c < 1 or k < 1 or (prev is not None and c > prev):
                    raise ConfigError(f"fps_centres must shrink level by level and be ≥ 1, got {self.fps_centres}")
                prev = c
        if self.grid_theta and len(self.grid_theta) < self.levels:
            raise ConfigError(f"grid_theta needs {self.levels} values, one per aggregation level")

    # ---- grid schedule -----------------------------------------------------------------------------------
    def thetas(self) -> list[float]:
        if self.grid_theta:
            return list(self.grid_theta)
        if self.grid_theta_seed is None:
            return [1.0] * self.levels
        import torch  # here, not at the top: the configuration imports no torch

        g = torch.Generator().manual_seed(self.grid_theta_seed)
        return torch.randn(self.levels, generator=g, device="cpu").tolist()  # explicit: from_pretrained builds on meta

    def cell_sizes(self) -> list[float]:
        """``s_i`` for each aggregation level i = 1..l (the same for every block)."""
        levels = self.levels
        a = self.grid_alpha
        lo, hi = math.log(self.grid_min / a), math.log(self.grid_max / a)
        gamma = (hi - lo) / (2 * levels)
        centre = (hi + lo) / (2 * levels)
        sizes, total = [], 0.0
        for theta in self.thetas()[:levels]:
            total += gamma * math.tanh(theta) + centre
            sizes.append(min(max(a * math.exp(total), self.grid_min), self.grid_max))
        return sizes


POINT_PLACEHOLDER = "<point>"
POINT_PATCH_TOKEN = "<point_patch>"
POINT_START_TOKEN = "<point_start>"
POINT_END_TOKEN = "<point_end>"


CONVERSATION_TEMPLATES = ("chat", "chat_no_system", "vicuna_v1_1")


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
        point_config: :class:`PointEmbeddingConfig` as a dict (token embedding + projector). Its ``num_points`` and
            ``use_color`` describe the input of either point path.
        point_encoder: how points become tokens: ``"embedding"`` (ENEL's token embedding, ``point_config``) or
            ``"pointbert"`` (the PointLLM-style encoder baseline, ``encoder_config``; :mod:`enel.model.baseline`).
        encoder_config: :class:`PointBertConfig` as a dict, with ``point_encoder="pointbert"`` only (None otherwise).
        objective_config: :class:`ObjectiveConfig` as a dict (stage-1 self-supervised losses).
        aggregation_config: :class:`AggregationConfig` as a dict (stage-2 aggregation).
        point_patch_token_id, point_start_token_id, point_end_token_id: ids of the special tokens in the tokenizer.
        conversation_template: ``"chat"`` (the backbone tokenizer's own chat template), ``"chat_no_system"`` (the same
            without the template's default system prompt) or ``"vicuna_v1_1"`` (:mod:`enel.data.conversation`).
        backbone: provenance, the backbone spec the model was built from.
        training_state: what training the weights have seen, e.g. ``{"stage": 1, "steps": 400}``; an empty dict
            marks a freshly initialised model whose text means nothing yet.
        per_layer_pe: add a positional encoding of each point token's 3D centre before every decoder layer (the
            model's own module, so it stays when stage 2 drops the stage-1 objectives); set from the objective's
            ``per_layer_pe``, where stage-1 configs ask for it.

    The embeddings of the three point special tokens start at N(0, ``text_config.initializer_range``²) like every
    other new linear layer (``from_backbone`` then sets them to the mean word embedding).
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
    per_layer_pe: bool = False

    _PARSED: ClassVar[str] = "_enel_parsed_parts"  # where the parsed parts are kept (never serialised)

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if not self.tie_word_embeddings and getattr(self.text_config, "tie_word_embeddings", False):
            self.tie_word_embeddings = True
        if self.conversation_template not in CONVERSATION_TEMPLATES:
            raise ConfigError(f"conversation_template must be one of {list(CONVERSATION_TEMPLATES)}, "
                              f"not {self.conversation_template!r}")
        if self.point_encoder not in POINT_ENCODERS:
            raise ConfigError(f"point_encoder must be one of {list(POINT_ENCODERS)}, not {self.point_encoder!r}")
        if self.point_encoder == "pointbert":
            self.encoder_config = PointBertConfig.from_spec(self.encoder_config).to_dict()
        elif self.encoder_config is not None:
            raise ConfigError("encoder_config sizes the PointLLM-style encoder: set point_encoder='pointbert' too")
        point, objective, aggregation = self._parts()
        self.point_config = point.to_dict()
        self.objective_config = objective.to_dict()
        self.aggregation_config = aggregation.to_dict()
        self.per_layer_pe = bool(self.per_layer_pe or objective.per_layer_pe)
        if self.training_state is None:
            self.training_state = {}

    # the parts, parsed once ---------------------------------------------------------------------------------
    def _parts(self) -> tuple[PointEmbeddingConfig, ObjectiveConfig, AggregationConfig]:
        """The three parts as dataclasses, checked together; parsed again only when one of the dicts changed
        (``from_pretrained(..., objective_config=...)`` assigns a dict after construction). Treat them as
        read-only: a change belongs in the dicts."""
        raw = (self.point_config, self.objective_config, self.aggregation_config)
        cached = self.__dict__.get(self._PARSED)
        if cached is not None and cached[0] == raw:
            return cached[1]
        parts = (PointEmbeddingConfig.from_dict(raw[0]), ObjectiveConfig.from_dict(raw[1]),
                 AggregationConfig.from_dict(raw[2]))
        self._check_parts(*parts)
        self.__dict__[self._PARSED] = (copy.deepcopy(raw), parts)
        return parts

    def _check_parts(self, point: PointEmbeddingConfig, objective: ObjectiveConfig,
                     aggregation: AggregationConfig) -> None:
        """The rules between the parts and the backbone."""
        if objective.active and aggregation.enabled:
            raise ConfigError(
                "stage-1 objectives and stage-2 aggregation cannot be combined: stage 2 turns the stage-1 "
                "objectives off (set objective_config.name='none' and leave word_align at 0)"
            )
        if objective.active and self.point_encoder == "pointbert":
            raise ConfigError("the PointLLM-style encoder baseline trains with the caption loss alone, as PointLLM: "
                              "set objective_config.name='none' (and word_align 0)")
        layers = getattr(self.text_config, "num_hidden_layers", None)
        if objective.active and layers is not None and objective.head_layer > layers:
            raise ConfigError(f"objective head_layer={objective.head_layer} but the backbone has {layers} "
                              "decoder layers (use -1 for the final hidden states)")

    def to_dict(self) -> dict:
        output = super().to_dict()
        output.pop(self._PARSED, None)
        return output

    def __eq__(self, other) -> bool:  # the cache of parsed parts is not part of the config
        return isinstance(other, EnelConfig) and self.to_dict() == other.to_dict()

    __hash__ = None

    @property
    def point(self) -> PointEmbeddingConfig:
        return self._parts()[0]

    @property
    def objective(self) -> ObjectiveConfig:
        return self._parts()[1]

    @property
    def aggregation(self) -> AggregationConfig:
        return self._parts()[2]

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
