"""/v1/rollouts: start one (after a preflight of its metrics), list, read, explain, steer; and
/v1/services/{service}/doctor, the same check of a service's metrics on its own. Handlers are plain `def`:
they run in the thread pool, because the store and the actuators block; only GET /v1/intents/{id}, which can
wait a minute, is `async` (its store reads go to two threads of its own, INTENT_READS, so followers never queue
the scheduler's work on the event loop's default pool; its waits hold no thread)."""
from __future__ import annotations

import asyncio
import contextlib
import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import JSONResponse
from loguru import logger
from pydantic import BaseModel, ConfigDict, Field, field_validator

from guardian.actuators import registry
from guardian.api.commands import accepted, command, start_or_file
from guardian.api.components import Components
from guardian.api.deps import Deps, Mutating, Operator, Reading
from guardian.api.identity import UNNAMED
from guardian.domain import Action, Phase, Strategy, split_steps
from guardian.engine.intents import HoldsIntents, Intent
from guardian.engine.start import start_spec
from guardian.errors import ActuatorError, RolloutConflict

router = APIRouter()

# A promotion replaces the baseline's targets: the old ones' series go stale at once, the promoted ones show up
# under the baseline's label only at their next scrape. A start in that gap finds the arm's label value absent
# while the label has others: the preflight asks again for a few seconds before refusing it (only for that).
PREFLIGHT_SETTLE_SECONDS, PREFLIGHT_POLL_SECONDS = 10.0, 1.0
_ARM_VALUE_ABSENT = re.compile(r'series has \S+="[^"]*" \(the (canary|baseline)\); its ')


def _settling(findings: list) -> bool:
    """Are the blocking findings all an arm's label value absent while its label has other values?"""
    blocking = [f for f in findings if f.blocking]
    return bool(blocking) and all(_ARM_VALUE_ABSENT.search(f.detail) for f in blocking)
_SERVICE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,252}$")


class StartRollout(BaseModel):
    model_config = ConfigDict(extra="forbid")

    service: str = Field(description="the service to roll out (letters, digits, . _ -)")
    image: str = Field(min_length=1, max_length=512, description="the new version's image")
    strategy: Strategy = Strategy.CANARY
    steps: list[int | str] | None = Field(None, description=(
        "canary traffic percentages, rising, e.g. [10, 25, 50, 100]; `approve` after a step holds its end for a "
        "human \"go\" (POST /v1/rollouts/{id}/approve), e.g. [10, 25, \"approve\", 50, 100]"))
    target: str | None = Field(None, description=(
        "actuator URI: noop, webhook+http://host:port/path, docker:?options, nginx:/path/upstream.conf?options, "
        "swarm:SERVICE"))
    step_seconds: float | None = Field(None, ge=0.5, le=3600, description="tick length (default from settings)")
    analysis_seconds: float | None = Field(None, ge=0, le=86400, description="how long each step must pass")
    bake_seconds: float | None = Field(None, ge=0, le=7 * 86400, description=(
        "after the last step, this many seconds at 100% with the previous version kept warm, still judged, "
        "before the rollout is promoted (default: the rule file's `bake`, 0 when it has none)"))
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

    @field_validator("strategy")
    @classmethod
    def _not_a_watch(cls, v: Strategy) -> Strategy:
        if v is Strategy.WATCH:
            raise ValueError("a watch is not started through the API: it comes from a rule file's `watch:` section or "
                             "the watch_services setting, and runs whenever no rollout of the service is in flight "
                             "(docs/rules.md, \"Watch\")")
        return v

    @field_validator("steps")
    @classmethod
    def _steps(cls, v: list[int | str] | None) -> list[int | str] | None:
        if v is None:
            return v
        steps, _ = split_steps(v)
        if not steps or any(not 0 < s <= 100 for s in steps) or any(
                a >= b for a, b in zip(steps, steps[1:], strict=False)):
            raise ValueError("steps must be strictly rising percentages in 1..100 (with `approve` after any of them)")
        return v

    def spec_fields(self) -> dict[str, Any]:
        """The fields `start_spec` takes: the traffic steps and, apart, the steps that wait for approval."""
        fields = self.model_dump(exclude={"allow_missing"})
        if self.steps is not None:
            fields["steps"], fields["approvals"] = split_steps(self.steps)
        return fields

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
    view["bake_left"] = (max(0.0, state.bake_seconds - state.baked_seconds)  # passing ticks still to bake
                         if state.baking else None)
    view["next_tick_at"] = (state.tick_bounds(state.last_tick + 1)[1] + c.settings.evaluation_delay
                            if not state.phase.terminal else None)
    view["latest_tick"] = latest
    view["verdicts"] = latest["verdicts"] if latest else []
    view["decisions"] = c.store.decisions(rollout_id)
    return view


