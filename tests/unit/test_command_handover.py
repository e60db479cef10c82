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
from guardian.domain import Action
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
