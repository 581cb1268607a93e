"""Benchmark generation (``enel eval generate``): the model answers a benchmark, the answers become a results file.

Three sources and three tasks, each written in PointLLM's results layout (:mod:`enel.eval.results`) so that
PointLLM's evaluators read our files and :mod:`enel.eval.metrics` / :mod:`enel.eval.judge` read theirs:

================  ====================================================  =========================================
source            data                                                  tasks
================  ====================================================  =========================================
``objaverse``     PointLLM's GT JSON (``PointLLM_brief_description_val  captioning (prompt 2), classification
                  _200_GT.json``) + ``{object_id}_8192.npy`` files;      (prompts 0 and 1); qa with ``questions``
                  a questions JSON for qa
``modelnet``      ModelNet40 test split (``.npz`` from ``enel data      classification (prompts 0 and 1)
                  convert-modelnet``, or the pickle with opt-in)
``procedural``    a folder written by ``enel data synth`` and a split   captioning, classification, qa (the
                                                                        split's ``single_round`` conversations)
================  ====================================================  =========================================

Output file names are PointLLM's: ``{GT stem}_Objaverse_{task}_prompt{i}.json`` and
``ModelNet_classification_prompt{i}.json``; ours: ``procedural_{split}_{task}_prompt{i}.json``, and for QA
``{questions stem}_Objaverse_qa.json`` / ``procedural_{split}_qa.json``.

Records (PointLLM's key order first):

* Objaverse captioning / classification: ``object_id``, ``ground_truth`` (the Cap3D caption, for both tasks, as
  PointLLM's ``eval_objaverse.py``), ``model_output``.
* ModelNet40: ``object_id`` = dataset index, ``ground_truth`` = integer label, ``model_output``, ``label_name``.
* procedural: as Objaverse (``ground_truth`` = the reference caption) plus ``category``; classification records
  also carry ``correct`` (the category or a synonym is named, :func:`enel.data.procedural.match_category`).
* QA: ``object_id``, ``ground_truth`` (the reference answer, ``""`` when the questions file has none),
  ``model_output``, ``question_id``, ``question`` (+ ``question_type`` when given). The file's ``prompt`` is
  ``"{question}"``: every record carries its own question.

The ``"enel"`` block records model, source, split, seed, command, resolution and decoding, plus progress
(``objects``, ``completed``, ``complete``).

Determinism and resuming:

* Decoding is greedy by default; ``sample=True`` uses PointLLM's settings (T = 1, top-k 50, top-p 0.95), seeded:
  the batch that starts at item ``i`` is decoded after ``torch.manual_seed(seed + i)``. Batches are cut from the
  full item list, so a resumed run decodes exactly the batches an uninterrupted run would (same batch size).
* The file is rewritten atomically after every batch. Rerunning the same call reopens it, skips the records it
  holds (by ``object_id``, or ``question_id`` for QA) and finishes the rest. A file written with a different
  model, source, split, task, prompt, resolution, seed or decoding is refused rather than mixed.
* Point clouds are loaded lazily, batch by batch: a resumed run never reads the clouds of finished objects.

``limit`` keeps at most that many records: procedural objects round-robin over categories (so the categories
stay balanced), ModelNet40 objects as a seeded random subset in index order (like PointLLM's ``--subset_nums``;
the test split is sorted by class, so its first objects are all airplanes), other sources in file order.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..data.errors import DatasetError
from ..errors import ConfigError
from ..data.prompts import PROMPT_LISTS
from .results import ResultsFile, ResultsFormatError, make_record, open_results, write_results

__all__ = [
    "SOURCES",
    "TASKS",
    "QA_PROMPT",
    "BenchmarkItem",
    "Benchmark",
    "load_benchmark",
    "output_name",
    "decoding_settings",
    "run_benchmark",
    "generate_benchmark",
    "pick_round_robin",
    "cli_command",
    "api_command",
]

SOURCES: tuple[str, ...] = ("objaverse", "modelnet", "procedural")
TASKS: tuple[str, ...] = ("captioning", "classification", "qa")
QA_PROMPT = "{question}"
"""The ``prompt`` of a QA results file: each record carries its own ``question``."""

_TASK_PROMPTS = {"captioning": (2,), "classification": (0, 1)}
_DEFAULT_PROMPT = {"captioning": 2, "classification": 0}
_COMPAT_KEYS = ("source", "task", "prompt_index", "split", "num_points", "resample", "seed", "decoding", "model")


# ----------------------------------------------------------------------------------------------------------
# Items and benchmarks
# ----------------------------------------------------------------------------------------------------------
@dataclass
class BenchmarkItem:
    """One question about one object.

    Attributes:
        object_id: the object's id (ModelNet40: the dataset index).
        question: what the model is asked.
        ground_truth: the reference (caption, answer or ModelNet40 label).
        load: ``load(num_points) -> (num_points, 6)`` float32 cloud, xyz normalised with ``pc_norm``, rgb in
            ``[0, 1]``; ``num_points=None`` keeps the stored points.
        extra: keys written after ``model_output`` (``label_name``, ``question_id``, ``category`` ...).
        info: facts about the object that are not written (procedural ``index``, ``category``, ``stored`` path)
            — used by the resolution sweep.
        score: ``score(model_output) -> dict`` of keys added to the record (procedural classification:
            ``{"correct": bool}``), or None.
    """

    object_id: Any
    question: str
    ground_truth: Any
    load: Callable[[int | None], np.ndarray]
    extra: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    score: Callable[[str], dict] | None = None

    @property
    def key(self) -> Any:
        """The record's identity for resuming (``question_id`` for QA, else ``object_id``)."""
        return self.extra.get("question_id", self.object_id)

    def record(self, model_output: str) -> dict:
        """The results record of this item with the model's answer, in PointLLM's key order."""
        extra = dict(self.extra)
        label_name = extra.pop("label_name", None)
        rec = make_record(self.object_id, self.ground_truth, model_output, label_name=label_name, **extra)
        if self.score is not None:
            rec.update(self.score(model_output))
        return rec


