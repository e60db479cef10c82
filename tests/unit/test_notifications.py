"""Slack, Teams, webhook (CloudEvents) and e-mail notifications: what they say, where they go, and that sending never
holds a rollout. Slack and Teams answer from tests/stubs/chat_stub.py (a STUB following their documented webhook
behaviour); e-mail goes through a real SMTP server (aiosmtpd) on loopback."""
from __future__ import annotations

import email
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from loguru import logger
from pydantic import ValidationError

from guardian.metrics import GuardianMetrics
from guardian.notifiers.channels import ChannelNotifier, SmtpSettings
from guardian.notifiers.formats import cloudevent, slack_payload, teams_payload
from guardian.notifiers.messages import event_kind, message_for
from guardian.notifiers.outbox import Outbox, Permanent, Transient
from guardian.notifiers.routes import NotifyRoute
from guardian.settings import Settings
from tests.stubs.chat_stub import ChatStub, slack_problem, teams_problem

XSS = "<script>alert(1)</script><!channel>"


def rollback_event(**over: Any) -> dict[str, Any]:
    event = {
        "rollout_id": "r-42", "service": "checkout", "image": "shop/checkout:v2", "phase": "rolled_back", "weight": 0,
        "action": "rollback", "reason": "errors-vs-baseline: canary 11/70 errors vs baseline 0/630",
        "source": "guardian", "at": 1767614400.0, "tick": 7, "baking": False,
        "verdicts": [
            {"check": "errors-vs-baseline", "result": "fail", "reason": "canary 11/70 errors vs baseline 0/630",
             "value": 124.0, "threshold": 548.0, "sample_size": 700, "statistic": "level e_value"},
            {"check": "p99-vs-baseline", "result": "pass", "reason": "fine", "value": 0.2, "threshold": 0.5,
             "sample_size": 7, "statistic": "sign"},
        ],
        "logs": [{"template": "ERROR payment <*> declined", "canary_count": 14, "baseline_count": 0}],
    }
    return {**event, **over}


def test_a_rollback_says_what_happened_with_the_failing_checks_evidence_log_template_and_link() -> None:
    msg = message_for(rollback_event(), base_url="https://guardian.example.com/")
    assert msg is not None and msg.kind == "rollback" and msg.title == "checkout rolled back"
    (f,) = msg.failing  # only the check that failed
    assert f.check == "errors-vs-baseline" and f.evidence() == "value 124 vs threshold 548 (level e_value, n=700)"
    assert msg.log_template == "ERROR payment <*> declined" and msg.log_counts == "14x in canary vs 0x in baseline"
    assert msg.link == "https://guardian.example.com/ui/rollouts/r-42"


def test_event_kinds_a_failed_bake_and_decisions_no_route_hears() -> None:
    assert event_kind(rollback_event(baking=True)) == "bake_failed"
    assert event_kind({"action": "advance"}) is None and message_for({"action": "continue"}) is None
    assert [event_kind({"action": a}) for a in ("start", "pause", "promote", "scale")] == [
        "start", "pause", "promote", "scale"]


def test_slack_payload_follows_block_kit_and_escapes_what_the_service_sent() -> None:
    msg = message_for(rollback_event(service=XSS + "x" * 300), base_url="https://g.example")
    payload = slack_payload(msg)
    assert slack_problem(payload) is None  # header ≤ 150 characters, sections ≤ 3,000, known block types
    text = str(payload)
    assert "<script>" not in text and "<!channel>" not in text and "&lt;script&gt;" in text
    sections = " ".join(b["text"]["text"] for b in payload["blocks"] if b["type"] == "section")
    assert "level e_value" in sections and "ERROR payment &lt;*&gt; declined" in sections
    assert payload["blocks"][-1]["elements"][0]["url"] == "https://g.example/ui/rollouts/r-42"


