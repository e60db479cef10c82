"""HTTP API (SPEC section 2). Handlers are plain `def`: they run in the thread pool, because the
store and the actuators block."""
from __future__ import annotations

import base64
import contextlib
import hmac
import re
import time
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from loguru import logger
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from guardian.actuators import registry
from guardian.alerts import StoredAlert, WebhookPayload, freezes, matches, route
from guardian.api.app import Components
from guardian.api.intake import intake_for
from guardian.api.tokenfirst import REFUSED, refusal, what_was_wrong
from guardian.domain import Action, Phase, Strategy
from guardian.engine.guard import start_spec
from guardian.errors import ActuatorError, RolloutConflict

router = APIRouter()
_SERVICE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,252}$")


async def components(request: Request) -> Components:  # async: no thread-pool hop per request
    return request.app.state.components


Deps = Annotated[Components, Depends(components)]


def _client(request: Request) -> str:
    client = request.client
    return f"{client.host}:{client.port}" if client else ""


_REFUSER = {"/v1/alerts": "alert webhook"}  # with no Alertmanager credentials the webhook takes the operator token


def require_token(request: Request, c: Deps, authorization: Annotated[str | None, Header()] = None) -> None:
    """The operator token, on every mutating route (OperatorTokenFirst has usually answered already). Every
    refusal is logged, without the secret."""
    token = c.settings.token
    if token is None:
        return
    expected = f"Bearer {token.get_secret_value()}".encode()
    if not authorization or not hmac.compare_digest(authorization.encode(), expected):
        what = _REFUSER.get(request.url.path, "operator call")
        refusal(what, request.method, request.url.path, _client(request), what_was_wrong(authorization))
        raise HTTPException(401, REFUSED)  # the same words as OperatorTokenFirst's, which answers first


Mutating = [Depends(require_token)]


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


class StartRollout(BaseModel):
    model_config = ConfigDict(extra="forbid")

    service: str = Field(description="the service to roll out (letters, digits, . _ -)")
    image: str = Field(min_length=1, max_length=512, description="the new version's image")
    strategy: Strategy = Strategy.CANARY
    steps: list[int] | None = Field(None, description="canary traffic percentages, rising, e.g. [10, 25, 50, 100]")
    target: str | None = Field(None, description=(
        "actuator URI: noop, webhook+http://host:port/path, docker:?options, nginx:/path/upstream.conf?options, "
        "swarm:SERVICE"))
    step_seconds: float | None = Field(None, ge=0.5, le=3600, description="tick length (default from settings)")
    analysis_seconds: float | None = Field(None, ge=0, le=86400, description="how long each step must pass")
    force: bool = Field(False, description="start even while a critical alert freezes the service's releases")
    allow_missing: bool = Field(False, description=(
        "start even when a signal the policy needs has no series (the preflight's findings): the rollout then "
        "starts paused by the guardian, with them as its reason, and resumes when the data comes"))
    previous_image: str | None = Field(None, min_length=1, max_length=512, description=(
        "the image the new one replaces, if known: fills {previous_version} in a rule file's arms"))

    @field_validator("service")
    @classmethod
    def _service(cls, v: str) -> str:
        if not _SERVICE.match(v):
            raise ValueError("service must be 1-253 letters, digits, '.', '_' or '-', starting with a letter or digit")
        return v

    @field_validator("steps")
    @classmethod
    def _steps(cls, v: list[int] | None) -> list[int] | None:
        if v is None:
            return v
        if not v or any(not 0 < s <= 100 for s in v) or any(a >= b for a, b in zip(v, v[1:], strict=False)):
            raise ValueError("steps must be strictly rising percentages in 1..100")
        return v

    @field_validator("target")
    @classmethod
    def _target(cls, v: str | None) -> str | None:
        if v is not None and (problem := registry.validate_target(v)):
            raise ValueError(problem)
        return v


