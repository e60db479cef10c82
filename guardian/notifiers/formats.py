"""A `Message` laid out for each channel (pure): Slack Block Kit, a Microsoft Teams Adaptive Card, a CloudEvents
JSON event, an e-mail.

Each follows its service's documented format:
- Slack incoming webhooks: `{"text": fallback, "blocks": [...]}`; a header block's plain text ≤ 150 characters,
  a section's text ≤ 3,000, ≤ 10 fields of ≤ 2,000, ≤ 50 blocks; `&`, `<` and `>` are control characters in
  mrkdwn and are escaped (so a service named `<!channel>` pings nobody).
- Teams workflow webhooks ("Post to a channel when a webhook request is received"): a message with one
  attachment of contentType `application/vnd.microsoft.card.adaptive` whose content is an AdaptiveCard 1.4
  (TextBlock, FactSet, Action.OpenUrl). Adaptive Cards render no HTML: a `<script>` in a service name or a
  log line is shown as text.
- CloudEvents 1.0, structured mode (`application/cloudevents+json`): specversion, id, source, type, time,
  subject, datacontenttype and the data.
- E-mail: a plain-text body (no HTML part: nothing in it can run).
"""
from __future__ import annotations

import datetime as dt
from email.message import EmailMessage
from typing import Any

from guardian.notifiers.messages import Message

SLACK_HEADER_MAX, SLACK_TEXT_MAX, SLACK_FIELD_MAX, SLACK_FIELDS_MAX, SLACK_BLOCKS_MAX = 150, 3000, 2000, 10, 50
CLOUDEVENT_TYPE = "io.releaseguardian.rollout.{kind}"
_EMOJI = {"rollback": ":rotating_light:", "bake_failed": ":rotating_light:", "pause": ":double_vertical_bar:",
          "approval": ":raised_hand:", "promote": ":white_check_mark:", "start": ":rocket:",
          "scale": ":arrow_up:"}


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _evidence_lines(msg: Message) -> list[str]:
    return [f"{f.check} ({f.result}): {f.evidence()}: {f.reason}" for f in msg.failing]


def plain_text(msg: Message) -> str:
    """The message as plain text (an e-mail's body, a chat message's fallback)."""
    lines = [f"{msg.title}: {msg.reason}", f"rollout {msg.rollout_id}, image {msg.image}, phase {msg.phase}"
             + (f", canary weight {msg.weight}%" if msg.weight is not None else "") + f", by {msg.who}"]
    if msg.failing:
        lines.append("checks:")
        lines += [f"  - {line}" for line in _evidence_lines(msg)]
    if msg.log_template:
        lines.append(f"top log template ({msg.log_counts}): {msg.log_template}")
    if msg.link:
        lines.append(f"rollout page: {msg.link}")
    return "\n".join(lines)


def slack_payload(msg: Message) -> dict[str, Any]:
    e = slack_escape
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(e(msg.title), SLACK_HEADER_MAX), "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _cut(f"{_EMOJI.get(msg.kind, '')} {e(msg.reason)}",
                                                                    SLACK_TEXT_MAX)},
         "fields": [{"type": "mrkdwn", "text": _cut(t, SLACK_FIELD_MAX)} for t in (
             f"*Rollout*\n`{e(msg.rollout_id)}`", f"*Image*\n`{e(msg.image)}`", f"*Phase*\n{e(msg.phase)}",
             f"*By*\n{e(msg.who)}")][:SLACK_FIELDS_MAX]},
    ]
    for f in msg.failing[: SLACK_BLOCKS_MAX - 5]:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _cut(
            f"*{e(f.check)}* ({e(f.result)}): {e(f.evidence())}\n{e(f.reason)}", SLACK_TEXT_MAX)}})
    if msg.log_template:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _cut(
            f"*Top log template* ({e(msg.log_counts or '')})\n```{e(msg.log_template)}```", SLACK_TEXT_MAX)}})
    if msg.link:
        blocks.append({"type": "actions", "elements": [
            {"type": "button", "text": {"type": "plain_text", "text": "Open the rollout"}, "url": msg.link}]})
    return {"text": _cut(slack_escape(f"{msg.title}: {msg.reason}"), SLACK_TEXT_MAX), "blocks": blocks}


def teams_payload(msg: Message) -> dict[str, Any]:
    def text(t: str, **kw: Any) -> dict[str, Any]:
        return {"type": "TextBlock", "text": t, "wrap": True, **kw}

    body: list[dict[str, Any]] = [
        text(msg.title, size="Large", weight="Bolder",
             color="Attention" if msg.kind in ("rollback", "bake_failed") else "Default"),
        text(msg.reason),
        {"type": "FactSet", "facts": [
            {"title": "Rollout", "value": msg.rollout_id}, {"title": "Image", "value": msg.image},
            {"title": "Phase", "value": msg.phase}, {"title": "By", "value": msg.who}]},
    ]
    if msg.failing:
        body.append(text("Checks", weight="Bolder", spacing="Medium"))
        body.append({"type": "FactSet", "facts": [
            {"title": f.check, "value": f"{f.result}: {f.evidence()}: {f.reason}"} for f in msg.failing]})
    if msg.log_template:
        body.append(text(f"Top log template ({msg.log_counts})", weight="Bolder", spacing="Medium"))
        body.append(text(msg.log_template, fontType="Monospace"))
    card: dict[str, Any] = {"$schema": "http://adaptivecards.io/schemas/adaptive-card.json", "type": "AdaptiveCard",
                            "version": "1.4", "body": body}
    if msg.link:
        card["actions"] = [{"type": "Action.OpenUrl", "title": "Open the rollout", "url": msg.link}]
    return {"type": "message", "attachments": [
        {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}]}


def cloudevent(msg: Message, *, event_id: str, source: str) -> dict[str, Any]:
    """A CloudEvents 1.0 event in structured JSON mode; `event_id` must be unique per event (a retry resends the
    same id, so a receiver can drop duplicates)."""
    at = dt.datetime.fromtimestamp(msg.at, dt.UTC) if msg.at is not None else None
    return {
        "specversion": "1.0", "id": event_id, "source": source, "type": CLOUDEVENT_TYPE.format(kind=msg.kind),
        "subject": msg.rollout_id, "datacontenttype": "application/json",
        **({"time": at.isoformat().replace("+00:00", "Z")} if at else {}),
        "data": {
            "kind": msg.kind, "rollout_id": msg.rollout_id, "service": msg.service, "image": msg.image,
            "phase": msg.phase, "weight": msg.weight, "reason": msg.reason, "source": msg.source, "by": msg.by,
            "link": msg.link,
            "checks": [{"check": f.check, "result": f.result, "reason": f.reason, "value": f.value,
                        "threshold": f.threshold, "sample_size": f.sample_size, "statistic": f.statistic}
                       for f in msg.failing],
            "log_template": msg.log_template, "log_counts": msg.log_counts,
        },
    }


def email_message(msg: Message, *, sender: str, to: list[str]) -> EmailMessage:
    mail = EmailMessage()
    mail["Subject"] = _cut(f"[guardian] {msg.title}".replace("\n", " ").replace("\r", " "), 200)
    mail["From"], mail["To"] = sender, ", ".join(to)
    mail.set_content(plain_text(msg))
    return mail
