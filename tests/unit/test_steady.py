"""judge/steady.py: a watch's decision between rollouts (scale out and back in with hysteresis, cool-down,
min/max refused with the reason, attribution and rollback of the suspect, missing data never a pass). Pure:
verdicts, a state and the time in, a Decision out."""
from __future__ import annotations

import numpy as np
import pytest

from guardian.domain import (
    OPEN_ENDED_ANALYSIS,
    Action,
    Decision,
    Evidence,
    Outcome,
    Result,
    RolloutState,
    Strategy,
    Verdict,
)
from guardian.forecast.model import SeasonalModel
from guardian.judge import forecast
from guardian.judge.steady import after_action, decide_watch, reported_replicas, step
from guardian.rules.loader import parse_text
from guardian.rules.models import Watch

T0 = 1_767_614_400.0
RULES = Watch(min_replicas=1, max_replicas=3, cooldown=60, scale_in_after=120, attribution=1800)


def watch(**kw) -> RolloutState:
    return RolloutState(**({
        "id": "watch-shop-1", "service": "shop", "image": "shop:v3", "strategy": Strategy.WATCH, "steps": (100,),
        "target": "docker:", "step_seconds": 10.0, "analysis_seconds": OPEN_ENDED_ANALYSIS, "created_at": T0,
        "replicas": 2, "replicas_at_start": 2, "replicas_reported": True} | kw))


def scale_fail(replicas: int = 1) -> Verdict:
    return Verdict("traffic", Result.FAIL, "requests = 16 against forecast 10 ± 1: 3 periods in a row beyond 3σ",
                   value=16.0, statistic="z=+6.00; run 3/3 beyond 3σ", action=Action.SCALE, replicas=replicas)


def scale_pass(z: float = 0.2) -> Verdict:
    return Verdict("traffic", Result.PASS, "within 3σ", value=10.2, statistic=f"z={z:+.2f}; run 0/3 beyond 3σ",
                   action=Action.SCALE, replicas=1)


def errors(result: Result = Result.PASS, action: Action = Action.ROLLBACK) -> Verdict:
    return Verdict("error-rate", result, "errors / requests = 0.2 > 0.05", value=0.2, threshold=0.05,
                   action=action)


# -- scaling out ---------------------------------------------------------------------------------------------
def test_scale_out_only_after_the_forecast_checks_consecutive_periods():
    """The real forecast judge over ticks: two periods beyond 3σ warn, the third scales out by one."""
    check = next(c for c in parse_text(
        "service: shop\nchecks:\n  - {name: traffic, kind: baseline, signal: requests, direction: above, "
        "consecutive: 3, cusum: false, action: scale, replicas: 1}\n", "shop.yaml").checks)
    model = SeasonalModel(period=86400.0, bucket=60.0, profile=np.full(1440, 10.0), scale=np.full(1440, 1.0),
                          fitted_at=T0 - 3600, floor_fraction=0.0, min_sigma=0.01, service="shop", signal="requests")
    ev = Evidence(step_seconds=10.0, counters=frozenset({"requests"}), started_at=T0, models={"traffic": model})
    state = watch()
    first_scale = None
    for t, rate in enumerate([10.0] * 6 + [16.0] * 24):
        ev.append({"requests": {"canary": None, "baseline": rate * 10}})
        decision, state = step([forecast.evaluate(check, ev, t)], state, T0 + (t + 1) * 10, RULES, tick=t)
        if decision.action is Action.SCALE:
            first_scale = (t, decision)
            break
        assert decision.action is Action.CONTINUE, decision
    assert first_scale is not None
    t, decision = first_scale
    assert t == 23  # the third high period ends at tick 23 (periods of six 10 s ticks from tick 6)
    assert decision.replicas == 1 and "scale out: 2 -> 3 replicas" in decision.reason
    assert "3 periods in a row" in decision.reason


def test_the_cooldown_is_respected_then_the_next_scale_goes_out():
    cooling = decide_watch([scale_fail()], watch(last_scale_at=T0 - 30), T0, RULES)
    assert cooling.action is Action.CONTINUE and "cooling down" in cooling.reason and "30s" in cooling.reason
    after = decide_watch([scale_fail()], watch(last_scale_at=T0 - 61), T0, RULES)
    assert after.action is Action.SCALE and after.replicas == 1


