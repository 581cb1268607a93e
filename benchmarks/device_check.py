"""Correctness and speed on a CUDA device, in one short run (for GPU users and for our own GPU checks).

Sections (each prints PASS/FAIL and timings; all results go to JSON):

1. ops: the CUDA FPS loop picks the same indices as the CPU kernel; kNN on CUDA equals kNN on the CPU;
2. the paper's point embedding (288 → 2304, k = 81) on (8, 8192, 6) in fp32 and bf16: time and GFLOP/s
   (the released code crashed in bf16);
3. a tiny ENEL (random Llama) on CUDA: logits equal the CPU model's; KV-cached greedy generation equals
   uncached generation, without aggregation and with grid and FPS aggregation;
4. the paper's scale: a Vicuna-7B-shaped random backbone (hidden 4096, 32 layers) in bf16 with the paper's
   embedding, batch 4, one prompt with 129 point tokens: forward and forward + backward with the paper's
   aggregation schedule against the same model without it (the stage-2 speed claim at full size).

    python benchmarks/device_check.py [--skip-7b] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

RESULTS: dict = {}


def section(name):
    def wrap(fn):
        def run(*a, **k):
            t0 = time.time()
            try:
                out = fn(*a, **k)
                RESULTS[name] = {"status": "PASS" if out.pop("ok", True) else "FAIL", **out}
            except Exception as exc:  # report and go on with the other sections
                RESULTS[name] = {"status": "ERROR", "error": f"{type(exc).__name__}: {exc}",
                                 "trace": traceback.format_exc()[-2000:]}
            RESULTS[name]["seconds"] = round(time.time() - t0, 2)
            print(f"[{RESULTS[name]['status']}] {name}: " + json.dumps(
                {k: v for k, v in RESULTS[name].items() if k != "trace"}, default=str), flush=True)
        return run
    return wrap


def cuda_time(fn, repeats=5, warmup=2):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return min(times)


@section("ops_cuda_vs_cpu")
def check_ops():
    from enel.points import ops

    g = torch.Generator().manual_seed(0)
    xyz = torch.randn(8, 8192, 3, generator=g)
    cpu = ops.farthest_point_sample(xyz, 512)
    gpu = ops.farthest_point_sample(xyz.cuda(), 512).cpu()
    ref = ops.farthest_point_sample_reference(xyz.cuda(), 512).cpu()
    q = xyz[:, :512].contiguous()
    i_cpu, d_cpu = ops.knn(q, xyz, 16)
    i_gpu, d_gpu = ops.knn(q.cuda(), xyz.cuda(), 16)
    t_fps = cuda_time(lambda: ops.farthest_point_sample(xyz.cuda(), 512), repeats=3)
    t_ref = cuda_time(lambda: ops.farthest_point_sample_reference(xyz.cuda(), 512), repeats=3)
    ok = torch.equal(cpu, gpu) and torch.equal(gpu, ref) and torch.equal(i_cpu, i_gpu.cpu())
    return {"ok": ok, "fps_same_as_cpu": torch.equal(cpu, gpu), "fps_same_as_reference": torch.equal(gpu, ref),
            "knn_same": torch.equal(i_cpu, i_gpu.cpu()), "fps_ms": t_fps * 1e3, "reference_fps_ms": t_ref * 1e3}


@section("paper_embedding")
def check_embedding():
    from enel.model.configuration_enel import PointEmbeddingConfig
    from enel.model.embedding import PointTokenEmbedding

    cfg = PointEmbeddingConfig.paper()
    emb = PointTokenEmbedding(cfg).cuda().eval()
    x = torch.rand(8, 8192, 6, device="cuda")
    out = {}
    with torch.no_grad():
        t32 = cuda_time(lambda: emb(x))
        f32 = emb(x).features
        embb = PointTokenEmbedding(cfg).cuda().eval()
        embb.load_state_dict(emb.state_dict())
        embb = embb.to(torch.bfloat16)
        tbf = cuda_time(lambda: embb(x.to(torch.bfloat16)))
        fbf = embb(x.to(torch.bfloat16)).features
        with torch.autocast("cuda", dtype=torch.bfloat16):
            tac = cuda_time(lambda: emb(x))
    flops = cfg.flops(8192) * 8
    rel = float((fbf.float() - f32).norm() / f32.norm())
    out.update(tokens=list(f32.shape), fp32_ms=t32 * 1e3, bf16_ms=tbf * 1e3, autocast_ms=tac * 1e3,
               fp32_tflops=flops / t32 / 1e12, bf16_tflops=flops / tbf / 1e12, bf16_rel_error=rel,
               ok=list(f32.shape) == [8, 129, 2304] and rel < 0.1)
    return out


def _tiny(agg=None):
    from enel.model import EnelForCausalLM

    torch.manual_seed(0)
    m, tok = EnelForCausalLM.from_backbone(
        "tiny-llama", point_config={"embed_dim": 24, "group_size": 8, "projector_hidden": [64], "num_points": 1024},
        aggregation_config=agg)
    return m.eval(), tok


@section("tiny_model_cuda")
def check_tiny():
    from enel.data.conversation import build_prompt, tokenize_prompts

    res = {}
    ok = True
    sched = [{"aggregate_after": [1], "propagate_after": [3]}]
    variants = {
        "none": None,
        "grid": {"enabled": True, "grouping": "grid", "schedule": sched, "reference_layers": 4, "attn_dim": 32,
                 "attn_heads": 2},
        "fps": {"enabled": True, "grouping": "fps", "schedule": sched, "reference_layers": 4, "fps_centres": [32],
                "fps_k": [8], "attn_dim": 32, "attn_heads": 2},
    }
    for name, agg in variants.items():
        model, tok = _tiny(agg)
        for p in model.parameters():
            if p.dim() == 0:  # open the aggregation gates so the check is not trivial
                p.data.fill_(0.5)
        texts = [build_prompt(tok, q, template="chat", num_point_tokens=129)
                 for q in ("What is this?", "Describe the colour of each part of this object.")]
        enc = tokenize_prompts(tok, texts, "chat")
        pc = torch.rand(2, 1024, 6, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            cpu_logits = model(**enc, point_clouds=pc).logits
        assert bool((enc["attention_mask"] == 0).any()), "the check wants a left-padded batch"
        model = model.cuda()
        enc = {k: v.cuda() for k, v in enc.items()}
        with torch.no_grad():
            gpu_logits = model(**enc, point_clouds=pc.cuda()).logits.cpu()
        kw = dict(point_clouds=pc.cuda(), max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id)
        cached = model.generate(**enc, use_cache=True, **kw)
        uncached = model.generate(**enc, use_cache=False, **kw)
        real = enc["attention_mask"].bool().cpu()  # padded query rows attend to nothing: kernels may differ there
        diff = float((gpu_logits - cpu_logits)[real].abs().max())
        same = torch.equal(cached, uncached)
        res[name] = {"max_logit_diff_vs_cpu": diff, "cached_equals_uncached": same}
        ok = ok and same and diff < 1e-3
    res["ok"] = ok
    return res


@section("paper_scale_aggregation")
def check_7b(batch=4):
    from transformers import LlamaConfig

    from enel.model import EnelConfig, EnelForCausalLM
    from enel.model.configuration_enel import PointEmbeddingConfig

    text = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=32, vocab_size=32003, max_position_embeddings=2048, rms_norm_eps=1e-6)
    pcfg = PointEmbeddingConfig.paper().to_dict()
    results = {}
    prompt_len = 180  # PointLLM's eval prompt: system + USER: + 131 point positions + question
    ids = torch.randint(0, 32000, (batch, prompt_len), device="cuda")
    ids[:, 40] = 32001
    ids[:, 41:41 + 129] = 32000
    ids[:, 170] = 32002
    clouds = torch.rand(batch, 8192, 6, device="cuda")
    labels = ids.clone()
    labels[:, :171] = -100
    for name, agg in (("no aggregation", None), ("paper schedule", {"enabled": True, "grouping": "grid",
                                                                    "reference_layers": 32, "attn_heads": 8})):
        cfg = EnelConfig(text_config=text.to_dict(), point_config=pcfg, aggregation_config=agg,
                         point_patch_token_id=32000, point_start_token_id=32001, point_end_token_id=32002)
        torch.manual_seed(0)
        with torch.device("cuda"):
            model = EnelForCausalLM(cfg).to(torch.bfloat16)
        model.train()
        with torch.no_grad():
            fwd = cuda_time(lambda: model(input_ids=ids, point_clouds=clouds.to(torch.bfloat16)), repeats=3)

        def step():
            out = model(input_ids=ids, point_clouds=clouds.to(torch.bfloat16), labels=labels)
            out.loss.backward()
            model.zero_grad(set_to_none=True)

        fb = cuda_time(step, repeats=3)
        results[name] = {"forward_ms": fwd * 1e3, "forward_backward_ms": fb * 1e3,
                         "peak_gib": torch.cuda.max_memory_allocated() / 2**30}
        del model
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    a, b = results["paper schedule"], results["no aggregation"]
    results["forward_speedup"] = b["forward_ms"] / a["forward_ms"]
    results["forward_backward_speedup"] = b["forward_backward_ms"] / a["forward_backward_ms"]
    results["ok"] = True
    return results


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-7b", action="store_true")
    ap.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "device_check.json"))
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return
    RESULTS["device"] = {"name": torch.cuda.get_device_name(), "torch": torch.__version__}
    import transformers

    RESULTS["device"]["transformers"] = transformers.__version__
    print(RESULTS["device"], flush=True)
    check_ops()
    check_embedding()
    check_tiny()
    if not args.skip_7b:
        check_7b()
    Path(args.out).write_text(json.dumps(RESULTS, indent=1, default=str))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
