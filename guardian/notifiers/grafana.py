"""Grafana annotations through Grafana's HTTP API: a region per rollout (start -> end, with its
outcome) and a point per decision with its evidence.

    GET   /api/dashboards/uid/:uid  once at start: does the configured dashboard exist?
    POST  /api/annotations          {dashboardUID?, panelId?, time, timeEnd?, tags, text} -> {"id": N, ...}
    PATCH /api/annotations/:id      the fields to change

`notify` only enqueues (it never blocks, never raises) on an `Outbox` (outbox.py, as the chat channels):
its thread sends in order (so a rollout's region PATCH follows its POST and uses the id it was answered
with), retrying what Grafana could not take (connection errors, timeouts, 429 -- its Retry-After honoured
--, 5xx) with exponential backoff, capped, until close. The queue is bounded: beyond `max_queue` the
oldest annotation is dropped, counted and logged. Other 4xx answers (a wrong token, a token without the
permission -- Grafana's 403 names it --, a refused body) are failures: logged with Grafana's message,
counted, not retried. The token is sent as `Authorization: Bearer` and never logged.

Grafana does not refuse an unknown `dashboardUID`: PostAnnotation (pkg/api/annotations.go) sets the
dashboard only when the lookup succeeds, so the annotation is stored organisation-wide and answered 200 --
a typo would hide every annotation from the dashboard, silently. `start_dashboard_check` therefore asks
once, in the background, whether the dashboard exists (retried while Grafana cannot answer; start never
waits), says loudly when it does not, and exposes the answer as `guardian_grafana_dashboard{uid,state}`.

Tags are sent as Grafana stores them and within its limits (`fit_tags`): their estimated JSON length may
not exceed [annotations] tags_length (500 by default, the minimum Grafana enforces; above it: 400
annotations.tag-limit-exceeded, the annotation lost) and a tag's key or value may not exceed the 100
characters of the `tag` table's VARCHAR(100) (above it MySQL and PostgreSQL fail the insert: 500, retried).
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
from loguru import logger

from guardian.images import image_version
from guardian.metrics import GuardianMetrics
from guardian.notifiers.outbox import Outbox, Permanent, Transient, retry_after
from guardian.redact import redact
from guardian.reporting.explain import DONE, evidence_line, explain_decision

ENDED = {"promoted": "promoted", "rolled_back": "rolled back", "ended": "ended"}  # "ended": a watch
TAGS_LENGTH_MAX = 500  # Grafana's [annotations] tags_length: its default and the minimum it enforces
TAG_PART_MAX = 100  # Grafana's tag.key and tag.value columns are VARCHAR(100)
TAG_CUT_MIN = 16  # a tag shortened to fit keeps at least this many bytes before tags are dropped
DASHBOARD_STATES = ("unchecked", "unreachable", "found", "missing", "unverified")


def _ms(seconds: float | None) -> int:
    return int(round((time.time() if seconds is None else seconds) * 1000))


def tags_for(event: dict[str, Any], *extra: str) -> list[str]:
    """guardian, the service, the version (image tag), then `extra` (the action, or rollout/outcome),
    within Grafana's tag limits."""
    tags = ["guardian", str(event.get("service")), image_version(str(event.get("image") or ""))]
    return fit_tags(tags + [t for t in extra if t])


def fit_tags(tags: Iterable[str], limit: int = TAGS_LENGTH_MAX) -> list[str]:
    """The tags as Grafana stores them (tag.ParseTagPairs: trimmed, 'key:value' split at the first ':',
    empty keys and duplicates dropped) and within its limits: each key and value at most TAG_PART_MAX
    characters, the estimated JSON length (validateTagsLength) at most `limit` bytes -- the longest tags
    are shortened first, and only if that is not enough are tags dropped, from the end of the middle (the
    first and the last tags, `guardian` and the action, stay)."""
    out: list[str] = []
    for tag in tags:
        fitted = _fit_tag(str(tag))
        if fitted and fitted not in out:
            out.append(fitted)
    while out and tags_length(out) > limit:
        longest = max(range(len(out)), key=lambda i: len(out[i].encode()))
        size = len(out[longest].encode())
        if size > TAG_CUT_MIN:
            cut = _fit_tag(out[longest].encode()[:max(TAG_CUT_MIN, size - (tags_length(out) - limit))]
                           .decode("utf-8", "ignore"))
            out[longest:longest + 1] = [cut] if cut and cut not in out else []
        else:
            del out[-2 if len(out) > 2 else -1]
    return out