@dataclass
class Benchmark:
    """A benchmark ready to run: the file's prompt, its items in order, and where they came from."""

    source: str
    task: str
    prompt_index: int | None
    prompt: str
    split: str
    file_name: str
    items: list[BenchmarkItem]
    data: dict = field(default_factory=dict)
    stored_points: int | None = None


def pick_round_robin(rows: Sequence[dict], limit: int | None, key: str = "category") -> list[dict]:
    """At most ``limit`` rows, taking one per ``key`` value in turn (first-seen order), so groups stay balanced."""
    rows = list(rows)
    if not limit or limit >= len(rows):
        return rows
    groups: dict[Any, list[dict]] = {}
    for r in rows:
        groups.setdefault(r[key], []).append(r)
    picked: list[dict] = []
    depth = 0
    while len(picked) < limit:
        layer = [g[depth] for g in groups.values() if depth < len(g)]
        if not layer:
            break
        picked += layer[: limit - len(picked)]
        depth += 1
    return picked


def _check_limit(limit) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1):
        raise ConfigError(f"limit must be a positive integer or None, got {limit!r}")


def _prompt_for(task: str, prompt_index: int | None) -> tuple[int | None, str]:
    if task == "qa":
        if prompt_index is not None:
            raise ConfigError("qa takes its questions from the questions file; drop --prompt-index")
        return None, QA_PROMPT
    allowed = _TASK_PROMPTS[task]
    index = _DEFAULT_PROMPT[task] if prompt_index is None else prompt_index
    if index not in allowed:
        raise ConfigError(f"{task} uses PointLLM prompt {' or '.join(map(str, allowed))} "
                          f"({', '.join(repr(PROMPT_LISTS[i]) for i in allowed)}), not {prompt_index!r}")
    return index, PROMPT_LISTS[index]


