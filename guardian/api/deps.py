"""What the routes depend on: the app's components (`Deps`) and the credentials each kind of caller presents.

- `require_token` (`Mutating`): an operator token, on every mutating route (start, the overrides, rules reload);
- `require_reader` (`Reading`): with a viewer token configured, it or an operator token on the GET routes;
- `require_alertmanager`: Alertmanager's own credentials on `POST /v1/alerts`, else the operator token;
- `require_gate`: the gates' token (Flagger may send it as `metadata.token` in the body), else the operator token.

Every credential is compared in constant time and never logged; every refusal is, with what was wrong
(tokenfirst.py). With no credential configured a route is open (loopback only: the settings refuse otherwise)."""
from __future__ import annotations

import base64
import hmac
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request
from loguru import logger

from guardian.api.components import Components
from guardian.api.identity import UNNAMED, caller_of_header, operator_tokens
from guardian.api.tokenfirst import REFUSED, refusal, what_was_wrong


async def components(request: Request) -> Components:  # async: no thread-pool hop per request
    return request.app.state.components


Deps = Annotated[Components, Depends(components)]


def _client(request: Request) -> str:
    client = request.client
    return f"{client.host}:{client.port}" if client else ""


_REFUSER = {"/v1/alerts": "alert webhook"}  # with no Alertmanager credentials the webhook takes the operator token


def require_token(request: Request, c: Deps, authorization: Annotated[str | None, Header()] = None) -> str:
    """An operator token, on every mutating route (OperatorTokenFirst has usually answered already): the name of the
    operator it belongs to ("user" for the unnamed `token`; "user" too when none is configured). Every refusal is
    logged, without the secret."""
    if not operator_tokens(c.settings):
        return UNNAMED
    caller = caller_of_header(c.settings, authorization)
    if caller is None or not caller.may_act:
        what = _REFUSER.get(request.url.path, "operator call")
        refusal(what, request.method, request.url.path, _client(request), what_was_wrong(authorization))
        raise HTTPException(401, REFUSED)  # the same words as OperatorTokenFirst's, which answers first
    return caller.name


def require_reader(request: Request, c: Deps, authorization: Annotated[str | None, Header()] = None) -> None:
    """With a viewer token configured, reading (the GET routes of rollouts, rules, alerts, the doctor) needs it or
    an operator token; without one, reading stays open as it always was (/metrics, /healthz, /readyz, /v1/status
    stay open either way)."""
    if c.settings.viewer_token is None:
        return
    if caller_of_header(c.settings, authorization) is None:
        refusal("read", request.method, request.url.path, _client(request), what_was_wrong(authorization))
        raise HTTPException(401, REFUSED)


Mutating = [Depends(require_token)]
Reading = [Depends(require_reader)]
Operator = Annotated[str, Depends(require_token)]  # a route that needs to know who acts


async def require_alertmanager(request: Request, c: Deps, authorization: Annotated[str | None, Header()] = None,
                               ) -> None:
    """Alertmanager's own credentials (bearer or basic, as its http_config sends them), else the
    operator token. The header is compared in constant time and never logged (a refusal is, with what
    was wrong). Async: it only compares strings, so it runs on the event loop (no thread-pool hop per
    webhook post)."""
    s = c.settings
    accepted = []
    if s.alerts_token is not None:
        accepted.append(f"Bearer {s.alerts_token.get_secret_value()}")
    if s.alerts_basic_auth is not None:
        accepted.append("Basic " + base64.b64encode(s.alerts_basic_auth.get_secret_value().encode()).decode())
    if not accepted:
        return require_token(request, c, authorization)
    given = (authorization or "").encode()
    if not any(hmac.compare_digest(given, a.encode()) for a in accepted):  # every one compared: no early exit
        schemes = tuple(a.split(" ", 1)[0] for a in accepted)
        refusal("alert webhook", request.method, request.url.path, _client(request),
                f"missing or wrong credentials: {what_was_wrong(authorization, schemes)}")
        raise HTTPException(401, "Alertmanager's credentials are required (bearer token or basic auth)")


def require_gate(c: Components, authorization: str | None, token: str | None = None) -> None:
    """The gates' token (`gate_token`, else the operator token) as `Authorization: Bearer <token>`, or `token`
    (Flagger's `metadata.token`, read from the body: so this is called by the gate routes, not injected)."""
    s = c.settings
    secret = s.gate_token or s.token
    if secret is None:
        return
    expected = secret.get_secret_value()
    given = [(authorization or "").encode(), f"Bearer {token}".encode() if token else b""]
    if not any(hmac.compare_digest(g, f"Bearer {expected}".encode()) for g in given):
        logger.warning("gate call refused: no valid gate token")
        raise HTTPException(401, "the gate token is required: 'Authorization: Bearer <token>' (or, from Flagger, "
                                 "metadata.token)")
