"""The operator token, checked before the body is read: an ASGI middleware.

FastAPI parses and validates a request's body before it runs the route's dependencies, so without this a
POST with a malformed body and no token got 400/422 (and its validation messages) instead of 401. For
the operator's endpoints (start, the overrides, rules reload) the `Authorization` header is compared
first, in constant time; the routes keep their own `require_token` dependency too. The gates (Flagger may
send its token inside the body) and the Alertmanager webhook (its own credentials) are not concerned.

Every refusal is logged at WARNING (`refusal`): the method, path and client, and what was wrong with the
header (none, not a bearer token, a wrong one) — never the header's value."""
from __future__ import annotations

import hmac
import re

from loguru import logger
from starlette.types import ASGIApp, Receive, Scope, Send

from guardian.api.limits import _answer

OPERATOR_PATHS = re.compile(r"^/v1/(rollouts(/[^/]+/(pause|resume|promote|rollback|approve))?|rules/reload)/?$")
REFUSED = "a valid 'Authorization: Bearer <token>' header is required"
# schemes named in a refusal's log line; any other first word might be the secret itself, so it is not shown
_SCHEMES = {"basic", "bearer", "digest", "negotiate", "token", "apikey", "hoba", "mutual", "ntlm", "aws4-hmac-sha256"}


def what_was_wrong(authorization: str | bytes | None, expected: tuple[str, ...] = ("Bearer",)) -> str:
    """What was wrong with a refused Authorization header (`expected`: the schemes that were accepted), in
    words that never include its credentials."""
    if isinstance(authorization, bytes):
        authorization = authorization.decode("latin-1", "replace")
    if not authorization or not authorization.strip():
        return "no Authorization header"
    wanted = " or ".join(f"a {e.lower()} token" if e.lower() == "bearer" else f"{e.lower()} credentials"
                         for e in expected)
    scheme, _, credentials = authorization.strip().partition(" ")
    if not credentials.strip():
        return f"not {wanted} (the header has no scheme)"
    if scheme.lower() not in {e.lower() for e in expected}:
        named = scheme if scheme.lower() in _SCHEMES else "an unknown scheme's"
        return f"not {wanted} ({named} credentials)"
    return "wrong bearer token" if scheme.lower() == "bearer" else f"wrong {scheme.lower()} credentials"


def refusal(what: str, method: str, path: str, client: str, why: str) -> None:
    """Log one refused credential: `what` refused (e.g. "operator call"), the request, who sent it and why."""
    path = path.encode("unicode_escape").decode("ascii")  # one log line, whatever the path holds
    logger.warning("{} refused: {} {} from {}: {}", what, method, path, client or "an unknown client", why)


def client_of(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else ""


class OperatorTokenFirst:
    def __init__(self, app: ASGIApp, tokens: tuple[str, ...] = ()) -> None:
        """`tokens`: every operator token (the unnamed one and the named ones); a POST to an operator path must carry
        one of them. None configured: the paths are open (loopback only)."""
        self.app = app
        self.expected = tuple(f"Bearer {t}".encode("latin-1", "replace") for t in tokens) or None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (self.expected is not None and scope["type"] == "http" and scope["method"] == "POST"
                and OPERATOR_PATHS.match(scope["path"])):
            given = next((v for k, v in scope.get("headers") or () if k == b"authorization"), b"")
            if not any([hmac.compare_digest(given, e) for e in self.expected]):  # a list: every one compared
                refusal("operator call", scope["method"], scope["path"], client_of(scope), what_was_wrong(given))
                await _answer(send, 401, "unauthorized", REFUSED)
                return
        await self.app(scope, receive, send)
