"""PointLLM's Objaverse data: ``{object_id}_8192.npy`` point files plus caption / instruction JSON.

Layout (``docs/pointllm-ecosystem.md`` §1.1–1.2, ``docs/data.md``)::

    point_dir/{object_id}_8192.npy     (N, 6) xyz + rgb, rgb in [0, 1] (PointLLM: N = 8192)
    anno.json                          [{"object_id": ..., "conversation_type": ..., "conversations": [
                                           {"from": "human", "value": "<point>\\n..."},
                                           {"from": "gpt", "value": "..."}, ...]}, ...]

The rules, each PointLLM's unless marked *ours*:

* **Loading** is memory-mapped (``np.load(mmap_mode="r")``): a ``__getitem__`` reads only the pages it needs,
  and DataLoader workers share the page cache instead of each holding a copy.
* **Normalisation** at load time by the model's input rule (:func:`enel.points.transforms.model_input`: resample,
  then ``pc_norm`` — centroid to the origin, farthest point at radius 1); rgb passes through unchanged. Nothing is
  normalised on disk.
* **Colour**: rgb is stored in ``[0, 1]`` and used as is (values outside ``[0, 1]`` by more than ``1e-3`` raise
  :class:`DatasetError`; tiny excursions are clipped). The two Objaverse ids with corrupt colour files
  (:data:`CORRUPT_COLOR_IDS`) are dropped when ``use_color`` is true.
* ``use_color=False`` (*ours*): PointLLM drops the rgb columns and feeds ``(N, 3)``; we keep six channels and
  **zero the colour** (black, exactly what PointLLM feeds for colourless ModelNet40). Every item therefore has
  the same ``(N, 6)`` layout, the collator can stack any mix, a ``use_color=False`` model ignores channels
  3–5 (:class:`enel.model.embedding.PointTokenEmbedding` slices them off) and a ``use_color=True`` model sees
  black clouds instead of failing on three channels. Files with only xyz columns are accepted in this mode.
* **Resolution** (*ours*): ``num_points=None`` keeps the stored points (PointLLM fed all 8192). An integer
  resamples each cloud to exactly that many points before normalisation: ``resample_method="fps"`` (default,
  deterministic farthest point sampling from index 0 — the same kind of subset that produced the 8192-point
  files, about 18 ms for 8192 → 2048) or ``"random"`` (a subset drawn with a seed derived from ``seed`` and the
  object id, so an object gets the same points in every epoch and every worker). Fewer stored points than
  ``num_points`` are padded with seeded duplicates (:func:`enel.points.transforms.resample`).
* **Conversation type**: a missing ``conversation_type`` counts as ``simple_description`` (PointLLM's
  ``data.get('conversation_type', 'simple_description')``); ``conversation_types`` keeps only the listed ones.
* **Point or not**: a sample has a point cloud exactly when ``<point>`` appears in its first human turn.
* **Packing** (*ours*, off by default): ``pack_per_object=n`` joins up to ``n`` conversations of the same object
  into one multi-turn sample (order shuffled per object with ``seed``; the point block stays in the first human
  turn only; type ``"packed"``). The 129 point tokens are then embedded and run through the LLM once for ``n``
  answers instead of ``n`` times: on short question/answer data, where the point block is ~70 % of a sample's
  tokens, this gives several times more supervised answer tokens per training FLOP.

Skip policy (*ours*): malformed JSON and records that break the schema raise :class:`DatasetError` naming the
file, the record index and the problem — a broken file is fixed, not silently thinned. Samples whose point file
is missing (checked for every sample up front: one directory listing, not one ``stat`` per file) or that cannot
be encoded (:class:`~enel.data.conversation.ConversationError`: roles out of order, the point block beyond
``max_length``, no answer tokens) are **skipped at construction**: counted in :attr:`PointLLMDataset.stats`,
up to five examples per reason in :attr:`PointLLMDataset.skipped`, and reported in one :class:`DatasetWarning`.
``skip_invalid=False`` raises on the first such sample instead.
"""

from __future__ import annotations

import json
import os
import warnings
import zlib
from collections import Counter, OrderedDict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from ..model.configuration_enel import POINT_PLACEHOLDER
from ..model.splice import SpliceError
from ..points.transforms import RESAMPLE_METHODS, augment_cloud, model_input, pc_norm
from .conversation import ConversationError, encode_conversation
from .errors import DatasetError, DatasetWarning

__all__ = [
    "CONVERSATION_TYPES",
    "DEFAULT_CONVERSATION_TYPE",
    "CORRUPT_COLOR_IDS",
    "DEFAULT_POINT_FILE_PATTERN",
    "PointLLMDataset",
    "pack_by_object",
    "AnnotationRecord",
    "read_annotations",
    "load_benchmark_gt",
    "load_point_file",
    "read_point_array",
    "object_seed",
    "check_resample_args",
    "HEADING_AUGMENT",
    "resolve_augment",
]

