"""ModelNet40 as training and evaluation data: conversations grounded in what is known about each shape.

A ModelNet40 object comes with a class label and a colourless cloud, nothing else. Its conversations say only
what follows from those two: the class, and what can be measured from the cloud in the project's z-up frame
(proportions: how tall against how wide and deep, whether it is flat, tall or long). No colour, part or
material is ever said. A question about colour is answered with what is true: the cloud carries none. The
clouds are fed as PointLLM feeds ModelNet40: xyz normalised (``pc_norm``) with zero rgb.

Conversation kinds, in the procedural generator's PointLLM types (:mod:`enel.data.procedural.language`):

* ``grounding`` (``single_round``; the stage-1 data): ``identify`` requests ("What is this?" and the other
  identify phrasings) → "This is a chair.", and PointLLM's completion prompt "This is an object of " →
  "a chair.";
* ``brief`` (``simple_description``): "A chair, about 1.4 times as tall as it is wide.";
* ``shape`` (``single_round``): a proportion question ("Is it taller than it is wide?") answered from the
  measured extents, and the colour question answered honestly.

Splits are carved from one archive by object, stratified by class and seeded (:func:`split_by_class`): the
official test split stays outside the project.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from ..model.configuration_enel import POINT_PLACEHOLDER
from ..points.transforms import augment_cloud, model_input, random_resolution, with_zero_color
from .conversation import encode_conversation
from .errors import DatasetError
from .mixing import balanced_order
from .pointllm import object_seed, resolve_augment
from .procedural.language import COMPLETION_PROMPT, IDENTIFY_PROMPTS

__all__ = [
    "KINDS",
    "ShapeFacts",
    "measure",
    "object_phrase",
    "class_word_ids",
    "conversations_for",
    "split_by_class",
    "AUGMENT_DEFAULTS",
    "ModelNetConversationDataset",
]

AUGMENT_DEFAULTS: dict = {"yaw_degrees": 180.0, "scale": (0.8, 1.25), "jitter": 0.01, "min_fraction": 0.5}
"""Training augmentation of real clouds: any heading about the up axis, per-axis scale, clipped jitter
(:func:`enel.points.transforms.augment_cloud`), and an input resolution between half and all the stored points
(:func:`~enel.points.transforms.random_resolution`), PointNet's recipe plus the resolution draw."""

KINDS: tuple[str, ...] = ("grounding", "brief", "shape")

BRIEF_PROMPTS: tuple[str, ...] = ("Give a short description of this object.", "Describe this object briefly.",
                                  "Summarize this 3D shape in one sentence.")
COLOR_PROMPTS: tuple[str, ...] = ("What colour is this object?", "What color is it?")
NO_COLOR_ANSWER = "This point cloud carries no colour, so its colour cannot be told."

_PHRASES = {"stairs": "a flight of stairs", "airplane": "an airplane", "xbox": "an Xbox",
            "tv stand": "a TV stand", "person": "a person"}


def object_phrase(class_name: str) -> str:
    """The class with its article: "a chair", "an airplane", "a flight of stairs"."""
    if class_name in _PHRASES:
        return _PHRASES[class_name]
    return ("an " if class_name[:1] in "aeiou" else "a ") + class_name


def class_word_ids(tokenizer, class_name: str) -> list[int]:
    """The tokens the answers use for the class, without its article: " chair", " night stand", " Xbox"."""
    words = object_phrase(class_name).split(" ", 1)[1]
    return list(tokenizer(" " + words, add_special_tokens=False)["input_ids"])


@dataclass(frozen=True)
class ShapeFacts:
    """What one cloud says about its shape, measured in the z-up frame.

    Attributes:
        height: extent along z.
        width, depth: the larger and the smaller horizontal extent (x or y).
    """

    height: float
    width: float
    depth: float

    @property
    def build(self) -> str | None:
        """"tall", "flat", "thin" (much wider than deep) or ``None`` (no clear proportion)."""
        if self.height >= 1.5 * self.width:
            return "tall"
        if self.height <= 0.35 * self.width:
            return "flat"
        if self.width >= 2.5 * self.depth:
            return "thin"
        return None

    def proportion(self) -> str:
        """"about 1.8 times as tall as it is wide", "about as tall as it is wide", …"""
        ratio = self.height / max(self.width, 1e-6)
        if 0.8 <= ratio <= 1.25:
            return "about as tall as it is wide"
        if ratio > 1:
            return f"about {ratio:.1f} times as tall as it is wide"
        return f"about {1 / ratio:.1f} times as wide as it is tall"


