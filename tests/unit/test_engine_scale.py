"""Scale features of the engine: batch forms of templates, aligned tick windows, single-flight batches,
and a scheduler in which one rollout whose source hangs does not hold up another's ticks."""
from __future__ import annotations

import asyncio
import threading
import time

import pytest

from guardian.actuators.noop import NoopActuator
from guardian.clock import FakeClock, SystemClock
from guardian.domain import RolloutState, SignalType
from guardian.engine.guard import Guard, GuardConfig, StartSpec
from guardian.engine.scheduler import Scheduler
from guardian.engine.store import SQLiteStore
from guardian.errors import NoData, SourceUnavailable
from guardian.rules.book import RuleBook
from guardian.rules.defaults import STANDARD_QUERIES
from guardian.sources import ArmSelector, SignalQuery
from guardian.sources.batching import BatchingSource, NotBatchable, batch_shape, regex_escape

SEL = 'service="{{service}}",{{arm_label}}="{{arm}}"'


def test_every_default_template_has_a_batch_form() -> None:
    for name, q in STANDARD_QUERIES.items():
        shape = batch_shape(q.promql)
        text = shape.render(["a"], ["canary"], "track", 60)
        assert 'service=~"a"' in text and 'track=~"canary"' in text and "{{" not in text, name
    p99 = batch_shape(STANDARD_QUERIES["p99_seconds"].promql).render(["a"], ["b"], "track", 60)
    assert "sum by (le, service, track)" in p99
    mem = batch_shape(STANDARD_QUERIES["memory_bytes"].promql).render(["a"], ["b"], "track", 60)
    assert mem.startswith("sum by (service, track) (")


@pytest.mark.parametrize("template", [
    f"sum(x{{{SEL}}}) by (le)", f"topk(1, x{{{SEL}}})", f"x{{{SEL}}} / on () group_left sum(y{{{SEL}}})",
    'x{service="{{service}}"}', f"x{{{SEL}}} or vector(0)", f"sum without (service) (x{{{SEL}}})",
    f"label_replace(x{{{SEL}}}, \"service\", \"z\", \"\", \"\")", f"x{{{SEL}}} / ignoring (service) y{{{SEL}}}",
    'x{service="{{service}}-web",track="{{arm}}"}', f"x{{{SEL}}} + y",
])
def test_templates_that_cannot_be_regrouped_are_refused(template: str) -> None:
    with pytest.raises(NotBatchable):
        batch_shape(template)


def test_regex_escape_keeps_values_literal() -> None:
    assert regex_escape("a.b|c(d)+e*") == r"a\.b\|c\(d\)\+e\*"
    assert regex_escape("plain-name_1 x#") == "plain-name_1 x#"  # RE2 rejects escaped spaces and #


class CountingInner:
    """A stub of PrometheusSource's batch interface (no server runs in unit tests): counts the queries,
    answers one series per (service, track) in the regex, slowly so concurrent askers overlap."""

    timeout, min_window = 1.0, 15.0

    def __init__(self, fail: bool = False):
        self.calls, self.fail = 0, fail
        self.lock = threading.Lock()

    def instant_result(self, promql: str, at: float) -> list[dict]:
        with self.lock:
            self.calls += 1
        time.sleep(0.05)
        if self.fail:
            raise SourceUnavailable("down")
        services = promql.split('service=~"')[1].split('"')[0].split("|")
        return [{"metric": {"service": s, "track": t}, "value": [at, "2"]} for s in services if s != "gone"
                for t in ("canary", "baseline")]

    def fetch(self, *args):  # per-rollout fallback
        with self.lock:
            self.calls += 1
        return 7.0


