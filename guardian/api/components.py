"""The guardian's components and their wiring: `build` makes the store, rule book, metric source, guard,
actuators and notifiers from the settings (and fails fast on invalid rules); `Components` holds them for the
API's routes (api/deps.py hands them to each request) and its lifespan (api/app.py). The lowest floor of
`api/`: it imports nothing else of it."""
from __future__ import annotations

from collections.abc import Callable, Iterable
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
from guardian.errors import Problem, RuleError
from guardian.forecast.model_files import ModelDirectory
from guardian.judge.policy import Policy
from guardian.metrics import GuardianMetrics
from guardian.notifiers import FanOut, LogNotifier, Notifier
from guardian.redact import install_log_redaction
from guardian.rules.book import RuleBook
from guardian.rules.loader import RuleSet
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


def _store(settings: Settings, name: str) -> MetricSource:
    from guardian.sources.prometheus import PrometheusSource
    from guardian.sources.victoriametrics import VictoriaMetricsSource

    if name == "influxdb":
        from guardian.sources.influxdb import InfluxDBSource

        password = settings.influxdb_password.get_secret_value() if settings.influxdb_password else None
        influx = InfluxDBSource(settings.influxdb_url or "", database=settings.influxdb_database,
                                username=settings.influxdb_username, password=password,
                                timeout=settings.prometheus_timeout, min_window=settings.min_window)
        if not settings.batch_queries:
            return influx
        from guardian.sources.influxdb_batching import BatchingInfluxDBSource

        return BatchingInfluxDBSource(influx)
    if name == "datadog":
        return _datadog(settings)
    if name == "cloudwatch":
        return _cloudwatch(settings)
    kind, url = {"prometheus": (PrometheusSource, settings.prometheus_url),
                 "victoriametrics": (VictoriaMetricsSource, settings.victoriametrics_url)}[name]
    store: MetricSource = kind(url or "", timeout=settings.prometheus_timeout, min_window=settings.min_window)
    if settings.batch_queries:
        from guardian.sources.batching import BatchingSource

        store = BatchingSource(store)
    return store


def _datadog(settings: Settings) -> MetricSource:
    from guardian.sources.datadog import DatadogSource

    api_key, app_key = (k.get_secret_value() if k else "" for k in (settings.datadog_api_key, settings.datadog_app_key))
    source = DatadogSource(settings.datadog_url or "", api_key, app_key, namespace=settings.datadog_namespace,
                           timeout=settings.prometheus_timeout, min_window=settings.min_window)
    if not settings.batch_queries:
        return source
    from guardian.sources.datadog_batching import BatchingDatadogSource

    return BatchingDatadogSource(source)


def _cloudwatch(settings: Settings) -> MetricSource:
    """CloudWatch, with boto3's own credential chain; the secret key and session token found in the environment are
    registered for redaction (boto3 logs none of them; an error message might quote one)."""
    import os

    from guardian.redact import register
    from guardian.sources.cloudwatch import CloudWatchSource

    register(os.environ.get("AWS_SECRET_ACCESS_KEY"), os.environ.get("AWS_SESSION_TOKEN"))
    return CloudWatchSource(settings.cloudwatch_region or "", endpoint_url=settings.cloudwatch_endpoint_url,
                            namespace=settings.cloudwatch_namespace, timeout=settings.prometheus_timeout,
                            min_window=settings.min_window, batch=settings.batch_queries)


# stores that read the standard signals only, from the layout their collector writes (docs/sources.md)
STANDARD_ONLY = {"influxdb": "as Telegraf writes them", "datadog": "as the Agent's openmetrics check sends them",
                 "cloudwatch": "from the layout of docs/sources.md"}
# what a store without its address needs, when not GUARDIAN_{NAME}_URL
NOT_CONFIGURED = {"cloudwatch": "has no region: set GUARDIAN_CLOUDWATCH_REGION (or the settings file's "
                                "cloudwatch_region)"}


def source_problems(settings: Settings, rulesets: Iterable[RuleSet]) -> list[Problem]:
    """Rule files naming a store the settings give no address for: `FILE:LINE: source: …` each."""
    configured = {"prometheus": settings.prometheus_url, "victoriametrics": settings.victoriametrics_url,
                  "influxdb": settings.influxdb_url, "datadog": settings.datadog_url,
                  "cloudwatch": settings.cloudwatch_region}
    problems = []
    for ruleset in rulesets:
        name = ruleset.rules.source
        if name and not configured.get(name):
            problems.append(Problem(ruleset.source, line_of(ruleset.source, "source"), "source",
                                    f"{name} " + NOT_CONFIGURED.get(name, f"has no address: set GUARDIAN_"
                                                                    f"{name.upper()}_URL (or the settings file's "
                                                                    f"{name}_url)")))
        if (store := name or settings.source) in STANDARD_ONLY and ruleset.rules.queries:
            problems.append(Problem(ruleset.source, line_of(ruleset.source, "queries"), "queries",
                                    f"the {store} source reads the standard signals only ({STANDARD_ONLY[store]}); "
                                    "PromQL queries cannot run there"))
    return problems


def line_of(path: str, key: str) -> int:
    """The line of a top-level `key:` in a rule file (1 when it cannot be read)."""
    try:
        for i, line in enumerate(Path(path).read_text().splitlines(), 1):
            if line.startswith(f"{key}:"):
                return i
    except OSError:
        pass
    return 1


def metric_sources(settings: Settings, rulebook: RuleBook) -> MetricSource:
    """The metric stores the settings give an address for (each batched unless `batch_queries` is off), behind a
    router that reads each service from the store its rule file names (`source:`), else the settings' `source`:
    decided at each fetch, so a rule file reloaded with another store is read from it (or, without an address for
    it, is unavailable: its rollouts pause). Raises RuleError naming the file, line and field of a rule file whose
    store has no address."""
    if problems := source_problems(settings, rulebook.services().values()):
        raise RuleError(problems)
    from guardian.sources.router import SourceRouter

    names = ["prometheus"] + [n for n in ("victoriametrics", "influxdb", "datadog") if getattr(settings, f"{n}_url")]
    names += ["cloudwatch"] if settings.cloudwatch_region else []

    def choose(service: str) -> str:
        return rulebook.for_service(service).rules.source or settings.source

    return SourceRouter({n: _store(settings, n) for n in names}, choose)

def build(settings: Settings, *, source: MetricSource | None = None, clock: Clock | None = None,
          actuators: Callable[[str], Actuator] | None = None) -> Components:
    """Wire everything. Raises RuleError when a rule file is invalid: nothing is started then."""
    install_log_redaction(settings)  # the settings' secrets never reach a log line (guardian/redact.py)
    rulebook = RuleBook(settings.rules)
    if source is None:
        source = metric_sources(settings, rulebook)
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
