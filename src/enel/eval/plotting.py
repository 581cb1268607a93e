"""The evaluation's figures, in one place: 3D point-cloud scatter panels (the report's object renders, the
attention maps), the attention map's self-contained HTML viewer, and the report's loss curves.

Every figure is drawn off-screen with matplotlib's Agg canvas (no display needed). Clouds are drawn z-up, in
the unit sphere the model sees (:func:`enel.points.transforms.pc_norm`), from the same viewpoint (elevation
20°, azimuth -60°); y-up clouds are turned with :func:`enel.points.transforms.to_z_up` first.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np

__all__ = [
    "COLORMAP",
    "subsample",
    "render_cloud_png",
    "render_attention_png",
    "render_attention_html",
    "loss_curves_png",
]

COLORMAP = "inferno"


def subsample(n: int, max_points: int) -> np.ndarray:
    """At most ``max_points`` indices of ``n`` points, evenly spread (all of them when ``n <= max_points``)."""
    if n <= max_points:
        return np.arange(n)
    return np.linspace(0, n - 1, max_points).round().astype(np.int64)


def _scale01(values: np.ndarray) -> np.ndarray:
    lo, hi = float(values.min()), float(values.max())
    return (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)


def _figure(figsize: tuple[float, float], dpi: int):
    """A matplotlib ``Figure`` on an off-screen Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def _cloud_panel(fig, rect: list[float], xyz: np.ndarray, colours: np.ndarray, *, size: float, zoom: float,
                 title: str | None = None) -> None:
    """One 3D scatter panel of ``xyz (n, 3)`` coloured ``colours (n, 3|4)``, in the shared frame and view."""
    ax = fig.add_axes(rect, projection="3d")
    ax.scatter(xyz[:, 0], xyz[:, 1], xyz[:, 2], c=colours, s=size, depthshade=False, linewidths=0)
    ax.set_box_aspect((1, 1, 1), zoom=zoom)
    for setter in (ax.set_xlim, ax.set_ylim, ax.set_zlim):
        setter(-0.8, 0.8)
    ax.view_init(elev=20, azim=-60)
    ax.set_axis_off()
    if title is not None:
        ax.set_title(title, fontsize=10, y=0.95)


def _save(fig, path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p)
    return p


def render_cloud_png(points: np.ndarray, path, *, up: str = "z", max_points: int = 4096) -> Path:
    """A small picture of one cloud in its own colours: ``points (N, 6)`` xyz + rgb in [0, 1]."""
    from ..points.transforms import to_z_up  # torch: imported when a figure is drawn, not with the module

    keep = subsample(len(points), max_points)
    fig = _figure((2.6, 2.6), 90)
    _cloud_panel(fig, [0, 0, 1, 1], to_z_up(points[keep, :3], up), np.clip(points[keep, 3:6], 0, 1), size=2,
                 zoom=1.3)
    return _save(fig, path)


def render_attention_png(points: np.ndarray, point_weights: np.ndarray, path, *, title: str = "",
                         up: str = "z", max_points: int = 8192, cmap: str = COLORMAP) -> Path:
    """Two 3D scatter panels (the cloud's colours; the attention per point with a colour bar) to a PNG.

    Args:
        points: ``(N, 6)`` xyz + rgb in [0, 1]; point_weights: ``(N,)``.
        up: the cloud's up axis (``"z"`` procedural data; ``"y"`` for y-up clouds).
    """
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    from ..points.transforms import to_z_up

    keep = subsample(len(points), max_points)
    xyz = to_z_up(points[keep, :3], up)
    w = np.asarray(point_weights)[keep]
    fig = _figure((9, 4.4), 110)
    norm = Normalize(vmin=float(w.min()), vmax=float(w.max()) if w.max() > w.min() else float(w.min()) + 1e-12)
    size = float(np.clip(6.0 * np.sqrt(2048.0 / max(len(w), 1)), 1.0, 12.0))
    by_weight = np.argsort(w, kind="stable")  # the strongest points drawn last, on top
    _cloud_panel(fig, [0.0, 0.0, 0.46, 0.9], xyz, np.clip(points[keep, 3:6], 0, 1), size=size, zoom=1.25,
                 title="colours")
    _cloud_panel(fig, [0.44, 0.0, 0.46, 0.9], xyz[by_weight], colormaps[cmap](norm(w))[by_weight], size=size,
                 zoom=1.25, title="attention")
    cax = fig.add_axes([0.885, 0.2, 0.015, 0.55])
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), cax=cax, label="attention weight (token share)")
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