def output_name(source: str, task: str, prompt_index: int | None, *, anno=None, questions=None,
                split: str = "test") -> str:
    """The results file name PointLLM (or we, for procedural data and QA) would give this benchmark."""
    if task == "qa":
        return f"procedural_{split}_qa.json" if source == "procedural" else f"{Path(questions).stem}_Objaverse_qa.json"
    if source == "modelnet":
        return f"ModelNet_classification_prompt{prompt_index}.json"
    if source == "objaverse":
        return f"{Path(anno).stem}_Objaverse_{task}_prompt{prompt_index}.json"
    return f"procedural_{split}_{task}_prompt{prompt_index}.json"


def _require(value, flag: str, what: str):
    if value is None:
        raise ConfigError(f"{what} needs {flag}")
    return value


def _point_loader(path: Path, seed: int) -> Callable[[int | None], np.ndarray]:
    from ..data.pointllm import load_point_file

    return lambda n: load_point_file(path, num_points=n, seed=seed)


def _objaverse(task, prompt, anno, point_dir, questions, limit, seed) -> tuple[list[BenchmarkItem], str, dict]:
    from ..data.pointllm import DEFAULT_POINT_FILE_PATTERN, load_benchmark_gt

    point_dir = Path(_require(point_dir, "--point-dir (the folder of {object_id}_8192.npy files)",
                              "the objaverse source"))
    if not point_dir.is_dir():
        raise DatasetError(f"{point_dir}: point folder not found (PointLLM's 8192_npy folder)")
    items = []
    if task == "qa":
        rows = _read_questions(_require(questions, "--questions (a JSON list of {question_id, object_id, "
                                                   "question, answer})", "objaverse qa"))
        split, data = Path(questions).stem, {"questions": str(questions), "point_dir": str(point_dir)}
    else:
        rows = [{"object_id": r["object_id"], "ground_truth": r["ground_truth"]}
                for r in load_benchmark_gt(_require(anno, "--anno (PointLLM_brief_description_val_200_GT.json)",
                                                    f"objaverse {task}"))]
        split, data = Path(anno).stem, {"anno": str(anno), "point_dir": str(point_dir)}
    rows = rows[:limit] if limit else rows
    missing = [r["object_id"] for r in rows
               if not (point_dir / DEFAULT_POINT_FILE_PATTERN.format(object_id=r["object_id"])).is_file()]
    if missing:
        raise DatasetError(f"{point_dir}: {len(missing)} of {len(rows)} point files are missing, e.g. "
                           f"{DEFAULT_POINT_FILE_PATTERN.format(object_id=missing[0])}")
    for r in rows:
        path = point_dir / DEFAULT_POINT_FILE_PATTERN.format(object_id=r["object_id"])
        if task == "qa":
            items.append(_qa_item(r, _point_loader(path, seed)))
        else:
            items.append(BenchmarkItem(r["object_id"], prompt, r["ground_truth"], _point_loader(path, seed)))
    return items, split, data


def _read_questions(path) -> list[dict]:
    """A 3D MM-Vet-style questions file: a JSON list of ``{question_id, object_id, question, answer?,
    question_type?}`` (``category`` is read as ``question_type``)."""
    from .results import read_json

    rows = read_json(path, "questions file")
    if not isinstance(rows, list) or not rows:
        raise DatasetError(f"{path}: expected a non-empty JSON list of {{question_id, object_id, question}} objects")
    seen: set = set()
    out = []
    for i, r in enumerate(rows):
        if not isinstance(r, dict) or not all(k in r for k in ("question_id", "object_id", "question")):
            raise DatasetError(f"{path} record {i}: needs question_id, object_id and question "
                               f"(found {sorted(r) if isinstance(r, dict) else type(r).__name__})")
        if r["question_id"] in seen:
            raise DatasetError(f"{path} record {i}: question_id {r['question_id']!r} appears twice")
        seen.add(r["question_id"])
        out.append({"question_id": r["question_id"], "object_id": r["object_id"], "question": str(r["question"]),
                    "answer": r.get("answer", r.get("ground_truth", "")),
                    "question_type": r.get("question_type", r.get("category"))})
    return out


