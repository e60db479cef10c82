"""A replica hands a rollout (its lease) or a command (an intent) to another only when nothing of it was done here:
the scheduler never releases a rollout an API thread acts on, and a command whose action was carried out before
the lease was lost is not filed for the holder to carry out a second time."""
from __future__ import annotations

import dataclasses
import threading
import types

import pytest

from guardian.actuators.noop import NoopActuator
from guardian.api.commands import command
from guardian.clock import FakeClock
from guardian.domain import Action, Strategy
from guardian.engine.guard import Guard, GuardConfig, StartSpec
from guardian.engine.intents import Intent
from guardian.engine.leases import LocalLeases
from guardian.engine.scheduler import Scheduler
from guardian.engine.store import SQLiteStore
from guardian.errors import LeaseLost, LeaseRefused
from guardian.rules.book import RuleBook


class Source:
    def fetch(self, query, service, arm, start, end) -> float:
        return 0.0


@pytest.fixture
def guard(tmp_path):
    return Guard(SQLiteStore(tmp_path / "g.db"), Source(), RuleBook([]), lambda target: NoopActuator(),  # type: ignore[arg-type]
                 FakeClock(1000.0), GuardConfig())


def test_the_scheduler_does_not_release_a_rollout_a_thread_acts_on(guard) -> None:
    state = guard.start(StartSpec(service="checkout", image="v2", analysis_seconds=60))
    leases = LocalLeases()
    scheduler = Scheduler(guard, RuleBook([]), leases=leases)
    assert leases.acquire(state.id)
    acting, done = threading.Event(), threading.Event()

    def override() -> None:  # an API thread in the middle of a command (a Gateway PROMOTE's wait, say)
        with guard._lock(state.id):
            acting.set()
            done.wait(5)

    thread = threading.Thread(target=override)
    thread.start()
    acting.wait(5)
    with guard.idle(state.id) as idle:
        assert not idle
    assert scheduler._let_go(state.id) is False and state.id in leases.held()  # kept: the command goes on here
    done.set()
    thread.join()
    assert scheduler._let_go(state.id) is True and state.id not in leases.held()


class FinishRefused(SQLiteStore):
    """A store whose lease is lost between an action's begin and its finish (another replica took the rollout)."""

    def finish_op(self, *args, **kwargs):
        raise LeaseRefused("rollout is leased to replica-b, not to this replica")


class FiledCommands:
    """A store shared by replicas, as far as `command` sees it: records what it is asked to file."""

    def __init__(self) -> None:
        self.filed: list[tuple] = []

    def file_intent(self, rollout_id, action, reason, by, source, at, payload=None) -> Intent:
        self.filed.append((rollout_id, action))
        return Intent(id=len(self.filed), rollout_id=rollout_id, action=action, reason=reason, by=by, source=source,
                      filed_by="replica-a", filed_at=at)

    def intent(self, intent_id): ...

    def pending_intents(self, rollout_ids): ...

    def claim_intent(self, intent): ...

    def finish_intent(self, intent_id, status, detail, at): ...

    def refuse_orphaned_intents(self, at): ...


def test_a_command_carried_out_before_the_lease_was_lost_is_not_filed_again(tmp_path) -> None:
    store = FinishRefused(tmp_path / "g.db")
    guard = Guard(store, Source(), RuleBook([]), lambda target: NoopActuator(), FakeClock(1000.0),  # type: ignore[arg-type]
                  GuardConfig())
    # (its START would be refused at its finish too: the rollout is created through a store that lets it finish)
    plain = Guard(SQLiteStore(tmp_path / "g.db"), Source(), RuleBook([]), lambda target: NoopActuator(),  # type: ignore[arg-type]
                  FakeClock(1000.0), GuardConfig())
    state = plain.start(StartSpec(service="checkout", image="v2", analysis_seconds=60))
    with pytest.raises(LeaseLost) as lost:
        guard.override(state.id, Action.PAUSE, by="alice")
    assert not isinstance(lost.value, LeaseRefused) and "was carried out" in str(lost.value)

    filed = FiledCommands()
    c = types.SimpleNamespace(guard=guard, store=filed, clock=FakeClock(1000.0))
    with pytest.raises(LeaseLost):
        command(c, state.id, Action.PAUSE, by="alice")  # type: ignore[arg-type]
    assert filed.filed == []  # answered 409: the holder resumes the pending pause, nobody pauses twice

    refusing = types.SimpleNamespace(override=lambda *a, **k: (_ for _ in ()).throw(LeaseRefused("held by b")))
    c = types.SimpleNamespace(guard=refusing, store=filed, clock=FakeClock(1000.0))
    assert isinstance(command(c, state.id, Action.PAUSE, by="alice"), Intent)  # type: ignore[arg-type]
    assert filed.filed == [(state.id, "pause")]  # refused before anything was written: filed for the holder


