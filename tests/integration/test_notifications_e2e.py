"""Notifications end to end: the real app, store, rules, guard and ChannelNotifier built from settings
(GUARDIAN_NOTIFY_ROUTES as a user writes it), rollouts driven through real guard ticks (a recording as the metric
source, a fake clock, the noop actuator), sending to tests/stubs/chat_stub.py (a STUB of Slack's and Teams'
webhooks, following their documented formats and answers)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from guardian.api.app import create_app
from guardian.api.components import build
from guardian.clock import FakeClock
from guardian.notifiers.channels import ChannelNotifier
from guardian.settings import Settings
from guardian.sources.recording import RecordingSource
from tests.fixtures.env import clean_guardian_env  # noqa: F401 - the fixture
from tests.stubs.chat_stub import ChatStub, slack_problem
from tests.unit.recordings import steady_recording

REPO = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("clean_guardian_env")


def test_a_rollback_reaches_slack_with_its_evidence_and_a_promotion_only_the_routes_that_hear_it(
        tmp_path, monkeypatch):
    chat = ChatStub()
    try:
        monkeypatch.setenv("GUARDIAN_NOTIFY_ROUTES", json.dumps([
            {"channel": "slack", "url": f"{chat.url}/services/T1/B2/SECRET", "events": ["rollback", "bake_failed"]},
            {"channel": "teams", "url": f"{chat.url}/workflows/all/SECRET2", "services": ["checkout"]},
        ]))
        monkeypatch.setenv("GUARDIAN_PUBLIC_URL", "https://guardian.example.com")
        for errors, phase in ((30, "rolled_back"), (0, "promoted")):
            clock = FakeClock()
            s = Settings(db_path=str(tmp_path / f"g{errors}.db"), rules=[str(REPO / "rules")], recordings_dir="")
            c = build(s, source=RecordingSource(steady_recording(60, canary_errors=errors)), clock=clock)
            channel = next(n for n in c.notifier.notifiers if isinstance(n, ChannelNotifier))
            with TestClient(create_app(c, run_scheduler=False)) as client:
                r = client.post("/v1/rollouts", json={"service": "checkout", "image": "checkout:v2",
                                                      "steps": [50, 100], "analysis_seconds": 20})
                assert r.status_code == 201, r.text
                rid = r.json()["id"]
                for _ in range(40):
                    clock.advance(10)
                    c.guard.tick(rid)
                    if client.get(f"/v1/rollouts/{rid}").json()["phase"] == phase:
                        break
                assert client.get(f"/v1/rollouts/{rid}").json()["phase"] == phase
                assert channel.flush(10)
                metrics = client.get("/metrics").text
            sent = 'guardian_notifications_total{result="sent",route="slack:127.0.0.1"} 1.0'
            assert (sent in metrics) == (phase == "rolled_back"), metrics  # in /metrics, by route and result
    finally:
        chat.close()
    slack = [body for path, body in chat.received if path.startswith("/services/")]
    teams = [body for path, body in chat.received if path.startswith("/workflows/")]
    (rollback,) = slack  # Slack hears the rollback only
    assert slack_problem(rollback) is None and rollback["blocks"][0]["text"]["text"] == "checkout rolled back"
    evidence = " ".join(b["text"]["text"] for b in rollback["blocks"] if b["type"] == "section")
    assert "error-rate" in evidence and "threshold 0.05" in evidence and "n=" in evidence
    assert rollback["blocks"][-1]["elements"][0]["url"].startswith("https://guardian.example.com/ui/rollouts/")
    titles = [b["attachments"][0]["content"]["body"][0]["text"] for b in teams]
    assert titles == ["checkout started", "checkout rolled back", "checkout started", "checkout promoted"]
