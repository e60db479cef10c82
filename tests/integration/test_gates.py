"""The Flagger webhook and Argo Rollouts web-metric gates through the real API app (guardian/api/gates.py),
with the request bodies the Flagger and Argo Rollouts documentation gives, judged by the real guard on
recorded evidence (a good canary, a canary answering 30% errors, a canary with no data)."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from fastapi.testclient import TestClient

from guardian.api.app import create_app
from guardian.api.components import Components, build
from guardian.api.gates import verdict_of
from guardian.clock import FakeClock
from guardian.domain import Phase
from guardian.settings import Settings
from guardian.sources.recording import RecordingSource
from tests.unit.recordings import late_regression_recording, steady_recording
from tests.unit.test_api_contract import clean_env  # noqa: F401  (autouse: no GUARDIAN_* from outside)

REPO = Path(__file__).resolve().parents[2]
TOKEN = "16688eb5e9f289f1991c"  # the token in Flagger's documented payload's metadata

# Flagger's documented webhook payload (docs.flagger.app, usage/webhooks), with `service` added to its metadata
# so that it is judged by rules/checkout.yaml
FLAGGER = {"name": "podinfo", "namespace": "test", "phase": "Progressing", "checksum": "85d557f47b",
           "metadata": {"test": "all", "token": TOKEN, "service": "checkout"}}


class App:
    def __init__(self, client: TestClient, c: Components, clock: FakeClock):
        self.client, self.c, self.clock = client, c, clock

    def flagger(self, hook: str, **changes) -> tuple[int, dict]:
        r = self.client.post(f"/v1/gates/flagger/{hook}", json={**FLAGGER, **changes})
        return r.status_code, r.json()

    def tick(self, n: int = 1) -> None:
        for _ in range(n):
            self.clock.advance(10)
            for s in self.c.store.list(active_only=True):
                self.c.guard.tick(s.id)


@contextlib.contextmanager
def app(tmp_path: Path, recording: dict, **settings) -> Iterator[App]:
    clock = FakeClock()
    s = Settings(db_path=str(tmp_path / "guardian.db"), rules=[str(REPO / "rules")], recordings_dir="",
                 analysis_seconds=600, **settings)
    components = build(s, source=RecordingSource(recording), clock=clock)
    with TestClient(create_app(components, run_scheduler=False)) as client:
        yield App(client, components, clock)


def no_canary_data(ticks: int) -> dict:
    rec = steady_recording(ticks)
    for series in rec["series"].values():
        series["canary"] = [None] * ticks
    return rec


def test_flagger_good_canary_passes_every_gate_and_post_rollout_promotes(tmp_path):
    with app(tmp_path, steady_recording(60), gate_token=TOKEN) as a:
        status, body = a.flagger("confirm-rollout", phase="Progressing")
        assert status == 200 and body["approved"] is True  # approved: no release freeze
        status, body = a.flagger("pre-rollout")
        assert status == 200 and body["verdict"] == "inconclusive"  # starts judging; nothing to judge yet
        rid = body["rollout"]
        state = a.c.store.get(rid)
        assert (state.target, state.image, state.strategy.value) == ("noop://gate", "checkout:85d557f47b", "observe")
        assert a.flagger("confirm-traffic-increase")[0] == 200  # weight 0 -> the first step: let through once
        status, body = a.flagger("rollout")
        assert status == 200 and body["verdict"] == "inconclusive"  # no tick yet: not a failed check...
        assert a.flagger("confirm-traffic-increase")[0] == 412  # ...but no more traffic: never passed
        a.tick(8)
        status, body = a.flagger("rollout")
        assert status == 200 and body["verdict"] == "pass" and body["rollout"] == rid, body
        assert {"value", "threshold", "samples", "statistic", "reason", "checks"} <= set(body)
        assert a.flagger("confirm-promotion")[0] == 200
        assert a.flagger("rollback")[0] == 412  # a 2xx would make Flagger roll back
        status, body = a.flagger("post-rollout", phase="Succeeded")
        assert status == 200 and body["ended"] == "promoted"
        assert a.c.store.get(rid).phase is Phase.PROMOTED
        assert a.flagger("event", metadata={"eventMessage": "x", "eventType": "Normal", "timestamp": "1578607635167",
                                            "token": TOKEN})[0] == 200


def test_flagger_bad_canary_fails_the_rollout_hook_and_asks_for_the_rollback(tmp_path):
    with app(tmp_path, steady_recording(80, canary_errors=30), gate_token=TOKEN) as a:
        assert a.flagger("pre-rollout")[0] == 200
        for _ in range(40):
            a.tick()
            status, body = a.flagger("rollout")
            assert body["verdict"] != "pass"
            if body["verdict"] == "fail":
                break
        assert status == 412 and body["verdict"] == "fail", body
        assert body["phase"] == "rolled_back" and body["reason"]
        status, body = a.flagger("rollback")
        assert status == 200 and body["verdict"] == "fail"
        assert a.flagger("confirm-promotion")[0] == 412


def test_missing_canary_data_is_inconclusive_never_a_pass(tmp_path):
    with app(tmp_path, no_canary_data(40), gate_token=TOKEN) as a:
        a.flagger("pre-rollout")
        assert a.flagger("confirm-traffic-increase")[0] == 200  # at weight 0: the first step, once
        a.tick(12)
        status, body = a.flagger("confirm-promotion")
        assert status == 412 and body["verdict"] == "inconclusive"
        assert a.flagger("confirm-traffic-increase")[0] == 412  # held: no pass on missing data
        assert a.flagger("rollout")[0] == 200  # nor a failure: Flagger counts no failed check
        assert a.flagger("rollback")[0] == 412  # and no rollback asked
        r = a.client.get("/v1/gates/argo/checkout", params={"revision": "85d557f47b"},
                         headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200 and r.json()["verdict"] == "inconclusive"


def test_argo_web_metric_get_and_post_and_a_new_revision_supersedes_the_old(tmp_path):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with app(tmp_path, steady_recording(60), gate_token=TOKEN) as a:
        # the AnalysisTemplate's web provider: GET url?revision={{args.canary-hash}}&previous={{args.stable-hash}}
        r = a.client.get("/v1/gates/argo/checkout", params={"revision": "6c9bd8675b", "previous": "5f7d9c4b8"},
                         headers=auth)
        assert r.status_code == 200 and r.json()["verdict"] == "inconclusive"
        rid = r.json()["rollout"]
        assert a.c.store.get(rid).previous_image == "checkout:5f7d9c4b8"
        a.tick(8)
        # method: POST with jsonBody, as Argo's web provider sends it
        r = a.client.post("/v1/gates/argo/checkout", json={"revision": "6c9bd8675b", "previous": "5f7d9c4b8"},
                          headers=auth)
        body = r.json()
        assert r.status_code == 200 and body["verdict"] == "pass" and body["rollout"] == rid
        r = a.client.get("/v1/gates/argo/checkout", params={"revision": "7d8e9f0a1b"}, headers=auth)
        assert r.json()["rollout"] != rid and r.json()["verdict"] == "inconclusive"
        old = a.c.store.get(rid)  # closed by its last verdict, a pass
        assert old.phase is Phase.PROMOTED and "superseded" in old.reason and "(pass)" in old.reason


def test_gates_need_the_gate_token(tmp_path):
    with app(tmp_path, steady_recording(10), gate_token=TOKEN, token="operator-secret") as a:
        assert a.client.get("/v1/gates/argo/checkout").status_code == 401
        assert a.client.get("/v1/gates/argo/checkout", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert a.client.post("/v1/gates/flagger/rollout",
                             json={**FLAGGER, "metadata": {"service": "checkout"}}).status_code == 401
        assert a.flagger("no-such-hook")[0] == 404
        assert a.client.get("/v1/gates/argo/bad%20name", headers={"Authorization": f"Bearer {TOKEN}"}
                            ).status_code == 422


def test_verdict_mapping_is_fail_pass_or_inconclusive():
    from guardian.domain import RolloutState, Strategy

    state = RolloutState(id="r", service="s", image="s:1", strategy=Strategy.OBSERVE, steps=(100,), target="noop://gate",
                         step_seconds=10, analysis_seconds=60, created_at=0)
    v = {"check": "errors", "value": 0.01, "threshold": 0.05, "sample_size": 100, "statistic": "e_value", "reason": "r"}
    assert verdict_of(state, None)["verdict"] == "inconclusive"
    assert verdict_of(state, {"verdicts": [{**v, "result": "pass"}]})["verdict"] == "pass"
    assert verdict_of(state, {"verdicts": [{**v, "result": "pass"}, {**v, "result": "error"}]})["verdict"] == \
        "inconclusive"
    failed = verdict_of(state, {"verdicts": [{**v, "result": "inconclusive"}, {**v, "result": "fail"}]})
    assert failed["verdict"] == "fail" and failed["samples"] == 100 and failed["statistic"] == "e_value"
    assert verdict_of(state.evolve(phase=Phase.ROLLED_BACK), None)["verdict"] == "fail"
    assert verdict_of(state.evolve(phase=Phase.PROMOTED), None)["verdict"] == "pass"


# -- issue 16: gates that keep judging, Flagger's real call order, Argo's body forms ------------------------
def test_a_gate_keeps_judging_after_analysis_seconds_and_fails_a_late_regression(tmp_path):
    """The canary passes for 120 s (twice analysis_seconds), then answers 30% errors: the gate must go on
    judging and fail it, never answer the pass of a finished rollout."""
    with app(tmp_path, late_regression_recording(80, bad_from=12), gate_token=TOKEN) as a:
        a.c.settings.analysis_seconds = 60  # a user's rollout would be promoted after 60 s of passing
        assert a.flagger("pre-rollout")[0] == 200
        rid = a.flagger("rollout")[1]["rollout"]
        seen = []
        for _ in range(60):
            a.tick()
            status, body = a.flagger("rollout")
            seen.append(body["verdict"])
            if body["verdict"] == "fail":
                break
        assert "pass" in seen[:12], seen  # it passed while the canary was good...
        assert status == 412 and body["verdict"] == "fail", seen  # ...and fails once it turned bad
        assert a.c.store.get(rid).phase is not Phase.PROMOTED
        assert a.flagger("confirm-promotion")[0] == 412 and a.flagger("rollback")[0] == 200
        r = a.client.get("/v1/gates/argo/checkout", params={"revision": "85d557f47b"},
                         headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.json()["verdict"] == "fail"


def test_flagger_confirm_traffic_increase_at_weight_zero_lets_the_first_step_go_once(tmp_path):
    """Flagger calls confirm-traffic-increase right after pre-rollout, at weight 0: no traffic, no data. The
    first step is let through (recorded); after it, missing data holds the weight again."""
    with app(tmp_path, no_canary_data(40), gate_token=TOKEN) as a:
        assert a.flagger("pre-rollout")[0] == 200
        status, body = a.flagger("confirm-traffic-increase")
        assert status == 200 and body["verdict"] == "inconclusive" and "first" in body["reason"], body
        rid = body["rollout"]
        assert any("first traffic step" in d["reason"] for d in a.c.store.decisions(rid))
        a.tick(6)
        assert a.flagger("rollout")[0] == 200  # inconclusive: no failed check counted
        assert a.flagger("confirm-traffic-increase")[0] == 412  # but the second step waits for evidence
        assert a.flagger("confirm-promotion")[0] == 412


def test_flagger_confirm_rollout_with_the_previous_checksum_opens_nothing(tmp_path):
    """Flagger's confirm-rollout carries the checksum of the spec it last applied (the previous revision);
    pre-rollout then carries the new one. One gate rollout, of the new revision, and nothing superseded."""
    with app(tmp_path, steady_recording(40), gate_token=TOKEN) as a:
        status, body = a.flagger("confirm-rollout", checksum="5f7d9c4b8old", phase="Progressing")
        assert status == 200, body
        assert a.flagger("pre-rollout", checksum="85d557f47b")[0] == 200
        states = a.c.store.list()
        assert [(s.image, s.phase) for s in states] == [("checkout:85d557f47b", Phase.PROGRESSING)], states
        assert not any("superseded" in s.reason for s in states)


def test_flagger_confirm_rollout_holds_while_a_critical_alert_freezes_the_service(tmp_path):
    with app(tmp_path, steady_recording(10), gate_token=TOKEN, alerts_token="am") as a:
        alert = {"status": "firing", "labels": {"alertname": "CheckoutDown", "service": "checkout",
                                                "severity": "critical"}, "annotations": {},
                 "startsAt": "2026-11-28T10:00:00Z", "fingerprint": "f1"}
        r = a.client.post("/v1/alerts", json={"version": "4", "groupKey": "g", "status": "firing", "alerts": [alert]},
                          headers={"Authorization": "Bearer am"})
        assert r.status_code == 200, r.text
        status, body = a.flagger("confirm-rollout", checksum="5f7d9c4b8old")
        assert status == 412 and "CheckoutDown" in body["reason"], body
        assert a.c.store.list() == []


def test_argo_body_string_without_content_type_and_put_are_judged(tmp_path):
    """Argo's web provider sends `body:` as it is, without a Content-Type (only jsonBody sets one), by GET,
    POST or PUT."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with app(tmp_path, steady_recording(40), gate_token=TOKEN) as a:
        raw = '{"revision": "6c9bd8675b", "previous": "5f7d9c4b8"}'
        r = a.client.post("/v1/gates/argo/checkout", content=raw.encode(), headers=auth)
        assert r.status_code == 200, r.text
        rid = r.json()["rollout"]
        assert a.c.store.get(rid).previous_image == "checkout:5f7d9c4b8"
        r = a.client.put("/v1/gates/argo/checkout", content=raw.encode(), headers=auth)
        assert r.status_code == 200 and r.json()["rollout"] == rid, r.text
        r = a.client.post("/v1/gates/argo/checkout", content=b"revision=6c9bd8675b", headers=auth)
        assert r.status_code == 422 and "JSON" in r.text  # a body that is no JSON object is named as such


