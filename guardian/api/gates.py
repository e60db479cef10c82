"""Gates: the guardian's canary judgement for the progressive-delivery tools people already run.

    POST /v1/gates/flagger/{hook}         a Flagger webhook (analysis.webhooks[].url); hook is its type
    GET|POST|PUT /v1/gates/argo/{service} an Argo Rollouts `web` metric provider (AnalysisTemplate)

Both judge through a rollout in the store: the first judging call for a service and revision (Flagger's
`checksum`, Argo's `revision` argument) starts an `observe` rollout with target `noop://gate` (Flagger or
Argo move the traffic), judged tick by tick like any other; every call answers from its latest tick. A
service that already has an active rollout of its own (a user's, the Kubernetes watcher's) is judged
through that one instead.

A gate's rollout is open-ended (domain.OPEN_ENDED_ANALYSIS): passing checks never promote it, so a canary
that turns bad after any amount of passing time fails the next call. It ends on Flagger's `post-rollout`
(promoted on Succeeded), on a call naming a new revision, or after `gate_idle_seconds` without a call — the
last two by its last verdict. A revision the guardian failed stays failed; any other ended revision called
again is judged afresh.

The verdict: `fail` (rolled back by the guardian's judgement, or a check fails), `pass` (every check of
the latest tick passes, or closed as promoted), else `inconclusive` — never a pass on missing data. The
body: `{"verdict", "value", "threshold", "samples", "statistic", "reason", "check", "rollout", "phase",
"checks": [...]}`. Flagger's hooks answer 200 or 412 (a status above 202 is a refusal), each as Flagger
counts it (confirm-rollout judges nothing; rollout refuses on `fail` only; confirm-traffic-increase lets a
revision's first step through once, then needs a pass; confirm-promotion needs a pass; rollback accepts on
`fail`); Argo's metric is always 200, its conditions reading the verdict. Hook by hook, with the places in
Flagger's and Argo's source they follow: docs/kubernetes.md ("Gates").

Auth (deps.require_gate): `Authorization: Bearer <gate_token>` (or Flagger's `metadata.token`); without a
gate token, the operator token; with neither configured, open (loopback only: settings refuse otherwise).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from loguru import logger
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool

from guardian.api.commands import command
from guardian.api.components import Components
from guardian.api.deps import Deps, require_gate
from guardian.domain import OPEN_ENDED_ANALYSIS, Action, Decision, Phase, RolloutState, Strategy
from guardian.engine.start import start_spec
from guardian.errors import ActuatorError, LeaseLost, RolloutConflict

router = APIRouter(prefix="/v1/gates", tags=["gates"])
GATE_TARGET = "noop://gate"
CALLED, STEPPED = "gate_call", "gate_traffic_step"  # store marks: the client's last call; a step it was let take
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,252}$")
_REVISION = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")
_lock = threading.Lock()
_ENDING = (RolloutConflict, ActuatorError, LeaseLost)  # another replica holds it, or it ended meanwhile
FLAGGER_HOOKS = ("confirm-rollout", "pre-rollout", "rollout", "confirm-traffic-increase", "confirm-promotion",
                 "post-rollout", "rollback", "event")
FIRST_STEP = ("gate: Flagger's first traffic step let through with no verdict yet: it asks at weight 0, before "
              "the canary has had any traffic, so there is nothing to judge; every later step needs a pass")


def _check(what: str, value: str, pattern: re.Pattern[str]) -> str:
    if not pattern.match(value):
        raise HTTPException(422, f"{what} {value!r} must be letters, digits, '.', '_' or '-'")
    return value


# -- the gate's rollout ------------------------------------------------------------------------------------
def failed_by_judgement(c: Components, state: RolloutState) -> bool:
    """Was this rollout rolled back by the guardian's own judgement (a failing check or alert)?"""
    if state.phase is not Phase.ROLLED_BACK:
        return False
    ended = next((d for d in reversed(c.store.decisions(state.id)) if d["action"] == Action.ROLLBACK.value), None)
    return ended is not None and ended.get("source") in ("guardian", "alertmanager")


