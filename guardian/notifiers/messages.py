"""What a notification says, from a decision event (pure: no I/O, no clock).

An event is the dict `Guard._notify` hands every notifier (rollout id, service, image, action, phase, reason,
verdicts, logs, ...). `event_kind` names the event a route subscribes to; `message_for` turns an event into a
`Message`: what happened in one line, the failing checks with value, threshold, sample size and statistic, the
top log template when the decision carries one, and a link to the rollout. The channel formats (chat.py) only
lay a `Message` out; none of them reads the event itself.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

# the events a route may subscribe to (docs/notifications.md)
EVENTS = ("start", "pause", "approval", "rollback", "promote", "scale", "bake_failed")

_HEADLINE = {
    "start": "started", "pause": "paused", "approval": "waits for approval", "rollback": "rolled back",
    "promote": "promoted", "scale": "scaled out", "bake_failed": "rolled back: its bake failed",
}


def event_kind(event: dict[str, Any]) -> str | None:
    """The subscribable kind of a decision event, or None for decisions no route hears (advance, continue, ...).
    A rollback whose rollout had entered its bake is `bake_failed`."""
    action = event.get("action")
    if action == "rollback":
        return "bake_failed" if event.get("baking") else "rollback"
    if action in ("start", "pause", "approval", "promote", "scale"):
        return str(action)
    return None


@dataclass(frozen=True)
class Failing:
    """One check behind the decision, with its evidence."""

    check: str
    result: str
    reason: str
    value: float | None
    threshold: float | None
    sample_size: float | None
    statistic: str | None

    def evidence(self) -> str:
        """"value 0.21 vs threshold 0.05 (e_value, n=1,204)": the numbers the verdict carries, in one line."""
        parts = []
        if self.value is not None:
            parts.append(f"value {_num(self.value)}")
        if self.threshold is not None:
            parts.append(f"threshold {_num(self.threshold)}")
        extra = [x for x in (self.statistic, f"n={_num(self.sample_size)}" if self.sample_size is not None else None)
                 if x]
        text = " vs ".join(parts) if parts else "no value"
        return f"{text} ({', '.join(extra)})" if extra else text


@dataclass(frozen=True)
class Message:
    kind: str
    rollout_id: str
    service: str
    image: str
    title: str  # "checkout rolled back" (plain text)
    reason: str
    phase: str
    weight: int | None
    at: float | None
    source: str
    failing: tuple[Failing, ...] = ()
    log_template: str | None = None  # the top log template new in (or far more frequent in) the canary
    log_counts: str | None = None  # "14x in canary vs 0x in baseline"
    link: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    by: str | None = None  # the operator who acted (a named operator token), when a person did

    @property
    def who(self) -> str:
        """Who decided, for people to read: the operator's name, else the decision's source."""
        return f"{self.by} ({self.source})" if self.by else self.source


def _num(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return str(x)
    if x == int(x) and abs(x) < 1e15:
        return f"{int(x):,}"
    return f"{x:.4g}"


def rollout_link(base_url: str | None, rollout_id: str) -> str | None:
    """Where a reader follows the rollout: the UI page under `base_url` (the guardian's public URL)."""
    if not base_url:
        return None
    return f"{base_url.rstrip('/')}/ui/rollouts/{rollout_id}"


def message_for(event: dict[str, Any], *, base_url: str | None = None) -> Message | None:
    """The message for a decision event, or None if no route hears its kind."""
    kind = event_kind(event)
    if kind is None:
        return None
    verdicts = event.get("verdicts") or []
    # the checks behind the decision: those that failed; for a pause, also those that could not judge
    wanted = ("fail", "inconclusive") if kind in ("pause", "approval") else ("fail",)
    failing = tuple(
        Failing(str(v.get("check")), str(v.get("result")), str(v.get("reason") or ""), v.get("value"),
                v.get("threshold"), v.get("sample_size"), v.get("statistic"))
        for v in verdicts if v.get("result") in wanted)
    logs = event.get("logs") or []
    top = logs[0] if logs else None
    service = str(event.get("service") or "?")
    return Message(
        kind=kind, rollout_id=str(event.get("rollout_id") or "?"), service=service,
        image=str(event.get("image") or ""), title=f"{service} {_HEADLINE[kind]}",
        reason=str(event.get("reason") or ""), phase=str(event.get("phase") or ""), weight=event.get("weight"),
        at=event.get("at"), source=str(event.get("source") or "guardian"), failing=failing,
        log_template=str(top.get("template")) if top and top.get("template") is not None else None,
        log_counts=(f"{top.get('canary_count')}x in canary vs {top.get('baseline_count')}x in baseline"
                    if top and top.get("canary_count") is not None else None),
        link=rollout_link(base_url, str(event.get("rollout_id") or "")),
        by=str(event["by"]) if event.get("by") else None,
    )
