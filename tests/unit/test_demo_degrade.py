"""The demo app's self-degradation (`--fail-after`, the demo's v4) and the v4 image's command line."""
from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx
import pytest

from demo import images
from demo.app import DemoServer, DemoState


@pytest.fixture
def serve() -> Iterator:
    servers: list[DemoServer] = []

    def start(state: DemoState) -> str:
        server = DemoServer(("127.0.0.1", 0), state)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}"

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def codes(url: str, n: int) -> dict[int, int]:
    out: dict[int, int] = {}
    with httpx.Client(base_url=url, timeout=5) as client:
        for _ in range(n):
            code = client.get("/").status_code
            out[code] = out.get(code, 0) + 1
    return out


def test_healthy_until_fail_after_then_fails_the_given_share(serve):
    state = DemoState(latency=0, version="v4", fail_after=3600, fail_ratio=0.5)
    url = serve(state)
    assert codes(url, 20) == {200: 20}  # before fail_after: healthy
    assert httpx.get(f"{url}/control").json()["degraded"] is False
    state.started -= 3600  # an hour later
    seen = codes(url, 100)
    assert 25 < seen.get(500, 0) < 75, seen  # about half (binomial(100, 0.5) leaves these bounds once in 10^6)
    assert httpx.get(f"{url}/control").json() == {"error_ratio": 0.0, "latency": 0.0, "version": "v4",
                                                         "fail_after": 3600, "fail_ratio": 0.5, "degraded": True}
    assert httpx.get(f"{url}/healthz").status_code == 200  # the healthcheck still passes: it degrades, not dies


def test_without_fail_after_nothing_changes(serve):
    state = DemoState(latency=0)
    assert not state.degraded(now=state.started + 1e9)
    assert "fail_after" not in state.settings()
    assert codes(serve(state), 20) == {200: 20}


def test_degraded_errors_name_their_own_fault(serve, capsys):
    state = DemoState(latency=0, fail_after=0, fail_ratio=1.0)
    codes(serve(state), 3)
    out = capsys.readouterr().out
    assert out.count("ERROR checkout: database connection pool exhausted") == 3
    assert "inventory reservation failed" not in out


@pytest.mark.parametrize("bad", [{"fail_after": -1}, {"fail_ratio": 1.5}])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValueError):
        DemoState(**bad)


def test_the_v4_image_degrades_and_the_others_do_not():
    assert images.dockerfile("v4").splitlines()[-1] == (
        f'CMD ["--version", "v4", "--error-ratio", "0.0", "--fail-after", "{images.V4_FAIL_AFTER}", '
        f'"--fail-ratio", "{images.V4_FAIL_RATIO}"]')
    for v in ("v1", "v2", "v3"):
        assert "--fail-after" not in images.dockerfile(v)
    assert len({images._source_hash(v) for v in images.VERSIONS}) == len(images.VERSIONS)
