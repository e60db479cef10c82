"""Before a user's rollout starts: are the signals its policy reads there at all? (`guardian/sources/doctor.py`
does the asking.) The baseline runs already, so every signal it lacks is a configuration problem a rollout
could never get past (a label mismatch, a histogram without the objective's bucket); the canary is checked
too when it runs already (strategy `observe`), else it is pending until it does.

Every store is examined (Prometheus and VictoriaMetrics by the signal's PromQL; InfluxDB, CloudWatch and Datadog by
their own metadata and queries: sources/doctor_<store>.py); `preflight` returns None when the source is none of them
(a recording, a test stub). A service whose store is not configured, or does not answer, is `unavailable`: it does
not refuse the start (its ticks pause on it), `guardian doctor` exits 2 on it.
"""
from __future__ import annotations

from typing import Any

from guardian.domain import ARMS, RolloutState, Strategy
from guardian.engine.arms import arm_selectors
from guardian.engine.start import StartSpec
from guardian.errors import SourceUnavailable
from guardian.sources import ArmSelector
from guardian.sources.doctor import Examiner, Finding, Unreachable, examine
from guardian.sources.doctor_stores import examiner_for


def _examiner(source: Any, service: str) -> Examiner | None:
    """The examiner of the service's store; `Unreachable` when its rule file names a store that is not configured."""
    try:
        return examiner_for(source, service)
    except SourceUnavailable as e:
        return Unreachable(str(e))


def preflight(rulebook: Any, source: Any, spec: StartSpec, now: float) -> list[Finding] | None:
    """The findings for the signals `spec`'s policy reads; None when `source` cannot be examined."""
    examiner = _examiner(source, spec.service)
    if examiner is None:
        return None
    ruleset = rulebook.for_service(spec.service)
    draft = RolloutState(id="preflight", service=spec.service, image=spec.image, strategy=spec.strategy,
                         steps=spec.steps, target=spec.target, step_seconds=spec.step_seconds,
                         analysis_seconds=spec.analysis_seconds, created_at=now, previous_image=spec.previous_image)
    selectors, unresolved = arm_selectors(ruleset.rules.arms, draft)
    return examine(examiner, ruleset, spec.service, selectors, now, values=False,
                   canary_deployed=spec.strategy is Strategy.OBSERVE, unresolved=unresolved)


def checkup(rulebook: Any, source: Any, service: str, now: float, *, window: float = 60.0,
            arm_values: dict[str, str] | None = None) -> dict[str, Any]:
    """`guardian doctor SERVICE`: every signal its policy reads, for both arms, with values over `window`.
    `arm_values` ({"canary": "v2", …}) name the arms' label values where the rule file's follow the release.
    The report names the store asked (`store`), what is wrong with the store itself (`notes`), whether a signal a
    check needs is missing (`blocking`) and whether the store could not be asked about one (`unavailable`). Raises
    TypeError for a source that cannot be examined."""
    ruleset = rulebook.for_service(service)
    arms = ruleset.rules.arms
    selectors: dict[str, ArmSelector] = {}
    unresolved: dict[str, str] = {}
    for arm in ARMS:
        value = (arm_values or {}).get(arm) or (None if arms.placeholders(arm) else getattr(arms, arm))
        if value:
            selectors[arm] = ArmSelector(arm, arms.label, value)
        else:
            unresolved[arm] = (f"the {arm}'s {arms.label} value follows the release ({getattr(arms, arm)}): name it "
                               f"with --{arm} VALUE")
    examiner = _examiner(source, service)
    if examiner is None:
        raise TypeError(f"{type(source).__name__} cannot be asked about its series")
    findings = examine(examiner, ruleset, service, selectors, now, window=window, unresolved=unresolved)
    try:
        notes = examiner.notes()
    except SourceUnavailable:
        notes = []
    return {"service": service, "rules": ruleset.source, "store": examiner.describe(), "arm_label": arms.label,
            "arms": {a: s.label_value for a, s in selectors.items()}, "window_seconds": window,
            "blocking": any(f.blocking for f in findings),
            "unavailable": any(f.status == "unavailable" and f.gating for f in findings), "notes": notes,
            "findings": [f.to_dict() for f in findings]}


def summary(findings: list[Finding]) -> str:
    """The blocking findings in one paragraph, for an error or a pause reason."""
    blocking = [f for f in findings if f.blocking]
    return "; ".join(f"{f.signal} ({f.arm}, read by {', '.join(f.checks)}): {f.detail}" for f in blocking)


__all__ = ["checkup", "preflight", "summary"]
