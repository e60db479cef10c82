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

from guardian.domain import Action, Result, Verdict
from guardian.judge.policy import UNDERPOWERED, power_said, weak

DROVE = {"rollback": ("fail",), "pause": ("fail", "inconclusive", "error"), "scale": ("fail",),
         "notify": ("fail",)}
DONE = {"start": "started", "advance": "advanced", "bake": "began its bake", "promote": "promoted",
        "rollback": "rolled back",
        "pause": "paused", "resume": "resumed", "scale": "scaled out", "notify": "notified",
        "approval": "waited for approval", "approve": "approved"}
WHO = {"guardian": "the guardian", "user": "a user", "alertmanager": "an Alertmanager alert",
       "replay": "the replay"}
MOVES = ("start", "advance", "bake", "promote", "rollback")  # the actions that change the canary's weight


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
    if v.get("detectable"):  # what a passing rate or sign test could have seen (judge/power.py)
        line += f" — {v['detectable']}"
    return line


def _when(at: float | None, start: float | None) -> str:
    if at is None:
        return "?"
    clock = datetime.fromtimestamp(at).strftime("%H:%M:%S")
    return clock if start is None else f"{clock} (+{at - start:.0f}s)"


def _all_passed(verdicts: list[dict[str, Any]], action: str) -> str:
    """': all 2 checks passed (memory-leak abstained)': abstaining checks are named, not counted as passes."""
    abstained = [str(v.get("check")) for v in verdicts if v.get("abstained")]
    judged = len(verdicts) - len(abstained)
    text = f": all {judged} check{'' if judged == 1 else 's'} " + ("pass again" if action == "resume" else "passed")
    return text + (f" ({', '.join(abstained)} abstained)" if abstained else "")


def _power(verdicts: list[dict[str, Any]]) -> str:
    """', powered (could have detected with 80% power: errors-vs-baseline ×1.7, …)', or ', underpowered (…)': what
    the checks of a decision that went on could have seen (judge/power.py); '' when they did not say."""
    try:
        said = [Verdict(str(v.get("check")), Result(v.get("result")), "", action=Action(v.get("action", "rollback")),
                        detectable=v.get("detectable"), powered=v.get("powered")) for v in verdicts
                if v.get("detectable")]
    except ValueError:
        return ""
    text = power_said(said)
    return f", {UNDERPOWERED if weak(said) else 'powered'} (could have detected with 80% power: {text})" if text else ""


def explain_decision(d: dict[str, Any], start: float | None = None,
                     weights: tuple[int, int] | None = None) -> dict[str, Any]:
    """One decision in words. `weights`: the canary's traffic percent before and after it (START, ADVANCE,
    PROMOTE, ROLLBACK), shown as "10% → 25%"."""
    action = d.get("action", "?")
    verdicts = d.get("verdicts") or []
    drove_results = DROVE.get(action)
    drove = [v for v in verdicts if drove_results is None or v.get("result") in drove_results]
    drove.sort(key=lambda v: {"fail": 0, "error": 1, "inconclusive": 2, "pass": 3}.get(v.get("result"), 4))
    outcome = d.get("outcome")
    who = WHO.get(d.get("source", ""), d.get("source", "?"))
    moved = "" if weights is None else (f" at {weights[1]}%" if weights[0] == weights[1] else
                                        f" {weights[0]}% → {weights[1]}%")
    if outcome is not None:
        done = "done" if outcome.get("ok") else f"the actuator FAILED: {outcome.get('detail')}"
    else:
        done = "at the end of the recording" if d.get("source") == "replay" else "recorded"
    why = ""
    if action in ("rollback", "pause") and drove:
        why = " because " + "; ".join(evidence_line(v) for v in drove[:3])
    elif action == "pause" and str(d.get("reason", "")).startswith(UNDERPOWERED):  # every check passed, too weakly
        why = f" because its checks passed without the power to see a regression: {d['reason']}"
    elif action in ("advance", "bake", "promote", "resume") and verdicts:
        why = _all_passed(verdicts, action) + _power(verdicts)
    done_words = "scaled in" if action == "scale" and (d.get("replicas") or 0) < 0 else DONE.get(action, action)
    words = f"{done_words}{moved} by {who}"
    headline = f"{words}{why if action != 'rollback' and action != 'pause' else ''} ({done})"
    words += why
    actuator = ""
    if outcome is not None:
        actuator = (f". The actuator did it ({outcome.get('detail')})" if outcome.get("ok")
                    else f". The actuator FAILED: {outcome.get('detail')} (retried on the next tick)")
    words += actuator
    return {
        "at": d.get("at"), "when": _when(d.get("at"), start), "tick": d.get("tick"), "action": action,
        "source": d.get("source"), "reason": d.get("reason", ""), "words": words, "headline": headline,
        "who": who, "why": why, "actuator": actuator,
        "weights": None if weights is None else {"from": weights[0], "to": weights[1]},
        "checks": [{**{k: v.get(k) for k in ("check", "result", "value", "threshold", "sample_size", "statistic",
                                               "action", "reason", "detectable", "powered", "needed")},
                    "drove": v in drove} for v in verdicts],
        "outcome": outcome, "logs": d.get("logs") or [],
    }


