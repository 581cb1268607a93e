"""Helpers shared by every benchmark: threads, timing, the machine's matmul throughput, a table, JSON.

    from common import Timing, time_call, time_interleaved, matmul_gflops, machine_info, print_table, write_json

A benchmark times callables with :func:`time_call` (warm-up runs, then repeats; the best run is the headline
because other processes only ever make a run slower) or, for ratios, :func:`time_interleaved` (round-robin,
so that load bursts hit every contender alike), prints rows with :func:`print_table` and saves them
with :func:`write_json` to ``benchmarks/results/<name>.json`` (git-ignored) together with
:func:`machine_info`, which records the load average so that numbers taken on a busy machine can be spotted.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"

__all__ = [
    "RESULTS_DIR",
    "Timing",
    "set_threads",
    "time_call",
    "time_interleaved",
    "matmul_gflops",
    "machine_info",
    "print_table",
    "write_json",
]


@dataclass(frozen=True)
class Timing:
    """Wall-clock seconds of the repeats of one callable: ``best`` (headline), ``median``, every run."""

    best: float
    median: float
    runs: tuple[float, ...]

    def to_dict(self) -> dict:
        return asdict(self)


def set_threads(n: int) -> None:
    """Pin torch's intra-op threads (the FPS/kNN kernels follow ``torch.get_num_threads()`` too)."""
    if n < 1:
        raise ValueError(f"threads must be positive, not {n}")
    torch.set_num_threads(n)


def time_call(fn: Callable[[], Any], *, warmup: int = 1, repeats: int = 5, min_seconds: float = 0.0) -> Timing:
    """Time ``fn()``: ``warmup`` untimed calls, then ``repeats`` timed calls (more while the total is below
    ``min_seconds``, for very short calls)."""
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    for _ in range(warmup):
        fn()
    runs: list[float] = []
    start = time.perf_counter()
    while len(runs) < repeats or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return Timing(best=min(runs), median=statistics.median(runs), runs=tuple(runs))


def time_interleaved(
    fns: dict[str, Callable[[], Any]], *, warmup: int = 1, repeats: int = 5
) -> dict[str, Timing]:
    """Time several callables round-robin (``a b c a b c …``) so that a burst of load from other processes
    hits all of them alike; each gets ``warmup`` untimed calls first. Use it for ratios."""
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    runs: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            runs[name].append(time.perf_counter() - t0)
    return {name: Timing(best=min(r), median=statistics.median(r), runs=tuple(r)) for name, r in runs.items()}


def matmul_gflops(dtype: torch.dtype = torch.float32, n: int = 2048, repeats: int = 5) -> float:
    """The machine's dense matmul rate, GFLOP/s: best of ``repeats`` ``(n × n) @ (n × n)`` products."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    out = torch.empty(n, n, dtype=dtype)
    timing = time_call(lambda: torch.mm(a, b, out=out), warmup=2, repeats=repeats)
    return 2 * n**3 / timing.best / 1e9


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    """What the numbers were measured on: CPU, cores, torch threads and version, load average."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    cores = os.cpu_count() or 1
    return {
        "cpu": _cpu_model(),
        "cores": cores,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_average_1_5_15min": [round(x, 2) for x in load],
        "busy": load[0] > cores,  # other processes competed for the cores: treat timings with care
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 1:
            return f"{value:.2f}"
        return f"{value:.3g}"
    return str(value)


def print_table(rows: Sequence[dict], columns: Sequence[str] | None = None, title: str | None = None) -> str:
    """Print ``rows`` (dicts) as an aligned Markdown table and return the text."""
    columns = list(columns or (rows[0].keys() if rows else []))
    cells = [[_cell(r.get(c, "")) for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += ["| " + " | ".join(v.rjust(w) for v, w in zip(row, widths)) + " |" for row in cells]
    text = ("\n".join([f"\n{title}\n", *lines]) if title else "\n".join(lines)) + "\n"
    print(text, flush=True)
    return text


def write_json(name: str, payload: dict, directory: Path | None = None) -> Path:
    """Write ``payload`` (plus ``machine_info()`` under ``"machine"`` unless present) to ``<dir>/<name>.json``."""
    directory = Path(directory or RESULTS_DIR)
    directory.mkdir(parents=True, exist_ok=True)
    data = dict(payload)
    data.setdefault("machine", machine_info())
    path = directory / f"{name}.json"
    path.write_text(json.dumps(data, indent=1, default=_json_default) + "\n")
    print(f"wrote {path}")
    return path


def _json_default(obj: Any):
    if isinstance(obj, Timing):
        return obj.to_dict()
    if isinstance(obj, (torch.dtype, Path)):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


def training_optimiser(model: torch.nn.Module, recipe) -> tuple[list, torch.optim.Optimizer, float]:
    """``(trainable parameters, AdamW, max grad norm)`` as ``enel train`` builds them for ``recipe``."""
    from enel.train.freezing import parameter_groups

    o = recipe.optim
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(parameter_groups(model, lr_new=o.lr_new, lr_llm=o.lr_llm, weight_decay=o.weight_decay),
                            lr=o.lr_new)
    return params, opt, o.max_grad_norm


def cycled_batch(dataset, collator, batch_size: int, index: int) -> dict:
    """Batch ``index`` of ``dataset`` taken in order and wrapped around its end, collated into the model's inputs."""
    from enel.data.collate import model_inputs

    n = len(dataset)
    return model_inputs(collator([dataset[(index * batch_size + k) % n] for k in range(batch_size)]))
