"""Where notifications go: routes, per channel, service and event (settings `notify_routes`; docs/notifications.md).

A route is one receiver: a Slack incoming webhook, a Teams workflow webhook, a generic webhook (CloudEvents) or
e-mail recipients, with the services and events it hears (empty: all). A webhook URL carries its own credentials,
so it is a secret: shown redacted, never logged.
"""
from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from guardian.notifiers.messages import EVENTS

CHANNELS = ("slack", "teams", "webhook", "email")


class NotifyRoute(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channel: Literal["slack", "teams", "webhook", "email"]
    url: SecretStr | None = Field(None, description="slack, teams, webhook: the receiver's https:// (or http://) URL")
    to: list[str] = Field([], description="email: the recipients")
    services: list[str] = Field([], description="the services it hears (empty: every service)")
    events: list[str] = Field([], description=f"the events it hears (empty: all): {', '.join(EVENTS)}")
    name: str | None = Field(None, description="how logs and /metrics name it (default: the channel and host)")

    @field_validator("events")
    @classmethod
    def _known_events(cls, v: list[str]) -> list[str]:
        unknown = [e for e in v if e not in EVENTS]
        if unknown:
            raise ValueError(f"unknown event(s) {unknown}: the events are {', '.join(EVENTS)}")
        return v

    @field_validator("to")
    @classmethod
    def _addresses(cls, v: list[str]) -> list[str]:
        bad = [a for a in v if "@" not in a or any(c in a for c in "\r\n,<> ")]
        if bad:
            raise ValueError(f"not an e-mail address: {bad}")
        return v

    @model_validator(mode="after")
    def _complete(self) -> NotifyRoute:
        if self.channel == "email":
            if not self.to:
                raise ValueError("an email route needs `to`: the recipients")
            if self.url is not None:
                raise ValueError("an email route takes `to`, not `url` (the SMTP server is the smtp_* settings)")
            return self
        if self.url is None:
            raise ValueError(f"a {self.channel} route needs `url`")
        parts = urlsplit(self.url.get_secret_value())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"a {self.channel} route's url must be an http(s):// URL with a host "
                             f"(got scheme {parts.scheme!r})")
        return self

    def host(self) -> str:
        """The receiver's host (safe to log), or the recipients' domains for e-mail."""
        if self.url is not None:
            return urlsplit(self.url.get_secret_value()).hostname or "?"
        return ",".join(sorted({a.rsplit("@", 1)[-1] for a in self.to}))

    def label(self) -> str:
        return self.name or f"{self.channel}:{self.host()}"

    def hears(self, service: str, kind: str) -> bool:
        return (not self.services or service in self.services) and (not self.events or kind in self.events)
