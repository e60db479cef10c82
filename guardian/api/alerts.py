"""/v1/alerts: Alertmanager's webhook receiver (POST) and the alerts the guardian knows (GET).

A post is validated on the event loop and stored by the app's group-commit intake (intake.py), which
acts on the rollouts its firing alerts are about before it is answered. `AlertsFastLane`, the outermost
middleware, hands a post with a declared length straight to `receive_alerts`, the same code as through
the router."""
from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from guardian.api.deps import Deps, Reading, require_alertmanager
from guardian.api.intake import intake_for
from guardian.engine.alerts import StoredAlert, WebhookPayload, freezes, matches, route

router = APIRouter()


@router.post("/v1/alerts")
async def receive_alerts(request: Request) -> Response:
    """Alertmanager's webhook receiver (payload version 4). Firing alerts about a rollout in flight
    fail it with the action its rule file's `alerts:` section (or the severity) asks for; resolved
    ones stop counting; a repeated alert changes nothing; every alert is stored."""
    c = request.app.state.components  # called, not injected: FastAPI's dependency solving is the hot path's cost
    await require_alertmanager(request, c, request.headers.get("authorization"))
    limit = c.settings.alerts_max_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"the body is {declared} bytes; at most {limit} are accepted")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, f"the body is larger than {limit} bytes")
    try:
        payload = WebhookPayload.model_validate_json(bytes(body))
    except ValidationError as e:
        raise RequestValidationError(e.errors(include_url=False, include_input=False)) from None
    now = c.clock.now()  # when it was received, by the guardian's clock
    alerts = [StoredAlert(fingerprint=a.fingerprint, name=a.name, status=a.status, labels=a.labels,
                          annotations=a.annotations, starts_at=a.starts_at.timestamp(),
                          ends_at=a.ends_at.timestamp() if a.ends_at and a.ends_at.year > 1 else None,
                          received_at=now, group_key=payload.group_key) for a in payload.alerts]
    result = await intake_for(request.app).submit(alerts)  # group commit: guardian/api/intake.py
    for a in alerts:
        c.metrics.alerts.labels(a.status).inc()
    # plain JSON types: encoded as they are, without FastAPI's response serialization (the intake's hot path)
    return Response(orjson.dumps(result | {"truncated_alerts": payload.truncated_alerts}),
                    media_type="application/json")


@router.get("/v1/alerts", dependencies=Reading)
def list_alerts(c: Deps, every: bool = Query(False, alias="all")) -> list[dict[str, Any]]:
    """The alerts the guardian knows (firing ones, or every one with ?all=true), each with the rollouts
    in flight it is about and what it asks of them."""
    labels = c.settings.alert_labels
    active = [(s, c.rulebook.for_service(s.service).rules.arms) for s in c.store.list(active_only=True)]
    out = []
    for a in c.store.alerts(firing_only=not every):
        service = a.labels.get(labels["service"])
        routes = c.rulebook.for_service(service).rules.alerts if service else ()
        out.append({"fingerprint": a.fingerprint, "name": a.name, "status": a.status, "labels": dict(a.labels),
                    "annotations": dict(a.annotations), "starts_at": a.starts_at, "ends_at": a.ends_at,
                    "received_at": a.received_at, "action": route(a.labels, routes).value,
                    "rollouts": [s.id for s, arms in active
                                 if matches(a.labels, s, labels, arm_label=arms.label, baseline=arms.baseline)],
                    "freezes": freezes(a, service or "", labels)})
    return out


class AlertsFastLane:
    """ASGI middleware, the outermost of the app's own: `POST /v1/alerts` with a declared body within the
    app's limit is handed straight to its endpoint (`receive_alerts`, above: the same code as through
    the router), skipping the routing and the middleware below; its errors go through the app's own
    exception handlers, so the answers are the same. Anything else (another path, a chunked body, one
    over the limit) takes the usual way. Under load the framework's layers cost more than the intake."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != "/v1/alerts":
            await self.app(scope, receive, send)
            return
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is None or not declared.isdigit() or int(declared) > self.max_bytes:
            await self.app(scope, receive, send)  # BodyLimit's cases (guardian/api/limits.py)
            return
        request = Request(scope, receive)
        try:
            response = await receive_alerts(request)
        except Exception as exc:
            handler = _exception_handler(scope["app"], exc)
            if handler is None:
                raise
            response = await handler(request, exc)
        await response(scope, receive, send)


def _exception_handler(app: Any, exc: Exception) -> Any:
    handlers = getattr(app, "exception_handlers", {})
    return next((handlers[cls] for cls in type(exc).__mro__ if cls in handlers), None)
