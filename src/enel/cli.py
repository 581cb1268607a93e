"""The ``enel`` command.

Every sub-command lives in a small function that imports what it needs, so ``enel --help`` starts fast.
User-facing errors (:class:`enel.errors.EnelError`) print as one line ``error: …`` with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from .errors import EnelError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


# ----------------------------------------------------------------------------------------------------------
# setup
# ----------------------------------------------------------------------------------------------------------
def cmd_setup(args: argparse.Namespace) -> int:
    from .eval.wordnet import ensure_wordnet
    from .model.backbones import prepare_default_backbone

    wn = ensure_wordnet()
    print(f"wordnet: {wn if wn else 'not available (install Debian wordnet-base wordnet-sense-index)'}")
    path = prepare_default_backbone(force=args.force)
    print(f"backbone: {path}")
    return 0


# ----------------------------------------------------------------------------------------------------------
# tokens
# ----------------------------------------------------------------------------------------------------------
def bundled_sample() -> Path:
    """A coloured procedural chair shipped with the package (8,192 points, binary PLY)."""
    return Path(__file__).parent / "assets" / "sample_chair.ply"


def cmd_tokens(args: argparse.Namespace) -> int:
    import torch

    from .model.embedding import PointEmbeddingConfig, PointTokenEmbedding, count_parameters
    from .points.io import load_point_cloud
    from .points.transforms import model_input, to_z_up

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
def _model_dir(args: argparse.Namespace) -> Path:
    from .paths import default_model_dir

    return Path(args.model) if args.model else default_model_dir()


def _model_points(model_dir: Path) -> int:
    """The model's input resolution, read from its config without loading weights (so bad files fail fast)."""
    from .errors import ModelLoadError
    from .inference import model_config_file

    cfg = model_config_file(model_dir)
    try:
        return int(json.loads(cfg.read_text())["point_config"]["num_points"])
    except (ValueError, KeyError, TypeError):
        raise ModelLoadError(f"{cfg} is not an ENEL model config (no point_config.num_points)") from None


def _assistant(args: argparse.Namespace, model_dir: Path):
    from .inference import Assistant

    settings = dict(max_new_tokens=args.max_new_tokens, do_sample=args.sample, temperature=args.temperature,
                    top_p=args.top_p, top_k=args.top_k, num_beams=args.beams, seed=args.seed)
    return Assistant.from_folder(model_dir, **settings)


def _clouds(args, num_points: int):
    from .inference import prepare_cloud

    return [(f, *prepare_cloud(f, args.points or num_points, seed=args.seed, up=args.up)) for f in args.files]


def _answer_files(args: argparse.Namespace, questions: list[str]) -> int:
    import numpy as np

    model_dir = _model_dir(args)
    clouds = _clouds(args, _model_points(model_dir))  # every file is read before the model is loaded
    assistant = _assistant(args, model_dir)
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
        print(json.dumps({"model": str(model_dir), **meta, "results": records}, indent=1))
    else:
        for r in records:
            prefix = f"{r['file']}: " if len(args.files) > 1 or len(questions) > 1 else ""
            tag = f"[{r['prompt'].strip()}] " if len(questions) > 1 else ""
            print(f"{prefix}{tag}{r['output']}")
    return 0


def cmd_caption(args: argparse.Namespace) -> int:
    from .inference import PROMPTS

    return _answer_files(args, [args.prompt or PROMPTS["caption"]])


def cmd_classify(args: argparse.Namespace) -> int:
    from .inference import PROMPTS

    prompts = {"what": [PROMPTS["what"]], "completion": [PROMPTS["completion"]],
               "both": [PROMPTS["what"], PROMPTS["completion"]]}[args.prompt]
    return _answer_files(args, prompts)


def cmd_ask(args: argparse.Namespace) -> int:
    args.files = [args.file]
    return _answer_files(args, [args.question])


def cmd_chat(args: argparse.Namespace) -> int:
    from .inference import prepare_cloud

    model_dir = _model_dir(args)
    num_points = _model_points(model_dir)
    path = args.file
    if path is not None:
        prepare_cloud(path, args.points or num_points, seed=args.seed, up=args.up)  # a bad first file fails before loading
    assistant = _assistant(args, model_dir)
    if not assistant.trained:
        print(f"warning: {assistant.metadata()['warning']}", file=sys.stderr)
    print("enel chat: type a question; 'exit' for a new object; Ctrl-D to quit.")
    while True:
        if path is None:
            try:
                path = input("point cloud file> ").strip()
            except EOFError:
                print()
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
            try:
                q = input("you> ").strip()
            except EOFError:
                print()
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
    from .inference import init_model

    path = init_model(args.out, backbone=args.backbone, point_config=args.config, seed=args.seed)
    print(f"initialised an untrained ENEL model in {path} (backbone {args.backbone}, {args.config} embedding)")
    return 0


# ----------------------------------------------------------------------------------------------------------
# data, train, quickstart
# ----------------------------------------------------------------------------------------------------------
def cmd_data_synth(args: argparse.Namespace) -> int:
    from .data.procedural import synthesize

    manifest = synthesize(args.out, objects_per_category=args.objects_per_category, seed=args.seed,
                          num_points=args.points, force=args.force)
    print(json.dumps(manifest, indent=1) if args.json else f"procedural dataset ready in {args.out}")
    return 0


