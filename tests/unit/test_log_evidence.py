"""Log evidence on a failing decision: the guard asks the actuator for the arms' logs (`arm_logs`),
mines them, and attaches the canary's new templates to the rollback; a slow or broken log source
costs at most `log_seconds` and never the action."""
from __future__ import annotations

import time

from guardian.actuators.noop import NoopActuator
from guardian.clock import FakeClock
from guardian.domain import Phase
from guardian.engine.guard import Guard, GuardConfig
from guardian.engine.store import SQLiteStore
from guardian.sources.recording import RecordingSource
from tests.fixtures.driving import drive
from tests.unit.test_guard import START, recording, rules, spec  # noqa: F401

ACCESS = [f'2026-11-28T10:00:{i % 60:02d}.000Z INFO 10.0.0.{i % 9} "GET /cart/{i}" 200 {i % 7}.3ms '
          f"request_id={i:016x}".encode() for i in range(300)]
FAULT = [f"2026-11-28T10:01:{i:02d}.000Z ERROR inventory reservation failed: upstream timeout after {900 + i}ms "
         f"order={10000 + i}".encode() for i in range(20)]


class LoggingActuator(NoopActuator):
    def __init__(self, delay: float = 0.0, broken: bool = False):
        super().__init__()
        self.delay, self.broken, self.asked = delay, broken, []

    def arm_logs(self, request, *, since):
        self.asked.append((request.action.value, since))
        time.sleep(self.delay)
        if self.broken:
            raise OSError("docker logs: connection reset")
        return {"canary": ACCESS[:150] + FAULT + [b"\xff\xfe\x00garbage"], "baseline": ACCESS[150:]}


def guard_with(actuator, rules, log_seconds=2.0):  # noqa: F811
    clock = FakeClock(START)
    rec = recording(40, error_ratio=lambda t: 0.5 if t >= 3 else 0.0)
    g = Guard(SQLiteStore(":memory:"), RecordingSource(rec), rules, lambda target: actuator, clock,
              GuardConfig(evaluation_delay=0.5, log_seconds=log_seconds))
    return g, clock


def test_the_rollback_carries_the_canarys_new_log_templates(rules):  # noqa: F811
    actuator = LoggingActuator()
    g, clock = guard_with(actuator, rules)
    state = g.start(spec())
    drive(g, clock, state.id, 40, 2.0)
    assert g.store.get(state.id).phase is Phase.ROLLED_BACK
    rollback = g.store.decisions(state.id)[-1]
    top = rollback["logs"][0]
    assert "inventory reservation failed" in top["template"]
    assert top["canary_count"] == 20 and top["baseline_count"] == 0 and top["example"].startswith("2026")
    assert actuator.asked and actuator.asked[0][0] == "rollback"


def test_a_slow_or_broken_log_source_costs_little_and_never_the_rollback(rules):  # noqa: F811
    for actuator in (LoggingActuator(delay=5.0), LoggingActuator(broken=True)):
        g, clock = guard_with(actuator, rules, log_seconds=0.3)
        state = g.start(spec())
        began = time.monotonic()
        drive(g, clock, state.id, 40, 2.0)
        assert time.monotonic() - began < 3
        assert g.store.get(state.id).phase is Phase.ROLLED_BACK
        assert "logs" not in g.store.decisions(state.id)[-1]


def test_the_notifier_and_the_report_get_the_log_evidence(rules, tmp_path):  # noqa: F811
    from guardian.reporting.explain import explain
    from guardian.reporting.report import render

    seen = []
    actuator = LoggingActuator()
    g, clock = guard_with(actuator, rules)
    g.notifier = type("N", (), {"notify": lambda self, e: seen.append(e)})()
    state = g.start(spec())
    drive(g, clock, state.id, 40, 2.0)
    rollback = [e for e in seen if e["action"] == "rollback"][-1]
    assert "inventory reservation failed" in rollback["logs"][0]["template"]
    recording_ = g.store.recording(state.id)
    e = explain(g.store.get(state.id).to_dict(), g.store.decisions(state.id))
    assert "inventory reservation failed" in e["logs"][0]["template"]
    out = render(recording_, e, tmp_path / "r.html")
    assert "inventory reservation failed" in out.read_text()
    assert render(recording_, e, tmp_path / "r.png").stat().st_size > 10_000
