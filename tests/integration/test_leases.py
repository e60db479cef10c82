"""Leases on a real PostgreSQL: one holder at a time, expiry by the database's clock, takeover with a new
fencing token, and a stale holder refused in the same transaction as its writes (begin_op above all)."""
from __future__ import annotations

import time

import pytest

from guardian.domain import Action, Decision, Outcome, Phase, RolloutState, Strategy
from guardian.engine.leases import LocalLeases
from guardian.engine.store_pg import PostgresStore
from guardian.errors import LeaseLost, LeaseRefused, RolloutEnded, RolloutNotFound

pytestmark = pytest.mark.integration

LEASE = 1.0


@pytest.fixture
def replicas(pg_url):
    a = PostgresStore(pg_url, holder="replica-a", lease_seconds=LEASE)
    b = PostgresStore(pg_url, holder="replica-b", lease_seconds=LEASE)
    yield a, b
    a.close()
    b.close()


def rollout(rid="r1") -> RolloutState:
    return RolloutState(id=rid, service="checkout", image="checkout:v2", strategy=Strategy.CANARY, steps=(10, 100),
                        target="noop", step_seconds=10.0, analysis_seconds=30.0, created_at=1.0, updated_at=1.0)


def begin(store, key, rid="r1"):
    return store.begin_op(rid, key, {"key": key}, Decision(Action.ADVANCE, "pass", at=2.0), 2.0)


def test_one_holder_at_a_time_and_renewal_keeps_it(replicas):
    a, b = replicas
    assert a.leases.acquire("r1") and not b.leases.acquire("r1")
    assert a.leases.held() == {"r1": 1} and b.leases.held() == {}
    for _ in range(3):  # renewed every lease/3: b never gets it while a lives
        time.sleep(LEASE / 2)
        a.leases._renewed = 0.0  # renew now, whatever the interval
        assert a.leases.renew() == []
        b.leases._retry_at.clear()
        assert not b.leases.acquire("r1")
    a.leases.release("r1")
    b.leases._retry_at.clear()  # (b would ask again within 1 s)
    assert b.leases.acquire("r1") and b.leases.held() == {"r1": 2}  # a release hands over at once, new token


def test_an_expired_lease_is_taken_over_with_a_new_token(replicas):
    a, b = replicas
    assert a.leases.acquire("r1")
    assert not b.leases.acquire("r1")
    time.sleep(LEASE + 0.2)  # a stops renewing (dead, paused, partitioned)
    assert b.leases.acquire("r1") and b.leases.held() == {"r1": 2}
    a.leases._renewed = 0.0
    assert a.leases.renew() == ["r1"] and a.leases.held() == {}  # a learns it lost it


def test_a_stale_holder_cannot_begin_an_action_or_write(replicas):
    a, b = replicas
    a.create(rollout())  # the creating replica takes the lease in the same transaction
    assert a.leases.held() == {"r1": 1}
    assert begin(a, "r1:1:advance") == 1
    with pytest.raises(LeaseRefused, match="replica-a"):
        begin(b, "r1:2:advance")  # b may not act on a rollout a holds (nothing written: a command may be filed)
    assert b.pending_ops("r1") == []  # nor resume a's pending op: that is the holder's
    time.sleep(LEASE + 0.2)
    assert b.leases.acquire("r1")  # a's lease expired: b takes over (token 2) ...
    assert [op["key"] for op in b.pending_ops("r1")] == ["r1:1:advance"]  # ... and resumes a's pending op
    with pytest.raises(LeaseLost, match="replica-b"):
        begin(a, "r1:2:advance")  # a still believes it holds token 1: refused in begin_op's transaction
    with pytest.raises(LeaseLost):
        a.finish_op("r1", 1, Outcome(True, "advance", "late"), Decision(Action.ADVANCE, "pass", at=3.0), None, 3.0)
    with pytest.raises(LeaseLost):
        a.save(rollout())
    b.finish_op("r1", 1, Outcome(True, "advance", "resumed"), Decision(Action.ADVANCE, "pass", at=3.0), None, 3.0)
    assert begin(b, "r1:2:advance") == 2
    ops = b.ops("r1")
    assert [(o["key"], o["status"]) for o in ops] == [("r1:1:advance", "done"), ("r1:2:advance", "pending")]
    assert ops[0]["outcome"]["detail"] == "resumed" and len(b.decisions("r1")) == 1


