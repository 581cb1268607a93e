"""Speed of the point token embedding (issue "Foundation", Speed section).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/embedding.py            # full run, 2 threads
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/embedding.py --quick    # B = 1 only, fewer repeats

On ``(B, 8192, 6)`` clouds with B = 1 and B = 8:

(a) our FPS (8192 → 512, the first stage) against a faithful re-implementation of the released code's FPS
    (a Python loop over centres updating a running distance), with an index check on tie-free input;
(b) the embedding forward (eval, no autograd), paper and small configurations, fp32 and bf16 (autocast),
    with achieved GFLOP/s next to the machine's measured matmul GFLOP/s of the same dtype. Two FLOP counts:
    *nominal* (``PointEmbeddingConfig.flops``: the released layers) and *executed* (the matmuls our forward
    really runs, counted by ``torch.utils.flop_counter``; 25 % fewer, see ``enel/model/embedding.py``);
(c) the small configuration's forward + backward (train mode, with the projector) against one SmolLM2-135M
    training step on the same batch: 8 sequences of 129 point tokens + 40 text tokens through
    ``inputs_embeds``, bf16 autocast, the first 4 decoder layers trainable, the rest frozen (stage-1 style);
    for context also against an fp32 LLM step (``ratio_same_dtype``). Steady state: 4 warm-up steps, then
    the LLM steps and the embedding variants timed round-robin.

Targets: (a) ≥ 5× faster for B = 8 with the same indices; (b) paper forward ≥ 50 % of the matmul rate;
(c) embedding forward + backward ≤ 10 % of the LLM step. Prints tables, writes
``benchmarks/results/embedding.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    machine_info,
    matmul_gflops,
    print_table,
    set_threads,
    time_call,
    time_interleaved,
    write_json,
)

from enel.model.configuration_enel import PointEmbeddingConfig  # noqa: E402
from enel.model.embedding import (  # noqa: E402
    PointProjector,
    PointTokenEmbedding,
    count_parameters,
)
from enel.points import ops  # noqa: E402

N_POINTS = 8192
TEXT_TOKENS = 40


def clouds(batch: int, n: int = N_POINTS, seed: int = 0) -> torch.Tensor:
    """``(B, n, 6)``: xyz in the unit sphere (random floats: tie-free), rgb in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    xyz = torch.randn(batch, n, 3, generator=g)
    xyz = xyz / xyz.norm(dim=-1, keepdim=True).amax(dim=1, keepdim=True)
    return torch.cat([xyz, torch.rand(batch, n, 3, generator=g)], dim=-1)


def autocast(dtype: torch.dtype):
    return torch.autocast("cpu", dtype=torch.bfloat16) if dtype == torch.bfloat16 else contextlib.nullcontext()


# ----------------------------------------------------------------------------------------------------------
# sizes (no timing): parameters and FLOPs from the code
# ----------------------------------------------------------------------------------------------------------
LLM_HIDDEN = {"paper": 4096, "small": 576}  # Vicuna-7B, SmolLM2-135M


def size_rows(configs) -> list[dict]:
    rows = []
    for name in configs:
        cfg = PointEmbeddingConfig.preset(name)
        emb = PointTokenEmbedding(cfg)
        proj = PointProjector(cfg.output_dim, cfg.projector_hidden, LLM_HIDDEN[name])
        rows.append(
            {
                "config": name,
                "widths": "/".join(map(str, [cfg.embed_dim, *cfg.stage_dims])),
                "centres": "/".join(map(str, cfg.stage_centres)),
                "k": cfg.group_size,
                "tokens": cfg.num_tokens,
                "embedding_params_M": count_parameters(emb) / 1e6,
                "stage_params_M": "/".join(f"{count_parameters(s) / 1e6:.2f}" for s in emb.stages),
                "projector_params_M": count_parameters(proj) / 1e6,
                "llm_hidden": LLM_HIDDEN[name],
                "nominal_GFLOP@8192": cfg.flops(N_POINTS) / 1e9,
                "executed_GFLOP@8192": executed_flops(emb, N_POINTS) / 1e9,
                "num_points": cfg.num_points,
                "nominal_GFLOP@num_points": cfg.flops(cfg.num_points) / 1e9,
                "projector_GFLOP": cfg.projector_flops(LLM_HIDDEN[name]) / 1e9,
            }
        )
    return rows


