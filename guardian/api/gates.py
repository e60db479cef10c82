"""Gates: the guardian's canary judgement for the progressive-delivery tools people already run.

    POST /v1/gates/flagger/{hook}     a Flagger webhook (analysis.webhooks[].url); hook is its type
    GET|POST /v1/gates/argo/{service} an Argo Rollouts `web` metric provider (AnalysisTemplate)

Both judge through a rollout in the store: the first gate call for a service (and revision: Flagger's
`checksum`, Argo's `revision` argument) starts an `observe` rollout with target `noop://gate` (the
guardian acts on nothing: Flagger or Argo move the traffic), judged tick by tick like any other; later
calls read its latest verdicts. A service that already has an active rollout of its own (a user's, the
Kubernetes watcher's) is judged through that one instead. A gate rollout of an older revision is ended
(rolled back on the guardian's side: "superseded") when a new revision calls.

The verdict: `fail` when the rollout was rolled back or a check fails; `pass` when it was promoted or
every check of its latest tick passes; else `inconclusive` (no tick judged yet, too little data, the
source down) — never a pass. The response body (both gates):
`{"verdict", "value", "threshold", "samples", "statistic", "reason", "check", "rollout", "phase", "checks": [...]}`.

Flagger (its documentation: a POST of `{"name", "namespace", "phase", "checksum", "metadata": {...}}`;
2xx lets the canary go on, any other status halts it and, for `rollout` hooks, counts a failed check;
a `rollback` hook that answers 2xx makes Flagger roll back):
- confirm-rollout, pre-rollout: start judging (the rollout above); 200.
- rollout (counts failed checks toward Flagger's `threshold`): 412 on `fail` only; 200 on `pass` and on
  `inconclusive`, so missing data never counts as a failure (nor as a pass: see the next line).
- confirm-traffic-increase, confirm-promotion (hold the canary without counting a failure): 200 on `pass`;
  412 otherwise (fail or inconclusive), so the weight never grows and nothing is promoted on missing data.
- rollback: 200 on `fail` (roll back now); 412 otherwise.
- post-rollout: ends the gate rollout (promoted on phase Succeeded, rolled back otherwise); 200.
- event: 200, nothing else.
Flagger sends no headers of its own: its token may come as `metadata.token`.

Argo Rollouts (its `web` provider: the JSON body is `result`, or the `jsonPath` part of it): always
200 with the body above, so `successCondition: result.verdict == "pass"` and `failureCondition:
result.verdict == "fail"` leave `inconclusive` to Argo's Inconclusive (which pauses the Rollout).

Auth: `Authorization: Bearer <gate_token>` (or Flagger's `metadata.token`); without a gate token, the
operator token; with neither configured, open (loopback only: settings refuse otherwise).
"""
from __future__ import annotations

import contextlib
import hmac
import re
import threading
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, HTTPException, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from guardian.api.routes import Deps
from guardian.domain import Action, Phase, RolloutState, Strategy
from guardian.engine.guard import start_spec
from guardian.errors import ActuatorError, RolloutConflict

router = APIRouter(prefix="/v1/gates", tags=["gates"])
GATE_TARGET = "noop://gate"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,252}$")
_REVISION = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")
_lock = threading.Lock()
FLAGGER_HOOKS = ("confirm-rollout", "pre-rollout", "rollout", "confirm-traffic-increase", "confirm-promotion",
                 "post-rollout", "rollback", "event")


def _authorize(c: Any, authorization: str | None, token: str | None = None) -> None:
    s = c.settings
    secret = s.gate_token or s.token
    if secret is None:
        return
    expected = secret.get_secret_value()
    given = [(authorization or "").encode(), f"Bearer {token}".encode() if token else b""]
    if not any(hmac.compare_digest(g, f"Bearer {expected}".encode()) for g in given):
        raise HTTPException(401, "the gate token is required: 'Authorization: Bearer <token>' (or, from Flagger, "
                                 "metadata.token)")


def _check(what: str, value: str, pattern: re.Pattern[str]) -> str:
    if not pattern.match(value):
        raise HTTPException(422, f"{what} {value!r} must be letters, digits, '.', '_' or '-'")
    return value


def gate_rollout(c: Any, service: str, revision: str, previous: str | None = None) -> RolloutState:
    """The rollout that judges `service` at `revision`: its active one, else the newest gate rollout of that
    revision, else a new observe rollout (target noop://gate)."""
    image = f"{service}:{revision}"
    with _lock:
        for _ in range(3):
            states = sorted((s for s in c.store.list() if s.service == service), key=lambda s: s.created_at,
                            reverse=True)
            active = next((s for s in states if not s.phase.terminal), None)
            if active is not None and active.target == GATE_TARGET and active.image != image:
                with contextlib.suppress(RolloutConflict, ActuatorError):
                    c.guard.override(active.id, Action.ROLLBACK, f"gate: superseded by revision {revision}")
                continue
            if active is not None:
                return active
            done = next((s for s in states if s.target == GATE_TARGET and s.image == image), None)
            if done is not None:
                return done
            spec = start_spec(c.settings, service=service, image=image, strategy=Strategy.OBSERVE, steps=(100,),
                              target=GATE_TARGET, previous_image=f"{service}:{previous}" if previous else None,
                              reason=f"gate: judging {service} at revision {revision}", source="gate")
            try:
                return c.guard.start(spec)
            except RolloutConflict:
                continue
    raise HTTPException(409, f"no rollout of {service} could be found or started")


