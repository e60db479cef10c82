"""Alertmanager intake, in process: the real app, store, rules and guard (a recording as the metric
source, a fake clock, the noop actuator), and webhook bodies exactly as Alertmanager's documentation
gives them (payload version 4)."""
from __future__ import annotations

import base64
import contextlib
import json
import logging
from collections.abc import Iterator

import pytest

from guardian.domain import Action, Phase, Result, RolloutState, Strategy
from guardian.engine.alerts import DEFAULT_LABELS, StoredAlert, matches, route, verdicts_for
from guardian.images import image_version as image_tag
from guardian.rules.models import AlertRoute
from tests.unit.test_api_contract import Harness, assert_error, clean_env, make_harness  # noqa: F401

TOKEN = "am-t0ken"


def alert(status: str = "firing", *, fingerprint: str = "f1", **labels: str) -> dict:
    return {"status": status,
            "labels": {"alertname": "CheckoutCanaryErrors", "service": "checkout", "severity": "critical", **labels},
            "annotations": {"summary": "canary error ratio above 5%", "value": "0.21", "threshold": "0.05"},
            "startsAt": "2026-11-28T10:00:00.000Z",
            "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-11-28T10:05:00Z",
            "generatorURL": "http://prometheus:9090/graph?g0.expr=x", "fingerprint": fingerprint}


def payload(*alerts: dict, status: str | None = None) -> dict:
    return {"version": "4", "groupKey": '{}:{alertname="CheckoutCanaryErrors"}', "truncatedAlerts": 0,
            "status": status or alerts[0]["status"], "receiver": "guardian", "groupLabels": {},
            "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://alertmanager:9093",
            "alerts": list(alerts)}


@pytest.fixture
def api(tmp_path) -> Iterator[Harness]:
    yield from make_harness(tmp_path, alerts_token=TOKEN)


def post(api: Harness, body, token: str | None = TOKEN, **headers):
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return api.client.post("/v1/alerts", content=data, headers={"Content-Type": "application/json", **auth, **headers})


def state(api: Harness, rollout_id: str) -> dict:
    return api.client.get(f"/v1/rollouts/{rollout_id}").json()


def test_a_critical_alert_rolls_the_matching_rollout_back_at_once(api):
    r = api.start()
    out = post(api, payload(alert()))
    assert out.status_code == 200, out.text
    assert out.json()["acted"][0] == {**out.json()["acted"][0], "rollout": r["id"], "action": "rollback", "ok": True}
    s = state(api, r["id"])
    assert s["phase"] == "rolled_back"
    d = s["decisions"][-1]
    assert d["source"] == "alertmanager" and d["action"] == "rollback"
    v = d["verdicts"][0]
    assert v["check"] == "alert:CheckoutCanaryErrors" and v["result"] == "fail"
    assert (v["value"], v["threshold"], v["sample_size"]) == (0.21, 0.05, 1)
    assert "fingerprint f1" in v["statistic"] and "canary error ratio above 5%" in d["reason"]


def test_a_warning_pauses_and_its_resolution_lets_the_rollout_resume(api):
    r = api.start()
    post(api, payload(alert(severity="warning")))
    s = state(api, r["id"])
    assert s["phase"] == "paused" and s["decisions"][-1]["source"] == "alertmanager"
    api.clock.advance(30)
    api.c.guard.tick(r["id"])
    assert state(api, r["id"])["phase"] == "paused"  # still firing: still held
    post(api, payload(alert("resolved", severity="warning")))
    api.clock.advance(10)
    decision = api.c.guard.tick(r["id"])
    assert decision.action is Action.RESUME
    assert state(api, r["id"])["phase"] == "progressing"


def test_the_same_alert_twice_changes_nothing_and_everything_is_stored(api):
    r = api.start()
    first = post(api, payload(alert(severity="warning"))).json()
    again = post(api, payload(alert(severity="warning"))).json()
    assert first["changed"] == 1 and again["changed"] == 0 and again["acted"] == []
    assert [d["action"] for d in state(api, r["id"])["decisions"]].count("pause") == 1
    listed = api.client.get("/v1/alerts").json()
    assert len(listed) == 1 and listed[0]["rollouts"] == [r["id"]] and listed[0]["action"] == "pause"