def cmd_data_convert_modelnet(args: argparse.Namespace) -> int:
    from .data.modelnet import convert_modelnet

    if not args.allow_pickle:
        raise EnelError(
            "converting the ModelNet40 pickle unpickles it, which can run code from the file: pass --allow-pickle "
            "if you trust it (enel uses a restricted unpickler that only admits numpy arrays and lists)"
        )
    out = convert_modelnet(args.pickle, args.out, allow_pickle=True)
    print(f"wrote {out}")
    return 0


def cmd_data_modelnet40(args: argparse.Namespace) -> int:
    from .data.modelnet_import import import_modelnet40

    written = import_modelnet40(args.source, args.out, split=args.split, allow_pickle=args.allow_pickle,
                                seed=args.seed, num_points=args.points, up=args.up, progress=not args.json)
    if args.json:
        print(json.dumps({split: str(path) for split, path in written.items()}, indent=1))
    else:
        for split, path in written.items():
            print(f"wrote {path} ({split})")
        print(f"manifest and licence note: {Path(args.out) / 'README.md'} (ModelNet40 is for academic research "
              "only: never commit or ship it)")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .train.recipe import load_recipe
    from .train.run import train

    recipe = load_recipe(args.recipe, args.overrides)
    outcome = train(recipe, resume=args.resume)
    print(f"model: {outcome.model_dir} ({outcome.global_step} steps)")
    return 0


def cmd_quickstart(args: argparse.Namespace) -> int:
    from .errors import ConfigError
    from .pipeline import quickstart

    for flag, value in (("--stage1-steps", args.stage1_steps), ("--stage2-steps", args.stage2_steps)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} must be a positive number of steps, got {value}")
    if args.minutes is not None and args.minutes <= 0:
        raise ConfigError(f"--minutes is a cap on the training time and must be positive, got {args.minutes}")
    steps = {k: v for k, v in ((1, args.stage1_steps), (2, args.stage2_steps)) if v is not None}
    quickstart(out=args.out, data_dir=args.data, modelnet40=args.modelnet40, steps=steps, minutes=args.minutes,
               objects_per_category=args.objects_per_category, seed=args.seed, backbone=args.backbone,
               force=args.force, threads=args.threads)
    return 0


# ----------------------------------------------------------------------------------------------------------
# demo
# ----------------------------------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    from .demo.core import DemoEngine, Limits
    from .inference import model_config_file
    from .paths import default_model_dir

    if not 1 <= args.port <= 65535:
        raise EnelError(f"--port must be between 1 and 65535, got {args.port}")
    if args.threads < 1:
        raise EnelError(f"--threads must be at least 1, got {args.threads}")
    if not args.host.strip():
        raise EnelError("--host must not be empty (127.0.0.1 keeps the demo on this machine)")
    limits = Limits(max_new_tokens=args.max_new_tokens, time_limit_s=args.time_limit,
                    max_upload_bytes=int(args.max_upload_mb * 2**20)).check()
    reason = None
    if args.model:
        model_dir = model_config_file(args.model).parent  # a wrong --model fails here, before anything starts
    elif (default_model_dir() / "config.json").is_file():
        model_dir = default_model_dir()
    else:
        model_dir = None
        reason = f"no trained model in {default_model_dir()}"
        print(f"warning: {reason}; serving an untrained {args.backbone} model (its answers mean nothing). "
              "Train one with `enel quickstart` or pass --model DIR.", file=sys.stderr, flush=True)
    try:
        import gradio  # noqa: F401
        import plotly  # noqa: F401
    except ImportError as exc:
        raise EnelError(f"the demo needs Gradio and Plotly ({exc.name} is missing): pip install 'enel[demo]' "
                        "(scripts/setup.sh installs them)") from None
    from .demo.app import serve

    engine = DemoEngine(model_dir, limits=limits, threads=args.threads, backbone=args.backbone,
                        fallback_reason=reason)
    serve(engine, args.host, args.port)
    return 0