def verdict_of(state: RolloutState, latest: dict[str, Any] | None) -> dict[str, Any]:
    """The gate's answer from a rollout and its latest tick (pure)."""
    verdicts = list((latest or {}).get("verdicts") or [])
    checks = [{"check": v["check"], "result": v["result"], "value": v.get("value"), "threshold": v.get("threshold"),
               "samples": v.get("sample_size"), "statistic": v.get("statistic"), "reason": v.get("reason")}
              for v in verdicts]
    failing = [v for v in checks if v["result"] == "fail"]
    open_ = [v for v in checks if v["result"] != "pass"]
    if state.phase is Phase.ROLLED_BACK:
        verdict, chosen, reason = "fail", (failing or [None])[0], state.reason or "rolled back"
    elif state.phase is Phase.PROMOTED:
        verdict, chosen, reason = "pass", (checks or [None])[0], state.reason or "promoted: every check passed"
    elif failing:
        verdict, chosen, reason = "fail", failing[0], failing[0]["reason"]
    elif not checks:
        verdict, chosen, reason = "inconclusive", None, "no tick judged yet: the guardian is gathering evidence"
    elif open_:
        verdict, chosen, reason = "inconclusive", open_[0], open_[0]["reason"]
    else:
        verdict, chosen, reason = "pass", checks[0], "every check passes"
    chosen = chosen or {}
    return {"verdict": verdict, "value": chosen.get("value"), "threshold": chosen.get("threshold"),
            "samples": chosen.get("samples"), "statistic": chosen.get("statistic"), "reason": reason,
            "check": chosen.get("check"), "rollout": state.id, "phase": state.phase.value,
            "tick": (latest or {}).get("tick"), "checks": checks}


def judge(c: Any, service: str, revision: str, previous: str | None = None) -> dict[str, Any]:
    state = gate_rollout(c, service, revision, previous)
    return verdict_of(c.store.get(state.id), c.store.latest_tick(state.id))


class FlaggerPayload(BaseModel):
    """Flagger's webhook body (CanaryWebhookPayload)."""

    model_config = ConfigDict(extra="allow")

    name: str
    namespace: str
    phase: str = ""
    checksum: str = ""
    metadata: dict[str, str] = {}


@router.post("/flagger/{hook}", summary="A Flagger webhook (any analysis.webhooks type)")
def flagger(hook: str, body: FlaggerPayload, c: Deps,
            authorization: Annotated[str | None, Header()] = None) -> JSONResponse:
    _authorize(c, authorization, body.metadata.get("token"))
    if hook not in FLAGGER_HOOKS:
        raise HTTPException(404, f"unknown Flagger hook {hook!r}; known: {', '.join(FLAGGER_HOOKS)}")
    if hook == "event":
        return JSONResponse({"hook": hook, "received": True})
    service = _check("service", body.metadata.get("service") or body.name, _NAME)
    revision = _check("checksum", body.checksum or "unknown", _REVISION)
    if hook == "post-rollout":
        ended = None
        state = gate_rollout(c, service, revision)
        if state.target == GATE_TARGET and not state.phase.terminal:
            action = Action.PROMOTE if body.phase == "Succeeded" else Action.ROLLBACK
            with contextlib.suppress(RolloutConflict, ActuatorError):
                ended = c.guard.override(state.id, action, f"Flagger: canary {body.namespace}/{body.name} "
                                                            f"{body.phase or 'ended'}").phase.value
        return JSONResponse({"hook": hook, "rollout": state.id, "ended": ended})
    answer = judge(c, service, revision) | {"hook": hook}
    if hook in ("confirm-rollout", "pre-rollout"):
        return JSONResponse(answer)
    if hook == "rollback":
        ok = answer["verdict"] == "fail"
    elif hook == "rollout":
        ok = answer["verdict"] != "fail"
    else:
        ok = answer["verdict"] == "pass"
    return JSONResponse(answer, status_code=200 if ok else 412)


class ArgoQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    revision: str | None = None
    previous: str | None = None


@router.get("/argo/{service}", operation_id="argo_gate_get",
            summary="An Argo Rollouts web metric: the guardian's verdict as JSON")
@router.post("/argo/{service}", operation_id="argo_gate_post",
             summary="An Argo Rollouts web metric (jsonBody form): the guardian's verdict as JSON")
def argo(service: str, c: Deps, authorization: Annotated[str | None, Header()] = None,
         revision: str | None = Query(None, description="the canary's revision, e.g. its pod-template-hash"),
         previous: str | None = Query(None, description="the stable revision it replaces"),
         body: Annotated[ArgoQuery | None, Body()] = None) -> dict[str, Any]:
    _authorize(c, authorization)
    _check("service", service, _NAME)
    revision = revision or (body.revision if body else None) or "unknown"
    previous = previous or (body.previous if body else None)
    _check("revision", revision, _REVISION)
    if previous:
        _check("previous", previous, _REVISION)
    return judge(c, service, revision, previous)


__all__ = ["FLAGGER_HOOKS", "GATE_TARGET", "gate_rollout", "router", "verdict_of"]
