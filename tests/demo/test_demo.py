"""The demo's logic and handlers as plain functions, on a tiny model: bad uploads become messages, sessions keep
their own object and conversation, one model serves concurrent requests one at a time, answers stop at the limits.
The browser test is ``test_demo_e2e.py`` (slow)."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from conftest import TINY_POINTS  # noqa: E402
from enel.cli import main  # noqa: E402
from enel.demo import DemoEngine, DemoError, Limits, Session, example_names  # noqa: E402
from enel.demo.core import SAMPLE_FILE  # noqa: E402
from enel.errors import PointCloudError  # noqa: E402


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from enel.model.saving import save_model
    from enel.model import EnelForCausalLM

    model, tok = EnelForCausalLM.from_backbone("tiny-llama", point_config=TINY_POINTS, seed=0)
    return save_model(model, tok, tmp_path_factory.mktemp("demo") / "model")


@pytest.fixture(scope="module")
def engine(model_dir):
    return DemoEngine(model_dir, limits=Limits(max_new_tokens=6, max_upload_bytes=200_000)).load()


def _session(engine, name="mug") -> Session:
    return Session(cloud=engine.load_example(name))


# ------------------------------------------------------------------------------------------------------------
# uploads
# ------------------------------------------------------------------------------------------------------------
def _bad_files(folder):
    (folder / "scan.foo").write_text("0 0 0\n1 1 1\n")
    (folder / "corrupt.ply").write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 100\n"
                                         b"property float x\nend_header\n\x00\x01")
    (folder / "empty.xyz").write_text("# x y z\n")
    nan = np.random.default_rng(0).random((50, 3)).astype(np.float32)
    nan[7, 2] = np.nan
    np.save(folder / "nan.npy", nan)
    np.save(folder / "large.npy", np.random.default_rng(0).random((20_000, 3)))  # 480 kB > the 200 kB limit
    return {"scan.foo": "unsupported extension", "corrupt.ply": "corrupt", "empty.xyz": "no points",
            "nan.npy": "NaN", "large.npy": "over the demo's upload limit"}


def test_bad_uploads_give_a_readable_message_naming_the_file(engine, tmp_path):
    for name, message in _bad_files(tmp_path).items():
        with pytest.raises(PointCloudError) as info:
            engine.load_upload(tmp_path / name, name=name)
        text = str(info.value)
        assert text.startswith(name) and message in text and str(tmp_path) not in text and "\n" not in text


def test_the_upload_handler_shows_the_error_and_keeps_the_object(engine, tmp_path):
    from enel.demo.app import Handlers

    h = Handlers(engine)
    session, figure, status, chat, attention = h.upload(str(SAMPLE_FILE), Session())
    assert session.cloud.name == "sample_chair.ply" and "fed to the model" in status and chat == []
    assert len(figure.data[0].x) == engine.num_points()
    for name, message in _bad_files(tmp_path).items():
        out = h.upload(str(tmp_path / name), session)
        shown = out[2].replace("\\", "")  # as the Markdown renders it
        assert message in shown and "Still talking about sample_chair.ply" in shown and "Traceback" not in shown
        assert all(o == h.skip() for i, o in enumerate(out) if i != 2)  # the session and the views stay
    assert engine.ask(session, "What is this?")  # and the model still answers about it


def test_examples_are_one_click_away(engine):
    from enel.demo.app import Handlers

    h = Handlers(engine)
    for name in example_names()[:2]:
        session, figure, status, *_ = h.example(name, Session())
        assert session.cloud is not None and len(figure.data[0].x) == engine.num_points()
        pts = session.cloud.points
        assert pts.shape == (engine.num_points(), 6) and np.linalg.norm(pts[:, :3], axis=1).max() == pytest.approx(1)
    out = h.example("teapot", Session())
    assert "unknown example" in out[2]


# ------------------------------------------------------------------------------------------------------------
# answers
# ------------------------------------------------------------------------------------------------------------
def test_questions_need_an_object_and_text(engine):
    with pytest.raises(DemoError, match="load an object first"):
        engine.ask(Session(), "What is this?")
    with pytest.raises(DemoError, match="type a question"):
        engine.ask(_session(engine), "   ")
    from enel.demo.app import Handlers

    (_, _, status), = list(Handlers(engine).chat("What is this?", Session()))
    assert "load an object first" in status


def test_chat_handler_streams_into_the_chat_and_keeps_the_history(engine):
    from enel.demo.app import Handlers

    h = Handlers(engine)
    session = _session(engine)
    steps = list(h.chat("What is this?", session))
    first_chat, cleared_box, status = steps[0]
    assert first_chat[-2] == {"role": "user", "content": "What is this?"} and cleared_box == ""
    assert steps[-1][0] == session.messages() and len(session.history) == 1
    assert "Answer 1:" in steps[-1][2] and "tokens" in steps[-1][2]
    list(h.chat("And its colour?", session))
    assert [q for q, _ in session.history] == ["What is this?", "And its colour?"]
    figure = h.attention(session)
    assert len(figure.data[0].marker.color) == engine.num_points()
    session, chat, attention, status = h.clear(session)
    assert chat == [] and session.history == [] and session.cloud is not None


def test_sessions_keep_their_own_object_and_conversation_under_concurrency(engine):
    a, b = _session(engine, "mug"), _session(engine, "airplane")
    expected = {"mug": engine.ask(_session(engine, "mug"), "What is this?"),
                "airplane": engine.ask(_session(engine, "airplane"), "What is this?")}
    assert expected["mug"] != expected["airplane"]  # else the check below could not tell the objects apart
    results, errors = {}, []
    active, overlaps = [0], []
    stream = engine.assistant.stream

    def counted_stream(*args, **kwargs):  # how many generations run at once on the one model
        active[0] += 1
        overlaps.append(active[0])
        try:
            yield from stream(*args, **kwargs)
        finally:
            active[0] -= 1

    def run(name, session, question):
        try:
            for _ in engine.stream(session, question):
                pass
            results[name] = session
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=("mug", a, "What is this?")),
               threading.Thread(target=run, args=("airplane", b, "What is this?"))]
    engine.assistant.stream = counted_stream
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        del engine.assistant.stream  # the instance attribute goes: the method comes back
    assert not errors and set(results) == {"mug", "airplane"}
    assert a.history == [("What is this?", expected["mug"])]
    assert b.history == [("What is this?", expected["airplane"])]
    assert overlaps == [1, 1] and not engine.lock.locked()


def test_answers_stop_at_the_token_and_time_limits(model_dir):
    eng = DemoEngine(model_dir, limits=Limits(max_new_tokens=3)).load()
    assert eng.ask(_session(eng), "What is this?").endswith("[stopped at the 3-token limit]")
    eng.limits.max_new_tokens, eng.limits.time_limit_s = 500, 1e-4
    eng.assistant.settings.max_new_tokens = 500
    answer = eng.ask(_session(eng), "What is this?")
    assert answer.endswith("[stopped at the 0.0001 s time limit]")


def test_a_reader_that_leaves_early_frees_the_model(engine):
    session = _session(engine)
    pieces = engine.stream(session, "What is this?")
    next(pieces)
    assert engine.lock.locked()
    pieces.close()
    assert not engine.lock.locked()
    assert engine.ask(session, "What is this?")


# ------------------------------------------------------------------------------------------------------------
# facts, loading, command line
# ------------------------------------------------------------------------------------------------------------
def test_facts_say_backbone_stage_tokens_and_untrained(engine):
    f = engine.facts()
    assert f["status"] == "ready" and f["backbone"] == "tiny-llama" and f["point_tokens"] == 129
    assert f["trained"] is False and "none" in f["stage"]
    md = engine.facts_markdown()
    assert "untrained" in md and "enel quickstart" in md and "129 point tokens" in md


def test_a_model_that_fails_to_load_is_reported_not_raised(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    eng = DemoEngine(tmp_path).start_loading()
    with pytest.raises(DemoError, match="could not be loaded"):
        eng.wait(30)
    assert eng.facts()["status"] == "failed" and "could not be loaded" in eng.facts_markdown()


def test_the_page_builds_offline(engine):
    from enel.demo.app import build_app
    from enel.demo.views import attention_figure, cloud_figure

    demo = build_app(engine)
    assert demo.analytics_enabled is False
    pts = _session(engine).cloud.points
    for fig in (cloud_figure(pts, "x"), attention_figure(pts, np.linspace(0, 1, len(pts)), "y")):
        assert "http" not in fig.to_json()


@pytest.mark.parametrize("argv, message", [
    (["demo", "--port", "0"], "--port must be between 1 and 65535"),
    (["demo", "--port", "70000"], "--port must be between 1 and 65535"),
    (["demo", "--model", "{dir}/no-model"], "no ENEL model"),
    (["demo", "--time-limit", "0"], "--time-limit"),
    (["demo", "--max-new-tokens", "0"], "--max-new-tokens"),
    (["demo", "--max-upload-mb", "-1"], "--max-upload-mb"),
    (["demo", "--threads", "0"], "--threads"),
    (["demo", "--host", " "], "--host"),
])
def test_bad_demo_flags_get_one_line_and_exit_status_2(argv, message, tmp_path, capsys):
    assert main([a.format(dir=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and message in err


@pytest.mark.timeout(120)
def test_a_taken_port_is_a_one_line_error(model_dir, capsys):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert main(["demo", "--model", str(model_dir), "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after whatever the loading thread printed
    assert err.startswith(f"error: cannot serve on 127.0.0.1:{port}: the port is in use") and "--port" in err


def test_file_names_and_messages_cannot_inject_markup(engine, tmp_path):
    from enel.demo.app import Handlers

    bad = tmp_path / "![x](http:__evil.example_x.png)<img src=y>.ply"
    bad.write_text("not a ply")
    status = Handlers(engine).upload(str(bad), Session())[2]
    assert "![x](" not in status and "<img" not in status and "&lt;img" in status
    view = engine.load_upload(SAMPLE_FILE, name="**[a](http:__b)**.ply")
    assert "[a](" not in view.describe()
