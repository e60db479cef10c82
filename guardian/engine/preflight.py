"""Before a user's rollout starts: are the signals its policy reads there at all? (`guardian/sources/doctor.py`
does the asking.) The baseline runs already, so every signal it lacks is a configuration problem a rollout
could never get past (a label mismatch, a histogram without the objective's bucket); the canary is checked
too when it runs already (strategy `observe`), else it is pending until it does.

`preflight` returns None when the source cannot be asked about its series (a recording, a test stub).
"""
from __future__ import annotations

from typing import Any

from guardian.domain import ARMS, RolloutState, Strategy
from guardian.engine.arms import arm_selectors
from guardian.engine.start import StartSpec
from guardian.sources import ArmSelector, Introspectable, Routing
from guardian.sources.doctor import Finding, examine


def preflight(rulebook: Any, source: Any, spec: StartSpec, now: float) -> list[Finding] | None:
    """The findings for the signals `spec`'s policy reads; None when `source` cannot be introspected."""
    if isinstance(source, Routing):  # several stores: the one this service's rule file reads
        source = source.for_service(spec.service)
    if not isinstance(source, Introspectable):
        return None
    ruleset = rulebook.for_service(spec.service)
    draft = RolloutState(id="preflight", service=spec.service, image=spec.image, strategy=spec.strategy,
                         steps=spec.steps, target=spec.target, step_seconds=spec.step_seconds,
                         analysis_seconds=spec.analysis_seconds, created_at=now, previous_image=spec.previous_image)
    selectors, unresolved = arm_selectors(ruleset.rules.arms, draft)
    return examine(source, ruleset, spec.service, selectors, now, values=False,
                   canary_deployed=spec.strategy is Strategy.OBSERVE, unresolved=unresolved)


def checkup(rulebook: Any, source: Any, service: str, now: float, *, window: float = 60.0,
            arm_values: dict[str, str] | None = None) -> dict[str, Any]:
    """`guardian doctor SERVICE`: every signal its policy reads, for both arms, with values over `window`.
    `arm_values` ({"canary": "v2", …}) name the arms' label values where the rule file's follow the release."""
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
    if isinstance(source, Routing):
        source = source.for_service(service)
    if not isinstance(source, Introspectable):
        raise TypeError(f"{type(source).__name__} cannot be asked about its series")
    findings = examine(source, ruleset, service, selectors, now, window=window, unresolved=unresolved)
    return {"service": service, "rules": ruleset.source, "arm_label": arms.label,
            "arms": {a: s.label_value for a, s in selectors.items()}, "window_seconds": window,
            "blocking": any(f.blocking for f in findings), "findings": [f.to_dict() for f in findings]}


def summary(findings: list[Finding]) -> str:
    """The blocking findings in one paragraph, for an error or a pause reason."""
    blocking = [f for f in findings if f.blocking]
    return "; ".join(f"{f.signal} ({f.arm}, read by {', '.join(f.checks)}): {f.detail}" for f in blocking)


__all__ = ["checkup", "preflight", "summary"]
