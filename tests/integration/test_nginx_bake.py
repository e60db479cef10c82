"""BAKE with the nginx actuator against a real nginx 1.22 and real HTTP backends on 127.0.0.1 (the stack
of test_nginx_actuator.py: one canary server, two stable ones, each answering its own name).

nginx rejects `weight=0`; a bake keeps the stable servers in the upstream as `backup`: out of rotation
(they get no request while a canary server answers), warm (a ROLLBACK is one reload back to them), and
a fallback should every canary server stop answering. PROMOTE marks them `down`, as before.
"""
from __future__ import annotations

import threading
import time

import httpx
import pytest

from demo.stack import free_port
from guardian.actuators import registry
from guardian.actuators.nginx import Backend, UpstreamState, render_upstream
from guardian.actuators.nginx.upstream import upstream_meta
from guardian.domain import Action
from tests.integration.test_nginx_actuator import Stack, request, stack  # noqa: F401  (the module's nginx stack)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

CANARY, STABLE_1, STABLE_2 = (Backend("127.0.0.1:8002", "canary"), Backend("127.0.0.1:8001", "stable"),
                              Backend("127.0.0.1:8003", "stable"))


# -- rendering (no nginx needed) -----------------------------------------------------------------------
def test_a_standby_track_at_zero_is_written_backup_and_is_not_the_same_file_as_down() -> None:
    servers, all_in = [CANARY, STABLE_1, STABLE_2], {"canary": 100, "stable": 0}
    baked = render_upstream("app", servers, all_in, standby={"stable"})
    assert "server 127.0.0.1:8001 backup;  # stable" in baked and "server 127.0.0.1:8003 backup;" in baked
    assert "server 127.0.0.1:8002 weight=1;" in baked and " down;" not in baked and "weight=0" not in baked
    state = UpstreamState.parse(baked)
    assert [s["address"] for s in state.servers if s.get("backup")] == ["127.0.0.1:8001", "127.0.0.1:8003"]
    promoted = upstream_meta("app", servers, all_in, None)
    assert upstream_meta("app", servers, all_in, None, {"stable"})["digest"] != promoted["digest"]
    assert all("backup" not in s for s in promoted["servers"])  # without standby: the digests of before
    # standby only changes a track at 0%: a weighted one, and a canary at 0%, are as before
    split = {"canary": 50, "stable": 50}
    assert upstream_meta("app", servers, split, None, {"stable"}) == upstream_meta("app", servers, split, None)
    back = render_upstream("app", servers, {"canary": 0, "stable": 100}, standby={"stable"})
    assert "server 127.0.0.1:8002 down;" in back


# -- through the actuator -------------------------------------------------------------------------------
def test_bake_keeps_the_stable_servers_warm_out_of_rotation(stack: Stack) -> None:  # noqa: F811
    actuator = registry.create(stack.target())
    try:
        assert actuator.apply(request(Action.START, 10, "b1:1:start")).ok
        bake = request(Action.BAKE, 100, "b1:2:bake")
        out = actuator.apply(bake)
        assert out.ok, out.detail
        assert "kept warm out of rotation: 2 at weight 0 (nginx `backup`" in out.detail, out.detail
        assert out.data["warm"] == {"track": "stable", "servers": stack.stable, "weight": 0, "as": "backup"}
        assert actuator.verify(bake).ok
        live = actuator.router.live()
        assert sorted(s["address"] for s in live.servers if s.get("backup")) == sorted(stack.stable)
        seen = stack.split(200)
        assert seen == {"canary": 200}, seen  # out of rotation: not one request to a stable server

        # the bake is not a promote: PROMOTE's file (stable `down`) is another one, and verify tells them apart
        promote = request(Action.PROMOTE, 100, "b1:3:promote")
        check = actuator.verify(promote)
        assert not check.ok and "backup servers: " in check.detail, check.detail
        generation = actuator.router.live().generation
        for i, action in enumerate((Action.PAUSE, Action.RESUME)):  # in the bake: no traffic change, no reload
            assert actuator.apply(request(action, 100, f"b1:{4 + i}:{action.value}")).ok
        assert actuator.router.live().generation == generation
        assert actuator.apply(promote).ok and actuator.verify(promote).ok
        assert "backup" not in stack.nginx.upstream_file.read_text()
        assert stack.split(50) == {"canary": 50}
    finally:
        actuator.close()


def test_rollback_during_the_bake_drops_nothing_under_load(stack: Stack) -> None:  # noqa: F811
    """Two clients at 50 requests/s each, a new connection per request, while the actuator bakes and then
    rolls back: every request answered, by the canary only during the bake, by stable only after."""
    actuator = registry.create(stack.target())
    results: list[tuple[float, str]] = []
    lock, stop = threading.Lock(), threading.Event()

    def client() -> None:
        with httpx.Client(base_url=stack.nginx.url, timeout=5, headers={"Connection": "close"}) as c:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    r = c.get("/")
                    what = r.text if r.status_code == 200 else f"HTTP {r.status_code}"
                except httpx.HTTPError as exc:
                    what = f"{type(exc).__name__}: {exc}"
                with lock:
                    results.append((started, what))
                time.sleep(max(0.0, 0.02 - (time.monotonic() - started)))

    threads = [threading.Thread(target=client, daemon=True) for _ in range(2)]
    try:
        assert actuator.apply(request(Action.START, 25, "b2:1:start")).ok
        for t in threads:
            t.start()
        time.sleep(0.4)
        assert actuator.apply(request(Action.BAKE, 100, "b2:2:bake")).ok
        baked_at = time.monotonic()
        time.sleep(0.8)
        rollback = request(Action.ROLLBACK, 0, "b2:3:rollback")
        assert actuator.apply(rollback).ok and actuator.verify(rollback).ok
        rolled_back_at = time.monotonic()
        time.sleep(0.8)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        actuator.close()
    failed = [what for _, what in results if what not in ("canary", "stable-1", "stable-2")]
    assert len(results) >= 100 and failed == [], failed[:5]
    during = {what for t, what in results if baked_at < t < rolled_back_at - 0.3}
    after = {what for t, what in results if t > rolled_back_at}
    assert during == {"canary"}, during
    assert after == {"stable-1", "stable-2"}, after


def test_a_canary_that_stops_answering_during_the_bake_falls_back_to_the_warm_servers(stack: Stack) -> None:  # noqa: F811
    """`backup`, not `down`: nginx passes a request to a backup server when no primary answers. With a
    canary that refuses connections, the bake still answers every request (from stable); after PROMOTE
    (stable `down`) the same canary gives 502s."""
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    target = stack.target().replace(f"canary={stack.canary}", f"canary={dead}")
    actuator = registry.create(target)
    try:
        assert actuator.apply(request(Action.BAKE, 100, "b3:1:bake")).ok
        seen = stack.split(40)
        assert set(seen) <= {"stable-1", "stable-2"} and sum(seen.values()) == 40, seen
        assert actuator.apply(request(Action.PROMOTE, 100, "b3:2:promote")).ok
        assert stack.split(10) == {"HTTP 502": 10}
    finally:
        actuator.close()