def tags_length(tags: list[str]) -> int:
    """Grafana's estimate of the tags' JSON length: '[', each tag in quotes, commas, ']' (in bytes)."""
    return 2 + sum(len(t.encode()) + 2 for t in tags) + max(len(tags) - 1, 0)


def _fit_tag(tag: str) -> str:
    """One tag as Grafana stores it, key and value cut to TAG_PART_MAX characters; a further ':' (which
    Grafana would cut the value at) becomes '_'."""
    key, sep, value = tag.partition(":")
    key = key.strip(" ")[:TAG_PART_MAX].strip(" ")
    value = value.replace(":", "_").strip(" ")[:TAG_PART_MAX].strip(" ") if sep else ""
    return f"{key}:{value}" if key and value else key


def point_text(event: dict[str, Any]) -> str:
    """What was decided and why, then the evidence: each verdict that drove it (failing first) with
    its value, threshold, sample size and statistic; then what the actuator did."""
    e = explain_decision(event)
    drove = [c for c in e["checks"] if c["drove"]]
    drove.sort(key=lambda v: {"fail": 0, "error": 1, "inconclusive": 2, "pass": 3}.get(v.get("result"), 4))
    weight = event.get("weight")
    lines = [f"{event.get('action', '?')}: {event.get('service')} {event.get('image')}"
             + (f" at {weight}%" if weight is not None else "") + f" ({e['headline']})",
             f"reason: {event.get('reason') or '—'}"]
    lines += [f"- {evidence_line(c)}" for c in drove]
    for t in (event.get("logs") or [])[:3]:  # log evidence: what the canary logs that the baseline does not
        lines.append(f"- log: {t.get('canary_count')}x in canary vs {t.get('baseline_count')}x in baseline: "
                     f"{t.get('template')}")
    return "\n".join(lines)


def region_text(event: dict[str, Any], *, ended: bool) -> str:
    head = f"rollout {event.get('rollout_id')} of {event.get('service')} to {event.get('image')}"
    if not ended:
        return f"{head}: started ({event.get('reason') or 'start'})"
    outcome = ENDED.get(str(event.get("phase")), event.get("phase"))
    took = ""
    if event.get("started_at") is not None and event.get("at") is not None:
        took = f" after {event['at'] - event['started_at']:.0f}s"
    return f"{head}: {outcome}{took} ({DONE.get(str(event.get('action')), event.get('action'))}: " \
           f"{event.get('reason') or '—'})"


@dataclass
class _Job:
    kind: str  # "region_start" | "region_end" | "point"
    rollout: str
    body: dict[str, Any]
    start_ms: int | None = None  # region_end: when the region began (if its POST never landed)


def _describe(job: _Job) -> str:
    return f"{job.kind} of rollout {job.rollout}"


