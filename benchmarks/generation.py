"""Generation speed of the embedded default: time to first token, decoding with and without the KV cache.

SmolLM2-135M with the small point embedding, one 8192-point cloud (resampled to the model's 2048 points and
normalised as the CLI does), the caption prompt, 64 new tokens, greedy. In one run:

* time to first token: cloud preparation + point embedding + prefill + the first token;
* decoding tokens/s with the KV cache: the 63 tokens after the first;
* decoding tokens/s without a cache (every step recomputes the whole sequence, point block included) —
  the baseline the cache is measured against.

Targets (issue "The encoder-free LMM"): cached ≥ 5× uncached; first token < 1.5 s on 2 cores.

    python benchmarks/generation.py [--threads 2] [--tokens 64] [--dtype fp32|bf16]
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

from common import machine_info, print_table, set_threads, time_call, write_json  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--points", type=int, default=8192, help="points in the input cloud (before resampling)")
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    set_threads(args.threads)

    from enel.data.procedural import make_object
    from enel.inference import PROMPTS, Assistant, GenerationSettings
    from enel.model import EnelForCausalLM
    from enel.points.transforms import pc_norm, resample

    torch.manual_seed(0)
    model, tok = EnelForCausalLM.from_backbone("smollm2", point_config="small")
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    model = model.to(dtype).eval()
    raw = make_object("chair", 2, num_points=args.points).points  # (8192, 6)
    n_model = model.config.point.num_points
    assistant = Assistant(model, tok, GenerationSettings(max_new_tokens=args.tokens))
    enc = assistant._encode([PROMPTS["caption"]], None)

    def prepare() -> np.ndarray:
        pts = resample(raw, n_model, method="fps", seed=0)
        pts[:, :3] = pc_norm(pts[:, :3])
        return pts[None]

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


if __name__ == "__main__":
    main()
