"""Request size limit for every endpoint: an ASGI middleware that answers 413 before the handler runs.

A declared `Content-Length` over the limit is refused without reading the body. A body without one
(`Transfer-Encoding: chunked`) is read ahead, up to the limit, before the application is called, and
refused as soon as it grows past it; a body within the limit is then replayed to the application
unchanged. So no handler ever sees (or starts work on) an oversized request."""
from __future__ import annotations

import json
from typing import Any

from loguru import logger
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyLimit:
    """`max_bytes` for every path but those in `per_path` (path -> its own limit)."""

    def __init__(self, app: ASGIApp, max_bytes: int, per_path: dict[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.per_path = dict(per_path or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.per_path.get(scope.get("path", ""), self.max_bytes)
        headers = dict(scope.get("headers") or ())
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await _answer(send, 400, "bad_request", "the Content-Length header is not a number")
                return
            if size > limit:
                _refused(scope, f"{size} bytes", limit)
                await _answer(send, 413, "too_large", f"the body is {size} bytes; at most {limit} are accepted")
                return
            if size == 0:
                await self.app(scope, receive, send)
                return
        elif b"transfer-encoding" not in headers:  # no body
            await self.app(scope, receive, send)
            return
        # read the body ahead (bounded), so an oversized stream is refused before the handler runs
        messages: list[Message] = []
        total = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":  # http.disconnect: let the app see it
                break
            total += len(message.get("body", b""))
            if total > limit:
                _refused(scope, f"more than {limit} bytes (streamed)", limit)
                await _answer(send, 413, "too_large", f"the body is larger than {limit} bytes")
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


def _refused(scope: Scope, size: str, limit: int) -> None:
    """Logged: a refused Alertmanager group is lost (it retries no 4xx), so its operator must hear of it."""
    setting = "alerts_max_bytes" if scope.get("path") == "/v1/alerts" else "max_body_bytes"
    logger.warning("413: refused a body of {} on {} {} (limit {} bytes, setting {})", size, scope.get("method"),
                   scope.get("path"), limit, setting)


async def _answer(send: Send, status: int, code: str, detail: Any) -> None:
    body = json.dumps({"error": code, "detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
