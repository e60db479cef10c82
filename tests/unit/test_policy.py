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
