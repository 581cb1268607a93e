"""Attention maps (``enel eval attention``): where the text looks in the point cloud (the paper's Figure 1b / 5).

For one cloud and one question the model runs a single forward pass over the prompt (and, optionally, its own
greedy answer) with the backbone's *eager* attention, and a forward hook on ``layers[i].self_attn`` keeps the
attention probabilities of the chosen layer (the paper uses the last). They are averaged

1. over the heads, then
2. over the **query** tokens: the text after ``<point_end>`` — the question and the chat template's turn
   markers (``queries="question"``, default), the generated answer (``"answer"``) or both (``"both"``);

and the columns of the 128 geometric point tokens are taken. Definitions (all ``(G,)`` with ``G = 128``):

* ``token_mass[j]`` — the mean attention probability the query tokens give to geometric token ``j``. Each
  query row sums to 1 over all keys, so ``token_mass.sum() + class_mass + text_mass == 1`` (``class_mass``:
  the class token; ``text_mass``: every other key, including ``<point_start>`` / ``<point_end>`` and the
  system prompt).
* ``token_weights = token_mass / token_mass.sum()`` — the distribution over the geometric tokens (sums to 1).
  This is what is drawn.

**From tokens to points.** A geometric token is the max-pool of the last embedding stage over the ``k`` nearest
of the 256 stage-2 centres around its FPS centre, each of which pooled ``k`` of the 512 stage-1 centres, each of
which pooled ``k`` raw points: its receptive field is a blob around its centre, and neighbouring fields overlap.
We use the **nearest-centre rule** (``mapping="nearest"``, default): each raw point takes the weight of the token
whose centre is nearest to it (ties: the lower token index). The token centres partition the cloud into
Voronoi cells, every point belongs to exactly one token, no weight is counted twice, and a token's own centre
— itself one of the input points, FPS picks input points — carries exactly that token's weight. Chaining the
receptive fields back through the three stages would make every point belong to many tokens (and needs the
embedding's FPS / kNN to be replayed); we did not choose it. ``mapping="idw"`` blends the ``k = 3`` nearest
token centres with inverse-distance weights (smoother borders between cells, same weights at the centres).

**Aggregated layers** (stage-2 models). Inside an aggregation span the decoder sees fewer point tokens (one per
group). The model returns the layout every layer saw (``output_layouts=True``); the group tokens' attention is
carried back to the 128 tokens through the layout's ``group_maps`` (one per aggregation, innermost undone first),
a group's mass split equally among its members (so the masses still sum as above). The layers outside the spans
(the last layer included) see the full block and need no mapping.

Outputs per object (``out_dir/<name>/``): ``attention.png`` (matplotlib, the object's colours beside the
attention map, perceptual colour map ``inferno``), ``attention.html`` (self-contained: the points and an inline
canvas viewer, drag to rotate, wheel to zoom — no network needed to view it), ``attention.json`` (per-token
weights, masses, centres, the answer and the settings) and ``attention.npz`` (``points (N, 6)``,
``point_weights (N,)``, ``token_weights (G,)``, ``centres (G, 3)``). ``out_dir/attention.json`` indexes them.
"""

from __future__ import annotations

import html
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import ConfigError
from .plotting import render_attention_html, render_attention_png
from .results import atomic_write_json

__all__ = [
    "QUERY_MODES",
    "MAPPINGS",
    "PointAttention",
    "resolve_layer",
    "point_token_attention",
    "tokens_to_points",
    "render_attention_png",
    "render_attention_html",
    "save_attention",
    "attention_for_objects",
    "procedural_files",
]

QUERY_MODES: tuple[str, ...] = ("question", "answer", "both")
MAPPINGS: tuple[str, ...] = ("nearest", "idw")


@dataclass
class PointAttention:
    """The attention of the text over one cloud's point tokens at one layer.

    Attributes:
        layer: 1-based decoder layer number.
        question: the question asked; ``answer``: the model's greedy answer (None when not generated).
        queries: which text tokens were averaged (:data:`QUERY_MODES`).
        token_mass: ``(G,)`` mean attention probability each geometric token receives.
        token_weights: ``(G,)`` ``token_mass`` normalised to sum 1.
        class_mass, text_mass: mean attention on the class token and on every other key.
        centres: ``(G, 3)`` token centres (in the normalised cloud's coordinates).
        points: ``(N, 6)`` the cloud fed to the model.
        key_index: sequence indices of the point-block keys the layer saw (``(P,)``, ``P = G`` unless aggregated).
        query_index: sequence indices (in that layer's sequence) of the averaged query tokens.
        block_tokens: ``P``, point tokens in the layer's sequence.
    """

    layer: int
    question: str
    answer: str | None
    queries: str
    token_mass: np.ndarray
    token_weights: np.ndarray
    class_mass: float
    text_mass: float
    centres: np.ndarray
    points: np.ndarray
    key_index: np.ndarray
    query_index: np.ndarray
    block_tokens: int
    info: dict = field(default_factory=dict)

    @property
    def point_mass(self) -> float:
        """Share of the queries' attention that lands on the geometric tokens."""
        return float(self.token_mass.sum())


