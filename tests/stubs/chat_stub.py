"""A STUB of Slack's incoming webhooks and of a Microsoft Teams workflow webhook (neither service can run on the
test machine): a real HTTP server on a free loopback port, in a thread, answering as their documentation says.

Slack (api.slack.com/messaging/webhooks, "Handling errors"; Block Kit reference):
    POST /services/T…/B…/SECRET   JSON {"text", "blocks"}  -> 200 "ok"
    - 400 "invalid_payload" when the body is not JSON or has neither text nor blocks; 400 "invalid_blocks" when a
      block breaks Block Kit's limits this stub checks (≤ 50 blocks; a header's plain_text ≤ 150 characters; a
      section's text ≤ 3,000; ≤ 10 fields of ≤ 2,000; a known block type);
    - 404 "no_service" for a webhook that does not exist (or was revoked), 410 "channel_is_archived";
    - 429 with Retry-After (seconds) when rate limited (`rate_limit_next` answers that many requests so).
Teams workflow webhook (learn.microsoft.com, "Create incoming webhooks with Workflows for Microsoft Teams"):
    POST /workflows/…  JSON {"type": "message", "attachments": [{"contentType":
    "application/vnd.microsoft.card.adaptive", "content": {"type": "AdaptiveCard", "version", "body"}}]} -> 202
    - 400 when the body is not such a message.

A generic webhook receiver answers POST /hooks/… with 200 for a CloudEvents 1.0 JSON event (400 otherwise).

`received` keeps every accepted payload (path, JSON); `statuses` every answer's status; `hold` (a threading.Event
that is cleared) keeps each request waiting until it is set.
"""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SLACK_BLOCK_TYPES = {"header", "section", "context", "actions", "divider", "image", "rich_text", "input", "file"}


def slack_problem(body: Any) -> str | None:
    if not isinstance(body, dict) or not (body.get("text") or body.get("blocks")):
        return "invalid_payload"
    blocks = body.get("blocks") or []
    if not isinstance(blocks, list) or len(blocks) > 50:
        return "invalid_blocks"
    for b in blocks:
        t = b.get("type")
        if t not in SLACK_BLOCK_TYPES:
            return "invalid_blocks"
        if t == "header" and (b["text"].get("type") != "plain_text" or len(b["text"]["text"]) > 150):
            return "invalid_blocks"
        if t == "section":
            if "text" in b and len(b["text"]["text"]) > 3000:
                return "invalid_blocks"
            fields = b.get("fields") or []
            if len(fields) > 10 or any(len(f["text"]) > 2000 for f in fields):
                return "invalid_blocks"
        if t == "actions" and any(e.get("type") != "button" or not e.get("url") for e in b.get("elements", [])):
            return "invalid_blocks"
    return None


def teams_problem(body: Any) -> str | None:
    try:
        (att,) = body["attachments"]
        card = att["content"]
        ok = (body["type"] == "message" and att["contentType"] == "application/vnd.microsoft.card.adaptive"
              and card["type"] == "AdaptiveCard" and isinstance(card["body"], list) and card["version"])
    except (KeyError, TypeError, ValueError):
        ok = False
    return None if ok else "not a message with one Adaptive Card attachment"


class ChatStub:
    def __init__(self) -> None:
        self.received: list[tuple[str, Any]] = []
        self.statuses: list[int] = []
        self.rate_limit_next = 0
        self.retry_after = "0"
        self.hold = threading.Event()
        self.hold.set()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                stub.hold.wait(10)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                if self.path.startswith("/services/"):
                    self._slack(body)
                elif self.path.startswith("/hooks/"):  # a generic webhook receiver: a CloudEvent in, 200 out
                    ok = isinstance(body, dict) and body.get("specversion") == "1.0" and body.get("id")
                    self._answer(200 if ok else 400, "" if ok else "not a CloudEvent", body)
                elif self.path.startswith("/workflows/"):
                    problem = teams_problem(body)
                    self._answer(400 if problem else 202, problem or "", body)
                else:
                    self._answer(404, "not found", None)

            def _slack(self, body: Any) -> None:
                if self.path.endswith("/REVOKED"):
                    return self._answer(404, "no_service", None)
                if self.path.endswith("/ARCHIVED"):
                    return self._answer(410, "channel_is_archived", None)
                if stub.rate_limit_next > 0:
                    stub.rate_limit_next -= 1
                    return self._answer(429, "rate_limited", None, {"Retry-After": stub.retry_after})
                problem = slack_problem(body)
                self._answer(400 if problem else 200, problem or "ok", body)

            def _answer(self, status: int, text: str, body: Any, headers: dict[str, str] | None = None) -> None:
                if status < 300:
                    stub.received.append((self.path, body))
                stub.statuses.append(status)
                data = text.encode()
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("content-type", "text/plain")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.hold.set()
        self.server.shutdown()
        self.server.server_close()
