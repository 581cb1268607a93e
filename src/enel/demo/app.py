"""The Gradio page of ``enel demo`` and the server that runs it.

Offline by construction: analytics off (``GRADIO_ANALYTICS_ENABLED=False`` and ``analytics_enabled=False``), the
default theme's fonts are served by the app itself (``LocalFont``, no Google Fonts), no share link, no server-side
rendering through Node, no PWA manifest, no MCP server; the 3D views use the plotly.js that Gradio bundles. The
end-to-end test (``tests/demo/test_demo_e2e.py``) records every request the page makes and fails on any host but
the app's.

The handlers are thin: each turns a :class:`~enel.demo.core.DemoEngine` call into component updates and every
:class:`~enel.errors.EnelError` into a message in the page's status line (never a traceback). Events that use
the model share one concurrency group of size 1, so one model serves every tab and the others queue.
"""

from __future__ import annotations

import logging
import os
import sys
import time

from ..errors import EnelError
from ..data.prompts import PROMPTS
from ..points.io import SUPPORTED_EXTENSIONS
from .core import DemoEngine, Session, example_names, md_escape

__all__ = ["Handlers", "build_app", "serve", "CSS"]

log = logging.getLogger("enel.demo")

CSS = """
#status p { margin: 0; }
#status .error { color: #b42318; font-weight: 600; }
.example-row button { min-width: 0; }
"""

_MODEL_GROUP = "enel-model"  # every event that runs the model: one at a time
_FILE_GROUP = "enel-files"   # reading uploads and examples: a few at a time, never blocked by generation


def _error(message: str) -> str:
    return f'<span class="error">⚠️ {md_escape(message)}</span>'


def _object_status(session: Session) -> str:
    return session.status()


_NO_ATTENTION = "attention of the last answer: ask a question"


class Handlers:
    """What each page event does, as plain methods over one engine (the unit tests call them directly).

    Every method returns (or yields) one value per output component, ``gr.skip()`` for those it leaves alone;
    an :class:`~enel.errors.EnelError` becomes a message in the status line, any other exception too (logged with
    its traceback on the server), so a bad file or a failed generation never breaks the page.
    """

    def __init__(self, engine: DemoEngine):
        import gradio as gr

        self.engine = engine
        self.skip = gr.skip

    def facts_when_ready(self) -> str:
        try:
            self.engine.wait(timeout=600)
        except EnelError:
            pass
        return self.engine.facts_markdown()

    def _show(self, view):
        from .views import cloud_figure, empty_figure

        session = Session(cloud=view)  # a new object starts a new conversation
        return session, cloud_figure(view.points, view.name), _object_status(session), [], empty_figure(_NO_ATTENTION)

    def _object_error(self, message: str, session: Session):
        keep = f" Still talking about {session.cloud.name}." if session.cloud is not None else ""  # escaped below
        s = self.skip
        return s(), s(), _error(f"{message}{keep}"), s(), s()

    def upload(self, path, session: Session):
        """Outputs: session, cloud view, status, chat, attention view."""
        if path is None:  # the file was removed from the upload box: keep the object
            return tuple(self.skip() for _ in range(5))
        name = os.path.basename(path)
        try:
            view = self.engine.load_upload(path, name=name)
        except EnelError as exc:
            return self._object_error(str(exc), session)
        except Exception as exc:  # noqa: BLE001 - the page must stay usable whatever a file does
            log.exception("upload %s failed", name)
            return self._object_error(f"{name}: could not be read ({type(exc).__name__}: {exc})", session)
        return self._show(view)

    def example(self, name: str, session: Session):
        """Outputs as :meth:`upload`."""
        try:
            view = self.engine.load_example(name)
        except EnelError as exc:
            return self._object_error(str(exc), session)
        return self._show(view)

    def chat(self, question: str, session: Session):
        """Stream the answer into the chat. Outputs: chat messages, question box, status."""
        engine, skip = self.engine, self.skip
        try:
            q = engine.check_question(session, question)
        except EnelError as exc:
            yield skip(), skip(), _error(str(exc))
            return
        pending = [*session.messages(), {"role": "user", "content": q}, {"role": "assistant", "content": "…"}]
        busy = engine.lock.locked()
        yield pending, "", "Waiting for the model (another answer is being generated) …" if busy else "Answering …"
        try:
            for text in engine.stream(session, q):
                pending[-1] = {"role": "assistant", "content": text}
                yield pending, skip(), skip()
            yield session.messages(), skip(), _object_status(session)
        except EnelError as exc:
            yield session.messages(), skip(), _error(str(exc))
        except Exception as exc:  # noqa: BLE001
            log.exception("generation failed")
            yield session.messages(), skip(), _error(f"generation failed ({type(exc).__name__}: {exc})")

    def preset(self, prompt: str):
        """A :meth:`chat` with a fixed question (the Caption and Classify buttons)."""
        def ask_preset(session: Session):
            yield from self.chat(prompt, session)

        return ask_preset

    def attention(self, session: Session):
        """Output: the attention view (a failure is drawn there as a message, the status line stays)."""
        from .views import attention_figure, empty_figure

        if session.cloud is None or not session.history:
            return self.skip()
        try:
            att = self.engine.attention(session)
        except EnelError as exc:
            return empty_figure(f"no attention map: {exc}")
        except Exception as exc:  # noqa: BLE001
            log.exception("attention failed")
            return empty_figure(f"the attention map failed ({type(exc).__name__}: {exc})")
        question = att["question"] if len(att["question"]) <= 60 else att["question"][:57] + "…"
        title = (f"“{question}”: layer {att['layer']}, {att['point_mass'] * 100:.1f}% of the text's attention "
                 "on the point tokens")
        return attention_figure(session.cloud.points, att["weights"], title)

    def clear(self, session: Session):
        """Forget the conversation, keep the object. Outputs: session, chat, attention view, status."""
        from .views import empty_figure

        session.clear()
        return session, [], empty_figure(_NO_ATTENTION), _object_status(session)


