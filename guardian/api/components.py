"""The guardian's components and their wiring: `build` makes the store, rule book, metric source, guard,
actuators and notifiers from the settings (and fails fast on invalid rules); `Components` holds them for the
API's routes (api/deps.py hands them to each request) and its lifespan (api/app.py). The lowest floor of
`api/`: it imports nothing else of it."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from guardian.actuators import Actuator
from guardian.actuators.pool import ActuatorPool
from guardian.clock import Clock, SystemClock
from guardian.domain import Action
from guardian.engine.guard import Guard, GuardConfig
from guardian.engine.ha import ReplicaGuard, open_store
from guardian.engine.leases import Leases, LocalLeases
from guardian.engine.store import StateStore
from guardian.forecast.model_files import ModelDirectory
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
    store: StateStore
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
    notifiers: list[Notifier] = [LogNotifier()]
    if settings.grafana_url:
        from guardian.notifiers.grafana import GrafanaNotifier

        token = settings.grafana_token.get_secret_value() if settings.grafana_token else None
        notifiers.append(GrafanaNotifier(
            settings.grafana_url, token, dashboard_uid=settings.grafana_dashboard_uid,
            panel_id=settings.grafana_panel_id, metrics=metrics))
    if settings.notify_routes:
        from guardian.notifiers.channels import ChannelNotifier, SmtpSettings

        smtp = SmtpSettings(
            settings.smtp_host, settings.smtp_port, settings.smtp_user,
            settings.smtp_password.get_secret_value() if settings.smtp_password else None, settings.smtp_from,
            settings.smtp_starttls) if settings.smtp_host else None
        notifiers.append(ChannelNotifier(settings.notify_routes, base_url=settings.public_url, smtp=smtp,
                                         metrics=metrics))
    notifier: Notifier = notifiers[0] if len(notifiers) == 1 else FanOut(*notifiers)
    guard_class = Guard if isinstance(leases, LocalLeases) else ReplicaGuard  # replicas share a PostgreSQL store
    guard = guard_class(store, source, rulebook, actuators, clock, config, notifier=notifier, metrics=metrics,
                        models=ModelDirectory(settings.models_dir))
    return Components(settings, store, rulebook, source, guard, metrics, actuators, clock, notifier, leases)
