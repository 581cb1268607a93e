"""Stage-2 hierarchical geometry aggregation: speed and FLOPs against the same model without it.

What it measures (SmolLM2-135M by default, 30 layers, hidden 576; batch 4; one prompt with a 129-token point
block; four procedural objects of 2048 points each, normalised into the unit sphere):

* **forward** (``torch.no_grad``, eval mode) and **forward + backward** (train mode, answer-token cross-entropy,
  every parameter trainable as in stage 2) wall time, for the model without aggregation and for each
  aggregation variant, with the paper's schedule (aggregate after layers 1-3, propagate after 6-8, aggregate
  after 11-13, propagate after 16-18 of 32) mapped onto the backbone's depth;
* the **sequence length every decoder layer sees** (forward pre-hooks on the decoder layers) and the
  **analytic FLOPs** of the decoder layers, ``lm_head`` and the aggregation modules counted from those lengths
  and the layer sizes (the point embedding, the same in every variant, is left out). As a cross-check,
  ``torch.utils.flop_counter.FlopCounterMode`` counts the matrix products of the untimed warm-up forward per
  module; they must equal the analytic linear part exactly (column "linear = counted"; it does not see SDPA on
  the CPU, so the attention products are analytic only).

Variants (``--variants``):

* ``none`` — the model without aggregation (the baseline);
* ``grid-paper`` — dynamic grid sampling with ``θ = (1, 1, 1)``: cell sizes 0.063 / 0.199 / 0.627, which takes
  the 128 tokens of these objects to ~14 (the paper's "about 1/8");
* ``grid-default`` — the config's default ``θ`` (drawn from N(0, 1) with seed 0): cells of 0.070 / 0.111 /
  0.113 leave most tokens in cells of their own (little reduction; see docs/aggregation.md);
* ``fps`` — the v1 FPS + kNN grouping, 128 → 64 → 32 → 16 tokens with k = 16 / 8 / 4.

The aggregation modules are attached to one model (their gates set to 0.1 so that the backward pass reaches
the attention weights); ``none`` detaches them. Runs are interleaved round by round (every variant once per
round) and the table reports the median, so a load change on a shared machine hits every variant alike.

Usage::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/aggregation.py                  # all variants, 3 rounds
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/aggregation.py --backbone DIR --rounds 1   # any local backbone

The paper's schedule needs a backbone of at least ~19 layers (it is refused on the 4-layer tiny test models).

Writes ``benchmarks/results/aggregation.json``. FLOPs of the backward pass are taken as twice the forward's
(gradients with respect to inputs and weights), so the "fwd+bwd" FLOPs are three times the forward's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from enel.data.conversation import build_prompt, tokenize_prompts  # noqa: E402
from enel.model.aggregation import AggregationConfig, GatedGroupAttention, HierarchicalAggregation  # noqa: E402
from enel.model.modeling_enel import EnelForCausalLM  # noqa: E402

VARIANTS = {
    "none": None,
    "grid-paper": {"grouping": "grid", "grid_theta": [1.0, 1.0, 1.0]},
    "grid-default": {"grouping": "grid"},
    "fps": {"grouping": "fps", "fps_centres": [64, 32, 16], "fps_k": [16, 8, 4]},
}
CATEGORIES = ["chair", "table", "lamp", "mug", "sofa", "bed", "car", "airplane"]


# ---- small local helpers (benchmarks/common.py did not exist when this was written) ----------------------
def _table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    """A plain-text table: ``columns`` are ``(key, header)`` pairs."""
    cells = [[h for _, h in columns]] + [[str(r.get(k, "")) for k, _ in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# ---- inputs ------------------------------------------------------------------------------------------------
def make_clouds(batch: int, num_points: int) -> torch.Tensor:
    """``(batch, num_points, 6)`` procedural objects (xyz in the unit sphere, rgb in [0, 1])."""
    from enel.data.procedural.generate import make_object

    objs = [make_object(CATEGORIES[i % len(CATEGORIES)], i // len(CATEGORIES), num_points=num_points)
            for i in range(batch)]
    return torch.tensor(np.stack([o.points for o in objs]), dtype=torch.float32)


def make_batch(model, tokenizer, batch: int, num_points: int):
    """Inputs, answer-only labels and clouds: one prompt (question + a short answer) repeated ``batch`` times."""
    prompt = build_prompt(tokenizer, "What is this object? Describe it in one sentence.", template="chat",
                          num_point_tokens=model.config.num_point_tokens)
    answer = " It is a wooden chair with four legs and a tall back."
    enc = tokenize_prompts(tokenizer, [prompt + answer] * batch, "chat")
    labels = torch.full_like(enc["input_ids"], -100)
    n_answer = len(tokenizer(answer, add_special_tokens=False)["input_ids"])
    labels[:, -n_answer:] = enc["input_ids"][:, -n_answer:]
    return dict(enc), labels, make_clouds(batch, num_points)


# ---- FLOPs --------------------------------------------------------------------------------------------------
def layer_flops(text_config, batch: int, length: int) -> tuple[int, int]:
    """Forward FLOPs of one Llama decoder layer on ``(batch, length)`` tokens: ``(linear, attention)``.

    ``linear``: the q/k/v/o projections and the gated MLP. ``attention``: the full ``length × length`` score and
    value products (SDPA with an additive mask computes every entry). Norms, RoPE and SiLU are left out.
    """
    h = text_config.hidden_size
    heads = text_config.num_attention_heads
    kv = text_config.num_key_value_heads
    hd = getattr(text_config, "head_dim", None) or h // heads
    inter = text_config.intermediate_size
    tokens = batch * length
    proj = 2 * tokens * h * (heads * hd + 2 * kv * hd) + 2 * tokens * heads * hd * h
    mlp = 2 * 3 * tokens * h * inter
    attn = 2 * 2 * batch * heads * length * length * hd
    return proj + mlp, attn


def aggregation_flops(records: list[dict], hidden: int, attn_dim: int) -> tuple[int, int]:
    """Forward FLOPs of the gated group attention calls recorded by :func:`_record_attention`: ``(linear, attention)``.

    Per call: q/k/v on the ``B·P`` fine tokens and the output projection on the real member slots (linear);
    scores and values inside the ``B·G`` groups of ``K`` slots (attention). Pooling, gathers and the grouping
    itself are not counted.
    """
    linear = attention = 0
    for r in records:
        linear += 2 * r["tokens"] * hidden * 3 * attn_dim + 2 * r["valid_slots"] * attn_dim * hidden
        attention += 2 * 2 * r["groups"] * r["k"] * r["k"] * attn_dim
    return linear, attention


def _counted(counter, prefix: str) -> int:
    """FLOPs that ``FlopCounterMode`` attributed to the modules named ``prefix<digits>`` (or ``prefix`` itself)."""
    total = 0
    for name, ops_ in counter.get_flop_counts().items():
        tail = name[len(prefix):] if name.startswith(prefix) else None
        if tail is not None and (tail == "" or tail.isdigit()):
            total += sum(ops_.values())
    return total


def _record_lengths(model) -> tuple[list[int], list]:
    lengths: list[int] = []

    def pre_hook(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        lengths.append(int(hidden.shape[1]))

    handles = [layer.register_forward_pre_hook(pre_hook, with_kwargs=True) for layer in model.model.language_model.layers]
    return lengths, handles


def _record_attention(model) -> tuple[list[dict], list]:
    records: list[dict] = []

    def hook(module, args):
        tokens, members, valid = args
        b, g, k = members.shape
        records.append({"tokens": b * tokens.shape[1], "groups": b * g, "k": k, "valid_slots": int(valid.sum())})

    handles = [m.register_forward_pre_hook(hook) for m in model.modules() if isinstance(m, GatedGroupAttention)]
    return records, handles


# ---- timing -------------------------------------------------------------------------------------------------
def _forward(model, inputs, clouds):
    model.eval()
    with torch.no_grad():
        model(**inputs, point_clouds=clouds)


def _forward_backward(model, inputs, labels, clouds):
    model.train()
    model.zero_grad(set_to_none=True)
    out = model(**inputs, point_clouds=clouds, labels=labels)
    out.loss.backward()


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="smollm2", help="smollm2 (default), tiny-llama, or a local HF folder")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--num-points", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (each runs every variant once)")
    parser.add_argument("--variants", default="none,grid-paper,grid-default,fps",
                        help=f"comma-separated, from {sorted(VARIANTS)}")
    parser.add_argument("--no-backward", action="store_true", help="time the forward pass only")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "aggregation.json"))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; choose from {sorted(VARIANTS)}")
    if "none" not in names:
        names.insert(0, "none")

    torch.manual_seed(0)
    model, tokenizer = EnelForCausalLM.from_backbone(args.backbone, point_config="small")
    text = model.config.text_config
    n_layers = text.num_hidden_layers
    eps = getattr(text, "rms_norm_eps", 1e-6)
    modules = {}
    for name in names:
        if VARIANTS[name] is None:
            modules[name] = None
            continue
        cfg = AggregationConfig.from_dict({"enabled": True, **VARIANTS[name]})
        agg = HierarchicalAggregation(cfg, text.hidden_size, n_layers, eps)
        with torch.no_grad():
            for attn in agg.attn:
                attn.gate.fill_(0.1)
        modules[name] = agg
    inputs, labels, clouds = make_batch(model, tokenizer, args.batch, args.num_points)

    results: dict[str, dict] = {}
    for name in names:  # untimed warm-up: lengths, analytic and counted FLOPs
        model.model.aggregation = modules[name]
        lengths, h1 = _record_lengths(model)
        records, h2 = _record_attention(model)
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        model.eval()
        with torch.no_grad(), counter:
            model(**inputs, point_clouds=clouds)
        for h in h1 + h2:
            h.remove()
        per_layer = [layer_flops(text, args.batch, n) for n in lengths]
        dec_linear = sum(x for x, _ in per_layer)
        dec = dec_linear + sum(y for _, y in per_layer)
        head = 2 * args.batch * lengths[0] * text.hidden_size * text.vocab_size
        agg_linear, agg_attn = (aggregation_flops(records, text.hidden_size, modules[name].cfg.attn_dim)
                                if modules[name] else (0, 0))
        counted_dec = _counted(counter, "EnelForCausalLM.model.language_model.layers.")
        counted_agg = _counted(counter, "EnelForCausalLM.model.aggregation.attn.")
        counted_head = _counted(counter, "EnelForCausalLM.lm_head")
        # FlopCounterMode counts the matrix products (not SDPA on the CPU): they must equal the analytic linear part
        check = (counted_dec, counted_agg, counted_head) == (dec_linear, agg_linear, head)
        events = modules[name].events if modules[name] else []
        results[name] = {
            "layer_lengths": lengths,
            "point_block_per_layer": [n - lengths[0] + (model.config.num_point_tokens - 1) for n in lengths],
            "events": [(layer + 1, kind) for layer, kind, _, _ in events],
            "cell_sizes": [round(s, 4) for s in modules[name]._cell_sizes] if modules[name] else [],
            "flops_decoder": dec,
            "flops_decoder_linear": dec_linear,
            "flops_lm_head": head,
            "flops_aggregation": agg_linear + agg_attn,
            "flops_aggregation_linear": agg_linear,
            "flops_analytic": dec + head + agg_linear + agg_attn,
            "flops_counted_linear": {"decoder": counted_dec, "aggregation": counted_agg, "lm_head": counted_head},
            "flops_counted_match": check,
            "flops_counted_whole_forward": int(counter.get_total_flops()),
            "forward_s": [],
            "forward_backward_s": [],
        }
        if not args.no_backward:  # warm the backward path too
            _forward_backward(model, inputs, labels, clouds)

    for _ in range(args.rounds):
        for name in names:
            model.model.aggregation = modules[name]
            results[name]["forward_s"].append(_timed(lambda: _forward(model, inputs, clouds)))
        if args.no_backward:
            continue
        for name in names:
            model.model.aggregation = modules[name]
            results[name]["forward_backward_s"].append(
                _timed(lambda: _forward_backward(model, inputs, labels, clouds)))
    model.model.aggregation = None

    base = results["none"]
    rows = []
    for name in names:
        r = results[name]
        r["forward_median_s"] = statistics.median(r["forward_s"]) if r["forward_s"] else None
        r["forward_backward_median_s"] = (statistics.median(r["forward_backward_s"])
                                          if r["forward_backward_s"] else None)
        r["time_ratio_forward"] = (r["forward_median_s"] / base["forward_median_s"]) if r["forward_s"] else None
        r["time_ratio_forward_backward"] = (r["forward_backward_median_s"] / base["forward_backward_median_s"]
                                            if r["forward_backward_s"] else None)
        r["flops_ratio"] = r["flops_analytic"] / base["flops_analytic"]
        r["flops_saving"] = 1.0 - r["flops_ratio"]
        r["decoder_flops_saving"] = 1.0 - r["flops_decoder"] / base["flops_decoder"]
        min_block = min(r["point_block_per_layer"])
        rows.append({
            "variant": name,
            "min_block": min_block,
            "fwd_s": f"{r['forward_median_s']:.3f}" if r["forward_s"] else "-",
            "fwd_x": f"{r['time_ratio_forward']:.3f}" if r["forward_s"] else "-",
            "fb_s": f"{r['forward_backward_median_s']:.3f}" if r["forward_backward_s"] else "-",
            "fb_x": f"{r['time_ratio_forward_backward']:.3f}" if r["forward_backward_s"] else "-",
            "gflop": f"{r['flops_analytic'] / 1e9:.1f}",
            "agg_gflop": f"{r['flops_aggregation'] / 1e9:.2f}",
            "check": "yes" if r["flops_counted_match"] else "NO",
            "saving": f"{100 * r['flops_saving']:.1f}%",
            "dec_saving": f"{100 * r['decoder_flops_saving']:.1f}%",
        })
    columns = [("variant", "variant"), ("min_block", "min block"), ("fwd_s", "fwd s"), ("fwd_x", "fwd ×base"),
               ("fb_s", "fwd+bwd s"), ("fb_x", "fwd+bwd ×base"), ("gflop", "fwd GFLOP"),
               ("agg_gflop", "of which agg"), ("check", "linear = counted"), ("saving", "FLOP saving"),
               ("dec_saving", "decoder saving")]
    print(f"\nbackbone {args.backbone} ({n_layers} layers, hidden {text.hidden_size}), batch {args.batch}, "
          f"sequence {inputs['input_ids'].shape[1]} tokens, {args.num_points} points per cloud, "
          f"{torch.get_num_threads()} threads, median of {args.rounds} rounds")
    print(_table(rows, columns))
    for name in names:
        r = results[name]
        if r["events"]:
            print(f"{name}: point block per layer {r['point_block_per_layer']}")
    report = {
        "benchmark": "aggregation",
        "argv": sys.argv[1:] if argv is None else argv,
        "backbone": args.backbone,
        "layers": n_layers,
        "hidden": text.hidden_size,
        "batch": args.batch,
        "sequence": int(inputs["input_ids"].shape[1]),
        "num_points": args.num_points,
        "rounds": args.rounds,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "processor": platform.processor(),
        "load_average_end": _load_average(),
        "flops_backward_rule": "fwd+bwd FLOPs = 3 x forward",
        "variants": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
