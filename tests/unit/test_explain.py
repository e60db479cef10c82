"""`guardian rollout explain`, `GET /v1/rollouts/{id}/explain`, `guardian report` and
`guardian replay --explain`: the decisions in plain words, with their evidence, and a picture."""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from guardian.cli import remote as cli
from guardian.reporting.explain import evidence_line, explain, render_text
from tests.unit.test_alerts import alert, payload, post
from tests.unit.test_api_contract import assert_error, clean_env, make_harness  # noqa: F401

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def api(tmp_path):
    yield from make_harness(tmp_path, alerts_token="am-t0ken")


def test_a_rollback_is_explained_with_its_evidence(api):
    r = api.start()
    for _ in range(3):
        api.clock.advance(10)
        api.c.guard.tick(r["id"])
    post(api, payload(alert()))
    e = api.client.get(f"/v1/rollouts/{r['id']}/explain").json()
    assert e["phase"] == "rolled_back"
    assert e["summary"].startswith(f"Rollout {r['id']} of checkout to checkout:2")
    assert "rolled back" in e["summary"] and "alert:CheckoutCanaryErrors FAILED: value 0.21 vs threshold 0.05" in (
        e["summary"])
    last = e["timeline"][-1]
    assert last["action"] == "rollback" and last["source"] == "alertmanager" and last["outcome"]["ok"]
    [drove] = [c for c in last["checks"] if c["drove"]]
    assert (drove["value"], drove["threshold"], drove["sample_size"]) == (0.21, 0.05, 1)
    assert "fingerprint f1" in drove["statistic"]
    assert e["timeline"][0]["action"] == "start"


def test_an_unknown_id_is_404_and_exit_2(api, monkeypatch):
    assert_error(api.client.get("/v1/rollouts/nope/explain"), 404, "not_found")
    monkeypatch.setattr(cli, "_client", lambda url, token: contextlib.nullcontext(api.client))
    result = CliRunner().invoke(cli.app, ["rollout", "explain", "nope"])
    assert result.exit_code == 2
    result = CliRunner().invoke(cli.app, ["report", "nope", "--output", "x.png"])
    assert result.exit_code == 2


