"""A scripted OpenAI-compatible ``/v1/chat/completions`` server for tests, on 127.0.0.1 in a thread.

A test gives a ``script(body, attempt, n)`` callable returning an :class:`Action`: ``body`` is the decoded
request JSON, ``attempt`` how many times this exact request body was seen before, ``n`` the index of the
request overall. Every request is logged (``server.log``) with the status that was sent back.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


@dataclass
class Action:
    """What the server does with one request: wait ``delay`` s, then answer ``status``.

    A 200 carries ``content`` as ``choices[0].message.content`` and ``usage`` (prompt, completion) unless
    ``usage`` is None; another status carries an OpenAI-style error body and ``headers``. ``raw``, when set,
    is sent as the body instead (a server that does not speak the protocol).
    """

    content: str = "T#ok"
    status: int = 200
    delay: float = 0.0
    usage: tuple[int, int] | None = (10, 2)
    headers: dict = field(default_factory=dict)
    message: str = "scripted error"
    raw: str | None = None


def user_text(body: dict) -> str:
    """The last user message of a request."""
    return [m["content"] for m in body["messages"] if m["role"] == "user"][-1]


class FakeOpenAI:
    """``with FakeOpenAI(script) as srv: ... srv.base_url ... srv.log``."""

    def __init__(self, script: Callable[[dict, int, int], Action]):
        self.script = script
        self.log: list[dict] = []
        self._seen: dict[str, int] = {}
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                body = json.loads(raw)
                key = json.dumps(body, sort_keys=True)
                with server._lock:
                    attempt = server._seen.get(key, 0)
                    server._seen[key] = attempt + 1
                    n = len(server.log)
                    entry = {"path": self.path, "auth": self.headers.get("Authorization"), "body": body,
                             "status": None}
                    server.log.append(entry)
                action = server.script(body, attempt, n)
                entry["status"] = action.status
                if action.delay:
                    time.sleep(action.delay)
                if action.status == 200:
                    doc = {"id": f"cmpl-{n}", "object": "chat.completion", "model": body.get("model"),
                           "choices": [{"index": 0, "finish_reason": "stop",
                                        "message": {"role": "assistant", "content": action.content}}]}
                    if action.usage is not None:
                        doc["usage"] = {"prompt_tokens": action.usage[0], "completion_tokens": action.usage[1],
                                        "total_tokens": sum(action.usage)}
                else:
                    doc = {"error": {"message": action.message, "type": "test"}}
                payload = (json.dumps(doc) if action.raw is None else action.raw).encode()
                try:
                    self.send_response(action.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for k, v in action.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (time-out)
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def sent(self, status: int | None = None) -> list[dict]:
        """Logged request bodies, optionally only those answered with ``status``."""
        with self._lock:
            return [e["body"] for e in self.log if status is None or e["status"] == status]

    def __enter__(self) -> "FakeOpenAI":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
