"""``enel tokens`` and the commands that ask a model about files: ``caption``, ``classify``, ``ask``, ``chat``;
``init`` writes an untrained model folder to ask."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ..errors import EnelError
from .options import add_up_flag, model_dir


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("tokens", help="load a point cloud or mesh and print its point-token shapes")
    s.add_argument("file", nargs="?", help="point cloud or mesh file (default: the bundled sample chair)")
    s.add_argument("--points", type=int, default=None, help="resample to N points (default: the config's)")
    s.add_argument("--config", choices=["small", "paper"], default="small", help="embedding size preset")
    s.add_argument("--resample", choices=["fps", "random"], default="fps")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--json", action="store_true", help="machine-readable output")
    add_up_flag(s)
    s.set_defaults(func=cmd_tokens)

    def generation_flags(sp):
        sp.add_argument("--model", help="model folder (default: the quickstart's, runs/quickstart/model)")
        sp.add_argument("--points", type=int, default=None, help="resample clouds to N points (default: the model's)")
        sp.add_argument("--seed", type=int, default=0, help="seeds resampling and sampled decoding")
        sp.add_argument("--json", action="store_true", help="machine-readable output")
        sp.add_argument("--max-new-tokens", type=int, default=64)
        sp.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
        sp.add_argument("--temperature", type=float, default=1.0)
        sp.add_argument("--top-p", type=float, default=0.95)
        sp.add_argument("--top-k", type=int, default=50)
        sp.add_argument("--beams", type=int, default=1, help="beam search width")
        sp.add_argument("--batch-size", type=int, default=4)
        add_up_flag(sp)

    s = sub.add_parser("caption", help="caption point clouds or meshes")
    s.add_argument("files", nargs="+", help="point cloud or mesh files (.npy .npz .ply .pcd .xyz .txt .pts .obj .off .stl .glb .gltf)")
    s.add_argument("--prompt", default=None, help='instruction (default: "Caption this 3D model in detail.")')
    generation_flags(s)
    s.set_defaults(func=cmd_caption)

    s = sub.add_parser("classify", help='name the objects ("What is this?" / "This is an object of ")')
    s.add_argument("files", nargs="+")
    s.add_argument("--prompt", choices=["what", "completion", "both"], default="what")
    generation_flags(s)
    s.set_defaults(func=cmd_classify)

    s = sub.add_parser("ask", help="ask one question about a point cloud")
    s.add_argument("file")
    s.add_argument("question")
    generation_flags(s)
    s.set_defaults(func=cmd_ask)

    s = sub.add_parser("chat", help="multi-turn chat about point clouds in the terminal")
    s.add_argument("file", nargs="?", help="first object (asked for when omitted)")
    generation_flags(s)
    s.set_defaults(func=cmd_chat)

    s = sub.add_parser("init", help="create a freshly initialised (untrained) model folder")
    s.add_argument("out", help="folder to write")
    s.add_argument("--backbone", default="smollm2", help="smollm2, tiny-llama, tiny-qwen2 or a local HF folder")
    s.add_argument("--config", choices=["small", "paper"], default="small", help="point embedding preset")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_init)


def cmd_tokens(args: argparse.Namespace) -> int:
    import torch

    from ..model.embedding import PointEmbeddingConfig, PointTokenEmbedding, count_parameters
    from ..paths import bundled_sample
    from ..points.io import load_point_cloud
    from ..points.transforms import model_input, to_z_up

    torch.manual_seed(args.seed)
    cfg = PointEmbeddingConfig.preset(args.config)
    path = Path(args.file) if args.file else bundled_sample()
    t0 = time.perf_counter()
    cloud = load_point_cloud(path, seed=args.seed)
    load_s = time.perf_counter() - t0
    n_target = args.points or cfg.num_points
    points = model_input(to_z_up(cloud.as_array(), args.up), n_target, method=args.resample, seed=args.seed)
    emb = PointTokenEmbedding(cfg).eval()
    x = torch.from_numpy(points).unsqueeze(0)
    t0 = time.perf_counter()
    with torch.no_grad():
        out = emb(x)
    embed_s = time.perf_counter() - t0
    info = {
        "file": str(path),
        "points_in_file": int(cloud.xyz.shape[0]),
        "colour": cloud.colour_source,
        "notes": cloud.notes,
        "bbox_min": [round(float(v), 4) for v in cloud.xyz.min(0)],
        "bbox_max": [round(float(v), 4) for v in cloud.xyz.max(0)],
        "up": args.up,
        "points_embedded": int(points.shape[0]),
        "config": args.config,
        "embedding_parameters": count_parameters(emb),
        "gflop_per_cloud": round(cfg.flops(points.shape[0]) / 1e9, 3),
        "tokens": list(out.features.shape),
        "centres": list(out.centres.shape),
        "patches": list(out.patches.shape),
        "load_seconds": round(load_s, 4),
        "embed_seconds": round(embed_s, 4),
        "note": "randomly initialised embedding: shapes and timing only",
    }
    if args.json:
        print(json.dumps(info, indent=1))
    else:
        width = max(len(k) for k in info)
        for k, v in info.items():
            print(f"{k:<{width}}  {v}")
    return 0


# ----------------------------------------------------------------------------------------------------------
# inference: init, caption, classify, ask, chat
# ----------------------------------------------------------------------------------------------------------
def _model_points(folder: Path) -> int:
    """The model's input resolution, read from its config without loading weights (so bad files fail fast)."""
    from ..errors import ModelLoadError
    from ..model.saving import model_config_file

    cfg = model_config_file(folder)
    try:
        return int(json.loads(cfg.read_text())["point_config"]["num_points"])
    except (ValueError, KeyError, TypeError):
        raise ModelLoadError(f"{cfg} is not an ENEL model config (no point_config.num_points)") from None


