"""The FastAPI app factory. `build` wires the components (and fails fast on invalid rules);
`create_app` adds routes, error handlers and a lifespan that runs the scheduler (and, with `watch_swarm`,
the Swarm watcher: engine/swarm_watch.py; with `watch_kubernetes`, engine/kube_watch.py) and closes clients."""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from loguru import logger
from starlette.exceptions import HTTPException as StarletteHTTPException

from guardian import __version__
from guardian.actuators import Actuator
from guardian.actuators.pool import ActuatorPool
from guardian.api.intake import AlertsFastLane
from guardian.api.limits import BodyLimit
from guardian.api.tokenfirst import OPERATOR_PATHS, OperatorTokenFirst
from guardian.clock import Clock, SystemClock
from guardian.domain import Action
from guardian.engine.guard import Guard, GuardConfig
from guardian.engine.ha import ReplicaGuard, open_store
from guardian.engine.leases import Leases, LocalLeases
from guardian.engine.scheduler import Scheduler
from guardian.engine.store import SQLiteStore
from guardian.errors import ActuatorError, ModelMissing, RolloutConflict, RolloutNotFound, UnknownActuator
from guardian.forecast_models import ModelDirectory
from guardian.judge.policy import Policy
from guardian.metrics import GuardianMetrics
from guardian.notifiers import FanOut, LogNotifier, Notifier
from guardian.redact import install_log_redaction
from guardian.rules.book import RuleBook
from guardian.settings import Settings
from guardian.sources import MetricSource


@dataclass
class Components:
    settings: Settings
    store: SQLiteStore
    rulebook: RuleBook
    source: MetricSource
    guard: Guard
    metrics: GuardianMetrics
    actuators: Callable[[str], Actuator]
    clock: Clock
    notifier: Notifier | None = None
    leases: Leases | None = None  # which rollouts this replica acts on (engine/leases.py)


def build(settings: Settings, *, source: MetricSource | None = None, clock: Clock | None = None,
          actuators: Callable[[str], Actuator] | None = None) -> Components:
    """Wire everything. Raises RuleError when a rule file is invalid: nothing is started then."""
    install_log_redaction(settings)  # the settings' secrets never reach a log line (guardian/redact.py)
    rulebook = RuleBook(settings.rules)
    if source is None:
        from guardian.sources.prometheus import PrometheusSource

        source = PrometheusSource(settings.prometheus_url, timeout=settings.prometheus_timeout,
                                  min_window=settings.min_window)
        if settings.batch_queries:
            from guardian.sources.batching import BatchingSource

            source = BatchingSource(source)
    clock = clock or SystemClock()
    store, leases = open_store(settings)  # SQLite, or PostgreSQL shared by replicas (database_url)
    metrics = GuardianMetrics()
    if actuators is None:
        from guardian.actuators.kubernetes import KubeConnection  # a dataclass: the client is imported when used

        actuators = ActuatorPool(kube_connection=KubeConnection.from_settings(settings))
    config = GuardConfig(
        evaluation_delay=settings.evaluation_delay, max_scale=settings.max_scale,
        recordings_dir=Path(settings.recordings_dir) if settings.recordings_dir else None,
        policy=Policy(on_inconclusive=Action(settings.on_inconclusive)),
        alert_labels=tuple(settings.alert_labels.items()), align_ticks=settings.align_ticks,
    )
    notifier: Notifier = LogNotifier()
    if settings.grafana_url:
        from guardian.notifiers.grafana import GrafanaNotifier

        token = settings.grafana_token.get_secret_value() if settings.grafana_token else None
        notifier = FanOut(notifier, GrafanaNotifier(
            settings.grafana_url, token, dashboard_uid=settings.grafana_dashboard_uid,
            panel_id=settings.grafana_panel_id, metrics=metrics))
    guard_class = Guard if isinstance(leases, LocalLeases) else ReplicaGuard  # replicas share a PostgreSQL store
    guard = guard_class(store, source, rulebook, actuators, clock, config, notifier=notifier, metrics=metrics,
                        models=ModelDirectory(settings.models_dir))
    return Components(settings, store, rulebook, source, guard, metrics, actuators, clock, notifier, leases)


