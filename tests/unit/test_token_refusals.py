"""Issue 17, defect 5: every refused token is logged (without the secret) — the operator's endpoints (no
token, a wrong one, a CLI call without one), the alert webhook and the gates — as docs/operations.md's
Security section says. In process: the real app with a token, its log captured through loguru."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
from loguru import logger

from tests.unit.test_api_contract import Harness, clean_env, make_harness  # noqa: F401  (clean_env: autouse)

TOKEN = "op-refusal-T0ken-5e1f"
ALERTS = "am-refusal-T0ken-77c2"


@pytest.fixture
def secured(tmp_path) -> Iterator[tuple[Harness, list[str]]]:
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="DEBUG", format="{level} {message}")
    try:
        yield from ((h, lines) for h in make_harness(tmp_path, token=TOKEN, alerts_token=ALERTS))
    finally:
        logger.remove(sink)


def refusals(lines: list[str]) -> list[str]:
    return [line for line in lines if "refused" in line]


CASES = [
    ("POST", "/v1/rollouts", {}, "no Authorization header"),
    ("POST", "/v1/rollouts", {"Authorization": "Bearer wrong"}, "wrong"),
    ("POST", "/v1/rollouts", {"Authorization": TOKEN}, "not a bearer"),
    ("POST", "/v1/rollouts/abc123/pause", {"Authorization": f"Bearer {TOKEN}x"}, "wrong"),
    ("POST", "/v1/rules/reload", {}, "no Authorization header"),
]


@pytest.mark.parametrize(("method", "path", "headers", "why"), CASES,
                         ids=["none", "wrong", "no-scheme", "override-wrong", "reload-none"])
def test_every_operator_refusal_is_logged_without_the_secret(secured, method, path, headers, why):
    h, lines = secured
    r = h.client.request(method, path, headers=headers, json={"service": "checkout", "image": "x"})
    assert r.status_code == 401
    logged = refusals(lines)
    assert len(logged) == 1, lines
    line = logged[0]
    assert line.startswith("WARNING")
    assert path in line and method in line and why in line, line
    assert "testclient" in line  # who asked
    assert TOKEN not in line and "wrong" not in line.split(why, 1)[1]  # neither the token nor what was sent


def test_the_alert_webhook_and_the_gates_log_their_refusals_too(secured):
    h, lines = secured
    assert h.client.post("/v1/alerts", json={}, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert h.client.get("/v1/gates/argo/checkout", params={"revision": "a1"}).status_code == 401
    logged = refusals(lines)
    assert any("alert webhook refused" in line for line in logged), lines
    assert any("gate call refused" in line for line in logged), lines
    assert all("nope" not in line and TOKEN not in line and ALERTS not in line for line in lines)


def test_accepted_calls_and_open_reads_log_no_refusal(secured):
    h, lines = secured
    assert h.client.post("/v1/rollouts", json={"service": "checkout", "image": "x"}, headers=h.auth).status_code == 201
    assert h.client.get("/v1/rollouts").status_code == 200
    assert refusals(lines) == []
