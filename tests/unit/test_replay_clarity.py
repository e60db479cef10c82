"""`guardian replay` says what it decided and how (issue 17, defect 3): the printed decision and its
explanation agree, it names the policy it judged with (and the rules the rollout ran under, from the
recording's labels, which are shown, never judged), the explanation shows the recorded image, and a
recording written by the guardian carries the rollout's final phase."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from guardian.actuators.noop import NoopActuator
from guardian.cli import app
from guardian.clock import FakeClock
from guardian.domain import Strategy
from guardian.engine.guard import Guard, GuardConfig, StartSpec
from guardian.engine.replay import replay_recording
from guardian.engine.store import SQLiteStore
from guardian.rules.book import RuleBook
from guardian.rules.loader import DEFAULT_RULESET
from guardian.sources.recording import RecordingSource, parse_start
from tests.unit.recordings import steady_recording

REPO = Path(__file__).resolve().parents[2]
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def run(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "250"})


def plain(s: str) -> str:
    return " ".join(ANSI.sub("", s).split())


def write(path: Path, doc: dict) -> Path:
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def labelled(doc: dict, **labels: object) -> dict:
    return {**doc, "labels": {**doc.get("labels", {}), **labels}}


def test_a_promoted_replay_and_its_explanation_agree(tmp_path):
    path = write(tmp_path / "fine.json", steady_recording(40))
    printed = run("replay", path)
    assert printed.exit_code == 0, printed.output
    line = plain(printed.stdout)
    assert line.startswith("fine.json: promote"), line
    assert "left)" not in line  # "step 1/1 analysed 390s of 410s (20s left)" read as if it were still going
    assert "no check failed" in line and "40 ticks" in line

    explained = run("replay", path, "--explain")
    assert explained.exit_code == 0, explained.output
    text = plain(explained.stdout)
    assert "is progressing" not in text, text
    assert "promoted" in text and "PROMOTE" in text


def test_the_json_decision_is_unchanged_by_the_wording():
    result = replay_recording(steady_recording(40), "fine.json")
    assert result.to_json()["decision"] == "promote" and result.to_json()["tick"] is None
    assert set(result.to_json()) == {"file", "decision", "tick", "reason"}


def test_replay_names_the_policy_it_judged_with(tmp_path):
    path = write(tmp_path / "rec.json", steady_recording(20))
    default = run("replay", path, "--json")
    assert default.exit_code == 0, default.output
    json.loads(default.stdout)  # standard output stays one JSON object per recording
    assert "built-in default policy" in plain(default.stderr)

    rules = tmp_path / "lenient.yaml"
    rules.write_text("service: checkout\nchecks:\n  - {name: error-rate, kind: threshold, ratio: errors / requests, "
                     "above: 50%, action: rollback}\n", encoding="utf-8")
    with_rules = run("replay", path, "--rules", rules)
    assert with_rules.exit_code == 0, with_rules.output
    assert str(rules) in plain(with_rules.stderr) and "error-rate" in plain(with_rules.stderr)


def test_replay_says_which_rules_the_rollout_ran_under_and_how_to_use_them(tmp_path):
    rules = REPO / "rules" / "checkout.yaml"
    path = write(tmp_path / "rec.json", labelled(steady_recording(20), rules=str(rules)))
    result = run("replay", path, "--json")
    assert result.exit_code == 0, result.output
    err = plain(result.stderr)
    assert f"ran under {rules}" in err and f"--rules {rules}" in err, err
    # the labels are shown, never judged: the decision is the built-in policy's, as without the label
    assert json.loads(result.stdout) == json.loads(run("replay", write(tmp_path / "rec.json", steady_recording(20)),
                                                       "--json").stdout)


def test_replay_explain_shows_the_recorded_image(tmp_path):
    doc = labelled(steady_recording(20, canary_errors=30), image="registry.local/checkout:v2",
                   previous_image="registry.local/checkout:v1")
    result = run("replay", write(tmp_path / "rec.json", doc), "--explain")
    assert result.exit_code == 0, result.output
    text = plain(result.stdout)
    assert "to registry.local/checkout:v2" in text and "to recorded" not in text, text


def _drive(tmp_path: Path, canary_errors: int) -> dict:
    rec = steady_recording(30, canary_errors=canary_errors)
    clock = FakeClock(parse_start(rec["start"]))
    guard = Guard(SQLiteStore(":memory:"), RecordingSource(rec), RuleBook([]), lambda t: NoopActuator(), clock,
                  GuardConfig(evaluation_delay=0.0, catch_up_ticks=1, recordings_dir=tmp_path))
    state = guard.start(StartSpec(service="checkout", image="checkout:v2", strategy=Strategy.CANARY, steps=(50, 100),
                                  step_seconds=10, analysis_seconds=60, id="r1"))
    for t in range(30):
        clock.t = parse_start(rec["start"]) + (t + 1) * 10
        guard.tick(state.id)
    return json.loads((tmp_path / "r1.json").read_text())


@pytest.mark.parametrize(("canary_errors", "phase"), [(30, "rolled_back"), (0, "promoted")])
def test_the_written_recording_carries_the_final_phase_and_its_rules(tmp_path, canary_errors, phase):
    doc = _drive(tmp_path, canary_errors)
    assert doc["labels"]["phase"] == phase
    assert doc["labels"]["rules"] == DEFAULT_RULESET.source