def test_a_scale_beyond_max_is_refused_with_the_reason_and_said_once_per_cooldown():
    state = watch(replicas=3)
    decision, state = step([scale_fail()], state, T0, RULES)
    assert decision.action is Action.NOTIFY and decision.replicas == 0
    assert "refused: 3 -> 4 replicas would be above max_replicas 3" in decision.reason
    assert state.refused_at == T0
    again, state = step([scale_fail()], state, T0 + 10, RULES)
    assert again.action is Action.CONTINUE and "said 10s ago" in again.reason
    later, _ = step([scale_fail()], state, T0 + 70, RULES)
    assert later.action is Action.NOTIFY and "refused" in later.reason


def test_a_count_the_actuator_never_reported_is_said_to_be_tracked():
    decision = decide_watch([scale_fail()], watch(replicas_reported=False), T0, RULES)
    assert decision.action is Action.SCALE and "tracked: the actuator has not reported them" in decision.reason


# -- scaling back in ---------------------------------------------------------------------------------------------
def test_scale_in_only_after_a_sustained_return_to_the_forecast():
    state = watch(replicas=3, scaled_replicas=1, last_scale_at=T0 - 600)
    actions = []
    for i in range(14):
        verdicts = [scale_pass()] if i != 4 else [
            Verdict("traffic", Result.INCONCLUSIVE, "no data for the period", action=Action.SCALE, replicas=1)]
        decision, state = step(verdicts, state, T0 + 10 * i, RULES)
        actions.append(decision.action)
        if decision.action is Action.SCALE:
            break
    # tick 4 had no data: the calm restarts at tick 5, and scale_in_after (120 s) is reached at tick 17 -> not yet
    assert Action.SCALE not in actions
    assert state.calm_since == T0 + 50
    decision, state = step([scale_pass()], state, T0 + 170, RULES)
    assert decision.action is Action.SCALE and decision.replicas == -1
    assert "scale in: 3 -> 2 replicas" in decision.reason and "for 2m (scale_in_after 2m)" in decision.reason


def test_a_stricter_band_keeps_a_watch_scaled_out_while_the_signal_is_merely_within_sigma():
    strict = Watch(min_replicas=1, max_replicas=3, cooldown=60, scale_in_after=20, scale_in_within=0.5)
    state = watch(replicas=3, scaled_replicas=1)
    for i in range(10):
        decision, state = step([scale_pass(z=1.2)], state, T0 + 10 * i, strict)
        assert decision.action is Action.CONTINUE
    assert state.calm_since is None
    for i in range(10, 14):
        decision, state = step([scale_pass(z=0.3)], state, T0 + 10 * i, strict)
    assert decision.action is Action.SCALE and decision.replicas == -1


def test_nothing_to_scale_in_when_the_watch_added_nothing():
    state = watch(calm_since=T0 - 1000)
    assert decide_watch([scale_pass()], state, T0, RULES).action is Action.CONTINUE


def test_a_scale_in_below_min_is_refused():
    state = watch(replicas=1, scaled_replicas=1, calm_since=T0 - 600)  # someone else scaled it in meanwhile
    decision = decide_watch([scale_pass()], state, T0, RULES)
    assert decision.action is Action.NOTIFY
    assert "scale in -1 refused: 1 -> 0 replicas" in decision.reason and "below min_replicas 1" in decision.reason


# -- attribution -------------------------------------------------------------------------------------------------
SUSPECT = {"suspect": "r-42", "promoted_at": T0 - 600, "previous_image": "shop:v2"}


def test_a_breach_within_the_window_names_the_suspect_and_rolls_it_back():
    decision = decide_watch([errors(Result.FAIL)], watch(**SUSPECT), T0, RULES)
    assert decision.action is Action.ROLLBACK
    assert "suspect: rollout r-42 (shop:v3), promoted 10m ago" in decision.reason
    assert "back to shop:v2" in decision.reason


def test_a_scaling_within_the_window_names_the_suspect_too():
    decision = decide_watch([scale_fail()], watch(**SUSPECT), T0, RULES)
    assert decision.action is Action.SCALE and "suspect: rollout r-42 (shop:v3)" in decision.reason