_HTML = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<style>
body{font-family:system-ui,sans-serif;margin:16px;color:#222;max-width:760px}
canvas{border:1px solid #ccc;cursor:grab;background:#fff;touch-action:none}
.bar{height:12px;width:320px;background:linear-gradient(to right,__GRADIENT__)}
.legend{display:flex;gap:8px;align-items:center;font-size:12px}
.meta{font-size:13px;color:#444}
</style></head><body>
<h2>__TITLE__</h2>
<div class="meta">__META__</div>
<p><label><input type="radio" name="mode" value="att" checked> attention</label>
<label><input type="radio" name="mode" value="rgb"> object colours</label>
&nbsp; point size <input id="size" type="range" min="1" max="6" value="2"></p>
<canvas id="view" width="640" height="560"></canvas>
<div class="legend"><span>low</span><div class="bar"></div><span>high</span></div>
<p class="meta">Drag to rotate, wheel to zoom. Self-contained: no network needed.</p>
<script>
const D = __DATA__;
const cv = document.getElementById("view"), ctx = cv.getContext("2d");
let yaw = -0.9, pitch = 0.35, zoom = 1.0, mode = "att", size = 2;
const n = D.xyz.length / 3;
function colour(i) {
  const c = mode === "att" ? D.att : D.rgb;
  return "rgb(" + c[3 * i] + "," + c[3 * i + 1] + "," + c[3 * i + 2] + ")";
}
function draw() {
  const cy = Math.cos(yaw), sy = Math.sin(yaw), cp = Math.cos(pitch), sp = Math.sin(pitch);
  const s = 0.42 * Math.min(cv.width, cv.height) * zoom, ox = cv.width / 2, oy = cv.height / 2;
  const px = new Float32Array(n), py = new Float32Array(n), depth = new Float32Array(n), idx = new Array(n);
  for (let i = 0; i < n; i++) {
    const x = D.xyz[3 * i], y = D.xyz[3 * i + 1], z = D.xyz[3 * i + 2];
    const x1 = cy * x - sy * y, y1 = sy * x + cy * y;  // yaw about the up (z) axis
    const y2 = cp * y1 - sp * z, z2 = sp * y1 + cp * z;  // pitch
    px[i] = ox + s * x1; py[i] = oy - s * z2; depth[i] = y2; idx[i] = i;
  }
  idx.sort((a, b) => depth[b] - depth[a]);  // far first
  ctx.clearRect(0, 0, cv.width, cv.height);
  for (const i of idx) { ctx.fillStyle = colour(i); ctx.fillRect(px[i] - size / 2, py[i] - size / 2, size, size); }
}
let drag = null;
cv.addEventListener("pointerdown", e => { drag = [e.clientX, e.clientY]; cv.setPointerCapture(e.pointerId); });
cv.addEventListener("pointerup", () => { drag = null; });
cv.addEventListener("pointermove", e => {
  if (!drag) return;
  yaw += (e.clientX - drag[0]) * 0.01; pitch += (e.clientY - drag[1]) * 0.01;
  pitch = Math.max(-1.5, Math.min(1.5, pitch)); drag = [e.clientX, e.clientY]; draw();
});
cv.addEventListener("wheel", e => { e.preventDefault(); zoom *= e.deltaY < 0 ? 1.1 : 1 / 1.1; draw(); });
document.querySelectorAll("input[name=mode]").forEach(
  r => r.addEventListener("change", e => { mode = e.target.value; draw(); }));
document.getElementById("size").addEventListener("input", e => { size = +e.target.value; draw(); });
draw();
</script></body></html>
"""


def render_attention_html(points: np.ndarray, point_weights: np.ndarray, path, *, title: str = "",
                          meta_html: str = "", up: str = "z", max_points: int = 8192, cmap: str = COLORMAP) -> Path:
    """A self-contained interactive viewer (inline JS canvas, no external script) of the attention map.

    Args:
        points: ``(N, 6)``; point_weights: ``(N,)``; meta_html: trusted HTML shown under the title.
    """
    from matplotlib import colormaps

    from ..points.transforms import to_z_up

    keep = subsample(len(points), max_points)
    xyz = to_z_up(points[keep, :3], up)
    w = _scale01(np.asarray(point_weights, dtype=np.float64)[keep])
    cm = colormaps[cmap]
    att = (np.asarray(cm(w))[:, :3] * 255).round().astype(np.uint8)
    rgb = (np.clip(points[keep, 3:6], 0, 1) * 255).round().astype(np.uint8)
    data = {"xyz": np.round(xyz.astype(np.float64), 4).ravel().tolist(), "att": att.ravel().tolist(),
            "rgb": rgb.ravel().tolist()}
    stops = ",".join("rgb({},{},{})".format(*(np.asarray(cm(t))[:3] * 255).round().astype(int)) for t in
                     np.linspace(0, 1, 9))
    doc = (_HTML.replace("__TITLE__", html.escape(title)).replace("__META__", meta_html)
           .replace("__GRADIENT__", stops).replace("__DATA__", json.dumps(data, separators=(",", ":"))))
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(doc, encoding="utf-8")
    return p


def loss_curves_png(histories: dict[str, list[dict]], path) -> Path | None:
    """Loss curves (``loss`` and any ``loss_*`` term against the step), one panel per stage; None when no
    history holds a per-step loss.

    Args:
        histories: ``{stage label: the Trainer's log history}``.
    """
    usable = {}
    for stage, hist in histories.items():
        series: dict[str, list[tuple[float, float]]] = {}
        for entry in hist:
            if "step" not in entry:
                continue
            for k, v in entry.items():
                if (k == "loss" or k.startswith("loss_")) and isinstance(v, (int, float)):
                    series.setdefault(k, []).append((entry["step"], float(v)))
        if series:
            usable[stage] = series
    if not usable:
        return None
    fig = _figure((5.2 * len(usable), 3.4), 110)
    for i, (stage, series) in enumerate(usable.items()):
        ax = fig.add_subplot(1, len(usable), i + 1)
        for k, pts in sorted(series.items()):
            xs, ys = zip(*pts)
            ax.plot(xs, ys, marker="." if len(xs) < 30 else None, linewidth=2 if k == "loss" else 1, label=k)
        ax.set_title(stage, fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)
