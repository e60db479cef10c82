"""Replay recordings through the live engine: the same Guard, store, judges and policy; only the
source (a RecordingSource), the clock (a FakeClock) and the actuator (noop) differ.

Causal by construction: at tick t the guard can only have fetched ticks <= t. `labels` are never read.
"""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guardian.actuators.noop import NoopActuator
from guardian.clock import FakeClock
from guardian.domain import Action, Phase, Strategy
from guardian.engine.guard import Guard, GuardConfig, StartSpec
from guardian.engine.store import SQLiteStore
from guardian.errors import ModelMissing, RecordingError
from guardian.forecast_models import RecordedModels
from guardian.rules.loader import DEFAULT_RULESET, RuleSet
from guardian.sources.recording import RecordingSource, load_recording


class _Silent:
    def notify(self, event: dict[str, Any]) -> None:
        pass


class _FixedRules:
    def __init__(self, ruleset: RuleSet):
        self.ruleset = ruleset

    def for_service(self, service: str) -> RuleSet:
        return self.ruleset


@dataclass(frozen=True)
class ReplayResult:
    file: str
    decision: str  # "rollback" | "promote" | "pause"
    tick: int | None
    reason: str
    decisions: tuple[dict[str, Any], ...] = ()
    rollout: dict[str, Any] | None = None  # the replayed rollout's final state

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "decision": self.decision, "tick": self.tick, "reason": self.reason}


class _RecordedArms(NoopActuator):
    """The recording holds each arm by name: the kubernetes placeholders are stand-ins too."""

    def arm_values(self, state: Any) -> dict[str, str | None]:
        return {"pod_template_hash": "recorded", "previous_pod_template_hash": "recorded"}


def replay_recording(recording: dict[str, Any], name: str, ruleset: RuleSet = DEFAULT_RULESET) -> ReplayResult:
    source = RecordingSource(recording)
    clock = FakeClock(source.start)
    store = SQLiteStore(":memory:")
    noop = _RecordedArms()
    guard = Guard(store, source, _FixedRules(ruleset), lambda target: noop, clock,
                  GuardConfig(evaluation_delay=0.0, catch_up_ticks=1), notifier=_Silent(),
                  models=RecordedModels(recording.get("models")))
    horizon = source.ticks * source.step
    # the recording holds each arm by name, so arms whose label values follow the release ({version},
    # {previous_version}) are read all the same: both images are stand-ins
    state = guard.start(StartSpec(service=recording.get("service") or name, image="recorded", strategy=Strategy.OBSERVE,
                                  steps=(100,), step_seconds=source.step, analysis_seconds=horizon + source.step,
                                  id="replay", previous_image="recorded"))
    paused_at: int | None = None
    last_reason = ""
    for t in range(source.ticks):
        clock.t = source.start + (t + 1) * source.step
        decision = guard.tick(state.id)
        if decision is None:
            continue
        last_reason = decision.reason
        if decision.action is Action.ROLLBACK:
            return ReplayResult(name, "rollback", t, decision.reason, tuple(store.decisions(state.id)),
                                store.get(state.id).to_dict())
        if decision.action is Action.PAUSE:
            paused_at = t
    final = store.get(state.id)
    decisions = tuple(store.decisions(state.id))
    store.close()
    if final.phase is Phase.PAUSED:
        return ReplayResult(name, "pause", paused_at, final.reason or last_reason, decisions, final.to_dict())
    return ReplayResult(name, "promote", None, last_reason or "no check failed", decisions, final.to_dict())


def replay_file(path: Path, ruleset: RuleSet = DEFAULT_RULESET) -> ReplayResult:
    return replay_recording(load_recording(path), path.name, ruleset)


def _replay_or_error(path: Path, ruleset: RuleSet) -> ReplayResult | RecordingError:
    try:
        return replay_file(path, ruleset)
    except RecordingError as e:
        return e
    except ModelMissing as e:
        return RecordingError(f"{path.name}: models: {e}")


def replay_many(paths: list[Path], ruleset: RuleSet = DEFAULT_RULESET, *, workers: int | None = None):
    """Replay files in parallel processes (each recording is independent), yielding, in input order,
    a ReplayResult or the RecordingError that file raised."""
    workers = workers or os.cpu_count() or 1
    if workers <= 1 or len(paths) < 4:
        for p in paths:
            yield _replay_or_error(p, ruleset)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(_replay_or_error, paths, [ruleset] * len(paths), chunksize=4)