def build_app(engine: DemoEngine):
    """The ``gr.Blocks`` page bound to ``engine`` (not launched; :func:`serve` launches it)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    from .views import empty_figure

    formats = " ".join(SUPPORTED_EXTENSIONS)
    h = Handlers(engine)

    # uploads are copied into Gradio's cache: every 30 minutes, those older than an hour are deleted
    with gr.Blocks(title="enel demo", analytics_enabled=False, delete_cache=(1800, 3600)) as demo:
        session = gr.State(Session())
        gr.Markdown("# enel: ask a 3D model about a point cloud\nAn encoder-free 3D LMM (ENEL): the points enter "
                    "the language model through a light token embedding. Everything runs on this machine.")
        facts = gr.Markdown(engine.facts_markdown(), elem_id="facts")
        with gr.Row(equal_height=False):
            with gr.Column(scale=1):
                upload = gr.File(label=f"Upload a point cloud or mesh ({formats})", file_count="single",
                                 type="filepath", elem_id="upload", height=110)
                gr.Markdown("**Examples** (one click): the bundled sample and procedural test objects")
                with gr.Row(elem_classes="example-row"):
                    example_buttons = [gr.Button(name, size="sm", elem_id=f"example-{i}")
                                       for i, name in enumerate(example_names())]
                status = gr.Markdown("No object yet: upload a file or click an example.", elem_id="status")
                cloud_view = gr.Plot(empty_figure("upload a file or click an example"), label="The object as the "
                                     "model sees it (normalised, resampled, coloured)", elem_id="cloud-view")
            with gr.Column(scale=1):
                # plain text: a question holding Markdown like ![](http://host/x.png) must not make the page fetch it
                chat = gr.Chatbot(label="Chat", elem_id="chat", height=430, feedback_options=None,
                                  render_markdown=False)
                question = gr.Textbox(placeholder="Ask about the object, then press Enter", show_label=False,
                                      elem_id="question", max_lines=4, max_length=engine.limits.max_question_chars)
                with gr.Row():
                    ask_btn = gr.Button("Ask", variant="primary", elem_id="ask")
                    caption_btn = gr.Button("Caption", elem_id="caption")
                    classify_btn = gr.Button("Classify", elem_id="classify")
                    clear_btn = gr.Button("Clear", elem_id="clear")
                attention_view = gr.Plot(empty_figure(_NO_ATTENTION),
                                         label="Attention of the last answer (last layer)", elem_id="attention-view")

        object_outputs = [session, cloud_view, status, chat, attention_view]
        # the drop zone empties after each upload, ready for the next file; the status line names the object
        upload.upload(h.upload, [upload, session], object_outputs, concurrency_limit=2,
                      concurrency_id=_FILE_GROUP).then(lambda: None, None, upload, queue=False)
        for button in example_buttons:
            button.click(h.example, [button, session], object_outputs, concurrency_limit=2,
                         concurrency_id=_FILE_GROUP)

        def chain(trigger_event):
            trigger_event.then(h.attention, [session], [attention_view], concurrency_limit=1,
                               concurrency_id=_MODEL_GROUP, show_progress="minimal")

        chat_outputs = [chat, question, status]
        chain(gr.on([ask_btn.click, question.submit], h.chat, [question, session], chat_outputs,
                    concurrency_limit=1, concurrency_id=_MODEL_GROUP, show_progress="minimal"))
        for button, prompt in ((caption_btn, PROMPTS["caption"]), (classify_btn, PROMPTS["what"])):
            chain(button.click(h.preset(prompt), [session], chat_outputs,
                               concurrency_limit=1, concurrency_id=_MODEL_GROUP, show_progress="minimal"))
        clear_btn.click(h.clear, [session], [session, chat, attention_view, status], queue=False)
        demo.load(h.facts_when_ready, None, facts, concurrency_limit=None, show_progress="hidden")
    return demo


def serve(engine: DemoEngine, host: str = "127.0.0.1", port: int = 7860) -> None:
    """Start loading the model, build the page and serve it until interrupted (blocks).

    Raises:
        EnelError: the port is taken or the host cannot be bound.
    """
    t0 = time.perf_counter()
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    engine.start_loading()  # the weights load while the page is built and served
    demo = build_app(engine)
    import gradio as gr

    demo.queue(max_size=64, default_concurrency_limit=1)
    try:
        demo.launch(server_name=host, server_port=port, share=False, inbrowser=False, prevent_thread_lock=True,
                    show_error=False, quiet=True, ssr_mode=False, pwa=False, mcp_server=False,
                    max_file_size=engine.limits.max_upload_bytes, footer_links=["settings"],
                    theme=gr.themes.Default(), css=CSS)
    except OSError as exc:
        why = "the port is in use" if "empty port" in str(exc) else str(exc)  # Gradio's text speaks of launch()
        raise EnelError(f"cannot serve on {host}:{port}: {why}; pass another --port or --host") from None
    url = f"http://{host}:{port}"
    print(f"enel demo: {url} (page up in {time.perf_counter() - t0:.1f} s; the model loads in the background; "
          "Ctrl-C to stop)", flush=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {host}: other machines can reach this demo", file=sys.stderr, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        demo.close()
