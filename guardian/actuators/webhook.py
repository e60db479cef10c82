"""POST each action as JSON to a URL: the actuator for any system that can take a webhook.

Delivery is at-least-once. A POST that timed out may still have landed, so it is retried with the
same `Idempotency-Key` header and the receiver is expected to dedupe on it. Connection errors,
timeouts, 429 and 5xx are worth retrying (the receiver may recover); any other 4xx means the request
itself is wrong, so repeating it cannot help and it fails at once.

A failed delivery is an Outcome(ok=False), never an exception: the engine decides what a failed
rollback means, not the transport. Target URLs and headers may carry credentials, so every detail and
log line goes through `_redact` first.
"""
from __future__ import annotations

import base64
import re
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
from loguru import logger

from guardian.actuators.base import ActionRequest, BaseActuator
from guardian.domain import Outcome
from guardian.errors import ActuatorError
from guardian.redact import redact

KIND = "guardian.action/v1"
SNIPPET_CHARS = 200  # of a failed response's body, in the detail
MIN_SECRET_CHARS = 4  # shorter literals are not scrubbed from text (they would mangle it, and guess easily)
_HINT = "write webhook+http://host:port/path"
_USERINFO = re.compile(r"(?<=://)[^/?#\s]*@")  # greedy: a stray '@' inside a password is covered too
_SENSITIVE_HEADER = re.compile(r"authorization|token|secret|api[-_]?key|cookie", re.IGNORECASE)


def redact_userinfo(text: str) -> str:
    """`http://user:pass@host` -> `http://***@host`, anywhere in `text`."""
    return _USERINFO.sub("***@", text)


def validate_url(url: str) -> str | None:
    """Why `url` cannot be a webhook target (without the URL itself, which may hold secrets), or None."""
    if not url:
        return f"no URL; {_HINT}"
    if any(c.isspace() for c in url):
        return "the URL contains whitespace"
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        return f"the URL scheme must be http or https, not {(parts.scheme or 'none')!r}; {_HINT}"
    if not parts.hostname:
        return f"the URL has no host; {_HINT}"
    try:
        _ = parts.port
        httpx.URL(url)
    except (ValueError, httpx.InvalidURL):
        return "the URL is invalid (bad port or characters)"
    return None


def _secrets(url: str, headers: Mapping[str, str]) -> list[str]:
    """Literal strings that must never appear in a detail or log line, longest first."""
    parts = urlsplit(url)
    found = set()
    user, password = parts.username or "", parts.password or ""
    for value in (user, password, unquote(user), unquote(password)):
        found.add(value)
    if user or password:
        found.add(f"{user}:{password}")
        found.add(base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode())
    for name, value in headers.items():
        if _SENSITIVE_HEADER.search(name):
            found.add(value)
            found.add(value.partition(" ")[2])  # "Bearer abc" -> "abc"
    return sorted((s for s in found if len(s) >= MIN_SECRET_CHARS), key=len, reverse=True)


def _snippet(response: httpx.Response) -> str:
    text = " ".join(response.text.split())
    if not text:
        return "(empty body)"
    return text if len(text) <= SNIPPET_CHARS else text[:SNIPPET_CHARS] + "..."


def _attempts(n: int) -> str:
    return f"{n} attempt" + ("" if n == 1 else "s")


@dataclass(frozen=True)
class WebhookOptions:
    """How the webhook actuator delivers (ActuatorDeps.webhook): `timeout` seconds per POST, `retries`
    re-sends after the first (429, 5xx, no answer), `sleep(backoff * 2**i)` before re-send i; `headers`
    on every POST; `transport` for tests (an in-process receiver)."""

    timeout: float = 5.0
    retries: int = 3
    backoff: float = 0.5
    headers: Mapping[str, str] | None = None
    transport: httpx.BaseTransport | None = None
    sleep: Callable[[float], Any] = time.sleep


