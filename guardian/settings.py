"""Settings: defaults, then a YAML config file (`--config`), then GUARDIAN_* environment variables.

Refuses unsafe combinations at start-up: listening beyond loopback without a token, ticks
shorter than the source can answer, a delay that swallows the tick.
"""
from __future__ import annotations

import ipaddress
import re
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError

from guardian.errors import Problem, RuleError
from guardian.notifiers.routes import NotifyRoute

NAME_RE = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
RESERVED_NAMES = frozenset({"guardian", "user", "alertmanager", "replay", "gate", "flagger"})  # decision sources


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GUARDIAN_", extra="forbid", env_nested_delimiter="__")

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    token: SecretStr | None = None  # bearer token for mutating endpoints
    # named operator tokens (`name: token`): each acts like `token`, and the decision log says who acted
    # (GUARDIAN_OPERATOR_TOKENS='{"alice": "…", "bob": "…"}'); the web UI's login takes any of them
    operator_tokens: dict[str, SecretStr] = Field({}, description="named operator tokens: the decision log names "
                                                  "who approved, paused, promoted or rolled back")
    viewer_token: SecretStr | None = Field(None, description="a token that may read (the web UI, GET routes) but "
                                           "not act")
    # Alertmanager's webhook (POST /v1/alerts) authenticates with its own bearer token or basic auth
    # (`http_config` in alertmanager.yml); with neither set it needs the operator token (if any).
    alerts_token: SecretStr | None = None
    alerts_basic_auth: SecretStr | None = Field(None, description="'user:password' Alertmanager sends as basic auth")
    alert_labels: dict[str, str] = Field(
        {"service": "service", "version": "version", "image": "image", "namespace": "namespace"},
        description="which alert label carries each rollout attribute (service, version, image, namespace)")
    alerts_max_bytes: int = Field(
        33_554_432, ge=1024, description="the largest Alertmanager webhook body accepted (POST /v1/alerts; about 500 "
        "bytes an alert: 32 MiB holds a group of ~60,000). Alertmanager retries no 4xx: a group refused is lost")
    max_body_bytes: int = Field(1_048_576, ge=1024, description="the largest request body accepted on any other "
                                "endpoint (413 before the handler runs, by Content-Length or as streamed)")
    tls_certfile: str | None = Field(None, description="serve HTTPS with this PEM certificate chain; needs tls_keyfile")
    tls_keyfile: str | None = Field(None, description="the PEM private key of tls_certfile")
    prometheus_url: str = "http://127.0.0.1:9090"
    # the metric store of services whose rule file names none (`source:`), and VictoriaMetrics' address
    # (sources/victoriametrics.py; docs/sources.md)
    source: Literal["prometheus", "victoriametrics", "influxdb", "datadog", "cloudwatch"] = "prometheus"
    victoriametrics_url: str | None = Field(None, description="VictoriaMetrics' address (its Prometheus query API), "
                                            "for source victoriametrics, e.g. http://127.0.0.1:8428")
    # InfluxDB 1.x (sources/influxdb.py): the standard signals as Telegraf's prometheus input writes them
    influxdb_url: str | None = Field(None, description="InfluxDB 1.x's HTTP API, for source influxdb, e.g. "
                                     "http://127.0.0.1:8086")
    influxdb_database: str = Field("telegraf", min_length=1, description="the database Telegraf writes to")
    influxdb_username: str | None = None
    influxdb_password: SecretStr | None = None
    # Datadog (sources/datadog.py): the standard signals as the Agent's OpenMetrics check sends them; the keys are
    # secrets (sent in headers only, never logged) and come from the environment or the settings file
    datadog_url: str | None = Field(None, description="Datadog's API for your site, for source datadog, e.g. "
                                    "https://api.datadoghq.com (US1) or https://api.datadoghq.eu (EU1)")
    datadog_api_key: SecretStr | None = None
    datadog_app_key: SecretStr | None = Field(None, description="an application key with the timeseries_query "
                                              "permission")
    datadog_namespace: str = Field("app", pattern=r"^[A-Za-z][A-Za-z0-9_.]*$", description="the `namespace:` of the "
                                   "Agent's openmetrics check that scrapes the services")
    # Amazon CloudWatch (sources/cloudwatch.py): the standard signals in the layout of docs/sources.md; the credentials
    # come from boto3's chain (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, a role), never from settings
    cloudwatch_region: str | None = Field(None, description="the AWS region whose CloudWatch is read, for source "
                                          "cloudwatch, e.g. eu-west-1")
    cloudwatch_endpoint_url: str | None = Field(None, description="CloudWatch's endpoint when not the region's own "
                                                "(a VPC endpoint), e.g. https://monitoring.eu-west-1.amazonaws.com")
    cloudwatch_namespace: str = Field("ReleaseGuardian", pattern=r"^[A-Za-z0-9._/#:\- ]{1,255}$",
                                      description="the namespace the services publish their metrics in")
    prometheus_timeout: float = Field(5.0, gt=0)
    min_window: float = Field(15.0, gt=0, description="shortest {{window}} put into PromQL rate() windows")
    rules: list[str] = ["rules"]
    db_path: str = "var/guardian.db"
    # PostgreSQL instead of SQLite (engine/store_pg.py): postgresql://USER:PASSWORD@HOST:PORT/DB; replicas sharing
    # it take a lease per rollout (engine/leases.py). A secret: never logged (only its redacted form).
    database_url: SecretStr | None = None
    lease_seconds: float = Field(15.0, ge=1, description="a dead replica's rollouts are taken over within this")
    database_pool_size: int = Field(16, ge=1, le=200, description=(
        "PostgreSQL connections this replica opens at most: the ticks running at once share them"))
    replica_id: str | None = None  # this replica's lease holder id (default: host:pid:random)
    recordings_dir: str = "var/recordings"
    models_dir: str = "models"  # forecast models: <models_dir>/<service>/<signal>.json (guardian baseline fit)
    tick_seconds: float = Field(10.0, ge=0.5, description="length of one tick (evaluation interval)")
    evaluation_delay: float = Field(1.0, ge=0, description="wait after a tick's end for the last scrape")
    analysis_seconds: float = Field(60.0, ge=0, description="how long a step must pass before advancing")
    align_ticks: bool = Field(True, description="start every rollout's ticks on the grid of its tick length, so "
                              "rollouts share tick windows (and batched queries)")
    batch_queries: bool = Field(True, description="ask for all rollouts at once, not per rollout: Prometheus and "
                                "VictoriaMetrics one query per signal and tick window (sources/batching.py), InfluxDB "
                                "one request per tick window (sources/influxdb_batching.py), Datadog one request per "
                                "span (sources/datadog_batching.py), CloudWatch a window's reads in as few "
                                "GetMetricData calls as the API allows (sources/cloudwatch.py), each through "
                                "sources/single_flight.py; off: one per rollout, signal and arm")
    max_concurrent_ticks: int = Field(32, ge=1, description="ticks evaluated at once (the scheduler's thread pool)")
    steps: list[int] = [10, 25, 50, 100]
    default_target: str = "noop"
    max_scale: int = Field(3, ge=0)
    on_inconclusive: Literal["pause", "continue"] = "pause"
    # the steady-state guard (engine/watches.py): these services are judged between rollouts too, with their rule
    # file's threshold and baseline checks (its `watch:` section, if any, says how; `watch: {enabled: false}` opts out)
    watch_services: list[str] = Field([], description="services judged between rollouts (a watch each; docs/rules.md, "
                                      "\"Watch\")")
    watch_swarm: bool = False  # start an `observe` rollout for each `docker service update` of a watched service
    watch_label: str = Field("guardian.watch", min_length=1,
                             description="the service label (or label=value) that marks a Swarm service as watched")
    watch_seconds: float = Field(2.0, gt=0, description="how often the Swarm watcher looks for updates")
    # Kubernetes (actuators/kubernetes.py, watchers/kubernetes.py): kube_host (e.g. `kubectl proxy`), else kubeconfig
    # and kube_context (else $KUBECONFIG / ~/.kube/config), else the in-cluster service account
    watch_kubernetes: bool = False  # start an `observe` rollout for each rollout of an annotated Deployment
    kube_host: str | None = None
    kubeconfig: str | None = None
    kube_context: str | None = None
    kube_namespace: str | None = Field(None, description="watch this namespace only (a Role suffices); "
                                       "unset: every namespace (needs the ClusterRole)")
    kube_annotation: str = Field("guardian.io/policy", min_length=1,
                                 description="the Deployment annotation naming its policy (rule file service)")
    kube_settle_seconds: float = Field(15.0, ge=0, le=600, description="a START waits at most this long for the "
                                       "deployment controller to make the new ReplicaSet before it fixes the arms "
                                       "(later: the arms stay unknown, the checks inconclusive, until it has)")
    # Flagger / Argo Rollouts gates (/v1/gates/...): their own bearer token; unset: the operator token (if any)
    gate_token: SecretStr | None = None
    gate_idle_seconds: float = Field(
        900.0, gt=0, description="a gate's rollout judges for as long as its client (Flagger, Argo Rollouts) keeps "
        "calling; with no call for this long it is closed (promoted if its last verdict passed, else rolled back)")
    log_level: str = "INFO"
    # Grafana annotations (notifiers/grafana.py): a region per rollout and a point per decision
    grafana_url: str | None = None  # e.g. http://grafana:3000; unset: no annotations
    grafana_token: SecretStr | None = None  # a service-account token, sent as Authorization: Bearer
    grafana_dashboard_uid: str | None = None  # annotate this dashboard only (default: organisation-wide)
    grafana_panel_id: int | None = None  # and this panel of it

    # chat, webhook and e-mail notifications (notifiers/channels.py; docs/notifications.md): routes per channel,
    # service and event, e.g. GUARDIAN_NOTIFY_ROUTES='[{"channel": "slack", "url": "https://hooks.slack.com/..."}]'
    notify_routes: list[NotifyRoute] = Field([], description="where decisions are sent: slack, teams, webhook "
                                             "(CloudEvents) or email routes, each with the services and events it "
                                             "hears")
    public_url: str | None = Field(None, description="the guardian's address as its readers reach it (links in "
                                   "notifications: PUBLIC_URL/ui/rollouts/ID)")
    smtp_host: str | None = None  # the SMTP server of email routes
    smtp_port: int = Field(25, ge=1, le=65535)
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    smtp_from: str = "guardian@localhost"
    smtp_starttls: bool = False

    @field_validator("alert_labels")
    @classmethod
    def _alert_labels(cls, v: dict[str, str]) -> dict[str, str]:
        unknown = set(v) - {"service", "version", "image", "namespace"}
        if unknown or "service" not in v:
            raise ValueError("alert_labels maps the rollout attributes service (required), version, image and "
                             f"namespace to alert label names; got {sorted(v)}")
        return v

    @field_validator("default_target")
    @classmethod
    def _known_actuator(cls, v: str) -> str:
        from guardian.actuators import registry

        if problem := registry.validate_target(v):
            raise ValueError(problem)
        return v

    @field_validator("tls_certfile", "tls_keyfile")
    @classmethod
    def _readable(cls, v: str | None, info: Any) -> str | None:
        if v is not None:
            try:
                with open(v, "rb") as f:
                    f.read(1)
            except OSError as e:
                raise ValueError(f"{info.field_name} {v!r} cannot be read: {e.strerror or e}") from None
        return v

    @field_validator("operator_tokens")
    @classmethod
    def _token_names(cls, v: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name, secret in v.items():
            if not NAME_RE.match(name) or name in RESERVED_NAMES:
                raise ValueError(f"operator token name {name!r}: 1-64 letters, digits, '.', '_', '-' or '@', not "
                                 f"one of {sorted(RESERVED_NAMES)}")
            if len(secret.get_secret_value()) < 8:
                raise ValueError(f"operator token {name!r} is shorter than 8 characters")
        return v

    @field_validator("victoriametrics_url", "influxdb_url", "datadog_url", "cloudwatch_endpoint_url")
    @classmethod
    def _store_url(cls, v: str | None, info: Any) -> str | None:
        if v is not None:
            from urllib.parse import urlsplit

            parts = urlsplit(v)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"{info.field_name} must be an http(s):// URL with a host, e.g. "
                                 f"http://127.0.0.1:8428 (got scheme {parts.scheme!r})")
        return v

    @model_validator(mode="after")
    def _source_url(self) -> Settings:
        if self.cloudwatch_endpoint_url and not self.cloudwatch_region:
            raise ValueError("cloudwatch_endpoint_url is set but cloudwatch_region is not: set "
                             "GUARDIAN_CLOUDWATCH_REGION (the region its requests are signed for), e.g. eu-west-1")
        if self.source == "cloudwatch" and not self.cloudwatch_region:
            raise ValueError("source is cloudwatch: set cloudwatch_region (GUARDIAN_CLOUDWATCH_REGION), e.g. eu-west-1")
        if self.source not in ("prometheus", "cloudwatch") and not getattr(self, f"{self.source}_url"):
            raise ValueError(f"source is {self.source}: set {self.source}_url (GUARDIAN_{self.source.upper()}_URL)")
        return self

    @field_validator("cloudwatch_region")
    @classmethod
    def _aws_region(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$", v):
            raise ValueError(f"cloudwatch_region {v!r} is not an AWS region name, e.g. eu-west-1 or us-gov-west-1")
        return v

    @field_validator("cloudwatch_namespace")
    @classmethod
    def _own_namespace(cls, v: str) -> str:
        if v.startswith("AWS/"):
            raise ValueError(f"cloudwatch_namespace {v!r}: AWS/ namespaces are AWS's own services', not one a "
                             "service publishes in")
        return v

    @field_validator("datadog_url")
    @classmethod
    def _datadog_https(cls, v: str | None) -> str | None:
        from urllib.parse import urlsplit

        if v is not None and not v.startswith("https://") and not _is_loopback(urlsplit(v).hostname or ""):
            raise ValueError("datadog_url must be https:// (the API keys travel in its headers), e.g. "
                             "https://api.datadoghq.com; http:// only on a loopback address")
        return v

    @model_validator(mode="after")
    def _datadog_keys(self) -> Settings:
        missing = [n for n in ("datadog_api_key", "datadog_app_key") if self.datadog_url and not getattr(self, n)]
        if missing:
            raise ValueError(f"datadog_url is set but {' and '.join(missing)} {'are' if missing[1:] else 'is'} "
                             f"not: set {' and '.join('GUARDIAN_' + n.upper() for n in missing)} (the environment)")
        return self

    @model_validator(mode="after")
    def _mail_server(self) -> Settings:
        if any(r.channel == "email" for r in self.notify_routes) and not self.smtp_host:
            raise ValueError("notify_routes has an email route: set smtp_host (and smtp_port, smtp_from)")
        return self

    @model_validator(mode="after")
    def _safe(self) -> Settings:
        if (self.tls_certfile is None) != (self.tls_keyfile is None):
            given, missing = ("tls_certfile", "tls_keyfile") if self.tls_keyfile is None else ("tls_keyfile",
                                                                                                 "tls_certfile")
            raise ValueError(f"{given} is set but {missing} is not: TLS needs both (GUARDIAN_TLS_CERTFILE and "
                             "GUARDIAN_TLS_KEYFILE), or neither for plain HTTP")
        if self.tls_certfile and self.tls_keyfile:
            import ssl

            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            try:  # an encrypted key is refused, not prompted for
                context.load_cert_chain(self.tls_certfile, self.tls_keyfile, password=lambda: b"")
            except (ssl.SSLError, OSError) as e:
                raise ValueError(f"tls_certfile {self.tls_certfile!r} and tls_keyfile {self.tls_keyfile!r} do not "
                                 f"load as a PEM certificate and its key: {e}") from None
        if self.token is None and not self.operator_tokens and not _is_loopback(self.host):
            raise ValueError(f"refusing to listen on {self.host} without a token: set GUARDIAN_TOKEN or "
                             "listen on 127.0.0.1")
        if self.evaluation_delay >= self.tick_seconds:
            raise ValueError(f"evaluation_delay ({self.evaluation_delay}s) must be shorter than tick_seconds "
                             f"({self.tick_seconds}s)")
        if self.database_url is not None and not self.database_url.get_secret_value().startswith(
                ("postgresql://", "postgres://")):
            raise ValueError("database_url must be a postgresql:// URL")
        if (not self.steps or any(not 0 < s <= 100 for s in self.steps)
                or any(a >= b for a, b in zip(self.steps, self.steps[1:], strict=False))):
            raise ValueError("steps must be strictly rising percentages in 1..100")
        return self

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource, dotenv_settings, file_secret_settings):
        # command-line flags (init) beat the environment, which beats the config file
        return (init_settings, env_settings, _FileSource(settings_cls, _FILE_DATA.get() or {}))


