"""The rate test's fast path (the level test, judge/sequential.py): a canary's errors judged tick by tick against
the service's own error rate before the rollout. Blatant failures go within two ticks; one tick decides only
when it is overwhelming; an outage hitting both arms is not the canary's fault; A/A stays inside α; without
the pre-rollout window the baseline's own ticks are the reference once they hold enough traffic; the window is
fetched once at tick 0, frozen with the models, and replays alike."""
from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import numpy as np
import pytest

from guardian.actuators.noop import NoopActuator
from guardian.clock import FakeClock
from guardian.domain import BEFORE_ROLLOUT_KEY, Phase, Result
from guardian.engine.guard import Guard, GuardConfig, StartSpec
from guardian.engine.replay import replay_recording
from guardian.engine.store import SQLiteStore
from guardian.errors import SourceUnavailable
from guardian.judge.sequential import (
    LEVEL_ALPHA_SHARE,
    LEVEL_MIN_REFERENCE_TICKS,
    NO_REFERENCE,
    LevelTracker,
    first_rejection,
    level_log_cap,
    level_log_lr,
    rate_log_lr,
    rate_test_first_rejection,
)
from guardian.rules.book import RuleBook
from guardian.sources.recording import RecordingSource
from tests.fixtures.aa_counts import aa_rollout
from tests.fixtures.driving import drive

ALPHA = 0.01
LEVEL_ALPHA = ALPHA * LEVEL_ALPHA_SHARE
CAP = level_log_cap(LEVEL_ALPHA)
CLEAN = (0.0, 6000.0, 300.0)  # a spotless service: 0 errors in 6,000 requests over a 600 s window of 2 s ticks


def blatant(rng, ticks=20, p_bad=0.2):
    """A canary at 10 requests a tick answering 5xx to one in five; the baseline at 90 a tick, clean."""
    n_c, n_b = rng.poisson(10, ticks).astype(float), rng.poisson(90, ticks).astype(float)
    return rng.binomial(n_c.astype(int), p_bad).astype(float), n_c, np.zeros(ticks), n_b


def level_rejects(k_c, n_c, k_b, n_b, reference=CLEAN):
    lr = level_log_lr(k_c, n_c, k_b, n_b, reference=reference, log_cap=CAP)
    return first_rejection(lr, LEVEL_ALPHA, warmup=0, every=6)


def test_a_blatant_failure_against_a_clean_service_goes_within_two_ticks():
    rng = np.random.default_rng(3)
    ticks = [level_rejects(*blatant(rng)) for _ in range(50)]
    assert all(t is not None for t in ticks)
    assert np.median(ticks) <= 1  # the first tick with errors and the next
    # the share test alone, capped at x3 a tick, needs five ticks or more for the same evidence
    share = [first_rejection(rate_log_lr(*blatant(rng)), ALPHA, warmup=0, every=6) for _ in range(50)]
    assert np.median([99 if t is None else t for t in share]) >= 4


def test_one_tick_decides_only_when_overwhelming():
    k_c, n_c, k_b, n_b = np.zeros(20), np.full(20, 10.0), np.zeros(20), np.full(20, 90.0)
    k_c[0] = 1  # one failed request among ten, once: a blip
    assert level_rejects(k_c, n_c, k_b, n_b) is None
    k_c[0] = 5  # half the canary's requests failed where the service failed none of 6,000
    assert level_rejects(k_c, n_c, k_b, n_b) == 0
    lr = level_log_lr(k_c, n_c, k_b, n_b, reference=CLEAN, log_cap=CAP)
    assert np.nanmax(lr) <= CAP == pytest.approx(math.log(math.pi**2 / 6 / LEVEL_ALPHA) + math.log(5))


def test_an_outage_hitting_both_arms_is_not_the_canarys_fault():
    k_c, n_c, k_b, n_b = np.zeros(20), np.full(20, 10.0), np.zeros(20), np.full(20, 90.0)
    k_c[5:12], k_b[5:12] = 3, 27  # 30% errors in both arms for 7 ticks
    lr = level_log_lr(k_c, n_c, k_b, n_b, reference=CLEAN, log_cap=CAP)
    assert np.nanmax(lr) <= 0.5
    assert level_rejects(k_c, n_c, k_b, n_b) is None