def test_a_named_operators_action_is_notified_with_their_name() -> None:
    msg = message_for(rollback_event(source="user", by="alice", reason="rollback by alice", verdicts=[]))
    assert msg is not None and msg.who == "alice (user)"
    slack = " ".join(str(b) for b in slack_payload(msg)["blocks"])
    assert "alice (user)" in slack
    facts = [f for b in teams_payload(msg)["attachments"][0]["content"]["body"] if b["type"] == "FactSet"
             for f in b["facts"]]
    assert {"title": "By", "value": "alice (user)"} in facts
    data = cloudevent(msg, event_id="e1", source="/guardian")["data"]
    assert data["by"] == "alice" and data["source"] == "user"
    assert message_for(rollback_event()).who == "guardian"  # the guardian's own decision names no operator


def test_teams_payload_is_one_adaptive_card_with_the_evidence() -> None:
    payload = teams_payload(message_for(rollback_event()))
    assert teams_problem(payload) is None
    card = payload["attachments"][0]["content"]
    assert card["version"] == "1.4" and "actions" not in card  # no link without public_url
    facts = [f for b in card["body"] if b["type"] == "FactSet" for f in b["facts"]]
    assert any(f["title"] == "errors-vs-baseline" and "threshold 548" in f["value"] for f in facts)


def test_cloudevent_has_the_required_attributes() -> None:
    ev = cloudevent(message_for(rollback_event()), event_id="run-1", source="release-guardian")
    assert {k: ev[k] for k in ("specversion", "id", "source", "type", "subject")} == {
        "specversion": "1.0", "id": "run-1", "source": "release-guardian",
        "type": "io.releaseguardian.rollout.rollback", "subject": "r-42"}
    assert ev["time"] == "2026-01-05T12:00:00Z" and ev["data"]["checks"][0]["statistic"] == "level e_value"


@pytest.mark.parametrize(("route", "says"), [
    ({"channel": "slack"}, "needs `url`"),
    ({"channel": "slack", "url": "ftp://x/y"}, "http(s)://"),
    ({"channel": "teams", "url": "https://x/y", "events": ["rolback"]}, "unknown event(s) ['rolback']"),
    ({"channel": "email"}, "needs `to`"),
    ({"channel": "email", "to": ["ops@example.com\r\nBcc: x@y"]}, "not an e-mail address"),
    ({"channel": "pager", "url": "https://x"}, "'slack', 'teams', 'webhook' or 'email'"),
])
def test_a_bad_route_is_refused_naming_the_field(route: dict, says: str) -> None:
    with pytest.raises(ValidationError) as e:
        NotifyRoute(**route)
    assert says in str(e.value)


def test_settings_refuse_an_email_route_without_a_mail_server_and_keep_webhook_urls_secret() -> None:
    with pytest.raises(ValidationError, match="set smtp_host"):
        Settings(notify_routes=[{"channel": "email", "to": ["ops@example.com"]}])
    s = Settings(notify_routes=[{"channel": "slack", "url": "https://hooks.slack.com/services/T1/B2/SECRET"}])
    assert "SECRET" not in repr(s) and s.notify_routes[0].label() == "slack:hooks.slack.com"


@pytest.fixture
def chat() -> Iterator[ChatStub]:
    stub = ChatStub()
    yield stub
    stub.close()


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="DEBUG")
    yield lines
    logger.remove(sink)


def _notifier(routes: list[dict], **kw: Any) -> ChannelNotifier:
    return ChannelNotifier([NotifyRoute(**r) for r in routes], metrics=GuardianMetrics(),
                           outbox_options={"retry_base": 0.01, "retry_cap": 0.05}, **kw)


