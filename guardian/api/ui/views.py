"""What the web UI shows, from the store's states, ticks and decisions (pure: no I/O; `now` passed in).

`list_row` is one line of the rollouts list; `rollout_data` everything a rollout's page plots and lists, in
compact columns (a rollout of 1,000 ticks is one array per signal and arm, one per check and field)."""
from __future__ import annotations

from typing import Any

from guardian.domain import Phase, RolloutState

SIGNAL_ORDER = ("requests", "errors", "slow", "p99_seconds", "cpu_seconds", "memory_bytes")
ACTIONS = ("pause", "resume", "promote", "rollback", "approve")


def version_of(image: str) -> str:
    """The tag of an image reference ("registry:5000/shop/checkout:v2" -> "v2"), else the reference."""
    tail = image.rsplit("/", 1)[-1]
    return tail.split(":", 1)[1] if ":" in tail else image


def allowed_actions(state: RolloutState) -> list[str]:
    """The actions the rollout's phase allows (the others are refused with 409 anyway)."""
    if state.phase.terminal:
        return []
    out = ["rollback"]
    out.append("resume" if state.phase is Phase.PAUSED else "pause")
    if state.strategy.value != "watch":
        out.append("promote")
    if state.awaiting_approval:
        out.append("approve")
    return [a for a in ACTIONS if a in out]


def list_row(state: RolloutState, latest: dict[str, Any] | None, now: float) -> dict[str, Any]:
    verdicts = (latest or {}).get("verdicts") or []
    return {
        "id": state.id, "service": state.service, "image": state.image, "version": version_of(state.image),
        "strategy": state.strategy.value, "phase": state.phase.value, "paused_by": state.paused_by,
        "step": f"{min(state.step_index + 1, len(state.steps))}/{len(state.steps)}" if state.steps else "-",
        "weight": state.weight, "time_in_step": None if state.phase.terminal else max(0.0, now - state.step_started_at),
        "verdicts": [{"check": v.get("check"), "result": v.get("result")} for v in verdicts],
        "reason": state.reason, "updated_at": state.updated_at, "created_at": state.created_at,
        "awaiting_approval": state.awaiting_approval,
    }


def _column(ticks: list[dict[str, Any]], signal: str, arm: str) -> list[float | None]:
    return [((t.get("values") or {}).get(signal) or {}).get(arm) for t in ticks]


def rollout_data(state: RolloutState, ticks: list[dict[str, Any]], decisions: list[dict[str, Any]],
                 alerts: list[dict[str, Any]], now: float) -> dict[str, Any]:
    times = [t.get("at") for t in ticks]
    signals = sorted({s for t in ticks for s in (t.get("values") or {})},
                     key=lambda s: (SIGNAL_ORDER.index(s) if s in SIGNAL_ORDER else len(SIGNAL_ORDER), s))
    series = {s: {"canary": _column(ticks, s, "canary"), "baseline": _column(ticks, s, "baseline")}
              for s in signals}
    series = {s: v for s, v in series.items() if any(x is not None for arm in v.values() for x in arm)}
    checks: dict[str, dict[str, list[Any]]] = {}
    for i, t in enumerate(ticks):
        for v in t.get("verdicts") or []:
            c = checks.setdefault(v["check"], {k: [None] * len(ticks) for k in (
                "value", "threshold", "sample_size", "result", "statistic", "reason")})
            for k in c:
                c[k][i] = v.get(k)
    steps = [{"weight": w, "approve": i in state.approvals, "approved": i in state.approved,
              "state": "done" if i < state.step_index or state.phase is Phase.PROMOTED else
              ("current" if i == state.step_index and not state.phase.terminal else "todo")}
             for i, w in enumerate(state.steps)]
    return {
        "rollout": {**list_row(state, ticks[-1] if ticks else None, now), "steps_detail": steps,
                    "actions": allowed_actions(state), "target": state.target, "rules": state.rules,
                    "bake_seconds": state.bake_seconds, "analysis_seconds": state.analysis_seconds},
        "times": times, "series": series, "checks": checks,
        "decisions": [{"tick": d.get("tick"), "at": d.get("at"), "action": d.get("action"),
                       "source": d.get("source"), "by": d.get("by"), "reason": d.get("reason"),
                       "verdicts": [v for v in d.get("verdicts") or [] if v.get("result") != "pass"],
                       "logs": d.get("logs") or [], "outcome": d.get("outcome")}
                      for d in decisions if d.get("action") != "continue"],
        "alerts": alerts,
    }