def test_alerts_about_other_services_versions_or_the_baseline_stop_nothing(api):
    r = api.start()  # checkout:2
    body = payload(alert(fingerprint="a", service="payments"), alert(fingerprint="b", version="1"),
                   alert(fingerprint="c", track="baseline"), alert(fingerprint="d", namespace="prod"))
    out = post(api, body).json()
    assert out["changed"] == 4 and out["acted"] == []
    assert state(api, r["id"])["phase"] == "progressing"
    listed = {a["fingerprint"]: a for a in api.client.get("/v1/alerts").json()}
    assert set(listed) == {"a", "b", "c", "d"} and all(a["rollouts"] == [] for a in listed.values())
    assert post(api, payload(alert(fingerprint="e", version="2"))).json()["acted"][0]["action"] == "rollback"


def test_a_critical_alert_freezes_new_releases_unless_forced(api):
    post(api, payload(alert()))
    r = api.client.post("/v1/rollouts", json={"service": "checkout", "image": "checkout:3"})
    detail = assert_error(r, 409, "conflict")
    assert "release freeze" in detail and "CheckoutCanaryErrors" in detail
    assert api.rollouts() == []
    forced = api.client.post("/v1/rollouts", json={"service": "checkout", "image": "checkout:3", "force": True})
    assert forced.status_code == 201, forced.text
    # another service is not frozen
    assert api.client.post("/v1/rollouts", json={"service": "payments", "image": "payments:3"}).status_code == 201


@pytest.mark.parametrize("body, status, field", [
    (b"{not json", 422, None),
    ({**payload(alert()), "version": "3"}, 422, "version"),
    (payload({**alert(), "status": "burning"}), 422, "status"),
    (payload({k: v for k, v in alert().items() if k != "fingerprint"}), 422, "fingerprint"),
    ({"alerts": "nope"}, 422, "alerts"),
])
def test_malformed_bodies_get_a_4xx_with_the_reason_and_store_nothing(api, body, status, field):
    r = post(api, body)
    detail = assert_error(r, status, "invalid_request")
    if field:
        assert field in json.dumps(detail)
    assert api.client.get("/v1/alerts", params={"all": True}).json() == []


def test_an_oversized_body_is_refused_before_it_is_read(tmp_path):
    for api in make_harness(tmp_path, alerts_token=TOKEN, alerts_max_bytes=1_048_576):
        big = payload(*[alert(fingerprint=f"f{i}") for i in range(6000)])
        r = post(api, big)
        assert r.status_code == 413 and "bytes" in r.json()["detail"] and "1048576" in r.json()["detail"]
        assert api.client.get("/v1/alerts", params={"all": True}).json() == []


def test_a_group_of_any_size_under_the_limit_is_stored_whole(api):
    """Alertmanager retries no 4xx: a group refused for its alert count (1,000 was the cap) would be lost.
    12,000 alerts (about 5 MB, over the other endpoints' 1 MiB) are stored, beyond one intake batch."""
    r = api.start()
    group = [alert("firing", fingerprint=f"f{i:05d}", severity="info", instance=f"10.0.{i // 250}.{i % 250}")
             for i in range(12_000)]
    group.append(alert(fingerprint="critical-one"))
    body = json.dumps(payload(*group))
    assert len(body) > api.c.settings.max_body_bytes
    out = post(api, body)
    assert out.status_code == 200, out.text[:500]
    assert len(api.client.get("/v1/alerts", params={"all": True}).json()) == 12_001
    assert state(api, r["id"])["phase"] == "rolled_back"  # and the critical one among them acted
    other = api.client.post("/v1/rollouts", content=json.dumps({"service": "checkout", "image": "x" * 2_000_000}),
                            headers={"Content-Type": "application/json"})
    assert other.status_code == 413  # the other endpoints keep max_body_bytes


def test_intake_batches_are_bounded_by_alerts_as_well_as_posts():
    from guardian.api.intake import MAX_BATCH_ALERTS, MAX_BATCH_POSTS, next_batch

    posts = lambda *sizes: [([None] * n, None) for n in sizes]  # noqa: E731
    assert next_batch(posts(1, 1, 1)) == 3
    assert next_batch(posts(*[1] * (MAX_BATCH_POSTS + 5))) == MAX_BATCH_POSTS
    assert next_batch(posts(MAX_BATCH_ALERTS * 2, 1)) == 1  # one big post alone, whole
    assert next_batch(posts(MAX_BATCH_ALERTS - 1, 1, 1)) == 2