def test_the_level_test_waits_until_its_reference_holds_enough_traffic():
    """The reference must hold LEVEL_MIN_REFERENCE_TICKS ticks' worth of the service's traffic (100 requests a
    tick here): a window of 5 ticks' worth starts the test once the baseline's own ticks (90 a tick) add the rest;
    without a window, the baseline's ticks alone must hold it."""
    assert LEVEL_MIN_REFERENCE_TICKS == 10
    k_c, n_c, k_b, n_b = np.zeros(40), np.full(40, 10.0), np.zeros(40), np.full(40, 90.0)
    k_c[:] = 5  # blatant from the first tick
    short = level_log_lr(k_c, n_c, k_b, n_b, reference=(0.0, 500.0, 300.0), log_cap=CAP)  # 5 ticks' worth
    assert np.isnan(short[:5]).all() and not np.isnan(short[5:]).any()  # 5 + 0.9 × 6 >= 10 at tick 5
    alone = level_log_lr(k_c, n_c, k_b, n_b, reference=NO_REFERENCE, log_cap=CAP)
    assert np.isnan(alone[:11]).all() and not np.isnan(alone[11:]).any()  # 0.9 × 12 >= 10 at tick 11
    # two ticks: a young reference of 1,080 requests without an error is taken at 1.2 errors (one s.d. up)
    assert level_rejects(k_c, n_c, k_b, n_b, NO_REFERENCE) == 12


@pytest.mark.parametrize("cv", [0.0, 1.0])
def test_aa_with_the_level_test_stays_inside_alpha(cv):
    """A/A, checked every tick, with a pre-rollout window drawn from the same service (benchmarks/aa_rate.py
    runs this at 2,000 runs and cv up to 2)."""
    rng, runs, h, false = np.random.default_rng(99), 300, 30, 0
    for _ in range(runs):
        k_c, n_c, k_b, n_b = aa_rollout(rng, 120 + h, cv)
        reference = (k_c[:h].sum() + k_b[:h].sum(), n_c[:h].sum() + n_b[:h].sum(), float(h))
        path = (k_c[h:], n_c[h:], k_b[h:], n_b[h:])
        false += rate_test_first_rejection(*path, alpha=ALPHA, reference=reference) is not None
    assert false / runs <= ALPHA


@pytest.mark.parametrize("cv", [0.0, 1.0])
def test_aa_without_a_window_stays_inside_alpha(cv):
    """The same without the window: the level test's reference is the baseline's own ticks."""
    rng, runs, false = np.random.default_rng(98), 300, 0
    for _ in range(runs):
        false += rate_test_first_rejection(*aa_rollout(rng, 120, cv), alpha=ALPHA) is not None
    assert false / runs <= ALPHA


# -- in the engine ------------------------------------------------------------------------------------------

START = 1_767_614_400.0
STEP = 2.0
RULES = """
service: checkout
max_analysis: 60s
checks:
  - {name: errors-vs-baseline, kind: compare, ratio: errors / requests}
"""


class WithHistory(RecordingSource):
    """A recording as the source, and the service's pre-rollout window (`before`: signal -> value), or a source
    that does not answer it (`unanswered` times)."""

    def __init__(self, rec, before=None, unanswered=0):
        super().__init__(rec)
        self.before, self.unanswered, self.window_asks = before, unanswered, 0

    def fetch(self, query, service, arm, start, end):
        if end <= START and end - start > STEP:  # the window before the rollout
            self.window_asks += 1
            if self.window_asks <= self.unanswered:
                raise SourceUnavailable("connection refused")
            if self.before is not None and query.signal in self.before:
                return self.before[query.signal]
        return super().fetch(query, service, arm, start, end)


def bad_recording(n=40, onset=0):
    rng = np.random.default_rng(5)
    n_c, n_b = rng.poisson(10, n), rng.poisson(90, n)
    k_c = [int(x) if t >= onset else 0 for t, x in enumerate(rng.binomial(n_c, 0.2))]
    return {"format": "guardian-recording/v1", "service": "checkout", "step_seconds": STEP,
            "start": datetime.fromtimestamp(START, UTC).isoformat(),
            "series": {"requests": {"canary": n_c.tolist(), "baseline": n_b.tolist()},
                       "errors": {"canary": k_c, "baseline": [0] * n}}}


@pytest.fixture
def rules(tmp_path):
    (tmp_path / "checkout.yaml").write_text(RULES)
    return RuleBook([tmp_path])


