"""`kind: baseline` checks: a signal against its frozen seasonal 3σ forecast, period by period.

The model here is flat at 10 requests/s with σ = 1 (one-minute buckets over a day), so a period's
z-score is simply (rate − 10). Ticks are 10 s, so a period of 60 s is six ticks.
"""
from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pytest

from guardian.actuators.noop import NoopActuator
from guardian.clock import FakeClock
from guardian.domain import Action, Evidence, Phase, Result, Strategy
from guardian.engine.guard import Guard, GuardConfig, StartSpec
from guardian.engine.replay import replay_recording
from guardian.engine.store import SQLiteStore
from guardian.errors import ModelMissing, RuleError
from guardian.forecast.model import SeasonalModel
from guardian.forecast.model_files import ModelDirectory
from guardian.judge.forecast import evaluate
from guardian.rules.book import RuleBook
from guardian.rules.loader import RuleSet, parse_text
from guardian.sources.recording import RecordingSource

START = 1_767_614_400.0  # the rollout's start; the model is fitted up to an hour before
STEP = 10.0

SCALE_RULES = """
service: shop
checks:
  - name: traffic-forecast
    kind: baseline
    signal: requests
    direction: above
    consecutive: 3
    cusum: false
    action: scale
    replicas: 1
"""


def flat_model(level: float = 10.0, sigma: float = 1.0, fitted_at: float = START - 3600) -> SeasonalModel:
    buckets = 1440
    return SeasonalModel(period=86400.0, bucket=60.0, profile=np.full(buckets, level), scale=np.full(buckets, sigma),
                         fitted_at=fitted_at, floor_fraction=0.0, min_sigma=0.01, service="shop", signal="requests")


def check_of(yaml_text: str, name: str | None = None):
    rules = parse_text(yaml_text, "rules/shop.yaml")
    return next(c for c in rules.checks if name is None or c.name == name)


def evidence(rates: list[float | None], model: SeasonalModel | str | None = None, name: str = "traffic-forecast",
             canary_share: float = 0.25) -> Evidence:
    """Request counters per tick for a service serving `rates[t]` requests/s, split across the arms."""
    ev = Evidence(step_seconds=STEP, counters=frozenset({"requests"}), started_at=START,
                  models={name: model if model is not None else flat_model()})
    for r in rates:
        if r is None:
            ev.append({"requests": {"canary": None, "baseline": None}})
        else:
            total = r * STEP
            ev.append({"requests": {"canary": total * canary_share, "baseline": total * (1 - canary_share)}})
    return ev


def verdicts(check, ev: Evidence):
    return [evaluate(check, ev, t) for t in range(ev.ticks)]


def test_three_periods_in_a_row_beyond_3_sigma_scale_out_by_one():
    check = check_of(SCALE_RULES)
    rates = [10.0] * 6 + [15.0] * 18 + [10.0] * 6  # one normal minute, three minutes at z = +5, then normal
    vs = verdicts(check, evidence(rates))
    assert all(v.result is Result.INCONCLUSIVE and v.abstained for v in vs[:5])  # first period filling: advisory
    assert vs[5].result is Result.PASS and "within 3σ" in vs[5].reason
    # periods 2 and 3 are beyond, a warning only (an advisory check never holds a rollout)
    assert vs[11].result is Result.PASS and "1 of 3 periods" in vs[11].reason and not vs[11].breaching
    assert vs[17].result is Result.PASS and "2 of 3 periods" in vs[17].reason
    fail = vs[23]
    assert fail.result is Result.FAIL and fail.action is Action.SCALE and fail.replicas == 1
    assert fail.value == pytest.approx(15.0) and fail.threshold == pytest.approx(13.0)
    assert fail.sample_size == 6 and "z=+5.00" in fail.statistic and "run 3/3" in fail.statistic
    assert "3 periods in a row beyond 3σ" in fail.reason
    assert all(v.result is Result.FAIL for v in vs[23:29])  # until the next period is judged
    assert vs[29].result is Result.PASS  # back to normal: the run is broken


def test_a_single_spike_or_a_broken_run_never_fires():
    check = check_of(SCALE_RULES)
    rates = [10.0] * 6 + [30.0] * 12 + [10.0] * 6 + [30.0] * 12 + [10.0] * 6  # two 2-period runs
    assert not any(v.result is Result.FAIL for v in verdicts(check, evidence(rates)))


def test_total_is_summed_over_arms_whatever_the_canary_weight():
    check = check_of(SCALE_RULES)
    for share in (0.0, 0.1, 0.5, 1.0):
        vs = verdicts(check, evidence([10.0] * 24, canary_share=share))
        assert vs[-1].result is Result.PASS and vs[-1].value == pytest.approx(10.0)