def test_a_rollout_that_ended_while_a_thread_acted_on_it_is_let_go_at_a_later_pass(guard) -> None:
    state = guard.start(StartSpec(service="checkout", image="v2", analysis_seconds=60))
    leases = LocalLeases()
    scheduler = Scheduler(guard, RuleBook([]), leases=leases)
    assert leases.acquire(state.id)
    scheduler._keep_leases({state.id}, set())
    with guard._lock(state.id):  # it ends while an API thread still holds it (its rollback's last writes)
        scheduler._keep_leases(set(), set())
        assert state.id in leases.held()
    scheduler._keep_leases(set(), set())  # the next pass: not seen ending again, yet let go
    assert state.id not in leases.held()


def test_a_rollout_that_ended_within_one_pass_is_let_go(guard) -> None:
    state = guard.start(StartSpec(service="checkout", image="v2", analysis_seconds=60))
    guard.override(state.id, Action.ROLLBACK)  # ended before any pass saw it in flight (a start that failed, say)
    leases = LocalLeases()
    scheduler = Scheduler(guard, RuleBook([]), leases=leases)
    assert leases.acquire(state.id)  # (a command on the ended rollout took its lease back)
    fresh = guard.start(StartSpec(service="cart", image="v2", analysis_seconds=60))
    assert leases.acquire(fresh.id)  # created since the pass listed the rollouts: in flight, kept
    scheduler._keep_leases(set(), set())
    assert set(leases.held()) == {fresh.id}


def test_an_orphaned_start_says_whether_it_may_have_started() -> None:
    from guardian.engine.intents import RUNNING, orphaned

    start = Intent(id=1, rollout_id="watch-1", action="start", reason="", by=None, source="user", filed_by="a",
                   filed_at=1.0, payload={"spec": {"id": "new-1"}, "pause": None})
    assert "which was not started: send the start again" in orphaned(start, "ended")
    claimed = dataclasses.replace(start, status=RUNNING, done_by="replica-b")
    said = orphaned(claimed, "ended")
    assert "replica-b" in said and "see rollout new-1, which may have started" in said and "send" not in said


class Claimed:
    """The intents' side of a shared store, for the next holder: every claim granted, every finish recorded."""

    def __init__(self) -> None:
        self.finished: list[tuple[int, str, str]] = []

    def claim_intent(self, intent) -> bool:
        return True

    def finish_intent(self, intent_id, status, detail, at) -> None:
        self.finished.append((intent_id, status, detail))