def test_slack_rate_limits_are_retried_until_sent_and_routes_filter_by_service_and_event(
        chat: ChatStub, log_lines: list[str]) -> None:
    chat.rate_limit_next = 2
    n = _notifier([
        {"channel": "slack", "url": f"{chat.url}/services/T1/B2/SECRET", "events": ["rollback", "bake_failed"]},
        {"channel": "teams", "url": f"{chat.url}/workflows/abc/SECRET2", "services": ["payments"]},
    ])
    n.notify(rollback_event())
    n.notify(rollback_event(action="promote", phase="promoted"))  # slack does not hear promotions
    n.notify(rollback_event(action="advance"))  # nobody hears advances
    assert n.flush(10)
    assert [p for p, _ in chat.received] == ["/services/T1/B2/SECRET"]  # teams hears only payments
    assert chat.statuses == [429, 429, 200]
    slack_box = n.outboxes[0]
    assert (slack_box.counts["sent"], slack_box.counts["retried"], slack_box.counts["failed"]) == (1, 2, 0)
    assert not any("SECRET" in line for line in log_lines)  # the webhook URL is a secret
    n.close()


def test_a_revoked_webhook_is_given_up_at_once_and_counted(chat: ChatStub) -> None:
    metrics = GuardianMetrics()
    n = ChannelNotifier([NotifyRoute(channel="slack", url=f"{chat.url}/services/T1/B2/REVOKED", name="ops")],
                        metrics=metrics)
    n.notify(rollback_event())
    assert n.flush(10)
    assert chat.statuses == [404]
    assert metrics.notifications.labels("ops", "failed")._value.get() == 1
    n.close()


def test_notify_returns_while_the_receiver_is_still_answering(chat: ChatStub) -> None:
    chat.hold.clear()  # the receiver takes its time
    n = _notifier([{"channel": "teams", "url": f"{chat.url}/workflows/abc/SECRET2"}])
    for i in range(5):
        n.notify(rollback_event(rollout_id=f"r-{i}"))  # returns at once: the tick goes on
    assert chat.received == [] and n.outboxes[0].pending() == 5
    chat.hold.set()
    assert n.flush(10)
    assert len(chat.received) == 5 and set(chat.statuses) == {202}
    n.close()


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[email.message.Message] = []
        self.got = threading.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
        self.messages.append(email.message_from_bytes(envelope.content))
        self.got.set()
        return "250 OK"


def test_email_goes_through_a_real_smtp_server_with_the_evidence() -> None:
    inbox = _Inbox()
    with socket.socket() as probe:  # a free loopback port (aiosmtpd's start checks the port it was given)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = Controller(inbox, hostname="127.0.0.1", port=port)
    server.start()
    try:
        n = _notifier([{"channel": "email", "to": ["ops@example.com"]}],
                      smtp=SmtpSettings("127.0.0.1", port, sender="guardian@example.com"),
                      base_url="https://g.example")
        start = time.monotonic()
        n.notify(rollback_event(service=XSS))
        assert n.flush(10) and inbox.got.wait(5), time.monotonic() - start
        (mail,) = inbox.messages
        assert mail["To"] == "ops@example.com" and mail["Subject"].startswith("[guardian] <script>")
        body = mail.get_payload(decode=True).decode()
        assert "errors-vs-baseline (fail): value 124 vs threshold 548 (level e_value, n=700)" in body
        assert "ERROR payment <*> declined" in body and "https://g.example/ui/rollouts/r-42" in body
        assert mail.get_content_type() == "text/plain"  # nothing in it can run
        n.close()
    finally:
        server.stop()


def test_an_unreachable_mail_server_is_retried_then_given_up_without_raising() -> None:
    n = _notifier([{"channel": "email", "to": ["ops@example.com"]}], smtp=SmtpSettings("127.0.0.1", 9, timeout=1))
    n.notify(rollback_event())
    assert n.flush(20)
    box = n.outboxes[0]
    assert box.counts["failed"] == 1 and box.counts["retried"] == box.max_attempts - 1
    n.close()


