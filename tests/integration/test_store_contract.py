"""The StateStore contract, run against SQLiteStore and PostgresStore (a real PostgreSQL 15): the same
calls give the same answers, the same conflicts and the same atomicity."""
from __future__ import annotations

import pytest

from guardian.domain import Action, Decision, Outcome, Phase, Result, RolloutState, Strategy, Verdict
from guardian.engine.alerts import StoredAlert
from guardian.engine.store import SQLiteStore
from guardian.engine.store_pg import PostgresStore, redact
from guardian.errors import RolloutConflict, RolloutNotFound, StoreError

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):
    if request.param == "sqlite":
        s = SQLiteStore(tmp_path / "guardian.db")
    else:
        s = PostgresStore(request.getfixturevalue("pg_url"))
    yield s
    s.close()


def rollout(rid="r1", service="checkout", **kw) -> RolloutState:
    kw = {"updated_at": 1_700_000_000.0, **kw}
    return RolloutState(id=rid, service=service, image="checkout:v2", strategy=Strategy.CANARY, steps=(10, 50, 100),
                        target="noop", step_seconds=10.0, analysis_seconds=30.0, created_at=1_700_000_000.0, **kw)


def alert(fp="f1", status="firing", starts=1.0, ends=None) -> StoredAlert:
    return StoredAlert(fingerprint=fp, name="HighErrors", status=status, labels={"service": "checkout"},
                       annotations={"summary": "5xx"}, starts_at=starts, ends_at=ends, received_at=2.0)


def test_create_get_list_save(store):
    store.create(rollout())
    assert store.get("r1") == rollout()
    store.save(rollout(step_index=1, updated_at=5.0))
    assert store.get("r1").step_index == 1
    assert [s.id for s in store.list()] == ["r1"] and [s.id for s in store.list(active_only=True)] == ["r1"]
    with pytest.raises(RolloutNotFound):
        store.get("nope")
    with pytest.raises(RolloutNotFound):
        store.save(rollout("nope", service="other"))


def test_one_rollout_in_flight_per_service(store):
    store.create(rollout("r1"))
    with pytest.raises(RolloutConflict, match="r1"):
        store.create(rollout("r2"))
    store.create(rollout("r3", service="payments"))  # another service is free
    store.save(rollout("r1", phase=Phase.PROMOTED))
    store.create(rollout("r2"))  # the first one ended: the service is free again
    assert [s.id for s in store.list(active_only=True)] == ["r3", "r2"] or {
        s.id for s in store.list(active_only=True)} == {"r2", "r3"}


def test_ticks_evidence_and_recording(store):
    store.create(rollout())
    verdict = Verdict("error-rate", Result.PASS, "ok", value=0.01, threshold=0.05, sample_size=100)
    store.record_tick(rollout(last_tick=0), 0, 10.0, {"requests": {"canary": 5, "baseline": 50}}, None, [verdict],
                      Decision(Action.CONTINUE, "hold", tick=0, at=10.0))
    store.record_tick(rollout(last_tick=2), 2, 30.0, {"requests": {"canary": 7, "baseline": None}}, "down", [], None)
    store.record_tick(rollout(last_tick=2), 2, 31.0, {"requests": {"canary": 8, "baseline": 60}}, None, [], None)
    assert store.get("r1").last_tick == 2
    ticks = store.ticks("r1")
    assert [t["tick"] for t in ticks] == [0, 2] and ticks[1]["values"]["requests"]["canary"] == 8  # replaced
    assert ticks[0]["verdicts"][0]["check"] == "error-rate" and ticks[0]["decision"]["action"] == "continue"
    ev = store.evidence("r1", 10.0, frozenset({"requests"}))
    assert ev.ticks == 3 and list(ev.column("requests", "canary"))[0] == 5
    store.save_models("r1", {"checkout/requests": {"period": 60}})
    doc = store.recording("r1")
    assert doc["format"] == "guardian-recording/v1" and doc["series"]["requests"]["canary"][2] == 8
    assert doc["labels"]["unavailable_ticks"] == [1] and doc["models"] == {"checkout/requests": {"period": 60}}
    assert store.latest_tick("r1")["tick"] == 2


