"""Training step speed of the CPU default (and the tiny recipe), beside the machine's own matmul rates.

For each recipe, on real batches of the procedural data (``enel data synth``, written to a temporary folder unless
``--data`` names one), one run measures:

* seconds per step (data loading + forward + backward + gradient clipping + AdamW + zero_grad, as the ``Trainer``
  steps: bf16 autocast when the recipe's ``bf16`` resolves to on), for today's step and for each improvement,
  timed round-robin (``a b c a b c …``) so that load from other processes hits every variant alike; wall clock
  and the process's CPU time (all threads; on a machine shared with other jobs a step's wall clock can vary 10×,
  its CPU time much less: ``--threads 1`` gives the steadiest comparison there);
* executed GFLOP per step (``torch.utils.flop_counter.FlopCounterMode``, forward + backward) and the achieved
  GFLOP/s as a share of the machine's measured bf16 (and fp32) 2048³ matmul rate;
* peak resident memory during a step (above the process's resident set before it);
* where the time goes: one profiled step per variant (``torch.profiler``), by phase (data loading, forward,
  backward, optimizer), by module in the forward (point embedding, attention, MLP, norms, LM head + loss), and
  the top operators.

Variants (cumulative):

* ``today``: every cloud read and resampled again for each batch, autocast casting every frozen weight each step;
* ``+cloud cache``: :class:`~enel.data.pointllm.PointLLMDataset` keeps the prepared clouds (same arrays);
* ``+frozen bf16``: :func:`enel.train.speed.cache_frozen_bf16` (one bf16 copy of each frozen weight).

    python benchmarks/training.py                         # smollm2 stage 1 + stage 2, tiny stage 1 + 2
    python benchmarks/training.py --recipes smollm2_stage1 --repeats 8

The stage-2 model starts from an untrained stage-1 model built here (timing does not depend on the weights).
Results: the tables, and ``benchmarks/results/training.json``.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from common import (  # noqa: E402
    cycled_batch, machine_info, matmul_gflops, print_table, set_threads, training_optimiser, write_json)

RECIPES = ("smollm2_stage1", "smollm2_stage2", "tiny_stage1", "tiny_stage2")
VARIANTS = ("today", "+cloud cache", "+frozen bf16")


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Highest resident set size seen (polled every 2 ms) while the block runs, minus the size before it."""

    def __enter__(self):
        self.base = self.peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self):
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())

    @property
    def extra_mib(self) -> float:
        return (self.peak - self.base) / 2**20


def build_stage(name: str, data_dir: Path, work: Path, batch_size: int | None):
    """The recipe's model (freezing applied), its dataset and collator; stage 2 from a fresh stage-1 model."""
    from enel.data.collate import EnelCollator
    from enel.model.saving import save_model
    from enel.train.recipe import load_recipe
    from enel.train.run import _use_bf16, build_datasets, build_model

    overrides = [f"data.root={data_dir}"] + ([f"train.batch_size={batch_size}"] if batch_size else [])
    recipe = load_recipe(name, overrides)
    if recipe.stage == 2:
        stage1 = work / f"{name}-init"
        if not (stage1 / "config.json").is_file():
            first = load_recipe(name.replace("stage2", "stage1"), [f"data.root={data_dir}"])
            model1, tok1, _ = build_model(first)
            save_model(model1, tok1, stage1)
            del model1
        recipe.init_from = str(stage1)
    model, tok, _ = build_model(recipe)
    if recipe.train.attn_implementation:
        model.set_attn_implementation(recipe.train.attn_implementation)
    dataset, _ = build_datasets(recipe, model, tok)
    collator = EnelCollator.from_tokenizer(tok, return_extras=False)
    return recipe, model, dataset, collator, _use_bf16(recipe.train.bf16)


class Contender:
    """One variant: its own copy of the model and optimiser, the shared dataset, a step function."""

    def __init__(self, name, model, dataset, collator, recipe, bf16: bool):
        from enel.train.speed import cache_frozen_bf16

        self.name, self.dataset, self.collator, self.bf16 = name, dataset, collator, bf16
        self.model = copy.deepcopy(model).train()
        level = VARIANTS.index(name)  # cumulative: each variant adds one change to the one before
        self.keep_clouds = level >= 1
        if level >= 2:
            cache_frozen_bf16(self.model)
        self.params, self.opt, self.max_grad_norm = training_optimiser(self.model, recipe)
        self.batch_size = recipe.train.batch_size
        self.cursor = 0

    def batch(self, index: int | None = None):
        if not self.keep_clouds:
            self.dataset._cloud_cache.clear()  # today: every cloud prepared again
        return cycled_batch(self.dataset, self.collator, self.batch_size, self.cursor if index is None else index)

    def step(self, profile: bool = False):
        rf = torch.profiler.record_function if profile else _null
        with rf("data loading"):
            batch = self.batch()
        self.cursor = (self.cursor + 1) % 4  # four batches in turn: real lengths, clouds seen again
        with rf("forward"), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            loss = self.model(**batch).loss
        with rf("backward"):
            loss.backward()
        with rf("optimizer"):
            torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
        return float(loss.detach())


