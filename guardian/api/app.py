"""The FastAPI app, assembled: `create_app` adds the middleware (alert fast lane, operator token first, body
limits), the error handlers, one router per resource and a lifespan that runs the scheduler (and, with
`watch_swarm`, the Swarm watcher: watchers/swarm.py; with `watch_kubernetes`, watchers/kubernetes.py), sweeps
idle gate rollouts and closes clients. The components it serves are built by components.py (`build`).

The floors of api/, from the bottom (each imports only from floors below it): components.py and limits.py;
tokenfirst.py and intake.py; deps.py (Deps, credentials) and openapi.py; the resources (rollouts.py, rules.py,
alerts.py, health.py, gates.py); this module."""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from loguru import logger
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.staticfiles import StaticFiles

from guardian import __version__
from guardian.actuators import Closeable
from guardian.api import alerts, gates, health, rollouts, rules, ui
from guardian.api.alerts import AlertsFastLane
from guardian.api.components import Components
from guardian.api.identity import operator_tokens
from guardian.api.limits import BodyLimit
from guardian.api.openapi import with_security
from guardian.api.tokenfirst import OperatorTokenFirst
from guardian.engine.intents import HoldsIntents, IntentKeeper
from guardian.engine.scheduler import Scheduler
from guardian.engine.watches import WatchKeeper
from guardian.errors import ActuatorError, ModelMissing, RolloutConflict, RolloutNotFound, UnknownActuator
from guardian.notifiers import Closing, DashboardChecking, FanOut
from guardian.sources import Closeable as SourceCloseable
from guardian.watchers.base import Watcher

DOCS_ASSETS = "/docs/assets"  # Swagger UI's and ReDoc's files (fastapi-offline)


def _error(status: int, code: str, detail: object) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": code, "detail": detail})


def _watchers(components: Components) -> list[Watcher]:
    """The watchers the settings ask for (`watch_swarm`, `watch_kubernetes`): the Docker SDK and the kubernetes
    client are imported only then."""
    s, watchers = components.settings, []
    if s.watch_swarm:
        from guardian.watchers.swarm import SwarmWatcher

        watchers.append(SwarmWatcher(components.guard, s, clock=components.clock, label=s.watch_label))
    if s.watch_kubernetes:
        from guardian.actuators.kubernetes import KubeConnection
        from guardian.watchers.kubernetes import KubeWatcher

        watchers.append(KubeWatcher(components.guard, s, clock=components.clock, namespace=s.kube_namespace,
                                    annotation=s.kube_annotation, connection=KubeConnection.from_settings(s)))
    return watchers


def create_app(components: Components, *, run_scheduler: bool = True) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        scheduler = Scheduler(components.guard, components.rulebook, leases=components.leases,
                              max_concurrent_ticks=components.settings.max_concurrent_ticks,
                              watches=WatchKeeper(components.guard, components.rulebook, components.settings),
                              intents=IntentKeeper(components.guard, components.store)
                              if isinstance(components.store, HoldsIntents) else None)
        task = asyncio.create_task(scheduler.run()) if run_scheduler else None
        watchers = _watchers(components) if run_scheduler else []
        watching = [asyncio.create_task(w.run(components.settings.watch_seconds)) for w in watchers]
        # gate rollouts whose client went quiet are closed
        sweeping = asyncio.create_task(gates.sweep_idle(components)) if run_scheduler else None
        for n in components.notifier.notifiers if isinstance(components.notifier, FanOut) else ():
            if isinstance(n, DashboardChecking):  # Grafana: does the dashboard UID exist? (background)
                n.start_dashboard_check()
        logger.info("guardian {} ready: rules for {}", __version__,
                    ", ".join(components.rulebook.services()) or "no service (built-in default policy)")
        try:
            yield
        finally:
            scheduler.stop()
            if sweeping:
                sweeping.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sweeping
            for w in watchers:
                w.stop()
            if task:
                await task
            for w, running in zip(watchers, watching, strict=True):
                await running
                w.close()
            components.guard.close()
            if isinstance(components.actuators, Closeable):
                components.actuators.close()
            if isinstance(components.notifier, Closing):
                components.notifier.close(5.0)  # sends what Grafana takes within 5 s, then stops its thread
            if isinstance(components.source, SourceCloseable):
                components.source.close()
            components.store.close()

    # /docs and /redoc with their assets served from here (the fastapi-offline package ships Swagger UI's and
    # ReDoc's files): they work offline, with no CDN, no web fonts and no outside favicon
    app = FastAPIOffline(title="Release Guardian", version=__version__, lifespan=lifespan, static_url=DOCS_ASSETS,
                         description="Guards rollouts: watches Prometheus, judges, advances or rolls back.",
                         swagger_ui_parameters={"persistAuthorization": True, "validatorUrl": None})
    app.openapi = with_security(app)  # type: ignore[method-assign]  # the bearer schemes: an Authorize button
    app.state.components = components
    app.add_middleware(BodyLimit, max_bytes=components.settings.max_body_bytes,  # 413 before any handler
                       per_path={"/v1/alerts": components.settings.alerts_max_bytes})  # Alertmanager's groups
    app.add_middleware(OperatorTokenFirst, tokens=tuple(operator_tokens(components.settings).values()))  # 401 first
    app.add_middleware(AlertsFastLane, max_bytes=components.settings.alerts_max_bytes)  # webhook posts: alerts.py

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        fields = [
            {"field": ".".join(str(p) for p in e["loc"] if p != "body") or "body",
             "message": e["msg"].removeprefix("Value error, ")}
            for e in exc.errors()
        ]
        return _error(422, "invalid_request", fields)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed", 409: "conflict"}.get(
            exc.status_code, "error")
        return _error(exc.status_code, code, exc.detail)

    @app.exception_handler(RolloutNotFound)
    async def _not_found(request: Request, exc: RolloutNotFound) -> JSONResponse:
        return _error(404, "not_found", str(exc))

    @app.exception_handler(RolloutConflict)
    async def _conflict(request: Request, exc: RolloutConflict) -> JSONResponse:
        return _error(409, "conflict", str(exc))

    @app.exception_handler(UnknownActuator)
    async def _unknown_actuator(request: Request, exc: UnknownActuator) -> JSONResponse:
        return _error(422, "invalid_request", [{"field": "target", "message": str(exc)}])

    @app.exception_handler(ModelMissing)
    async def _model_missing(request: Request, exc: ModelMissing) -> JSONResponse:
        return _error(422, "invalid_request", [{"field": "service", "message": str(exc)}])

    @app.exception_handler(ActuatorError)
    async def _actuator(request: Request, exc: ActuatorError) -> JSONResponse:
        return _error(502, "actuator_failed", str(exc))

    # one router per resource, in this order (the OpenAPI document lists their paths in it)
    app.include_router(rollouts.router)  # /v1/rollouts, the preflight, /v1/services/{service}/doctor
    app.include_router(rules.router)  # /v1/rules
    app.include_router(alerts.router)  # /v1/alerts: Alertmanager's webhook and the alerts known
    app.include_router(health.router)  # /healthz, /readyz, /v1/status, /metrics
    app.include_router(gates.router)  # Flagger webhooks and the Argo Rollouts web metric
    app.include_router(ui.router)  # the web UI's pages and their JSON (/ui; not in the OpenAPI document)
    app.mount("/ui/static", StaticFiles(directory=ui.pages.STATIC), name="ui-static")  # its scripts, styles, uPlot
    return app
