"""The nginx actuator against a real nginx 1.22 and real HTTP backends on 127.0.0.1; nothing mocked.

One nginx (`NginxServer`, one worker) proxies to three tiny backends that answer their own name:
`canary` on one server, `stable` on two. Each test sets the weights it starts from. nginx's smooth
weighted round-robin is deterministic with one worker, but the assertions allow statistical slack.
"""
from __future__ import annotations

import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from demo.nginx import NginxServer
from demo.stack import free_port
from guardian.actuators import ActionRequest, registry
from guardian.actuators.nginx import (
    Backend,
    NginxActuator,
    NginxRouter,
    find_nginx,
    render_placeholder,
    render_upstream,
    server_weights,
)
from guardian.actuators.nginx import router as nginx_mod
from guardian.domain import Action
from guardian.errors import ActuatorError

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


# -- backends ---------------------------------------------------------------------------------------------
class _Named(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = self.server.name.encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def named_server(name: str) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Named)
    server.daemon_threads = True
    server.name = name  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"backend-{name}",
                     daemon=True).start()
    return server


def address(server: ThreadingHTTPServer) -> str:
    return f"127.0.0.1:{server.server_address[1]}"


@dataclass
class Stack:
    nginx: NginxServer
    status_port: int
    canary: str  # addresses
    stable: list[str]
    tmp: Path

    @property
    def backends(self) -> list[Backend]:
        return [Backend(self.canary, "canary")] + [Backend(a, "stable") for a in self.stable]

    def router(self, **kw: Any) -> NginxRouter:
        kw.setdefault("status_port", self.status_port)
        return NginxRouter(self.nginx.upstream_file, self.nginx.conf_file, upstream_name="app", **kw)

    def target(self, status: bool = True) -> str:
        t = (f"nginx:{self.nginx.upstream_file}?conf={self.nginx.conf_file}&upstream=app"
             f"&canary={self.canary}&stable={','.join(self.stable)}")
        return t + (f"&status={self.status_port}" if status else "")

    def split(self, n: int = 400) -> Counter[str]:
        """Send n sequential requests through nginx; count who answered (or the error)."""
        seen: Counter[str] = Counter()
        with httpx.Client(base_url=self.nginx.url, timeout=5) as client:
            for _ in range(n):
                try:
                    r = client.get("/")
                    seen[r.text if r.status_code == 200 else f"HTTP {r.status_code}"] += 1
                except httpx.HTTPError as exc:
                    seen[type(exc).__name__] += 1
        return seen


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if find_nginx() is None:
        pytest.skip("the nginx binary is not installed (scripts/setup.sh installs Debian's 'nginx')")
    backends = [named_server(n) for n in ("canary", "stable-1", "stable-2")]
    server = NginxServer(tmp_path_factory.mktemp("nginx"), "app").start()
    try:
        yield Stack(server, free_port(), address(backends[0]), [address(b) for b in backends[1:]],
                    tmp_path_factory.mktemp("nginx-scratch"))
    finally:
        server.stop()
        for b in backends:
            b.shutdown()
            b.server_close()


def request(action: Action, weight: int, key: str, service: str = "app") -> ActionRequest:
    return ActionRequest(rollout_id="r1", service=service, image="app:v2", action=action, weight=weight, key=key)


def canary_share(seen: Counter[str]) -> float:
    return seen["canary"] / sum(seen.values())


# -- rendering (no nginx needed) -----------------------------------------------------------------------
def test_weights_follow_percentages_whatever_the_server_count() -> None:
    c, s1, s2, s3 = (Backend("127.0.0.1:8002", "canary"), Backend("127.0.0.1:8001", "stable"),
                     Backend("127.0.0.1:8003", "stable"), Backend("127.0.0.1:8004", "stable"))
    assert server_weights([c, s1, s2, s3], {"canary": 10, "stable": 90}) == [1, 3, 3, 3]  # 30:90:90:90 / 30
    assert server_weights([c, s1], {"canary": 10, "stable": 90}) == [1, 9]
    assert server_weights([c, s1, s2], {"canary": 50, "stable": 50}) == [2, 1, 1]
    assert server_weights([c, s1, s2], {"canary": 0, "stable": 100}) == [None, 1, 1]
    assert server_weights([c, s1, s2], {"canary": 100, "stable": 0}) == [1, None, None]
    big = Backend("127.0.0.1:8005", "stable", weight_share=2)
    assert server_weights([c, s1, big], {"canary": 25, "stable": 75}) == [1, 1, 2]  # 25:25:50

    text = render_upstream("app", [c, s1, s2], {"canary": 0, "stable": 100}, status_port=9145, generation=7)
    assert "server 127.0.0.1:8002 down;" in text and "weight=0" not in text
    assert "server 127.0.0.1:8001 weight=1;" in text
    assert "listen 127.0.0.1:9145;" in text and '"generation": 7' in text
    assert nginx_mod.UpstreamState.parse(text).weights == {"canary": 0, "stable": 100}

    with pytest.raises(ValueError, match="at least one server must be up|has no server"):
        server_weights([s1, s2], {"canary": 100, "stable": 0})
    with pytest.raises(ValueError, match="sum to 100"):
        server_weights([c, s1], {"canary": 10, "stable": 80})
    with pytest.raises(ValueError, match="no weight"):
        server_weights([c, Backend("127.0.0.1:9", "blue")], {"canary": 10, "stable": 90})
    with pytest.raises(ValueError, match="listed twice"):
        server_weights([c, Backend("127.0.0.1:8002", "stable")], {"canary": 10, "stable": 90})
    with pytest.raises(ValueError, match="holds a space"):
        Backend("127.0.0.1:80; include /etc/passwd", "stable")