@router.post("/v1/rollouts", status_code=201, dependencies=Mutating, responses={202: {
    "description": "the service's watch is held by another replica: the start is filed for it (`intent.starts` names "
                   "the rollout to come; follow `intent.links.intent`)"}})
def start_rollout(body: StartRollout, c: Deps) -> Any:
    """Start a rollout, after a preflight: a signal its policy needs that has no series at all (a label
    mismatch, a histogram without the objective's bucket …) refuses the start with 422 `missing_metrics`
    naming each and why (engine/preflight.py), unless `allow_missing`: then it starts paused. With several
    replicas, a start that must end the service's watch held by another replica is filed for that one: 202 with
    the intent, which names the rollout to come (`starts`)."""
    from guardian.engine.preflight import preflight, summary

    spec = start_spec(c.settings, **body.spec_fields())
    findings = preflight(c.rulebook, c.source, spec, c.clock.now()) or []
    waited = 0.0
    while not body.allow_missing and _settling(findings) and waited < PREFLIGHT_SETTLE_SECONDS:
        if not waited:
            logger.info("rollout of {}: an arm's series are not there yet ({}); asking again for up to {:g}s",
                        spec.service, summary(findings), PREFLIGHT_SETTLE_SECONDS)
        time.sleep(PREFLIGHT_POLL_SECONDS)
        waited += PREFLIGHT_POLL_SECONDS
        findings = preflight(c.rulebook, c.source, spec, c.clock.now()) or []
    blocking = [f for f in findings if f.blocking]
    if blocking and not body.allow_missing:
        logger.warning("rollout of {} refused by the preflight: {}", spec.service, summary(findings))
        return JSONResponse(status_code=422, content={"error": "missing_metrics", "detail": [
            {"field": f"{f.signal} ({f.arm})", "message": f"{f.detail} [read by {', '.join(f.checks)}]"}
            for f in blocking] + [{"field": "allow_missing", "message": "fix the metrics (`guardian doctor "
                                   f"{spec.service}` shows every signal), or start with allow_missing (--allow-"
                                   "missing): it then starts paused until the data comes"}]})
    pause = f"started paused: signals with no data: {summary(findings)}" if blocking else None
    started = start_or_file(c, spec, pause)
    if isinstance(started, Intent):
        return accepted(started)
    if pause:
        with contextlib.suppress(RolloutConflict, ActuatorError):
            c.guard.override(started.id, Action.PAUSE, pause, source="guardian")
    return rollout_view(c, started.id)


@router.get("/v1/services/{service}/doctor", dependencies=Reading)
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


@router.get("/v1/rollouts", dependencies=Reading)
def list_rollouts(c: Deps,
                  active: Annotated[bool, Query(description="only rollouts in flight (progressing or paused)")] = False,
                  service: Annotated[str | None, Query(description="only this service's rollouts")] = None,
                  phase: Annotated[Phase | None, Query(description="only rollouts in this phase")] = None,
                  ) -> list[dict[str, Any]]:
    """Every rollout the guardian knows, oldest first, optionally filtered by service and phase."""
    return [s.to_dict() for s in c.store.list(active_only=active)
            if (service is None or s.service == service) and (phase is None or s.phase is phase)]


@router.get("/v1/rollouts/{rollout_id}", dependencies=Reading)
def get_rollout(rollout_id: str, c: Deps) -> dict[str, Any]:
    return rollout_view(c, rollout_id)


