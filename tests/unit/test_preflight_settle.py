"""A start right after a promotion: the promoted targets show up under the baseline's label only at their next
scrape, so the preflight asks again for a few seconds before refusing (only when an arm's label value is absent
while its label has others); a real configuration problem is refused at once."""
from __future__ import annotations

import pytest

import guardian.api.rollouts as rollouts
import guardian.engine.preflight as preflight_module
from guardian.sources.doctor import Finding
from tests.unit.test_api_contract import Harness, clean_env, make_harness  # noqa: F401

RELABELLING = Finding(signal="requests", arm="baseline", status="missing", gating=True, checks=("errors-vs-baseline",),
                      detail='no http_requests_total{service="checkout"} series has track="baseline" (the baseline); '
                             'its track values: "canary"')
NO_BUCKET = Finding(signal="slow", arm="baseline", status="missing", gating=True, checks=("slow-vs-baseline",),
                    detail='http_request_duration_seconds_bucket has no le="0.5" bucket')


@pytest.fixture
def api(tmp_path):
    yield from make_harness(tmp_path)


def _scripted(monkeypatch, answers: list[list[Finding]]) -> list[float]:
    """The preflight answers these findings in turn (then none); returns the sleeps the start made."""
    calls = iter(answers)
    monkeypatch.setattr(preflight_module, "preflight", lambda *a, **k: next(calls, []))
    slept: list[float] = []
    monkeypatch.setattr(rollouts.time, "sleep", slept.append)
    return slept


def test_a_baseline_still_being_relabelled_is_waited_for(api: Harness, monkeypatch):
    slept = _scripted(monkeypatch, [[RELABELLING], [RELABELLING]])
    r = api.client.post("/v1/rollouts", json={"service": "checkout", "image": "checkout:2"})
    assert r.status_code == 201, r.text
    assert slept == [1.0, 1.0] and r.json()["phase"] != "paused"


def test_a_baseline_that_never_shows_up_is_refused_after_the_wait(api: Harness, monkeypatch):
    slept = _scripted(monkeypatch, [[RELABELLING]] * 50)
    r = api.client.post("/v1/rollouts", json={"service": "checkout", "image": "checkout:2"})
    assert r.status_code == 422 and r.json()["error"] == "missing_metrics", r.text
    assert sum(slept) == rollouts.PREFLIGHT_SETTLE_SECONDS
    assert api.c.store.list() == []


def test_a_configuration_problem_is_refused_at_once(api: Harness, monkeypatch):
    slept = _scripted(monkeypatch, [[NO_BUCKET, RELABELLING]])
    r = api.client.post("/v1/rollouts", json={"service": "checkout", "image": "checkout:2"})
    assert r.status_code == 422, r.text
    assert slept == []