class _OnOutbox:
    """An attribute that is the outbox's (retry_base, retry_cap: the dashboard check backs off as the sending does,
    and a change after construction reaches both)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, notifier: GrafanaNotifier, owner: type | None = None) -> float:
        return float(getattr(notifier.outbox, self.name))

    def __set__(self, notifier: GrafanaNotifier, value: float) -> None:
        setattr(notifier.outbox, self.name, value)


class GrafanaNotifier:
    retry_base = _OnOutbox()
    retry_cap = _OnOutbox()

    def __init__(self, url: str, token: str | None = None, *, dashboard_uid: str | None = None,
                 panel_id: int | None = None, metrics: GuardianMetrics | None = None, max_queue: int = 10_000,
                 timeout: float = 5.0, retry_base: float = 0.5, retry_cap: float = 30.0,
                 transport: httpx.BaseTransport | None = None):
        headers = {"Accept": "application/json"}  # Content-Type: set by httpx with each JSON body, on no GET
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.url = url.rstrip("/")
        self.client = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, transport=transport)
        self.dashboard_uid, self.panel_id = dashboard_uid, panel_id
        self.metrics = metrics
        self._regions: dict[str, tuple[int | None, int]] = {}  # rollout -> (region id or None, start ms)
        self._gauge = metrics.grafana_dashboard if metrics is not None else None
        self._closing = threading.Event()
        self._checked = threading.Event()
        self._checker: threading.Thread | None = None
        self.dashboard_state = "unchecked" if dashboard_uid else "unconfigured"
        if dashboard_uid:
            self._set_dashboard_state("unchecked")
        # the annotations go out in order (a region's PATCH after its POST), retried while Grafana cannot take
        # them, until close; counted in guardian_annotations_total{result=sent|failed|dropped}
        self.outbox = Outbox("grafana", self._send, max_queue=max_queue, retry_base=retry_base,
                             retry_cap=retry_cap, max_attempts=None, label="grafana annotations",
                             describe=_describe, count=self._count)

    # -- the engine's side: never blocks, never raises ---------------------------------------------------
    def notify(self, event: dict[str, Any]) -> None:
        try:
            for job in self._jobs(event):
                self.outbox.put(job)
        except Exception as e:  # noqa: BLE001 - a notifier must never break a tick
            logger.warning("grafana annotations: could not queue an event: {}", e)

    def _jobs(self, event: dict[str, Any]) -> list[_Job]:
        rid = str(event.get("rollout_id"))
        action = str(event.get("action"))
        at = _ms(event.get("at"))
        started = event.get("started_at")
        jobs: list[_Job] = []
        if action == "start":
            jobs.append(_Job("region_start", rid, self._body(
                time=_ms(started) if started is not None else at, timeEnd=at,
                tags=tags_for(event, "rollout"), text=region_text(event, ended=False))))
        jobs.append(_Job("point", rid, self._body(time=at, tags=tags_for(event, action), text=point_text(event))))
        if str(event.get("phase")) in ENDED and (event.get("outcome") or {}).get("ok", True):
            jobs.append(_Job("region_end", rid, {
                "timeEnd": at, "tags": tags_for(event, "rollout", str(event.get("phase"))),
                "text": region_text(event, ended=True)}, start_ms=_ms(started) if started is not None else None))
        return jobs

    def _body(self, **fields: Any) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if self.dashboard_uid:
            body["dashboardUID"] = self.dashboard_uid
        if self.panel_id is not None:
            body["panelId"] = self.panel_id
        return {**body, **fields}

    # -- the start-up dashboard check -----------------------------------------------------------------------
    def start_dashboard_check(self) -> None:
        """Check once, in the background, that the configured dashboard exists (GET /api/dashboards/uid/:uid):
        start never waits for Grafana; while Grafana cannot answer, the check is retried with backoff."""
        if not self.dashboard_uid or self._checker is not None:
            return
        self._checker = threading.Thread(target=self._check_dashboard, name="grafana-dashboard-check", daemon=True)
        self._checker.start()

    def wait_dashboard_check(self, timeout: float) -> bool:
        """Wait until the check has an answer (found, missing or unverified); False if not within `timeout`."""
        return self._checked.wait(timeout)

    def _check_dashboard(self) -> None:
        delay, attempts = self.retry_base, 0
        while not self._closing.is_set():
            attempts += 1
            state, detail = self._ask_dashboard()
            self._set_dashboard_state(state)
            if state != "unreachable":
                self._report_dashboard(state, detail)
                self._checked.set()
                return
            if attempts == 1 or attempts % 10 == 0:
                logger.warning("grafana annotations: could not check dashboard {!r} now ({}): Grafana at {} is not "
                               "answering; the guardian runs on, checking again in {:.1f}s", self.dashboard_uid,
                               detail, self.url, delay)
            self._closing.wait(delay)
            delay = min(delay * 2, self.retry_cap)

    def _ask_dashboard(self) -> tuple[str, str]:
        """(state, detail) from one GET /api/dashboards/uid/:uid."""
        try:
            r = self.client.get(f"/api/dashboards/uid/{quote(str(self.dashboard_uid), safe='')}")
        except httpx.HTTPError as e:
            return "unreachable", _safe(e)
        if r.status_code == 200:
            dashboard = _json(r).get("dashboard")
            return "found", str(dashboard.get("title") or "") if isinstance(dashboard, dict) else ""
        if r.status_code == 404:
            return "missing", f"HTTP 404: {_message(r)}"
        if r.status_code == 429 or r.status_code >= 500:
            return "unreachable", f"HTTP {r.status_code}: {_message(r)}"
        return "unverified", f"HTTP {r.status_code}: {_message(r)}"

    def _report_dashboard(self, state: str, detail: str) -> None:
        uid = self.dashboard_uid
        if state == "found":
            logger.info("grafana annotations: dashboard {} ({!r}) found in Grafana at {}: annotations go to it",
                        uid, detail, self.url)
        elif state == "missing":
            logger.warning("grafana annotations: NO DASHBOARD WITH UID {!r} in Grafana at {} ({}). Grafana files an "
                           "annotation with an unknown dashboardUID as an organisation-wide annotation, so the "
                           "guardian's annotations will NOT show on that dashboard: check "
                           "GUARDIAN_GRAFANA_DASHBOARD_UID (checked once, at start)", uid, self.url, detail)
        else:
            logger.warning("grafana annotations: could not verify that dashboard {!r} exists ({}): the token needs "
                           "dashboards:read on it; if it does not exist, Grafana files the annotations "
                           "organisation-wide", uid, detail)

    def _set_dashboard_state(self, state: str) -> None:
        self.dashboard_state = state
        if self._gauge is not None:
            for each in DASHBOARD_STATES:
                self._gauge.labels(str(self.dashboard_uid), each).set(1 if each == state else 0)

    # -- the sending, on the outbox's thread ------------------------------------------------------------------
    def _send(self, job: _Job) -> None:
        if job.kind == "region_start":
            answer = self._request("POST", "/api/annotations", job.body)
            self._regions[job.rollout] = (answer.get("id"), job.body["time"])
        elif job.kind == "point":
            self._request("POST", "/api/annotations", job.body)
        else:  # region_end: PATCH the region; if its POST never landed, post the whole region now
            region_id, start_ms = self._regions.get(job.rollout, (None, job.start_ms or job.body["timeEnd"]))
            try:
                if region_id is not None:
                    self._request("PATCH", f"/api/annotations/{int(region_id)}", job.body)
                else:
                    self._request("POST", "/api/annotations", self._body(time=start_ms, **job.body))
            except Permanent:
                self._regions.pop(job.rollout, None)
                raise
            self._regions.pop(job.rollout, None)

    def _request(self, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        body = redact(body)  # no secrets in annotation text or tags
        if "tags" in body:
            body["tags"] = fit_tags(body["tags"])  # a mask may be longer than what it hides
        try:
            r = self.client.request(method, path, json=body)
        except httpx.HTTPError as e:
            raise Transient(_safe(e)) from None
        if r.status_code == 429 or r.status_code >= 500:
            raise Transient(f"HTTP {r.status_code} from {method} {path}: {_message(r)}", retry_after(r))
        if r.status_code >= 400:
            raise Permanent(f"HTTP {r.status_code} from {method} {path}: {_message(r)}")
        return _json(r)

    def _count(self, result: str) -> None:
        if self.metrics is not None and result != "retried":  # the series counts sent, failed, dropped
            self.metrics.annotations.labels(result).inc()

    # -- lifecycle ------------------------------------------------------------------------------------------
    def pending(self) -> int:
        return self.outbox.pending()

    def flush(self, timeout: float) -> bool:
        """Wait until everything queued has been sent (or given up); True if the queue emptied in time."""
        return self.outbox.flush(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Send what can be sent within `timeout` seconds, then stop the sender and the check, close the client."""
        self._closing.set()
        self.outbox.close(timeout)
        if self._checker is not None:
            self._checker.join(min(timeout, 1.0))
        self.client.close()


def _safe(e: Exception) -> str:
    """An error in words, without anything from the request's headers."""
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def _json(r: httpx.Response) -> dict[str, Any]:
    """The answer's JSON object, or {}."""
    try:
        answer = r.json()
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


def _message(r: httpx.Response) -> str:
    """What Grafana says went wrong: its `message` (and `messageId`), else the start of the body. A 403 names
    the permission the token lacks ('... Permissions needed: annotations:write')."""
    answer = _json(r)
    if isinstance(answer.get("message"), str) and answer["message"]:
        return answer["message"] + (f" ({answer['messageId']})" if answer.get("messageId") else "")
    return r.text[:200]