def test_operation_log_intent_outcome_and_unique_keys(store):
    store.create(rollout())
    d = Decision(Action.ADVANCE, "checks pass", tick=3, at=40.0)
    assert store.next_op_seq("r1") == 1
    seq = store.begin_op("r1", "r1:1:advance", {"key": "r1:1:advance", "action": "advance"}, d, 40.0)
    assert seq == 1 and [op["key"] for op in store.pending_ops("r1")] == ["r1:1:advance"]
    with pytest.raises(Exception):  # noqa: B017 - the key is UNIQUE: the database refuses a second intent
        store.begin_op("r1", "r1:1:advance", {}, d, 41.0)
    assert len(store.ops("r1")) == 1 and store.next_op_seq("r1") == 2
    store.finish_op("r1", 1, Outcome(True, "advance", "weight 50"), d, rollout(step_index=1), 42.0)
    assert store.pending_ops("r1") == [] and store.get("r1").step_index == 1
    [op] = store.ops("r1")
    assert op["status"] == "done" and op["outcome"]["detail"] == "weight 50" and op["finished_at"] == 42.0
    [logged] = store.decisions("r1")
    assert logged["action"] == "advance" and logged["outcome"]["ok"] is True
    store.log_decision("r1", Decision(Action.NOTIFY, "scale limit", at=50.0), None, 50.0)
    assert [x["seq"] for x in store.decisions("r1")] == [1, 2]


def test_a_multi_row_change_is_one_transaction(store):
    store.create(rollout())
    d = Decision(Action.PROMOTE, "last step", at=40.0)
    store.begin_op("r1", "r1:1:promote", {}, d, 40.0)
    with pytest.raises(RolloutNotFound):  # the state cannot be saved: the op and the decision stay unwritten
        store.finish_op("r1", 1, Outcome(True, "promote", "done"), d, rollout("ghost", service="x"), 41.0)
    assert [op["status"] for op in store.ops("r1")] == ["pending"] and store.decisions("r1") == []


def test_alerts_keep_the_latest_word_per_fingerprint(store):
    assert store.save_alerts([alert("f1"), alert("f2")]) == [alert("f1"), alert("f2")]
    assert store.save_alerts([alert("f1")]) == []  # a repeat changes nothing
    resolved = alert("f1", status="resolved", ends=9.0)
    assert store.save_alerts([resolved]) == [resolved]
    assert [a.fingerprint for a in store.alerts(firing_only=True)] == ["f2"]
    assert {a.fingerprint: a.status for a in store.alerts()} == {"f1": "resolved", "f2": "firing"}


def test_marks_remember_when_and_once_wins_only_the_first_time(store):
    assert store.marked("r1", "gate_call") is None
    assert store.mark("r1", "gate_call", 10.0) and store.mark("r1", "gate_call", 20.0)
    assert store.marked("r1", "gate_call") == 20.0
    assert store.mark("r1", "gate_first_step", 30.0, once=True)
    assert not store.mark("r1", "gate_first_step", 40.0, once=True)  # a second claimant (replica) loses
    assert store.marked("r1", "gate_first_step") == 30.0
    assert store.marked("r2", "gate_call") is None


def test_the_database_password_is_never_in_messages(pg_url):
    assert "***" in redact(pg_url) and pg_url.split(":")[2].split("@")[0] not in redact(pg_url)
    store = PostgresStore(pg_url)
    try:
        assert store.ping() and "***" in store.path
    finally:
        store.close()
    wrong = pg_url.replace("@", "x@", 1)  # a wrong password
    with pytest.raises(StoreError) as e:
        PostgresStore(wrong, connect_timeout=3)
    assert "***" in str(e.value) and wrong.split(":")[2].split("@")[0] not in str(e.value)