def test_the_cli_explains_and_draws(api, monkeypatch, tmp_path):
    r = api.start()
    for _ in range(4):
        api.clock.advance(10)
        api.c.guard.tick(r["id"])
    monkeypatch.setattr(cli, "_client", lambda url, token: contextlib.nullcontext(api.client))
    monkeypatch.setattr(cli, "out", Console(width=250))
    result = CliRunner().invoke(cli.app, ["rollout", "explain", r["id"]])
    assert result.exit_code == 0, result.output
    assert f"Rollout {r['id']}" in result.output and "START" in result.output
    as_json = json.loads(CliRunner().invoke(cli.app, ["rollout", "explain", r["id"], "--json"]).output)
    assert as_json["id"] == r["id"]
    for name in ("r.png", "r.html"):
        result = CliRunner().invoke(cli.app, ["report", r["id"], "--output", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (tmp_path / "r.html").read_text()
    assert "data:image/png;base64," in page and f"Rollout {r['id']}" in page
    bad = CliRunner().invoke(cli.app, ["report", r["id"], "--output", str(tmp_path / "r.pdf")])
    assert bad.exit_code == 2 and not (tmp_path / "r.pdf").exists()


def test_replay_explain_gives_the_same_kind_of_explanation(tmp_path):
    from guardian.engine.replay import replay_file

    recordings = sorted((REPO.parent / "shared" / "bench" / "recordings").glob("*.json"))
    if not recordings:
        pytest.skip("../shared/bench/recordings is not here")
    result = next(r for r in (replay_file(p) for p in recordings[:40]) if r.decision == "rollback")
    e = explain({**result.rollout, "id": result.file}, result.decisions)
    assert e["phase"] == "rolled_back" and e["timeline"][-1]["action"] == "rollback"
    text = render_text(e)
    assert "ROLLBACK" in text and "FAILED: value" in text and "samples" in text
    out = CliRunner().invoke(cli.app, ["replay", str(recordings[0]), "--explain", "--json"])
    # standard output: one JSON object per recording; the policy it judged with is named on standard error
    assert out.exit_code == 0 and "explanation" in json.loads(out.stdout.splitlines()[0])
    assert "built-in default policy" in out.stderr


def test_evidence_lines_say_value_threshold_samples_and_statistic():
    line = evidence_line({"check": "errors", "result": "fail", "value": 0.2, "threshold": 0.05, "sample_size": 400,
                          "statistic": "e_value=220 (reject at 164)"})
    assert line == "errors FAILED: value 0.2 vs threshold 0.05, 400 samples, e_value=220 (reject at 164)"
    line = evidence_line({"check": "errors", "result": "inconclusive", "value": None, "threshold": 1.0,
                          "sample_size": 10, "reason": "too little canary traffic: 10 requests (need 50); more"})
    assert line.endswith("— too little canary traffic: 10 requests (need 50)") and "value —" in line


# -- issue 17, frictions: the wording of the story, and the weights of each step ---------------------------
def _passing(*names: str, abstained: tuple[str, ...] = ()) -> list[dict]:
    return ([{"check": n, "result": "pass", "value": 0.01, "threshold": 0.05, "sample_size": 300} for n in names]
            + [{"check": n, "result": "inconclusive", "abstained": True, "reason": "abstains: no data"}
               for n in abstained])


def _ok(action: str) -> dict:
    return {"ok": True, "action": action, "detail": f"noop: would {action}"}


def _promoted_rollout() -> tuple[dict, list[dict]]:
    rollout = {"id": "r1", "service": "checkout", "image": "checkout:v2", "strategy": "canary",
               "steps": [10, 25, 50, 100], "phase": "promoted", "weight": 100, "created_at": 1000.0}
    decisions = [{"action": "start", "source": "user", "at": 1000.0, "reason": "start", "verdicts": [],
                  "outcome": _ok("start")}]
    for i, at in enumerate((1069.0, 1129.0, 1189.0)):
        decisions.append({"action": "advance", "source": "guardian", "at": at, "tick": 6 * (i + 1), "reason": "ok",
                          "verdicts": _passing("error-rate", "p99-latency", abstained=("memory-leak",)),
                          "outcome": _ok("advance")})
    decisions.append({"action": "promote", "source": "guardian", "at": 1249.0, "tick": 24, "reason": "ok",
                      "verdicts": _passing("error-rate", "p99-latency"), "outcome": _ok("promote")})
    return rollout, decisions


def test_the_summary_reads_as_a_sentence():
    e = explain(*_promoted_rollout())
    assert e["summary"].startswith("Rollout r1 of checkout to checkout:v2 (canary, steps [10, 25, 50, 100]) was "
                                   "promoted by the guardian 249 s after it started: all 2 checks passed"), e["summary"]
    assert "started, the guardian" not in e["summary"]


def test_a_rollback_summary_says_who_and_why():
    rollout, decisions = _promoted_rollout()
    decisions[-1] = {"action": "rollback", "source": "guardian", "at": 1249.0, "tick": 24, "reason": "bad",
                     "verdicts": [{"check": "error-rate", "result": "fail", "value": 0.24, "threshold": 0.05,
                                   "sample_size": 300}], "outcome": _ok("rollback")}
    e = explain({**rollout, "phase": "rolled_back", "weight": 0}, decisions)
    assert ("was rolled back by the guardian 249 s after it started, because error-rate FAILED: value 0.24 vs "
            "threshold 0.05") in e["summary"], e["summary"]


def test_every_step_says_its_weights():
    text = render_text(explain(*_promoted_rollout()))
    lines = [line for line in text.splitlines() if "ADVANCE" in line or "START" in line or "PROMOTE" in line]
    assert "0% → 10%" in lines[0]
    assert "10% → 25%" in lines[1] and "25% → 50%" in lines[2] and "50% → 100%" in lines[3]
    assert "promoted at 100%" in lines[4]  # the last ADVANCE reached 100%: the promotion moves nothing


def test_abstaining_checks_are_not_counted_as_passed():
    e = explain(*_promoted_rollout())
    advance = e["timeline"][1]["words"]
    assert "all 2 checks passed" in advance and "memory-leak abstained" in advance, advance