# ----------------------------------------------------------------------------------------------------------
# parser
# ----------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="enel", description="ENEL: an encoder-free 3D large multimodal model")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("setup", help="prepare cached assets: WordNet for METEOR, the SmolLM2 conversion")
    s.add_argument("--force", action="store_true", help="rebuild the SmolLM2 conversion")
    s.set_defaults(func=cmd_setup)

    def up_flag(sp):
        sp.add_argument("--up", choices=["z", "y"], default="z",
                        help="the axis pointing up in the files: z (default, the model's frame) or y (PointLLM's "
                             "Objaverse .npy, glTF); y-up clouds are turned to z-up before the model sees them")

    s = sub.add_parser("tokens", help="load a point cloud or mesh and print its point-token shapes")
    s.add_argument("file", nargs="?", help="point cloud or mesh file (default: the bundled sample chair)")
    s.add_argument("--points", type=int, default=None, help="resample to N points (default: the config's)")
    s.add_argument("--config", choices=["small", "paper"], default="small", help="embedding size preset")
    s.add_argument("--resample", choices=["fps", "random"], default="fps")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--json", action="store_true", help="machine-readable output")
    up_flag(s)
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
        up_flag(sp)

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

    s = sub.add_parser("data", help="datasets: synthesise the procedural data, import or convert ModelNet40")
    dsub = s.add_subparsers(dest="data_command", required=True)
    d = dsub.add_parser("synth", help="write the procedural 3D instruction dataset in PointLLM's layout")
    d.add_argument("--out", default="data/procedural")
    d.add_argument("--objects-per-category", type=int, default=60)
    d.add_argument("--points", type=int, default=8192)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--force", action="store_true", help="regenerate even if the folder holds the same dataset")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_data_synth)
    d = dsub.add_parser("convert-modelnet", help="PointLLM's modelnet40_test_8192pts_fps.dat → a pickle-free .npz")
    d.add_argument("pickle")
    d.add_argument("out")
    d.add_argument("--allow-pickle", action="store_true", help="confirm you trust the pickle (it is unpickled once)")
    d.set_defaults(func=cmd_data_convert_modelnet)

    d = dsub.add_parser("modelnet40", help="import your ModelNet40 (npz, PointLLM's .dat, Princeton's "
                                            "ModelNet40.zip) into data/modelnet40 as z-up unit-sphere clouds")
    d.add_argument("--from", dest="source", required=True, metavar="FILE",
                   help="an .npz (points, labels, class_names[, object_ids]), PointLLM's "
                        "modelnet40_test_8192pts_fps.dat, or Princeton's ModelNet40.zip / its unpacked folder")
    d.add_argument("--out", default="data/modelnet40", help="output folder (default data/modelnet40, git-ignored)")
    d.add_argument("--allow-pickle", action="store_true", help="confirm you trust the .dat pickle (read once, "
                                                               "with a numpy-only unpickler)")
    d.add_argument("--split", choices=["train", "test"], default=None,
                   help="the split an .npz holds (default: from its name); for the zip, import only this split")
    d.add_argument("--points", type=int, default=None,
                   help="points per cloud (meshes: default 1024; point sources: default keep theirs)")
    d.add_argument("--up", choices=["z", "y"], default=None,
                   help="override the source's up axis (default: npz z, .dat y, Princeton meshes z)")
    d.add_argument("--seed", type=int, default=0, help="seeds the mesh surface sampling")
    d.add_argument("--json", action="store_true", help="print the written paths as JSON, no progress")
    d.set_defaults(func=cmd_data_modelnet40)

    s = sub.add_parser("train", help="train one stage from a recipe (see configs/)")
    s.add_argument("--recipe", required=True, help="a bundled recipe name (e.g. smollm2_stage1) or a YAML path")
    s.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. train.batch_size=4")
    s.add_argument("--resume", action="store_true", help="continue from the last complete checkpoint")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("quickstart", help="the main job: data → stage 1 → stage 2 → evaluation on the embedded default")
    s.add_argument("--out", default="runs/quickstart")
    s.add_argument("--data", default="data/procedural")
    s.add_argument("--modelnet40", metavar="FILE",
                   help="real shapes to train and validate on: a ModelNet40 archive (npz, PointLLM's .dat, "
                        "Princeton's ModelNet40.zip); default: $ENEL_MODELNET40, else ../shared/data/modelnet40 "
                        "beside the checkout when it exists, else procedural data alone")
    s.add_argument("--stage1-steps", type=int, default=None, help="stage-1 training steps (default 1300)")
    s.add_argument("--stage2-steps", type=int, default=None, help="stage-2 training steps (default 100)")
    s.add_argument("--minutes", type=float, default=None,
                   help="optional cap on the training time of both stages; a stage that reaches it stops early "
                        "and the summary says how many steps it trained")
    s.add_argument("--objects-per-category", type=int, default=60)
    s.add_argument("--backbone", default="smollm2")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--force", action="store_true", help="retrain even if a finished stage exists")
    s.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: one per core; 1 on a machine busy with other jobs)")
    s.set_defaults(func=cmd_quickstart)

    s = sub.add_parser("demo", help="the web demo: upload a point cloud or mesh, see it in 3D, chat about it")
    s.add_argument("--model", help="model folder (default: the quickstart's, runs/quickstart/model; an untrained "
                                   "SmolLM2 model when there is none)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=7860)
    s.add_argument("--max-new-tokens", type=int, default=128, help="length limit of one answer")
    s.add_argument("--time-limit", type=float, default=60.0, help="seconds one answer may take")
    s.add_argument("--max-upload-mb", type=float, default=64.0, help="largest file accepted")
    s.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: on a busy 2-core machine two threads made the first words 4-17x "
                        "slower; raise it on an idle machine with more cores)")
    s.add_argument("--backbone", default="smollm2", help=argparse.SUPPRESS)  # the untrained fallback's (tests)
    s.set_defaults(func=cmd_demo)

    from .eval.commands import register as register_eval

    register_eval(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except EnelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