# ----------------------------------------------------------------------------------------------------------
# (a) FPS
# ----------------------------------------------------------------------------------------------------------
def bench_fps(batches, repeats: int) -> list[dict]:
    rows = []
    for batch in batches:
        xyz = clouds(batch)[..., :3].contiguous()
        ours = ops.farthest_point_sample(xyz, 512)
        ref = ops.farthest_point_sample_reference(xyz, 512)
        t_ours = time_call(lambda: ops.farthest_point_sample(xyz, 512), repeats=repeats, min_seconds=0.5)
        t_ref = time_call(lambda: ops.farthest_point_sample_reference(xyz, 512), repeats=repeats)
        rows.append(
            {
                "B": batch,
                "ours_ms": t_ours.best * 1e3,
                "released_loop_ms": t_ref.best * 1e3,
                "speedup": t_ref.best / t_ours.best,
                "same_indices": bool(torch.equal(ours, ref)),
            }
        )
    return rows


# ----------------------------------------------------------------------------------------------------------
# (b) forward
# ----------------------------------------------------------------------------------------------------------
def executed_flops(emb: PointTokenEmbedding, n_points: int) -> int:
    """Matmul FLOPs our forward runs for one cloud, counted on the layer-by-layer path (same matmuls as the
    fused inference path, whose oneDNN calls the counter cannot see)."""
    x = clouds(1, n_points).requires_grad_(True)
    with FlopCounterMode(display=False) as counter:
        emb(x)
    counts = counter.get_flop_counts()["Global"]  # mm / addmm: the layers (bmm: the std's dot products)
    return sum(v for op, v in counts.items() if str(op).split(".")[-1] in ("mm", "addmm"))


def bench_forward(configs, batches, dtypes, repeats: int) -> list[dict]:
    """Eval forward without autograd; the dtypes of one (config, B) timed round-robin, each next to the
    matmul rate of its dtype measured just before (so that slow drifts of the machine's load cancel)."""
    rows = []
    for name in configs:
        cfg = PointEmbeddingConfig.preset(name)
        torch.manual_seed(0)
        emb = PointTokenEmbedding(cfg).eval()
        flops_per_cloud = executed_flops(emb, N_POINTS)
        for batch in batches:
            x = clouds(batch)

            def forward_fn(dtype):
                def forward():
                    with torch.no_grad(), autocast(dtype):
                        return emb(x)

                return forward

            peaks = {dtype: matmul_gflops(dtype) for dtype in dtypes}
            times = time_interleaved({dtype: forward_fn(dtype) for dtype in dtypes}, warmup=2, repeats=repeats)
            for dtype, t in times.items():
                executed, nominal = batch * flops_per_cloud, batch * cfg.flops(N_POINTS)
                rows.append(
                    {
                        "config": name,
                        "B": batch,
                        "dtype": dtype_name(dtype),
                        "seconds": t.best,
                        "median_s": t.median,
                        "nominal_GFLOP": nominal / 1e9,
                        "executed_GFLOP": executed / 1e9,
                        "executed_GFLOP/s": executed / t.best / 1e9,
                        "nominal_GFLOP/s": nominal / t.best / 1e9,
                        "matmul_GFLOP/s": peaks[dtype],
                        "executed_%_of_matmul": 100 * executed / t.best / 1e9 / peaks[dtype],
                    }
                )
    return rows


def dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.bfloat16: "bf16"}[dtype]


# ----------------------------------------------------------------------------------------------------------
# (c) embedding forward + backward vs a SmolLM2 training step
# ----------------------------------------------------------------------------------------------------------
def lm_step_fn(batch: int, point_tokens: int):
    """SmolLM2-135M, stage-1 style: first 4 decoder layers trainable, the rest frozen, gradients flowing to the
    ``inputs_embeds`` (as they would to the point tokens). Returns ``make(dtype) -> step`` and the hidden size."""
    from enel.model.backbones import load_backbone

    lm, _ = load_backbone("smollm2")
    lm.train()
    lm.requires_grad_(False)
    for layer in lm.model.layers[:4]:
        layer.requires_grad_(True)
    g = torch.Generator().manual_seed(0)
    seq = point_tokens + TEXT_TOKENS
    embeds = torch.randn(batch, seq, lm.config.hidden_size, generator=g).mul_(0.02).requires_grad_(True)
    labels = torch.full((batch, seq), -100)
    labels[:, point_tokens:] = torch.randint(0, lm.config.vocab_size, (batch, TEXT_TOKENS), generator=g)

    def make(dtype: torch.dtype):
        def step():
            lm.zero_grad(set_to_none=True)
            embeds.grad = None
            with autocast(dtype):
                loss = lm(inputs_embeds=embeds, labels=labels).loss
            loss.backward()

        return step

    return make, lm.config.hidden_size