def rollout_view(c: Components, rollout_id: str) -> dict[str, Any]:
    state = c.store.get(rollout_id)
    latest = c.store.latest_tick(rollout_id)
    now = c.clock.now()
    view = state.to_dict()
    view["time_left_in_step"] = (  # the step's analysis restarts on resume, so a paused rollout has none
        max(0.0, state.analysis_seconds - (now - state.step_started_at))
        if state.phase is Phase.PROGRESSING and not state.open_ended else None  # open-ended: no end to count to
    )
    view["next_tick_at"] = (state.tick_bounds(state.last_tick + 1)[1] + c.settings.evaluation_delay
                            if not state.phase.terminal else None)
    view["latest_tick"] = latest
    view["verdicts"] = latest["verdicts"] if latest else []
    view["decisions"] = c.store.decisions(rollout_id)
    return view


@router.post("/v1/rollouts", status_code=201, dependencies=Mutating)
def start_rollout(body: StartRollout, c: Deps) -> Any:
    """Start a rollout, after a preflight: a signal its policy needs that has no series at all (a label
    mismatch, a histogram without the objective's bucket …) refuses the start with 422 `missing_metrics`
    naming each and why (engine/preflight.py), unless `allow_missing`: then it starts paused."""
    from guardian.engine.preflight import preflight, summary

    spec = start_spec(c.settings, **body.model_dump(exclude={"allow_missing"}))
    findings = preflight(c.rulebook, c.source, spec, c.clock.now()) or []
    blocking = [f for f in findings if f.blocking]
    if blocking and not body.allow_missing:
        logger.warning("rollout of {} refused by the preflight: {}", spec.service, summary(findings))
        return JSONResponse(status_code=422, content={"error": "missing_metrics", "detail": [
            {"field": f"{f.signal} ({f.arm})", "message": f"{f.detail} [read by {', '.join(f.checks)}]"}
            for f in blocking] + [{"field": "allow_missing", "message": "fix the metrics (`guardian doctor "
                                   f"{spec.service}` shows every signal), or start with allow_missing (--allow-"
                                   "missing): it then starts paused until the data comes"}]})
    state = c.guard.start(spec)
    if blocking:
        with contextlib.suppress(RolloutConflict, ActuatorError):
            c.guard.override(state.id, Action.PAUSE, f"started paused: signals with no data: {summary(findings)}",
                             source="guardian")
    return rollout_view(c, state.id)


@router.get("/v1/services/{service}/doctor")
def doctor(service: str, c: Deps, window: float = Query(60.0, gt=0, le=3600, description="seconds of values read"),
           canary: str | None = Query(None, description="the canary's arm label value, where the rule file's "
                                                       "follows the release ({version} …)"),
           baseline: str | None = Query(None, description="the baseline's, likewise")) -> dict[str, Any]:
    """Every signal the service's policy reads, for both arms: whether the source has data for it and, when not,
    why (no series with that service label, no arm label, a histogram without the objective's bucket …)."""
    from guardian.engine.preflight import checkup

    if not _SERVICE.match(service):
        raise HTTPException(422, "service must be 1-253 letters, digits, '.', '_' or '-'")
    try:
        return checkup(c.rulebook, c.source, service, c.clock.now(), window=window,
                       arm_values={k: v for k, v in (("canary", canary), ("baseline", baseline)) if v})
    except TypeError as e:
        raise HTTPException(409, f"this guardian's metric source cannot be examined: {e}") from None


@router.get("/v1/rollouts")
def list_rollouts(c: Deps,
                  active: Annotated[bool, Query(description="only rollouts in flight (progressing or paused)")] = False,
                  service: Annotated[str | None, Query(description="only this service's rollouts")] = None,
                  phase: Annotated[Phase | None, Query(description="only rollouts in this phase")] = None,
                  ) -> list[dict[str, Any]]:
    """Every rollout the guardian knows, oldest first, optionally filtered by service and phase."""
    return [s.to_dict() for s in c.store.list(active_only=active)
            if (service is None or s.service == service) and (phase is None or s.phase is phase)]