def _weights(rollout: dict[str, Any], decisions: Sequence[dict[str, Any]]) -> list[tuple[int, int] | None]:
    """The canary's weight before and after each decision that moves it (None for the others, and for an
    `observe` rollout, whose traffic someone else moves). A failed action moves nothing."""
    steps = list(rollout.get("steps") or [])
    if not steps or rollout.get("strategy") == "observe":
        return [None] * len(decisions)
    weight, index, out = 0, -1, []
    for d in decisions:
        action = d.get("action")
        if action not in MOVES:
            out.append(None)
            continue
        after_index = {"start": 0, "advance": min(index + 1, len(steps) - 1)}.get(action, index)
        after = {"promote": 100, "bake": 100, "rollback": 0}.get(action, steps[max(after_index, 0)])
        out.append((weight, after))
        if (d.get("outcome") or {"ok": True}).get("ok"):
            weight, index = after, after_index
    return out


def explain(rollout: dict[str, Any], decisions: Sequence[dict[str, Any]], *, head: str | None = None) -> dict[str, Any]:
    """The story of a rollout. `head` names it in the summary (default "Rollout ID of SERVICE to IMAGE
    (STRATEGY, steps [...])")."""
    start = rollout.get("created_at")
    timeline = [explain_decision(d, start, w) for d, w in zip(decisions, _weights(rollout, decisions), strict=True)]
    phase = rollout.get("phase", "?")
    if rollout.get("strategy") == "watch":
        return _explain_watch(rollout, timeline, head)
    head = head or (f"Rollout {rollout.get('id')} of {rollout.get('service')} to {rollout.get('image')} "
                    f"({rollout.get('strategy')}, steps {rollout.get('steps')})")
    final = next((t for t in reversed(timeline) if t["action"] in ("rollback", "promote")), None)
    if final is not None and phase in ("rolled_back", "promoted"):
        took = "" if final["at"] is None or start is None else f" {final['at'] - start:.0f} s after it started"
        why = ("," + final["why"]) if final["why"].startswith(" because") else final["why"]
        summary = f"{head} was {DONE[final['action']]} by {final['who']}{took}{why}{final['actuator']}."
    else:
        last = timeline[-1]["words"] if timeline else "no decision yet"
        summary = f"{head} is {phase} at {rollout.get('weight')}%; last: {last}."
    return _explained(rollout, phase, summary, timeline)


def _explained(rollout: dict[str, Any], phase: str, summary: str, timeline: list[dict[str, Any]]) -> dict[str, Any]:
    """The explanation of a rollout or a watch: its summary, its timeline and the last log evidence."""
    logs = next((t["logs"] for t in reversed(timeline) if t["logs"]), [])
    return {"id": rollout.get("id"), "service": rollout.get("service"), "image": rollout.get("image"),
            "phase": phase, "summary": summary, "timeline": timeline, "logs": logs}


def _explain_watch(rollout: dict[str, Any], timeline: list[dict[str, Any]], head: str | None) -> dict[str, Any]:
    """A watch's story (engine/watches.py): what ran, the suspect, the replicas, and every scaling, notice and
    rollback with its reason (which names the suspect within the attribution window)."""
    for t in timeline:
        if t["action"] in ("scale", "notify") and t["reason"]:
            t["headline"] = f"{t['headline']}: {t['reason']}"
            t["words"] = f"{t['words']}: {t['reason']}"
    suspect = f", promoted by rollout {rollout['suspect']}" if rollout.get("suspect") else ""
    head = head or (f"Watch {rollout.get('id')} of {rollout.get('service')} (running "
                    f"{rollout.get('image') or 'a version not known'}{suspect})")
    phase = rollout.get("phase", "?")
    replicas = rollout.get("replicas")
    count = "" if replicas is None else f" with {replicas} replica(s)" + (
        "" if rollout.get("replicas_reported") else " (tracked: the actuator has not reported them)")
    final = next((t for t in reversed(timeline) if t["action"] == "rollback"), None)
    if phase == "rolled_back" and final is not None:
        summary = f"{head} rolled it back: {final['reason']}{final['actuator']}."
    elif phase == "ended":
        summary = f"{head} {rollout.get('reason') or 'ended'}{count}."
    else:
        last = timeline[-1]["words"] if timeline else "no decision yet"
        summary = f"{head} is {'watching' if phase == 'progressing' else phase}{count}; last: {last}."
    return _explained(rollout, phase, summary, timeline)


def render_text(e: dict[str, Any]) -> str:
    return "\n".join([e["summary"], "", *render_timeline(e).splitlines()])


def render_timeline(e: dict[str, Any]) -> str:
    """The decisions, one line each (with the checks that drove a rollback or a pause, and log templates)."""
    lines: list[str] = []
    width = max((len(t["when"]) for t in e["timeline"]), default=0)
    for t in e["timeline"]:
        lines.append(f"{t['when']:<{width}}  {t['action'].upper():<8} {t['headline']}")
        for c in t["checks"]:
            if c["drove"] and t["action"] in DROVE:
                lines.append(f"            - {evidence_line(c)}")
        for tpl in t["logs"][:5]:
            lines.append(f"            log: {tpl.get('canary_count')}x in canary vs {tpl.get('baseline_count')}x in "
                         f"baseline: {tpl.get('template')}  e.g. {tpl.get('example')!r}")
    return "\n".join(lines)