CONVERSATION_TYPES: tuple[str, ...] = ("simple_description", "detailed_description", "single_round", "multi_round")
"""The conversation types of PointLLM's data: brief captions (stage 1) and the three complex kinds (stage 2)."""

DEFAULT_CONVERSATION_TYPE = "simple_description"
"""What a record without ``conversation_type`` counts as (PointLLM's default)."""

CORRUPT_COLOR_IDS: frozenset[str] = frozenset(
    {"6760e543e1d645d5aaacd3803bcae524", "b91c0711149d460a8004f9c06d3b7f38"}
)
"""Objaverse objects whose colour files are corrupt; PointLLM drops them whenever colour is used."""

DEFAULT_POINT_FILE_PATTERN = "{object_id}_8192.npy"
"""File name of an object's points inside ``point_dir`` (PointLLM: ``f"{object_id}_{8192}.npy"``)."""

_ROLES = ("human", "gpt", "user", "assistant")
_COLOR_TOLERANCE = 1e-3
CLOUD_CACHE_BYTES = 512 * 2**20
"""Memory a :class:`PointLLMDataset` may keep of prepared clouds (least recently used dropped first). A cloud is
the same array every time its object comes round (the resampling is seeded per object), and preparing one (reading
8192 points, FPS to the model's count, normalising) costs ~16 ms, ~0.13 s of a batch of 8 that the model waits for
(``num_workers=0``, the CPU default: a worker process would take a core from the model). Most objects come back
several times per epoch (three identify records plus grounding questions each) and every epoch."""
_MAX_EXAMPLES = 5


# ----------------------------------------------------------------------------------------------------------
# Point files
# ----------------------------------------------------------------------------------------------------------
def object_seed(seed: int, object_id: str) -> int:
    """A per-object seed, stable across runs, processes and dataset filters (and whatever the order or subset of
    objects read): every loader that draws per-object randomness (resampling, mesh sampling, answer phrasing)
    seeds it with this."""
    return (zlib.crc32(object_id.encode("utf-8")) ^ (int(seed) * 0x9E3779B1)) & 0xFFFFFFFF


HEADING_AUGMENT: dict = {"yaw_degrees": 180.0, "scale": (1.0, 1.0), "jitter": 0.0}
"""Training augmentation of PointLLM-layout clouds when ``augment`` is on: any heading about the up axis, nothing
else. Their captions state proportions ("a long bench", "a tall lamp"), so per-axis scale is off unless asked for."""


def resolve_augment(augment, defaults: dict) -> dict | None:
    """A dataset's ``augment`` argument as the full settings, or None when it is off.

    ``augment``: ``True`` (``defaults``), a mapping overriding some of ``defaults``, or ``None`` / ``False`` (off).
    An unknown key is a :class:`DatasetError` naming the known ones.
    """
    if not augment:
        return None
    if augment is True:
        return dict(defaults)
    if not isinstance(augment, dict):
        raise DatasetError(f"augment must be true, false or a mapping of {sorted(defaults)}, got {augment!r}")
    bad = sorted(set(augment) - set(defaults))
    if bad:
        raise DatasetError(f"unknown augmentation setting(s) {bad}; known: {sorted(defaults)}")
    out = {**defaults, **augment}
    yaw, scale, jitter = out.get("yaw_degrees", 0.0), out.get("scale", (1.0, 1.0)), out.get("jitter", 0.0)
    if not isinstance(yaw, (int, float)) or not 0 <= yaw <= 180:
        raise DatasetError(f"augment yaw_degrees must be a number in [0, 180] (180: any heading), got {yaw!r}")
    if (not isinstance(scale, (list, tuple)) or len(scale) != 2
            or not all(isinstance(v, (int, float)) for v in scale) or not 0 < scale[0] <= scale[1]):
        raise DatasetError(f"augment scale must be [low, high] with 0 < low <= high ([1, 1]: off), got {scale!r}")
    if not isinstance(jitter, (int, float)) or jitter < 0:
        raise DatasetError(f"augment jitter must be a number >= 0 (0: off), got {jitter!r}")
    return out


def check_resample_args(num_points, resample_method) -> None:
    """:class:`DatasetError` unless ``num_points`` is a positive integer or None and ``resample_method`` is known."""
    if num_points is not None and (isinstance(num_points, bool) or not isinstance(num_points, (int, np.integer))
                                   or num_points < 1):
        raise DatasetError(
            f"num_points must be a positive integer or None (keep the stored points), got {num_points!r}"
        )
    if resample_method not in RESAMPLE_METHODS:
        raise DatasetError(f"resample_method must be one of {', '.join(RESAMPLE_METHODS)}, got {resample_method!r}")