@router.get("/v1/rollouts/{rollout_id}/explain", dependencies=Reading)
def explain_rollout(rollout_id: str, c: Deps) -> dict[str, Any]:
    """Why the rollout is where it is: every decision in plain words, with the checks that drove it
    (value, threshold, sample size, statistic), what the actuator did, and the canary's log templates."""
    from guardian.reporting.explain import explain

    return explain(c.store.get(rollout_id).to_dict(), c.store.decisions(rollout_id))


@router.get("/v1/rollouts/{rollout_id}/ticks", dependencies=Reading)
def get_ticks(rollout_id: str, c: Deps) -> list[dict[str, Any]]:
    c.store.get(rollout_id)
    return c.store.ticks(rollout_id)


@router.get("/v1/rollouts/{rollout_id}/recording", dependencies=Reading)
def get_recording(rollout_id: str, c: Deps) -> dict[str, Any]:
    return c.store.recording(rollout_id)


def _override_route(action: Action):
    def override(rollout_id: str, c: Deps, who: Operator) -> Any:
        done = command(c, rollout_id, action, by=None if who == UNNAMED else who)
        return accepted(done) if isinstance(done, Intent) else rollout_view(c, rollout_id)

    return override


INTENT_READS = ThreadPoolExecutor(2, thread_name_prefix="intent-reads")  # GET /v1/intents' reads, apart from
# asyncio.to_thread's default pool, which the scheduler's passes use (many followers must not delay a pass)


@router.get("/v1/intents/{intent_id}", dependencies=Reading)
async def get_intent(intent_id: int, c: Deps, wait: Annotated[float, Query(ge=0, le=60, description=(
        "wait up to this many seconds for it to be carried out (answers as soon as it is)"))] = 0.0) -> dict[str, Any]:
    """A command another replica received for a rollout this one holds (or the other way round), as filed when the
    command was answered 202: `pending`, `running`, then `done`, `refused` (the rollout's phase did not allow it:
    what a direct call answers 409) or `failed` (the actuator failed, nothing changed: 502), with `detail`, the
    replica that carried it out and when. 404 when there is no such intent (or this guardian keeps none: a single
    replica never files one)."""
    if not isinstance(c.store, HoldsIntents):
        raise HTTPException(404, f"no intent with id {intent_id}: this guardian runs alone and files none")
    deadline = time.monotonic() + wait  # waited on the event loop: many followers hold no worker thread
    loop = asyncio.get_running_loop()
    intent = await loop.run_in_executor(INTENT_READS, c.store.intent, intent_id)
    while not intent.finished and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        intent = await loop.run_in_executor(INTENT_READS, c.store.intent, intent_id)
    return intent.to_dict()


_OVERRIDES = {
    Action.APPROVE: "Approve a rollout that waits for a human \"go\" at a step (`approve` in its steps, or the rule "
                    "file's `approve_before: promote`): it goes on at its next tick if its checks still pass; "
                    "a rollout paused because its approval timed out goes on too (409 also when it is not waiting "
                    "for approval).",
    Action.PAUSE: "Hold the rollout where it is: the guardian keeps watching but does not act until resumed.",
    Action.RESUME: "Resume a paused rollout; the current step's analysis starts again.",
    Action.PROMOTE: "Make the new version stable now, skipping the remaining steps.",
    Action.ROLLBACK: "Send all traffic back to the stable version now.",
}
for _action, _doc in _OVERRIDES.items():
    router.add_api_route(
        f"/v1/rollouts/{{rollout_id}}/{_action.value}", _override_route(_action), methods=["POST"],
        summary=f"{_action.value.capitalize()} a rollout", description=_doc
        + " 409 when the rollout's phase does not allow it; 502 when the actuator failed (nothing changed). "
        "With several replicas, one that does not hold the rollout files the command for the one that does and "
        "answers 202 with the intent (Location: /v1/intents/{id}), carried out at the holder's next pass.",
        responses={202: {"description": "filed for the replica holding the rollout: follow `intent.links.intent`"}},
    )