def test_a_gating_check_holds_on_a_short_run_and_rolls_back_on_a_long_one():
    check = check_of("""
service: shop
checks:
  - {name: traffic-forecast, kind: baseline, signal: requests, direction: below, consecutive: 2, action: rollback}
""")
    vs = verdicts(check, evidence([10.0] * 6 + [4.0] * 12))
    assert vs[0].result is Result.INCONCLUSIVE and vs[0].warming_up and not vs[0].abstained
    assert vs[11].result is Result.INCONCLUSIVE and vs[11].breaching  # one period below: hold the step
    assert vs[17].result is Result.FAIL and vs[17].action is Action.ROLLBACK
    assert vs[17].threshold == pytest.approx(7.0)  # centre − 3σ on the side watched


def test_a_missing_period_is_inconclusive_for_a_gate_and_does_not_break_a_run():
    check = check_of("""
service: shop
checks:
  - {name: traffic-forecast, kind: baseline, signal: requests, direction: above, cusum: false, action: pause}
""")
    rates = [20.0] * 6 + [None] * 6 + [20.0] * 6 + [20.0] * 6
    vs = verdicts(check, evidence(rates))
    assert vs[11].result is Result.INCONCLUSIVE and not vs[11].breaching and "no data" in vs[11].reason
    assert vs[17].result is Result.INCONCLUSIVE and vs[17].breaching and "2 of 3" in vs[17].reason
    assert vs[23].result is Result.FAIL and vs[23].action is Action.PAUSE


def test_cusum_catches_a_small_sustained_shift_the_3_sigma_rule_misses():
    text = """
service: shop
checks:
  - {name: traffic-forecast, kind: baseline, signal: requests, direction: above, action: rollback}
"""
    rates = [11.5] * 60  # +1.5σ for ten minutes: never beyond 3σ
    vs = verdicts(check_of(text), evidence(rates))
    first_fail = next(i for i, v in enumerate(vs) if v.result is Result.FAIL)
    assert "CUSUM" in vs[first_fail].reason and "cusum=" in vs[first_fail].statistic
    assert first_fail == 5 * 6 - 1  # S grows by 1.0 per period: 5 periods to reach h = 5
    no_cusum = check_of(text.replace("action: rollback", "action: rollback, cusum: false"))
    assert not any(v.result is Result.FAIL for v in verdicts(no_cusum, evidence(rates)))


def test_a_scaling_check_needs_a_25_percent_change_as_well_as_3_sigma():
    """A capacity action: +20% at z = +20 (a tight model) is within the headroom and never scales, neither by
    the run rule nor by the CUSUM; a notify check (no floor by default) or `min_change: 10%` fires on it."""
    tight = flat_model(sigma=0.1)
    rates = [12.0] * 60  # +20%, z = +20, for ten minutes
    scale = check_of(SCALE_RULES.replace("cusum: false", "cusum: true"))
    assert scale.change_floor == 0.25
    vs = verdicts(scale, evidence(rates, model=tight))
    assert not any(v.result is Result.FAIL for v in vs)
    assert vs[-1].result is Result.PASS and "within 3σ and 25%" in vs[-1].reason
    assert vs[-1].threshold == pytest.approx(12.5)  # centre + max(3σ, 25% of the centre)
    notify = check_of(SCALE_RULES.replace("action: scale\n    replicas: 1", "action: notify"))
    assert notify.change_floor == 0 and verdicts(notify, evidence(rates, model=tight))[17].result is Result.FAIL
    ten = check_of(SCALE_RULES.replace("replicas: 1", "replicas: 1\n    min_change: 10%"))
    fails = [v for v in verdicts(ten, evidence(rates, model=tight)) if v.result is Result.FAIL]
    assert fails and "3 periods in a row beyond 3σ and 10%" in fails[0].reason
    # the floor is on the practical side only: a wide model still needs its 3σ (+30% here is 1.5σ)
    wide = check_of(SCALE_RULES)
    assert not any(v.result is Result.FAIL for v in verdicts(wide, evidence([13.0] * 60, model=flat_model(sigma=2))))
    surge = verdicts(wide, evidence([10.0] * 6 + [30.0] * 18, model=flat_model(sigma=2)))  # x3: scaled out
    assert surge[23].result is Result.FAIL and surge[23].action is Action.SCALE


def test_min_change_reads_a_share_and_refuses_a_negative_one():
    check = check_of(SCALE_RULES.replace("replicas: 1", "replicas: 1\n    min_change: 50%"))
    assert check.min_change == 0.5 and check.change_floor == 0.5
    assert check_of(SCALE_RULES.replace("replicas: 1", "replicas: 1\n    min_change: 0")).change_floor == 0
    with pytest.raises(RuleError) as e:
        parse_text(SCALE_RULES.replace("replicas: 1", "replicas: 1\n    min_change: -5%"), "rules/shop.yaml")
    assert "rules/shop.yaml:12: checks[0].min_change" in str(e.value)


def test_a_check_without_a_model_abstains_when_optional_or_advisory():
    check = check_of(SCALE_RULES)
    v = evaluate(check, evidence([10.0] * 6, model="no model at models/shop/requests.json"), 5)
    assert v.result is Result.INCONCLUSIVE and v.abstained and "no model at models/shop/requests.json" in v.reason


