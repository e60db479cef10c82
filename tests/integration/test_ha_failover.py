"""Two real `guardian serve` replicas on one real PostgreSQL, a canary of real demo apps scraped by a
real Prometheus: the replica holding the rollout's lease is SIGKILLed mid-rollout, the other takes it
over within the lease time and promotes it, and no action was begun, applied or finished twice."""
from __future__ import annotations

import pytest

from demo.stack import wait_until
from tests.fixtures.ha_stack import HAStack
from tests.integration.conftest import prometheus_binary

pytestmark = pytest.mark.integration

LEASE, TICK = 3.0, 1.0


@pytest.fixture(scope="module")
def ha():
    prometheus_binary()
    with HAStack(lease_seconds=LEASE, tick_seconds=TICK, analysis_seconds=2.0) as stack:
        yield stack


def test_the_survivor_takes_over_within_the_lease_and_finishes_the_rollout(ha):
    a, b = ha.replica("a"), ha.replica("b")
    rid = ha.start_rollout(a)  # a creates it, so a holds its lease from the start
    assert a.api("GET", "/v1/status").json()["leases"] == {rid: 1}
    assert b.api("GET", "/v1/status").json() == {"replica": "b", "store": "PostgresStore", "lease_seconds": LEASE,
                                                 "leases": {}}
    wait_until(lambda: b.rollout(rid)["step_index"] >= 1, 30, 0.1, "the first advance")
    assert ha.holder(rid) == "a"  # b watched, and did not act
    before = len(ha.sql("SELECT 1 FROM ops WHERE rollout_id = %s", rid))

    killed, killed_at = ha.kill_holder(rid)
    seconds, survivor = ha.wait_takeover(rid, killed_at)
    assert (killed, survivor) == ("a", "b")
    assert seconds <= LEASE + 2 * TICK + 1.0, f"took over after {seconds:.1f}s"
    assert b.api("GET", "/v1/status").json()["leases"] == {rid: 2}  # a new fencing token

    final = wait_until(lambda: (r := b.rollout(rid))["phase"] in ("promoted", "rolled_back") and r, 60, 0.2,
                       "the rollout's end")
    assert final["phase"] == "promoted", b.log_tail()
    ops = ha.sql("SELECT key, status, finished_at, request FROM ops WHERE rollout_id = %s ORDER BY seq", rid)
    assert len(ops) > before  # b acted after the takeover
    keys = [k for k, *_ in ops]
    assert len(keys) == len(set(keys))  # (the key is UNIQUE: an action is never begun twice)
    assert all(status == "done" and finished for _, status, finished, _ in ops)  # none lost, none left pending
    actions = [k.rsplit(":", 1)[1] for k in keys]
    assert actions == ["start", "advance", "advance", "promote"], actions  # 10 -> 50 -> 100 -> promoted, once each
    logged = ha.sql("SELECT count(*) FROM decisions WHERE rollout_id = %s AND outcome IS NOT NULL", rid)[0][0]
    assert logged == len(ops)  # each outcome written exactly once
