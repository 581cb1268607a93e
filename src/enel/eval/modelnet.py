"""Scoring a model on ModelNet40 objects in PointLLM's protocol: both prompts, the first class named.

PointLLM asks every object "What is this?" (instruction type) and "This is an object of " (completion type)
and compares the answer with the label. Ours is scored by the **first** ModelNet40 class the answer names,
synonyms a person would accept included (:mod:`enel.data.labels`); the lenient rate (the label named anywhere)
is reported beside it. Both the overall accuracy and the mean per-class accuracy are given, with a per-class
table and the most frequent confusions. Clouds are fed as PointLLM feeds ModelNet40 (xyz normalised, zero rgb),
resampled to the model's resolution.

Used by the quickstart (the validation split carved from the training split, :func:`split_by_class`) and for
the zero-shot sim-to-real measure (a procedural-only model on the classes the generator also builds,
:data:`PROCEDURAL_OVERLAP`).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..data.labels import modelnet40_vocabulary
from ..data.prompts import PROMPTS
from ..errors import ConfigError
from ..inference import Assistant, GenerationSettings
from .results import ResultsFile, atomic_write_json, write_results

__all__ = ["PROCEDURAL_OVERLAP", "pick_per_class", "select_objects", "score_classification", "evaluate_modelnet"]

PROCEDURAL_OVERLAP: tuple[str, ...] = (
    "airplane", "bed", "bench", "bookshelf", "bottle", "bowl", "car", "chair", "cup", "guitar", "lamp", "laptop",
    "monitor", "sofa", "stool", "table", "vase",
)
"""The 17 ModelNet40 classes the procedural generator also builds (its "mug" is ModelNet's "cup")."""


def pick_per_class(labels: np.ndarray, indices: Sequence[int], per_class: int | None) -> np.ndarray:
    """The first ``per_class`` of ``indices`` of every class (all when ``None``), in index order."""
    indices = np.asarray(indices, dtype=np.int64)
    if per_class is None:
        return indices
    taken: Counter = Counter()
    keep = []
    for i in indices:
        c = int(labels[i])
        if taken[c] < per_class:
            taken[c] += 1
            keep.append(i)
    return np.asarray(keep, dtype=np.int64)


def select_objects(labels: np.ndarray, class_names: Sequence[str], *, split: str = "val", val_fraction: float = 0.1,
                   split_seed: int = 0, classes: str = "all", per_class: int | None = None) -> np.ndarray:
    """Indices of the objects to ask, in index order.

    Args:
        labels: ``(M,)`` class indices into ``class_names``.
        split: ``"val"`` — the validation split the recipes carve out (:func:`~enel.data.modelnet_conversations.
            split_by_class` with ``val_fraction`` and ``split_seed``); ``"train"`` — the rest of the archive, what
            the recipes train on (how well a model fits what it saw, against ``"val"``); ``"all"`` — every object.
        classes: ``"all"``, or ``"overlap"`` — only the classes of :data:`PROCEDURAL_OVERLAP`.
        per_class: at most this many objects of every class (:func:`pick_per_class`; ``None``: all).
    """
    from ..data.modelnet_conversations import split_by_class

    if split not in ("val", "train", "all"):
        raise ConfigError(f"unknown ModelNet40 split {split!r}; choose val, train or all")
    if split == "all":
        indices = np.arange(len(labels))
    else:
        train, val = split_by_class(labels, val_fraction, split_seed)
        indices = val if split == "val" else train
    if classes == "overlap":
        keep = {list(class_names).index(c) for c in PROCEDURAL_OVERLAP}
        indices = np.asarray([i for i in indices if int(labels[i]) in keep], dtype=np.int64)
    return pick_per_class(labels, indices, per_class)


def score_classification(answers: Sequence[str], truths: Sequence[str], class_names: Sequence[str]) -> dict:
    """Strict accuracy of answers against class names: overall, mean per class, per class and confusions."""
    vocab = modelnet40_vocabulary()
    predicted = [vocab.first(a) for a in answers]
    correct = [p == t for p, t in zip(predicted, truths)]
    per_class: dict[str, list[bool]] = {}
    for t, ok in zip(truths, correct):
        per_class.setdefault(t, []).append(ok)
    table = {c: {"objects": len(v), "accuracy": 100.0 * float(np.mean(v))}
             for c, v in sorted(per_class.items(), key=lambda kv: list(class_names).index(kv[0]))}
    confusions = Counter((t, p or "(no class)") for t, p, ok in zip(truths, predicted, correct) if not ok)
    n = len(answers)
    return {
        "objects": n,
        "overall_accuracy": 100.0 * float(np.mean(correct)) if n else 0.0,
        "mean_class_accuracy": float(np.mean([r["accuracy"] for r in table.values()])) if table else 0.0,
        "label_mentioned_rate": 100.0 * float(np.mean([vocab.mentions(a, t) for a, t in zip(answers, truths)]))
        if n else 0.0,
        "no_class_named": sum(p is None for p in predicted),
        "per_class": table,
        "confusions": [{"truth": t, "answer": p, "count": k} for (t, p), k in confusions.most_common(15)],
        "predicted": predicted,
    }


def evaluate_modelnet(model_dir, points: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
                      indices: Sequence[int], out_dir, *, object_ids: Sequence[str] | None = None,
                      prompts: Sequence[str] = ("what", "completion"), name: str = "modelnet40_val",
                      batch_size: int = 64, max_new_tokens: int = 16, seed: int = 0, command: str | None = None,
                      split: str | None = None, log=print) -> dict:
    """Answer ``prompts`` for the listed objects and score them; returns the summary dict.

    Args:
        points: ``(M, N, 3)`` z-up clouds; ``labels (M,)``; ``class_names``; ``indices``: the objects to ask.
        prompts: keys of :data:`enel.data.prompts.PROMPTS` (PointLLM's two classification prompts by default).
        name: file stem of the results (``{name}_{prompt}.json``) and the summary (``{name}_summary.json``).
        split: how ``indices`` were chosen, recorded in the results' metadata (e.g. ``"val"``, ``"all"``).
        batch_size: clouds per ``generate`` call; 64 asks 391 objects in 50 s where 16 took 60 s, with the same
            answers (docs/evaluation.md).

    Writes a PointLLM-format results file per prompt (``ground_truth`` the integer label, ``label_name``,
    plus ``predicted`` and ``correct``) and the summary to ``out_dir``.
    """
    from ..points.transforms import model_input, with_zero_color

    if batch_size < 1:
        raise ConfigError(f"batch_size must be positive, got {batch_size}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    indices = np.asarray(indices, dtype=np.int64)
    assistant = Assistant.from_folder(model_dir, max_new_tokens=max_new_tokens, seed=seed)
    clouds = np.stack([with_zero_color(model_input(points[i], assistant.num_points)) for i in indices])
    truths = [class_names[int(labels[i])] for i in indices]
    ids = [object_ids[i] for i in indices] if object_ids is not None else [int(i) for i in indices]
    meta = {"model": str(model_dir), "split": split, "objects": len(indices), "seed": seed, "command": command,
            "decoding": GenerationSettings(max_new_tokens=max_new_tokens, seed=seed).__dict__,
            "scoring": "first ModelNet40 class named (enel.data.labels)"}
    summary: dict = {**meta, "prompts": {}}
    for key in prompts:
        start = time.time()
        answers: list[str] = []
        for b in range(0, len(indices), batch_size):
            answers += assistant.ask(clouds[b: b + batch_size], [PROMPTS[key]] * len(clouds[b: b + batch_size]))
        scored = score_classification(answers, truths, class_names)
        records = [{"object_id": oid, "ground_truth": int(labels[i]), "model_output": a, "label_name": t,
                    "predicted": p, "correct": p == t}
                   for oid, i, a, t, p in zip(ids, indices, answers, truths, scored.pop("predicted"))]
        write_results(out_dir / f"{name}_{key}.json", ResultsFile(PROMPTS[key], records, metadata=meta))
        scored["generation_seconds"] = round(time.time() - start, 1)
        summary["prompts"][key] = {"prompt": PROMPTS[key], **scored}
        log(f"[eval] ModelNet40 {name} {PROMPTS[key]!r}: {scored['overall_accuracy']:.1f} % overall, "
            f"{scored['mean_class_accuracy']:.1f} % mean per class on {len(indices)} objects")
    atomic_write_json(out_dir / f"{name}_summary.json", summary)
    return summary