# -- the Outbox itself: the hooks the Grafana notifier sends through (retries until closed, its own counting and
# names in log lines) ------------------------------------------------------------------------------------------
def test_an_unbounded_outbox_retries_until_the_receiver_takes_it_and_later_payloads_see_earlier_results() -> None:
    learnt: dict[str, int] = {}
    sent: list[tuple[str, int | None]] = []
    failures = iter(range(25))  # the receiver is down for 25 attempts: past any default bound

    def send(payload: str) -> None:
        if payload == "open" and next(failures, None) is not None:
            raise Transient("HTTP 503")
        if payload == "open":
            learnt["id"] = 7  # what the receiver answered
        sent.append((payload, learnt.get("id")))

    box = Outbox("t", send, max_attempts=None, retry_base=0.0, retry_cap=0.0)
    box.put("open")
    box.put("close")  # sent after "open", with its result
    assert box.flush(10)
    assert sent == [("open", 7), ("close", 7)]
    assert (box.counts["retried"], box.counts["sent"], box.counts["failed"]) == (25, 2, 0)
    box.close(1)


def test_close_gives_up_the_payload_being_retried_without_another_attempt_and_drops_the_rest(log_lines) -> None:
    attempts: list[str] = []

    def send(payload: str) -> None:
        attempts.append(payload)
        raise Transient("down")

    box = Outbox("t", send, max_attempts=None, retry_base=30.0, retry_cap=30.0, label="things",
                 describe=lambda p: f"thing {p}")
    for p in ("a", "b", "c"):
        box.put(p)
    time.sleep(0.2)  # "a" failed once and waits 30 s for its retry
    began = time.perf_counter()
    assert box.close(0.2) == 2
    assert time.perf_counter() - began < 2  # the backoff wait was cut short
    assert attempts == ["a"]  # no attempt after close's timeout
    assert (box.counts["failed"], box.counts["dropped"], box.counts["sent"]) == (1, 2, 0)
    assert any("things: thing a not sent (attempt 1): down; retrying in 30.0s" in line for line in log_lines)
    assert any("things: gave up on thing a after 1 attempt(s) at shutdown" in line for line in log_lines)
    assert any("things: 2 not sent at shutdown, dropped" in line for line in log_lines)


def test_a_count_hook_replaces_the_notification_series() -> None:
    metrics, counted = GuardianMetrics(), []
    calls = iter([Transient("429", retry_after=0.0), None, Permanent("HTTP 403")])

    def send(payload: str) -> None:
        error = next(calls)
        if error is not None:
            raise error

    box = Outbox("t", send, metrics=metrics, count=counted.append, retry_base=0.0)
    box.put("a")
    box.put("b")
    assert box.flush(5)
    box.close(1)
    assert counted == ["retried", "sent", "failed"]
    assert metrics.registry.get_sample_value("guardian_notifications_total", {"route": "t", "result": "sent"}) is None


def test_retry_after_is_honoured_within_the_cap() -> None:
    waits: list[float] = []
    calls = iter([Transient("429", retry_after=4.0), Transient("429", retry_after=99.0), None])

    def send(payload: str) -> None:
        error = next(calls)
        if error is not None:
            raise error

    box = Outbox("t", send, retry_base=0.5, retry_cap=10.0, sleep=waits.append)
    box.put("a")
    assert box.flush(5)
    box.close(1)
    assert waits == [4.0, 10.0]


def test_drops_beyond_the_bound_are_each_counted_and_the_first_logged_naming_the_payload(log_lines) -> None:
    hold = threading.Event()
    box = Outbox("t", lambda p: hold.wait(5), max_queue=2, label="things", describe=lambda p: f"thing {p}")
    for p in range(6):
        box.put(p)
    hold.set()
    assert box.flush(5)
    box.close(1)
    assert box.counts["dropped"] >= 3
    drops = [line for line in log_lines if "queue full" in line]
    assert len(drops) == 1 and "dropped the oldest (thing " in drops[0] and "1 dropped so far" in drops[0]


def test_a_payload_that_cannot_be_named_is_still_sent_and_logged(log_lines) -> None:
    def send(payload: str) -> None:
        raise Permanent("HTTP 400")

    def name(payload: str) -> str:
        raise KeyError(payload)

    box = Outbox("t", send, describe=name)
    box.put("a")
    assert box.flush(5)
    box.close(1)
    assert any("notifications to t: message refused, not retried: HTTP 400" in line for line in log_lines)
