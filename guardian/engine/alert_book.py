"""The guard's alert book: the Alertmanager alerts firing now, what they ask of the rollouts in flight, and
the release freezes they impose. (What an alert is about and asks for is pure: guardian/engine/alerts.py.)

The firing alerts are read from the store once, then kept in step with what this process stores. With
`refresh_seconds` (replicas sharing one store: Alertmanager may post to any of them) they are re-read
from the store at most that often, by the guard's clock.

`receive` stores webhook posts and hands each rollout a newly firing alert asks to roll back or pause to
`react` (the guard acts on it under the rollout's lock); the next ticks keep judging with the alerts.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from guardian.clock import Clock
from guardian.domain import RolloutState, Verdict
from guardian.engine.alerts import StoredAlert, freezes, verdicts_for
from guardian.engine.store import StateStore
from guardian.errors import ReleaseFrozen
from guardian.rules.book import RuleBook
from guardian.rules.loader import RuleSet

React = Callable[[str, list[Verdict]], dict[str, Any] | None]  # rollout id, its alert verdicts -> what was done


class AlertBook:
    def __init__(self, store: StateStore, rulebook: RuleBook, labels: Mapping[str, str], clock: Clock, *,
                 refresh_seconds: float | None = None) -> None:
        self.store, self.rulebook, self.labels, self.clock = store, rulebook, dict(labels), clock
        self.refresh_seconds = refresh_seconds
        self._firing: dict[str, StoredAlert] | None = None  # firing alerts by fingerprint, read from the store once
        self._read_at = float("-inf")  # when they were last re-read (refresh_seconds)
        self._lock = threading.Lock()

    def firing(self) -> list[StoredAlert]:
        if self.refresh_seconds is not None and (now := self.clock.now()) - self._read_at >= self.refresh_seconds:
            fresh = {a.fingerprint: a for a in self.store.alerts(firing_only=True)}
            with self._lock:
                self._firing = fresh
            self._read_at = now
        with self._lock:
            if self._firing is None:
                self._firing = {a.fingerprint: a for a in self.store.alerts(firing_only=True)}
            return list(self._firing.values())

    def verdicts(self, state: RolloutState, ruleset: RuleSet, alerts: list[StoredAlert] | None = None
                 ) -> list[Verdict]:
        """FAIL verdicts for the firing alerts (or `alerts`) about this rollout, with what each asks for."""
        firing = self.firing() if alerts is None else alerts
        if not firing:
            return []
        arms = ruleset.rules.arms
        return verdicts_for(state, firing, ruleset.rules.alerts, self.labels, arm_label=arms.label,
                            baseline=arms.baseline)

    def freezing(self, service: str) -> list[StoredAlert]:
        """The critical alerts firing for `service`: while there are any, no new rollout of it starts."""
        return [a for a in self.firing() if freezes(a, service, self.labels)]

    def hold_release(self, service: str, *, force: bool = False) -> None:
        """Raise ReleaseFrozen while a critical alert freezes `service`'s releases (unless `force`)."""
        frozen = self.freezing(service)
        if frozen and not force:
            names = ", ".join(f"{a.name} (firing since {time.strftime('%H:%M:%S', time.localtime(a.starts_at))})"
                              for a in frozen)
            raise ReleaseFrozen(f"release freeze: critical alert(s) firing for {service}: {names}; "
                                "start with force to override")

    def receive(self, posts: list[list[StoredAlert]], react: React) -> list[dict[str, Any]]:
        """Store several webhook posts at once, as if they came one after the other: one store transaction
        for all their alerts, one pass over the rollouts in flight (`react` for each one a newly firing alert
        asks to roll back or pause), and each post's own answer: its alerts received and changed, and what
        was done to the rollouts its newly firing alerts are about."""
        self.firing()  # loaded before the store changes, then kept in step with it
        with self._lock:
            changed = self.store.save_alerts([a for post in posts for a in post])
            for a in changed:
                if self._firing is None:  # (loaded just above; else the next read loads what was stored)
                    break
                if a.firing:
                    self._firing[a.fingerprint] = a
                else:
                    self._firing.pop(a.fingerprint, None)
        acted: list[tuple[RolloutState, RuleSet, dict[str, Any]]] = []
        fresh = [a for a in changed if a.firing]
        if fresh:
            for state in self.store.list(active_only=True):
                ruleset = self.rulebook.for_service(state.service)
                verdicts = self.verdicts(state, ruleset, fresh)
                if verdicts and (result := react(state.id, verdicts)) is not None:
                    acted.append((state, ruleset, result))
        changed_ids = {id(a) for a in changed}  # the store hands back the very objects it was given
        answers = []
        for post in posts:
            mine = [a for a in post if id(a) in changed_ids]
            mine_fresh = [a for a in mine if a.firing]
            answers.append({"received": len(post), "changed": len(mine), "acted": [
                result for state, ruleset, result in acted
                if len(posts) == 1 or (mine_fresh and self.verdicts(state, ruleset, mine_fresh))]})
        return answers


__all__ = ["AlertBook", "React"]
