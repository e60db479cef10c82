"""The webhook actuator against a real HTTP server on 127.0.0.1: delivery, retries, failures, secrets.

Retry arithmetic under test: `retries=N` means at most N+1 POSTs, with sleep(backoff * 2**i) before
re-send i. The injected `sleep` only records, so no test waits for a backoff.
"""
from __future__ import annotations

import base64
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from loguru import logger

from guardian.actuators import ActionRequest
from guardian.actuators.webhook import KIND, WebhookActuator
from guardian.domain import Action

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


class Hook:
    """What the test server answers (one script entry per request; the last one repeats) and saw."""

    def __init__(self) -> None:
        self.script: list[tuple[int, str, float]] = [(200, "ok", 0.0)]  # (status, body, delay seconds)
        self.requests: list[dict] = []
        self.release = threading.Event()  # ends slow answers early at teardown
        self.url = ""
        self._lock = threading.Lock()

    def answer(self, *steps: tuple[int, str, float] | int) -> None:
        self.script = [s if isinstance(s, tuple) else (s, f"status {s}", 0.0) for s in steps]

    def next(self) -> tuple[int, str, float]:
        with self._lock:
            return self.script.pop(0) if len(self.script) > 1 else self.script[0]


def handler_for(hook: Hook) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            hook.requests.append({"path": self.path, "headers": self.headers, "body": json.loads(raw)})
            status, body, delay = hook.next()
            if delay:
                hook.release.wait(delay)
            body = body.replace("{authorization}", self.headers.get("Authorization", ""))
            try:
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body.encode())))
                self.end_headers()
                self.wfile.write(body.encode())
            except OSError:  # the client gave up (timeout test)
                pass

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def hook():
    state = Hook()
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(state))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    yield state
    state.release.set()
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def make(sleeps):
    made: list[WebhookActuator] = []

    def build(url: str, **kwargs) -> WebhookActuator:
        kwargs.setdefault("sleep", sleeps.append)
        kwargs.setdefault("timeout", 2.0)
        actuator = WebhookActuator(url, **kwargs)
        made.append(actuator)
        return actuator

    yield build
    for actuator in made:
        actuator.close()


@pytest.fixture
def logs():
    lines: list[str] = []
    sink = logger.add(lines.append, level="DEBUG", format="{message}")
    yield lines
    logger.remove(sink)


def request(seq: int = 1, action: Action = Action.ADVANCE) -> ActionRequest:
    return ActionRequest(
        rollout_id="r1", service="checkout", image="checkout:2", action=action, weight=25,
        key=f"r1:{seq}:{action.value}", reason="all checks pass",
    )


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_delivers_json_with_idempotency_key(hook, make, sleeps):
    outcome = make(hook.url).apply(request())
    assert outcome.ok and outcome.attempts == 1 and outcome.action == "advance"
    assert "HTTP 200" in outcome.detail
    assert outcome.data["status"] == 200
    [seen] = hook.requests
    assert seen["path"] == "/hook"
    assert seen["body"] == {**request().to_dict(), "kind": KIND}
    assert seen["body"]["kind"] == "guardian.action/v1" and seen["body"]["action"] == "advance"
    assert seen["headers"]["Idempotency-Key"] == "r1:1:advance"
    assert seen["headers"]["Content-Type"] == "application/json"
    assert sleeps == []


def test_a_repeated_key_is_not_sent_again(hook, make):
    hook_actuator = make(hook.url)
    first = hook_actuator.apply(request(1))
    again = hook_actuator.apply(request(1))
    assert again == first and len(hook.requests) == 1
    assert hook_actuator.verify(request(1)).ok
    hook_actuator.apply(request(2))
    assert [r["headers"]["Idempotency-Key"] for r in hook.requests] == ["r1:1:advance", "r1:2:advance"]