def read_point_array(
    path,
    *,
    use_color: bool = True,
    num_points: int | None = None,
    resample_method: str = "fps",
    seed: int = 0,
) -> np.ndarray:
    """Read one PointLLM point file (memory-mapped) and apply PointLLM's rules.

    Args:
        path: a ``.npy`` file holding ``(N, C)`` numbers, ``C >= 6`` (xyz + rgb in ``[0, 1]``; columns after the
            sixth are ignored) or, with ``use_color=False``, ``C >= 3``.
        use_color: keep rgb (``True``) or zero it (``False``; see the module docstring).
        num_points: resample to exactly this many points before normalising; ``None`` keeps all ``N``.
        resample_method: ``"fps"`` or ``"random"`` (:func:`enel.points.transforms.resample`).
        seed: seed of the random subset / the padding duplicates.

    Returns:
        ``(num_points or N, 6)`` float32: xyz as :func:`~enel.points.transforms.model_input` makes them, then rgb
        (or zeros).

    Raises:
        DatasetError: missing or unreadable file, wrong shape or dtype, NaN / infinite values, colour out of
            ``[0, 1]``. The message starts with the file path.
    """
    check_resample_args(num_points, resample_method)
    path = Path(path)
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise DatasetError(f"{path}: point file not found") from None
    except (ValueError, OSError, EOFError) as exc:
        raise DatasetError(f"{path}: not a readable .npy array ({exc})") from None
    if not isinstance(arr, np.ndarray):  # an .npz archive
        if hasattr(arr, "close"):
            arr.close()
        raise DatasetError(f"{path}: expected a single .npy array of shape (N, 6), found an .npz archive")
    if arr.dtype.kind not in "fiu":
        raise DatasetError(f"{path}: expected numbers, found dtype {arr.dtype}")
    need = 6 if use_color else 3
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < need:
        what = "xyz + rgb" if use_color else "xyz"
        xyz_only = use_color and arr.ndim == 2 and arr.shape[1] >= 3
        hint = " (use_color=False feeds xyz-only files with black colour)" if xyz_only else ""
        raise DatasetError(f"{path}: expected an (N, {need}) {what} array, found shape {arr.shape}{hint}")
    cols = arr[:, :need]
    if not np.isfinite(cols).all():
        raise DatasetError(f"{path}: contains NaN or infinite values")
    pts = model_input(np.asarray(cols), int(num_points or cols.shape[0]), method=resample_method, seed=seed)
    xyz = pts[:, :3]
    if use_color:
        rgb = pts[:, 3:6]
        low, high = float(rgb.min()), float(rgb.max())
        if low < -_COLOR_TOLERANCE or high > 1 + _COLOR_TOLERANCE:
            raise DatasetError(
                f"{path}: colours range over [{low:g}, {high:g}] but PointLLM stores rgb in [0, 1] "
                "(divide 0-255 colours by 255, or use use_color=False to ignore the colour)"
            )
        rgb = np.clip(rgb, 0.0, 1.0)
    else:
        rgb = np.zeros_like(xyz)
    return np.concatenate([xyz, rgb], axis=1)


def _point_path(point_dir, pattern: str, object_id: str) -> Path:
    return Path(point_dir) / pattern.format(object_id=object_id)


def _check_pattern(pattern: str) -> None:
    if not isinstance(pattern, str) or "{object_id}" not in pattern:
        raise DatasetError(f"point_file_pattern must contain '{{object_id}}', got {pattern!r}")
    try:
        pattern.format(object_id="x")
    except (KeyError, IndexError, ValueError) as exc:
        raise DatasetError(
            f"point_file_pattern {pattern!r} may only use the field {{object_id}} ({type(exc).__name__}: {exc})"
        ) from None


def _check_object_id(object_id: str, where: str) -> None:
    if "/" in object_id or "\\" in object_id or object_id in (".", "..") or "\0" in object_id:
        raise DatasetError(f"{where}: object_id {object_id!r} is not a plain name; object ids name files in point_dir")