def run(rules, source, recordings_dir=None):
    clock = FakeClock(START)
    guard = Guard(SQLiteStore(":memory:"), source, rules, lambda target: NoopActuator(), clock,
                  GuardConfig(evaluation_delay=0.5, recordings_dir=recordings_dir))
    state = guard.start(StartSpec(service="checkout", image="v2", steps=(10, 100), step_seconds=STEP,
                                  analysis_seconds=60.0))
    decisions = drive(guard, clock, state.id, 40, STEP)
    return guard, state, decisions


def test_the_guard_judges_a_blatant_canary_against_the_service_before_the_rollout(rules, tmp_path):
    source = WithHistory(bad_recording(), before={"errors": 0.0, "requests": 30000.0})
    guard, state, decisions = run(rules, source, tmp_path)
    final = guard.store.get(state.id)
    assert final.phase is Phase.ROLLED_BACK
    rollback = decisions[-1]
    assert rollback.tick <= 2
    failing = next(v for v in rollback.verdicts if v.result is Result.FAIL)
    assert failing.statistic.startswith("level e_value=") and "before the rollout (0/30000" in failing.statistic
    assert source.window_asks == 2  # once, at tick 0, for each of the two signals
    doc = json.loads((tmp_path / f"{state.id}.json").read_text())
    assert doc["models"][BEFORE_ROLLOUT_KEY]["before"] == {"errors": 0.0, "requests": 30000.0}
    replayed = replay_recording(doc, "level.json", rules.for_service("checkout"))
    assert (replayed.decision, replayed.tick) == ("rollback", rollback.tick)


def test_without_the_window_the_baseline_is_the_reference_and_the_decision_later(rules):
    guard, state, decisions = run(rules, WithHistory(bad_recording()))
    assert guard.store.get(state.id).phase is Phase.ROLLED_BACK
    failing = next(v for v in decisions[-1].verdicts if v.result is Result.FAIL)
    assert failing.statistic.startswith(("e_value=", "level e_value="))
    if failing.statistic.startswith("level"):
        assert failing.statistic.endswith("against the baseline's rate")
    assert decisions[-1].tick >= 4


def test_an_unanswered_window_is_asked_again_at_the_next_tick(rules):
    source = WithHistory(bad_recording(), before={"errors": 0.0, "requests": 30000.0}, unanswered=1)
    guard, state, decisions = run(rules, source)
    failing = next(v for v in decisions[-1].verdicts if v.result is Result.FAIL)
    assert failing.statistic.startswith("level e_value=")
    snapshot = guard.store.models(state.id)
    assert snapshot[BEFORE_ROLLOUT_KEY]["missing"] == {}


def test_the_tracker_gives_the_whole_paths_rows_one_tick_at_a_time():
    """A live look (and a replay) adds one tick to a LevelTracker; benchmarks judge whole paths: the same rows,
    over young and windowed references, spotless and noisy services, missing scrapes and empty ticks."""
    rng = np.random.default_rng(4)
    judged = 0
    for trial in range(120):
        ticks, rate = int(rng.integers(5, 150)), float(rng.choice([0.0, 0.002, 0.05]))
        n_b = rng.poisson(float(rng.choice([0.5, 20, 2000])), ticks).astype(float)
        n_c = rng.poisson(n_b.mean() / 9 + 0.1, ticks).astype(float)
        k_b = rng.binomial(n_b.astype(int), rate).astype(float)
        k_c = rng.binomial(n_c.astype(int), min(1.0, rate * float(rng.choice([1, 20])))).astype(float)
        for series in (k_c, n_c, k_b, n_b):
            series[rng.random(ticks) < 0.05] = np.nan
        reference = NO_REFERENCE if trial % 2 else (float(rng.poisson(5)), float(rng.integers(0, 50000)), 60.0)
        whole = level_log_lr(k_c, n_c, k_b, n_b, reference=reference, log_cap=CAP)
        tracker = LevelTracker(reference, log_cap=CAP)
        rows = np.array([tracker.step(*(float(x[t]) for x in (k_c, n_c, k_b, n_b))) for t in range(ticks)])
        np.testing.assert_allclose(rows, whole, rtol=1e-12, atol=1e-12, equal_nan=True)
        judged += int(np.isfinite(whole).any(axis=1).sum())
    assert judged > 1000  # most ticks were judged, not only skipped