def _qa_item(r: dict, load) -> BenchmarkItem:
    extra = {"question_id": r["question_id"], "question": r["question"]}
    if r.get("question_type"):
        extra["question_type"] = r["question_type"]
    return BenchmarkItem(r["object_id"], r["question"], r.get("answer") or "", load, extra)


def _modelnet(task, prompt, modelnet, allow_pickle, limit, seed) -> tuple[list[BenchmarkItem], str, dict]:
    from ..data.modelnet import ModelNetDataset

    if task != "classification":
        raise ConfigError(f"ModelNet40 is a classification benchmark; --task {task} needs the objaverse or "
                          "procedural source")
    ds = ModelNetDataset(_require(modelnet, "--modelnet (a .npz from `enel data convert-modelnet`)", "modelnet"),
                         allow_pickle=allow_pickle, seed=seed)
    indices = np.arange(len(ds))
    if limit and limit < len(ds):
        indices = np.sort(np.random.default_rng(seed).choice(len(ds), size=limit, replace=False))

    def loader(index: int):
        def load(n):
            ds.num_points = n
            return ds[index]["point_cloud"].numpy()
        return load

    items = []
    for i in indices.tolist():
        label = int(ds.labels[i])
        items.append(BenchmarkItem(i, prompt, label, loader(i), {"label_name": ds.class_names[label]}))
    return items, "test", {"modelnet": str(modelnet)}


def _procedural(task, prompt, data_dir, split, limit, seed) -> tuple[list[BenchmarkItem], str, dict, int]:
    from ..data.procedural.generate import load_objects

    data_dir = Path(_require(data_dir, "--data (a folder written by `enel data synth`)", "the procedural source"))
    manifest_path = data_dir / "manifest.json"
    if not manifest_path.is_file():
        raise ConfigError(f"{manifest_path} not found; generate the procedural dataset with `enel data synth "
                          f"--out {data_dir}` first")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    objects = load_objects(data_dir, split)
    if not objects:
        raise ConfigError(f"{data_dir}: the {split!r} split holds no objects")
    folder = data_dir / manifest["npy_dir"]
    stored = int(manifest["num_points"])
    data = {"data": str(data_dir), "generator": manifest.get("params", {})}

    def info(o):
        return {"category": o["category"], "index": o["index"], "stored": folder / f"{o['object_id']}_{stored}.npy"}

    items = []
    if task == "qa":
        by_id = {o["object_id"]: o for o in objects}
        path = data_dir / "anno" / f"complex_{split}.json"
        from ..data.pointllm import read_annotations

        qa: dict[str, list[dict]] = {}
        for rec in read_annotations(path):
            if rec["conversation_type"] == "single_round" and rec["object_id"] in by_id:
                qa.setdefault(rec["object_id"], []).append(rec)
        rows = []
        for o in objects:
            for k, rec in enumerate(qa.get(o["object_id"], [])):
                question = rec["conversations"][0]["value"].replace("<point>", "").strip()
                rows.append({"question_id": f"{o['object_id']}#{k}", "object_id": o["object_id"],
                             "question": question, "answer": rec["conversations"][1]["value"], "obj": o,
                             "category": o["category"]})
        rows = pick_round_robin(rows, limit)
        if not rows:
            raise ConfigError(f"{path}: no single_round conversations for the {split!r} split")
        for r in rows:
            o = r["obj"]
            it = _qa_item(r, _point_loader(folder / f"{o['object_id']}_{stored}.npy", seed))
            it.info = info(o)
            items.append(it)
        return items, split, data, stored
    for o in pick_round_robin(objects, limit):
        score = _category_scorer(o["category"]) if task == "classification" else None
        items.append(BenchmarkItem(o["object_id"], prompt, o["caption"],
                                   _point_loader(folder / f"{o['object_id']}_{stored}.npy", seed),
                                   {"category": o["category"]}, info(o), score))
    return items, split, data, stored


