"""``enel demo``: the web demo (upload a point cloud or mesh, see it in 3D, chat about it)."""

from __future__ import annotations

import argparse
import sys

from ..errors import EnelError


def register(sub: argparse._SubParsersAction) -> None:
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


def cmd_demo(args: argparse.Namespace) -> int:
    from ..demo.core import DemoEngine, Limits
    from ..model.saving import model_config_file
    from ..paths import default_model_dir

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
    from ..demo.app import serve

    engine = DemoEngine(model_dir, limits=limits, threads=args.threads, backbone=args.backbone,
                        fallback_reason=reason)
    serve(engine, args.host, args.port)
    return 0