def load_point_file(
    path_or_id,
    point_dir=None,
    num_points: int | None = None,
    *,
    use_color: bool = True,
    resample_method: str = "fps",
    seed: int = 0,
    point_file_pattern: str = DEFAULT_POINT_FILE_PATTERN,
) -> np.ndarray:
    """One cloud as the model takes it, by object id or by path (used by evaluation).

    Args:
        path_or_id: an object id (looked up as ``point_dir / point_file_pattern``) or a path to a ``.npy`` file
            (taken as a path when ``point_dir`` is None, when it ends in ``.npy`` or when it exists).
        point_dir: the folder of ``{object_id}_8192.npy`` files.
        num_points, use_color, resample_method, seed: as :func:`read_point_array`; the random subset is seeded
            per object exactly as in :class:`PointLLMDataset`, so evaluation sees the training-time points.

    Returns:
        ``(num_points or N, 6)`` float32 numpy array, normalised with ``pc_norm`` (the dataset item's
        ``point_cloud`` as numpy; :func:`enel.inference.prepare_cloud` returns the same layout).
    """
    text = os.fspath(path_or_id)
    as_path = Path(text)
    if point_dir is None or text.endswith(".npy") or as_path.is_file():
        object_id = as_path.name
        path = as_path
    else:
        _check_pattern(point_file_pattern)
        _check_object_id(text, "load_point_file")
        object_id, path = text, _point_path(point_dir, point_file_pattern, text)
    return read_point_array(path, use_color=use_color, num_points=num_points, resample_method=resample_method,
                            seed=object_seed(seed, object_id))


# ----------------------------------------------------------------------------------------------------------
# Annotation JSON
# ----------------------------------------------------------------------------------------------------------
def _load_json_list(path: Path) -> list:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise DatasetError(f"{path}: annotation file not found") from None
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot be read ({exc})") from None
    if not isinstance(data, list):
        raise DatasetError(f"{path}: expected a JSON list of records, found a JSON {type(data).__name__}")
    return data


def _check_record(rec, path: Path, index: int) -> tuple[str, str, list[dict]]:
    """Validate one record's schema; returns ``(object_id, conversation_type, conversations)``."""
    where = f"{path} record {index}"
    if not isinstance(rec, dict):
        raise DatasetError(
            f"{where}: expected an object with 'object_id' and 'conversations', found {type(rec).__name__}"
        )
    object_id = rec.get("object_id")
    if not isinstance(object_id, str) or not object_id:
        raise DatasetError(f"{where}: 'object_id' must be a non-empty string, found {object_id!r}")
    where = f"{where} (object {object_id})"
    _check_object_id(object_id, where)
    ctype = rec.get("conversation_type", DEFAULT_CONVERSATION_TYPE)
    if not isinstance(ctype, str):
        raise DatasetError(f"{where}: 'conversation_type' must be a string, found {ctype!r}")
    convs = rec.get("conversations")
    if not isinstance(convs, list) or not convs:
        raise DatasetError(f"{where}: 'conversations' must be a non-empty list of turns, found {convs!r:.60}")
    for t, turn in enumerate(convs):
        if not isinstance(turn, dict):
            raise DatasetError(f"{where}: turn {t} must be an object with 'from' and 'value'")
        if turn.get("from") not in _ROLES:
            raise DatasetError(f"{where}: turn {t} has 'from' {turn.get('from')!r}; expected 'human' or 'gpt'")
        if not isinstance(turn.get("value"), str):
            raise DatasetError(f"{where}: turn {t} needs a string 'value'")
    return object_id, ctype, convs


def read_annotations(path) -> list[dict]:
    """Read and validate one PointLLM annotation JSON file.

    Returns:
        the records, each ``{"object_id": str, "conversation_type": str, "conversations": list}`` (a missing
        ``conversation_type`` filled with ``simple_description``), in file order.

    Raises:
        DatasetError: the file is missing or not JSON, or a record breaks the schema; the message names the file
            and the record index.
    """
    path = Path(path)
    out = []
    for i, rec in enumerate(_load_json_list(path)):
        object_id, ctype, convs = _check_record(rec, path, i)
        out.append({"object_id": object_id, "conversation_type": ctype, "conversations": convs})
    return out


def load_benchmark_gt(path) -> list[dict]:
    """The Objaverse benchmark ground truth (``PointLLM_brief_description_val_200_GT.json`` and the like).

    Returns:
        ``[{"object_id": str, "ground_truth": str}, ...]`` in file order; the ground truth is the first answer,
        ``conversations[1]["value"]`` (a Cap3D human caption), as PointLLM's ``eval_objaverse.py`` reads it.

    Raises:
        DatasetError: bad JSON or schema, a record without an answer turn, or an object listed twice (the
            evaluation keys results by object id).
    """
    path = Path(path)
    out, seen = [], {}
    for i, rec in enumerate(_load_json_list(path)):
        object_id, _, convs = _check_record(rec, path, i)
        if len(convs) < 2 or convs[1].get("from") not in ("gpt", "assistant"):
            raise DatasetError(
                f"{path} record {i} (object {object_id}): the ground truth is conversations[1], an answer turn "
                f"('from': 'gpt'), but the record has {len(convs)} turn(s)"
                + (f" and turn 1 is from {convs[1].get('from')!r}" if len(convs) >= 2 else "")
            )
        if object_id in seen:
            raise DatasetError(f"{path}: object {object_id} appears in records {seen[object_id]} and {i}")
        seen[object_id] = i
        out.append({"object_id": object_id, "ground_truth": convs[1]["value"]})
    if not out:
        raise DatasetError(f"{path}: the benchmark file holds no records")
    return out


