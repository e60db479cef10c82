"""The FastAPI app, assembled: `create_app` adds the middleware (alert fast lane, operator token first, body
limits), the error handlers, one router per resource and a lifespan that runs the scheduler (and, with
`watch_swarm`, the Swarm watcher: engine/swarm_watch.py; with `watch_kubernetes`, engine/kube_watch.py), sweeps
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

from guardian import __version__
from guardian.api import alerts, gates, health, rollouts, rules
from guardian.api.alerts import AlertsFastLane
from guardian.api.components import Components
from guardian.api.limits import BodyLimit
from guardian.api.openapi import with_security
from guardian.api.tokenfirst import OperatorTokenFirst
from guardian.engine.scheduler import Scheduler
from guardian.errors import ActuatorError, ModelMissing, RolloutConflict, RolloutNotFound, UnknownActuator

DOCS_ASSETS = "/docs/assets"  # Swagger UI's and ReDoc's files (fastapi-offline)


def _error(status: int, code: str, detail: object) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": code, "detail": detail})


def create_app(components: Components, *, run_scheduler: bool = True) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        scheduler = Scheduler(components.guard, components.rulebook, leases=components.leases,
                              max_concurrent_ticks=components.settings.max_concurrent_ticks)
        task = asyncio.create_task(scheduler.run()) if run_scheduler else None
        watcher, watching = None, None
        if run_scheduler and components.settings.watch_swarm:
            from guardian.engine.swarm_watch import SwarmWatcher  # the Docker SDK is imported only when watching

            s = components.settings
            watcher = SwarmWatcher(components.guard, s, clock=components.clock, label=s.watch_label)
            watching = asyncio.create_task(watcher.run(s.watch_seconds))
        kube_watcher, kube_watching = None, None
        if run_scheduler and components.settings.watch_kubernetes:
            from guardian.actuators.kubernetes import KubeConnection
            from guardian.engine.kube_watch import KubeWatcher  # the kubernetes client is imported only when watching

            s = components.settings
            kube_watcher = KubeWatcher(components.guard, s, clock=components.clock, namespace=s.kube_namespace,
                                       annotation=s.kube_annotation, connection=KubeConnection.from_settings(s))
            kube_watching = asyncio.create_task(kube_watcher.run(s.watch_seconds))
        # gate rollouts whose client went quiet are closed
        sweeping = asyncio.create_task(gates.sweep_idle(components)) if run_scheduler else None
        for n in getattr(components.notifier, "notifiers", ()):  # Grafana: does the dashboard UID exist? (background)
            if callable(check := getattr(n, "start_dashboard_check", None)):
                check()
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
            if watcher:
                watcher.stop()
            if task:
                await task
            if watcher and watching:
                await watching
                watcher.close()
            if kube_watcher and kube_watching:
                kube_watcher.stop()
                await kube_watching
                kube_watcher.close()
            close = getattr(components.actuators, "close", None)
            if callable(close):
                close()
            close_notifier = getattr(components.notifier, "close", None)
            if callable(close_notifier):
                close_notifier(5.0)  # sends what Grafana takes within 5 s, then stops its thread
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
    token = components.settings.token
    app.add_middleware(OperatorTokenFirst, token=token.get_secret_value() if token else None)  # 401 before the body
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
    return app