def resolve_layer(layer: int, num_layers: int) -> int:
    """``layer`` (1-based, or negative from the end: -1 = last) → 0-based index; ConfigError when out of range."""
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)):
        raise ConfigError(f"layer must be an integer, got {layer!r}")
    if 1 <= layer <= num_layers:
        return int(layer) - 1
    if -num_layers <= layer <= -1:
        return num_layers + int(layer)
    raise ConfigError(f"layer {layer} does not exist: the backbone has {num_layers} decoder layers "
                      f"(use 1..{num_layers}, or -1 for the last)")


# ----------------------------------------------------------------------------------------------------------
# Capturing the attention
# ----------------------------------------------------------------------------------------------------------
class _Capture:
    """Forward hook on one attention module that keeps its probabilities; eager attention and eval mode inside."""

    def __init__(self, model, layer_idx: int):
        self.model = model
        self.lm = model.model.language_model
        self.layer_idx = layer_idx
        self.weights = None  # (B, heads, L, L) float32 after the forward

    def _hook(self, module, args, output):
        if not isinstance(output, tuple) or len(output) < 2 or output[1] is None:
            raise RuntimeError("the attention module returned no attention probabilities; eager attention is "
                               "needed (model.set_attn_implementation('eager'))")
        self.weights = output[1].detach().float()

    def __enter__(self):
        self.prev_impl = self.lm.config._attn_implementation
        self.was_training = self.model.training
        self.model.eval()
        self.model.set_attn_implementation("eager")
        self.handle = self.lm.layers[self.layer_idx].self_attn.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc):
        self.handle.remove()
        self.model.set_attn_implementation(self.prev_impl)
        self.model.train(self.was_training)
        return False


def _to_fine(mass, group_maps: tuple):
    """Carry ``(P',)`` group-token masses (a tensor) back to the ``(G,)`` original tokens through a layout's
    ``group_maps``, splitting each group's mass equally among its members (innermost aggregation first)."""
    import torch

    for group_of in reversed(group_maps):
        group_of = group_of[0]
        valid = group_of >= 0
        g = group_of.clamp(min=0)
        counts = torch.bincount(g[valid], minlength=mass.shape[0]).clamp(min=1).to(mass.dtype)
        mass = torch.where(valid, mass[g] / counts[g], torch.zeros_like(mass[g]))
    return mass


def point_token_attention(model, tokenizer, cloud: np.ndarray, question: str, *, layer: int = -1,
                          queries: str = "question", answer_tokens: int = 32) -> PointAttention:
    """The text's attention over the geometric point tokens of one cloud at one decoder layer.

    Args:
        model: an :class:`~enel.model.EnelForCausalLM` (any attention implementation; eager is switched on for
            the pass and switched back).
        cloud: ``(N, 6)`` float32, normalised as the model takes it (:func:`enel.inference.prepare_cloud`).
        question: the user turn after the point block.
        layer: 1-based decoder layer, or negative from the end (-1 = the last, as the paper).
        queries: ``"question"`` (text after ``<point_end>`` in the prompt), ``"answer"`` (the generated answer)
            or ``"both"``.
        answer_tokens: greedy answer length; 0 skips generating (not allowed with ``"answer"`` / ``"both"``).

    Returns:
        :class:`PointAttention` (weights over the ``G`` geometric tokens; see the module docstring).
    """
    import torch

    with torch.no_grad():
        return _point_token_attention(model, tokenizer, cloud, question, layer=layer, queries=queries,
                                      answer_tokens=answer_tokens)