_FILE_DATA: ContextVar[dict[str, Any] | None] = ContextVar("guardian_settings_file", default=None)


class _FileSource(PydanticBaseSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]):
        super().__init__(settings_cls)
        self.data = data

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self.data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self.data)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_settings(config: str | Path | None = None, **overrides: Any) -> Settings:
    """Settings from an optional YAML file plus overrides. Raises RuleError with FILE:LINE: field: message."""
    data: dict[str, Any] = {}
    name = str(config) if config else "(settings)"
    doc = None
    if config:
        try:
            doc = YAML(typ="rt").load(Path(config).read_text(encoding="utf-8")) or {}
        except OSError as e:
            raise RuleError([Problem(name, 1, "(file)", f"cannot read: {e}")]) from None
        except MarkedYAMLError as e:
            line = e.problem_mark.line + 1 if e.problem_mark else 1
            raise RuleError([Problem(name, line, "(yaml)", f"malformed YAML: {e.problem}")]) from None
        if not isinstance(doc, dict):
            raise RuleError([Problem(name, 1, "(file)", "a config file is a mapping of setting: value")])
        data = {str(k): v for k, v in doc.items()}
    flags = {k: v for k, v in overrides.items() if v is not None}
    token = _FILE_DATA.set(data)
    try:
        return Settings(**flags)
    except ValidationError as e:
        from guardian.rules.loader import _field_path, _line_of

        raise RuleError([
            Problem(name, _line_of(doc, err["loc"]) if doc else 1, _field_path(err["loc"], doc or {}),
                    err["msg"].removeprefix("Value error, ") if err["type"] != "extra_forbidden" else "unknown setting")
            for err in e.errors()
        ]) from None
    finally:
        _FILE_DATA.reset(token)