class _null:
    def __init__(self, *_):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def step_flops(c: Contender) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    batch = c.batch(0)
    counter = FlopCounterMode(display=False)
    with counter, torch.autocast("cpu", dtype=torch.bfloat16, enabled=c.bf16):
        c.model(**batch).loss.backward()
    c.model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


MODULE_SCOPES = {  # forward time by module: a record_function around each module's forward
    "point embedding": lambda m: [m.model.point_embedding, m.model.point_projector],
    "attention": lambda m: [layer.self_attn for layer in m.model.language_model.layers],
    "MLP": lambda m: [layer.mlp for layer in m.model.language_model.layers],
    "norms": lambda m: [n for layer in m.model.language_model.layers
                        for n in (layer.input_layernorm, layer.post_attention_layernorm)]
    + [m.model.language_model.norm],
    "LM head": lambda m: [m.lm_head],
}


def profile_step(c: Contender, top: int) -> dict:
    """One profiled step: milliseconds by phase, by module (forward), and the top operators by self time."""
    from torch.profiler import ProfilerActivity, profile, record_function

    handles, open_scopes = [], []
    for scope, pick in MODULE_SCOPES.items():
        for mod in pick(c.model):
            def pre(_m, _a, scope=scope):
                r = record_function(f"module: {scope}")
                r.__enter__()
                open_scopes.append(r)

            def post(_m, _a, _o):
                open_scopes.pop().__exit__(None, None, None)

            handles += [mod.register_forward_pre_hook(pre), mod.register_forward_hook(post)]
    try:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            c.step(profile=True)
    finally:
        for h in handles:
            h.remove()
    events = prof.key_averages()
    ms = {e.key: e.cpu_time_total / 1e3 for e in events}
    phases = {k: round(ms.get(k, 0.0), 1) for k in ("data loading", "forward", "backward", "optimizer")}
    modules = {k: round(ms.get(f"module: {k}", 0.0), 1) for k in MODULE_SCOPES}
    ops = sorted((e for e in events if not e.key.startswith(("module:", "data loading", "forward", "backward",
                                                                  "optimizer", "ProfilerStep"))),
                 key=lambda e: e.self_cpu_time_total, reverse=True)
    total_self = sum(e.self_cpu_time_total for e in events) or 1.0
    top_ops = [{"op": e.key, "self ms": round(e.self_cpu_time_total / 1e3, 1),
                "share %": round(100 * e.self_cpu_time_total / total_self, 1), "calls": e.count} for e in ops[:top]]
    return {"phases_ms": phases, "forward_modules_ms": modules, "top_ops": top_ops}