def _category_scorer(category: str) -> Callable[[str], dict]:
    from ..data.procedural.scoring import match_category

    return lambda answer: {"correct": bool(match_category(answer, category))}


def load_benchmark(source: str, task: str, prompt_index: int | None = None, *, anno=None, point_dir=None,
                   questions=None, modelnet=None, allow_pickle: bool = False, data_dir=None, split: str = "test",
                   limit: int | None = None, seed: int = 0) -> Benchmark:
    """Collect a benchmark's items (clouds are not read yet).

    Args:
        source: ``"objaverse"``, ``"modelnet"`` or ``"procedural"``.
        task: ``"captioning"``, ``"classification"`` or ``"qa"``.
        prompt_index: PointLLM's prompt (0 "What is this?", 1 "This is an object of ", 2 captioning); default
            2 for captioning, 0 for classification; none for QA.
        anno: Objaverse GT JSON; point_dir: its ``{object_id}_8192.npy`` folder; questions: QA JSON.
        modelnet: ModelNet40 ``.npz`` (or the pickle with ``allow_pickle``).
        data_dir, split: the procedural dataset folder and split.
        limit: at most this many records (see the module docstring for which).
        seed: seeds random resampling (and the ModelNet40 subset).

    Raises:
        ConfigError / DatasetError: an unknown source or task, a task the source lacks, missing files.
    """
    if source not in SOURCES:
        raise ConfigError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    _check_limit(limit)
    index, prompt = _prompt_for(task, prompt_index)
    stored = None
    if source == "objaverse":
        items, split_name, data = _objaverse(task, prompt, anno, point_dir, questions, limit, seed)
        stored = 8192
    elif source == "modelnet":
        items, split_name, data = _modelnet(task, prompt, modelnet, allow_pickle, limit, seed)
    else:
        items, split_name, data, stored = _procedural(task, prompt, data_dir, split, limit, seed)
    keys = [it.key for it in items]
    if len(set(map(repr, keys))) != len(keys):
        raise DatasetError(f"{source} {task}: an object is listed twice; results are keyed by object id")
    name = output_name(source, task, index, anno=anno, questions=questions, split=split_name)
    return Benchmark(source, task, index, prompt, split_name, name, items, data, stored)


# ----------------------------------------------------------------------------------------------------------
# Running
# ----------------------------------------------------------------------------------------------------------
def decoding_settings(*, max_new_tokens: int = 64, sample: bool = False, temperature: float = 1.0, top_k: int = 50,
                      top_p: float = 0.95, num_beams: int = 1, seed: int = 0):
    """:class:`enel.inference.GenerationSettings`: greedy, or PointLLM's sampling when ``sample``."""
    from ..inference import GenerationSettings

    if max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be positive, got {max_new_tokens}")
    return GenerationSettings(max_new_tokens=max_new_tokens, do_sample=sample, temperature=temperature, top_k=top_k,
                              top_p=top_p, num_beams=num_beams, seed=seed)


def _decoding_dict(settings) -> dict:
    d = dict(settings.__dict__)
    d.pop("seed", None)
    if not d.get("do_sample"):
        for k in ("temperature", "top_k", "top_p"):
            d.pop(k, None)
    return d


def api_command(name: str, **kwargs) -> str:
    """``enel.eval.<name>(key=value, ...)``: how a Python call is recorded in a results file's ``command``."""
    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items() if v is not None)
    return f"enel.eval.{name}({args})"


def cli_command() -> str | None:
    """``enel ...`` as typed, when running under the ``enel`` command; None otherwise."""
    argv0 = sys.argv[0] if sys.argv else ""
    if Path(argv0).name.startswith("enel") or argv0.replace("\\", "/").endswith(("enel/__main__.py",
                                                                                  "enel/cli/__main__.py")):
        return "enel " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    return None


