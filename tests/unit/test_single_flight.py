"""SingleFlight (guardian/sources/single_flight.py), the cache every batching store asks through: one request per
missing key whoever needs it, plans and windows asked for together, failures shared for failure_ttl, waiters that
give up only when a request stops moving, and old answers forgotten."""
from __future__ import annotations

import threading
import time

import pytest

from guardian.errors import SourceUnavailable
from guardian.sources.single_flight import Sets, SingleFlight


def who(*services: str) -> Sets:
    return Sets.of(services)


class Store:
    """An `Ask` that records what it was asked for and answers each key with its scope's services."""

    def __init__(self, fail: Exception | None = None, gate: threading.Event | None = None,
                 refuse: frozenset[str] = frozenset()) -> None:
        self.asked: list[dict[str, Sets]] = []
        self.fail, self.gate, self.refuse = fail, gate, refuse
        self.started = threading.Event()

    def __call__(self, asked: dict[str, Sets], progress) -> dict[str, object]:
        self.asked.append(dict(asked))
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(5)
        if self.fail is not None:
            raise self.fail
        return {key: SourceUnavailable(f"{key} refused") if key in self.refuse else sorted(scope.sets[0])
                for key, scope in asked.items()}


def get(flights: SingleFlight, wants: dict[str, Sets], ask, **kw):
    return flights.get(wants, ask, **{"failure_ttl": 2.0, "wait": 5.0, "failed": lambda e: f"it failed: {e!r}",
                                      "late": lambda key, _: f"{key} did not finish", **kw})


def test_concurrent_fetches_of_a_key_share_one_request() -> None:
    flights: SingleFlight = SingleFlight()
    store = Store(gate=threading.Event())
    results: list[object] = []
    first = threading.Thread(target=lambda: results.append(get(flights, {"k": who("a")}, store)))
    first.start()
    assert store.started.wait(5)
    waiters = [threading.Thread(target=lambda: results.append(get(flights, {"k": who("a")}, store)))
               for _ in range(5)]
    for t in waiters:
        t.start()
    time.sleep(0.1)
    store.gate.set()
    for t in (first, *waiters):
        t.join(5)
    assert results == [{"k": ["a"]}] * 6 and len(store.asked) == 1 and flights.requests == 1


def test_a_wider_want_asks_again_for_the_wanted_planned_and_former_scope() -> None:
    flights: SingleFlight = SingleFlight()
    store = Store()
    flights.plan([("k", who("b"), None)])
    assert get(flights, {"k": who("a")}, store) == {"k": ["a", "b"]}  # the plan goes along
    assert get(flights, {"k": who("b")}, store) == {"k": ["a", "b"]} and len(store.asked) == 1  # served
    assert get(flights, {"k": who("c")}, store) == {"k": ["a", "b", "c"]}  # not served: all it served, and c
    assert flights.requests == 2 and flights.keys_asked == 2


def test_a_windows_planned_keys_go_with_its_first_request_and_groups_split_requests() -> None:
    flights: SingleFlight = SingleFlight()
    store = Store()
    flights.plan([("k1", who("a"), "w"), ("k2", who("a"), "w"), ("k3", who("a"), "other")])
    get(flights, {"k1": who("a")}, store, window="w")
    assert store.asked == [{"k1": who("a"), "k2": who("a")}]
    assert get(flights, {"k2": who("a")}, store, window="w") == {"k2": ["a"]} and len(store.asked) == 1

    apart: SingleFlight = SingleFlight(group=lambda key: key)
    apart.plan([("k1", who("a"), "w"), ("k2", who("a"), "w")])
    get(apart, {"k1": who("a")}, store, window="w")
    assert store.asked[1:] == [{"k1": who("a")}, {"k2": who("a")}] and apart.requests == 2


def test_unplanned_widens_only_a_key_nobody_planned() -> None:
    flights: SingleFlight = SingleFlight()
    store = Store()
    flights.plan([("planned", who("a"), None)])
    get(flights, {"planned": who("a"), "alone": who("a")}, store,
        unplanned={"planned": who("x"), "alone": who("y")})
    assert store.asked == [{"planned": who("a"), "alone": who("a", "y")}]