def close(c: Components, state: RolloutState, why: str) -> None:
    """End a gate's rollout that its client no longer follows, by its last verdict: promoted if it passed,
    else rolled back. Nothing if it ended meanwhile or another replica holds it (that one closes it)."""
    last = verdict_of(state, c.store.latest_tick(state.id))["verdict"]
    action = Action.PROMOTE if last == "pass" else Action.ROLLBACK
    with contextlib.suppress(*_ENDING):
        c.guard.override(state.id, action, f"gate: {why}; closed by its last verdict ({last})", source="gate")


def gate_rollout(c: Components, service: str, revision: str, previous: str | None = None, *,
                 start: bool = True) -> RolloutState | None:
    """The rollout that judges `service` at `revision`: its active one; else the gate rollout that failed this
    revision (its verdict stands); else a new open-ended observe rollout (target noop://gate), or None when
    `start` is false. An active gate rollout of another revision is closed first (superseded)."""
    image = f"{service}:{revision}"
    with _lock:
        for _ in range(3):
            states = sorted((s for s in c.store.list() if s.service == service), key=lambda s: s.created_at,
                            reverse=True)
            active = next((s for s in states if not s.phase.terminal and s.strategy is not Strategy.WATCH), None)
            if active is not None and active.target == GATE_TARGET and active.image != image:
                close(c, active, f"superseded by revision {revision}")
                continue
            if active is not None:
                return active
            mine = next((s for s in states if s.target == GATE_TARGET and s.image == image), None)
            if mine is not None and failed_by_judgement(c, mine):
                return mine
            if not start:
                return None
            spec = start_spec(c.settings, service=service, image=image, strategy=Strategy.OBSERVE, steps=(100,),
                              target=GATE_TARGET, previous_image=f"{service}:{previous}" if previous else None,
                              analysis_seconds=OPEN_ENDED_ANALYSIS,
                              reason=f"gate: judging {service} at revision {revision}", source="gate")
            try:
                return c.guard.start(spec)
            except RolloutConflict:
                continue
    raise HTTPException(409, f"no rollout of {service} could be found or started")


def close_idle(c: Components) -> list[str]:
    """Close the gate rollouts whose client has not called for `gate_idle_seconds`; their ids."""
    now, idle = c.clock.now(), c.settings.gate_idle_seconds
    closed = []
    for state in c.store.list(active_only=True):
        if state.target != GATE_TARGET:
            continue
        last = c.store.marked(state.id, CALLED) or state.created_at
        if now - last > idle:
            close(c, state, f"no call from its client for {now - last:.0f}s (gate_idle_seconds {idle:g})")
            closed.append(state.id)
    return closed


async def sweep_idle(c: Components) -> None:
    """`close_idle` every quarter of `gate_idle_seconds` (at most every 30 s), for as long as the app runs."""
    every = min(30.0, c.settings.gate_idle_seconds / 4)
    while True:
        await asyncio.sleep(every)
        try:
            await run_in_threadpool(close_idle, c)
        except Exception as e:  # noqa: BLE001 - a store hiccup: the next sweep tries again
            logger.warning("closing idle gate rollouts failed: {}", e)


def stale(state: RolloutState, latest: dict[str, Any] | None, now: float | None) -> float | None:
    """How old the latest judged tick is, when it is too old to answer from (more than three ticks and 5 s
    behind: the guardian fell behind or was down); None when it is fresh, or nothing is in flight."""
    if now is None or latest is None or state.phase.terminal or latest.get("at") is None:
        return None
    age = now - float(latest["at"])
    return age if age > 3 * state.step_seconds + 5.0 else None


