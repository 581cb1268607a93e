"""PointLLM's benchmark-results JSON: read, validate, write atomically, append and resume.

The layout every PointLLM-family judge script consumes (``eval_objaverse.py`` / ``eval_modelnet_cls.py``)::

    {"prompt": "What is this?",
     "results": [{"object_id": ..., "ground_truth": ..., "model_output": ..., "label_name": ...}, ...]}

``label_name`` is present for ModelNet40 (where ``ground_truth`` is the integer label). ENEL adds one optional
top-level key, ``"enel"``, holding run metadata (model, split, seed, command ...) that PointLLM's evaluators
never read. Every other key, at the top level or inside a record, is kept as it is, so a file read and
written again is unchanged (key order included). QA records (3D MM-Vet style) may carry ``question``,
``question_type`` and ``question_id`` beside the standard keys.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..errors import ConfigError

METADATA_KEY = "enel"
REQUIRED_RECORD_KEYS = ("object_id", "ground_truth", "model_output")


class ResultsFormatError(ConfigError):
    """A results file is missing, is not JSON, or does not follow PointLLM's results layout."""


@dataclass
class ResultsFile:
    """One benchmark-results document.

    ``prompt`` is the benchmark prompt given to the model, ``results`` the per-object records (dicts, kept
    with every key they had), ``metadata`` the optional ``"enel"`` block and ``extra`` any other top-level
    key, in file order.
    """

    prompt: str
    results: list[dict] = field(default_factory=list)
    metadata: dict | None = None
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        """The JSON document: ``prompt``, ``results``, then ``extra`` keys, then ``"enel"``."""
        doc: dict[str, Any] = {"prompt": self.prompt, "results": self.results}
        doc.update(self.extra)
        if self.metadata is not None:
            doc[METADATA_KEY] = self.metadata
        return doc

    def done_ids(self) -> set:
        """The ``object_id`` (or ``question_id`` when present) of every record already in the file."""
        return {record_key(r) for r in self.results}


def record_key(record: dict) -> Any:
    """The identity of a record for resuming: ``question_id`` when present (QA), else ``object_id``."""
    return record["question_id"] if "question_id" in record else record["object_id"]


