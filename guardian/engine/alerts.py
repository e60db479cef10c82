"""Alertmanager alerts into rollouts: the webhook payload, which rollouts an alert is about, and what
it asks for. Pure: no I/O, no clock (the store keeps the alerts; the API and the guard call these).

Alertmanager's webhook receiver (payload version "4", its documentation's `webhook_config`):

    {"version": "4", "groupKey": "...", "truncatedAlerts": 0, "status": "firing", "receiver": "guardian",
     "groupLabels": {...}, "commonLabels": {...}, "commonAnnotations": {...}, "externalURL": "...",
     "alerts": [{"status": "firing", "labels": {...}, "annotations": {...}, "startsAt": "RFC3339",
                 "endsAt": "RFC3339", "generatorURL": "...", "fingerprint": "..."}]}

Matching. An alert is about a rollout in flight when its `service` label names the rollout's service
and every other identifying label it carries agrees with the rollout: `version` with the image's version
(its tag: guardian/images.py), `image` with the image, `namespace` with the rollout's namespace
(rollouts have none yet, so an alert naming one matches nothing). The label names are configurable
(`alert_labels` in the settings). An alert whose arm label names the baseline (`track="baseline"`) is
about the old version, not the new one: it is stored and shown, and stops no rollout.

What an alert asks for comes from the rule file's `alerts:` section (first route whose labels all
match), else the defaults: `severity: critical` -> rollback, `severity: warning` -> pause, anything
else -> notify (recorded, changes nothing). A firing alert becomes a FAIL verdict carrying that
action; a resolved one no longer counts.

Size. A well-formed payload is accepted whatever its number of alerts, labels or annotations and however
long its group key or generator URLs: Alertmanager retries 5xx but never a 4xx, so a group refused for its
size would be lost, and `max_alerts: 0` (no limit, deploy/alertmanager.yml) sends a group whole. The only
bound is the webhook's body limit (`alerts_max_bytes`, 32 MiB by default: about 60,000 alerts of 500 bytes).
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from guardian.domain import Action, Result, RolloutState, Verdict
from guardian.images import image_version
from guardian.rules.models import AlertRoute

DEFAULT_ROUTES = (AlertRoute(match={"severity": "critical"}, action="rollback"),
                  AlertRoute(match={"severity": "warning"}, action="pause"))
DEFAULT_LABELS = {"service": "service", "version": "version", "image": "image", "namespace": "namespace"}


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)


class Alert(_Model):
    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: datetime = Field(alias="startsAt")
    ends_at: datetime | None = Field(None, alias="endsAt")
    generator_url: str = Field("", alias="generatorURL")
    fingerprint: str = Field(min_length=1, max_length=128)

    @property
    def name(self) -> str:
        return self.labels.get("alertname", "unnamed")


class WebhookPayload(_Model):
    version: Literal["4"]
    group_key: str = Field(alias="groupKey")
    truncated_alerts: int = Field(0, alias="truncatedAlerts", ge=0)
    status: Literal["firing", "resolved"]
    receiver: str = ""
    group_labels: dict[str, str] = Field(default_factory=dict, alias="groupLabels")
    common_labels: dict[str, str] = Field(default_factory=dict, alias="commonLabels")
    common_annotations: dict[str, str] = Field(default_factory=dict, alias="commonAnnotations")
    external_url: str = Field("", alias="externalURL")
    alerts: list[Alert]  # any number: Alertmanager retries no 4xx, so a refused group would be lost


@dataclass(frozen=True)
class StoredAlert:
    """An alert as the guardian keeps it: the latest word on its fingerprint."""

    fingerprint: str
    name: str
    status: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: float
    ends_at: float | None
    received_at: float
    group_key: str = ""

    @property
    def firing(self) -> bool:
        return self.status == "firing"


def rollout_identity(state: RolloutState) -> dict[str, str | None]:
    return {"service": state.service, "version": image_version(state.image), "image": state.image, "namespace": None}


def matches(labels: Mapping[str, str], state: RolloutState, label_names: Mapping[str, str] = DEFAULT_LABELS,
            *, arm_label: str = "track", baseline: str = "baseline") -> bool:
    """Is the alert with these labels about this rollout's new version?"""
    service_label = label_names.get("service", "service")
    if labels.get(service_label) != state.service:
        return False
    if labels.get(arm_label) == baseline:
        return False
    identity = rollout_identity(state)
    for attribute, label in label_names.items():
        if attribute == "service" or label not in labels:
            continue
        if identity.get(attribute) is None or labels[label] != identity[attribute]:
            return False
    return True


def route(labels: Mapping[str, str], routes: Sequence[AlertRoute] = ()) -> Action:
    """The action the first matching route (the rule file's, then the defaults) asks for."""
    for r in (*routes, *DEFAULT_ROUTES):
        if all(labels.get(k) == v for k, v in r.match.items()):
            return Action(r.action)
    return Action.NOTIFY


def _number(text: str | None) -> float | None:
    try:
        value = float(text) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def verdict(alert: StoredAlert, action: Action) -> Verdict:
    """A firing alert as a FAIL verdict. Value and threshold come from the annotations `value` and
    `threshold` when the alert rule writes them (`{{ $value }}`), else 1 (firing) against 0."""
    a = alert.annotations
    summary = a.get("summary") or a.get("description") or ""
    since = datetime.fromtimestamp(alert.starts_at).isoformat(timespec="seconds")
    value, threshold = _number(a.get("value")), _number(a.get("threshold"))
    labels = ",".join(f"{k}={v}" for k, v in sorted(alert.labels.items()) if k != "alertname")
    return Verdict(
        check=f"alert:{alert.name}", result=Result.FAIL, action=action,
        reason=(f"Alertmanager alert {alert.name} firing since {since}" + (f": {summary}" if summary else "")
                + f" ({labels}) -> {action.value}"),
        value=1.0 if value is None else value, threshold=0.0 if threshold is None else threshold,
        sample_size=1, statistic=f"alertmanager firing, fingerprint {alert.fingerprint}",
    )


def verdicts_for(state: RolloutState, alerts: Iterable[StoredAlert], routes: Sequence[AlertRoute] = (),
                 label_names: Mapping[str, str] = DEFAULT_LABELS, *, arm_label: str = "track",
                 baseline: str = "baseline") -> list[Verdict]:
    """FAIL verdicts for the firing alerts about this rollout, one per alert (sorted, stable)."""
    out = []
    for alert in sorted(alerts, key=lambda x: (x.name, x.fingerprint)):
        if alert.firing and matches(alert.labels, state, label_names, arm_label=arm_label, baseline=baseline):
            out.append(verdict(alert, route(alert.labels, routes)))
    return out


def freezes(alert: StoredAlert, service: str, label_names: Mapping[str, str] = DEFAULT_LABELS) -> bool:
    """A critical alert firing for the service freezes its releases: no new rollout starts."""
    return (alert.firing and alert.labels.get(label_names.get("service", "service")) == service
            and alert.labels.get("severity") == "critical")