def verdict_of(state: RolloutState, latest: dict[str, Any] | None, now: float | None = None) -> dict[str, Any]:
    """The gate's answer from a rollout and its latest tick (pure; `now` given: a stale tick passes nothing)."""
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
    elif (age := stale(state, latest, now)) is not None:
        verdict, chosen, reason = "inconclusive", checks[0], (
            f"the latest judged tick is {age:.0f}s old (a tick every {state.step_seconds:g}s): the guardian is "
            "behind or was down, so its last pass is no evidence now")
    else:
        verdict, chosen, reason = "pass", checks[0], "every check passes"
    chosen = chosen or {}
    return {"verdict": verdict, "value": chosen.get("value"), "threshold": chosen.get("threshold"),
            "samples": chosen.get("samples"), "statistic": chosen.get("statistic"), "reason": reason,
            "check": chosen.get("check"), "rollout": state.id, "phase": state.phase.value,
            "tick": (latest or {}).get("tick"), "checks": checks}


def judge(c: Components, service: str, revision: str, previous: str | None = None) -> dict[str, Any]:
    """A judging call: the verdict of the rollout judging `service` at `revision`, as of its latest tick."""
    close_idle(c)
    state = gate_rollout(c, service, revision, previous)
    assert state is not None
    if not state.phase.terminal:
        c.store.mark(state.id, CALLED, c.clock.now())
    return verdict_of(c.store.get(state.id), c.store.latest_tick(state.id), c.clock.now())


# -- Flagger ----------------------------------------------------------------------------------------------
class FlaggerPayload(BaseModel):
    """Flagger's webhook body (CanaryWebhookPayload)."""

    model_config = ConfigDict(extra="allow")

    name: str
    namespace: str
    phase: str = ""
    checksum: str = ""
    metadata: dict[str, str] = {}


def _confirm_rollout(c: Components, service: str) -> JSONResponse:
    """Before the canary starts: held only by a release freeze (a critical alert firing for the service)."""
    frozen = c.guard.alerts.freezing(service)
    if frozen:
        names = ", ".join(a.name for a in frozen)
        return JSONResponse({"hook": "confirm-rollout", "approved": False,
                             "reason": f"release freeze: critical alert(s) firing for {service}: {names}"}, 412)
    return JSONResponse({"hook": "confirm-rollout", "approved": True,
                         "reason": f"no release freeze for {service}; judging starts with the new revision's "
                                   "first call (pre-rollout)"})


def _post_rollout(c: Components, service: str, revision: str, body: FlaggerPayload) -> JSONResponse:
    """Flagger says how the canary ended: its gate rollout ends the same way (never one started here)."""
    ended = None
    state = gate_rollout(c, service, revision, start=False)
    if state is not None and state.target == GATE_TARGET and not state.phase.terminal:
        action = Action.PROMOTE if body.phase == "Succeeded" else Action.ROLLBACK
        with contextlib.suppress(*_ENDING):  # another replica holds it: filed for that one (api/commands.py)
            done = command(c, state.id, action, f"Flagger: canary {body.namespace}/{body.name} "
                                                f"{body.phase or 'ended'}", source="flagger")
            ended = done.phase.value if isinstance(done, RolloutState) else f"{action.value} filed as intent {done.id}"
    return JSONResponse({"hook": "post-rollout", "rollout": state.id if state else None, "ended": ended})


def _traffic_increase(c: Components, answer: dict[str, Any]) -> bool:
    """A pass lets the weight grow; so does an inconclusive verdict, once, before any step was taken."""
    rid, now = answer["rollout"], c.clock.now()
    if answer["verdict"] == "pass":
        c.store.mark(rid, STEPPED, now, once=True)
        return True
    if answer["verdict"] != "inconclusive" or answer["phase"] not in ("progressing", "paused"):
        return False
    if not c.store.mark(rid, STEPPED, now, once=True):
        return False
    answer["reason"] = f"{FIRST_STEP} ({answer['reason']})"
    with contextlib.suppress(*_ENDING):  # the explanation; the mark above is what counts
        c.store.log_decision(rid, Decision(Action.NOTIFY, FIRST_STEP, at=now, source="flagger"), None, now)
    return True


