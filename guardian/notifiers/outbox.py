"""Sending that never holds a rollout: a bounded queue per channel and one sender thread.

`Outbox.put` only enqueues (it never blocks, never raises). The thread sends in order; what the receiver could
not take for now (a connection error, a timeout, 429, 5xx: `Transient`, with the receiver's Retry-After when it
gave one) is retried with exponential backoff, capped, up to `max_attempts`; what it refused (`Permanent`: 4xx
other than 429) is given up at once. Beyond `max_queue` the oldest message is dropped. Every outcome is counted in
`/metrics` (`guardian_notifications_total{channel, result}`: sent, retried, failed, dropped) and the queue's
length is a gauge. Log lines name the channel and the receiver's host, never its URL or credentials (a Slack or
Teams webhook URL is itself a secret).
"""
from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import Any

from loguru import logger

from guardian.metrics import GuardianMetrics


class Transient(Exception):
    """The receiver could not take it now: retry. `retry_after`: the receiver's own delay, in seconds."""

    def __init__(self, detail: str, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class Permanent(Exception):
    """The receiver refused it: the same request cannot succeed."""


class Outbox:
    def __init__(self, channel: str, send: Callable[[Any], None], *, where: str = "",
                 metrics: GuardianMetrics | None = None, max_queue: int = 1000, retry_base: float = 0.5,
                 retry_cap: float = 30.0, max_attempts: int = 8,
                 sleep: Callable[[float], None] | None = None) -> None:
        self.channel, self.where, self._send, self.metrics = channel, where, send, metrics
        self.max_queue, self.retry_base, self.retry_cap = max_queue, retry_base, retry_cap
        self.max_attempts = max_attempts
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
                    self._queue.popleft()
                    self._count("dropped")
                    logger.warning("notifications to {} {}: queue full ({}), dropped the oldest", self.channel,
                                   self.where, self.max_queue)
                self._gauge()
                self._cv.notify()
        except Exception as e:  # noqa: BLE001 - a notifier never breaks a tick
            logger.warning("notifications to {}: could not queue: {}", self.channel, type(e).__name__)

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
        for attempt in range(1, self.max_attempts + 1):
            try:
                self._send(payload)
                self._count("sent")
                return
            except Permanent as e:
                self._count("failed")
                logger.warning("notification to {} {} refused: {}", self.channel, self.where, e)
                return
            except Transient as e:
                wait = min(self.retry_cap, max(delay, e.retry_after or 0.0))
                detail = str(e)
            except Exception as e:  # noqa: BLE001 - an unexpected error is retried like a transient one
                wait, detail = delay, type(e).__name__
            if attempt == self.max_attempts or self._stop:
                break
            self._count("retried")
            logger.info("notification to {} {} not sent (attempt {}): {}; retrying in {:.1f} s", self.channel,
                        self.where, attempt, detail, wait)
            self._sleep(wait)
            delay = min(delay * 2, self.retry_cap)
        self._count("failed")
        logger.warning("notification to {} {} given up after {} attempt(s)", self.channel, self.where, attempt)

    def _count(self, result: str) -> None:
        self.counts[result] += 1
        if self.metrics is not None:
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

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued within `timeout` seconds, then stop (what is left is counted as dropped)."""
        self.flush(timeout)
        with self._cv:
            self._stop = True
            left = len(self._queue)
            self._queue.clear()
            self._cv.notify_all()
        self._wake.set()
        for _ in range(left):
            self._count("dropped")
        self._thread.join(timeout=1.0)