def measure(xyz: np.ndarray) -> ShapeFacts:
    """``(N, 3)`` z-up coordinates -> :class:`ShapeFacts` (robust extents: 1st to 99th percentile)."""
    lo, hi = np.percentile(np.asarray(xyz, dtype=np.float64), [1, 99], axis=0)
    ext = hi - lo
    horizontal = sorted((float(ext[0]), float(ext[1])))
    return ShapeFacts(height=float(ext[2]), width=horizontal[1], depth=horizontal[0])


def _brief(name: str, facts: ShapeFacts) -> str:
    """"A chair, about 1.4 times as tall as it is wide.", "A flat, low table, …", "A thin monitor, much wider than
    it is deep."."""
    thing = object_phrase(name)
    noun = thing[thing.index(" ") + 1:]
    if facts.build == "flat":
        text = f"a flat, low {noun}, {facts.proportion()}."
    elif facts.build == "thin":
        text = f"a thin {noun}, much wider than it is deep."
    else:
        text = f"{thing}, {facts.proportion()}."
    return text[0].upper() + text[1:]


def conversations_for(name: str, facts: ShapeFacts, kinds: Sequence[str], rng: np.random.Generator,
                      identify: int = 2) -> list[tuple[str, list[dict]]]:
    """The ``(conversation_type, conversation)`` records of one object, PointLLM's format."""
    def turn(q: str, a: str) -> list[dict]:
        return [{"from": "human", "value": f"{POINT_PLACEHOLDER}\n{q}"}, {"from": "gpt", "value": a}]

    out: list[tuple[str, list[dict]]] = []
    thing = object_phrase(name)
    for kind in kinds:
        if kind == "grounding":
            for i in rng.permutation(len(IDENTIFY_PROMPTS))[:identify]:
                out.append(("single_round", turn(IDENTIFY_PROMPTS[int(i)], f"This is {thing}.")))
            out.append(("single_round", turn(COMPLETION_PROMPT, f"{thing}.")))
        elif kind == "brief":
            prompt = BRIEF_PROMPTS[int(rng.integers(len(BRIEF_PROMPTS)))]
            out.append(("simple_description", turn(prompt, _brief(name, facts))))
        elif kind == "shape":
            out.append(("single_round", turn("How tall is it compared with its width?",
                                             f"It is {facts.proportion()}.")))
            out.append(("single_round", turn(COLOR_PROMPTS[int(rng.integers(len(COLOR_PROMPTS)))],
                                             NO_COLOR_ANSWER)))
        else:
            raise DatasetError(f"unknown ModelNet40 conversation kind {kind!r}; choose from {', '.join(KINDS)}")
    return out