class WebhookActuator(BaseActuator):
    """`retries` counts the re-sends after the first POST: at most `retries + 1` attempts, with
    `sleep(backoff * 2**i)` before re-send i (0-based): 0.5s, 1s, 2s with the defaults (WebhookOptions).

    Its outcome cache keeps failed deliveries too: `verify` reports the last delivery of a key, failed or
    not, because a webhook cannot be asked what it did. Deliveries of different keys run at once; the
    same key is never POSTed twice at once."""

    name = "webhook"

    def __init__(
        self,
        url: str,
        *,
        timeout: float = WebhookOptions.timeout,
        retries: int = WebhookOptions.retries,
        backoff: float = WebhookOptions.backoff,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], Any] = WebhookOptions.sleep,
    ) -> None:
        super().__init__(keep_failures=True)
        problem = validate_url(url)
        if problem:
            raise ActuatorError(f"webhook: {problem}")
        if retries < 0 or timeout <= 0 or backoff < 0:
            raise ValueError("webhook: need retries >= 0, timeout > 0 and backoff >= 0")
        self._url = url
        self._secrets = _secrets(url, headers or {})
        self.display_url = self._redact(url)  # safe to print
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout
        self._sleep = sleep
        # Redirects are not followed: a 3xx is reported as the failure it is, not silently re-POSTed.
        self._client = httpx.Client(timeout=timeout, transport=transport, headers=dict(headers or {}))

    def _redact(self, text: str) -> str:
        text = redact_userinfo(text)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def lock_key(self, request: ActionRequest) -> Hashable:
        return request.key

    def replayed(self, request: ActionRequest, outcome: Outcome) -> None:
        logger.debug(self._redact(f"webhook: {request.key} already delivered to {self.display_url}"))

    def carry_out(self, request: ActionRequest) -> Outcome:
        """Deliver (`apply`: once per key; a key whose last delivery failed is delivered again)."""
        action = request.action.value
        body = redact({**request.to_dict(), "kind": KIND})  # no secrets in the payload (guardian/redact.py)
        headers = {"Idempotency-Key": request.key, "Content-Type": "application/json"}
        data: dict[str, Any] = {"key": request.key, "url": self.display_url, "status": None}
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._client.post(self._url, json=body, headers=headers)
            except httpx.TimeoutException as exc:
                problem, status, retryable = (
                    f"timed out after {self.timeout}s ({type(exc).__name__})", None, True
                )
            except httpx.ConnectError as exc:
                problem, status, retryable = f"connection failed ({exc})", None, True
            except httpx.TransportError as exc:  # the connection broke mid-request
                problem, status, retryable = f"request failed ({type(exc).__name__}: {exc})", None, True
            except httpx.HTTPError as exc:  # not a network problem: a re-send cannot fix it
                problem, status, retryable = f"request failed ({type(exc).__name__}: {exc})", None, False
            else:
                status = response.status_code
                if 200 <= status < 300:
                    detail = (
                        f"webhook: delivered {action} for {request.service} to {self.display_url}: "
                        f"HTTP {status} in {_attempts(attempt)}"
                    )
                    logger.info(self._redact(detail))
                    return Outcome(True, action, self._redact(detail), attempt, {**data, "status": status})
                problem = f"HTTP {status}: {_snippet(response)}"
                retryable = status == 429 or status >= 500
            logger.warning(self._redact(
                f"webhook: {action} {request.key} attempt {attempt}/{self.retries + 1} "
                f"to {self.display_url}: {problem}"
            ))
            if not retryable or attempt > self.retries:
                break
            self._sleep(self.backoff * 2 ** (attempt - 1))
        detail = (
            f"webhook: {action} for {request.service} to {self.display_url} failed "
            f"after {_attempts(attempt)}: {problem}" + ("" if retryable else " (not retried)")
        )
        return Outcome(False, action, self._redact(detail), attempt, {**data, "status": status})

    def verify(self, request: ActionRequest) -> Outcome:
        """A webhook cannot be asked what it did, so this reports our own last delivery of the key."""
        action = request.action.value
        last = self.outcomes.last(request.key)
        if last is None:
            detail = f"webhook: {request.key} was never delivered"
            return Outcome(False, action, detail, data={"key": request.key})
        if last.ok:
            detail = f"webhook: {request.key} was delivered (HTTP {last.data.get('status')})"
            return Outcome(True, action, detail, data=last.data)
        return Outcome(False, action, f"webhook: last delivery of {request.key} failed: {last.detail}",
                       data=last.data)

    def close(self) -> None:
        self._client.close()