def test_wrong_or_missing_credentials_get_401_and_the_token_is_not_logged(api, caplog):
    from loguru import logger

    handler = logger.add(logging.getLogger("guardian-test").warning, format="{message}")
    try:
        with caplog.at_level(logging.WARNING, logger="guardian-test"):
            assert post(api, payload(alert()), token="wrong-secret").status_code == 401
            assert post(api, payload(alert()), token=None).status_code == 401
    finally:
        logger.remove(handler)
    assert "wrong-secret" not in caplog.text and "refused" in caplog.text
    assert api.client.get("/v1/alerts", params={"all": True}).json() == []


def test_basic_auth_as_alertmanager_sends_it(tmp_path):
    for h in make_harness(tmp_path, alerts_basic_auth="am:pa55"):
        good = "Basic " + base64.b64encode(b"am:pa55").decode()
        assert post(h, payload(alert()), token=None, Authorization=good).status_code == 200
        bad = "Basic " + base64.b64encode(b"am:nope").decode()
        assert post(h, payload(alert(fingerprint="x")), token=None, Authorization=bad).status_code == 401


# -- the pure parts -----------------------------------------------------------------------------------
def rollout(image: str = "registry:5000/checkout:v2") -> RolloutState:
    return RolloutState(id="r1", service="checkout", image=image, strategy=Strategy.CANARY, steps=(10, 100),
                        target="noop", step_seconds=10, analysis_seconds=60, created_at=0, step_started_at=0,
                        updated_at=0, phase=Phase.PROGRESSING)


def stored(**labels: str) -> StoredAlert:
    return StoredAlert(fingerprint="f", name="A", status="firing", labels={"service": "checkout", **labels},
                       annotations={}, starts_at=0, ends_at=None, received_at=0)


def test_image_tags():
    assert image_tag("registry:5000/checkout:v2") == "v2"
    assert image_tag("checkout") == "latest"
    assert image_tag("checkout:v2@sha256:abc") == "v2"


def test_matching_and_routing_follow_the_configured_labels():
    s = rollout()
    assert matches({"service": "checkout"}, s)
    assert matches({"service": "checkout", "version": "v2", "image": "registry:5000/checkout:v2"}, s)
    assert not matches({"service": "checkout", "version": "v1"}, s)
    assert not matches({"app": "checkout"}, s)
    assert matches({"app": "checkout"}, s, {**DEFAULT_LABELS, "service": "app"})
    routes = [AlertRoute(match={"team": "payments"}, action="pause")]
    assert route({"team": "payments", "severity": "critical"}, routes) is Action.PAUSE
    assert route({"severity": "critical"}, routes) is Action.ROLLBACK
    assert route({"severity": "info"}) is Action.NOTIFY
    [v] = verdicts_for(s, [stored(severity="warning"), StoredAlert(**{**stored().__dict__, "status": "resolved"})])
    assert v.result is Result.FAIL and v.action is Action.PAUSE and v.value == 1.0 and v.threshold == 0.0


def test_guardian_alerts_lists_them_with_what_they_do(api, monkeypatch):
    """`guardian alerts` against the app (its HTTP calls routed into the TestClient)."""
    from typer.testing import CliRunner

    from guardian.cli import remote as cli

    r = api.start()
    post(api, payload(alert(severity="warning"), alert(fingerprint="f2", service="payments", severity="critical")))
    from rich.console import Console

    monkeypatch.setattr(cli, "_client", lambda api_url, token: contextlib.nullcontext(api.client))
    monkeypatch.setattr(cli, "out", Console(width=250))
    result = CliRunner().invoke(cli.app, ["alerts"])
    assert result.exit_code == 0, result.output
    assert "CheckoutCanaryErrors" in result.output and "pause" in result.output and r["id"] in result.output
    assert "none in flight" in result.output and "yes" in result.output  # payments: critical, freezes
    as_json = json.loads(CliRunner().invoke(cli.app, ["alerts", "--json"]).output)
    assert {a["fingerprint"] for a in as_json} == {"f1", "f2"}