# ----------------------------------------------------------------------------------------------------------
# The dataset
# ----------------------------------------------------------------------------------------------------------
class AnnotationRecord(NamedTuple):
    """One annotation record that passed the dataset's filters: what it says and where it came from
    (``file_index`` into the dataset's ``anno_paths``, ``record_index`` in that file)."""

    object_id: str
    ctype: str
    convs: list[dict]
    points: bool
    file_index: int
    record_index: int


def _drop_point_placeholder(text: str) -> str:
    if POINT_PLACEHOLDER + "\n" in text:
        return text.replace(POINT_PLACEHOLDER + "\n", "", 1)
    return text.replace(POINT_PLACEHOLDER, "", 1).strip()


def pack_by_object(records: list[AnnotationRecord], per_sample: int, seed: int = 0) -> list[AnnotationRecord]:
    """Join up to ``per_sample`` conversations of the same object into one multi-turn conversation.

    Records with points are grouped by object (first-appearance order), shuffled within the object with ``seed``
    and cut into runs of ``per_sample``; a run of several becomes one record of type ``"packed"`` whose turns are
    the run's turns in order, with ``<point>`` kept only in the first human turn (later ones lose it). A run of
    one and text-only records pass through unchanged. Pure: the input records are not modified.
    """
    rng = np.random.default_rng(seed)
    groups: dict[str, list[AnnotationRecord]] = {}
    out: list[AnnotationRecord] = []
    for rec in records:
        if rec.points:
            groups.setdefault(rec.object_id, []).append(rec)
        else:
            out.append(rec)
    for object_id, recs in groups.items():
        recs = [recs[i] for i in rng.permutation(len(recs))]
        for start in range(0, len(recs), per_sample):
            run = recs[start : start + per_sample]
            if len(run) == 1:
                out.append(run[0])
                continue
            convs = [dict(turn) for turn in run[0].convs]
            for other in run[1:]:
                turns = [dict(turn) for turn in other.convs]
                turns[0]["value"] = _drop_point_placeholder(turns[0]["value"])
                convs += turns
            out.append(run[0]._replace(ctype="packed", convs=convs))
    return out


def _first_human_value(convs: list[dict]) -> str:
    for turn in convs:
        if turn["from"] in ("human", "user"):
            return turn["value"]
    return ""


