"""Grafana annotations through Grafana's HTTP API: a region per rollout (start -> end, with its
outcome) and a point per decision with its evidence.

    GET   /api/dashboards/uid/:uid  once at start: does the configured dashboard exist?
    POST  /api/annotations          {dashboardUID?, panelId?, time, timeEnd?, tags, text} -> {"id": N, ...}
    PATCH /api/annotations/:id      the fields to change

`notify` only enqueues (it never blocks, never raises): one background thread sends, in order (so a
rollout's region PATCH follows its POST), retrying what Grafana could not take (connection errors,
timeouts, 429, 5xx) with exponential backoff, capped. The queue is bounded: beyond `max_queue` the
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

import collections
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
from loguru import logger

from guardian.images import image_version
from guardian.metrics import GuardianMetrics
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
    attempts: int = 0
    queued_at: float = field(default_factory=time.monotonic)


class _Permanent(Exception):
    """Grafana refused the annotation: retrying the same request cannot help."""


class GrafanaNotifier:
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
        self.max_queue, self.retry_base, self.retry_cap = max_queue, retry_base, retry_cap
        self._queue: collections.deque[_Job] = collections.deque()
        self._cond = threading.Condition()
        self._regions: dict[str, tuple[int | None, int]] = {}  # rollout -> (region id or None, start ms)
        self._busy = False
        self._stop = False
        self._deadline: float | None = None
        self.dropped = 0
        self._gauge = metrics.grafana_dashboard if metrics is not None else None
        self._closing = threading.Event()
        self._checked = threading.Event()
        self._checker: threading.Thread | None = None
        self.dashboard_state = "unchecked" if dashboard_uid else "unconfigured"
        if dashboard_uid:
            self._set_dashboard_state("unchecked")
        self._thread = threading.Thread(target=self._run, name="grafana-annotations", daemon=True)
        self._thread.start()

    # -- the engine's side: never blocks, never raises ---------------------------------------------------
    def notify(self, event: dict[str, Any]) -> None:
        try:
            jobs = self._jobs(event)
            with self._cond:
                if self._stop:
                    return
                for job in jobs:
                    self._queue.append(job)
                    if len(self._queue) > self.max_queue:
                        old = self._queue.popleft()
                        self.dropped += 1
                        self._count("dropped")
                        if self.dropped == 1 or self.dropped % 1000 == 0:
                            logger.warning("grafana annotations: queue full ({}), dropped the oldest ({} of "
                                           "rollout {}); {} dropped so far", self.max_queue, old.kind,
                                           old.rollout, self.dropped)
                self._cond.notify_all()
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

    # -- the worker ---------------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stop:
                    self._cond.wait()
                if not self._queue or self._past_deadline():
                    return
                job = self._queue.popleft()
                self._busy = True
            try:
                self._deliver(job)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _past_deadline(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def _deliver(self, job: _Job) -> None:
        delay = self.retry_base
        while True:
            job.attempts += 1
            try:
                self._send(job)
                self._count("sent")
                return
            except _Permanent as e:
                self._count("failed")
                logger.error("grafana annotations: {} of rollout {} refused, not retried: {}", job.kind,
                             job.rollout, e)
                if job.kind == "region_end":
                    self._regions.pop(job.rollout, None)
                return
            except (httpx.HTTPError, _Retry) as e:
                if job.attempts == 1 or job.attempts % 10 == 0:
                    logger.warning("grafana annotations: {} of rollout {} not sent (attempt {}): {}; retrying "
                                   "in {:.1f}s", job.kind, job.rollout, job.attempts, _safe(e), delay)
            with self._cond:
                if self._stop and self._past_deadline():
                    self._count("failed")
                    logger.error("grafana annotations: gave up on {} of rollout {} at shutdown after {} attempts",
                                 job.kind, job.rollout, job.attempts)
                    return
                wait = delay if self._deadline is None else max(0.0, min(delay, self._deadline - time.monotonic()))
                self._cond.wait(wait)
            delay = min(delay * 2, self.retry_cap)

    def _send(self, job: _Job) -> None:
        if job.kind == "region_start":
            answer = self._request("POST", "/api/annotations", job.body)
            self._regions[job.rollout] = (answer.get("id"), job.body["time"])
        elif job.kind == "point":
            self._request("POST", "/api/annotations", job.body)
        else:  # region_end: PATCH the region; if its POST never landed, post the whole region now
            region_id, start_ms = self._regions.get(job.rollout, (None, job.start_ms or job.body["timeEnd"]))
            if region_id is not None:
                self._request("PATCH", f"/api/annotations/{int(region_id)}", job.body)
            else:
                self._request("POST", "/api/annotations", self._body(time=start_ms, **job.body))
            self._regions.pop(job.rollout, None)

    def _request(self, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        body = redact(body)  # no secrets in annotation text or tags
        if "tags" in body:
            body["tags"] = fit_tags(body["tags"])  # a mask may be longer than what it hides
        r = self.client.request(method, path, json=body)
        if r.status_code == 429 or r.status_code >= 500:
            raise _Retry(f"HTTP {r.status_code} from {method} {path}: {_message(r)}")
        if r.status_code >= 400:
            raise _Permanent(f"HTTP {r.status_code} from {method} {path}: {_message(r)}")
        return _json(r)

    def _count(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.annotations.labels(result).inc()

    # -- lifecycle ------------------------------------------------------------------------------------------
    def pending(self) -> int:
        with self._cond:
            return len(self._queue) + (1 if self._busy else 0)

    def flush(self, timeout: float) -> bool:
        """Wait until everything queued has been sent (or given up); True if the queue emptied in time."""
        end = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._busy:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Send what can be sent within `timeout` seconds, then stop the worker and close the client."""
        with self._cond:
            self._stop = True
            self._deadline = time.monotonic() + timeout
            self._cond.notify_all()
        self._closing.set()
        self._thread.join(timeout + 1.0)
        if self._checker is not None:
            self._checker.join(min(timeout, 1.0))
        with self._cond:
            left = len(self._queue)
            self._queue.clear()
        if left:
            logger.warning("grafana annotations: {} annotation(s) not sent at shutdown (Grafana at {} unreachable)",
                           left, self.url)
            if self.metrics is not None:
                self.metrics.annotations.labels("dropped").inc(left)
        self.client.close()


class _Retry(Exception):
    """Grafana could not take it now (429, 5xx): try again later."""


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