def test_a_command_its_last_holder_carried_out_is_done_at_the_next_not_refused(tmp_path) -> None:
    from guardian.engine.intents import RUNNING, IntentKeeper

    db = tmp_path / "g.db"
    first = Guard(FinishRefused(db), Source(), RuleBook([]), lambda target: NoopActuator(), FakeClock(1000.0),  # type: ignore[arg-type]
                  GuardConfig())
    nxt = Guard(SQLiteStore(db), Source(), RuleBook([]), lambda target: NoopActuator(), FakeClock(1001.0),  # type: ignore[arg-type]
                GuardConfig())
    state = nxt.start(StartSpec(service="checkout", image="v2", analysis_seconds=60))
    intent = Intent(id=7, rollout_id=state.id, action="rollback", reason="bad", by="alice", source="user",
                    filed_by="replica-b", filed_at=999.0, status=RUNNING, done_by="replica-a", token=1)
    with pytest.raises(LeaseLost):  # replica-a rolled it back, then lost the rollout before recording it
        first.override(state.id, Action.ROLLBACK, "bad", by="alice")
    store = Claimed()
    IntentKeeper(nxt, store).carry_out(intent)  # type: ignore[arg-type]
    [(_, status, detail)] = store.finished
    assert status == "done" and "carried out by replica replica-a" in detail, detail
    assert nxt.store.get(state.id).phase.value == "rolled_back"

    other = dataclasses.replace(intent, id=8, action="pause")  # nothing shows it was done: refused with why
    IntentKeeper(nxt, store).carry_out(other)  # type: ignore[arg-type]
    assert store.finished[-1][1] == "refused" and "already rolled_back" in store.finished[-1][2]

    start = dataclasses.replace(intent, id=9, action="start", payload={"spec": {"id": state.id}, "pause": None})
    assert "was started by replica replica-a" in IntentKeeper(nxt, store)._carried_out_before(start)  # type: ignore[arg-type,operator]


class EndingWatch(FiledCommands):
    """A shared store whose watch of checkout ends while a start is filed on it (its holder started another)."""

    def __init__(self, watch) -> None:
        super().__init__()
        self.watch = watch

    def list(self, active_only=False):
        return [self.watch]

    def file_intent(self, rollout_id, action, reason, by, source, at, payload=None) -> Intent:
        from guardian.errors import RolloutEnded
        self.filed.append((rollout_id, action))
        raise RolloutEnded(f"rollout {rollout_id} is already ended")


def test_a_start_whose_watch_ends_while_it_is_filed_is_tried_here_again_then_answered(guard) -> None:
    from guardian.api.commands import START_ATTEMPTS, start_or_file
    from guardian.errors import RolloutEnded

    watch = guard.start(StartSpec(service="checkout", image="v1", analysis_seconds=60))  # (stands for the watch)
    watch = dataclasses.replace(watch, strategy=Strategy.WATCH)
    tries: list[int] = []

    def start(spec):
        tries.append(1)
        if len(tries) < 3:
            raise LeaseRefused("the watch is leased to replica-b")
        return "started here"

    store = EndingWatch(watch)
    c = types.SimpleNamespace(guard=types.SimpleNamespace(start=start), store=store, clock=FakeClock(1000.0))
    spec = StartSpec(service="checkout", image="v2")
    assert start_or_file(c, spec, None) == "started here" and len(store.filed) == 2  # type: ignore[arg-type]

    tries.clear()
    c.guard.start = lambda spec: (_ for _ in ()).throw(LeaseRefused("the watch is leased to replica-b"))
    store.filed.clear()
    with pytest.raises(RolloutEnded):  # it never got through: the last refusal is the answer (409)
        start_or_file(c, spec, None)  # type: ignore[arg-type]
    assert len(store.filed) == START_ATTEMPTS


class SlowIntents(FiledCommands):
    """A shared store whose intent reads take a while (a loaded PostgreSQL)."""

    def intent(self, intent_id):
        import time
        time.sleep(0.4)
        return Intent(id=intent_id, rollout_id="r1", action="pause", reason="", by=None, source="user",
                      filed_by="replica-a", filed_at=1.0, status="done")


def test_followers_of_intents_do_not_queue_the_schedulers_threads() -> None:
    import asyncio
    import time

    from guardian.api.rollouts import get_intent

    c = types.SimpleNamespace(store=SlowIntents())

    async def main() -> float:
        followers = [asyncio.create_task(get_intent(i, c, wait=0.0)) for i in range(12)]  # type: ignore[arg-type]
        await asyncio.sleep(0.05)
        began = time.monotonic()
        await asyncio.to_thread(lambda: None)  # what a scheduler pass does between its steps
        waited = time.monotonic() - began
        assert all(r["status"] == "done" for r in await asyncio.gather(*followers))
        return waited

    assert asyncio.run(main()) < 0.2  # (with the reads on the default pool: 0.4 s or more, behind them)
