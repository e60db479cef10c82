"""The guardian itself guarding real containers: `guardian serve` (built-in policy, 2 s ticks) with the
docker actuator as its default target, a real Prometheus scraping every replica each second (arms
from the actuator's file_sd), real nginx in front, 50 requests/s through it. Nobody steers: the
guardian rolls a bad release back and promotes a good one on its own.
"""
from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

docker = pytest.importorskip("docker")


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    from demo.dockerstack import GuardedStack

    try:
        docker.from_env().ping()
    except docker.errors.DockerException as e:
        pytest.skip(f"no Docker engine ({e}); bash scripts/docker-up.sh starts one")
    with GuardedStack(tmp_path_factory.mktemp("guarded"), f"gguard-{uuid.uuid4().hex[:6]}", rps=50) as g:
        yield g


def test_a_bad_release_is_rolled_back_by_the_guardian_alone(guarded):
    state = guarded.wait(guarded.start_rollout("guardian-demo:v2"), timeout=120)
    assert state["phase"] == "rolled_back"
    rollback = next(d for d in state["decisions"] if d["action"] == "rollback")
    assert rollback["source"] == "guardian" and rollback["outcome"]["ok"]
    failing = [v for v in rollback["verdicts"] if v["result"] == "fail"]
    assert failing and failing[0]["check"] == "errors-vs-baseline"
    v = failing[0]
    assert v["value"] > v["threshold"] and v["sample_size"] > 0 and "e_value" in v["statistic"]
    assert guarded.stack.images() == ["guardian-demo:v1", "guardian-demo:v1"]
    # the log evidence: the canary's containers' logs mined against the stable ones'; the injected fault on top
    top = rollback["logs"][0]
    assert "inventory reservation failed" in top["template"] and top["baseline_count"] == 0
    assert top["canary_count"] >= 3 and "ERROR" in top["example"]
    # all traffic back on v1 within the 20 s goal (30 s here: CI machines are noisy)
    assert guarded.exposure("v2") is not None and guarded.exposure("v2") <= 30
    recording = json.loads((Path(guarded.guardian.workdir) / "recordings" / f"{state['id']}.json").read_text())
    assert recording["format"] == "guardian-recording/v1" and recording["series"]


def test_a_good_release_is_promoted_step_by_step_without_a_dropped_request(guarded):
    state = guarded.wait(guarded.start_rollout("guardian-demo:v3", steps=[50, 100], analysis_seconds=4), timeout=150)
    assert state["phase"] == "promoted", [d["reason"] for d in state["decisions"]]
    actions = [d["action"] for d in state["decisions"]]
    assert actions[0] == "start" and actions[-1] == "promote" and "rollback" not in actions
    assert guarded.stack.images() == ["guardian-demo:v3", "guardian-demo:v3"]
    assert guarded.load.stats()["dropped"] == 0
    assert guarded.load.versions["v3"]["count"] > 0