def test_flagger_event_hook_needs_no_token_and_changes_nothing(tmp_path):
    """Flagger's global -event-webhook sends no metadata, so no token: events are answered 200 and ignored."""
    with app(tmp_path, steady_recording(10), gate_token=TOKEN) as a:
        r = a.client.post("/v1/gates/flagger/event", json={"name": "podinfo", "namespace": "test",
                                                            "phase": "Progressing", "checksum": "85d557f47b",
                                                            "metadata": {"eventMessage": "x", "eventType": "Normal",
                                                                         "timestamp": "1578607635167"}})
        assert r.status_code == 200, r.text
        assert a.c.store.list() == []


def test_a_gate_rollout_whose_client_goes_quiet_is_closed_and_a_later_call_judges_afresh(tmp_path):
    from guardian.api.gates import close_idle

    auth = {"Authorization": f"Bearer {TOKEN}"}
    with app(tmp_path, steady_recording(400), gate_token=TOKEN, gate_idle_seconds=300) as a:
        first = a.client.get("/v1/gates/argo/checkout", params={"revision": "6c9bd8675b"}, headers=auth).json()
        a.tick(10)
        assert a.client.get("/v1/gates/argo/checkout", params={"revision": "6c9bd8675b"},
                            headers=auth).json()["verdict"] == "pass"
        a.tick(20)  # 200 s without a call: not yet idle
        assert close_idle(a.c) == []
        a.tick(11)  # 310 s
        assert close_idle(a.c) == [first["rollout"]]
        closed = a.c.store.get(first["rollout"])
        assert closed.phase is Phase.PROMOTED and "no call from its client" in closed.reason  # its last verdict: pass
        again = a.client.get("/v1/gates/argo/checkout", params={"revision": "6c9bd8675b"}, headers=auth).json()
        assert again["rollout"] != first["rollout"] and again["verdict"] == "inconclusive"  # judged afresh