def _point_token_attention(model, tokenizer, cloud, question, *, layer, queries, answer_tokens) -> PointAttention:
    import torch

    from ..data.conversation import build_prompt, tokenize_prompts
    from ..model.splice import point_token_index

    if queries not in QUERY_MODES:
        raise ConfigError(f"queries must be one of {', '.join(QUERY_MODES)}, not {queries!r}")
    if queries != "question" and answer_tokens < 1:
        raise ConfigError(f"queries={queries!r} needs a generated answer: answer_tokens must be positive")
    cloud = np.asarray(cloud, dtype=np.float32)
    if cloud.ndim != 2 or cloud.shape[1] != 6:
        raise ConfigError(f"the cloud must be (N, 6) xyz + rgb, got shape {cloud.shape}")
    cfg = model.config
    lm = model.model.language_model
    li = resolve_layer(layer, len(lm.layers))
    device = next(model.parameters()).device
    prompt = build_prompt(tokenizer, question, template=cfg.conversation_template,
                          num_point_tokens=cfg.num_point_tokens)
    enc = tokenize_prompts(tokenizer, [prompt], cfg.conversation_template)
    ids = enc["input_ids"].to(device)
    prompt_len = ids.shape[1]
    points = torch.from_numpy(cloud[None]).to(device)

    answer = None
    if answer_tokens > 0:
        was_training = model.training
        model.eval()
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), point_clouds=points,
                             max_new_tokens=answer_tokens, do_sample=False, num_beams=1,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        model.train(was_training)
        new = out[0, prompt_len:]
        stop = {t for t in (tokenizer.eos_token_id, tokenizer.pad_token_id) if t is not None}
        keep = []
        for t in new.tolist():
            if t in stop:
                break
            keep.append(t)
        answer = tokenizer.decode(keep, skip_special_tokens=True).strip()
        if queries != "question":
            ids = torch.cat([ids, torch.tensor([keep], dtype=ids.dtype, device=device)], dim=1)
    if queries == "answer" and ids.shape[1] == prompt_len:
        raise ConfigError("the model's answer is empty, so there are no answer tokens to average; use "
                          "queries='question'")

    with _Capture(model, li) as cap:
        out = model.model(input_ids=ids, attention_mask=torch.ones_like(ids), point_clouds=points,
                          output_layouts=True)
    if out.point_starts is None or int(out.point_starts[0]) < 0:
        raise ConfigError("the prompt holds no point block; is this an ENEL model folder?")
    starts = out.point_starts[:1]
    g = cfg.num_point_tokens - 1
    layout = out.layouts[li]  # the sequence this layer saw: with aggregation, a shorter point block
    attn = cap.weights[0].mean(0)  # (L_l, L_l), heads averaged
    p = layout.block_len
    valid = layout.point_valid[0]
    shift = ids.shape[1] - layout.length  # tokens after the block moved left by this much in this layer's sequence
    key_index = layout.block_index()[0]
    class_index = int(point_token_index(starts, 1)[0, 0])
    text_from = int(point_token_index(starts, 1, first=g + 2)[0, 0]) - shift  # first token after <point_end>
    if queries == "question":
        q_lo, q_hi = text_from, prompt_len - shift
    elif queries == "answer":
        q_lo, q_hi = prompt_len - shift, ids.shape[1] - shift
    else:
        q_lo, q_hi = text_from, ids.shape[1] - shift
    if q_hi <= q_lo:
        raise ConfigError("no text tokens follow the point block to average over")
    query_index = torch.arange(q_lo, q_hi, device=attn.device)
    row = attn[query_index].mean(0)  # (L_l,): mean attention of the query tokens over every key
    block_mass = torch.where(valid, row[key_index], torch.zeros_like(row[key_index]))
    class_mass = float(row[class_index])
    text_mass = float(row.sum()) - float(block_mass.sum()) - class_mass
    mass = _to_fine(block_mass, layout.group_maps)
    mass_np = mass.double().cpu().numpy()
    total = mass_np.sum()
    weights = mass_np / total if total > 0 else np.full_like(mass_np, 1.0 / len(mass_np))
    return PointAttention(
        layer=li + 1, question=question, answer=answer, queries=queries, token_mass=mass_np,
        token_weights=weights, class_mass=class_mass, text_mass=text_mass,
        centres=out.point_block.centres[0].float().cpu().numpy(), points=cloud,
        key_index=key_index.cpu().numpy(), query_index=query_index.cpu().numpy(), block_tokens=int(p),
        info={"aggregated_layer": bool(layout.group_maps), "sequence_length": int(attn.shape[0])},
    )


