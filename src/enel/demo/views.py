"""The demo's two 3D views as Plotly figures: the cloud as the model sees it, and the last answer's attention.

Why Plotly in ``gr.Plot`` and not ``gr.Model3D``: Gradio's frontend bundles plotly.js (the page fetches it from
the app's own server, never from a CDN; the end-to-end test checks every request), a ``scatter3d`` trace shows
each point with its own colour at a size one can see, rotates and zooms with the mouse, and takes a colour scale
for the attention weights. ``Model3D`` renders meshes and Gaussian splats: a coloured point cloud would have to be
turned into a mesh or a splat file, and an attention map into fake vertex colours, with no colour bar.

The figures draw the normalised cloud (unit sphere, z up as in the procedural data) with the axes hidden.
"""

from __future__ import annotations

import numpy as np

__all__ = ["cloud_figure", "attention_figure", "empty_figure"]

_HEIGHT = 420
_RANGE = [-1.05, 1.05]


def _layout(fig, title: str) -> None:
    axis = dict(visible=False, range=_RANGE, autorange=False)
    fig.update_layout(
        annotations=[dict(text=title, x=0.01, y=0.01, xref="paper", yref="paper", xanchor="left", yanchor="bottom",
                          showarrow=False, font=dict(size=12))] if title else [],
        height=_HEIGHT,
        margin=dict(l=0, r=0, t=10, b=0),
        paper_bgcolor="rgba(0,0,0,0)",
        scene=dict(xaxis=axis, yaxis=axis, zaxis=axis, aspectmode="cube",
                   camera=dict(eye=dict(x=1.35, y=-1.35, z=0.9), up=dict(x=0, y=0, z=1))),
        showlegend=False,
        uirevision="keep",  # rotating the view survives updates of the figure
    )


def _rgb_strings(rgb: np.ndarray) -> list[str]:
    c = np.clip(np.round(np.asarray(rgb, dtype=np.float64) * 255.0), 0, 255).astype(np.int64)
    return [f"rgb({r},{g},{b})" for r, g, b in c]


def _marker_size(n: int) -> float:
    return float(np.clip(3.0 * np.sqrt(2048.0 / max(n, 1)), 1.5, 6.0))


def cloud_figure(points: np.ndarray, title: str = ""):
    """``points (N, 6)``: xyz + rgb in [0, 1] → a rotatable scatter in the points' own colours.

    Black points (a file without colour gets black, as PointLLM feeds colourless clouds) are drawn dark grey so
    that they stay visible on a dark page.
    """
    import plotly.graph_objects as go

    pts = np.asarray(points, dtype=np.float32)
    rgb = pts[:, 3:6] if pts.shape[1] >= 6 else np.zeros((len(pts), 3), np.float32)
    fig = go.Figure(go.Scatter3d(
        x=pts[:, 0], y=pts[:, 1], z=pts[:, 2], mode="markers",
        marker=dict(size=_marker_size(len(pts)), color=_rgb_strings(np.maximum(rgb, 0.12)), line=dict(width=0)),
        hoverinfo="skip",
    ))
    _layout(fig, title)
    return fig


def attention_figure(points: np.ndarray, weights: np.ndarray, title: str = ""):
    """The same cloud coloured by per-point attention (``inferno``, as ``enel eval attention`` draws it)."""
    import plotly.graph_objects as go

    pts = np.asarray(points, dtype=np.float32)
    w = np.asarray(weights, dtype=np.float64)
    order = np.argsort(w, kind="stable")  # the hottest points drawn last, on top
    fig = go.Figure(go.Scatter3d(
        x=pts[order, 0], y=pts[order, 1], z=pts[order, 2], mode="markers",
        marker=dict(size=_marker_size(len(pts)), color=w[order], colorscale="Inferno", line=dict(width=0),
                    colorbar=dict(title=dict(text="attention<br>(token share)", side="right"), thickness=12, len=0.7)),
        hovertemplate="attention %{marker.color:.4f}<extra></extra>",
    ))
    _layout(fig, title)
    return fig


def empty_figure(message: str):
    """A blank 3D scene with a message (before an object is loaded)."""
    import plotly.graph_objects as go

    fig = go.Figure(go.Scatter3d(x=[0], y=[0], z=[0], mode="markers", marker=dict(size=0.1, opacity=0)))
    _layout(fig, message)
    return fig