def test_same_key_applied_concurrently_is_posted_once(hook, make):
    hook.answer((200, "ok", 0.3))
    hook_actuator = make(hook.url)
    outcomes = []
    threads = [
        threading.Thread(target=lambda: outcomes.append(hook_actuator.apply(request()))) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(hook.requests) == 1 and all(o.ok for o in outcomes)


def test_500_then_200_is_retried_with_the_same_key(hook, make, sleeps):
    hook.answer(500, 200)
    outcome = make(hook.url, backoff=0.5).apply(request())
    assert outcome.ok and outcome.attempts == 2
    assert len(hook.requests) == 2
    assert {r["headers"]["Idempotency-Key"] for r in hook.requests} == {"r1:1:advance"}
    assert hook.requests[0]["body"] == hook.requests[1]["body"]
    assert sleeps == [0.5]


def test_429_is_retried(hook, make, sleeps):
    hook.answer(429, 200)
    outcome = make(hook.url).apply(request())
    assert outcome.ok and outcome.attempts == 2 and len(hook.requests) == 2


def test_always_500_fails_after_retries_plus_one_attempts(hook, make, sleeps):
    hook.answer((500, "boom: database on fire", 0.0))
    hook_actuator = make(hook.url, retries=3, backoff=0.5)
    outcome = hook_actuator.apply(request())
    assert not outcome.ok
    assert outcome.attempts == 4 and len(hook.requests) == 4
    assert sleeps == [0.5, 1.0, 2.0]  # exponential, none after the last attempt
    assert "HTTP 500" in outcome.detail and "boom: database on fire" in outcome.detail
    assert "after 4 attempts" in outcome.detail
    assert outcome.data["status"] == 500
    assert not hook_actuator.verify(request()).ok


def test_retries_zero_means_one_attempt(hook, make, sleeps):
    hook.answer(503)
    outcome = make(hook.url, retries=0).apply(request())
    assert not outcome.ok and outcome.attempts == 1 and len(hook.requests) == 1 and sleeps == []


def test_a_failed_key_is_delivered_again_later(hook, make):
    hook.answer(500)
    hook_actuator = make(hook.url, retries=0)
    assert not hook_actuator.apply(request()).ok
    hook.answer(200)
    assert hook_actuator.apply(request()).ok
    assert len(hook.requests) == 2
    assert hook_actuator.verify(request()).ok


def test_400_is_final_at_once(hook, make, sleeps):
    hook.answer((400, '{"error": "unknown service"}', 0.0))
    outcome = make(hook.url, retries=3).apply(request())
    assert not outcome.ok and outcome.attempts == 1 and len(hook.requests) == 1
    assert "HTTP 400" in outcome.detail and "unknown service" in outcome.detail
    assert "not retried" in outcome.detail
    assert sleeps == []


def test_long_bodies_are_cut_to_a_snippet(hook, make):
    hook.answer((400, "x" * 5000, 0.0))
    outcome = make(hook.url).apply(request())
    assert "x" * 200 + "..." in outcome.detail and "x" * 201 not in outcome.detail


def test_slow_answer_times_out_and_fails(hook, make, sleeps):
    hook.answer((200, "too late", 5.0))
    outcome = make(hook.url, timeout=0.2, retries=1).apply(request())
    assert not outcome.ok and outcome.attempts == 2
    assert "timed out" in outcome.detail
    assert len(hook.requests) == 2 and sleeps == [0.5]


def test_connection_refused_fails_with_a_clear_detail(make, sleeps):
    url = f"http://127.0.0.1:{closed_port()}/hook"
    hook_actuator = make(url, retries=2)
    outcome = hook_actuator.apply(request())
    assert not outcome.ok and outcome.attempts == 3
    assert "connection failed" in outcome.detail and "refused" in outcome.detail.lower()
    assert url in outcome.detail and outcome.data["status"] is None
    assert sleeps == [0.5, 1.0]
    assert "never delivered" not in hook_actuator.verify(request()).detail


def test_verify_before_any_delivery_is_not_ok(hook, make):
    result = make(hook.url).verify(request())
    assert not result.ok and "never delivered" in result.detail


def test_supports_every_action(hook, make):
    assert make(hook.url).supports == frozenset(Action)


def test_url_credentials_are_used_but_never_shown(hook, make, logs):
    url = hook.url.replace("http://", "http://alice:s3cret-pw@")
    token = base64.b64encode(b"alice:s3cret-pw").decode()
    hook.answer((500, "denied for {authorization}", 0.0), 200)
    hook_actuator = make(url, retries=1)
    outcome = hook_actuator.apply(request())
    assert outcome.ok
    assert hook.requests[0]["headers"]["Authorization"] == f"Basic {token}"
    hook.answer((400, "denied for {authorization}", 0.0))
    failed = hook_actuator.apply(request(2))
    refused = make(f"http://alice:s3cret-pw@127.0.0.1:{closed_port()}/x", retries=0).apply(request())
    texts = [outcome.detail, failed.detail, refused.detail, hook_actuator.display_url, *logs]
    texts += [str(o.data) for o in (outcome, failed, refused)]
    assert "***@127.0.0.1" in outcome.detail
    for text in texts:
        assert "s3cret-pw" not in text and token not in text and "alice" not in text


def test_authorization_header_is_sent_but_never_shown(hook, make, logs):
    hook.answer((500, "bad credentials: {authorization}", 0.0))
    outcome = make(hook.url, retries=0, headers={"Authorization": "Bearer tok-0123456789"}).apply(request())
    assert hook.requests[0]["headers"]["Authorization"] == "Bearer tok-0123456789"
    assert not outcome.ok and "bad credentials: ***" in outcome.detail
    for text in [outcome.detail, *logs]:
        assert "tok-0123456789" not in text