# ----------------------------------------------------------------------------------------------------------
# Tokens → points
# ----------------------------------------------------------------------------------------------------------
def tokens_to_points(token_weights: np.ndarray, centres: np.ndarray, xyz: np.ndarray, *, mapping: str = "nearest",
                     k: int = 3) -> np.ndarray:
    """Per-point weights from per-token weights (module docstring: the nearest-centre rule).

    Args:
        token_weights: ``(G,)``.
        centres: ``(G, 3)`` token centres.
        xyz: ``(N, 3)`` the points to colour.
        mapping: ``"nearest"`` — the weight of the nearest centre (ties: lower token index); ``"idw"`` —
            inverse-distance blend of the ``k`` nearest centres (a point on a centre takes that centre's weight).

    Returns:
        ``(N,)`` float64.
    """
    if mapping not in MAPPINGS:
        raise ConfigError(f"mapping must be one of {', '.join(MAPPINGS)}, not {mapping!r}")
    w = np.asarray(token_weights, dtype=np.float64)
    c = np.asarray(centres, dtype=np.float64)
    x = np.asarray(xyz, dtype=np.float64)[:, :3]
    if c.shape != (len(w), 3):
        raise ConfigError(f"centres must be ({len(w)}, 3) for {len(w)} token weights, got {c.shape}")
    out = np.empty(len(x), dtype=np.float64)
    chunk = 8192
    for i in range(0, len(x), chunk):
        d = ((x[i:i + chunk, None, :] - c[None, :, :]) ** 2).sum(-1)  # (n, G) squared distances
        if mapping == "nearest":
            out[i:i + chunk] = w[np.argmin(d, axis=1)]
            continue
        kk = min(k, len(w))
        idx = np.argsort(d, axis=1, kind="stable")[:, :kk]
        dist = np.sqrt(np.take_along_axis(d, idx, axis=1))
        inv = 1.0 / np.maximum(dist, 1e-12)
        blend = (w[idx] * inv).sum(1) / inv.sum(1)
        on_centre = dist[:, 0] < 1e-9
        blend[on_centre] = w[idx[on_centre, 0]]
        out[i:i + chunk] = blend
    return out


