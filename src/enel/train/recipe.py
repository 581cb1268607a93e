"""Training recipes: dataclasses loaded from YAML, with ``section.key=value`` overrides from the command line.

A recipe names everything one training stage needs: where the model starts (a backbone for stage 1, a stage-1
folder for stage 2), the objective or aggregation settings, the data, the optimiser and the trainer settings.
Bundled recipes live in ``configs/`` (``enel train --recipe smollm2_stage1``); any YAML path works too.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

from ..errors import ConfigError

__all__ = ["Recipe", "DataSection", "OptimSection", "TrainSection", "load_recipe", "bundled_recipes", "RECIPE_DIR"]

RECIPE_DIR = Path(__file__).resolve().parent.parent / "configs"


@dataclass
class DataSection:
    """Where the PointLLM-layout data lives.

    Attributes:
        root: dataset folder (``enel data synth`` output or a PointLLM data folder); other paths are relative to it.
        anno: annotation JSON files used for training.
        points: folder of the ``{object_id}_8192.npy`` files.
        point_file_pattern: file name of one object's cloud.
        conversation_types: keep only these PointLLM conversation types (None: all).
        preview: a benchmark GT JSON whose first objects get captioned during training (periodic check).
        num_points: resample clouds to this many points (None: the model's ``point_config.num_points``).
        max_length: longest token sequence; longer conversations are cut after the point block.
        encode_upfront: tokenise every sample when the dataset is built (fast training, ~2 ms per sample up
            front); turn it off for PointLLM's 660K stage-1 file, where it would take ~20 minutes.
        pack_per_object: join up to this many conversations of one object into one multi-turn sample, so the
            point block is processed once for several answers (1: PointLLM's one conversation per sample).
        weight: mixing weight of this PointLLM-layout source when other sources are mixed in.
        augment: training augmentation of this source's clouds (``PointLLMDataset``'s ``augment``): ``true`` for
            a random heading about the up axis, a mapping of ``yaw_degrees`` / ``scale`` / ``jitter``, or
            ``false`` / ``null`` (the stored clouds as they are).
        modelnet40: a second source, ModelNet40 with grounded conversations
            (:mod:`enel.data.modelnet_conversations`), mixed in when its ``weight`` is above 0: ``path`` (an
            archive: ``enel data modelnet40`` output or the shared ``modelnet40_1024_train.npz``), ``weight``,
            ``kinds`` (conversation kinds), ``identify`` (identify requests per object), ``val_fraction`` and
            ``split_seed`` (the validation split carved out and never trained on), ``augment`` (yaw, scale,
            jitter and input-resolution augmentation, or false), ``balance`` (every class gives the same number
            of samples).
        length: samples per epoch of the mixture (None: the sources' sizes added up).
    """

    root: str = "data/procedural"
    anno: list[str] = field(default_factory=lambda: ["anno/brief_train.json"])
    points: str = "8192_npy"
    point_file_pattern: str = "{object_id}_8192.npy"
    conversation_types: list[str] | None = None
    preview: str | None = "anno/benchmark_val_GT.json"
    num_points: int | None = None
    max_length: int = 512
    encode_upfront: bool = True
    pack_per_object: int = 1
    weight: float = 1.0
    augment: bool | dict | None = None
    modelnet40: dict = field(default_factory=lambda: dict(MODELNET40_DEFAULTS))
    length: int | None = None

    def __post_init__(self):
        if not isinstance(self.modelnet40, dict):
            raise ConfigError(f"data.modelnet40 must be a mapping of {sorted(MODELNET40_DEFAULTS)}")
        self.modelnet40 = {**MODELNET40_DEFAULTS, **self.modelnet40}
        from ..data.errors import DatasetError
        from ..data.modelnet_conversations import AUGMENT_DEFAULTS
        from ..data.pointllm import HEADING_AUGMENT, resolve_augment

        for key, value, defaults in (("data.augment", self.augment, HEADING_AUGMENT),
                                     ("data.modelnet40.augment", self.modelnet40["augment"], AUGMENT_DEFAULTS)):
            try:
                resolve_augment(value, defaults)
            except DatasetError as exc:
                raise ConfigError(f"{key}: {exc}") from None


ENCODER_PRETRAIN_DEFAULTS: dict = {"steps": 0, "batch_size": 8, "lr": 1e-3, "weight_decay": 0.05, "mask_ratio": 0.6,
                             "decoder_depth": 2, "clouds": 512}
"""``encoder_pretrain`` when a recipe does not say: no masked point modelling before stage 1."""

PREALIGN_DEFAULTS: dict = {"steps": 0, "batch_size": 64, "lr": 2e-3, "warmup_steps": 20}
"""``word_prealign`` when a recipe does not say: no class-word pre-alignment before stage 1."""

MODELNET40_DEFAULTS: dict = {"path": None, "weight": 0.0, "kinds": ["grounding"], "identify": 2,
                             "val_fraction": 0.1, "split_seed": 0, "augment": True, "balance": False}
"""``data.modelnet40`` when a recipe does not say: no ModelNet40 in the mix."""


@dataclass
class OptimSection:
    """Optimiser and schedule: AdamW, cosine with warm-up, separate rates for new modules and LLM weights."""

    lr_new: float = 4e-4
    lr_llm: float = 4e-4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    scheduler: str = "cosine"
    max_grad_norm: float = 1.0


@dataclass
class TrainSection:
    """Trainer settings (mapped onto ``transformers.TrainingArguments``).

    ``attn_implementation`` (``eager`` / ``sdpa`` / ``null``) switches the LLM's attention kernel for this run
    only; the saved model keeps the implementation it was loaded with. On the 2-core CPU the eager kernel takes
    0.76× SDPA's time for a stage-1 forward + backward of the small default (docs/training.md), the same maths.
    """

    output_dir: str = "runs/train"
    epochs: float = 3.0
    max_steps: int = -1
    max_minutes: float | None = None
    batch_size: int = 8
    grad_accum: int = 1
    bf16: str = "auto"
    gradient_checkpointing: bool = False
    save_steps: int = 100
    save_total_limit: int = 2
    logging_steps: int = 10
    point_reliance: bool = True
    preview_every: int = 0
    preview_samples: int = 3
    seed: int = 0
    dataloader_workers: int = 0
    fsdp: str = ""
    fsdp_config: dict | None = None
    deepspeed: str | None = None
    ddp_backend: str | None = None
    threads: int | None = None
    attn_implementation: str | None = None


ATTN_IMPLEMENTATIONS = ("eager", "sdpa")
"""What ``train.attn_implementation`` accepts (``null`` keeps the model's own, SDPA for the backbones here)."""


@dataclass
class Recipe:
    """One training stage.

    Attributes:
        name: a label for logs and the model's ``training_state``.
        stage: 1 (LLM-embedded semantic encoding) or 2 (hierarchical geometry aggregation / instruction tuning).
        backbone: stage 1 starts from this backbone (``smollm2``, ``tiny-llama``, a local HF folder).
        init_from: start from this ENEL model folder instead (stage 2: the stage-1 output).
        point_config: embedding preset (``small`` / ``paper``) or a dict of fields, where ``preset: small``
            starts from that preset (only for a new model).
        conversation_template: ``chat``, ``chat_no_system`` or ``vicuna_v1_1`` (only for a new model).
        objective: stage-1 objective settings (``ObjectiveConfig`` fields).
        aggregation: stage-2 aggregation settings (``AggregationConfig`` fields).
        trainable_layers: stage 1: the first K decoder layers train (paper: 4).
        point_encoder: ``embedding`` (ENEL) or ``pointbert`` (the PointLLM-style encoder baseline; only for a new
            model: a folder keeps its own).
        encoder_config: the baseline encoder's preset (``small`` / ``paper``) or a dict of fields.
        encoder_pretrain: masked point modelling of the baseline's encoder before stage 1, on clouds of the
            training data (:func:`enel.model.baseline.pretrain_mae`): ``steps`` (0: none), ``batch_size``, ``lr``,
            ``weight_decay``, ``mask_ratio``, ``decoder_depth``, ``clouds`` (how many training clouds it draws from).
        word_prealign: the class-word alignment of the point embedding alone before stage 1
            (:mod:`enel.train.prealign`): ``steps`` (0: none), ``batch_size``, ``lr``, ``warmup_steps``.
    """

    name: str = "recipe"
    stage: int = 1
    backbone: str = "smollm2"
    init_from: str | None = None
    point_config: str | dict = "small"
    conversation_template: str = "chat"
    objective: dict = field(default_factory=lambda: {"name": "hybrid"})
    aggregation: dict = field(default_factory=lambda: {"enabled": False})
    trainable_layers: int = 4
    point_encoder: str = "embedding"
    encoder_config: str | dict = "small"
    encoder_pretrain: dict = field(default_factory=lambda: dict(ENCODER_PRETRAIN_DEFAULTS))
    word_prealign: dict = field(default_factory=lambda: dict(PREALIGN_DEFAULTS))
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    train: TrainSection = field(default_factory=TrainSection)

    def validate(self) -> None:
        if self.stage not in (1, 2):
            raise ConfigError(f"recipe stage must be 1 or 2, not {self.stage!r}")
        if self.stage == 2 and (self.objective.get("name", "none") != "none" or self.objective.get("word_align", 0)):
            raise ConfigError("stage 2 turns the stage-1 objectives off: set objective.name=none and leave "
                              "objective.word_align out")
        if self.point_encoder not in ("embedding", "pointbert"):
            raise ConfigError(f"point_encoder must be embedding or pointbert, not {self.point_encoder!r}")
        if self.point_encoder == "pointbert" and self.objective.get("name", "none") != "none":
            raise ConfigError("the PointLLM-style encoder baseline trains with the caption loss alone: set "
                              "objective.name=none")
        if not isinstance(self.encoder_pretrain, dict) or set(self.encoder_pretrain) - set(ENCODER_PRETRAIN_DEFAULTS):
            raise ConfigError(f"encoder_pretrain takes the keys {sorted(ENCODER_PRETRAIN_DEFAULTS)}, "
                              f"not {self.encoder_pretrain!r}")
        self.encoder_pretrain = {**ENCODER_PRETRAIN_DEFAULTS, **self.encoder_pretrain}
        if int(self.encoder_pretrain["steps"]) < 0 or int(self.encoder_pretrain["clouds"]) < 1:
            raise ConfigError("encoder_pretrain.steps must be 0 or more and encoder_pretrain.clouds at least 1")
        if int(self.encoder_pretrain["steps"]) and self.point_encoder != "pointbert":
            raise ConfigError("encoder_pretrain pre-trains the baseline's encoder: set point_encoder=pointbert")
        self._validate_prealign()
        if self.train.bf16 not in ("auto", "true", "false", True, False):
            raise ConfigError(f"train.bf16 must be auto, true or false, not {self.train.bf16!r}")
        if self.train.batch_size < 1 or self.train.grad_accum < 1:
            raise ConfigError("train.batch_size and train.grad_accum must be at least 1")
        if self.train.attn_implementation not in (None, *ATTN_IMPLEMENTATIONS):
            raise ConfigError(
                f"train.attn_implementation must be one of {', '.join(ATTN_IMPLEMENTATIONS)} or null (the model's "
                f"own), not {self.train.attn_implementation!r}"
            )
        if self.optim.lr_new <= 0 or self.optim.lr_llm < 0:
            raise ConfigError("learning rates must be positive")
        if not self.data.anno and not self.data.modelnet40.get("weight"):
            raise ConfigError("data.anno lists no annotation file to train on")
        bad = sorted(set(self.data.modelnet40) - set(MODELNET40_DEFAULTS))
        if bad:
            raise ConfigError(f"unknown key(s) {bad} in data.modelnet40; known: {sorted(MODELNET40_DEFAULTS)}")
        mn = self.data.modelnet40
        if mn.get("weight", 0) and not mn.get("path"):
            raise ConfigError(
                "data.modelnet40.weight mixes in ModelNet40 but data.modelnet40.path names no archive: import one "
                "with `enel data modelnet40 --from FILE` and set data.modelnet40.path=data/modelnet40/"
                "modelnet40_train.npz"
            )
        if self.data.weight < 0 or float(mn.get("weight", 0)) < 0:
            raise ConfigError("data.weight and data.modelnet40.weight are mixing weights: non-negative numbers")
        if not isinstance(mn["balance"], bool):
            raise ConfigError(f"data.modelnet40.balance must be true or false, not {mn['balance']!r}")

    def _validate_prealign(self) -> None:
        p = self.word_prealign
        if not isinstance(p, dict) or set(p) - set(PREALIGN_DEFAULTS):
            raise ConfigError(f"word_prealign takes the keys {sorted(PREALIGN_DEFAULTS)}, not {p!r}")
        p = {**PREALIGN_DEFAULTS, **p}
        try:  # YAML reads 1e-3 (no dot) as a string
            numbers = {k: float(v) for k, v in p.items() if not isinstance(v, bool)}
        except (TypeError, ValueError):
            numbers = {}
        if (len(numbers) != len(p) or not all(math.isfinite(v) for v in numbers.values())
                or any(numbers[k] != int(numbers[k]) for k in ("steps", "batch_size", "warmup_steps"))):
            raise ConfigError(f"word_prealign: steps, batch_size and warmup_steps are whole numbers and lr a number, "
                              f"not {p!r}")
        p = self.word_prealign = {k: numbers[k] if k == "lr" else int(numbers[k]) for k in p}
        if p["steps"] < 0 or p["batch_size"] < 1 or p["warmup_steps"] < 0 or p["lr"] <= 0:
            raise ConfigError("word_prealign: steps and warmup_steps must be 0 or more, batch_size at least 1 and lr "
                              f"positive, not {p!r}")
        if not p["steps"]:
            return
        if self.stage != 1 or self.point_encoder != "embedding":
            raise ConfigError("word_prealign aligns ENEL's point embedding before stage 1: use it in a stage-1 recipe "
                              "with point_encoder=embedding, or set word_prealign.steps=0")
        if not float(self.objective.get("word_align", 0)):
            raise ConfigError("word_prealign pre-trains for the class-word alignment: set objective.word_align > 0 "
                              "(it also gives the procedural data its class words), or set word_prealign.steps=0")

    def to_dict(self) -> dict:
        return asdict(self)


_SECTIONS = {"data": DataSection, "optim": OptimSection, "train": TrainSection}


REMOVED_KEYS = {
    ("train", "color_skip_from"): (0.0, "holding the colour skip off for the first part of the run (0.4: 83 % category "
                                        "/ 48 % colour) gave less than the skip after the projector (93 % / 85 %)"),
}
"""Recipe keys removed after enel 0.1.0: ``{(section, key): (the value that meant "off", why)}``."""


def _drop_removed(section: dict, name: str, source: str) -> dict:
    """``section`` without its removed keys; a removed key set to anything but "off" raises ``ConfigError``."""
    kept = dict(section)
    for (sec, key), (off, why) in REMOVED_KEYS.items():
        if sec == name and key in kept and kept.pop(key) != off:
            raise ConfigError(f"{source}: {name}.{key} was removed after enel 0.1.0 ({why}; docs/training.md); "
                              f"delete it from the recipe, or run this recipe with enel 0.1.0")
    return kept


def _coerce(value: str, current):
    """Parse an override value: YAML scalars (numbers, bools, null, lists) with the current type as a hint."""
    if isinstance(current, str):  # string fields take the text as it is (patterns like {object_id}_8192.npy)
        return None if value in ("null", "None", "~") else value
    try:
        parsed = yaml.safe_load(value) if value != "" else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot parse override value {value!r}: {exc}") from None
    if isinstance(current, str) and not isinstance(parsed, str) and parsed is not None:
        return value
    return parsed


def _check_types(obj, where: str) -> None:
    """Coerce numeric strings (YAML 1.1 reads ``1e-4`` as a string) and refuse values of the wrong type."""
    for f in fields(obj):
        default = f.default if f.default is not dataclasses.MISSING else None
        value = getattr(obj, f.name)
        if value is None or default is None or isinstance(default, bool):
            if isinstance(default, bool) and not isinstance(value, bool):
                raise ConfigError(f"{where}.{f.name} must be true or false, not {value!r}")
            continue
        if isinstance(default, (int, float)):
            try:
                number = float(value) if isinstance(default, float) else int(value)
            except (TypeError, ValueError):
                raise ConfigError(f"{where}.{f.name} must be a number, not {value!r}") from None
            if isinstance(default, int) and float(value) != number:
                raise ConfigError(f"{where}.{f.name} must be a whole number, not {value!r}")
            setattr(obj, f.name, number)


def _build(data: dict, source: str) -> Recipe:
    known = {f.name for f in fields(Recipe)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown recipe key(s) {unknown}; known keys: {sorted(known)}")
    kwargs = dict(data)
    for name, cls in _SECTIONS.items():
        section = kwargs.get(name) or {}
        if not isinstance(section, dict):
            raise ConfigError(f"{source}: '{name}' must be a mapping")
        section = _drop_removed(section, name, source)
        sec_known = {f.name for f in fields(cls)}
        bad = sorted(set(section) - sec_known)
        if bad:
            raise ConfigError(f"{source}: unknown key(s) {bad} in '{name}'; known: {sorted(sec_known)}")
        try:
            kwargs[name] = cls(**section)
        except TypeError as exc:
            raise ConfigError(f"{source}: bad '{name}' section: {exc}") from None
    try:
        recipe = Recipe(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    for name in _SECTIONS:
        _check_types(getattr(recipe, name), f"{source}: {name}")
    _check_types(recipe, source)
    recipe.validate()
    return recipe


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``key=value`` / ``section.key=value`` strings to a recipe dict (a new dict is returned)."""
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    defaults = asdict(Recipe())
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value (e.g. train.batch_size=4)")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        if parts[0] not in defaults:
            raise ConfigError(f"override {item!r}: unknown key {parts[0]!r}; known: {sorted(defaults)}")
        target, default = data, defaults
        for p in parts[:-1]:
            if p in ("point_config", "encoder_config") and target is data:  # a preset name or a dict: p.FIELD=VALUE
                current = data.get(p) or defaults[p]  # None means the default preset, as in from_spec
                data[p] = dict(current) if isinstance(current, dict) else {"preset": current}
                target, default = data[p], {}
                continue
            if not isinstance(default, dict) or p not in default:
                raise ConfigError(f"override {item!r}: {p!r} is not a section")
            target = target.setdefault(p, {})
            default = default[p]
        leaf = parts[-1]
        if isinstance(default, dict) and parts[0] in _SECTIONS and leaf not in default:
            raise ConfigError(f"override {item!r}: unknown key {leaf!r}; known: {sorted(default)}")
        target[leaf] = _coerce(value, default.get(leaf) if isinstance(default, dict) else None)
    return data


def bundled_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def resolve_recipe_path(name_or_path: str | os.PathLike) -> Path:
    path = Path(name_or_path)
    if path.is_file():
        return path
    candidate = RECIPE_DIR / f"{name_or_path}.yaml"
    if candidate.is_file():
        return candidate
    raise ConfigError(f"recipe {str(name_or_path)!r} not found: give a YAML path or one of {bundled_recipes()}")


def load_recipe(name_or_path: str | os.PathLike, overrides: list[str] | None = None) -> Recipe:
    """Read a recipe (a bundled name or a YAML path) and apply overrides."""
    path = resolve_recipe_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of recipe keys")
    return _build(apply_overrides(data, overrides or []), str(path))


def recipe_from_dict(data: dict, overrides: list[str] | None = None) -> Recipe:
    return _build(apply_overrides(data, overrides or []), "recipe")


def replace(recipe: Recipe, **changes) -> Recipe:
    return dataclasses.replace(recipe, **changes)