def _check_compatible(path: Path, stored: dict | None, wanted: dict, n_records: int) -> None:
    if not n_records:
        return
    if stored is None:
        raise ResultsFormatError(f"{path} holds {n_records} records but no enel metadata, so it cannot be resumed "
                                 "safely; choose another output file or delete this one")
    for k in _COMPAT_KEYS:
        if k in wanted and stored.get(k) != wanted[k]:
            raise ResultsFormatError(
                f"{path} was generated with {k}={stored.get(k)!r}, not {wanted[k]!r}; results of different "
                "settings must not mix: choose another output file or delete this one")


def run_benchmark(assistant, bench: Benchmark, out_path, *, batch_size: int = 6, seed: int = 0,
                  num_points: int | None = None, metadata: dict | None = None,
                  cloud_fn: Callable[[BenchmarkItem, int], np.ndarray] | None = None,
                  on_batch: Callable[[int, int], None] | None = None, log: Callable[[str], None] | None = None
                  ) -> ResultsFile:
    """Answer every pending item of ``bench`` with ``assistant`` and write ``out_path`` after each batch.

    Args:
        assistant: an :class:`enel.inference.Assistant` (its decoding settings are used; its seed is set per
            batch and restored).
        num_points: the resolution fed to the model (default: the model's ``point.num_points``).
        metadata: the ``"enel"`` block; the keys in ``_COMPAT_KEYS`` must match a file being resumed.
        cloud_fn: ``cloud_fn(item, num_points) -> (num_points, 6)`` instead of ``item.load`` (the resolution
            sweep's dense clouds).
        on_batch: called as ``on_batch(completed, total)`` after each batch is written (tests interrupt here).

    Returns:
        the :class:`ResultsFile` as written.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be positive, got {batch_size}")
    out_path = Path(out_path)
    n_points = int(num_points or assistant.num_points)
    meta = dict(metadata or {})
    rf = open_results(out_path, bench.prompt)
    _check_compatible(out_path, rf.metadata, meta, len(rf.results))
    done = rf.done_ids()
    total = len(bench.items)
    meta.update(objects=total)
    load = cloud_fn or (lambda item, n: item.load(n))
    saved_seed = assistant.settings.seed
    t0 = time.time()
    try:
        for start in range(0, total, batch_size):
            todo = [it for it in bench.items[start:start + batch_size] if it.key not in done]
            if not todo:
                continue
            clouds = np.stack([np.asarray(load(it, n_points), dtype=np.float32) for it in todo])
            assistant.settings.seed = seed + start
            answers = assistant.ask(clouds, [it.question for it in todo])
            for it, answer in zip(todo, answers):
                rf.results.append(it.record(answer))
                done.add(it.key)
            completed = sum(1 for it in bench.items if it.key in done)
            meta.update(completed=completed, complete=completed == total)
            rf.metadata = meta
            write_results(out_path, rf)
            if log:
                log(f"[generate] {out_path.name}: {completed}/{total} ({time.time() - t0:.0f} s)")
            if on_batch:
                on_batch(completed, total)
    finally:
        assistant.settings.seed = saved_seed
    completed = sum(1 for it in bench.items if it.key in done)
    meta.update(completed=completed, complete=completed == total)
    if rf.metadata != meta or not out_path.exists():
        rf.metadata = meta
        write_results(out_path, rf)
    return rf


def run_metadata(assistant, bench: Benchmark, *, model_dir, seed: int, num_points: int, batch_size: int,
                 command: str | None, **more) -> dict:
    """The ``"enel"`` block of a generated results file."""
    from .. import __version__

    cfg = assistant.model.config
    meta = {
        "model": str(Path(model_dir).resolve()),
        "backbone": cfg.backbone,
        "training_state": {k: v for k, v in (cfg.training_state or {}).items() if k != "history"},
        "source": bench.source,
        "task": bench.task,
        "prompt_index": bench.prompt_index,
        "split": bench.split,
        "data": bench.data,
        "seed": seed,
        "command": command,
        "num_points": num_points,
        "stored_points": bench.stored_points,
        "resample": "fps down, seeded duplicates up (enel.points.transforms.resample)",
        "decoding": _decoding_dict(assistant.settings),
        "batch_size": batch_size,
        "enel_version": __version__,
    }
    meta.update(more)
    return meta


def generate_benchmark(model_dir, *, source: str = "procedural", task: str = "captioning",
                       prompt_index: int | None = None, anno=None, point_dir=None, questions=None, modelnet=None,
                       allow_pickle: bool = False, data_dir=None, split: str = "test", out=None,
                       batch_size: int = 6, seed: int = 0, num_points: int | None = None, max_new_tokens: int = 64,
                       sample: bool = False, num_beams: int = 1, limit: int | None = None, command: str | None = None,
                       assistant=None, on_batch=None, log: Callable[[str], None] | None = print) -> Path:
    """Run one benchmark with the model in ``model_dir``; returns the results file (resumed when it exists).

    Args:
        model_dir: a model folder (``enel quickstart`` / ``enel train`` output).
        source, task, prompt_index, anno, point_dir, questions, modelnet, allow_pickle, data_dir, split, limit:
            which benchmark (:func:`load_benchmark`).
        out: a ``.json`` file, or a folder that receives the PointLLM file name (default:
            ``<model_dir>/../eval``).
        batch_size: clouds per ``generate`` call (PointLLM: 6).
        seed: seeds decoding (per batch) and random resampling.
        num_points: points per cloud (default: the model's ``point.num_points``).
        max_new_tokens, sample, num_beams: decoding (greedy unless ``sample``).
        command: the command line to record (default: the ``enel`` command line, or this call).
        assistant: an already loaded :class:`enel.inference.Assistant` (its decoding settings are replaced).
        on_batch: progress callback ``(completed, total)``, called after each batch is on disk.
    """
    from ..inference import Assistant

    bench = load_benchmark(source, task, prompt_index, anno=anno, point_dir=point_dir, questions=questions,
                           modelnet=modelnet, allow_pickle=allow_pickle, data_dir=data_dir, split=split, limit=limit,
                           seed=seed)
    settings = decoding_settings(max_new_tokens=max_new_tokens, sample=sample, num_beams=num_beams, seed=seed)
    if assistant is None:
        assistant = Assistant.from_folder(model_dir, **settings.__dict__)
    else:
        assistant.settings = settings
    n_points = int(num_points or assistant.num_points)
    if out is None:
        out_path = Path(model_dir).parent / "eval" / bench.file_name
    else:
        out_path = Path(out)
        if out_path.suffix.lower() != ".json":
            out_path = out_path / bench.file_name
    command = command or cli_command() or api_command(
        "generate_benchmark", model_dir=str(model_dir), source=source, task=task, prompt_index=prompt_index,
        anno=anno and str(anno), point_dir=point_dir and str(point_dir), questions=questions and str(questions),
        modelnet=modelnet and str(modelnet), data_dir=data_dir and str(data_dir), split=split, seed=seed,
        num_points=num_points, max_new_tokens=max_new_tokens, sample=sample or None, limit=limit)
    meta = run_metadata(assistant, bench, model_dir=model_dir, seed=seed, num_points=n_points,
                        batch_size=batch_size, command=command)
    if log:
        log(f"[generate] {bench.source} {bench.task} ({bench.prompt!r}): {len(bench.items)} items at {n_points} "
            f"points → {out_path}")
    run_benchmark(assistant, bench, out_path, batch_size=batch_size, seed=seed, num_points=n_points, metadata=meta,
                  on_batch=on_batch, log=log)
    return out_path