# ----------------------------------------------------------------------------------------------------------
# Saving and the batch helper
# ----------------------------------------------------------------------------------------------------------
def save_attention(att: PointAttention, out_dir, *, name: str, mapping: str = "nearest", up: str = "z",
                   meta: dict | None = None) -> dict[str, Path]:
    """Write ``attention.png``, ``attention.html``, ``attention.json`` and ``attention.npz`` to ``out_dir``.

    Returns:
        ``{"png", "html", "json", "npz"}`` paths.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    point_weights = tokens_to_points(att.token_weights, att.centres, att.points[:, :3], mapping=mapping)
    title = f"{name}: layer {att.layer}, {att.queries} tokens"
    answer = f" — answer: “{att.answer}”" if att.answer is not None else ""
    meta_html = (f"question: <b>{html.escape(att.question)}</b>{html.escape(answer)}<br>"
                 f"{att.point_mass * 100:.1f}% of the text's attention is on the 128 geometric tokens "
                 f"(class token {att.class_mass * 100:.1f}%); mapping: {mapping}"
                 + (f"<br>model {html.escape(str(meta.get('model')))}, seed {meta.get('seed')}" if meta else ""))
    paths = {
        "png": render_attention_png(att.points, point_weights, out_dir / "attention.png", title=title, up=up),
        "html": render_attention_html(att.points, point_weights, out_dir / "attention.html", title=title,
                                      meta_html=meta_html, up=up),
    }
    np.savez(out_dir / "attention.npz", points=att.points.astype(np.float32),
             point_weights=point_weights.astype(np.float32), token_weights=att.token_weights.astype(np.float32),
             token_mass=att.token_mass.astype(np.float32), centres=att.centres.astype(np.float32))
    paths["npz"] = out_dir / "attention.npz"
    top = np.argsort(-att.token_weights, kind="stable")[:5]
    doc = {
        "name": name, "layer": att.layer, "question": att.question, "answer": att.answer, "queries": att.queries,
        "mapping": mapping, "point_mass": att.point_mass, "class_mass": att.class_mass, "text_mass": att.text_mass,
        "block_tokens": att.block_tokens, "aggregated_layer": att.info.get("aggregated_layer", False),
        "num_points": int(len(att.points)),
        "top_tokens": [{"token": int(j), "weight": float(att.token_weights[j]),
                        "centre": [round(float(v), 4) for v in att.centres[j]]} for j in top],
        "token_weights": [float(v) for v in att.token_weights],
        "token_mass": [float(v) for v in att.token_mass],
        "centres": np.round(att.centres.astype(np.float64), 5).tolist(),
        "key_index": att.key_index.tolist(), "query_index": att.query_index.tolist(),
        "meta": meta or {},
    }
    paths["json"] = atomic_write_json(out_dir / "attention.json", doc)
    return paths


def procedural_files(data_dir, split: str = "test", n: int = 4) -> list[Path]:
    """Point files of ``n`` objects of a procedural split, one category after another (for quick maps)."""
    from .generate import pick_round_robin
    from ..data.procedural.generate import load_objects

    data_dir = Path(data_dir)
    manifest = json.loads((data_dir / "manifest.json").read_text(encoding="utf-8")) if (
        data_dir / "manifest.json").is_file() else None
    if manifest is None:
        raise ConfigError(f"{data_dir / 'manifest.json'} not found; generate the data with `enel data synth`")
    objs = pick_round_robin(load_objects(data_dir, split), n)
    folder = data_dir / manifest["npy_dir"]
    return [folder / f"{o['object_id']}_{manifest['num_points']}.npy" for o in objs]


def _name_of(path: Path) -> str:
    stem = path.stem
    head, _, tail = stem.rpartition("_")
    return head if head and tail.isdigit() else stem


def attention_for_objects(model_dir, files_or_objects: Sequence, out_dir, layer: int = -1, *,
                          question: str = "What is this?", queries: str = "question", num_points: int | None = None,
                          mapping: str = "nearest", up: str = "z", seed: int = 0, answer_tokens: int = 32,
                          command: str | None = None, model=None, tokenizer=None,
                          log: Callable[[str], None] | None = print) -> list[dict[str, Path]]:
    """Attention maps of a few objects; writes one folder per object and ``out_dir/attention.json``.

    Args:
        model_dir: the model folder (or pass ``model`` and ``tokenizer`` already loaded).
        files_or_objects: point-cloud / mesh paths, or ``(name, array (N, 3|6))`` pairs.
        layer: 1-based decoder layer, or negative from the end (default the last, as the paper).
        num_points: resample each cloud to this many points (default: the model's ``point.num_points``).
        mapping, up, queries, answer_tokens: see :func:`point_token_attention`, :func:`tokens_to_points`.

    Returns:
        one ``{"png", "html", "json", "npz"}`` dict per object, in input order.
    """
    from ..inference import prepare_cloud
    from ..model.saving import load_model
    from .generate import cli_command

    if model is None or tokenizer is None:
        model, tokenizer = load_model(model_dir)
    n_points = int(num_points or model.config.point.num_points)
    out_dir = Path(out_dir)
    layers = len(model.model.language_model.layers)
    layer_number = resolve_layer(layer, layers) + 1
    if mapping not in MAPPINGS:
        raise ConfigError(f"mapping must be one of {', '.join(MAPPINGS)}, not {mapping!r}")
    meta = {"model": str(Path(model_dir).resolve()) if model_dir is not None else None,
            "backbone": model.config.backbone, "layer": layer_number, "layer_requested": layer,
            "num_layers": layers, "question": question,
            "queries": queries, "num_points": n_points, "mapping": mapping, "seed": seed,
            "command": command or cli_command() or f"enel.eval.attention_for_objects(model_dir={str(model_dir)!r}, "
                                                    f"layer={layer}, question={question!r})"}
    entries, all_paths, used = [], [], set()
    for obj in files_or_objects:
        if isinstance(obj, (str, os.PathLike)):
            name, source = _name_of(Path(obj)), os.fspath(obj)
        else:
            name, source = str(obj[0]), np.asarray(obj[1])
        base, k = name, 2
        while name in used:
            name, k = f"{base}_{k}", k + 1
        used.add(name)
        cloud, _ = prepare_cloud(source, n_points, seed=seed)
        att = point_token_attention(model, tokenizer, cloud, question, layer=layer, queries=queries,
                                    answer_tokens=answer_tokens)
        paths = save_attention(att, out_dir / name, name=name, mapping=mapping, up=up,
                               meta={**meta, "source": source if isinstance(source, str) else "array"})
        all_paths.append(paths)
        entries.append({"name": name, "source": source if isinstance(source, str) else "array",
                        "answer": att.answer, "layer": att.layer, "point_mass": att.point_mass,
                        **{k: str(p.relative_to(out_dir)) for k, p in paths.items()}})
        if log:
            log(f"[attention] {name}: layer {att.layer}, {att.point_mass * 100:.1f}% of the text attention on the "
                f"point tokens → {paths['png']}")
    atomic_write_json(out_dir / "attention.json", {"meta": meta, "objects": entries})
    return all_paths