def test_concurrent_fetches_share_one_batch_and_missing_services_are_nodata() -> None:
    inner = CountingInner()
    source = BatchingSource(inner)  # type: ignore[arg-type]
    q = SignalQuery("memory_bytes", SignalType.GAUGE, STANDARD_QUERIES["memory_bytes"].promql)
    asks = [(q, f"s{i}", ArmSelector(arm), 0.0, 10.0) for i in range(20) for arm in ("canary", "baseline")]
    asks.append((q, "gone", ArmSelector("canary"), 0.0, 10.0))
    source.plan(asks)
    results: dict = {}

    def ask(item):
        try:
            results[item[1], item[2].arm] = item[0] and source.fetch(*item)
        except NoData:
            results[item[1], item[2].arm] = "NoData"

    threads = [threading.Thread(target=ask, args=(a,)) for a in asks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert inner.calls == 1
    assert results.pop(("gone", "canary")) == "NoData"
    assert set(results.values()) == {2.0}
    odd = SignalQuery("x", SignalType.GAUGE, f"topk(1, x{{{SEL}}})")
    assert source.fetch(odd, "s1", ArmSelector("canary"), 0.0, 10.0) == 7.0 and inner.calls == 2  # per rollout


def test_a_failed_batch_is_unavailable_for_all_and_retried_after_the_ttl() -> None:
    inner = CountingInner(fail=True)
    source = BatchingSource(inner, failure_ttl=0.2)  # type: ignore[arg-type]
    q = SignalQuery("memory_bytes", SignalType.GAUGE, STANDARD_QUERIES["memory_bytes"].promql)
    for service in ("a", "b", "a"):
        with pytest.raises(SourceUnavailable):
            source.fetch(q, service, ArmSelector("canary"), 0.0, 10.0)
    assert inner.calls == 2  # "b" was not in the first batch: asked again, then shared
    time.sleep(0.25)
    with pytest.raises(SourceUnavailable):
        source.fetch(q, "a", ArmSelector("canary"), 0.0, 10.0)
    assert inner.calls == 3


def test_aligned_ticks_start_on_the_grid_and_old_states_keep_created_at(tmp_path) -> None:
    clock = FakeClock(1000.3)
    guard = Guard(SQLiteStore(":memory:"), CountingInner(), RuleBook([tmp_path]),  # type: ignore[arg-type]
                  lambda target: NoopActuator(), clock, GuardConfig(align_ticks=True))
    state = guard.start(StartSpec(service="svc", image="v2", step_seconds=10.0))
    assert state.tick_origin == 1010.0 and state.tick_bounds(0) == (1010.0, 1020.0)
    assert state.due_tick(1020.5, 1.0) == -1 and state.due_tick(1021.0, 1.0) == 0
    old = {k: v for k, v in state.to_dict().items() if k != "tick_origin"}
    assert RolloutState.from_dict(old).tick_bounds(0) == (1000.3, 1010.3)
    assert guard.store.recording(state.id)["start"].startswith("1970-01-01T00:16:50")  # tick 0's start


class HangingSource:
    """A stub source: the service "stuck" never answers until released; every other one at once."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def fetch(self, query, service, arm, start, end) -> float:
        if service == "stuck":
            self.release.wait(10)
        return 1.0


def test_a_hanging_source_for_one_rollout_does_not_delay_another(tmp_path) -> None:
    source = HangingSource()
    store = SQLiteStore(tmp_path / "g.db")
    guard = Guard(store, source, RuleBook([]), lambda target: NoopActuator(), SystemClock(),  # type: ignore[arg-type]
                  GuardConfig(evaluation_delay=0.05))
    stuck = guard.start(StartSpec(service="stuck", image="v2", step_seconds=0.3, analysis_seconds=60))
    fine = guard.start(StartSpec(service="fine", image="v2", step_seconds=0.3, analysis_seconds=60))
    scheduler = Scheduler(guard, RuleBook([]), poll_seconds=0.02, max_concurrent_ticks=4)

    async def run() -> None:
        task = asyncio.create_task(scheduler.run())
        await asyncio.sleep(2.0)
        source.release.set()
        scheduler.stop()
        await task

    asyncio.run(run())
    assert store.get(stuck.id).last_tick <= 1  # its first tick hung for the whole run
    assert store.get(fine.id).last_tick >= 3  # the other went on ticking meanwhile
    lag = guard.metrics.registry
    assert lag.get_sample_value("guardian_tick_lag_seconds_count") >= 4
    assert lag.get_sample_value("guardian_tick_lag_seconds_bucket", {"le": "0.25"}) == lag.get_sample_value(
        "guardian_tick_lag_seconds_count")  # every tick started within 0.25 s of being due


class PlanningRecorder:
    """A stub source that records what it is planned and asked (a Planning source, like a batching one)."""

    def __init__(self) -> None:
        self.planned: list = []
        self.asked: list = []

    def plan(self, requests) -> None:
        self.planned += list(requests)

    def fetch(self, query, service, arm, start, end) -> float:
        self.asked.append((query.signal, service, arm.arm, start, end))
        return 10.0


def test_the_pre_rollout_windows_of_aligned_rollouts_are_shared_and_planned(tmp_path) -> None:
    clock = FakeClock(1000.3)
    source = PlanningRecorder()
    guard = Guard(SQLiteStore(":memory:"), source, RuleBook([tmp_path]),  # type: ignore[arg-type]
                  lambda target: NoopActuator(), clock, GuardConfig(align_ticks=True, evaluation_delay=1.0))
    states = []
    for i in range(4):  # started within one tick length: one pre-rollout window for all of them
        states.append(guard.start(StartSpec(service=f"svc{i}", image="v2", step_seconds=10.0)))
        clock.advance(2.0)
    clock.advance(1021.5 - clock.now())  # tick 0 ([1010, 1020)) is due
    guard.plan(states)
    before = {(s, end) for q, s, a, start, end in source.planned if end - start > 10}
    assert before == {(f"svc{i}", 1000.0) for i in range(4)}  # the grid line before the starts, planned
    for state in states:
        guard.tick(state.id)
    asked = {(svc, start, end) for _, svc, arm, start, end in source.asked if end - start > 10 and arm == "baseline"}
    assert {(s, e) for s, _, e in asked} == before  # tick 0 read exactly the windows planned
    clock.advance(10.0)
    windows = sum(end - start > 10 for *_, start, end in source.planned)
    guard.plan([guard.store.get(s.id) for s in states])
    assert sum(end - start > 10 for *_, start, end in source.planned) == windows  # none more after tick 0


def test_a_rollout_with_a_bake_read_its_pre_rollout_window_at_its_start_and_plans_it_no_more(tmp_path) -> None:
    clock = FakeClock(1000.3)
    source = PlanningRecorder()
    guard = Guard(SQLiteStore(":memory:"), source, RuleBook([tmp_path]),  # type: ignore[arg-type]
                  lambda target: NoopActuator(), clock, GuardConfig(align_ticks=True, evaluation_delay=1.0))
    state = guard.start(StartSpec(service="svc", image="v2", step_seconds=10.0, bake_seconds=60.0))
    read_at_start = [a for a in source.asked if a[4] - a[3] > 10]
    assert read_at_start  # the bake's reference: the window before the start
    clock.advance(1021.5 - clock.now())
    guard.plan([state])
    assert not [r for r in source.planned if r[4] - r[3] > 10]  # frozen with the models: not planned again
    guard.tick(state.id)
    assert [a for a in source.asked if a[4] - a[3] > 10] == read_at_start  # and tick 0 read none


def test_a_due_tick_is_planned_once_whatever_the_passes_before_it_starts(tmp_path) -> None:
    clock = FakeClock(1000.3)
    source = PlanningRecorder()
    guard = Guard(SQLiteStore(":memory:"), source, RuleBook([tmp_path]),  # type: ignore[arg-type]
                  lambda target: NoopActuator(), clock, GuardConfig(align_ticks=True, evaluation_delay=1.0))
    states = [guard.start(StartSpec(service=f"svc{i}", image="v2", step_seconds=10.0)) for i in range(3)]
    clock.advance(1021.5 - clock.now())
    guard.plan(states)
    planned = len(source.planned)
    assert planned and {s for _, s, *_ in source.planned} == {"svc0", "svc1", "svc2"}
    guard.plan(states)  # the next pass: the same ticks are still due, none started (the pool was full)
    assert len(source.planned) == planned
    guard.tick(states[0].id)  # one ran, reading what was planned for it
    clock.advance(10.0)  # tick 1 due for all: planned again, each once
    guard.plan([guard.store.get(s.id) for s in states])
    fresh = [(s, start, end) for _, s, _, start, end in source.planned[planned:] if end - start == 10]
    assert sorted(fresh) == sorted([(f"svc{i}", 1020.0, 1030.0) for i in range(3)] * 12)  # 6 signals x 2 arms
    assert guard.arms.planned_tick(states[1].id) == 1
