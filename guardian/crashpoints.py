"""Test hook: crash the guardian at a named point, so crash recovery can be tested deterministically.

    GUARDIAN_CRASH_AT=after_begin_op          # SIGKILL this process the first time it gets there
    GUARDIAN_CRASH_AT=after_apply:3           # ... the third time
    GUARDIAN_CRASH_AT=after_begin_op:2,mid_apply   # several points; the first one reached fires
    GUARDIAN_CRASH_AT=after_record_tick@rollback   # only where the action is a rollback

Points (in the order an action passes them):
    after_record_tick  a tick's evidence and decision are stored, the action's intent is not yet
    after_begin_op     the intent is in the operation log, the actuator has not been called
    mid_apply          inside the docker actuator: a new replica is up, not yet given traffic
    after_apply        the actuator did the action, its outcome is not yet stored
    after_finish_op    the outcome and the new state are stored

Unset (the default), `crash_point` is one dictionary lookup and does nothing. Never set it in production.
"""
from __future__ import annotations

import os
import signal
import threading

ENV = "GUARDIAN_CRASH_AT"
POINTS = ("after_record_tick", "after_begin_op", "mid_apply", "after_apply", "after_finish_op")

_seen: dict[str, int] = {}
_lock = threading.Lock()


def _targets() -> dict[str, int]:
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in os.environ.get(ENV, "").split(","))):
        name, _, nth = part.partition(":")
        out[name] = int(nth) if nth else 1
    return out


def crash_point(name: str, action: str | None = None) -> None:
    """SIGKILL this process if GUARDIAN_CRASH_AT names this point (`name`, or `name@action` for the
    action being taken there) at its Nth pass."""
    if not os.environ.get(ENV):
        return
    targets = _targets()
    for key in (name, f"{name}@{action}" if action else None):
        if key not in targets:
            continue
        with _lock:
            _seen[key] = _seen.get(key, 0) + 1
            if _seen[key] == targets[key]:
                os.kill(os.getpid(), signal.SIGKILL)
