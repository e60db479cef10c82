"""policy.decide: precedence of verdicts, missing data never promotes, analysis time, resume."""
from __future__ import annotations

from guardian.domain import Action, Phase, Result, RolloutState, Strategy, Verdict
from guardian.judge.policy import Policy, decide


def _state(**kw) -> RolloutState:
    base = dict(id="r1", service="checkout", image="v2", strategy=Strategy.CANARY, steps=(10, 50, 100),
                target="noop", step_seconds=2.0, analysis_seconds=10.0, created_at=0.0, step_started_at=0.0)
    return RolloutState(**(base | kw))


def _v(result: Result, action: Action = Action.ROLLBACK, breaching: bool = False, name: str = "c") -> Verdict:
    return Verdict(check=name, result=result, reason=f"{name} {result.value}", action=action, breaching=breaching)


def test_all_pass_advances_only_after_the_analysis_time():
    assert decide([_v(Result.PASS)], _state(), now=5).action is Action.CONTINUE
    assert decide([_v(Result.PASS)], _state(), now=10).action is Action.ADVANCE


def test_all_pass_on_the_last_step_promotes():
    assert decide([_v(Result.PASS)], _state(step_index=2), now=11).action is Action.PROMOTE


def test_fail_beats_everything_and_rollback_beats_pause():
    verdicts = [_v(Result.PASS), _v(Result.INCONCLUSIVE), _v(Result.FAIL, Action.PAUSE, name="a"),
                _v(Result.FAIL, Action.ROLLBACK, name="b")]
    d = decide(verdicts, _state(), now=100)
    assert d.action is Action.ROLLBACK and "b" in d.reason and "a fail" not in d.reason
    assert len(d.verdicts) == 4


def test_missing_data_pauses_and_never_promotes():
    for result in (Result.INCONCLUSIVE, Result.ERROR):
        d = decide([_v(Result.PASS), _v(result)], _state(step_index=2), now=1000)
        assert d.action is Action.PAUSE


def test_no_checks_is_not_a_pass():
    assert decide([], _state(step_index=2), now=1000).action is Action.PAUSE


def test_inconclusive_can_be_configured_to_hold_instead_of_pause():
    d = decide([_v(Result.INCONCLUSIVE)], _state(), now=1000, policy=Policy(on_inconclusive=Action.CONTINUE))
    assert d.action is Action.CONTINUE


def test_a_pending_breach_holds_the_step():
    d = decide([_v(Result.PASS), _v(Result.INCONCLUSIVE, breaching=True)], _state(), now=1000)
    assert d.action is Action.CONTINUE


def test_guardian_pause_resumes_when_evidence_is_conclusive_again():
    paused = _state(phase=Phase.PAUSED, paused_by="guardian")
    assert decide([_v(Result.PASS)], paused, now=1000).action is Action.RESUME
    assert decide([_v(Result.FAIL)], paused, now=1000).action is Action.ROLLBACK


def test_scale_has_a_cooldown_and_carries_the_replica_delta():
    v = Verdict(check="forecast", result=Result.FAIL, reason="3 periods beyond 3 sigma", action=Action.SCALE,
                replicas=1)
    d = decide([v], _state(), now=100)
    assert d.action is Action.SCALE and d.replicas == 1
    assert decide([v], _state(), now=100, last_scale_at=90).action is Action.CONTINUE


def test_notify_does_not_block_the_rollout_but_is_reported():
    d = decide([_v(Result.FAIL, Action.NOTIFY)], _state(), now=100)
    assert d.action is Action.NOTIFY


def test_warming_up_holds_instead_of_pausing():
    v = Verdict(check="c", result=Result.INCONCLUSIVE, reason="warming up", warming_up=True)
    assert decide([v], _state(), now=1000).action is Action.CONTINUE


# -- power (judge/power.py): the gate at the last comparative step -------------------------------------------
def _powered(powered: bool, name: str = "errors", action: Action = Action.ROLLBACK) -> Verdict:
    said = ("could have detected ×1.7 (3.4% errors) with 80% power (5,000 canary requests over 30 ticks; ×2 asked)"
            if powered else "could only have detected ×4.1 (8.2% errors) with 80% power (300 canary requests over "
            "30 ticks; ×2 asked): ~2,300 more canary requests needed")
    return Verdict(check=name, result=Result.PASS, reason=f"{name} pass", action=action, detectable=said,
                   powered=powered, needed=0.0 if powered else 2300.0)


P99 = Verdict(check="p99", result=Result.PASS, reason="p99 pass", powered=True,
              detectable="could have detected +35% with 80% power (beyond the margin in 70% of ticks; its margin "
                         "+20%, 40 paired ticks; +50% asked)")


