"""The demo's logic without any web framework: one shared model, per-user sessions, limits, readable errors.

Everything the Gradio page does goes through :class:`DemoEngine` and a :class:`Session` per browser tab, so the
behaviour (bad uploads, the length and time limits, one generation at a time, sessions that never see each other's
object) is tested here as plain functions; :mod:`enel.demo.app` only wires them to components.

* **One model for everyone.** The engine loads the model once, in a background thread (so the page is up while
  the weights load), and every generation or attention pass holds :attr:`DemoEngine.lock`: requests wait their
  turn instead of loading a second copy. The Gradio queue puts the same events in one concurrency group, so
  waiting users see their place in the queue.
* **Sessions.** A :class:`Session` holds one user's object (the normalised cloud the model sees), the
  conversation and the last attention map; the page keeps one per tab in ``gr.State``.
* **Limits.** Answers stop at ``max_new_tokens`` or after ``time_limit_s`` seconds (a stopping criterion with a
  deadline, also tripped when the user leaves mid-answer), whichever comes first; uploads over
  ``max_upload_bytes`` are refused before they are read; questions are cut to ``max_question_chars``.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import EnelError, ModelLoadError, PointCloudError
from ..paths import bundled_sample

__all__ = [
    "DemoError",
    "Limits",
    "CloudView",
    "Session",
    "DemoEngine",
    "EXAMPLES",
    "SAMPLE_NAME",
    "example_names",
]


class DemoError(EnelError):
    """Something the user did that the demo cannot do (no object yet, an empty question): shown on the page."""


SAMPLE_NAME = "sample chair"
SAMPLE_FILE = bundled_sample()
EXAMPLES: tuple[str, ...] = ("airplane", "mug", "lamp", "car", "guitar", "table", "umbrella")
"""Procedural categories offered as one-click examples next to the bundled sample (index 0, seed 0)."""


def md_escape(text: str) -> str:
    """``text`` shown literally in Markdown: a file named ``![x](http://host/x.png).ply`` must not become an image
    that the browser fetches from another host, nor ``<b>`` markup."""
    import html
    import re

    return re.sub(r"([\\`*_\[\]!|~])", r"\\\1", html.escape(str(text), quote=False))


def example_names() -> list[str]:
    return [SAMPLE_NAME, *EXAMPLES]


@dataclass
class Limits:
    """What one request may use. The CLI's flags set these (``enel demo --max-new-tokens … --time-limit …``)."""

    max_new_tokens: int = 128
    time_limit_s: float = 60.0
    max_upload_bytes: int = 64 << 20
    history_turns: int = 4
    max_question_chars: int = 1000
    attention_tokens: int = 16

    def check(self) -> "Limits":
        if not 1 <= self.max_new_tokens <= 2048:
            raise EnelError(f"--max-new-tokens must be between 1 and 2048, got {self.max_new_tokens}")
        if not 0 < self.time_limit_s <= 3600:
            raise EnelError(f"--time-limit must be between 0 and 3600 seconds, got {self.time_limit_s:g}")
        if not 0 < self.max_upload_bytes <= 1 << 30:
            raise EnelError(f"--max-upload-mb must be between 0 and 1024, got {self.max_upload_bytes / 2**20:g}")
        return self


@dataclass
class CloudView:
    """One object as the model sees it: ``points (N, 6)`` float32, xyz in the unit sphere, rgb in [0, 1]."""

    name: str
    points: np.ndarray
    points_in_file: int
    colour: str
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        notes = f" ({md_escape('; '.join(self.notes))})" if self.notes else ""
        return (f"**{md_escape(self.name)}**: {self.points_in_file:,} points in the file, {len(self.points):,} fed "
                f"to the model, colour: {md_escape(self.colour)}{notes}")


@dataclass
class Session:
    """One browser tab: its object, its conversation ``[(question, answer), …]`` and its last attention map."""

    def status(self) -> str:
        """The page's status line: the object, and how long the last answer took."""
        if self.cloud is None:
            return "No object yet: upload a file or click an example."
        line = self.cloud.describe()
        t = self.timing
        if t:
            first = f"first words after {t['first_words_s']:.2f} s, " if t["first_words_s"] is not None else ""
            line += f"\n\nAnswer {len(self.history)}: {t['tokens']} tokens, {first}{t['total_s']:.1f} s in all."
        return line

    cloud: CloudView | None = None
    history: list[tuple[str, str]] = field(default_factory=list)
    attention: dict | None = None
    timing: dict | None = None  # the last answer's: tokens, seconds to the first words and in all

    def messages(self) -> list[dict]:
        """The conversation as chat messages (``{"role", "content"}``), the format Gradio's Chatbot takes."""
        out: list[dict] = []
        for q, a in self.history:
            out += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        return out

    def clear(self) -> None:
        self.history = []
        self.attention = None
        self.timing = None


def _deadline_criterion(seconds: float, cancel: threading.Event):
    """A ``transformers`` stopping criterion: stop after ``seconds`` of wall time or once ``cancel`` is set."""
    import torch
    from transformers import StoppingCriteria

    class Deadline(StoppingCriteria):
        def __init__(self):
            self.deadline = time.monotonic() + seconds
            self.fired = False
            self.first_length: int | None = None
            self.generated = 0  # tokens generated so far (the criterion runs once per new token)

        def __call__(self, input_ids, scores, **kwargs):
            if self.first_length is None:
                self.first_length = input_ids.shape[1]
            self.generated = input_ids.shape[1] - self.first_length + 1
            if time.monotonic() >= self.deadline:
                self.fired = True
            done = self.fired or cancel.is_set()
            return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)

    return Deadline()


