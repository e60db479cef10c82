"""What every stub's HTTP server is: a real `ThreadingHTTPServer` on a free 127.0.0.1 port, serving from a daemon
thread; `start()` and `stop()`, or `with`. A stub calls `serve(handler, name)` in its `__init__`; its handler reads a
JSON body with `json_body`."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

from demo.stack import free_port


class LoopbackServer:
    port: int
    server: ThreadingHTTPServer

    def serve(self, handler: type[BaseHTTPRequestHandler], name: str) -> None:
        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self.server.daemon_threads = True
        # polled every 50 ms: stop() returns at once rather than after the default half second
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), name=name, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def json_body(handler: BaseHTTPRequestHandler) -> Any:
    """The request's body as JSON (Content-Length bytes), None when there is none or it is not JSON."""
    length = int(handler.headers.get("Content-Length") or 0)
    try:
        return json.loads(handler.rfile.read(length) or b"null")
    except ValueError:
        return None