def _assistant(args: argparse.Namespace, folder: Path):
    from ..inference import Assistant

    settings = dict(max_new_tokens=args.max_new_tokens, do_sample=args.sample, temperature=args.temperature,
                    top_p=args.top_p, top_k=args.top_k, num_beams=args.beams, seed=args.seed)
    return Assistant.from_folder(folder, **settings)


def _clouds(args, num_points: int):
    from ..inference import prepare_cloud

    return [(f, *prepare_cloud(f, args.points or num_points, seed=args.seed, up=args.up)) for f in args.files]


def _answer_files(args: argparse.Namespace, questions: list[str]) -> int:
    import numpy as np

    folder = model_dir(args)
    clouds = _clouds(args, _model_points(folder))  # every file is read before the model is loaded
    assistant = _assistant(args, folder)
    meta = assistant.metadata()
    if not args.json and not assistant.trained:
        print(f"warning: {meta['warning']}", file=sys.stderr)
    records = []
    for start in range(0, len(clouds), args.batch_size):
        chunk = clouds[start : start + args.batch_size]
        for q in questions:
            answers = assistant.ask(np.stack([c[1] for c in chunk]), [q] * len(chunk))
            for (f, pts, cloud), a in zip(chunk, answers):
                records.append({"file": str(f), "prompt": q, "output": a, "points": int(pts.shape[0]),
                                "colour": cloud.colour_source, "notes": cloud.notes})
    if args.json:
        print(json.dumps({"model": str(folder), **meta, "results": records}, indent=1))
    else:
        for r in records:
            prefix = f"{r['file']}: " if len(args.files) > 1 or len(questions) > 1 else ""
            tag = f"[{r['prompt'].strip()}] " if len(questions) > 1 else ""
            print(f"{prefix}{tag}{r['output']}")
    return 0


def cmd_caption(args: argparse.Namespace) -> int:
    from ..data.prompts import PROMPTS

    return _answer_files(args, [args.prompt or PROMPTS["caption"]])


def cmd_classify(args: argparse.Namespace) -> int:
    from ..data.prompts import PROMPTS

    prompts = {"what": [PROMPTS["what"]], "completion": [PROMPTS["completion"]],
               "both": [PROMPTS["what"], PROMPTS["completion"]]}[args.prompt]
    return _answer_files(args, prompts)


def cmd_ask(args: argparse.Namespace) -> int:
    args.files = [args.file]
    return _answer_files(args, [args.question])


def _read_line(prompt: str) -> str | None:
    """One stripped line typed after ``prompt``; None at the end of input (Ctrl-D)."""
    try:
        return input(prompt).strip()
    except EOFError:
        print()
        return None


def cmd_chat(args: argparse.Namespace) -> int:
    from ..inference import prepare_cloud

    folder = model_dir(args)
    num_points = _model_points(folder)
    path = args.file
    if path is not None:
        prepare_cloud(path, args.points or num_points, seed=args.seed, up=args.up)  # a bad first file fails before loading
    assistant = _assistant(args, folder)
    if not assistant.trained:
        print(f"warning: {assistant.metadata()['warning']}", file=sys.stderr)
    print("enel chat: type a question; 'exit' for a new object; Ctrl-D to quit.")
    while True:
        if path is None:
            path = _read_line("point cloud file> ")
            if path is None:
                return 0
            if not path:
                path = None
                continue
        try:
            points, cloud = prepare_cloud(path, args.points or assistant.num_points, seed=args.seed, up=args.up)
        except EnelError as exc:
            print(f"error: {exc}", file=sys.stderr)
            path = None
            continue
        print(f"[{path}: {cloud.xyz.shape[0]} points, colour: {cloud.colour_source}]")
        history: list[tuple[str, str]] = []
        while True:
            q = _read_line("you> ")
            if q is None:
                return 0
            if not q:
                continue
            if q.lower() == "exit":
                path = None
                break
            print("enel> ", end="", flush=True)
            answer = ""
            for piece in assistant.stream(points, q, history):
                answer += piece
                print(piece, end="", flush=True)
            print()
            history.append((q, answer.strip()))


def cmd_init(args: argparse.Namespace) -> int:
    from ..model import EnelForCausalLM
    from ..model.saving import save_model

    model, tokenizer = EnelForCausalLM.from_backbone(args.backbone, point_config=args.config, seed=args.seed)
    path = save_model(model, tokenizer, args.out)
    print(f"initialised an untrained ENEL model in {path} (backbone {args.backbone}, {args.config} embedding)")
    return 0