def embed_step_fn(cfg: PointEmbeddingConfig, batch: int, n_points: int, dtype: torch.dtype, hidden: int):
    torch.manual_seed(0)
    emb = PointTokenEmbedding(cfg).train()
    proj = PointProjector(cfg.output_dim, cfg.projector_hidden, hidden).train()
    x = clouds(batch, n_points)
    grad = torch.randn(batch, cfg.num_tokens, hidden, generator=torch.Generator().manual_seed(1))

    def step():
        emb.zero_grad(set_to_none=True)
        proj.zero_grad(set_to_none=True)
        with autocast(dtype):
            out = proj(emb(x).features)
        out.float().backward(grad)

    return step


def bench_train_ratio(batch: int, point_counts, dtypes, repeats: int, warmup: int) -> tuple[dict, list[dict]]:
    """Steady-state times: several warm-up steps (glibc only starts reusing large blocks after a few steps),
    then the LLM steps and every embedding variant timed round-robin. The target compares with the bf16
    (autocast) LLM step of the issue; ``*_same_dtype`` compares with an LLM step in the embedding's dtype."""
    cfg = PointEmbeddingConfig.small()
    make_lm_step, hidden = lm_step_fn(batch, cfg.num_tokens)
    fns = {("lm", dtype): make_lm_step(dtype) for dtype in dtypes}
    for n_points in point_counts:
        for dtype in dtypes:
            fns[(n_points, dtype)] = embed_step_fn(cfg, batch, n_points, dtype, hidden)
    times = time_interleaved(fns, warmup=warmup, repeats=repeats)
    lm_times = {dtype: times.pop(("lm", dtype)) for dtype in dtypes}
    reference = lm_times[torch.bfloat16]
    lm_row = {"B": batch, "tokens": cfg.num_tokens + TEXT_TOKENS}
    lm_row.update({f"lm_step_{dtype_name(d)}": t for d, t in lm_times.items()})
    rows = []
    for (n_points, dtype), t in times.items():
        same = lm_times[dtype]
        rows.append(
            {
                "config": "small",
                "B": batch,
                "points": n_points,
                "dtype": dtype_name(dtype),
                "embed_fwd_bwd_s": t.best,
                "embed_median_s": t.median,
                "lm_bf16_step_s": reference.best,
                "ratio_%": 100 * t.best / reference.best,
                "ratio_of_medians_%": 100 * t.median / reference.median,
                "target_%": 10.0,
                "lm_same_dtype_s": same.best,
                "ratio_same_dtype_%": 100 * t.best / same.best,
            }
        )
    return lm_row, rows


# ----------------------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="B = 1 only for (a)/(b), one repeat, no B = 8 paper run")
    p.add_argument("--skip", nargs="*", default=[], choices=["fps", "forward", "train"], help="parts to skip")
    p.add_argument("--configs", nargs="*", default=["paper", "small"], choices=["paper", "small"])
    p.add_argument("--name", default="embedding", help="JSON file name under benchmarks/results/")
    args = p.parse_args(argv)

    set_threads(args.threads)
    repeats = 1 if args.quick else args.repeats
    batches = [1] if args.quick else [1, 8]
    dtypes = [torch.float32, torch.bfloat16]
    machine = machine_info()
    machine["matmul_gflops_fp32"] = matmul_gflops(torch.float32)
    machine["matmul_gflops_bf16"] = matmul_gflops(torch.bfloat16)
    shown = ("cpu", "torch_threads", "load_average_1_5_15min", "matmul_gflops_fp32", "matmul_gflops_bf16")
    print_table([{k: machine[k] for k in shown}], title="machine")
    result: dict = {"machine": machine, "n_points": N_POINTS}
    result["sizes"] = size_rows(["paper", "small"])
    print_table(result["sizes"], title="sizes (from the code): parameters, FLOPs per cloud")

    if "fps" not in args.skip:
        result["fps"] = bench_fps(batches, repeats=max(repeats, 3))
        print_table(result["fps"], title="(a) FPS 8192 → 512 centres, fp32 coordinates")
    if "forward" not in args.skip:
        result["forward"] = bench_forward(args.configs, batches, dtypes, repeats)
        print_table(result["forward"], title="(b) embedding forward (eval, no autograd), N = 8192")
    if "train" not in args.skip:
        warmup = 1 if args.quick else 4
        lm_row, rows = bench_train_ratio(8, [2048, 8192], dtypes, repeats=max(repeats, 3), warmup=warmup)
        result["lm_step"], result["train"] = lm_row, rows
        print_table(rows, title="(c) small embedding + projector forward+backward vs SmolLM2 training step (B = 8)")

    machine["load_average_after"] = machine_info()["load_average_1_5_15min"]
    machine["matmul_gflops_fp32_after"] = matmul_gflops(torch.float32)
    if machine["busy"]:
        print("warning: the load average exceeded the core count: other processes competed for the CPU")
    write_json(args.name, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