# --------------------------------------------------------------------------------------------------------
# JSON files
# --------------------------------------------------------------------------------------------------------
def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """Load a JSON file; a missing or malformed file raises :class:`ResultsFormatError` naming it."""
    p = Path(path)
    if not p.is_file():
        raise ResultsFormatError(f"{what} not found: {p} (check the path)")
    try:
        with p.open("r", encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise ResultsFormatError(
            f"{what} {p} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            "re-create it or fix the file") from None
    except UnicodeDecodeError:
        raise ResultsFormatError(f"{what} {p} is not UTF-8 text; is it really a JSON file?") from None


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2) -> Path:
    """Write ``obj`` as JSON to a temp file in the same folder, fsync it, then ``os.replace`` it onto ``path``.

    A reader never sees a half-written file, and an interrupted write leaves the old file intact.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=indent, ensure_ascii=False, allow_nan=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return p


# --------------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------------
def _check_record(record: Any, index: int, where: str) -> None:
    if not isinstance(record, dict):
        raise ResultsFormatError(f"{where}: results[{index}] is a {type(record).__name__}, expected an object "
                                 "with object_id, ground_truth and model_output")
    missing = [k for k in REQUIRED_RECORD_KEYS if k not in record]
    if missing:
        raise ResultsFormatError(f"{where}: results[{index}] lacks {', '.join(missing)} "
                                 f"(every record needs {', '.join(REQUIRED_RECORD_KEYS)})")
    if not isinstance(record["model_output"], str):
        raise ResultsFormatError(f"{where}: results[{index}].model_output is "
                                 f"{type(record['model_output']).__name__}, expected a string")


def results_from_json(doc: Any, where: str = "results") -> ResultsFile:
    """Validate a decoded results document and wrap it; ``where`` names the source in error messages."""
    if not isinstance(doc, dict):
        raise ResultsFormatError(f"{where}: top level is a {type(doc).__name__}, expected an object "
                                 '{"prompt": ..., "results": [...]} (PointLLM results layout)')
    if "results" not in doc:
        raise ResultsFormatError(f'{where}: no "results" key; is this a PointLLM results file? '
                                 f"(top-level keys: {', '.join(map(str, doc)) or 'none'})")
    if "prompt" not in doc:
        raise ResultsFormatError(f'{where}: no "prompt" key (the benchmark prompt); add it, '
                                 'e.g. "prompt": "What is this?"')
    if not isinstance(doc["prompt"], str):
        raise ResultsFormatError(f'{where}: "prompt" is {type(doc["prompt"]).__name__}, expected a string')
    results = doc["results"]
    if not isinstance(results, list):
        raise ResultsFormatError(f'{where}: "results" is {type(results).__name__}, expected a list')
    for i, r in enumerate(results):
        _check_record(r, i, where)
    metadata = doc.get(METADATA_KEY)
    if metadata is not None and not isinstance(metadata, dict):
        raise ResultsFormatError(f'{where}: "{METADATA_KEY}" is {type(metadata).__name__}, expected an object')
    extra = {k: v for k, v in doc.items() if k not in ("prompt", "results", METADATA_KEY)}
    return ResultsFile(prompt=doc["prompt"], results=results, metadata=metadata, extra=extra)


# --------------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------------
def read_results(path: str | os.PathLike) -> ResultsFile:
    """Read and validate a PointLLM results file (ours or one written by PointLLM's scripts)."""
    return results_from_json(read_json(path, "results file"), where=str(path))


def write_results(path: str | os.PathLike, results: ResultsFile) -> Path:
    """Write a results file atomically (indent 2, UTF-8, trailing newline)."""
    for i, r in enumerate(results.results):
        _check_record(r, i, str(path))
    return atomic_write_json(path, results.to_json())


def make_record(object_id: Any, ground_truth: Any, model_output: str, label_name: str | None = None,
                **extra: Any) -> dict:
    """One result record in PointLLM's key order; ``label_name`` only when given (ModelNet40)."""
    record = {"object_id": object_id, "ground_truth": ground_truth, "model_output": model_output}
    if label_name is not None:
        record["label_name"] = label_name
    record.update(extra)
    return record


def open_results(path: str | os.PathLike, prompt: str, metadata: dict | None = None) -> ResultsFile:
    """Load ``path`` to resume it, or start an empty document when it does not exist yet.

    Resuming a file written for another benchmark prompt raises :class:`ResultsFormatError`: records of two
    prompts must not mix. ``metadata`` replaces the stored ``"enel"`` block when given.
    """
    p = Path(path)
    if not p.exists():
        return ResultsFile(prompt=prompt, results=[], metadata=metadata)
    rf = read_results(p)
    if rf.prompt != prompt:
        raise ResultsFormatError(f"{p} holds results for prompt {rf.prompt!r}, not {prompt!r}; "
                                 "choose another output file or delete this one")
    if metadata is not None:
        rf.metadata = metadata
    return rf


def pending(records: Iterable[dict], done: set) -> list[dict]:
    """The records whose key (see :func:`record_key`) is not in ``done``, in their original order."""
    return [r for r in records if record_key(r) not in done]


def append_results(path: str | os.PathLike, records: Iterable[dict], prompt: str,
                   metadata: dict | None = None) -> ResultsFile:
    """Append records to a results file (created if absent) and rewrite it atomically.

    Records whose key is already in the file are rejected (:class:`ResultsFormatError`) rather than
    duplicated; call :func:`pending` first to skip finished objects on resume.
    """
    rf = open_results(path, prompt, metadata)
    done = rf.done_ids()
    new = list(records)
    for r in new:
        key = record_key(r)
        if key in done:
            raise ResultsFormatError(f"{path}: object {key!r} is already in the file; "
                                     "skip finished objects with enel.eval.results.pending()")
        done.add(key)
    rf.results.extend(new)
    write_results(path, rf)
    return rf
