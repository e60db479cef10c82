"""What a watch judges and how it asks (the Guard's side of a watch; engine/watches.py keeps them running).

Below the Guard and the WatchKeeper both: plain functions of a rule set, an action request or a state.
"""
from __future__ import annotations

import contextlib
import dataclasses

from guardian.actuators import ActionRequest
from guardian.domain import Action, RolloutState, Strategy
from guardian.judge.steady import DEFAULT_WATCH
from guardian.metrics import GuardianMetrics
from guardian.rules.loader import RuleSet
from guardian.rules.models import ForecastCheck, ThresholdCheck, Watch


def watch_rules(ruleset: RuleSet) -> Watch:
    """The rule file's `watch:` section, or the defaults (a service the settings' watch_services name)."""
    return ruleset.rules.watch or DEFAULT_WATCH


class WatchRulesets:
    """`ruleset` with only the checks a watch runs: `watch.checks`, else every threshold and baseline check (a
    compare check needs a canary beside the baseline). The same object for the same rule set (the arms are
    kept, so a planned selection is taken by the tick): remembered per rule set, the last 256."""

    def __init__(self) -> None:
        self._filtered: dict[int, tuple[RuleSet, RuleSet]] = {}

    def __call__(self, ruleset: RuleSet) -> RuleSet:
        hit = self._filtered.get(id(ruleset))
        if hit is not None and hit[0] is ruleset:
            return hit[1]
        filtered = watch_ruleset(ruleset)
        if len(self._filtered) > 256:
            self._filtered.clear()
        self._filtered[id(ruleset)] = (ruleset, filtered)
        return filtered


def watch_ruleset(ruleset: RuleSet) -> RuleSet:
    """`ruleset` with only the checks a watch runs (WatchRulesets remembers them)."""
    names = watch_rules(ruleset).checks
    kept = [c for c in ruleset.rules.checks
            if (c.name in names if names is not None else isinstance(c, ThresholdCheck | ForecastCheck))]
    return dataclasses.replace(ruleset, rules=ruleset.rules.model_copy(update={"checks": kept}))


def watch_request(request: ActionRequest) -> ActionRequest:
    """A watch's action in the words the actuators know (engine/watches.py): strategy observe; only a ROLLBACK
    names an image, the suspect's."""
    return dataclasses.replace(request, strategy=Strategy.OBSERVE.value,
                               image=request.image if request.action is Action.ROLLBACK else "")


def watch_gauges(metrics: GuardianMetrics, state: RolloutState) -> bool:
    """For a watch: its replicas on /metrics (`guardian_watch_replicas`) while it is in flight, the series removed
    once it ended; True. A watch is counted there, not among the rollouts (`guardian_rollouts`, the canary's
    weight). False for a rollout."""
    if state.strategy is not Strategy.WATCH:
        return False
    if not state.phase.terminal and state.replicas is not None:
        metrics.watch_replicas.labels(state.service, state.id).set(state.replicas)
    else:
        with contextlib.suppress(KeyError):
            metrics.watch_replicas.remove(state.service, state.id)
    return True


__all__ = ["WatchRulesets", "watch_gauges", "watch_request", "watch_rules", "watch_ruleset"]
