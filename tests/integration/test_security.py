"""Security against real components: `guardian serve` over TLS with a certificate made here (openssl),
start-up refused on half or broken TLS settings, the size limit and credentials through a real uvicorn,
the served logs free of the secrets given in settings, and a PromQL injection sent to a real
Prometheus. Unit-level checks of the same are in tests/unit/test_redact.py."""
from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from demo.stack import GuardianServer, terminate
from guardian.rules.promql import render
from tests.integration.conftest import REPO, PrometheusServer, prometheus_binary, wait_until
from tests.unit.test_api_contract import clean_env  # noqa: F401  (autouse: no GUARDIAN_* from outside)

OPERATOR = "op-Tls-T0ken-93c1"
ALERTS = "am-Tls-T0ken-07aa"
PROM_PASSWORD = "pr0m-Tls-Pa55"


def make_cert(folder: Path, name: str = "guardian") -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its unencrypted key."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


def serve(workdir: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    """`guardian serve` expected to refuse to start: its exit and output."""
    server = GuardianServer(workdir, prometheus_url="http://127.0.0.1:1", rules=[str(REPO / "rules")], **settings)
    return subprocess.run([sys.executable, "-m", "guardian", "serve"], env=server.env, capture_output=True,
                          text=True, timeout=60, cwd=workdir)


@pytest.fixture
def https_guardian(tmp_path) -> Iterator[tuple[GuardianServer, str, ssl.SSLContext]]:
    cert, key = make_cert(tmp_path)
    server = GuardianServer(tmp_path, prometheus_url=f"http://prom:{PROM_PASSWORD}@127.0.0.1:1",
                            rules=[str(REPO / "rules")], tls_certfile=cert, tls_keyfile=key, token=OPERATOR,
                            alerts_token=ALERTS, max_body_bytes=65536, alerts_max_bytes=65536, tick_seconds=2,
                            log_level="DEBUG")
    url = f"https://127.0.0.1:{server.port}"
    trust = ssl.create_default_context(cafile=str(cert))
    log = server.log_path.open("ab")
    server.proc = subprocess.Popen([sys.executable, "-m", "guardian", "serve"], env=server.env, stdout=log,
                                   stderr=log, cwd=tmp_path)
    log.close()

    def ready() -> bool:
        if server.proc.poll() is not None:
            raise RuntimeError(f"guardian exited ({server.proc.returncode}): {server.log_tail()}")
        try:
            return httpx.get(f"{url}/healthz", verify=trust, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(ready, 30, 0.1, f"guardian ready on {url}")
        yield server, url, trust
    finally:
        terminate(server.proc)


def test_tls_serves_https_with_the_given_certificate_and_keeps_every_guard(https_guardian):
    server, url, trust = https_guardian
    with httpx.Client(base_url=url, verify=trust, timeout=10) as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        body = {"service": "checkout", "image": "checkout:v2", "steps": [50, 100]}
        # the Alertmanager token does not start (or steer) rollouts; the operator token does
        assert c.post("/v1/rollouts", json=body, headers={"Authorization": f"Bearer {ALERTS}"}).status_code == 401
        r = c.post("/v1/rollouts", json=body, headers={"Authorization": f"Bearer {OPERATOR}"})
        assert r.status_code == 201, r.text
        rid = r.json()["id"]
        assert c.post(f"/v1/rollouts/{rid}/rollback", headers={"Authorization": f"Bearer {ALERTS}"}).status_code == 401
        # and the operator token is not Alertmanager's
        assert c.post("/v1/alerts", json={}, headers={"Authorization": f"Bearer {OPERATOR}"}).status_code == 401
        # a streamed (chunked) body past max_body_bytes is refused through the real server, nothing stored
        chunks = (b" " * 8192 for _ in range(20))
        r = c.post("/v1/alerts", content=chunks, headers={"Authorization": f"Bearer {ALERTS}",
                                                          "Content-Type": "application/json"})
        assert r.status_code == 413 and r.json()["error"] == "too_large"
        big = json.dumps({"service": "checkout", "image": "x" * 70000})
        r = c.post("/v1/rollouts", content=big, headers={"Authorization": f"Bearer {OPERATOR}",
                                                         "Content-Type": "application/json"})
        assert r.status_code == 413
        assert len(c.get("/v1/rollouts").json()) == 1
        wait_until(lambda: c.get(f"/v1/rollouts/{rid}").json()["last_tick"] >= 1, 20, 0.2, "a tick")
    # the command-line client trusts the private certificate through SSL_CERT_FILE
    cli = subprocess.run([sys.executable, "-m", "guardian", "rollout", "status", rid, "--api", url],
                         env={**server.env, "SSL_CERT_FILE": server.env["GUARDIAN_TLS_CERTFILE"]},
                         capture_output=True, text=True, timeout=60)
    assert cli.returncode in (0, 3) and "checkout" in cli.stdout, cli.stdout + cli.stderr
    # the certificate is checked: an untrusting client refuses it, and plain HTTP gets no answer
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/healthz", timeout=5)
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{server.port}/healthz", timeout=5)
    terminate(server.proc)
    log = server.log_path.read_text(errors="replace")
    assert "alert webhook refused" in log and "pause -> paused" in log  # it logged, at log_level DEBUG
    for secret in (OPERATOR, ALERTS, PROM_PASSWORD):
        assert secret not in log, secret


@pytest.mark.parametrize(("settings", "named"), [
    ({"tls_certfile": "CERT"}, "tls_keyfile"),
    ({"tls_keyfile": "KEY"}, "tls_certfile"),
    ({"tls_certfile": "CERT", "tls_keyfile": "/nonexistent/guardian.key"}, "tls_keyfile"),
    ({"tls_certfile": "OTHER", "tls_keyfile": "KEY"}, "tls_certfile"),  # a pair that does not match
])
def test_start_up_is_refused_on_half_or_broken_tls_settings(tmp_path, settings, named):
    cert, key = make_cert(tmp_path)
    other, _ = make_cert(tmp_path, "other")
    files = {"CERT": str(cert), "KEY": str(key), "OTHER": str(other)}
    result = serve(tmp_path, **{k: files.get(v, v) for k, v in settings.items()})
    assert result.returncode == 2, result.stderr
    assert named in result.stderr and "not started" in result.stderr, result.stderr


def test_an_unreadable_key_is_refused_by_name(tmp_path):
    cert, key = make_cert(tmp_path)
    key.chmod(0)
    if _can_read(key):  # root reads anything: a folder cannot be read as a file either
        key = tmp_path
    result = serve(tmp_path, tls_certfile=str(cert), tls_keyfile=str(key))
    assert result.returncode == 2 and "tls_keyfile" in result.stderr and "cannot be read" in result.stderr, \
        result.stderr


def _can_read(path: Path) -> bool:
    try:
        path.read_bytes()
        return True
    except OSError:
        return False


# -- PromQL injection against a real Prometheus ------------------------------------------------------------
INJECTION = 'x"} or vector(1) or prometheus_build_info{service="'


def test_an_injected_service_name_matches_no_series_in_a_real_prometheus(tmp_path):
    binary = prometheus_binary()
    prom = PrometheusServer([], "1s", workdir=tmp_path / "prom", binary=binary)
    prom.targets = [(f"127.0.0.1:{prom.port}", {"service": "checkout", "track": "canary"})]  # it scrapes itself
    prom.write_config()
    prom.start()
    try:
        template = 'prometheus_build_info{service="{{service}}",{{arm_label}}="{{arm}}"}'
        prom.wait_for_series(render(template, service="checkout", arm="canary"))  # the selector works
        escaped = render(template, service=INJECTION, arm="canary")
        assert prom.query(escaped) == []  # a valid query, about a service of that odd name: nothing
        for arm in ('canary"} or vector(1) #', "canary\\", "canary\n} or vector(1)"):
            assert prom.query(render(template, service="checkout", arm=arm)) == []
        naive = template.replace("{{service}}", INJECTION).replace("{{arm_label}}", "track").replace(
            "{{arm}}", "canary")
        assert prom.query(naive) != []  # the control: without escaping the injection would have matched
    finally:
        prom.stop()
