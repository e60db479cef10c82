"""HTTP API (SPEC section 2). Handlers are plain `def`: they run in the thread pool, because the
store and the actuators block."""
from __future__ import annotations

import hmac
import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, field_validator

from guardian.actuators import registry
from guardian.api.app import Components
from guardian.domain import Action, Phase, Strategy
from guardian.engine.guard import start_spec

router = APIRouter()
_SERVICE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,252}$")


def components(request: Request) -> Components:
    return request.app.state.components


Deps = Annotated[Components, Depends(components)]


def require_token(c: Deps, authorization: Annotated[str | None, Header()] = None) -> None:
    token = c.settings.token
    if token is None:
        return
    expected = f"Bearer {token.get_secret_value()}".encode()
    if not authorization or not hmac.compare_digest(authorization.encode(), expected):
        raise HTTPException(401, "a valid 'Authorization: Bearer <token>' header is required")


Mutating = [Depends(require_token)]


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
        max(0.0, state.analysis_seconds - (now - state.step_started_at)) if state.phase is Phase.PROGRESSING else None
    )
    view["next_tick_at"] = (state.tick_bounds(state.last_tick + 1)[1] + c.settings.evaluation_delay
                            if not state.phase.terminal else None)
    view["latest_tick"] = latest
    view["verdicts"] = latest["verdicts"] if latest else []
    view["decisions"] = c.store.decisions(rollout_id)
    return view


@router.post("/v1/rollouts", status_code=201, dependencies=Mutating)
def start_rollout(body: StartRollout, c: Deps) -> dict[str, Any]:
    state = c.guard.start(start_spec(c.settings, **body.model_dump()))
    return rollout_view(c, state.id)


@router.get("/v1/rollouts")
def list_rollouts(c: Deps, active: bool = False) -> list[dict[str, Any]]:
    return [s.to_dict() for s in c.store.list(active_only=active)]


@router.get("/v1/rollouts/{rollout_id}")
def get_rollout(rollout_id: str, c: Deps) -> dict[str, Any]:
    return rollout_view(c, rollout_id)


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


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


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