class PointLLMDataset(Dataset):
    """Caption / instruction samples in PointLLM's format, tokenised for one model.

    Args:
        anno_paths: one annotation JSON path or several (concatenated in the given order).
        point_dir: the folder of point files (PointLLM: ``data/objaverse_data``).
        tokenizer: the model's tokenizer, with the point tokens added
            (:meth:`enel.model.modeling_enel.EnelForCausalLM.from_backbone` returns one).
        num_point_tokens: patch tokens per point block (``config.num_point_tokens``: 129 for the paper's
            embedding).
        template: conversation template, ``"chat"``, ``"chat_no_system"`` or ``"vicuna_v1_1"``
            (``config.conversation_template``).
        num_points: resample every cloud to this many points (``config.point.num_points``); ``None`` (default)
            keeps the stored points as PointLLM does.
        resample_method: ``"fps"`` (default, deterministic) or ``"random"`` (seeded per object).
        seed: seeds the random subsets and padding duplicates.
        conversation_types: keep only these types (default: all). Stage 1: ``["simple_description"]``;
            stage 2: ``["detailed_description", "single_round", "multi_round"]``.
        use_color: keep rgb; ``False`` zeroes it (six channels stay) and keeps the corrupt-colour ids.
        max_length: token budget per sample; longer conversations are cut at the end, never through the point
            block (a sample whose point block doesn't fit is skipped).
        point_file_pattern: file name of an object's points inside ``point_dir``.
        encode_upfront: ``True`` (default) tokenises every sample at construction (about 2 ms each), so
            unencodable samples are skipped before training starts; ``False`` tokenises in ``__getitem__``
            (for the 660K stage-1 set, where tokenising everything up front takes many minutes) and raises
            :class:`DatasetError` for a sample that turns out unencodable.
        skip_invalid: skip samples with a missing point file or an unencodable conversation (counted, one
            warning); ``False`` raises :class:`DatasetError` on the first one.
        pack_per_object: join up to this many conversations of one object into one multi-turn sample (see
            *Packing* above; 1, the default, keeps PointLLM's one conversation per sample).
        augment: training augmentation of each item's cloud (:func:`resolve_augment`): ``True`` for
            :data:`HEADING_AUGMENT` (a random heading about z, drawn anew for every item), a mapping overriding
            some of it (``yaw_degrees``, ``scale``, ``jitter`` of :func:`enel.points.transforms.augment_cloud`),
            or ``None`` / ``False`` (default): the prepared cloud as it is, the same in every epoch.
        class_names: ``{object_id: class name}`` for the objects whose class is known (the procedural data's
            nouns); their items also carry ``"class_words"``, the name's tokens
            (:func:`enel.data.modelnet_conversations.class_word_ids`), for the stage-1 class-word alignment.

    Items (``dataset[i]``)::

        {"input_ids": LongTensor (L,), "labels": LongTensor (L,) with -100 outside the answers,
         "point_cloud": FloatTensor (N, 6) xyz (pc_norm) + rgb, or None for a text-only sample,
         "object_id": str}

    Attributes:
        stats: counts — ``records`` read, ``filtered_by_type``, ``corrupt_colour``, ``missing_point_file``,
            ``unencodable``, ``kept`` (samples, after packing).
        skipped: up to five ``(where, object_id, reason)`` examples per skip reason.
    """

    def __init__(
        self,
        anno_paths,
        point_dir,
        tokenizer,
        *,
        num_point_tokens: int,
        template: str = "chat",
        num_points: int | None = None,
        resample_method: str = "fps",
        seed: int = 0,
        conversation_types: Iterable[str] | None = None,
        use_color: bool = True,
        max_length: int | None = None,
        point_file_pattern: str = DEFAULT_POINT_FILE_PATTERN,
        encode_upfront: bool = True,
        skip_invalid: bool = True,
        pack_per_object: int = 1,
        augment=None,
        class_names: Mapping[str, str] | None = None,
    ):
        check_resample_args(num_points, resample_method)
        self.augment = resolve_augment(augment, HEADING_AUGMENT)
        if isinstance(pack_per_object, bool) or not isinstance(pack_per_object, int) or pack_per_object < 1:
            raise DatasetError(f"pack_per_object must be an integer ≥ 1 (1: no packing), got {pack_per_object!r}")
        _check_pattern(point_file_pattern)
        if isinstance(num_point_tokens, bool) or not isinstance(num_point_tokens, int) or num_point_tokens < 1:
            raise DatasetError(f"num_point_tokens must be a positive integer, got {num_point_tokens!r}")
        if max_length is not None and (not isinstance(max_length, int) or max_length <= num_point_tokens + 2):
            raise DatasetError(
                f"max_length {max_length!r} leaves no room for text around the {num_point_tokens + 2}-token point block"
            )
        if isinstance(anno_paths, (str, os.PathLike)):
            anno_paths = [anno_paths]
        self.anno_paths: list[Path] = [Path(p) for p in anno_paths]
        if not self.anno_paths:
            raise DatasetError("anno_paths is empty; give at least one annotation JSON file")
        if conversation_types is not None:
            if isinstance(conversation_types, str):
                conversation_types = [conversation_types]
            conversation_types = tuple(conversation_types)
            if not conversation_types or not all(isinstance(t, str) for t in conversation_types):
                raise DatasetError(
                    f"conversation_types must be a non-empty list of strings, got {conversation_types!r}"
                )
        self.point_dir = Path(point_dir)
        self.tokenizer = tokenizer
        self._class_words: dict[str, torch.Tensor] = {}
        if class_names:
            from .modelnet_conversations import class_word_ids

            ids_of = {name: torch.tensor(class_word_ids(tokenizer, name), dtype=torch.long)
                      for name in set(class_names.values())}
            self._class_words = {str(oid): ids_of[name] for oid, name in class_names.items()}
        self.num_point_tokens = num_point_tokens
        self.template = template
        self.num_points = num_points
        self.resample_method = resample_method
        self.seed = int(seed)
        self.conversation_types = conversation_types
        self.use_color = bool(use_color)
        self.max_length = max_length
        self.point_file_pattern = point_file_pattern
        self.encode_upfront = bool(encode_upfront)
        self.skip_invalid = bool(skip_invalid)
        self.pack_per_object = pack_per_object
        self._cloud_cache: OrderedDict[str, np.ndarray] = OrderedDict()  # object id -> prepared cloud (LRU)

        self.stats = Counter(records=0, filtered_by_type=0, corrupt_colour=0, missing_point_file=0,
                             unencodable=0, kept=0)
        self.skipped: dict[str, list[tuple[str, str, str]]] = {}
        self._build()

    # ---- construction ------------------------------------------------------------------------------------
    def _skip(self, reason: str, where: str, object_id: str, why: str) -> None:
        if not self.skip_invalid and reason != "corrupt_colour":
            raise DatasetError(f"{where} (object {object_id}): {why} (skip_invalid=True skips such samples)")
        self.stats[reason] += 1
        examples = self.skipped.setdefault(reason, [])
        if len(examples) < _MAX_EXAMPLES:
            examples.append((where, object_id, why))

    def _existing_files(self) -> set[str] | None:
        """Names in ``point_dir`` (one listing), or None when the pattern reaches into sub-folders."""
        probe = self.point_file_pattern.format(object_id="x")
        if "/" in probe or os.sep in probe:
            return None
        try:
            with os.scandir(self.point_dir) as it:
                return {entry.name for entry in it}
        except FileNotFoundError:
            raise DatasetError(f"{self.point_dir}: point folder not found") from None
        except NotADirectoryError:
            raise DatasetError(f"{self.point_dir}: point_dir must be a folder of point files") from None

    def _build(self) -> None:
        type_names: list[str] = []
        type_code: dict[str, int] = {}
        types_seen: Counter = Counter()
        existing: set[str] | None = None
        listed = False
        records: list[AnnotationRecord] = []
        for f, path in enumerate(self.anno_paths):
            for r, rec in enumerate(_load_json_list(path)):
                self.stats["records"] += 1
                object_id, ctype, convs = _check_record(rec, path, r)
                types_seen[ctype] += 1
                where = f"{path} record {r}"
                if self.conversation_types is not None and ctype not in self.conversation_types:
                    self.stats["filtered_by_type"] += 1
                    continue
                if self.use_color and object_id in CORRUPT_COLOR_IDS:
                    self._skip("corrupt_colour", where, object_id, "known corrupt colour file (PointLLM drops it)")
                    continue
                points = POINT_PLACEHOLDER in _first_human_value(convs)
                if points:
                    if not listed:
                        existing, listed = self._existing_files(), True
                    name = self.point_file_pattern.format(object_id=object_id)
                    found = (name in existing) if existing is not None else (self.point_dir / name).is_file()
                    if not found:
                        self._skip("missing_point_file", where, object_id,
                                   f"point file {self.point_dir / name} not found")
                        continue
                records.append(AnnotationRecord(object_id, ctype, convs, points, f, r))
        if self.pack_per_object > 1:
            records = pack_by_object(records, self.pack_per_object, self.seed)
        object_ids, has_points, file_idx, rec_idx, codes = [], [], [], [], []
        ids_chunks, label_chunks, lengths, conversations = [], [], [], []
        for object_id, ctype, convs, points, f, r in records:
            where = f"{self.anno_paths[f]} record {r}"
            if self.encode_upfront:
                try:
                    enc = self._encode(convs)
                except (ConversationError, SpliceError) as exc:
                    self._skip("unencodable", where, object_id, str(exc))
                    continue
                ids_chunks.append(np.asarray(enc.input_ids, dtype=np.int32))
                label_chunks.append(np.asarray(enc.labels, dtype=np.int32))
                lengths.append(len(enc.input_ids))
            else:
                conversations.append(convs)
            if ctype not in type_code:
                type_code[ctype] = len(type_names)
                type_names.append(ctype)
            object_ids.append(object_id)
            has_points.append(points)
            file_idx.append(f)
            rec_idx.append(r)
            codes.append(type_code[ctype])
        self.stats["kept"] = len(object_ids)
        self._warn_skips()
        if not object_ids:
            present = ", ".join(f"{t} ({n})" for t, n in sorted(types_seen.items())) or "none"
            raise DatasetError(
                f"no usable samples in {', '.join(map(str, self.anno_paths))}: {self.stats['records']} records, "
                f"conversation types present: {present}; kept types: "
                f"{list(self.conversation_types) if self.conversation_types else 'all'}; skips: "
                f"{self._skip_summary() or 'none'}"
            )
        self.object_ids: list[str] = object_ids
        self._has_points = np.asarray(has_points, dtype=bool)
        self._file_idx = np.asarray(file_idx, dtype=np.int32)
        self._rec_idx = np.asarray(rec_idx, dtype=np.int64)
        self._type_names = tuple(type_names)
        self._type_codes = np.asarray(codes, dtype=np.int16)
        if self.encode_upfront:
            # flat arrays + offsets: no per-sample Python objects for forked DataLoader workers to copy
            self._offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
            self._ids = np.concatenate(ids_chunks)
            self._labels = np.concatenate(label_chunks)
            self._conversations = None
        else:
            self._conversations = conversations

    def _skip_summary(self) -> str:
        parts = []
        labels = {"missing_point_file": "missing point file", "unencodable": "cannot be encoded",
                  "corrupt_colour": "known corrupt colour"}
        for reason, text in labels.items():
            if self.stats[reason]:
                eg = "; ".join(f"{oid}: {why}" for _, oid, why in self.skipped[reason][:2])
                parts.append(f"{self.stats[reason]} {text} (e.g. {eg})")
        return ", ".join(parts)

    def _warn_skips(self) -> None:
        if not (self.stats["missing_point_file"] or self.stats["unencodable"]):
            return  # the corrupt-colour drop is PointLLM's documented behaviour, counted but not warned about
        warnings.warn(
            f"PointLLMDataset skipped {self.stats['missing_point_file'] + self.stats['unencodable']} of "
            f"{self.stats['records']} records: {self._skip_summary()}; see dataset.stats and dataset.skipped",
            DatasetWarning,
            stacklevel=4,
        )

    def _encode(self, convs):
        return encode_conversation(self.tokenizer, convs, template=self.template,
                                   num_point_tokens=self.num_point_tokens, max_length=self.max_length)

    # ---- access ------------------------------------------------------------------------------------------
    @classmethod
    def for_model(cls, config, tokenizer, anno_paths, point_dir, **overrides) -> "PointLLMDataset":
        """A dataset matched to a model's :class:`~enel.model.configuration_enel.EnelConfig`.

        Takes ``template``, ``num_point_tokens``, ``num_points`` (the embedding's resolution) and ``use_color``
        from ``config``; ``overrides`` replace any of them or set the other arguments.
        """
        kwargs = dict(
            template=config.conversation_template,
            num_point_tokens=config.num_point_tokens,
            num_points=config.point.num_points,
            use_color=config.point.use_color,
        )
        kwargs.update(overrides)
        return cls(anno_paths, point_dir, tokenizer, **kwargs)

    def __len__(self) -> int:
        return len(self.object_ids)

    def where(self, index: int) -> str:
        """``"<file> record <r>"`` of sample ``index``, for messages."""
        return f"{self.anno_paths[int(self._file_idx[index])]} record {int(self._rec_idx[index])}"

    def conversation_type(self, index: int) -> str:
        return self._type_names[int(self._type_codes[index])]

    def has_points(self, index: int) -> bool:
        return bool(self._has_points[index])

    def point_path(self, index: int) -> Path:
        return _point_path(self.point_dir, self.point_file_pattern, self.object_ids[index])

    def _cloud(self, index: int, object_id: str) -> np.ndarray:
        """The prepared cloud of sample ``index``, from the cache when its object was read before."""
        cache = self._cloud_cache
        arr = cache.get(object_id)
        if arr is not None:
            cache.move_to_end(object_id)
            return arr
        arr = read_point_array(self.point_path(index), use_color=self.use_color, num_points=self.num_points,
                               resample_method=self.resample_method, seed=object_seed(self.seed, object_id))
        while cache and arr.nbytes * (len(cache) + 1) > CLOUD_CACHE_BYTES:
            cache.popitem(last=False)
        if arr.nbytes <= CLOUD_CACHE_BYTES:
            cache[object_id] = arr
        return arr

    def __getitem__(self, index: int) -> dict:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} samples")
        object_id = self.object_ids[index]
        if self._conversations is None:
            lo, hi = int(self._offsets[index]), int(self._offsets[index + 1])
            ids = torch.from_numpy(self._ids[lo:hi].astype(np.int64))
            labels = torch.from_numpy(self._labels[lo:hi].astype(np.int64))
        else:
            try:
                enc = self._encode(self._conversations[index])
            except (ConversationError, SpliceError) as exc:
                raise DatasetError(
                    f"{self.where(index)} (object {object_id}): {exc} (encode_upfront=True skips such samples "
                    "before training)"
                ) from None
            ids = torch.tensor(enc.input_ids, dtype=torch.long)
            labels = torch.tensor(enc.labels, dtype=torch.long)
        cloud = None
        if self._has_points[index]:
            cloud = torch.from_numpy(self._augmented(self._cloud(index, object_id)))
        item = {"input_ids": ids, "labels": labels, "point_cloud": cloud, "object_id": object_id}
        words = self._class_words.get(str(object_id)) if cloud is not None else None
        if words is not None:
            item["class_words"] = words.clone()
        return item

    def class_words(self) -> list[torch.Tensor]:
        """The distinct class names' token ids ``(K_i,)`` that this dataset's items carry (none without
        ``class_names``)."""
        return list({tuple(w.tolist()): w for w in self._class_words.values()}.values())

    def _augmented(self, arr: np.ndarray) -> np.ndarray:
        """A fresh ``(N, C)`` copy of a prepared cloud, augmented (then ``pc_norm`` again) when ``augment`` is on.

        The draw comes from torch's global generator, which the ``Trainer`` checkpoints, so a resumed run draws
        what an uninterrupted one would; rgb is untouched.
        """
        if self.augment is None:
            return arr.copy()
        a = self.augment
        rng = np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))
        out = augment_cloud(arr, rng, yaw_degrees=a["yaw_degrees"], scale=tuple(a["scale"]), jitter=a["jitter"])
        out[:, :3] = pc_norm(out[:, :3])
        return out.astype(np.float32, copy=False)