@router.post("/flagger/{hook}", summary="A Flagger webhook (any analysis.webhooks type)")
def flagger(hook: str, body: FlaggerPayload, c: Deps,
            authorization: Annotated[str | None, Header()] = None) -> JSONResponse:
    if hook == "event":  # Flagger's global event webhook carries no token; an event changes nothing
        return JSONResponse({"hook": hook, "received": True})
    require_gate(c, authorization, body.metadata.get("token"))
    if hook not in FLAGGER_HOOKS:
        raise HTTPException(404, f"unknown Flagger hook {hook!r}; known: {', '.join(FLAGGER_HOOKS)}")
    service = _check("service", body.metadata.get("service") or body.name, _NAME)
    if hook == "confirm-rollout":
        return _confirm_rollout(c, service)
    revision = _check("checksum", body.checksum or "unknown", _REVISION)
    if hook == "post-rollout":
        return _post_rollout(c, service, revision, body)
    answer = judge(c, service, revision) | {"hook": hook}
    verdict = answer["verdict"]
    if hook in ("pre-rollout", "rollout"):
        ok = verdict != "fail"
    elif hook == "rollback":
        ok = verdict == "fail"
    elif hook == "confirm-traffic-increase":
        ok = _traffic_increase(c, answer)
    else:  # confirm-promotion
        ok = verdict == "pass"
    return JSONResponse(answer, status_code=200 if ok else 412)


# -- Argo Rollouts ----------------------------------------------------------------------------------------
class ArgoQuery(BaseModel):
    """The body Argo may send (`jsonBody:`, or `body:` as a JSON string): the same keys as the query."""

    model_config = ConfigDict(extra="ignore")

    revision: str | None = None
    previous: str | None = None


_ARGO_BODY = {"requestBody": {"required": False, "description": "optional: the revisions as a JSON object, sent "
                              "with any Content-Type or none (Argo's `body:` has none)",
                              "content": {"application/json": {"schema": ArgoQuery.model_json_schema()}}}}


def argo_body(raw: bytes) -> ArgoQuery:
    """The revisions in Argo's body (empty: none), whatever the Content-Type; 422 naming what is wrong."""
    if not raw.strip():
        return ArgoQuery()
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise HTTPException(422, 'the body must be a JSON object such as {"revision": "6c9bd8675b", "previous": '
                                 '"5f7d9c4b8"} (Argo\'s body: or jsonBody:), or empty') from None
    if not isinstance(data, dict):
        raise HTTPException(422, f"the body must be a JSON object, not {type(data).__name__}")
    for key in ("revision", "previous"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise HTTPException(422, f"body field {key!r} must be a string")
    return ArgoQuery.model_validate(data)


async def argo(service: str, request: Request, c: Deps, authorization: Annotated[str | None, Header()] = None,
               revision: str | None = Query(None, description="the canary's revision, e.g. its pod-template-hash"),
               previous: str | None = Query(None, description="the stable revision it replaces"),
               ) -> dict[str, Any]:
    require_gate(c, authorization)
    _check("service", service, _NAME)
    body = argo_body(await request.body()) if request.method != "GET" else ArgoQuery()
    revision = revision or body.revision or "unknown"
    previous = previous or body.previous
    _check("revision", revision, _REVISION)
    if previous:
        _check("previous", previous, _REVISION)
    return await run_in_threadpool(judge, c, service, revision, previous)


for _method in ("GET", "POST", "PUT"):  # the methods Argo's web provider allows; one OpenAPI operation each
    router.add_api_route("/argo/{service}", argo, methods=[_method], operation_id=f"argo_gate_{_method.lower()}",
                         summary=f"An Argo Rollouts web metric ({_method}): the guardian's verdict as JSON",
                         openapi_extra=None if _method == "GET" else _ARGO_BODY)


__all__ = ["CALLED", "FLAGGER_HOOKS", "GATE_TARGET", "argo_body", "close", "close_idle", "gate_rollout", "router",
           "stale", "sweep_idle", "verdict_of"]
