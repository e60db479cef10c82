"""What every actuator shares: the request it is given, the protocol it speaks, and the one cache that
makes `apply` idempotent.

`apply` is idempotent: the same `ActionRequest.key` applied twice changes nothing more. A failed
action is reported in the returned `Outcome` (ok=False, with the reason), never swallowed.

`BaseActuator.apply` is that contract written once: an action the actuator does not support is refused,
the same key is never carried out twice at once, a key that succeeded returns its first Outcome without
touching anything, and a key that failed is carried out again. An actuator writes `carry_out` (and
`verify`); it says what its actions may not overlap on with `lock_key`, and frees what it holds in `close`.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Generic, Protocol, Self, TypeVar

from guardian.domain import Action, Outcome

MAX_REMEMBERED_KEYS = 10_000  # outcomes (and other per-key facts) an actuator keeps; the oldest are forgotten


@dataclass(frozen=True)
class ActionRequest:
    rollout_id: str
    service: str
    image: str
    action: Action  # ADVANCE, BAKE, PROMOTE, ROLLBACK, PAUSE, RESUME, SCALE (and START for the first step)
    weight: int  # canary traffic percent after the action
    key: str  # idempotency key: "<rollout_id>:<seq>:<action>"
    strategy: str = "canary"
    replicas: int = 0  # SCALE: replica delta
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["action"] = self.action.value
        return d


class Actuator(Protocol):
    name: str
    supports: frozenset[Action]  # the actions `apply` carries out; any other is refused (BaseActuator)

    def apply(self, request: ActionRequest) -> Outcome: ...

    def verify(self, request: ActionRequest) -> Outcome: ...


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Remembered(Generic[K, V]):
    """A map that keeps the `limit` keys written last and forgets older ones. Safe across threads."""

    def __init__(self, limit: int = MAX_REMEMBERED_KEYS) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.limit = limit
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            return self._items.get(key)

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.limit:
                self._items.popitem(last=False)


class OutcomeCache:
    """The outcomes of an actuator's actions, by idempotency key: the one cache behind `apply`.

    Bounded: the `limit` keys written last are kept (an action applied again after that many others is
    carried out again; the real actuators converge, so that changes nothing). Only successful outcomes
    are kept, so a key that failed is tried again — unless `keep_failures`, for an actuator that must
    report its last attempt at a key, failed or not (the webhook's `verify`: a receiver cannot be asked).
    """

    def __init__(self, limit: int = MAX_REMEMBERED_KEYS, *, keep_failures: bool = False) -> None:
        self.keep_failures = keep_failures
        self._outcomes: Remembered[str, Outcome] = Remembered(limit)

    def done(self, key: str) -> Outcome | None:
        """The Outcome of `key` if it succeeded; None if it never ran, failed, or was forgotten."""
        outcome = self._outcomes.get(key)
        return outcome if outcome is not None and outcome.ok else None

    def last(self, key: str) -> Outcome | None:
        """The last Outcome kept for `key`: a failed one too with `keep_failures`."""
        return self._outcomes.get(key)

    def remember(self, key: str, outcome: Outcome) -> None:
        if outcome.ok or self.keep_failures:
            self._outcomes.put(key, outcome)


class KeyedLocks:
    """A lock per key, kept only while a thread holds or waits for it: the same key is serialised,
    different keys never wait on each other, and the table stays as small as the work in flight."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[Hashable, threading.Lock] = {}
        self._users: dict[Hashable, int] = {}  # threads holding or waiting for each key's lock

    @contextmanager
    def hold(self, key: Hashable) -> Iterator[None]:
        with self._guard:
            lock = self._locks.get(key)
            if lock is None:
                lock = self._locks[key] = threading.Lock()
            self._users[key] = self._users.get(key, 0) + 1
        try:
            with lock:
                yield
        finally:
            with self._guard:
                self._users[key] -= 1
                if not self._users[key]:
                    del self._users[key], self._locks[key]


class BaseActuator:
    """The part of every actuator that is the same: `apply` through the OutcomeCache under a lock,
    `supports` enforced, `close` and `with`. See the module docstring."""

    name: str
    supports: frozenset[Action] = frozenset(Action)  # what it may be asked; a subclass that cannot do all narrows it

    def __init__(self, *, remember: int = MAX_REMEMBERED_KEYS, keep_failures: bool = False) -> None:
        self.outcomes = OutcomeCache(remember, keep_failures=keep_failures)
        self._locks = KeyedLocks()

    def apply(self, request: ActionRequest) -> Outcome:
        """Carry out `request` once per key: a key that succeeded returns its first Outcome and changes
        nothing; a key that failed is carried out again."""
        if request.action not in self.supports:
            offered = ", ".join(sorted(a.value for a in self.supports)) or "none"
            return Outcome(False, request.action.value,
                           f"{self.name}: does not {request.action.value} (it supports: {offered})")
        with self.serialised(request):
            known = self.outcomes.done(request.key)
            if known is not None:
                self.replayed(request, known)
                return known
            outcome = self.carry_out(request)
            self.outcomes.remember(request.key, outcome)
            return outcome

    def lock_key(self, request: ActionRequest) -> Hashable:
        """What actions must not overlap on: by default nothing may (one action at a time); an actuator
        whose actions are independent per key or per service returns that."""
        return None

    @contextmanager
    def serialised(self, request: ActionRequest) -> Iterator[None]:
        """Hold the lock `apply` holds for `request` (for work between actions, e.g. `reconcile`)."""
        with self._locks.hold(self.lock_key(request)):
            yield

    def carry_out(self, request: ActionRequest) -> Outcome:
        """Do the action (called by `apply`, under its lock, for a key not done yet)."""
        raise NotImplementedError

    def replayed(self, request: ActionRequest, outcome: Outcome) -> None:
        """Called when `apply` answers a key from the cache (nothing is done again)."""

    def verify(self, request: ActionRequest) -> Outcome:
        raise NotImplementedError

    def close(self) -> None:
        """Free what the actuator holds (clients, connections); nothing by default."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