def test_a_holder_whose_lease_lapsed_unclaimed_keeps_it(replicas):
    a, b = replicas
    a.create(rollout())
    time.sleep(LEASE + 0.2)  # expired, but nobody took it: the token still proves a is the last holder
    assert begin(a, "r1:1:advance") == 1 and a.leases.held() == {"r1": 1}
    assert not b.leases.acquire("r1")  # and the write renewed it


def test_sqlite_leases_are_always_granted():
    leases = LocalLeases("solo")
    assert leases.acquire("r1") and leases.renew() == [] and leases.held() == {"r1": 1}
    leases.release("r1")
    assert leases.held() == {}


def test_an_intent_is_claimed_only_by_the_holder_and_taken_again_after_a_takeover(replicas):
    a, b = replicas
    a.create(rollout())
    filed = b.file_intent("r1", "pause", "", "alice", "user", 5.0)  # b received the command; a holds r1
    assert (filed.status, filed.filed_by, filed.by) == ("pending", "replica-b", "alice")
    assert not b.claim_intent(filed)  # fenced: b does not hold r1
    assert [i.id for i in a.pending_intents(["r1"])] == [filed.id]
    assert a.claim_intent(filed) and not a.claim_intent(filed)  # once
    assert a.intent(filed.id).status == "running" and a.pending_intents(["r1"]) == []
    time.sleep(LEASE + 0.2)  # a dies before finishing it
    assert b.leases.acquire("r1")  # token 2
    assert [i.id for i in b.pending_intents(["r1"])] == [filed.id]  # claimed under token 1: b takes it again
    assert b.claim_intent(filed)
    a.finish_intent(filed.id, "done", "late", 6.0)  # a lost r1: its word does not count
    assert b.intent(filed.id).status == "running"
    b.finish_intent(filed.id, "done", "pause: the rollout is paused at 10%", 7.0)
    done = a.intent(filed.id)
    assert (done.status, done.done_by, done.done_at) == ("done", "replica-b", 7.0)
    with pytest.raises(RolloutNotFound):
        a.file_intent("nope", "pause", "", None, "user", 8.0)


def test_balance_spreads_the_rollouts_over_the_live_replicas(replicas):
    a, b = replicas
    ids = {f"r{i}" for i in range(5)}
    for rid in sorted(ids):
        a.create(rollout(rid).evolve(service=f"svc-{rid}"))
    a.leases.balance(ids, set())  # alone so far: its share is all five
    assert (a.leases.live, a.leases.share, len(a.leases.held())) == (1, 5, 5)
    b.leases.balance(ids, set())  # b joins: share 3, but a holds all five
    assert (b.leases.live, b.leases.share, b.leases.held()) == (2, 3, {})
    a.leases._balanced = 0.0
    kept = []  # an API thread of a's acts on r1: the scheduler's let_go keeps it

    def let_go(rid):
        if rid == "r1":
            kept.append(rid)
            return False
        return a.leases._released(rid)

    a.leases.balance(ids, {"r0"}, let_go)  # a gives up two, never one mid-tick nor one a thread acts on
    assert len(a.leases.held()) == 3 and {"r0", "r1"} <= set(a.leases.held()) and kept == ["r1"]
    b.leases._balanced = 0.0
    b.leases.balance(ids, set())
    assert len(b.leases.held()) == 2 and not set(a.leases.held()) & set(b.leases.held())
    assert not a.leases.acquire(next(iter(b.leases.held())))  # at its share, a asks about no rollout of b's
    b.leases.leave()  # b stops: everything is free again and b is no longer live
    a.leases._balanced = 0.0
    a.leases.balance(ids, set())
    assert (a.leases.live, len(a.leases.held())) == (1, 5)