def test_a_revision_the_guardian_failed_stays_failed_and_post_rollout_starts_nothing(tmp_path):
    with app(tmp_path, steady_recording(80, canary_errors=30), gate_token=TOKEN) as a:
        assert a.flagger("post-rollout", phase="Succeeded")[1] == {"hook": "post-rollout", "rollout": None,
                                                                   "ended": None}
        assert a.c.store.list() == []  # nothing was started only to be ended
        a.flagger("pre-rollout")
        for _ in range(40):
            a.tick()
            if a.flagger("rollout")[1]["verdict"] == "fail":
                break
        rid = a.flagger("rollback")[1]["rollout"]
        assert a.flagger("post-rollout", phase="Failed")[1]["ended"] is None  # already rolled back by the guardian
        status, body = a.flagger("pre-rollout")  # Flagger restarting the analysis of the same revision
        assert status == 412 and body["rollout"] == rid and body["verdict"] == "fail"
        assert len(a.c.store.list()) == 1


def test_a_pass_from_a_stale_tick_is_no_pass(tmp_path):
    """Every answer reflects the latest ticks: when the guardian fell behind (no tick judged for more than three
    ticks and 5 s), its last pass is inconclusive, never a pass."""
    from guardian.api.gates import verdict_of

    with app(tmp_path, steady_recording(60), gate_token=TOKEN) as a:
        a.flagger("pre-rollout")
        a.tick(8)
        assert a.flagger("confirm-promotion")[0] == 200
        a.clock.advance(36)  # no tick for 36 s at 10 s ticks
        status, body = a.flagger("confirm-promotion")
        assert status == 412 and body["verdict"] == "inconclusive" and "old" in body["reason"], body
        state = a.c.store.get(body["rollout"])
        latest = a.c.store.latest_tick(state.id)
        assert verdict_of(state, latest)["verdict"] == "pass"  # without a clock: the tick's own verdict
        a.tick()
        assert a.flagger("confirm-promotion")[0] == 200  # fresh again
