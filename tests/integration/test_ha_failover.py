"""Two real `guardian serve` replicas on one real PostgreSQL, a canary of real demo apps scraped by a
real Prometheus: the replica holding the rollout's lease is SIGKILLed mid-rollout, the other takes it
over within the lease time and promotes it, and no action was begun, applied or finished twice. A command sent to
the replica that does not hold a rollout is carried out by the one that does (202 and an intent, not 409), and the
rollouts in flight spread over the live replicas, moving when one joins or leaves."""
from __future__ import annotations

import subprocess
import sys
import time

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
    status = b.api("GET", "/v1/status").json()
    assert {k: status[k] for k in ("replica", "store", "lease_seconds", "leases")} == {
        "replica": "b", "store": "PostgresStore", "lease_seconds": LEASE, "leases": {}}
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


def _fresh_pair(ha, *names):
    for server in ha.live().values():  # what the tests before left running
        server.stop()
    return [ha.replica(n) for n in names]


def _holders(ha, ids) -> dict[str, int]:
    rows = ha.sql("SELECT holder, count(*) FROM leases WHERE rollout_id = ANY(%s) AND expires_at > now() "
                  "GROUP BY holder", list(ids))
    return dict(rows)


def test_a_command_sent_to_the_other_replica_is_carried_out_by_the_holder(ha):
    c, d = _fresh_pair(ha, "c", "d")
    rid = ha.start_rollout(c, analysis_seconds=600)  # held in its first step
    holder = c if ha.holder(rid) == "c" else d
    other = d if holder is c else c
    r = other.api("POST", f"/v1/rollouts/{rid}/pause")
    assert r.status_code == 202, r.text
    intent = r.json()["intent"]
    assert r.headers["location"] == f"/v1/intents/{intent['id']}" and intent["status"] == "pending"
    assert intent["filed_by"] == other.env["GUARDIAN_REPLICA_ID"] and intent["action"] == "pause"
    began = time.monotonic()
    done = other.api("GET", f"/v1/intents/{intent['id']}", params={"wait": 10}).json()
    waited = time.monotonic() - began
    assert done["status"] == "done" and done["done_by"] == holder.env["GUARDIAN_REPLICA_ID"], done
    assert waited < TICK + 1.5, f"carried out after {waited:.1f} s"
    view = other.rollout(rid)
    assert view["phase"] == "paused" and view["paused_by"] == "user"
    assert view["decisions"][-1]["action"] == "pause" and view["decisions"][-1]["source"] == "user"

    # resume (with the CLI, which follows the intent) and roll back through the same replica; an invalid command
    # is still refused there at once
    cli = subprocess.run([sys.executable, "-m", "guardian", "rollout", "resume", rid, "--api", other.url],
                         capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0, cli.stderr
    assert "held by another replica" in cli.stderr and f"carried out by replica {holder.env['GUARDIAN_REPLICA_ID']}" \
        in cli.stderr and "progressing" in cli.stdout, (cli.stdout, cli.stderr)
    assert other.rollout(rid)["phase"] == "progressing"
    assert other.api("POST", f"/v1/rollouts/{rid}/resume").status_code == 409  # not paused: nothing filed
    r = other.api("POST", f"/v1/rollouts/{rid}/rollback")
    assert r.status_code == 202
    done = other.api("GET", f"/v1/intents/{r.json()['intent']['id']}", params={"wait": 10}).json()
    assert done["status"] == "done" and "rolled_back" in done["detail"], done
    assert holder.rollout(rid)["phase"] == "rolled_back"
    ops = ha.sql("SELECT key FROM ops WHERE rollout_id = %s ORDER BY seq", rid)
    assert [k.rsplit(":", 1)[1] for (k,) in ops] == ["start", "pause", "resume", "rollback"]  # once each
    assert other.api("GET", "/v1/intents/999999").status_code == 404


def test_rollouts_spread_over_the_live_replicas_and_move_when_one_joins_or_leaves(ha):
    (e,) = _fresh_pair(ha, "e")
    ids = [e.api("POST", "/v1/rollouts", json={"service": f"spread-{i}", "image": "demo:v2", "allow_missing": True,
                                               "analysis_seconds": 600}).json()["id"] for i in range(6)]
    wait_until(lambda: _holders(ha, ids) == {"e": 6}, 10, 0.1, "e holding all six")
    f = ha.replica("f")  # joins: takes its share from e
    wait_until(lambda: _holders(ha, ids) == {"e": 3, "f": 3}, 15, 0.2, "three each")
    assert f.api("GET", "/v1/status").json()["replicas_live"] == 2
    f.stop()  # leaves cleanly: e takes them back at once
    wait_until(lambda: _holders(ha, ids) == {"e": 6}, 10, 0.1, "e holding all six again")
    for rid in ids:  # the other tests of this module see no rollout of these in flight
        e.api("POST", f"/v1/rollouts/{rid}/rollback")


def test_a_start_that_must_end_a_watch_held_by_the_other_replica_is_carried_out_by_it(ha):
    g, h = _fresh_pair(ha, "g", "h")  # (rollouts of checkout the tests before left in flight are ended)
    for server in (g, h):
        server.stop()
        server.env["GUARDIAN_WATCH_SERVICES"] = '["checkout"]'
        server.start()

    def watch():
        rows = g.api("GET", "/v1/rollouts", params={"service": "checkout", "active": True}).json()
        return next((r for r in rows if r["strategy"] == "watch"), None)

    watch_id = wait_until(lambda: (w := watch()) and w["id"], 20, 0.2, "the watch of checkout")
    holder = wait_until(lambda: ha.holder(watch_id), 10, 0.1, "the watch's holder")
    other = h if holder == "g" else g
    r = other.api("POST", "/v1/rollouts", json={"service": "checkout", "image": "demo:v2", "steps": [50, 100],
                                               "analysis_seconds": 600})
    assert r.status_code == 202, r.text
    intent = r.json()["intent"]
    assert intent["action"] == "start" and intent["rollout_id"] == watch_id and intent["starts"]
    second = other.api("POST", "/v1/rollouts", json={"service": "checkout", "image": "demo:v3", "steps": [50, 100],
                                                    "analysis_seconds": 600})
    done = other.api("GET", f"/v1/intents/{intent['id']}", params={"wait": 10}).json()
    assert done["status"] == "done" and done["done_by"] == holder, done  # the first start is the one carried out
    if second.status_code == 202:  # filed on the same watch: the first start ended it, so this one is refused
        late = other.api("GET", f"/v1/intents/{second.json()['intent']['id']}", params={"wait": 10}).json()
        assert late["status"] == "refused" and late["detail"], late
        assert other.api("GET", f"/v1/rollouts/{late['starts']}").status_code == 404
    else:  # the first start had taken the watch's place already
        assert second.status_code == 409 and intent["starts"] in second.text, second.text
    started = other.rollout(intent["starts"])
    assert started["phase"] == "progressing" and started["image"] == "demo:v2"
    assert other.rollout(watch_id)["phase"] == "ended"
    other.api("POST", f"/v1/rollouts/{intent['starts']}/rollback")
