"""The web UI's routes (see __init__.py)."""
from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from loguru import logger

from guardian.api.alerts import list_alerts
from guardian.api.commands import command
from guardian.api.components import Components
from guardian.api.identity import caller_of_token
from guardian.api.ui.session import COOKIE, SESSION_SECONDS, Session, csrf_ok, issue, session_of
from guardian.api.ui.views import ACTIONS, list_row, rollout_data
from guardian.domain import Action, Phase, Strategy
from guardian.engine.intents import Intent
from guardian.errors import ActuatorError, RolloutConflict, RolloutNotFound

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
_env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(("html",)),
                   trim_blocks=True, lstrip_blocks=True)
# no inline script or style: everything the pages run comes from /ui/static
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")

router = APIRouter(include_in_schema=False)


def _c(request: Request) -> Components:
    return request.app.state.components


def _session(request: Request) -> Session | None:
    return session_of(_c(request).settings, request.cookies.get(COOKIE))


def _page(name: str, session: Session | None, status: int = 200, **context: Any) -> HTMLResponse:
    html = _env.get_template(name).render(session=session, **context)
    return HTMLResponse(html, status, headers={"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                                               "Referrer-Policy": "same-origin", "Cache-Control": "no-store"})


def _to_login(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse("/ui/login?" + urllib.parse.urlencode({"next": target}), 303)


def _safe_next(target: str | None) -> str:
    """Only a path of this UI (never another site: `//evil`, `https://…`)."""
    if target and target.startswith("/ui") and not target.startswith("//") and "\\" not in target:
        return target
    return "/ui"


@router.get("/ui/login")
def login_page(request: Request, next: str = "/ui") -> Response:  # noqa: A002 - the query's name
    return _page("login.html", None, next=_safe_next(next), error=None)


@router.post("/ui/login")
async def login(request: Request) -> Response:
    form = urllib.parse.parse_qs((await request.body()).decode("utf-8", "replace"))
    token = (form.get("token") or [""])[0].strip()
    target = _safe_next((form.get("next") or ["/ui"])[0])
    c = _c(request)
    caller = caller_of_token(c.settings, token) if token else None
    client = request.client.host if request.client else "?"
    if caller is None:
        logger.warning("web UI login refused from {}: {}", client, "no token" if not token else "wrong token")
        return _page("login.html", None, 401, next=target, error="That token is not valid here.")
    logger.info("web UI login: {} ({}) from {}", caller.name, caller.role, client)
    response = RedirectResponse(target, 303)
    response.set_cookie(COOKIE, issue(c.settings, caller), max_age=int(SESSION_SECONDS), httponly=True,
                        samesite="strict", secure=request.url.scheme == "https", path="/ui")
    return response


@router.post("/ui/logout")
def logout(request: Request) -> Response:
    response = RedirectResponse("/ui/login", 303)
    response.delete_cookie(COOKIE, path="/ui")
    return response


@router.get("/ui")
def rollouts_page(request: Request, service: str = "", phase: str = "", strategy: str = "") -> Response:
    session = _session(request)
    if session is None:
        return _to_login(request)
    c = _c(request)
    services = sorted({s.service for s in c.store.list()})
    return _page("list.html", session, service=service, phase=phase, strategy=strategy, services=services,
                 phases=[p.value for p in Phase], strategies=[s.value for s in Strategy])


@router.get("/ui/rollouts/{rollout_id}")
def rollout_page(request: Request, rollout_id: str) -> Response:
    session = _session(request)
    if session is None:
        return _to_login(request)
    try:
        state = _c(request).store.get(rollout_id)
    except RolloutNotFound:
        return _page("missing.html", session, 404, what=f"rollout {rollout_id}")
    return _page("rollout.html", session, state=state, actions=ACTIONS)


@router.get("/ui/alerts")
def alerts_page(request: Request) -> Response:
    session = _session(request)
    if session is None:
        return _to_login(request)
    return _page("alerts.html", session, alerts=list_alerts(_c(request), False))


def _unauthorised() -> JSONResponse:
    return JSONResponse({"error": "log in first (/ui/login)"}, 401)


@router.get("/ui/data/rollouts")
def rollouts_data(request: Request, service: str = "", phase: str = "", strategy: str = "") -> Response:
    if _session(request) is None:
        return _unauthorised()
    c = _c(request)
    now = c.clock.now()
    states = [s for s in c.store.list() if (not service or s.service == service)
              and (not phase or s.phase.value == phase) and (not strategy or s.strategy.value == strategy)]
    states.sort(key=lambda s: (s.phase.terminal, -s.updated_at))
    rows = [list_row(s, c.store.latest_tick(s.id), now) for s in states[:500]]
    return JSONResponse({"rollouts": rows, "total": len(states), "now": now})


@router.get("/ui/data/rollouts/{rollout_id}")
def rollout_json(request: Request, rollout_id: str) -> Response:
    if _session(request) is None:
        return _unauthorised()
    c = _c(request)
    try:
        state = c.store.get(rollout_id)
    except RolloutNotFound:
        return JSONResponse({"error": f"no rollout {rollout_id}"}, 404)
    alerts = [a for a in list_alerts(c, False) if rollout_id in a["rollouts"]]
    return JSONResponse(rollout_data(state, c.store.ticks(rollout_id), c.store.decisions(rollout_id), alerts,
                                     c.clock.now()))


@router.post("/ui/rollouts/{rollout_id}/{action}")
def act(request: Request, rollout_id: str, action: str) -> Response:
    session = _session(request)
    if session is None:
        return _unauthorised()
    if not session.caller.may_act:
        return JSONResponse({"error": "a viewer may look but not act: log in with an operator token"}, 403)
    if not csrf_ok(session, request.headers.get("x-csrf-token")):
        logger.warning("web UI action refused: {} on {} by {} without a valid CSRF token", action, rollout_id,
                       session.caller.name)
        return JSONResponse({"error": "missing or stale CSRF token: reload the page"}, 403)
    if action not in ACTIONS:
        return JSONResponse({"error": f"unknown action {action!r}: one of {', '.join(ACTIONS)}"}, 404)
    c = _c(request)
    try:
        state = command(c, rollout_id, Action(action), by=session.caller.name)
    except RolloutNotFound as e:
        return JSONResponse({"error": str(e)}, 404)
    except RolloutConflict as e:
        return JSONResponse({"error": str(e)}, 409)
    except ActuatorError as e:
        return JSONResponse({"error": str(e)}, 502)
    if isinstance(state, Intent):  # another replica holds it: it carries it out at its next pass
        logger.info("web UI: {} {} by {} filed as intent {}", action, rollout_id, session.caller.name, state.id)
        return JSONResponse({"ok": True, "intent": state.to_dict()}, 202)
    logger.info("web UI: {} {} by {}", action, rollout_id, session.caller.name)
    return JSONResponse({"ok": True, "phase": state.phase.value, "weight": state.weight})