def measure(name: str, data_dir: Path, work: Path, args, peaks: dict) -> dict:
    from enel.train.speed import cached_layers

    recipe, model, dataset, collator, bf16 = build_stage(name, data_dir, work, args.batch_size)
    variants = [v for v in VARIANTS if v in args.variants]
    contenders = {v: Contender(v, model, dataset, collator, recipe, bf16) for v in variants}
    del model
    first = next(iter(contenders.values()))
    flops = step_flops(first)
    shapes = [tuple(first.batch(i)["input_ids"].shape) for i in range(4)]
    for c in contenders.values():  # warm-up: oneDNN primitives, allocator, the cloud cache, the bf16 copies
        for _ in range(args.warmup):
            c.step()
    runs = {v: [] for v in contenders}
    cpu = {v: [] for v in contenders}
    memory = {v: 0.0 for v in contenders}
    for _ in range(args.repeats):
        for v, c in contenders.items():
            with PeakRSS() as mem:
                t0, c0 = time.perf_counter(), time.process_time()
                c.step()
                runs[v].append(time.perf_counter() - t0)
                cpu[v].append(time.process_time() - c0)
            memory[v] = max(memory[v], mem.extra_mib)
    base = statistics.median(runs[variants[0]])
    rows, out = [], {}
    for v, c in contenders.items():
        med, best = statistics.median(runs[v]), min(runs[v])
        achieved = flops / 1e9 / med
        out[v] = {"seconds_per_step_median": med, "seconds_per_step_best": best, "runs": runs[v],
                  "cpu_seconds_per_step_median": statistics.median(cpu[v]), "cpu_runs": cpu[v],
                  "achieved_gflops": achieved, "share_of_bf16_peak": achieved / peaks["bf16"],
                  "speedup_vs_today": base / med, "step_peak_extra_mib": memory[v],
                  "bf16_copies": cached_layers(c.model)}
        rows.append({"variant": v, "s/step (median)": round(med, 3), "s/step (best)": round(best, 3),
                     "× today": round(base / med, 2),
                     "CPU s/step": round(statistics.median(cpu[v]), 3),
                     "× today (CPU)": round(statistics.median(cpu[first.name]) / statistics.median(cpu[v]), 2),
                     "GFLOP/s": round(achieved, 1),
                     "% bf16 peak": round(100 * achieved / peaks["bf16"], 1),
                     "% fp32 peak": round(100 * achieved / peaks["fp32"], 1),
                     "step peak MiB": round(memory[v])})
    print_table(rows, title=f"{name}: batch {recipe.train.batch_size}, shapes {shapes}, "
                            f"{flops / 1e9:.1f} GFLOP/step, bf16 autocast {'on' if bf16 else 'off'}, "
                            f"{args.repeats} interleaved repeats")
    profiles = {}
    for v in (variants[0], variants[-1]) if args.profile else ():
        profiles[v] = p = profile_step(contenders[v], args.top)
        print_table([{"phase": k, "ms": x} for k, x in p["phases_ms"].items()]
                    + [{"phase": f"forward: {k}", "ms": x} for k, x in p["forward_modules_ms"].items()],
                    title=f"{name}, {v}: one profiled step")
        print_table(p["top_ops"], title=f"{name}, {v}: top operators (self CPU time)")
    return {"recipe": name, "batch_size": recipe.train.batch_size, "shapes": shapes, "bf16": bf16,
            "gflop_per_step": flops / 1e9, "variants": out, "profiles": profiles}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipes", nargs="+", default=list(RECIPES))
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--data", default=None, help="procedural data folder (default: synthesised into a temp dir)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=None, help="override the recipes' batch size")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--no-profile", dest="profile", action="store_false")
    args = ap.parse_args()
    set_threads(args.threads)
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory(prefix="enel-bench-training-") as tmp:
        work = Path(tmp)
        data_dir = Path(args.data) if args.data else work / "data"
        if not args.data:
            from enel.data.procedural import synthesize

            synthesize(data_dir, objects_per_category=3)
        # the peak: best of 10 products, before the steps and again after each recipe (the best seen counts:
        # other jobs on the machine only ever make a product slower)
        peaks = {"fp32": matmul_gflops(torch.float32, repeats=10), "bf16": matmul_gflops(torch.bfloat16, repeats=10)}
        print(f"matmul 2048³ on this machine: {peaks['fp32']:.0f} GFLOP/s fp32, {peaks['bf16']:.0f} GFLOP/s bf16")
        results = []
        for name in args.recipes:
            results.append(measure(name, data_dir, work, args, peaks))
            for dtype, key in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
                peaks[key] = max(peaks[key], matmul_gflops(dtype, repeats=10))
        print(f"matmul 2048³, best seen in the run: {peaks['fp32']:.0f} GFLOP/s fp32, {peaks['bf16']:.0f} bf16")
        for r in results:  # shares against the best peak seen
            for v in r["variants"].values():
                v["share_of_bf16_peak"] = v["achieved_gflops"] / peaks["bf16"]
        print_table([{"recipe": r["recipe"], "variant": k, "s/step": round(v["seconds_per_step_median"], 3),
                      "× today": round(v["speedup_vs_today"], 2), "GFLOP/step": round(r["gflop_per_step"], 1),
                      "% bf16 peak": round(100 * v["share_of_bf16_peak"], 1)}
                     for r in results for k, v in r["variants"].items()],
                    title=f"summary against the best matmul rates seen ({peaks['bf16']:.0f} GFLOP/s bf16, "
                          f"{peaks['fp32']:.0f} fp32, {args.threads} threads)")
    write_json("training", {"settings": vars(args), "matmul_gflops": peaks, "recipes": results,
                            "machine": machine_info()})


if __name__ == "__main__":
    main()