DOCS_ASSETS = "/docs/assets"  # Swagger UI's and ReDoc's files (fastapi-offline)
SECURITY_SCHEMES = {
    "operatorToken": {"type": "http", "scheme": "bearer", "description": (
        "The operators' token (`token`, GUARDIAN_TOKEN): it alone authorizes starting, pausing, resuming, promoting "
        "and rolling back rollouts and reloading rules, when the guardian has one.")},
    "alertmanagerToken": {"type": "http", "scheme": "bearer", "description": (
        "Alertmanager's bearer token for POST /v1/alerts (`alerts_token`); with no Alertmanager credentials set, "
        "the webhook takes the operator token.")},
    "alertmanagerBasicAuth": {"type": "http", "scheme": "basic", "description": (
        "Alertmanager's basic auth for POST /v1/alerts (`alerts_basic_auth`, as http_config.basic_auth sends it).")},
    "gateToken": {"type": "http", "scheme": "bearer", "description": (
        "The gates' token (`gate_token`, else the operator token) for Flagger's webhooks and Argo's web metric; "
        "Flagger may send it as metadata.token in the body instead.")},
}


def _security_of(path: str, method: str) -> list[dict[str, list[str]]] | None:
    """The credentials an operation takes: the same rule the middleware and the routes enforce."""
    if method == "post" and OPERATOR_PATHS.match(path):
        return [{"operatorToken": []}]
    if method == "post" and path == "/v1/alerts":
        return [{"alertmanagerToken": []}, {"alertmanagerBasicAuth": []}, {"operatorToken": []}]
    if path.startswith("/v1/gates/flagger/"):
        return [{"gateToken": []}, {}]  # or metadata.token in the body; the event hook takes none
    if path.startswith("/v1/gates/"):
        return [{"gateToken": []}]
    return None


def _with_security(app: FastAPI) -> Callable[[], dict]:
    """FastAPI's OpenAPI document plus the bearer/basic schemes each operation takes (so Swagger UI shows an
    Authorize button); the Authorization header is the schemes', not a parameter of its own."""
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = generate()
        doc.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
        for path, operations in doc.get("paths", {}).items():
            for method, op in operations.items():
                if not isinstance(op, dict):
                    continue
                if "parameters" in op:
                    op["parameters"] = [p for p in op["parameters"] if not (
                        p.get("in") == "header" and p.get("name", "").lower() == "authorization")]
                    if not op["parameters"]:
                        del op["parameters"]
                security = _security_of(path, method)
                if security:
                    op["security"] = security
                    op.setdefault("responses", {}).setdefault("401", {
                        "description": 'missing or wrong credentials: {"error": "unauthorized", "detail": "..."}'})
        app.openapi_schema = doc
        return doc

    return openapi


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
        from guardian.api.gates import sweep_idle  # gate rollouts whose client went quiet are closed

        sweeping = asyncio.create_task(sweep_idle(components)) if run_scheduler else None
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
    app.openapi = _with_security(app)  # type: ignore[method-assign]  # the bearer schemes: an Authorize button
    app.state.components = components
    app.add_middleware(BodyLimit, max_bytes=components.settings.max_body_bytes,  # 413 before any handler
                       per_path={"/v1/alerts": components.settings.alerts_max_bytes})  # Alertmanager's groups
    token = components.settings.token
    app.add_middleware(OperatorTokenFirst, token=token.get_secret_value() if token else None)  # 401 before the body
    app.add_middleware(AlertsFastLane, max_bytes=components.settings.alerts_max_bytes)  # webhook posts: intake.py

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

    from guardian.api.routes import router

    app.include_router(router)
    from guardian.api.gates import router as gates  # Flagger webhooks and the Argo Rollouts web metric

    app.include_router(gates)
    return app