@router.get("/v1/rollouts/{rollout_id}")
def get_rollout(rollout_id: str, c: Deps) -> dict[str, Any]:
    return rollout_view(c, rollout_id)


@router.get("/v1/rollouts/{rollout_id}/explain")
def explain_rollout(rollout_id: str, c: Deps) -> dict[str, Any]:
    """Why the rollout is where it is: every decision in plain words, with the checks that drove it
    (value, threshold, sample size, statistic), what the actuator did, and the canary's log templates."""
    from guardian.explain import explain

    return explain(c.store.get(rollout_id).to_dict(), c.store.decisions(rollout_id))


@router.get("/v1/rollouts/{rollout_id}/ticks")
def get_ticks(rollout_id: str, c: Deps) -> list[dict[str, Any]]:
    c.store.get(rollout_id)
    return c.store.ticks(rollout_id)


@router.get("/v1/rollouts/{rollout_id}/recording")
def get_recording(rollout_id: str, c: Deps) -> dict[str, Any]:
    return c.store.recording(rollout_id)


def _override_route(action: Action):
    def override(rollout_id: str, c: Deps) -> dict[str, Any]:
        c.guard.override(rollout_id, action)
        return rollout_view(c, rollout_id)

    return override


_OVERRIDES = {
    Action.PAUSE: "Hold the rollout where it is: the guardian keeps watching but does not act until resumed.",
    Action.RESUME: "Resume a paused rollout; the current step's analysis starts again.",
    Action.PROMOTE: "Make the new version stable now, skipping the remaining steps.",
    Action.ROLLBACK: "Send all traffic back to the stable version now.",
}
for _action, _doc in _OVERRIDES.items():
    router.add_api_route(
        f"/v1/rollouts/{{rollout_id}}/{_action.value}", _override_route(_action), methods=["POST"],
        dependencies=Mutating, summary=f"{_action.value.capitalize()} a rollout", description=_doc
        + " 409 when the rollout's phase does not allow it; 502 when the actuator failed (nothing changed).",
    )


@router.post("/v1/rules/reload", dependencies=Mutating)
def reload_rules(c: Deps, response: Response) -> dict[str, Any]:
    problems = c.rulebook.reload()
    if problems:
        response.status_code = 422
        return {"error": "invalid_rules", "detail": [str(p) for p in problems],
                "kept": sorted(c.rulebook.services())}
    return {"services": sorted(c.rulebook.services())}


@router.get("/v1/rules")
def get_rules(c: Deps) -> dict[str, Any]:
    return {
        name: {"source": rs.source, "checks": [ch.model_dump(by_alias=True) for ch in rs.rules.checks]}
        for name, rs in c.rulebook.services().items()
    } | {"last_reload_problems": [str(p) for p in c.rulebook.last_problems]}


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
    now = time.time()
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


@router.get("/v1/alerts")
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


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/v1/status")
def status(c: Deps) -> dict[str, Any]:
    """This replica: its lease holder id, the lease time and the rollouts it holds (id -> fencing token)."""
    leases = c.leases
    return {"replica": leases.holder if leases else None, "store": type(c.store).__name__,
            "lease_seconds": c.settings.lease_seconds if leases and leases.lease_seconds != float("inf") else None,
            "leases": leases.held() if leases else {}}


@router.get("/readyz")
def readyz(c: Deps, response: Response) -> dict[str, Any]:
    try:
        store_ok = c.store.ping()
    except Exception:  # noqa: BLE001
        store_ok = False
    ping = getattr(c.source, "ping", None)
    source_ok = bool(ping()) if callable(ping) else True
    if not store_ok:
        response.status_code = 503
    return {"status": "ready" if store_ok else "not ready", "store": store_ok, "metrics_source": source_ok}


@router.get("/metrics")
def metrics(c: Deps) -> Response:
    return Response(generate_latest(c.metrics.registry), media_type=CONTENT_TYPE_LATEST)