# -- (a), (b) weights honoured, 0% is nothing --------------------------------------------------------------
@pytest.mark.parametrize("canary", [10, 50, 100, 0])
def test_weights_are_honoured_by_real_traffic(stack: Stack, canary: int) -> None:
    with stack.router() as router:
        outcome = router.apply(stack.backends, {"canary": canary, "stable": 100 - canary})
        assert outcome.ok, outcome.detail
        assert router.live().weights == {"canary": canary, "stable": 100 - canary}
    seen = stack.split(400)
    assert sum(seen.values()) == 400 and set(seen) <= {"canary", "stable-1", "stable-2"}, seen
    assert abs(canary_share(seen) - canary / 100) <= 0.05, seen
    if canary == 0:
        assert seen["canary"] == 0, seen  # (b) a track at 0% gets nothing at all
    if canary == 100:
        assert seen["stable-1"] == seen["stable-2"] == 0, seen
    else:  # the stable share is spread evenly over its two servers
        assert abs(seen["stable-1"] - seen["stable-2"]) <= 0.1 * (seen["stable-1"] + seen["stable-2"]), seen
    text = stack.nginx.upstream_file.read_text()
    assert "weight=0" not in text
    assert ("down;  # canary" in text) == (canary == 0)


# -- (c) a config nginx rejects changes nothing ------------------------------------------------------------
def test_rejected_config_restores_the_previous_file_and_traffic(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    router = stack.router()
    assert router.apply(stack.backends, {"canary": 30, "stable": 70}).ok
    before = stack.nginx.upstream_file.read_bytes()
    generation = router.live().generation

    bad = [Backend("127.0.0.1:99999", "canary"), *stack.backends[1:]]  # nginx: invalid port in upstream
    outcome = router.apply(bad, {"canary": 50, "stable": 50})
    assert not outcome.ok
    assert "config test failed" in outcome.detail and '[emerg] invalid port in upstream "127.0.0.1:99999"' \
        in outcome.detail, outcome.detail
    assert "restored the previous" in outcome.detail
    assert stack.nginx.upstream_file.read_bytes() == before

    monkeypatch.setattr(nginx_mod, "render_upstream", lambda *a, **k: "upstream app {{ garbage\n")
    outcome = router.apply(stack.backends, {"canary": 90, "stable": 10})
    assert not outcome.ok and "[emerg]" in outcome.detail, outcome.detail
    assert stack.nginx.upstream_file.read_bytes() == before
    monkeypatch.undo()

    assert router.live().generation == generation  # nginx never loaded either
    assert not list(stack.nginx.upstream_file.parent.glob(".*.tmp"))  # no temp file left behind
    seen = stack.split(300)
    assert sum(seen.values()) == 300 and abs(canary_share(seen) - 0.30) <= 0.05, seen
    router.close()


def test_nginx_not_running_unwritable_or_foreign_file_fail_cleanly(stack: Stack) -> None:
    stopped = NginxServer(stack.tmp / "stopped", "app")  # configured, never started
    stopped.write_config()
    placeholder = stopped.upstream_file.read_bytes()
    router = NginxRouter(stopped.upstream_file, stopped.conf_file, upstream_name="app", timeout=1)
    outcome = router.apply(stack.backends, {"canary": 10, "stable": 90})
    assert not outcome.ok and "reload failed" in outcome.detail and "nginx.pid" in outcome.detail, outcome.detail
    assert stopped.upstream_file.read_bytes() == placeholder

    missing = NginxRouter(stack.tmp / "no-such-dir" / "app.conf", stack.nginx.conf_file, upstream_name="app")
    outcome = missing.apply(stack.backends, {"canary": 10, "stable": 90})
    assert not outcome.ok and "cannot write" in outcome.detail and "No such file" in outcome.detail, outcome.detail

    foreign = stack.tmp / "foreign.conf"
    foreign.write_text("upstream app { server 10.0.0.1:80; }\n")
    outcome = NginxRouter(foreign, stack.nginx.conf_file, upstream_name="app").apply(
        stack.backends, {"canary": 10, "stable": 90})
    assert not outcome.ok and "refusing to overwrite" in outcome.detail, outcome.detail
    assert foreign.read_text() == "upstream app { server 10.0.0.1:80; }\n"
    assert render_placeholder("app").startswith(nginx_mod.MARKER)


def test_without_a_status_endpoint_the_new_workers_confirm_the_reload(stack: Stack) -> None:
    with stack.router(status_port=None) as router:
        outcome = router.apply(stack.backends, {"canary": 50, "stable": 50})
        assert outcome.ok and outcome.data["reloaded"], outcome.detail
        assert router.current().weights == {"canary": 50, "stable": 50}
        again = router.apply(stack.backends, {"canary": 50, "stable": 50})
        assert again.ok and not again.data["reloaded"], again.detail
    seen = stack.split(200)
    assert abs(canary_share(seen) - 0.5) <= 0.05, seen


# -- (d) a blue-green switch under load drops nothing ------------------------------------------------------
def test_blue_green_switches_under_load_drop_no_request(stack: Stack) -> None:
    """Two client threads at 50 req/s each, a new connection per request (independent clients), while
    the actuator switches all traffic 0 -> 100 -> 0 ... six times, each a real `nginx -s reload`."""
    actuator = registry.create(stack.target())
    assert actuator.apply(request(Action.START, 0, "bg:0:start")).ok  # blue (stable) only
    results: list[tuple[float, str]] = []  # (time the request was sent, who answered or the error)
    lock = threading.Lock()
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=stack.nginx.url, timeout=5, headers={"Connection": "close"}) as c:
            next_at = time.monotonic()
            while not stop.is_set():
                started = time.monotonic()
                try:
                    r = c.get("/")
                    what = r.text if r.status_code == 200 else f"HTTP {r.status_code}"
                except httpx.HTTPError as exc:
                    what = f"{type(exc).__name__}: {exc}"
                with lock:
                    results.append((started, what))
                next_at += 1 / 50
                time.sleep(max(0.0, next_at - time.monotonic()))

    threads = [threading.Thread(target=client, daemon=True) for _ in range(2)]
    for t in threads:
        t.start()
    switched: list[tuple[float, int]] = []  # (time the switch was confirmed live, canary weight)
    try:
        time.sleep(0.4)
        for i in range(6):
            green = i % 2 == 0
            req = (request(Action.PROMOTE, 100, f"bg:{i + 1}:promote") if green
                   else request(Action.ROLLBACK, 0, f"bg:{i + 1}:rollback"))
            if i == 0:
                first_asked = time.monotonic()  # the first switch may be live before apply returns
            outcome = actuator.apply(req)
            assert outcome.ok, outcome.detail
            assert actuator.verify(req).ok
            switched.append((time.monotonic(), 100 if green else 0))
            time.sleep(1.6)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        actuator.close()

    failed = [what for _, what in results if what not in ("canary", "stable-1", "stable-2")]
    print(f"\nblue-green under load: {len(results)} requests, {len(failed)} failed, {len(switched)} reloads")
    assert len(results) >= 250
    assert failed == [], failed[:5]
    # Before the first switch only blue answered; after each confirmed switch only the new colour.
    assert all(what != "canary" for t, what in results if t < first_asked)
    for (at, weight), until in zip(switched, [s[0] for s in switched[1:]] + [float("inf")], strict=True):
        # nginx's old workers finish the connections they accepted, so on a loaded machine a request sent just
        # after the confirmation may still meet the old colour: within the first second only, and rarely; none may
        # fail (asserted above), and after that second every answer is the new colour
        settled = [what for t, what in results if at + 1.0 < t < until - 0.2]
        assert settled, "no request between two switches"
        assert all((what == "canary") == (weight == 100) for what in settled), (weight, Counter(settled))
        early = [what for t, what in results if at < t <= at + 1.0]
        stale = [what for what in early if (what == "canary") != (weight == 100)]
        assert len(stale) <= max(2, len(early) // 20), (weight, Counter(early))


# -- (e) the registry --------------------------------------------------------------------------------------
def test_the_registry_builds_the_actuator_and_rejects_bad_targets(stack: Stack) -> None:
    assert "nginx" in registry.names()
    assert registry.validate_target(stack.target()) is None
    actuator = registry.create(stack.target(), timeout=3.0, retries=5)  # deps it does not use are ignored
    assert isinstance(actuator, NginxActuator)
    assert actuator.router.upstream_file == stack.nginx.upstream_file
    assert actuator.router.status_port == stack.status_port and actuator.router.timeout == 3.0
    assert [(b.address, b.track) for b in actuator.backends] == [(b.address, b.track) for b in stack.backends]
    actuator.close()

    base = "nginx:/etc/nginx/guardian/app.conf"
    good = "conf=/etc/nginx/nginx.conf&upstream=app&canary=127.0.0.1:8002&stable=127.0.0.1:8001,127.0.0.1:8003"
    assert registry.validate_target(f"{base}?{good}&status=9145&timeout=2") is None
    assert registry.validate_target(f"nginx:///etc/nginx/guardian/app.conf?{good}") is None
    bad = {
        "nginx": "no upstream file",
        "nginx:": "no upstream file",
        f"nginx:guardian/app.conf?{good}": "must be an absolute path",
        f"nginx:/etc/nginx/app.txt?{good}": "must end in .conf",
        f"{base}?upstream=app&canary=127.0.0.1:8002&stable=127.0.0.1:8001": "missing parameter 'conf'",
        f"{base}?{good.replace('upstream=app', 'upstream=')}": "missing parameter 'upstream'",
        f"{base}?{good.replace('upstream=app', 'upstream=a;b')}": "parameter 'upstream'",
        f"{base}?{good.replace('canary=127.0.0.1:8002', 'canary=127.0.0.1')}": "parameter 'canary': '127.0.0.1' is not",
        f"{base}?{good.replace('127.0.0.1:8003', '127.0.0.1:70000')}": "parameter 'stable'",
        f"{base}?{good.replace('127.0.0.1:8003', '127.0.0.1:8002')}": "both list 127.0.0.1:8002",
        f"{base}?{good}&status=http": "parameter 'status'",
        f"{base}?{good}&timeout=0": "parameter 'timeout'",
        f"{base}?{good}&colour=blue": "unknown parameter 'colour'",
        f"{base}?{good}&conf=/x.conf": "parameter 'conf' is given twice",
        f"{base}?{good.replace('/etc/nginx/nginx.conf', '/etc/nginx/guardian/app.conf')}": "names the upstream file",
    }
    for target, message in bad.items():
        problem = registry.validate_target(target)
        assert problem is not None and message in problem, (target, problem)
        with pytest.raises(ActuatorError, match="invalid nginx target"):
            registry.create(target)


# -- (f) idempotency ---------------------------------------------------------------------------------------
def test_the_same_key_applied_twice_reloads_once(stack: Stack) -> None:
    calls: list[list[str]] = []

    def counting_run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        calls.append(list(cmd))
        return subprocess.run(cmd, **kw)

    def reloads() -> int:
        return sum(1 for c in calls if "reload" in c)

    with stack.router() as router:  # a known different starting point
        assert router.apply(stack.backends, {"canary": 0, "stable": 100}).ok
    actuator = registry.create(stack.target(), run=counting_run)
    start = request(Action.START, 20, "r1:1:start")
    first = actuator.apply(start)
    assert first.ok and first.data["weights"] == {"canary": 20, "stable": 80}, first.detail
    assert actuator.apply(start) is first
    assert reloads() == 1
    assert actuator.verify(start).ok

    # A new key asking for what is already live: ok, no reload (idempotent on content too).
    same = actuator.apply(request(Action.RESUME, 20, "r1:2:resume"))
    assert same.ok and "no traffic change" in same.detail
    again = actuator.apply(request(Action.ADVANCE, 20, "r1:3:advance"))
    assert again.ok and not again.data["reloaded"], again.detail
    assert actuator.apply(request(Action.SCALE, 20, "r1:4:scale")).ok
    assert reloads() == 1

    # A change made behind the actuator's back is caught by verify.
    with stack.router() as router:
        assert router.apply(stack.backends, {"canary": 60, "stable": 40}).ok
    check = actuator.verify(start)
    assert not check.ok and "'canary': 60" in check.detail, check.detail
    assert actuator.apply(start) is first  # the key is done; re-applying it changes nothing
    assert reloads() == 1
    assert actuator.apply(request(Action.ROLLBACK, 20, "r1:5:rollback")).data["weights"] == {"canary": 0,
                                                                                            "stable": 100}
    assert reloads() == 2
    actuator.close()
