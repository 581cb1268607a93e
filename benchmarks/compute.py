"""Training cost of ENEL against the PointLLM-style encoder baseline (the paper's Table 7, issue 19), in one run.

Three contenders at the same backbone, batch and data (the procedural set, synthesised into a temporary folder
unless ``--data`` names one; every cloud at the same resolution; conversations short enough that none is cut):

* ``ENEL``: the CPU default's stage 1 (``smollm2_stage1``: the small token embedding, 64 + 1 point tokens, the
  hybrid semantic loss, the embedding and the first 4 decoder layers trainable);
* ``baseline small``: ``baseline_smollm2_stage1`` (the small Point-BERT encoder, 128 + 1 tokens, frozen; the
  caption loss alone; the projector and the first 4 decoder layers trainable);
* ``baseline PointLLM``: the same with PointLLM v1.2's encoder (``encoder_config=paper``: 512 groups × 32, 384-d,
  12 blocks; 513 tokens).

For each, interleaved round-robin (``a b c a b c …``, so load from other processes hits all alike), as
``benchmarks/training.py`` measures a step:

* seconds per training step (data loading + forward + backward + gradient clipping + AdamW, bf16 autocast when the
  recipe's ``bf16`` resolves to on, frozen weights' bf16 copies as ``enel train`` keeps them), wall clock and CPU;
* peak memory: each contender alone in a fresh process (so no other model's freed memory hides its own): the
  highest resident set during a few training steps, above the process's resident set before the model was built
  (imports and data loaded); beside it the tensors the model keeps between steps (parameters, buffers, the frozen
  weights' bf16 copies, AdamW's two moments per trainable parameter);
* FLOPs per step (``FlopCounterMode``, forward + backward), and the share spent in the point path (the embedding
  or the encoder, and the projector).

The encoder baseline's masked point modelling before stage 1 is a one-off cost and not part of the step (PointLLM's
Table 7 does not count its encoder's pre-training either). The target stated by issue 19: ENEL's step at most 0.3×
the PointLLM-size baseline's, and ENEL's peak memory below it.

    python benchmarks/compute.py                       # SmolLM2-135M
    python benchmarks/compute.py --backbone tiny-llama --repeats 2   # a quick run

Results: the table, and ``benchmarks/results/compute.json``.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from common import (  # noqa: E402
    cycled_batch, machine_info, print_table, set_threads, training_optimiser, write_json)
from training import PeakRSS, _rss  # noqa: E402

CONTENDERS = {  # name: (recipe, overrides)
    "ENEL": ("smollm2_stage1", []),
    "baseline small": ("baseline_smollm2_stage1", []),
    "baseline PointLLM": ("baseline_smollm2_stage1", ["encoder_config.preset=paper"]),
}
REFERENCE = "ENEL"
TARGET_AGAINST = "baseline PointLLM"
TARGET_STEP_RATIO = 0.3


class Contender:
    """One model, its optimiser and its dataset; :meth:`step` is one training step as ``enel train`` takes it."""

    def __init__(self, name: str, recipe, model, dataset, collator, bf16: bool):
        from enel.train.speed import cache_frozen_bf16

        self.name, self.recipe, self.dataset, self.collator, self.bf16 = name, recipe, dataset, collator, bf16
        self.model = model.train()
        if bf16:
            cache_frozen_bf16(self.model)
        self.params, self.opt, self.max_grad_norm = training_optimiser(self.model, recipe)
        self.batch_size = recipe.train.batch_size
        self.cursor = 0

    def batch(self, index: int | None = None):
        return cycled_batch(self.dataset, self.collator, self.batch_size, self.cursor if index is None else index)

    def step(self) -> float:
        batch = self.batch()
        self.cursor = (self.cursor + 1) % 4  # four batches in turn: the same four for every contender
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            loss = self.model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    def resident_mib(self) -> dict:
        """MiB the model keeps between steps: parameters and buffers, bf16 copies, AdamW's moments."""
        seen, weights = set(), 0
        for t in [*self.model.parameters(), *self.model.buffers()]:
            if id(t) not in seen:
                seen.add(id(t))
                weights += t.numel() * t.element_size()
        copies = sum(c.numel() * c.element_size() for m in self.model.modules()
                     for c in (m.__dict__.get("_enel_bf16") or ()) if c is not None)
        moments = sum(v.numel() * v.element_size() for s in self.opt.state.values() for v in s.values()
                      if torch.is_tensor(v) and v.dim() > 0)
        return {"weights": weights / 2**20, "bf16 copies": copies / 2**20, "optimizer": moments / 2**20}

    def point_path_flops(self) -> tuple[float, float]:
        """(total, point path) FLOPs of one forward + backward on batch 0, by ``FlopCounterMode``'s module tree."""
        from torch.utils.flop_counter import FlopCounterMode

        encoder, projector = self.model.model.point_path()
        names = {id(m): n for n, m in self.model.named_modules()}
        batch = self.batch(0)
        counter = FlopCounterMode(display=False)
        with counter, torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            self.model(**batch).loss.backward()
        self.model.zero_grad(set_to_none=True)
        counts = counter.get_flop_counts()
        root = type(self.model).__name__
        point = 0
        for module in (encoder, projector):
            key = f"{root}.{names[id(module)]}"
            point += sum(counts.get(key, {}).values())
        return float(counter.get_total_flops()), float(point)


