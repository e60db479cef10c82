"""Before a user's rollout starts: are the signals its policy reads there at all? (`guardian/sources/doctor.py`
does the asking.) The baseline runs already, so every signal it lacks is a configuration problem a rollout
could never get past (a label mismatch, a histogram without the objective's bucket); the canary is checked
too when it runs already (strategy `observe`), else it is pending until it does.

`preflight` returns None when the source cannot be asked about its series (a recording, a test stub).
"""
from __future__ import annotations

from typing import Any

from guardian.domain import RolloutState, Strategy
from guardian.engine.guard import StartSpec, arm_selectors
from guardian.sources.doctor import Finding, examine


def preflight(rulebook: Any, source: Any, spec: StartSpec, now: float) -> list[Finding] | None:
    """The findings for the signals `spec`'s policy reads; None when `source` cannot be introspected."""
    if not (callable(getattr(source, "instant_result", None)) and callable(getattr(source, "render", None))):
        return None
    ruleset = rulebook.for_service(spec.service)
    draft = RolloutState(id="preflight", service=spec.service, image=spec.image, strategy=spec.strategy,
                         steps=spec.steps, target=spec.target, step_seconds=spec.step_seconds,
                         analysis_seconds=spec.analysis_seconds, created_at=now, previous_image=spec.previous_image)
    selectors, unresolved = arm_selectors(ruleset.rules.arms, draft)
    return examine(source, ruleset, spec.service, selectors, now, values=False,
                   canary_deployed=spec.strategy is Strategy.OBSERVE, unresolved=unresolved)


def summary(findings: list[Finding]) -> str:
    """The blocking findings in one paragraph, for an error or a pause reason."""
    blocking = [f for f in findings if f.blocking]
    return "; ".join(f"{f.signal} ({f.arm}, read by {', '.join(f.checks)}): {f.detail}" for f in blocking)


__all__ = ["preflight", "summary"]
