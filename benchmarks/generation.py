"""Generation speed of the embedded default: time to first token, decoding with and without the KV cache.

SmolLM2-135M with the small point embedding, one 8192-point cloud (resampled to the model's 2048 points and
normalised as the CLI does), the caption prompt, 64 new tokens, greedy. In one run:

* time to first token: cloud preparation + point embedding + prefill + the first token;
* decoding tokens/s with the KV cache: the 63 tokens after the first;
* decoding tokens/s without a cache (every step recomputes the whole sequence, point block included) —
  the baseline the cache is measured against.

Targets (issue "The encoder-free LMM"): cached ≥ 5× uncached; first token < 1.5 s on 2 cores. Issue 20: decoding
with the cache ≥ 2× the tokens/s of the code before it, greedy outputs identical (or the difference stated), first
token < 0.5 s.

``--compare`` times, round-robin in one run, today's decoding step against each change, on the same model and
prompt: ``before`` (each of the 30 layers builds its own additive mask at every step, as before issue 20),
``fp32`` (one mask per step shared by the layers that cached the same prompt: the eager step, the default),
``compiled`` (the same with ``EnelForCausalLM.compile_decoding()``), ``bf16`` and ``compiled bf16`` (both in bf16
weights), and says whether each one's greedy tokens equal ``before``'s. A compiled variant's first call in the
process compiles; its extra seconds are reported (inductor's on-disk cache makes a later process's shorter).

    python benchmarks/generation.py [--threads 2] [--tokens 64] [--dtype fp32|bf16] [--compare]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from common import (machine_info, print_table, set_threads, time_call, time_interleaved,  # noqa: E402
                    write_json)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--points", type=int, default=8192, help="points in the input cloud (before resampling)")
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--compare", action="store_true",
                    help="before / fp32 / compiled / bf16 / compiled bf16 decoding, interleaved")
    args = ap.parse_args()
    set_threads(args.threads)
    if args.compare:
        return compare(args)

    from enel.data.procedural import make_object
    from enel.data.prompts import PROMPTS
    from enel.inference import Assistant, GenerationSettings
    from enel.model import EnelForCausalLM
    from enel.points.transforms import model_input

    torch.manual_seed(0)
    model, tok = EnelForCausalLM.from_backbone("smollm2", point_config="small")
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    model = model.to(dtype).eval()
    raw = make_object("chair", 2, num_points=args.points).points  # (8192, 6)
    n_model = model.config.point.num_points
    assistant = Assistant(model, tok, GenerationSettings(max_new_tokens=args.tokens))
    enc = assistant._encode([PROMPTS["caption"]], None)

    def prepare() -> np.ndarray:
        return model_input(raw, n_model)[None]

    def run(new_tokens: int, use_cache: bool):
        kw = assistant._generate_kwargs(enc, prepare())
        kw.update(max_new_tokens=new_tokens, min_new_tokens=new_tokens, use_cache=use_cache, do_sample=False)
        with torch.no_grad():
            return model.generate(**kw)

    prompt_len = enc["input_ids"].shape[1]
    first = time_call(lambda: run(1, True), warmup=1, repeats=args.repeats)
    cached = time_call(lambda: run(args.tokens, True), warmup=0, repeats=args.repeats)
    uncached = time_call(lambda: run(args.tokens, False), warmup=0, repeats=max(1, args.repeats - 1))
    same = torch.equal(run(args.tokens, True), run(args.tokens, False))

    decode_tokens = args.tokens - 1
    cached_tps = decode_tokens / max(cached.best - first.best, 1e-9)
    uncached_tps = decode_tokens / max(uncached.best - first.best, 1e-9)
    rows = [
        {"measure": "time to first token (s)", "value": round(first.best, 3), "target": "< 1.5"},
        {"measure": "decode tokens/s, KV cache", "value": round(cached_tps, 2), "target": ""},
        {"measure": "decode tokens/s, no cache (baseline)", "value": round(uncached_tps, 2), "target": ""},
        {"measure": "cache speed-up (×)", "value": round(cached_tps / uncached_tps, 2), "target": "≥ 5"},
        {"measure": f"total {args.tokens} tokens, cache (s)", "value": round(cached.best, 3), "target": ""},
        {"measure": f"total {args.tokens} tokens, no cache (s)", "value": round(uncached.best, 3), "target": ""},
    ]
    print_table(rows, title=f"SmolLM2-135M + small embedding, {args.points}-point cloud → {n_model} points, "
                            f"prompt {prompt_len} tokens, {args.dtype}, {args.threads} threads")
    print(f"cached and uncached outputs identical: {same}")
    write_json("generation", {
        "settings": vars(args),
        "prompt_tokens": prompt_len,
        "time_to_first_token_s": first.to_dict(),
        "cached_total_s": cached.to_dict(),
        "uncached_total_s": uncached.to_dict(),
        "cached_tokens_per_s": cached_tps,
        "uncached_tokens_per_s": uncached_tps,
        "speedup": cached_tps / uncached_tps,
        "identical_outputs": same,
        "targets": {"speedup_min": 5.0, "ttft_max_s": 1.5},
        "machine": machine_info(),
        "timestamp": time.strftime("%Y-%m-%d %H:%M:%S"),
    })


def _per_layer_masks(self, full_mask, q_len, dtype):
    """The decoding step before issue 20: every layer extends and converts its own prompt mask."""
    from enel.model.layout import additive_mask

    return [additive_mask(self.for_step(i, full_mask), q_len, dtype) for i in range(len(self.masks))]


def compare(args) -> None:
    import copy

    from enel.data.procedural import make_object
    from enel.data.prompts import PROMPTS
    from enel.inference import Assistant, GenerationSettings
    from enel.model import EnelForCausalLM
    from enel.model.layout import LayerKeyMasks
    from enel.points.transforms import model_input

    torch.manual_seed(0)
    model, tok = EnelForCausalLM.from_backbone("smollm2", point_config="small")
    model = model.float().eval()
    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    models = {"before": model, "fp32": model, "compiled": model, "bf16": bf16, "compiled bf16": bf16}
    compiled = {}
    for m in (model, bf16):
        m.compile_decoding()
        compiled[id(m)] = m.model.compiled_decoding
    raw = make_object("chair", 2, num_points=args.points).points
    n_model = model.config.point.num_points
    assistant = Assistant(model, tok, GenerationSettings(max_new_tokens=args.tokens))
    enc = assistant._encode([PROMPTS["caption"]], None)
    shared = LayerKeyMasks.additive_masks

    def prepare() -> np.ndarray:
        return model_input(raw, n_model)[None]

    def runner(name: str, new_tokens: int):
        def run():
            m = models[name]
            m.model.compiled_decoding = compiled[id(m)] if name.startswith("compiled") else None
            LayerKeyMasks.additive_masks = _per_layer_masks if name == "before" else shared
            kw = assistant._generate_kwargs(enc, prepare())
            kw.update(max_new_tokens=new_tokens, min_new_tokens=new_tokens, use_cache=True, do_sample=False)
            try:
                with torch.no_grad():
                    return m.generate(**kw)
            finally:
                LayerKeyMasks.additive_masks = shared
        return run

    outputs, first_call = {}, {}
    for name in models:  # the compiled variants compile here
        t0 = time.perf_counter()
        outputs[name] = runner(name, args.tokens)()
        first_call[name] = time.perf_counter() - t0
    # the first token and the whole answer in one round-robin, so that a load burst hits both (their difference is
    # the decoding time)
    lengths = {"first": 1, "full": args.tokens}
    timed = time_interleaved({f"{name}/{part}": runner(name, n) for name in models for part, n in lengths.items()},
                             warmup=0, repeats=args.repeats)
    first = {name: timed[f"{name}/first"] for name in models}
    full = {name: timed[f"{name}/full"] for name in models}
    tps = {name: (args.tokens - 1) / max(full[name].median - first[name].median, 1e-9) for name in models}
    rows, record = [], {}
    for name in models:
        same = torch.equal(outputs[name], outputs["before"])
        text = tok.decode(outputs[name][0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        compile_s = first_call[name] - full[name].median if name.startswith("compiled") else 0.0
        record[name] = {"first_token_s": first[name].to_dict(), "total_s": full[name].to_dict(),
                        "decode_tokens_per_s": tps[name], "same_tokens_as_before": same, "text": text,
                        "first_call_extra_s": compile_s}
        rows.append({"variant": name, "first token (s)": round(first[name].median, 3),
                     "decode tokens/s": round(tps[name], 2), "× before": round(tps[name] / tps["before"], 2),
                     "× fp32": round(tps[name] / tps["fp32"], 2), "greedy tokens = before": same,
                     "compile (s)": round(compile_s, 1)})
    print_table(rows, title=f"decoding with the KV cache, {args.tokens} new tokens, {args.threads} threads, "
                            f"medians of {args.repeats} interleaved runs")
    for name in models:
        print(f"{name}: {record[name]['text']!r}")
    write_json("generation_compare", {"settings": vars(args), "variants": record, "machine": machine_info()})


if __name__ == "__main__":
    main()