def build(name: str, data_dir: Path, args) -> Contender:
    from enel.data.collate import EnelCollator
    from enel.train.recipe import load_recipe
    from enel.train.run import _use_bf16, build_datasets, build_model

    recipe_name, extra = CONTENDERS[name]
    overrides = [f"backbone={args.backbone}", f"data.root={data_dir}", f"data.num_points={args.points}",
                 "data.modelnet40.weight=0", f"data.max_length={args.max_length}", "data.preview=null",
                 f"train.batch_size={args.batch_size}", *extra]
    recipe = load_recipe(recipe_name, overrides)
    model, tok, _ = build_model(recipe)
    if recipe.train.attn_implementation:
        model.set_attn_implementation(recipe.train.attn_implementation)
    dataset, _ = build_datasets(recipe, model, tok)
    collator = EnelCollator.from_tokenizer(tok, return_extras=False)
    bf16 = _use_bf16(recipe.train.bf16) if args.bf16 == "recipe" else args.bf16 == "on"
    return Contender(name, recipe, model, dataset, collator, bf16)


def _trim() -> None:
    """Hand freed heap memory back to the system (glibc), so the resident set counts live memory only."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc
        pass


def memory_child(name: str, data_dir: Path, args) -> dict:
    """In a fresh process: the resident set before the model is built, and its peak over a few training steps."""
    from enel.points import ops

    xyz = torch.rand(1, 256, 3)  # compile the FPS / kNN kernels first: their memory is no contender's
    ops.knn(xyz[:, ops.farthest_point_sample(xyz, 16)[0]], xyz, 8)
    _trim()
    base = _rss()
    c = build(name, data_dir, args)
    _trim()
    built = _rss()
    with PeakRSS() as mem:
        for _ in range(2):  # the first allocates AdamW's moments, the second is a steady step
            c.step()
    return {"before_mib": base / 2**20, "built_mib": built / 2**20, "peak_mib": mem.peak / 2**20,
            "peak_above_start_mib": (mem.peak - base) / 2**20, "kept_tensors_mib": c.resident_mib()}


def measure_memory(name: str, data_dir: Path, args) -> dict:
    cmd = [sys.executable, __file__, "--memory-child", name, "--data", str(data_dir), "--backbone", args.backbone,
           "--threads", str(args.threads), "--batch-size", str(args.batch_size), "--points", str(args.points),
           "--max-length", str(args.max_length), "--bf16", args.bf16, "--warmup", str(args.warmup)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode:
        raise RuntimeError(f"memory measurement of {name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="smollm2", help="smollm2 (default) or tiny-llama for a quick run")
    ap.add_argument("--data", default=None, help="procedural data folder (default: synthesised into a temp dir)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--points", type=int, default=2048, help="every contender's input resolution")
    ap.add_argument("--max-length", type=int, default=1024, help="longest sequence (none of the data is cut)")
    ap.add_argument("--bf16", choices=("recipe", "on", "off"), default="recipe")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--contenders", nargs="+", default=list(CONTENDERS), choices=list(CONTENDERS))
    ap.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    set_threads(args.threads)
    torch.manual_seed(0)
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child, Path(args.data), args)))
        return

    with tempfile.TemporaryDirectory(prefix="enel-bench-compute-") as tmp:
        data_dir = Path(args.data) if args.data else Path(tmp) / "data"
        if not args.data:
            from enel.data.procedural import synthesize

            synthesize(data_dir, objects_per_category=3, progress=False)
        memory = {name: measure_memory(name, data_dir, args) for name in args.contenders}
        for name, m in memory.items():
            print(f"{name}: peak {m['peak_above_start_mib']:.0f} MiB above the process before the model", flush=True)
        contenders = {name: build(name, data_dir, args) for name in args.contenders}
        info = {}
        for name, c in contenders.items():
            total, point = c.point_path_flops()
            shapes = [tuple(c.batch(i)["input_ids"].shape) for i in range(4)]
            info[name] = {"gflop_per_step": total / 1e9, "point_path_gflop": point / 1e9, "shapes": shapes,
                          "point_tokens": c.model.config.num_point_tokens, "bf16": c.bf16,
                          "trainable_params": sum(p.numel() for p in c.params)}
            print(f"{name}: {c.model.config.num_point_tokens} point tokens, batches {shapes}, "
                  f"{total / 1e9:.1f} GFLOP/step ({100 * point / max(total, 1):.1f} % in the point path)", flush=True)
        for c in contenders.values():  # warm-up: oneDNN primitives, allocator, the cloud cache, the bf16 copies
            for _ in range(args.warmup):
                c.step()
        runs = {n: [] for n in contenders}
        cpu = {n: [] for n in contenders}
        for _ in range(args.repeats):
            for n, c in contenders.items():
                t0, c0 = time.perf_counter(), time.process_time()
                c.step()
                runs[n].append(time.perf_counter() - t0)
                cpu[n].append(time.process_time() - c0)

    results, rows = {}, []
    for n, c in contenders.items():
        results[n] = {**info[n], "seconds_per_step_median": statistics.median(runs[n]),
                      "seconds_per_step_best": min(runs[n]), "runs": runs[n],
                      "cpu_seconds_per_step_median": statistics.median(cpu[n]), "cpu_runs": cpu[n],
                      "memory": memory[n], "peak_mib": memory[n]["peak_above_start_mib"]}
    ref = results.get(REFERENCE)
    for n, r in results.items():
        rows.append({"model": n, "point tokens": r["point_tokens"],
                     "s/step (median)": round(r["seconds_per_step_median"], 3),
                     "CPU s/step": round(r["cpu_seconds_per_step_median"], 3),
                     "GFLOP/step": round(r["gflop_per_step"], 1),
                     "point path %": round(100 * r["point_path_gflop"] / max(r["gflop_per_step"], 1e-9), 1),
                     "kept tensors MiB": round(sum(r["memory"]["kept_tensors_mib"].values())),
                     "peak MiB": round(r["peak_mib"]),
                     "ENEL ÷ this (time)": round(ref["seconds_per_step_median"] / r["seconds_per_step_median"], 3)
                     if ref else "-",
                     "ENEL ÷ this (FLOPs)": round(ref["gflop_per_step"] / r["gflop_per_step"], 3) if ref else "-",
                     "ENEL ÷ this (memory)": round(ref["peak_mib"] / r["peak_mib"], 3) if ref else "-"})
    bf16 = {r["bf16"] for r in results.values()}
    print_table(rows, title=f"stage-1 training step, backbone {args.backbone}, batch {args.batch_size}, "
                            f"{args.points} points, bf16 autocast {'on' if bf16 == {True} else bf16}, "
                            f"{args.repeats} interleaved repeats, {args.threads} threads")
    verdict = None
    if ref and TARGET_AGAINST in results:
        base = results[TARGET_AGAINST]
        time_ratio = ref["seconds_per_step_median"] / base["seconds_per_step_median"]
        memory_ratio = ref["peak_mib"] / base["peak_mib"]
        verdict = {"step_ratio": time_ratio, "memory_ratio": memory_ratio, "step_target": TARGET_STEP_RATIO,
                   "step_met": time_ratio <= TARGET_STEP_RATIO, "memory_met": memory_ratio < 1.0}
        print(f"target (issue 19) against {TARGET_AGAINST}: step {time_ratio:.3f}× (≤ {TARGET_STEP_RATIO}: "
              f"{'met' if verdict['step_met'] else 'NOT met'}), peak memory {memory_ratio:.3f}× "
              f"(< 1: {'met' if verdict['memory_met'] else 'NOT met'})")
    write_json("compute", {"settings": vars(args), "contenders": results, "target": verdict,
                           "machine": machine_info()})


if __name__ == "__main__":
    main()