def test_the_open_intents_of_a_rollout_that_ended_are_refused_and_none_is_filed_after(replicas):
    a, b = replicas
    a.create(rollout("r1"))
    a.create(rollout("r2").evolve(service="cart"))
    pending = b.file_intent("r1", "rollback", "", "alice", "user", 5.0)  # a holds both
    running = b.file_intent("r2", "pause", "", "bob", "user", 5.0)
    assert a.claim_intent(running)  # a is carrying it out
    a.save(a.get("r1").evolve(phase=Phase.PROMOTED))  # r1 ended before a's next pass: nobody would take it
    a.save(a.get("r2").evolve(phase=Phase.ROLLED_BACK))
    assert [i.id for i in b.refuse_orphaned_intents(9.0)] == [pending.id]  # r2's: a's lease is live, a finishes it
    got = a.intent(pending.id)
    assert (got.status, got.done_by, got.done_at) == ("refused", "replica-b", 9.0)
    assert "is already promoted" in got.detail and "rollback" in got.detail
    assert a.intent(running.id).status == "running"
    time.sleep(LEASE + 0.2)  # a stopped midway
    assert [i.id for i in b.refuse_orphaned_intents(10.0)] == [running.id]
    assert "while replica replica-a was carrying out the pause" in a.intent(running.id).detail
    assert b.refuse_orphaned_intents(11.0) == []
    with pytest.raises(RolloutEnded, match="already promoted"):
        b.file_intent("r1", "pause", "", None, "user", 12.0)  # answered 409 at once, not filed for ever


def test_a_watch_is_ended_only_with_the_row_of_the_rollout_taking_its_place_and_by_its_holder(replicas):
    a, b = replicas
    a.create(rollout("w1").evolve(strategy=Strategy.WATCH, steps=(100,)))  # a holds the watch
    why = Decision(Action.NOTIFY, "ended: rollout r2 started", at=5.0)
    ended = a.get("w1").evolve(phase=Phase.ENDED, updated_at=5.0)
    with pytest.raises(LeaseRefused):  # b may not end a's watch: nothing is written, r2 is filed for a instead
        b.create(rollout("r2").evolve(created_at=5.0), [(ended, why)])
    assert not a.get("w1").phase.terminal
    with pytest.raises(RolloutNotFound):
        a.get("r2")
    assert a.decisions("w1") == []
    a.create(rollout("r3").evolve(created_at=6.0), [(ended, Decision(Action.NOTIFY, "ended: rollout r3 started",
                                                                      at=6.0))])
    assert a.get("w1").phase is Phase.ENDED and not a.get("r3").phase.terminal
    assert [d["reason"] for d in a.decisions("w1")] == ["ended: rollout r3 started"]


def test_the_rollouts_in_flight_are_decoded_again_only_when_their_row_changed(replicas):
    a, b = replicas
    a.create(rollout("r1"))
    a.create(rollout("r2").evolve(service="cart", created_at=2.0))
    first = a.list(active_only=True)
    again = a.list(active_only=True)
    assert [s.id for s in again] == ["r1", "r2"] and all(x is y for x, y in zip(first, again, strict=True))
    b.create(rollout("r3").evolve(service="shop", created_at=3.0))  # written by another replica
    a.save(a.get("r1").evolve(last_tick=4))
    a.save(a.get("r2").evolve(phase=Phase.PROMOTED))
    now = a.list(active_only=True)
    assert [(s.id, s.last_tick) for s in now] == [("r1", 4), ("r3", -1)]
    assert [s.id for s in a.list()] == ["r1", "r2", "r3"]