def test_the_power_gate_is_the_last_step_compared_with_a_baseline():
    from guardian.judge.policy import power_gate

    canary = _state(steps=(10, 50, 100))
    assert [power_gate(canary.evolve(step_index=i)) for i in range(3)] == [False, True, False]
    assert power_gate(_state(steps=(10, 50), step_index=1))  # no final 100%: the last step
    assert power_gate(_state(steps=(100,), strategy=Strategy.OBSERVE))  # the baseline runs on: the last step
    assert power_gate(_state(steps=(100,), strategy=Strategy.BLUE_GREEN))


def test_a_powered_gate_goes_on_saying_what_each_check_could_have_detected():
    state = _state(step_index=1, max_analysis_seconds=30.0, underpowered="pause")
    d = decide([_powered(True), P99], state, now=10)
    assert d.action is Action.ADVANCE
    assert "powered (could have detected with 80% power: errors ×1.7, p99 +35%)" in d.reason
    last = decide([_powered(True), P99], _state(step_index=2), now=10)
    assert last.action is Action.PROMOTE and "errors ×1.7, p99 +35%" in last.reason


def test_an_underpowered_gate_extends_the_analysis_then_pauses_with_the_requests_needed():
    state = _state(step_index=1, max_analysis_seconds=30.0, underpowered="pause")
    verdicts = [_powered(False), P99]
    d = decide(verdicts, state, now=12)
    assert d.action is Action.CONTINUE
    assert d.reason.startswith("underpowered, analysis at 50% extended up to 30s (18s left): errors could only "
                               "have detected ×4.1")
    assert "~2,300 more canary requests needed" in d.reason and "p99" not in d.reason.split(": errors")[0]
    paused = decide(verdicts, state, now=30)
    assert paused.action is Action.PAUSE
    assert paused.reason.startswith("underpowered after 30s of analysis at 50% (max_analysis 30s; underpowered: "
                                    "pause): errors could only have detected ×4.1")
    assert "~2,300 more canary requests needed" in paused.reason
    held = state.evolve(phase=Phase.PAUSED, paused_by="guardian", reason=paused.reason)
    still = decide(verdicts, held, now=40)
    assert still.action is Action.CONTINUE and still.reason.startswith("underpowered, still paused: errors")
    assert decide([_powered(True), P99], held, now=50).action is Action.RESUME  # the evidence came
    assert decide([Verdict("errors", Result.FAIL, "worse")], held, now=50).action is Action.ROLLBACK


def test_underpowered_promote_goes_on_after_max_analysis_saying_so():
    state = _state(step_index=1, max_analysis_seconds=30.0, underpowered="promote")
    assert decide([_powered(False)], state, now=20).action is Action.CONTINUE
    d = decide([_powered(False)], state, now=30)
    assert d.action is Action.ADVANCE
    assert "underpowered after 30s of analysis (underpowered: promote; could have detected with 80% power: " \
           "errors ×4.1 (×2 asked))" in d.reason
    last = decide([_powered(False)], _state(step_index=2), now=30)  # at 100%: said, not held again
    assert last.action is Action.PROMOTE and "underpowered (could have detected with 80% power: errors ×4.1" in \
        last.reason


def test_only_gating_checks_with_a_known_power_hold_the_gate():
    state = _state(step_index=1, max_analysis_seconds=30.0, underpowered="pause")
    assert decide([_powered(False, action=Action.NOTIFY)], state, now=10).action is Action.ADVANCE
    assert decide([_v(Result.PASS)], state, now=10).action is Action.ADVANCE  # no power known: as before
    old = _state(step_index=1)  # a state stored before max_analysis existed: no extension, promoted as before
    assert decide([_powered(False)], old, now=10).action is Action.ADVANCE


def test_power_is_computed_where_it_decides_or_is_said():
    from guardian.judge.policy import power_due

    gate = _state(step_index=1, step_started_at=100.0)
    assert not power_due(gate, now=105) and power_due(gate, now=108)  # the analysis' last tick (2 s) on
    assert not power_due(_state(step_index=0), now=1000)  # an earlier step: not needed
    assert power_due(_state(step_index=2), now=1000)  # the last step: its PROMOTE states it
    held = gate.evolve(phase=Phase.PAUSED, paused_by="guardian", reason="underpowered after 30s …")
    assert power_due(held, now=0) and not power_due(held.evolve(reason="no data"), now=1000)
    assert not power_due(gate.evolve(strategy=Strategy.WATCH), now=1000)
