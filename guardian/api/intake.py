"""Alertmanager webhook intake with group commit.

Each `POST /v1/alerts` is validated on the event loop, then handed to the app's `AlertIntake`. One
batch at a time goes to the thread pool: every post that arrived while the previous batch was being
stored is stored in the next one, in one store transaction (`Guard.receive_alert_posts`). A post is
answered only once its batch is committed and the rollouts its newly firing alerts are about were
acted on, so nothing is acknowledged before it is persisted, a repeat still changes nothing, and a
firing alert still acts at once. Under load this turns a transaction and a thread-pool hop per post
into one per batch; a lone post is a batch of one (`Guard.receive_alerts`).

A batch that fails (the store refused, an actuator raised) fails every post in it with that error, as
it would have failed each alone; Alertmanager retries them, and the alerts already stored are repeats.

The routes that submit to it, and the fast lane that skips the framework for them, are in alerts.py.
"""
from __future__ import annotations

import asyncio
from typing import Any

from starlette.concurrency import run_in_threadpool

from guardian.api.components import Components
from guardian.engine.alerts import StoredAlert

MAX_BATCH_POSTS = 256  # posts stored in one transaction at most
MAX_BATCH_ALERTS = 10_000  # and alerts, unless one post alone carries more (it is stored whole, in one)


def next_batch(pending: list[tuple[list[Any], Any]]) -> int:
    """How many of the pending posts go into the next batch: at least one, at most MAX_BATCH_POSTS, and no
    more than MAX_BATCH_ALERTS alerts in all once the first is in."""
    total = 0
    for n, (alerts, _) in enumerate(pending[:MAX_BATCH_POSTS]):
        total += len(alerts)
        if n and total > MAX_BATCH_ALERTS:
            return n
    return min(len(pending), MAX_BATCH_POSTS)


class AlertIntake:
    def __init__(self, components: Components, loop: asyncio.AbstractEventLoop) -> None:
        self.components = components  # read at each batch: the guard is the app's current one
        self.loop = loop
        self._pending: list[tuple[list[StoredAlert], asyncio.Future[dict[str, Any]]]] = []
        self._drainer: asyncio.Task[None] | None = None

    async def submit(self, alerts: list[StoredAlert]) -> dict[str, Any]:
        """Store one post's alerts (with whatever else is waiting) and act on them; the post's answer."""
        future: asyncio.Future[dict[str, Any]] = self.loop.create_future()
        self._pending.append((alerts, future))
        if self._drainer is None:
            self._drainer = self.loop.create_task(self._drain())
        return await asyncio.shield(future)  # a client that goes away does not cancel its batch

    async def _drain(self) -> None:
        batch: list[tuple[list[StoredAlert], asyncio.Future[dict[str, Any]]]] = []
        try:
            while self._pending:
                n = next_batch(self._pending)
                batch, self._pending = self._pending[:n], self._pending[n:]
                guard = self.components.guard
                try:
                    if len(batch) == 1:
                        answers = [await run_in_threadpool(guard.receive_alerts, batch[0][0])]
                    else:
                        answers = await run_in_threadpool(guard.receive_alert_posts, [a for a, _ in batch])
                except Exception as e:  # noqa: BLE001 - every post of the batch gets the error
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(e)
                    continue
                for (_, future), answer in zip(batch, answers, strict=True):
                    if not future.done():
                        future.set_result(answer)
                batch = []
        except BaseException as e:  # cancelled at shutdown: no post waits for ever
            for _, future in batch + self._pending:
                if not future.done():
                    future.set_exception(e if isinstance(e, Exception) else RuntimeError("alert intake stopped"))
            self._pending = []
            raise
        finally:
            self._drainer = None


def intake_for(app: Any) -> AlertIntake:
    """The app's intake on the running event loop (made on first use)."""
    loop = asyncio.get_running_loop()
    intake: AlertIntake | None = getattr(app.state, "alert_intake", None)
    if intake is None or intake.loop is not loop:  # a new loop (tests' clients): a new intake on it
        intake = AlertIntake(app.state.components, loop)
        app.state.alert_intake = intake
    return intake
