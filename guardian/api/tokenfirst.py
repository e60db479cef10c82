"""The operator token, checked before the body is read: an ASGI middleware.

FastAPI parses and validates a request's body before it runs the route's dependencies, so without this a
POST with a malformed body and no token got 400/422 (and its validation messages) instead of 401. For
the operator's endpoints (start, the overrides, rules reload) the `Authorization` header is compared
first, in constant time; the routes keep their own `require_token` dependency too. The gates (Flagger may
send its token inside the body) and the Alertmanager webhook (its own credentials) are not concerned."""
from __future__ import annotations

import hmac
import re

from starlette.types import ASGIApp, Receive, Scope, Send

from guardian.api.limits import _answer

OPERATOR_PATHS = re.compile(r"^/v1/(rollouts(/[^/]+/(pause|resume|promote|rollback))?|rules/reload)/?$")
REFUSED = "a valid 'Authorization: Bearer <token>' header is required"


class OperatorTokenFirst:
    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode("latin-1", "replace") if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (self.expected is not None and scope["type"] == "http" and scope["method"] == "POST"
                and OPERATOR_PATHS.match(scope["path"])):
            given = next((v for k, v in scope.get("headers") or () if k == b"authorization"), b"")
            if not hmac.compare_digest(given, self.expected):
                await _answer(send, 401, "unauthorized", REFUSED)
                return
        await self.app(scope, receive, send)
