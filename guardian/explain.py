"""Why a rollout ended as it did, in plain words. Pure: a rollout's state and its decision log in, an
explanation out (JSON for the API, text for the CLI and `guardian replay --explain`).

For each decision: what was done and who decided; which checks drove it (for a rollback or a pause,
the failing or inconclusive ones; for an advance or a promotion, every check, all passing), each
with its value against its threshold, the sample size and the statistic (for example the e-value
and the 1/α it was compared with); what the actuator did, or why it failed; and, when the decision
carries them, the log templates that are new in, or far more frequent in, the canary.
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

DROVE = {"rollback": ("fail",), "pause": ("fail", "inconclusive", "error"), "scale": ("fail",),
         "notify": ("fail",)}
DONE = {"start": "started", "advance": "advanced", "promote": "promoted", "rollback": "rolled back",
        "pause": "paused", "resume": "resumed", "scale": "scaled out", "notify": "notified"}
WHO = {"guardian": "the guardian", "user": "a user", "alertmanager": "an Alertmanager alert"}


def _num(x: Any) -> str:
    if x is None:
        return "—"
    if isinstance(x, float) and x != x:
        return "—"
    return f"{x:.4g}" if isinstance(x, (int, float)) else str(x)


def evidence_line(v: dict[str, Any]) -> str:
    """'errors-vs-baseline FAILED: value 180 vs threshold 1, 50 samples, e_value=186 (reject at 164 ...)'"""
    result = {"fail": "FAILED", "pass": "passed", "inconclusive": "inconclusive", "error": "error"}.get(
        v.get("result", ""), v.get("result", "?"))
    n = v.get("sample_size")
    parts = [f"value {_num(v.get('value'))} vs threshold {_num(v.get('threshold'))}"]
    if n is not None and n == n:
        parts.append(f"{n:g} samples")
    if v.get("statistic"):
        parts.append(str(v["statistic"]))
    line = f"{v.get('check')} {result}: " + ", ".join(parts)
    if v.get("result") in ("inconclusive", "error") and v.get("reason"):
        line += f" — {str(v['reason']).split(';')[0]}"
    return line


def _when(at: float | None, start: float | None) -> str:
    if at is None:
        return "?"
    clock = datetime.fromtimestamp(at).strftime("%H:%M:%S")
    return clock if start is None else f"{clock} (+{at - start:.0f}s)"


def explain_decision(d: dict[str, Any], start: float | None = None) -> dict[str, Any]:
    action = d.get("action", "?")
    verdicts = d.get("verdicts") or []
    drove_results = DROVE.get(action)
    drove = [v for v in verdicts if drove_results is None or v.get("result") in drove_results]
    drove.sort(key=lambda v: {"fail": 0, "error": 1, "inconclusive": 2, "pass": 3}.get(v.get("result"), 4))
    outcome = d.get("outcome")
    who = WHO.get(d.get("source", ""), d.get("source", "?"))
    words = f"{DONE.get(action, action)} by {who}"
    if outcome is not None:
        done = "done" if outcome.get("ok") else f"the actuator FAILED: {outcome.get('detail')}"
    else:
        done = "recorded"
    headline = f"{words} ({done})"
    if action in ("rollback", "pause") and drove:
        words += " because " + "; ".join(evidence_line(v) for v in drove[:3])
    elif action in ("advance", "promote", "resume") and verdicts:
        words += f": all {len(verdicts)} checks " + ("pass again" if action == "resume" else "passed")
        headline = f"{words} ({done})"
    if outcome is not None:
        words += (f". The actuator did it ({outcome.get('detail')})" if outcome.get("ok")
                  else f". The actuator FAILED: {outcome.get('detail')} (retried on the next tick)")
    return {
        "at": d.get("at"), "when": _when(d.get("at"), start), "tick": d.get("tick"), "action": action,
        "source": d.get("source"), "reason": d.get("reason", ""), "words": words, "headline": headline,
        "checks": [{**{k: v.get(k) for k in ("check", "result", "value", "threshold", "sample_size", "statistic",
                                               "action", "reason")}, "drove": v in drove} for v in verdicts],
        "outcome": outcome, "logs": d.get("logs") or [],
    }


def explain(rollout: dict[str, Any], decisions: Sequence[dict[str, Any]]) -> dict[str, Any]:
    start = rollout.get("created_at")
    timeline = [explain_decision(d, start) for d in decisions]
    phase = rollout.get("phase", "?")
    head = (f"Rollout {rollout.get('id')} of {rollout.get('service')} to {rollout.get('image')} "
            f"({rollout.get('strategy')}, steps {rollout.get('steps')})")
    final = next((t for t in reversed(timeline) if t["action"] in ("rollback", "promote")), None)
    if final is not None and phase in ("rolled_back", "promoted"):
        took = "" if final["at"] is None or start is None else f" {final['at'] - start:.0f} s after it started"
        summary = f"{head} was {DONE[final['action']]}{took}, {final['words'].split(' ', 2)[-1]}."
    else:
        last = timeline[-1]["words"] if timeline else "no decision yet"
        summary = f"{head} is {phase} at {rollout.get('weight')}%; last: {last}."
    logs = next((t["logs"] for t in reversed(timeline) if t["logs"]), [])
    return {"id": rollout.get("id"), "service": rollout.get("service"), "image": rollout.get("image"),
            "phase": phase, "summary": summary, "timeline": timeline, "logs": logs}


def render_text(e: dict[str, Any]) -> str:
    lines = [e["summary"], ""]
    for t in e["timeline"]:
        lines.append(f"{t['when']}  {t['action'].upper():<8} {t['headline']}")
        for c in t["checks"]:
            if c["drove"] and t["action"] in DROVE:
                lines.append(f"            - {evidence_line(c)}")
        for tpl in t["logs"][:5]:
            lines.append(f"            log: {tpl.get('canary_count')}x in canary vs {tpl.get('baseline_count')}x in "
                         f"baseline: {tpl.get('template')}  e.g. {tpl.get('example')!r}")
    return "\n".join(lines)