def test_outside_the_window_a_rollback_check_only_notifies_naming_the_suspect():
    decision = decide_watch([errors(Result.FAIL)], watch(**(SUSPECT | {"promoted_at": T0 - 7200})), T0, RULES)
    assert decision.action is Action.NOTIFY
    assert "not rolled back" in decision.reason and "outside the 30m attribution window" in decision.reason
    assert "rollout r-42 (shop:v3)" in decision.reason


@pytest.mark.parametrize(("changes", "why"), [
    ({"previous_image": None}, "the version release r-42 replaced is not known"),
    ({"target": "nginx:/etc/nginx/up.conf"}, "only moves traffic between tracks"),
    ({"suspect": None, "promoted_at": None}, "no release the guardian promoted"),
])
def test_when_the_previous_version_cannot_be_had_a_rollback_check_notifies(changes, why):
    decision = decide_watch([errors(Result.FAIL)], watch(**(SUSPECT | changes)), T0, RULES)
    assert decision.action is Action.NOTIFY and why in decision.reason


def test_a_pause_check_cannot_pause_a_watch():
    decision = decide_watch([errors(Result.FAIL, Action.PAUSE)], watch(), T0, RULES)
    assert decision.action is Action.NOTIFY and "a watch pauses nothing" in decision.reason


# -- missing data --------------------------------------------------------------------------------------------------
def test_missing_data_is_never_a_pass_and_never_pauses():
    missing = [Verdict("error-rate", Result.INCONCLUSIVE, "no data: requests (baseline)", action=Action.ROLLBACK),
               Verdict("traffic", Result.ERROR, "metrics unavailable: connection refused", action=Action.SCALE,
                       replicas=1)]
    decision, state = step(missing, watch(scaled_replicas=1, replicas=3, calm_since=T0 - 1000), T0, RULES)
    assert decision.action is Action.CONTINUE
    assert "inconclusive" in decision.reason and "no data: requests (baseline)" in decision.reason
    assert [v.result for v in decision.verdicts] == [Result.INCONCLUSIVE, Result.ERROR]
    assert state.calm_since is None  # no data is no return to the forecast either
    nothing = decide_watch([Verdict("traffic", Result.INCONCLUSIVE, "no model", abstained=True,
                                    action=Action.SCALE)], watch(), T0, RULES)
    assert nothing.action is Action.CONTINUE and "nothing is known" in nothing.reason


def test_a_tick_is_judged_at_its_end_not_when_the_guard_got_to_it():
    state = watch(created_at=T0, last_scale_at=T0 + 20)  # scaled at the end of tick 1
    late = decide_watch([scale_fail()], state, T0 + 81.7, RULES, tick=7)  # tick 7 ends at T0 + 80: 60 s later
    assert late.action is Action.SCALE and late.at == T0 + 81.7


# -- the replicas the actuator tells ----------------------------------------------------------------------------------
def test_the_replicas_are_read_from_what_each_actuator_reports():
    assert reported_replicas(Outcome(True, "scale", "x", data={"stable": ["a", "b", "c"], "canary": []})) == 3
    assert reported_replicas(Outcome(True, "scale", "swarm: scaled", data={"from": 2, "to": 4, "replicas": 4})) == 4
    assert reported_replicas(Outcome(True, "scale", "kubernetes: ns/shop: scaled to 5 replicas")) == 5
    assert reported_replicas(Outcome(True, "scale", "noop: would scale", data={"key": "k"})) is None


def test_after_a_scale_the_replicas_are_reported_or_tracked_and_the_hysteresis_starts_over():
    before = watch(replicas=2, replicas_reported=False, calm_since=T0 - 300)
    scale = Decision(Action.SCALE, "out", tick=3, replicas=1)
    tracked = after_action(before, before, scale, Outcome(True, "scale", "noop"), T0 + 45)
    assert (tracked.replicas, tracked.replicas_reported, tracked.scaled_replicas) == (3, False, 1)
    assert tracked.calm_since is None and tracked.last_scale_at == T0 + 40  # tick 3's end
    told = after_action(before, before, scale, Outcome(True, "scale", "ok", data={"to": 5}), T0 + 45)
    assert (told.replicas, told.replicas_reported) == (5, True)
    failed = after_action(before, before, scale, Outcome(False, "scale", "daemon down"), T0 + 45)
    assert failed.replicas == 2 and failed.scaled_replicas == 0
