"""The webhook intake's group commit (guardian/api/intake.py, Guard.receive_alert_posts): posts that
arrive while a batch is being stored go together into the next one, each post gets its own answer, and
a batch behaves as its posts one after the other (stored, a repeat changes nothing, a firing alert acts)."""
from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from guardian.api.intake import AlertIntake
from guardian.engine.alerts import StoredAlert
from tests.unit.test_alerts import TOKEN, alert, payload, post, state
from tests.unit.test_api_contract import Harness, clean_env, make_harness  # noqa: F401


@pytest.fixture
def api(tmp_path):
    yield from make_harness(tmp_path, alerts_token=TOKEN)


def stored(fingerprint: str, status: str = "firing", **labels: str) -> StoredAlert:
    return StoredAlert(fingerprint=fingerprint, name="CheckoutCanaryErrors", status=status,
                       labels={"alertname": "CheckoutCanaryErrors", "service": "checkout", "severity": "critical",
                               **labels},
                       annotations={"summary": "s"}, starts_at=1.0, ends_at=None if status == "firing" else 2.0,
                       received_at=3.0, group_key="g")


def test_a_batch_answers_each_post_as_if_it_came_alone(api: Harness):
    r = api.start()  # checkout:2
    other = [stored("o1", service="payments")]
    about = [stored("c1"), stored("c2")]
    repeat = [stored("o1", service="payments")]
    answers = api.c.guard.receive_alert_posts([other, about, repeat])
    assert answers[0] == {"received": 1, "changed": 1, "acted": []}
    assert answers[1]["received"] == 2 and answers[1]["changed"] == 2
    assert [a["action"] for a in answers[1]["acted"]] == ["rollback"] and answers[1]["acted"][0]["rollout"] == r["id"]
    assert answers[2] == {"received": 1, "changed": 0, "acted": []}  # a repeat within the batch changes nothing
    assert state(api, r["id"])["phase"] == "rolled_back"
    assert [d["action"] for d in state(api, r["id"])["decisions"]].count("rollback") == 1
    assert {a.fingerprint for a in api.c.store.alerts()} == {"o1", "c1", "c2"}


def test_a_firing_then_resolved_alert_in_one_batch_ends_resolved(api: Harness):
    answers = api.c.guard.receive_alert_posts([[stored("f")], [stored("f", "resolved")]])
    assert [a["changed"] for a in answers] == [1, 1]
    assert [a.status for a in api.c.store.alerts()] == ["resolved"] and api.c.guard.firing_alerts() == []


def test_concurrent_posts_share_batches_and_none_is_lost(api: Harness):
    calls: list[int] = []
    real = api.c.guard.receive_alert_posts

    def slow(posts):  # a slow store: the posts that arrive meanwhile wait for the next batch
        calls.append(len(posts))
        time.sleep(0.05)
        return real(posts)

    api.c.guard.receive_alert_posts = slow
    n = 24

    def send(i: int):
        return post(api, payload(alert(fingerprint=f"p{i}", service="payments")))

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(send, range(n)))
    assert all(r.status_code == 200 and r.json()["changed"] == 1 for r in results)
    assert len(api.client.get("/v1/alerts", params={"all": True}).json()) == n
    assert calls and max(calls) > 1  # batched (a lone post goes through receive_alerts)


def test_a_failing_batch_fails_each_of_its_posts_and_the_intake_goes_on():
    class Guard:
        def __init__(self):
            self.fail = True
            self.gate = threading.Event()

        def receive_alerts(self, alerts):
            self.gate.wait(5)
            if self.fail:
                raise RuntimeError("store refused")
            return {"received": len(alerts), "changed": len(alerts), "acted": []}

        def receive_alert_posts(self, posts):
            return [self.receive_alerts(p) for p in posts]

    class Components:
        guard = Guard()

    async def scenario():
        intake = AlertIntake(Components(), asyncio.get_running_loop())
        first = asyncio.ensure_future(intake.submit([stored("a")]))
        await asyncio.sleep(0.01)  # the first batch is in the thread pool: these two make the next one
        second = [asyncio.ensure_future(intake.submit([stored(x)])) for x in ("b", "c")]
        await asyncio.sleep(0.01)
        Components.guard.gate.set()
        with pytest.raises(RuntimeError, match="store refused"):
            await first
        for f in second:
            with pytest.raises(RuntimeError):
                await f
        Components.guard.fail = False
        return await intake.submit([stored("d")])

    assert asyncio.run(scenario()) == {"received": 1, "changed": 1, "acted": []}


def test_the_fast_lane_answers_as_the_full_stack_does(api: Harness):
    """A declared body takes the fast lane (intake.AlertsFastLane), a chunked one the router: same answers."""
    def both(body: bytes, token: str | None = TOKEN) -> list[tuple[int, dict]]:
        auth = {"Authorization": f"Bearer {token}"} if token else {}
        headers = {"Content-Type": "application/json", **auth}
        declared = api.client.post("/v1/alerts", content=body, headers=headers)
        chunked = api.client.post("/v1/alerts", content=iter([body[:7], body[7:]]), headers=headers)
        return [(r.status_code, r.json()) for r in (declared, chunked)]

    import json

    good = json.dumps(payload(alert(service="payments"))).encode()
    (s1, a1), (s2, a2) = both(good)
    assert (s1, s2) == (200, 200) and a1["received"] == 1 and a1["changed"] == 1 and a2["changed"] == 0
    for body, token, status in ((good, "wrong", 401), (good, None, 401), (b'{"version": "3"}', TOKEN, 422),
                                (b"not json", TOKEN, 422)):
        declared, chunked = both(body, token)
        assert declared == chunked and declared[0] == status, (declared, chunked)
