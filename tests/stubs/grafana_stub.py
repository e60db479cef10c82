"""A STUB of Grafana's annotation HTTP API (Grafana itself cannot run on the test machine), following
Grafana's documentation: a real HTTP server on a free loopback port, in a thread.

    POST  /api/annotations        {dashboardUID?, panelId?, time?, timeEnd?, tags?, text} -> {"message", "id"}
    PATCH /api/annotations/:id    the fields to change -> {"message": "Annotation patched"}
    GET   /api/annotations?tags=a&tags=b   the annotations carrying every tag given (newest first)

401 without `Authorization: Bearer <token>`; 400 when time/timeEnd/panelId are not integers, tags not
a list of strings or text not a string (POST: text is required); 404 for an unknown id. `down = True`
answers 503 to everything until set back to False.
"""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from guardian.demo.stack import free_port


def _problem(body: Any, *, post: bool) -> str | None:
    if not isinstance(body, dict):
        return "the body is not a JSON object"
    for name in ("time", "timeEnd", "panelId"):
        if name in body and (not isinstance(body[name], int) or isinstance(body[name], bool)):
            return f"{name} must be an integer"
    if "tags" in body and (not isinstance(body["tags"], list) or not all(isinstance(t, str) for t in body["tags"])):
        return "tags must be a list of strings"
    if ("text" in body or post) and not isinstance(body.get("text"), str):
        return "text must be a string"
    if "dashboardUID" in body and not isinstance(body["dashboardUID"], str):
        return "dashboardUID must be a string"
    return None


class GrafanaStub:
    def __init__(self, token: str = "stub-token"):
        self.token = token
        self.down = False
        self.annotations: dict[int, dict[str, Any]] = {}
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status) in arrival order
        self._lock = threading.Lock()
        self._next_id = 1
        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, name="grafana-stub", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> GrafanaStub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> GrafanaStub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def find(self, *tags: str) -> list[dict[str, Any]]:
        with self._lock:
            found = [dict(a) for a in self.annotations.values() if set(tags) <= set(a.get("tags", []))]
        return sorted(found, key=lambda a: -a["id"])

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _answer(self, status: int, payload: Any) -> None:
                data = json.dumps(payload).encode()
                with stub._lock:
                    stub.requests.append((self.command, self.path, status))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _gate(self) -> bool:
                if stub.down:
                    self._answer(503, {"message": "Service Unavailable"})
                    return False
                if self.headers.get("Authorization") != f"Bearer {stub.token}":
                    self._answer(401, {"message": "Unauthorized"})
                    return False
                return True

            def _body(self) -> Any:
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    return json.loads(self.rfile.read(length) or b"null")
                except ValueError:
                    return None

            def do_GET(self) -> None:  # noqa: N802
                if not self._gate():
                    return
                url = urlsplit(self.path)
                if url.path != "/api/annotations":
                    self._answer(404, {"message": "Not found"})
                    return
                self._answer(200, stub.find(*parse_qs(url.query).get("tags", [])))

            def do_POST(self) -> None:  # noqa: N802
                body = self._body()
                if not self._gate():
                    return
                if self.path != "/api/annotations":
                    self._answer(404, {"message": "Not found"})
                    return
                if (problem := _problem(body, post=True)) is not None:
                    self._answer(400, {"message": problem})
                    return
                with stub._lock:
                    aid = stub._next_id
                    stub._next_id += 1
                    time_ms = body.get("time", 0)
                    stub.annotations[aid] = {"id": aid, "dashboardUID": body.get("dashboardUID"),
                                             "panelId": body.get("panelId", 0), "time": time_ms,
                                             "timeEnd": body.get("timeEnd", time_ms), "tags": body.get("tags", []),
                                             "text": body["text"]}
                self._answer(200, {"message": "Annotation added", "id": aid})

            def do_PATCH(self) -> None:  # noqa: N802
                body = self._body()
                if not self._gate():
                    return
                parts = self.path.split("/")
                if len(parts) != 4 or parts[:3] != ["", "api", "annotations"] or not parts[3].isdigit():
                    self._answer(404, {"message": "Not found"})
                    return
                if (problem := _problem(body, post=False)) is not None:
                    self._answer(400, {"message": problem})
                    return
                with stub._lock:
                    found = stub.annotations.get(int(parts[3]))
                    if found is not None:
                        found.update({k: body[k] for k in ("time", "timeEnd", "tags", "text") if k in body})
                if found is None:
                    self._answer(404, {"message": "Annotation not found"})
                    return
                self._answer(200, {"message": "Annotation patched"})

        return Handler
