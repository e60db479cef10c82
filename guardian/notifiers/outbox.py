"""Sending that never holds a rollout: a bounded queue per channel and one sender thread.

`Outbox.put` only enqueues (it never blocks, never raises). The thread sends in order -- so a payload may depend
on what the send of an earlier one learnt (Grafana's region PATCH uses the id its POST was answered with); what
the receiver could not take for now (a connection error, a timeout, 429, 5xx: `Transient`, with the receiver's
Retry-After when it gave one) is retried with exponential backoff, capped, up to `max_attempts` (None: until
closed); what it refused (`Permanent`: 4xx other than 429) is given up at once. Beyond `max_queue` the oldest
payload is dropped. Every outcome is counted: by default in `/metrics` as `guardian_notifications_total{route,
result}` (sent, retried, failed, dropped), with the queue's length as a gauge; a sender with series of its own
passes `count`. Log lines name the channel and the receiver's host, never its URL or credentials (a Slack or
Teams webhook URL is itself a secret); a sender may name each payload in them (`describe`).
"""
from __future__ import annotations

import collections
import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

from loguru import logger

from guardian.metrics import GuardianMetrics

DROPS_LOGGED_EVERY = 1000  # past the first, one drop in this many is logged (the count is in every line)
RETRIES_LOGGED = 10  # the first attempts each logged; past them one in this many, as a warning


class Transient(Exception):
    """The receiver could not take it now: retry. `retry_after`: the receiver's own delay, in seconds."""

    def __init__(self, detail: str, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class Permanent(Exception):
    """The receiver refused it: the same request cannot succeed."""


def retry_after(response: Any) -> float | None:
    """An HTTP answer's Retry-After in seconds (the delay form), or None."""
    try:
        return float(response.headers.get("retry-after", ""))
    except ValueError:
        return None


class Outbox:
    """`label` heads its log lines (default: "notifications to CHANNEL WHERE"); `describe(payload)` names one
    payload in them (default: "message"); `count(result)`, where outcomes go instead of the notification series."""

    def __init__(self, channel: str, send: Callable[[Any], None], *, where: str = "",
                 metrics: GuardianMetrics | None = None, max_queue: int = 1000, retry_base: float = 0.5,
                 retry_cap: float = 30.0, max_attempts: int | None = 8,
                 sleep: Callable[[float], None] | None = None, label: str | None = None,
                 describe: Callable[[Any], str] | None = None,
                 count: Callable[[str], None] | None = None) -> None:
        self.channel, self.where, self._send, self.metrics = channel, where, send, metrics
        self.max_queue, self.retry_base, self.retry_cap = max_queue, retry_base, retry_cap
        self.max_attempts = max_attempts
        self.label = label or f"notifications to {channel} {where}".rstrip()
        self._describe = describe or (lambda _payload: "message")
        self._count_hook = count
        self._queue: collections.deque[Any] = collections.deque()
        self._cv = threading.Condition()
        self._stop = False
        self._busy = False
        self._wake = threading.Event()  # interrupts a backoff wait when closing
        self._sleep = sleep or (lambda s: self._wake.wait(s))
        self.counts: collections.Counter[str] = collections.Counter()
        self._thread = threading.Thread(target=self._run, name=f"notify-{channel}", daemon=True)
        self._thread.start()

    def put(self, payload: Any) -> None:
        try:
            with self._cv:
                if self._stop:
                    self._count("dropped")
                    return
                self._queue.append(payload)
                if len(self._queue) > self.max_queue:
                    old = self._queue.popleft()
                    self._count("dropped")
                    if self.counts["dropped"] == 1 or self.counts["dropped"] % DROPS_LOGGED_EVERY == 0:
                        logger.warning("{}: queue full ({}), dropped the oldest ({}); {} dropped so far", self.label,
                                       self.max_queue, self._name(old), self.counts["dropped"])
                self._gauge()
                self._cv.notify()
        except Exception as e:  # noqa: BLE001 - a notifier never breaks a tick
            logger.warning("{}: could not queue: {}", self.label, type(e).__name__)

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._stop:
                    self._cv.wait()
                if not self._queue:
                    return
                payload = self._queue.popleft()
                self._busy = True
                self._gauge()
            try:
                self._deliver(payload)
            finally:
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()

    def _deliver(self, payload: Any) -> None:
        delay = self.retry_base
        for attempt in itertools.count(1):
            try:
                self._send(payload)
                self._count("sent")
                return
            except Permanent as e:
                self._count("failed")
                logger.warning("{}: {} refused, not retried: {}", self.label, self._name(payload), e)
                return
            except Transient as e:
                wait = min(self.retry_cap, max(delay, e.retry_after or 0.0))
                detail = str(e)
            except Exception as e:  # noqa: BLE001 - an unexpected error is retried like a transient one
                wait, detail = delay, type(e).__name__
            if attempt == self.max_attempts or self._stop:
                break
            self._count("retried")
            if attempt <= RETRIES_LOGGED or attempt % RETRIES_LOGGED == 0:
                logger.log("WARNING" if attempt % RETRIES_LOGGED == 0 else "INFO",
                           "{}: {} not sent (attempt {}): {}; retrying in {:.1f}s", self.label, self._name(payload),
                           attempt, detail, wait)
            self._sleep(wait)
            if self._stop:  # closed while waiting: no attempt past close's timeout
                break
            delay = min(delay * 2, self.retry_cap)
        self._count("failed")
        logger.warning("{}: gave up on {} after {} attempt(s){}", self.label, self._name(payload), attempt,
                       " at shutdown" if self._stop else "")

    def _name(self, payload: Any) -> str:
        try:
            return self._describe(payload)
        except Exception:  # noqa: BLE001 - naming a payload never breaks sending
            return "message"

    def _count(self, result: str) -> None:
        self.counts[result] += 1
        if self._count_hook is not None:
            self._count_hook(result)
        elif self.metrics is not None:
            self.metrics.notifications.labels(self.channel, result).inc()

    def _gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.notification_queue.labels(self.channel).set(len(self._queue))

    def pending(self) -> int:
        with self._cv:
            return len(self._queue) + (1 if self._busy else 0)

    def flush(self, timeout: float) -> bool:
        """Wait until everything queued has been sent or given up; True if it emptied within `timeout`."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(left)
        return True

    def close(self, timeout: float = 5.0) -> int:
        """Send what is queued within `timeout` seconds, then stop: a payload still being retried is given up
        (failed), what is left queued is dropped. Returns how many were dropped."""
        self.flush(timeout)
        with self._cv:
            self._stop = True
            left = len(self._queue)
            self._queue.clear()
            self._gauge()
            self._cv.notify_all()
        self._wake.set()
        for _ in range(left):
            self._count("dropped")
        if left:
            logger.warning("{}: {} not sent at shutdown, dropped", self.label, left)
        self._thread.join(timeout=1.0)
        return left
