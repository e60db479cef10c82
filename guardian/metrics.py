"""The guardian's own Prometheus metrics (registry injected, so tests get a fresh one)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class GuardianMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.ticks = Counter("guardian_ticks_total", "Rollout ticks evaluated", registry=r)
        self.tick_seconds = Histogram("guardian_tick_duration_seconds", "Time to fetch, judge and act in one tick",
                                      registry=r, buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.tick_lag = Histogram("guardian_tick_lag_seconds", "How late a tick's evaluation starts: now minus the "
                                  "moment it became due (its window's end plus evaluation_delay)", registry=r,
                                  buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300))
        self.decisions = Counter("guardian_decisions_total", "Decisions by action", ["action"], registry=r)
        self.verdicts = Counter("guardian_verdicts_total", "Verdicts by check and result",
                                ["check", "result"], registry=r)
        self.source_errors = Counter("guardian_source_errors_total", "Ticks whose metrics could not be fetched",
                                     registry=r)
        self.actuator_failures = Counter("guardian_actuator_failures_total", "Actions that failed",
                                         ["action"], registry=r)
        self.alerts = Counter("guardian_alerts_received_total", "Alertmanager alerts received, by status",
                              ["status"], registry=r)
        self.rollouts = Gauge("guardian_rollouts", "Rollouts by phase", ["phase"], registry=r)
        self.canary_weight = Gauge("guardian_rollout_canary_weight",
                                   "Traffic percent on the new version, per rollout in flight",
                                   ["service", "rollout"], registry=r)
        self.watch_replicas = Gauge("guardian_watch_replicas", "Replicas of each watched service between rollouts, "
                                    "as its watch knows them (reported by the actuator, else tracked)",
                                    ["service", "watch"], registry=r)
        self.annotations = Counter("guardian_annotations_total", "Grafana annotations by result (sent, failed, "
                                   "dropped)", ["result"], registry=r)
        self.notifications = Counter("guardian_notifications_total", "Slack, Teams, webhook and e-mail notifications "
                                     "by route and result (sent, retried, failed, dropped)", ["route", "result"],
                                     registry=r)
        self.notification_queue = Gauge("guardian_notification_queue", "Notifications waiting to be sent, by route",
                                        ["route"], registry=r)
        self.grafana_dashboard = Gauge(
            "guardian_grafana_dashboard", "The configured Grafana dashboard UID as the start-up check found it: 1 "
            "for its state (found; missing: Grafana would file the annotations organisation-wide; unverified: the "
            "token may not read it; unreachable: Grafana not answering yet, retried; unchecked)", ["uid", "state"],
            registry=r)