def split_by_class(labels: np.ndarray, val_fraction: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Carve a validation split by object, stratified by class: ``(train_indices, val_indices)``, each sorted.

    Every class gives ``round(val_fraction · count)`` objects (at least one when it has two or more), drawn with
    ``seed``; the same labels and seed always give the same split.
    """
    if not 0 < val_fraction < 1:
        raise DatasetError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    val = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        k = int(round(val_fraction * len(members)))
        k = min(max(k, 1 if len(members) > 1 else 0), len(members) - 1)
        val.extend(rng.permutation(members)[:k].tolist())
    val_idx = np.sort(np.asarray(val, dtype=np.int64))
    train_idx = np.setdiff1d(np.arange(len(labels)), val_idx)
    return train_idx, val_idx


class ModelNetConversationDataset(Dataset):
    """ModelNet40 objects with their grounded conversations, tokenised for one model.

    Args:
        points: ``(M, N, 3)`` z-up clouds; ``labels (M,)``; ``class_names``; ``object_ids (M,)``.
        indices: the objects to use (a split from :func:`split_by_class`).
        tokenizer, template, num_point_tokens, max_length: as :class:`enel.data.pointllm.PointLLMDataset`.
        num_points: the model's input resolution (clouds are resampled to it, then normalised).
        kinds: conversation kinds (:data:`KINDS`).
        identify: identify requests per object in ``grounding``.
        augment: ``True`` (:data:`AUGMENT_DEFAULTS`), a dict overriding some of them, or ``None`` / ``False``:
            clouds are then the FPS subset of the stored points, the same in every epoch.
        seed: seeds the conversations' phrasing (and the balanced order).
        balance: every class gives the same number of items per epoch (:func:`enel.data.mixing.balanced_order`;
            the epoch keeps its size: small classes are repeated, large ones give a seeded subset). ModelNet40's
            classes hold 64 (bowl) to 889 (chair) training objects.

    Items: ``{"input_ids", "labels", "point_cloud" (num_points, 6) xyz + zero rgb, "object_id", "class_words"}``,
    as :class:`~enel.data.pointllm.PointLLMDataset`, plus the class name's tokens (:func:`class_word_ids`) for the
    stage-1 class-word alignment. Augmentation draws its randomness from torch's global
    generator, which the ``Trainer`` checkpoints, so a resumed run draws what an uninterrupted one would.
    """

    def __init__(self, points: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
                 object_ids: Sequence[str], indices: Sequence[int], tokenizer, *, template: str,
                 num_point_tokens: int, num_points: int, max_length: int | None = None,
                 kinds: Sequence[str] = ("grounding",), identify: int = 2, augment=None, seed: int = 0,
                 balance: bool = False):
        if not 1 <= identify <= len(IDENTIFY_PROMPTS):
            raise DatasetError(f"identify must be between 1 and {len(IDENTIFY_PROMPTS)}, got {identify}")
        self.points, self.labels = points, np.asarray(labels)
        self.class_names, self.object_ids = tuple(class_names), tuple(object_ids)
        self.num_points = int(num_points)
        self.augment = resolve_augment(augment, AUGMENT_DEFAULTS)
        ids, labs, self._object = [], [], []
        for i in np.asarray(indices, dtype=np.int64):
            name = self.class_names[int(self.labels[i])]
            rng = np.random.default_rng(object_seed(seed, self.object_ids[i]))
            facts = measure(np.asarray(points[i], dtype=np.float32))
            for _, conv in conversations_for(name, facts, kinds, rng, identify):
                enc = encode_conversation(tokenizer, conv, template=template, num_point_tokens=num_point_tokens,
                                          max_length=max_length)
                ids.append(np.asarray(enc.input_ids, dtype=np.int32))
                labs.append(np.asarray(enc.labels, dtype=np.int32))
                self._object.append(int(i))
        if not ids:
            raise DatasetError("no ModelNet40 objects selected: the split is empty")
        self._words = {c: torch.tensor(class_word_ids(tokenizer, name), dtype=torch.long)
                       for c, name in enumerate(self.class_names)}
        self._offsets = np.concatenate([[0], np.cumsum([len(a) for a in ids])])
        self._ids, self._labels = np.concatenate(ids), np.concatenate(labs)
        self._order = balanced_order(self.labels[self._object], seed=seed) if balance else None

    def __len__(self) -> int:
        return len(self._object)

    def class_words(self) -> list[torch.Tensor]:
        """The token ids ``(K_i,)`` of the names of the classes this dataset's items come from."""
        return [self._words[int(c)] for c in np.unique(self.labels[self._object])]

    def cloud(self, obj: int, rng: np.random.Generator | None = None) -> np.ndarray:
        """``(num_points, 6)`` float32 model input of object ``obj`` (augmented when ``rng`` is given)."""
        xyz = np.asarray(self.points[obj], dtype=np.float32)
        if rng is not None and self.augment is not None:
            a = self.augment
            xyz = random_resolution(xyz, rng, self.num_points, min_fraction=a["min_fraction"])
            xyz = augment_cloud(xyz, rng, yaw_degrees=a["yaw_degrees"], scale=tuple(a["scale"]), jitter=a["jitter"])
        return with_zero_color(model_input(xyz, self.num_points))

    def __getitem__(self, index: int) -> dict:
        if self._order is not None:
            index = int(self._order[index])
        lo, hi = int(self._offsets[index]), int(self._offsets[index + 1])
        obj = self._object[index]
        rng = None
        if self.augment is not None:
            rng = np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))
        return {"input_ids": torch.from_numpy(self._ids[lo:hi].astype(np.int64)),
                "labels": torch.from_numpy(self._labels[lo:hi].astype(np.int64)),
                "point_cloud": torch.from_numpy(self.cloud(obj, rng)), "object_id": self.object_ids[obj],
                "class_words": self._words[int(self.labels[obj])].clone()}