class DemoEngine:
    """The shared model and what the page asks of it.

    Args:
        model_dir: an ENEL model folder; ``None`` builds an untrained model on ``backbone`` in memory (the page
            says it is untrained).
        limits: :class:`Limits`.
        threads: torch threads for generation (default: torch's own choice, one per core).
        backbone: the backbone of the untrained fallback (default: SmolLM2, the embedded default).
        point_config: the point-embedding preset (or dict) of the untrained fallback.
        fallback_reason: why the fallback is used, shown on the page.
    """

    def __init__(self, model_dir: str | os.PathLike | None = None, *, limits: Limits | None = None,
                 threads: int | None = None, backbone: str | None = None, point_config: str | dict = "small",
                 fallback_reason: str | None = None):
        self.model_dir = Path(model_dir) if model_dir is not None else None
        self.limits = (limits or Limits()).check()
        self.threads = threads
        self.backbone = backbone
        self.point_config = point_config
        self.fallback_reason = fallback_reason
        self.lock = threading.Lock()
        self.assistant = None
        self.load_error: str | None = None
        self.load_seconds: float | None = None
        self._ready = threading.Event()
        self._loader: threading.Thread | None = None

    # ------------------------------------------------------------------------------------------------------
    # loading
    # ------------------------------------------------------------------------------------------------------
    def start_loading(self) -> "DemoEngine":
        """Load the model in a background thread (returns at once); :meth:`wait` blocks until it is there."""
        if self._loader is None:
            self._loader = threading.Thread(target=self._load, name="enel-demo-model", daemon=True)
            self._loader.start()
        return self

    def load(self) -> "DemoEngine":
        """Load the model in this thread (tests, scripts)."""
        self.start_loading()
        self._loader.join()
        if self.load_error:
            raise ModelLoadError(self.load_error)
        return self

    def _load(self) -> None:
        t0 = time.perf_counter()
        try:
            import torch
            from transformers.utils import logging as hf_logging

            from ..inference import Assistant, GenerationSettings

            hf_logging.disable_progress_bar()  # a server's log, not a terminal: no "Loading weights" bars

            if self.threads:
                torch.set_num_threads(self.threads)
            settings = GenerationSettings(max_new_tokens=self.limits.max_new_tokens)
            if self.model_dir is not None:
                assistant = Assistant.from_folder(self.model_dir, **settings.__dict__)
            else:
                from ..model import EnelForCausalLM

                model, tok = EnelForCausalLM.from_backbone(self.backbone, point_config=self.point_config, seed=0)
                model.eval()
                assistant = Assistant(model, tok, settings)
            self._warm_up(assistant)
            self.assistant = assistant
        except EnelError as exc:
            self.load_error = str(exc)
        except Exception as exc:  # shown on the page instead of a traceback in the log only
            self.load_error = f"could not load the model ({type(exc).__name__}: {exc})"
        finally:
            self.load_seconds = time.perf_counter() - t0
            self._ready.set()

    def _warm_up(self, assistant) -> None:
        """One prompt and one token on the bundled sample, so the first user's answer does not pay for the first
        forward pass and the FPS kernel's compilation (6.7 s instead of 0.6 s to the first token, measured)."""
        from ..inference import prepare_cloud

        points, _ = prepare_cloud(SAMPLE_FILE, assistant.num_points)
        stop_now = _deadline_criterion(0.0, threading.Event())
        for _ in assistant.stream(points, "What is this?", stopping_criteria=[stop_now]):
            pass

    @property
    def ready(self) -> bool:
        return self._ready.is_set() and self.assistant is not None

    def wait(self, timeout: float | None = None):
        """The loaded :class:`~enel.inference.Assistant`; :class:`DemoError` if loading failed or timed out."""
        if not self._ready.wait(timeout):
            raise DemoError("the model is still loading; try again in a few seconds")
        if self.assistant is None:
            raise DemoError(f"the model could not be loaded: {self.load_error}")
        return self.assistant

    # ------------------------------------------------------------------------------------------------------
    # facts
    # ------------------------------------------------------------------------------------------------------
    def facts(self) -> dict:
        """What the page shows about the model (``status`` is ``loading`` / ``ready`` / ``failed``)."""
        where = str(self.model_dir) if self.model_dir is not None else "untrained, built in memory"
        if not self._ready.is_set():
            return {"status": "loading", "model": where}
        if self.assistant is None:
            return {"status": "failed", "model": where, "error": self.load_error}
        cfg = self.assistant.model.config
        state = cfg.training_state or {}
        stage = (f"stage {state['stage']}, {state.get('steps', 0):,} steps" if state.get("stage") is not None
                 else "none (freshly initialised)")
        return {
            "status": "ready",
            "model": where,
            "backbone": cfg.backbone or "?",
            "stage": stage,
            "trained": bool(cfg.is_trained),
            "point_tokens": int(cfg.num_point_tokens),
            "points": int(cfg.point.num_points),
            "layers": int(cfg.text_config.num_hidden_layers),
            "load_seconds": round(self.load_seconds or 0.0, 1),
        }

    def facts_markdown(self) -> str:
        f = self.facts()
        if f["status"] == "loading":
            return f"**Model:** loading `{f['model']}` …"
        if f["status"] == "failed":
            return f"**Model could not be loaded:** {f['error']}"
        lim = self.limits
        lines = [
            f"**Model** `{f['model']}` · backbone **{f['backbone']}** ({f['layers']} layers) · training: "
            f"**{f['stage']}** · **{f['point_tokens']} point tokens** from {f['points']:,} points · "
            + ("**trained**" if f["trained"] else "**untrained**"),
            f"Limits: {lim.max_new_tokens} new tokens or {lim.time_limit_s:g} s per answer, uploads up to "
            f"{lim.max_upload_bytes / 2**20:g} MB; one model serves every user, requests wait their turn.",
        ]
        if not f["trained"]:
            reason = f" ({self.fallback_reason})" if self.fallback_reason else ""
            lines.append(f"⚠️ **This model is untrained{reason}: its answers are not meaningful.** Train one with "
                         "`enel quickstart` (or pass `enel demo --model DIR`).")
        return "\n\n".join(lines)

    # ------------------------------------------------------------------------------------------------------
    # objects
    # ------------------------------------------------------------------------------------------------------
    def num_points(self) -> int:
        return self.wait().num_points

    def load_upload(self, path: str | os.PathLike | None, name: str | None = None) -> CloudView:
        """Read an uploaded file into what the model sees; :class:`PointCloudError` with a readable message."""
        from ..inference import prepare_cloud

        if path is None:
            raise DemoError("no file was uploaded")
        p = Path(path)
        label = name or p.name
        try:
            size = p.stat().st_size
        except OSError:
            raise PointCloudError(f"{label}: the upload could not be read back; upload it again") from None
        if size > self.limits.max_upload_bytes:
            raise PointCloudError(f"{label}: file is {size / 2**20:.1f} MB, over the demo's upload limit of "
                                  f"{self.limits.max_upload_bytes / 2**20:g} MB")
        n = self.num_points()
        try:
            points, cloud = prepare_cloud(p, n)
        except PointCloudError as exc:
            # the message starts with the upload's temporary path; name the file as the user knows it
            raise PointCloudError(str(exc).replace(str(p), label, 1)) from None
        return CloudView(label, points, int(cloud.xyz.shape[0]), cloud.colour_source, list(cloud.notes))

    def load_example(self, name: str) -> CloudView:
        """One of :func:`example_names`: the bundled sample chair or a procedural object."""
        if name == SAMPLE_NAME:
            view = self.load_upload(SAMPLE_FILE, name="sample_chair.ply")
            view.name = SAMPLE_NAME
            return view
        if name not in EXAMPLES:
            raise DemoError(f"unknown example {name!r}; examples: {', '.join(example_names())}")
        from ..data.procedural.generate import make_object
        from ..inference import prepare_cloud

        obj = make_object(name, 0, seed=0, num_points=8192)
        points, _ = prepare_cloud(obj.points, self.num_points())
        return CloudView(f"procedural {name}", points, len(obj.points), "procedural (per-part colours)")

    # ------------------------------------------------------------------------------------------------------
    # answers
    # ------------------------------------------------------------------------------------------------------
    def check_question(self, session: Session, question: str | None) -> str:
        """The question, stripped and cut to the limit; :class:`DemoError` without an object or a question."""
        q = (question or "").strip()
        if not q:
            raise DemoError("type a question first")
        if session.cloud is None:
            raise DemoError("load an object first: upload a file or click an example")
        return q[: self.limits.max_question_chars]

    def stream(self, session: Session, question: str | None) -> Iterator[str]:
        """Yield the growing answer to ``question`` about the session's object; adds the turn to its history.

        Holds :attr:`lock` while the model generates. The last value carries a note when a limit cut the answer.
        """
        q = self.check_question(session, question)
        assistant = self.wait()
        cancel = threading.Event()
        history = session.history[-self.limits.history_turns:] if self.limits.history_turns else []
        text, note, first = "", "", None
        with self.lock:
            t0 = time.perf_counter()
            criterion = _deadline_criterion(self.limits.time_limit_s, cancel)
            pieces = assistant.stream(session.cloud.points, q, history, stopping_criteria=[criterion])
            try:
                for piece in pieces:
                    text += piece
                    if first is None and text.strip():
                        first = time.perf_counter() - t0
                    yield text
            finally:
                cancel.set()  # a reader that leaves early stops the generation at the next token
                pieces.close()
            if criterion.fired:
                note = f"[stopped at the {self.limits.time_limit_s:g} s time limit]"
            elif criterion.generated >= self.limits.max_new_tokens:
                note = f"[stopped at the {self.limits.max_new_tokens}-token limit]"
            session.timing = {"tokens": criterion.generated, "first_words_s": first,
                              "total_s": time.perf_counter() - t0}
        answer = text.strip() or "(the model gave an empty answer)"
        if note:
            answer = f"{answer} {note}"
        session.history.append((q, answer))
        yield answer

    def ask(self, session: Session, question: str | None) -> str:
        """The whole answer at once (what :meth:`stream` yields last)."""
        answer = ""
        for answer in self.stream(session, question):
            pass
        return answer

    def attention(self, session: Session) -> dict:
        """The attention map of the last turn: the text's attention over the point tokens at the last layer,
        carried to the points by :func:`enel.eval.attention.tokens_to_points`.

        The map is of the last question asked on its own, with the queries the question and up to
        ``attention_tokens`` tokens of the model's greedy answer (:func:`~enel.eval.attention.point_token_attention`
        takes no history; for a first question and greedy decoding the answer is the one shown).
        """
        from ..eval.attention import point_token_attention, tokens_to_points

        if session.cloud is None or not session.history:
            raise DemoError("ask a question first: the attention map is of the last answer")
        assistant = self.wait()
        question = session.history[-1][0]
        with self.lock:
            att = point_token_attention(assistant.model, assistant.tokenizer, session.cloud.points, question,
                                        layer=-1, queries="both", answer_tokens=self.limits.attention_tokens)
        weights = tokens_to_points(att.token_weights, att.centres, session.cloud.points[:, :3])
        session.attention = {"weights": weights, "question": question, "answer": att.answer, "layer": att.layer,
                             "point_mass": att.point_mass}
        return session.attention
