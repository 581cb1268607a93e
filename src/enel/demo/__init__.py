"""The web demo: ``enel demo`` serves a Gradio page to upload a point cloud or mesh, see it in 3D, and chat with
the model about it, offline.

:mod:`enel.demo.core` holds the logic (one shared model, per-tab sessions, limits, readable errors) with no web
framework; :mod:`enel.demo.views` draws the 3D views (Plotly figures); :mod:`enel.demo.app` builds the page and
serves it. Gradio and Plotly are imported only by the last two.
"""

from .core import EXAMPLES, SAMPLE_NAME, CloudView, DemoEngine, DemoError, Limits, Session, example_names

__all__ = ["EXAMPLES", "SAMPLE_NAME", "CloudView", "DemoEngine", "DemoError", "Limits", "Session", "example_names"]
