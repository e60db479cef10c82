"""The chat, webhook and e-mail notifier: each decision event a route hears becomes a message in that route's format,
queued on the route's `Outbox` (outbox.py) and sent by its thread over HTTP (httpx) or SMTP (smtplib).

HTTP answers: 2xx sent; 429 and 5xx, connection errors and timeouts retried (429's Retry-After honoured); any other
4xx refused for good (a wrong or revoked webhook URL: 403, 404, 410). SMTP: a refused recipient or message is
permanent; a connection failure, a timeout or a 4xx reply is retried.
"""
from __future__ import annotations

import itertools
import smtplib
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import httpx
from loguru import logger

from guardian.metrics import GuardianMetrics
from guardian.notifiers.formats import cloudevent, email_message, slack_payload, teams_payload
from guardian.notifiers.messages import Message, message_for
from guardian.notifiers.outbox import Outbox, Permanent, Transient, retry_after
from guardian.notifiers.routes import NotifyRoute


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int = 25
    user: str | None = None
    password: str | None = None
    sender: str = "guardian@localhost"
    starttls: bool = False
    timeout: float = 10.0


def http_sender(url: str, *, content_type: str = "application/json", timeout: float = 10.0,
                client: httpx.Client | None = None) -> Callable[[dict[str, Any]], None]:
    """POST a JSON payload to `url`, classifying the answer as sent, Transient or Permanent."""
    http = client or httpx.Client(timeout=timeout, follow_redirects=False)

    def send(payload: dict[str, Any]) -> None:
        try:
            r = http.post(url, json=payload, headers={"content-type": content_type})
        except httpx.TimeoutException as e:
            raise Transient(f"timed out ({type(e).__name__})") from None
        except httpx.TransportError as e:
            raise Transient(f"could not connect ({type(e).__name__})") from None
        if 200 <= r.status_code < 300:
            return
        body = r.text[:200].replace("\n", " ")
        if r.status_code == 429 or r.status_code >= 500:
            raise Transient(f"HTTP {r.status_code} {body}", retry_after(r))
        raise Permanent(f"HTTP {r.status_code} {body}")

    return send


def smtp_sender(smtp: SmtpSettings) -> Callable[[EmailMessage], None]:
    def send(mail: EmailMessage) -> None:
        try:
            with smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout) as s:
                if smtp.starttls:
                    s.starttls()
                if smtp.user:
                    s.login(smtp.user, smtp.password or "")
                s.send_message(mail)
        except (smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused, smtplib.SMTPAuthenticationError,
                smtplib.SMTPNotSupportedError) as e:
            raise Permanent(f"SMTP refused: {type(e).__name__}") from None
        except smtplib.SMTPResponseException as e:
            if 400 <= e.smtp_code < 500:
                raise Transient(f"SMTP {e.smtp_code}") from None
            raise Permanent(f"SMTP {e.smtp_code}") from None
        except (OSError, smtplib.SMTPException) as e:
            raise Transient(f"SMTP: {type(e).__name__}") from None

    return send


class ChannelNotifier:
    """Fans each decision event out to the routes that hear it. `notify` formats and enqueues: it never blocks on
    a receiver and never raises."""

    def __init__(self, routes: Sequence[NotifyRoute], *, base_url: str | None = None, smtp: SmtpSettings | None = None,
                 metrics: GuardianMetrics | None = None, source: str = "release-guardian",
                 outbox_options: dict[str, Any] | None = None) -> None:
        self.routes, self.base_url, self.source = list(routes), base_url, source
        self._ids = itertools.count()
        self._run = uuid.uuid4().hex[:12]  # event ids: unique per process run and event
        self.outboxes: list[Outbox] = []
        for route in self.routes:
            if route.channel == "email":
                if smtp is None:
                    raise ValueError("an email route needs the SMTP server: set smtp_host")
                send: Callable[[Any], None] = smtp_sender(smtp)
            else:
                assert route.url is not None
                send = http_sender(route.url.get_secret_value(), content_type=(
                    "application/cloudevents+json" if route.channel == "webhook" else "application/json"))
            self.outboxes.append(Outbox(route.label(), send, where=f"({route.channel})", metrics=metrics,
                                        **(outbox_options or {})))
        self.smtp = smtp

    def notify(self, event: dict[str, Any]) -> None:
        try:
            msg = message_for(event, base_url=self.base_url)
            if msg is None:
                return
            for route, box in zip(self.routes, self.outboxes, strict=True):
                if route.hears(msg.service, msg.kind):
                    box.put(self._payload(route, msg))
        except Exception as e:  # noqa: BLE001 - a notifier must never break a tick
            logger.warning("notifications: could not prepare a message: {}", type(e).__name__)

    def _payload(self, route: NotifyRoute, msg: Message) -> Any:
        if route.channel == "slack":
            return slack_payload(msg)
        if route.channel == "teams":
            return teams_payload(msg)
        if route.channel == "webhook":
            return cloudevent(msg, event_id=f"{self._run}-{next(self._ids)}", source=self.source)
        assert self.smtp is not None
        return email_message(msg, sender=self.smtp.sender, to=route.to)

    def flush(self, timeout: float) -> bool:
        return all(box.flush(timeout) for box in self.outboxes)

    def close(self, timeout: float = 5.0) -> None:
        for box in self.outboxes:
            box.close(timeout)