def test_period_defaults_to_the_models_bucket_and_can_be_set():
    model = flat_model()
    check = check_of(SCALE_RULES.replace("replicas: 1", "replicas: 1\n    period: 30s"))
    vs = verdicts(check, evidence([20.0] * 9, model=model))
    assert vs[2].result is Result.PASS and vs[2].sample_size == 3 and "over 30s" in vs[2].reason


def test_rule_file_errors_name_the_line_and_field():
    with pytest.raises(RuleError) as e:
        parse_text("service: shop\nchecks:\n  - name: f\n    kind: baseline\n    signal: requests\n    sigma: -1\n",
                   "rules/shop.yaml")
    assert "rules/shop.yaml:6: checks[0].sigma" in str(e.value)
    with pytest.raises(RuleError) as e:
        parse_text("service: shop\nchecks:\n  - {name: f, kind: baseline, signal: nope}\n", "rules/shop.yaml")
    assert "unknown signal 'nope'" in str(e.value)


# -- through the engine --------------------------------------------------------------------------------
def recording(rates: list[float]) -> dict:
    return {
        "format": "guardian-recording/v1", "service": "shop", "step_seconds": STEP,
        "start": datetime.fromtimestamp(START, UTC).isoformat(),
        "series": {"requests": {"canary": [r * STEP * 0.1 for r in rates],
                                "baseline": [r * STEP * 0.9 for r in rates]}},
    }


def write_model(root, model: SeasonalModel) -> None:
    (root / "shop").mkdir(parents=True, exist_ok=True)
    (root / "shop" / "requests.json").write_text(model.to_json())


def test_the_engine_scales_out_on_the_forecast_with_the_model_frozen_at_the_start(tmp_path):
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "shop.yaml").write_text(SCALE_RULES)
    models = tmp_path / "models"
    write_model(models, flat_model())
    rates = [10.0] * 6 + [16.0] * 30
    clock = FakeClock(START)
    store = SQLiteStore(":memory:")
    actuator = NoopActuator()
    guard = Guard(store, RecordingSource(recording(rates)), RuleBook([tmp_path / "rules"]), lambda t: actuator, clock,
                  GuardConfig(evaluation_delay=0.5, max_scale=2), models=ModelDirectory(models))
    state = guard.start(StartSpec(service="shop", image="v2", strategy=Strategy.OBSERVE, steps=(100,),
                                  step_seconds=STEP, analysis_seconds=10_000))
    write_model(models, flat_model(level=16.0))  # a refit mid-rollout must not change what it is judged against
    decisions = []
    for _ in range(len(rates)):
        clock.advance(STEP)
        if (d := guard.tick(state.id)) is not None:
            decisions.append(d)
    scales = [d for d in decisions if d.action is Action.SCALE]
    assert scales and scales[0].tick == 23 and scales[0].replicas == 1
    assert "traffic-forecast" in scales[0].reason and "3 periods in a row" in scales[0].reason
    assert guard.store.get(state.id).scaled_replicas == 2  # bounded by max_scale
    assert [a.action for a in actuator.applied].count(Action.SCALE) == 2
    rec = store.recording(state.id)
    assert rec["models"]["traffic-forecast"]["profile"][0] == 10.0
    # the recording carries the frozen model: a replay judges exactly as the live engine did
    json.loads(json.dumps(rec))
    replayed = replay_recording(rec, "shop.json", RuleSet.of(parse_text(SCALE_RULES, "shop.yaml"), "shop.yaml"))
    assert replayed.decision == "promote"  # scale is no verdict on the release itself
    assert guard.store.get(state.id).phase is Phase.PROGRESSING


def test_a_gating_forecast_check_without_a_model_refuses_the_start_and_stores_nothing(tmp_path):
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "shop.yaml").write_text(SCALE_RULES.replace("action: scale", "action: rollback"))
    store = SQLiteStore(":memory:")
    guard = Guard(store, RecordingSource(recording([10.0] * 6)), RuleBook([tmp_path / "rules"]),
                  lambda t: NoopActuator(), FakeClock(START), models=ModelDirectory(tmp_path / "models"))
    with pytest.raises(ModelMissing) as e:
        guard.start(StartSpec(service="shop", image="v2"))
    assert "guardian baseline fit shop --signal requests" in str(e.value)
    assert store.list() == []


def test_a_model_fitted_after_the_start_is_refused(tmp_path):
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "shop.yaml").write_text(SCALE_RULES.replace("action: scale", "action: pause"))
    write_model(tmp_path / "models", flat_model(fitted_at=START + 60))
    guard = Guard(SQLiteStore(":memory:"), RecordingSource(recording([10.0] * 6)), RuleBook([tmp_path / "rules"]),
                  lambda t: NoopActuator(), FakeClock(START), models=ModelDirectory(tmp_path / "models"))
    with pytest.raises(ModelMissing, match="after the rollout's start"):
        guard.start(StartSpec(service="shop", image="v2"))
