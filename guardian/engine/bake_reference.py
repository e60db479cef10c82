"""The service before the rollout: what a bake compares the new version with (judge/bake.py), and the level
the rate test's fast path judges the canary's errors against (judge/sequential.py, level test).

At the start of a rollout with a bake the guard asks the source, once, for the signals its compare checks
read over the rule file's `bake_before` window that ends at the start, from the baseline arm (before a
rollout every instance is the previous version). The answer is frozen with the rollout's forecast models
(the models snapshot, key BAKE_REFERENCE_KEY) so a recording carries it and a replay judges the same; the
bake's first tick is added when its BAKE takes effect (Guard._bake_begins).

A bake that could never be judged is refused at the start (ModelMissing, 422 like a forecast check without
its model): a gating compare check with no pre-rollout data whose rollout has no step below 100%, so the
previous version never serves beside the new one before the bake either. With a step below 100% the
previous version's own ticks are the reference, and a missing pre-rollout window is only noted.

Every rollout with a rate check fetches the same window (`window`), frozen under BEFORE_ROLLOUT_KEY: without it
(a source that did not answer, a recording that lacks it) the rate test runs without its level test.

The window ends at the start; for a rollout whose ticks are aligned to the tick grid, at the grid line before the
start (less than a tick earlier), so rollouts started within the same tick length share the window and a batching
source reads all of theirs in one query (`before_requests`, planned with the first ticks: Guard.plan).
"""
from __future__ import annotations

import math
from typing import Any

from loguru import logger

from guardian.domain import RolloutState
from guardian.errors import ModelMissing, NoData, SourceUnavailable
from guardian.rules.loader import RuleSet
from guardian.rules.models import ADVISORY_ACTIONS, CompareCheck
from guardian.sources import ArmSelector, MetricSource, SignalQuery


def level_signals(ruleset: RuleSet) -> bool:
    """Does any compare check run the rate test (whose level test reads the pre-rollout window)?"""
    return any(isinstance(c, CompareCheck) and c.kind_of_test == "rate" for c in ruleset.rules.checks)


def bake_signals(ruleset: RuleSet) -> dict[str, list[CompareCheck]]:
    """signal -> the compare checks (rate and sign tests) whose bake reads it."""
    out: dict[str, list[CompareCheck]] = {}
    for check in ruleset.rules.checks:
        if isinstance(check, CompareCheck) and check.kind_of_test in ("rate", "sign"):
            for signal in check.signals:
                out.setdefault(signal, []).append(check)
    return out


def before_window(state: RolloutState, ruleset: RuleSet) -> tuple[float, float]:
    """[start, end) of the pre-rollout window: it ends at the start, or at the grid line before it (aligned ticks)."""
    end = state.created_at if state.tick_origin is None else \
        math.floor(state.created_at / state.step_seconds) * state.step_seconds
    return end - ruleset.rules.bake_before, end


def before_requests(state: RolloutState, ruleset: RuleSet, baseline: ArmSelector | None) -> list[tuple]:
    """The fetches `BakeReference.window` makes for this rollout (for a batching source's plan)."""
    start, end = before_window(state, ruleset)
    if baseline is None or start >= end:
        return []
    return [(SignalQuery(signal, q.type, q.promql), state.service, baseline, start, end)
            for signal in bake_signals(ruleset) if (q := ruleset.queries.get(signal)) is not None]


class BakeReference:
    def __init__(self, source: MetricSource):
        self.source = source

    def before(self, state: RolloutState, ruleset: RuleSet, baseline: ArmSelector | None,
               window: dict[str, Any] | None = None) -> dict[str, Any]:
        """The pre-rollout window's value of each signal a bake judges (None where the source had none), and
        why any is missing (`window`: what `window` fetched already). Raises ModelMissing when a gating check's
        bake could never be judged."""
        got = window if window is not None else self.window(state, ruleset, baseline)
        if got["missing"]:
            self._refuse_or_note(state, ruleset, got["missing"])
        return {"from_tick": None, **got}

    def window(self, state: RolloutState, ruleset: RuleSet, baseline: ArmSelector | None) -> dict[str, Any]:
        """The pre-rollout window's value of each signal the compare checks read, from the baseline arm (None
        where the source had none), and why any is missing; never raises."""
        start, end = before_window(state, ruleset)
        values: dict[str, float | None] = {}
        missing: dict[str, str] = {}
        for signal in bake_signals(ruleset):
            values[signal] = None
            q = ruleset.queries.get(signal)
            if q is None:
                missing[signal] = "no query"
                continue
            if baseline is None or start >= end:
                missing[signal] = "no baseline arm to read" if baseline is None else "bake_before is 0s"
                continue
            try:
                values[signal] = self.source.fetch(SignalQuery(signal, q.type, q.promql), state.service, baseline,
                                                   start, end)
            except NoData as e:
                missing[signal] = str(e) or "no data"
            except SourceUnavailable as e:
                missing[signal] = f"the source did not answer: {e}"
            except ValueError as e:
                missing[signal] = str(e)
        return {"window": [start, end], "before": values, "missing": missing}

    @staticmethod
    def _refuse_or_note(state: RolloutState, ruleset: RuleSet, missing: dict[str, str]) -> None:
        said = "; ".join(f"{signal}: {why}" for signal, why in missing.items())
        side_by_side = any(w < 100 for w in state.steps)
        gating = sorted({c.name for signal in missing for c in bake_signals(ruleset)[signal]
                         if not c.optional and c.action not in ADVISORY_ACTIONS})
        if gating and not side_by_side:
            raise ModelMissing(
                f"the bake ({state.bake_seconds:g}s) of {', '.join(gating)} cannot be judged: no data from the "
                f"service in the {ruleset.rules.bake_before:g}s before the rollout ({said}), and no step below "
                "100% lets the previous version serve beside the new one; give steps below 100, a longer "
                "bake_before, or bake: 0")
        logger.info("rollout {} of {}: the bake compares with the previous version's own ticks; the pre-rollout "
                    "window had no data ({})", state.id, state.service, said)
