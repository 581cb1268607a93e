"""Stage-2 hierarchical geometry aggregation: speed and FLOPs against the same model without it.

What it measures (SmolLM2-135M by default, 30 layers, hidden 576; batch 4; one prompt with a 129-token point
block; four procedural objects of 2048 points each, normalised into the unit sphere):

* **forward** (``torch.no_grad``, eval mode) and **forward + backward** (train mode, answer-token cross-entropy,
  every parameter trainable as in stage 2) wall time, for the model without aggregation and for each
  aggregation variant, with the default schedule (the paper's two blocks with H = 2: aggregate after layers
  1-3, propagate after 5-7, aggregate after 11-13, propagate after 15-17 of 32; the results in
  docs/aggregation.md were measured with the default before issue 18, propagate after 6-8 / 16-18) mapped onto
  the backbone's depth;
* the **sequence length every decoder layer sees** (forward pre-hooks on the decoder layers) and the
  **analytic FLOPs** of the decoder layers, ``lm_head`` and the aggregation modules counted from those lengths
  and the layer sizes (the point embedding, the same in every variant, is left out). As a cross-check,
  ``torch.utils.flop_counter.FlopCounterMode`` counts the matrix products of the untimed warm-up forward per
  module; they must equal the analytic matrix products exactly (column "matmuls = counted"; it does not see
  SDPA on the CPU, so the attention products are analytic only).

Variants (``--variants``):

* ``none`` — the model without aggregation (the baseline);
* ``grid-paper`` — dynamic grid sampling with ``θ = (1, 1, 1)``: cell sizes 0.063 / 0.199 / 0.627, which takes
  the 128 tokens of these objects to ~14 (the paper's "about 1/8");
* ``grid-default`` — a draw of ``θ`` from N(0, 1) with seed 0 (the paper's init; the config default is θ = 1): cells of 0.070 / 0.111 /
  0.113 leave most tokens in cells of their own (little reduction; see docs/aggregation.md);
* ``fps`` — the v1 FPS + kNN grouping, 128 → 64 → 32 → 16 tokens with k = 16 / 8 / 4.

The aggregation modules are attached to one model (their gates set to 0.1 so that the backward pass reaches
the attention weights); ``none`` detaches them. Runs are interleaved round by round (every variant once per
round), so a load change on a shared machine hits every variant alike.

Usage::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/aggregation.py --threads 1      # all variants, 5 rounds
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/aggregation.py --device cuda    # on an accelerator
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/aggregation.py --backbone DIR --rounds 1   # any local backbone

The paper's schedule needs a backbone of at least ~19 layers (it is refused on the 4-layer tiny test models).
On a shared CPU, ``--threads 1`` gives reproducible ratios: with two threads every torch op may wait for the
second OpenMP thread to be scheduled, a penalty that scales with the op count, not the FLOPs.

Writes ``benchmarks/results/aggregation.json`` (helpers from ``benchmarks/common.py``). The forward FLOPs are
those of the timed eval forward (logits at every position). The backward pass is taken as twice the forward
(gradients with respect to inputs and weights), and training computes logits at the labelled positions only,
so "fwd+bwd" FLOPs are ``3 × (decoder + aggregation + lm_head at the labelled positions)``. Times: the best run
is the headline (other processes only ever make a run slower), the median is given beside it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import machine_info, print_table, set_threads, write_json  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from enel.data.conversation import build_prompt, tokenize_prompts  # noqa: E402
from enel.model.aggregation import GatedGroupAttention, HierarchicalAggregation  # noqa: E402
from enel.model.configuration_enel import AggregationConfig  # noqa: E402
from enel.model.modeling_enel import EnelForCausalLM  # noqa: E402

VARIANTS = {
    "none": None,
    "grid-paper": {"grouping": "grid", "grid_theta": [1.0, 1.0, 1.0]},
    "grid-default": {"grouping": "grid", "grid_theta_seed": 0},
    "fps": {"grouping": "fps", "fps_centres": [64, 32, 16], "fps_k": [16, 8, 4]},
}
CATEGORIES = ["chair", "table", "lamp", "mug", "sofa", "bed", "car", "airplane"]


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


def aggregation_flops(records: list[dict]) -> tuple[int, int]:
    """Forward FLOPs of the gated group attention calls recorded by :func:`_record_attention`: ``(linear, attention)``.

    Linear: q/k/v on the ``B·P`` fine tokens, and the output projection on the real member slots (FPS: ``B·G·K``)
    or on the ``B·P`` tokens (grid). Attention: scores and values inside the ``B·G`` groups of ``K`` slots (FPS),
    or over the whole block with a "same cell" mask (grid: ``B·P²``). Pooling, gathers and the grouping itself
    are not counted.
    """
    return sum(r["linear"] for r in records), sum(r["attention"] for r in records)


def _counted(counter, prefix: str, leaves: tuple[str, ...] = ()) -> int:
    """FLOPs that ``FlopCounterMode`` attributed to the modules ``prefix<digits>`` (or ``prefix`` itself), or,
    with ``leaves``, to the modules ``prefix<digits>.<leaf>`` (for modules entered through a method other than
    ``forward``, whose own name the counter never sees)."""
    total = 0
    for name, ops_ in counter.get_flop_counts().items():
        if not name.startswith(prefix):
            continue
        tail = name[len(prefix):]
        head, _, leaf = tail.partition(".")
        if (not leaves and (tail == "" or tail.isdigit())) or (leaves and head.isdigit() and leaf in leaves):
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
    """Record the FLOPs of every :class:`GatedGroupAttention` call (both paths); returns records and an undo list."""
    records: list[dict] = []
    undo = []
    for m in model.modules():
        if not isinstance(m, GatedGroupAttention):
            continue
        hidden, d = m.qkv.in_features, m.out.in_features

        def padded(tokens, members, valid, _m=m, _h=hidden, _d=d, _f=m.forward):
            b, g, k = members.shape
            records.append({"linear": 2 * b * tokens.shape[1] * _h * 3 * _d + 2 * int(valid.sum()) * _d * _h,
                            "attention": 2 * 2 * b * g * k * k * _d})
            return _f(tokens, members, valid)

        def partition(tokens, group_of, _m=m, _h=hidden, _d=d, _f=m.forward_partition):
            b, p = group_of.shape
            records.append({"linear": 2 * b * p * _h * 3 * _d + 2 * b * p * _d * _h,
                            "attention": 2 * 2 * b * p * p * _d})
            return _f(tokens, group_of)

        m.forward, m.forward_partition = padded, partition
        undo.append(m)
    return records, undo


def _undo_records(undo) -> None:
    for m in undo:
        del m.forward, m.forward_partition


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


def _timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="smollm2", help="smollm2 (default), or a local HF folder")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--num-points", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (each runs every variant once)")
    parser.add_argument("--variants", default="none,grid-paper,grid-default,fps",
                        help=f"comma-separated, from {sorted(VARIANTS)}")
    parser.add_argument("--no-backward", action="store_true", help="time the forward pass only")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or an accelerator such as cuda")
    parser.add_argument("--name", default="aggregation", help="results file benchmarks/results/<name>.json")
    args = parser.parse_args(argv)
    if args.threads:
        set_threads(args.threads)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; choose from {sorted(VARIANTS)}")
    names = ["none"] + [n for n in names if n != "none"]

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
    device = torch.device(args.device)
    model.to(device)
    for agg in modules.values():
        if agg is not None:
            agg.to(device)
    inputs, labels, clouds = make_batch(model, tokenizer, args.batch, args.num_points)
    inputs = {k: v.to(device) for k, v in inputs.items()}
    labels, clouds = labels.to(device), clouds.to(device)
    labelled = int((labels[:, 1:] != -100).sum())  # training computes logits only there

    results: dict[str, dict] = {}
    for name in names:  # untimed warm-up: lengths, analytic and counted FLOPs
        model.model.aggregation = modules[name]
        lengths, handles = _record_lengths(model)
        records, undo = _record_attention(model)
        counter = FlopCounterMode(display=False)
        model.eval()
        with torch.no_grad(), counter:
            model(**inputs, point_clouds=clouds)
        for h in handles:
            h.remove()
        _undo_records(undo)
        per_layer = [layer_flops(text, args.batch, n) for n in lengths]
        dec_linear = sum(x for x, _ in per_layer)
        dec = dec_linear + sum(y for _, y in per_layer)
        head = 2 * args.batch * lengths[0] * text.hidden_size * text.vocab_size
        agg_linear, agg_attn = aggregation_flops(records)
        counted = {
            "decoder": _counted(counter, "EnelForCausalLM.model.language_model.layers."),
            "aggregation": _counted(counter, "EnelForCausalLM.model.aggregation.attn.", ("qkv", "out")),
            "lm_head": _counted(counter, "EnelForCausalLM.lm_head"),
        }
        events = modules[name].events if modules[name] else []
        results[name] = {
            "layer_lengths": lengths,
            "point_block_per_layer": [n - lengths[0] + (model.config.num_point_tokens - 1) for n in lengths],
            "events": [(layer + 1, kind) for layer, kind, _, _ in events],
            "cell_sizes": [round(x, 4) for x in modules[name]._cell_sizes] if modules[name] else [],
            "flops_decoder": dec,
            "flops_decoder_linear": dec_linear,
            "flops_lm_head": head,
            "flops_aggregation": agg_linear + agg_attn,
            "flops_aggregation_linear": agg_linear,
            "flops_forward": dec + head + agg_linear + agg_attn,
            # backward = 2 × forward; training applies lm_head to the labelled positions only
            "flops_forward_backward": 3 * (dec + agg_linear + agg_attn + 2 * labelled * text.hidden_size
                                           * text.vocab_size),
            # FlopCounterMode counts the matrix products, and SDPA only where it has a formula for the kernel (not
            # the CPU's): the count must equal the analytic products, with or without the attention part
            "flops_counted_matmuls": counted,
            "flops_counted_match": (counted["decoder"] in (dec_linear, dec)
                                    and counted["aggregation"] in (agg_linear, agg_linear + agg_attn)
                                    and counted["lm_head"] == head),
            "forward_s": [],
            "forward_backward_s": [],
        }
        if not args.no_backward:  # warm the backward path too
            _forward_backward(model, inputs, labels, clouds)

    for _ in range(args.rounds):  # interleaved: a load change on a shared machine hits every variant alike
        for name in names:
            model.model.aggregation = modules[name]
            results[name]["forward_s"].append(_timed(lambda: _forward(model, inputs, clouds), device))
        if not args.no_backward:
            for name in names:
                model.model.aggregation = modules[name]
                results[name]["forward_backward_s"].append(
                    _timed(lambda: _forward_backward(model, inputs, labels, clouds), device))
    model.model.aggregation = None

    base = results["none"]
    rows = []
    for name in names:
        r = results[name]
        for key in ("forward", "forward_backward"):
            runs = r[f"{key}_s"]
            r[f"{key}_best_s"] = min(runs) if runs else None
            r[f"{key}_median_s"] = statistics.median(runs) if runs else None
            r[f"{key}_ratio_best"] = r[f"{key}_best_s"] / base[f"{key}_best_s"] if runs else None
            r[f"{key}_ratio_median"] = r[f"{key}_median_s"] / base[f"{key}_median_s"] if runs else None
        r["flops_forward_saving"] = 1.0 - r["flops_forward"] / base["flops_forward"]
        r["flops_forward_backward_saving"] = 1.0 - r["flops_forward_backward"] / base["flops_forward_backward"]
        r["decoder_flops_saving"] = 1.0 - r["flops_decoder"] / base["flops_decoder"]
        fb = bool(r["forward_backward_s"])
        rows.append({
            "variant": name,
            "min block": min(r["point_block_per_layer"]),
            "fwd s (best/med)": f"{r['forward_best_s']:.2f} / {r['forward_median_s']:.2f}",
            "fwd ×none": f"{r['forward_ratio_best']:.3f} / {r['forward_ratio_median']:.3f}",
            "fwd+bwd s (best/med)": (f"{r['forward_backward_best_s']:.2f} / {r['forward_backward_median_s']:.2f}"
                                     if fb else "-"),
            "fwd+bwd ×none": (f"{r['forward_backward_ratio_best']:.3f} / {r['forward_backward_ratio_median']:.3f}"
                              if fb else "-"),
            "fwd GFLOP": f"{r['flops_forward'] / 1e9:.1f}",
            "agg GFLOP": f"{r['flops_aggregation'] / 1e9:.2f}",
            "fwd FLOP saving": f"{100 * r['flops_forward_saving']:.1f}%",
            "fwd+bwd FLOP saving": f"{100 * r['flops_forward_backward_saving']:.1f}%",
            "matmuls = counted": "yes" if r["flops_counted_match"] else "NO",
        })
    title = (f"backbone {args.backbone} ({n_layers} layers, hidden {text.hidden_size}), batch {args.batch}, "
             f"sequence {inputs['input_ids'].shape[1]} tokens, {args.num_points} points per cloud, "
             f"{torch.get_num_threads()} threads, device {device}; best / median of {args.rounds} interleaved rounds")
    table = print_table(rows, title=title)
    for name in names:
        if results[name]["events"]:
            print(f"{name}: point block per layer {results[name]['point_block_per_layer']}")
    report = {
        "benchmark": "aggregation",
        "argv": sys.argv[1:] if argv is None else argv,
        "backbone": args.backbone,
        "layers": n_layers,
        "hidden": text.hidden_size,
        "batch": args.batch,
        "sequence": int(inputs["input_ids"].shape[1]),
        "labelled_positions": labelled,
        "num_points": args.num_points,
        "rounds": args.rounds,
        "machine": machine_info(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "table": table,
        "variants": results,
    }
    write_json(args.name, report)
    return report


if __name__ == "__main__":
    main()