def test_a_failure_is_shared_for_failure_ttl_then_asked_again() -> None:
    flights: SingleFlight = SingleFlight()
    store = Store(fail=RuntimeError("boom"))
    for _ in range(3):
        with pytest.raises(SourceUnavailable, match=r"it failed: RuntimeError\('boom'\)"):
            get(flights, {"k": who("a")}, store)
    assert len(store.asked) == 1
    with pytest.raises(SourceUnavailable):
        get(flights, {"k": who("a")}, store, failure_ttl=0.0)
    assert len(store.asked) == 2
    down = Store(fail=SourceUnavailable("the store is down"))
    with pytest.raises(SourceUnavailable, match="^the store is down$"):
        get(flights, {"j": who("a")}, down)


def test_a_key_answered_with_an_error_fails_alone() -> None:
    flights: SingleFlight = SingleFlight()
    store = Store(refuse=frozenset({"bad"}))
    with pytest.raises(SourceUnavailable, match="bad refused"):
        get(flights, {"good": who("a"), "bad": who("a")}, store)
    assert get(flights, {"good": who("a")}, store) == {"good": ["a"]} and len(store.asked) == 1


def test_a_waiter_waits_while_the_request_moves_and_gives_up_when_it_stops() -> None:
    def slow(steps: int, pause: float):
        def ask(asked, progress):
            for _ in range(steps):
                time.sleep(pause)
                progress()
            return {key: "answer" for key in asked}
        return ask

    for steps, pause, finishes in ((8, 0.1, True), (1, 2.0, False)):
        flights: SingleFlight = SingleFlight()
        runner = threading.Thread(target=get, args=(flights, {"k": who("a")}, slow(steps, pause)))
        runner.start()
        time.sleep(0.05)
        began = time.monotonic()
        if finishes:  # 0.8 s in all, more than `wait`, but never 0.5 s without progress
            assert get(flights, {"k": who("a")}, None, wait=0.5) == {"k": "answer"}
        else:  # 2 s without progress: given up after 0.5 s
            with pytest.raises(SourceUnavailable, match="k did not finish"):
                get(flights, {"k": who("a")}, None, wait=0.5)
            assert time.monotonic() - began < 1.5
        runner.join(5)


def test_keep_newest_and_forget_older_forget_answers_plans_and_windows() -> None:
    flights: SingleFlight = SingleFlight(prune=lambda f: f.keep_newest(2, lambda key: (key[0], key[1])))
    flights.plan([(("a", t), who("x"), ("w", t)) for t in (1, 2, 3)] + [(("b", 1), who("x"), None)])
    assert set(flights.planned) == {("a", 2), ("a", 3), ("b", 1)} and set(flights.windows) == {("w", 2), ("w", 3)}
    get(flights, {("a", 1): who("x")}, Store())  # an old window is asked all the same, then forgotten
    assert ("a", 1) not in flights.entries

    aging: SingleFlight = SingleFlight(prune=lambda f: f.forget_older(60))
    get(aging, {"k": who("x")}, Store())
    aging.plan([("p", who("x"), None)])
    time.sleep(0.01)
    aging.forget_older(0.0)
    assert not aging.entries and not aging.planned


def test_late_fetches_of_a_window_nobody_planned_ask_once_for_whom_the_last_window_was_planned() -> None:
    def kin(key: tuple[str, int]) -> tuple[str, int]:
        return key[0], key[1]  # (template, window end)

    services = [f"s{i}" for i in range(50)]
    flights: SingleFlight = SingleFlight()
    store = Store()
    flights.plan((("errors", 10), who(s), None) for s in services)
    for s in services:  # the planned window: one request for all
        assert get(flights, {("errors", 10): who(s)}, store, kin=kin)[("errors", 10)] == sorted(services)
    assert len(store.asked) == 1
    for s in services:  # late ticks reach window 20 before any pass plans it: still one request, not fifty
        get(flights, {("errors", 20): who(s)}, store, kin=kin)
    assert len(store.asked) == 2 and store.asked[1][("errors", 20)] == who(*services)
    get(flights, {("latency", 20): who("s1")}, store, kin=kin)  # another template: its own kind, nothing to go by
    assert store.asked[2] == {("latency", 20): who("s1")}
    for s in services[:10]:  # late ticks catching up on a window nobody planned: one request too
        get(flights, {("errors", 0): who(s)}, store, kin=kin)
    assert len(store.asked) == 4 and store.asked[3][("errors", 0)] == who(*services)

    grown = SingleFlight()  # without kin, each late tick's request asks for the one before's scope and itself
    store = Store()
    for s in services:
        get(grown, {("errors", 20): who(s)}, store)
    assert len(store.asked) == len(services)
