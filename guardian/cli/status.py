"""How the `guardian` command shows a rollout to people (`rollout status|watch`, `rollout start --wait`).

A verdict is one line: its check, what it concluded in docs/rules.md's words (pass, fail, *hold* for a breach still
under its `for:`, *warming up*, inconclusive, abstains, error) and, for everything but a pass, why: the judge's
reason with its statistics left out. A pass says what was measured, rounded, with units where the signal tells
them (seconds, %, requests). Following a rollout (`Follower`) prints a line only when something changed: its
phase, step or weight, a verdict's result, or a new decision.

Everything here reads the API's JSON (GET /v1/rollouts/{id}); nothing here judges.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from guardian.judge.power import asked, headline

COLOURS = {"pass": "green", "fail": "red", "inconclusive": "yellow", "hold": "yellow", "warming up": "cyan",
           "abstains": "dim", "error": "magenta"}
MAX_REASON = 140  # characters of a reason shown on a verdict or decision line
_NUMBER = re.compile(r"(?<![\w.])-?\d+\.\d{4,}(?:e[-+]?\d+)?(?![\w.])")  # 0.0005263157894736842, 54.1937
_FLOAT = r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?"


# -- numbers for people -------------------------------------------------------------------------------------
def seconds(s: float) -> str:
    """0.2347 -> 235 ms, 1.5 -> 1.5 s, 90 -> 1 min 30 s."""
    if s != s:
        return "?"
    if abs(s) < 0.001:
        return f"{s * 1e6:.3g} µs" if s else "0 s"
    if abs(s) < 1:
        return f"{s * 1000:.3g} ms"
    if abs(s) < 60:
        return f"{s:.3g} s"
    m, rest = divmod(round(s), 60)
    if m < 60:
        return f"{m} min" + (f" {rest} s" if rest else "")
    h, m = divmod(m, 60)
    return f"{h} h" + (f" {m} min" if m else "")


def percent(x: float) -> str:
    """A ratio as a percentage: 0.05 -> 5%, 0.0123 -> 1.23%, 0.000526 -> 0.0526%, 0 -> 0%."""
    if x != x:
        return "?"
    return f"{x * 100:.3g}%"


def count(n: float) -> str:
    return f"{n:,.0f}" if n == n else "?"


def number(x: float) -> str:
    return f"{x:.3g}" if x == x else "?"


def byte_size(b: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(b) >= size:
            return f"{b / size:.3g} {unit}"
    return f"{b:.0f} B"


def round_numbers(text: str) -> str:
    """Long decimals in free text rounded to 3 significant digits (54.1937 -> 54.2)."""
    return _NUMBER.sub(lambda m: f"{float(m.group()):.3g}", text)


def unit_of(what: str) -> Callable[[float], str]:
    """How to show a value of the signal or ratio named in `what` (e.g. "errors / requests (canary)")."""
    name = what.split(" (")[0]
    if "/" in name:
        return percent
    if name.endswith("_seconds") or name.endswith("seconds"):
        return seconds
    if name.endswith("_bytes"):
        return byte_size
    if name in ("requests", "errors", "slow") or name.endswith("_total"):
        return count
    return number


# -- reasons ------------------------------------------------------------------------------------------------
def _top_level_split(text: str, sep: str = "; ") -> list[str]:
    """`text` split on `sep` outside parentheses."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(text):
        ch = text[i]
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth = max(0, depth - 1)
        elif depth == 0 and text.startswith(sep, i):
            parts.append(text[start:i])
            start = i + len(sep)
            i = start
            continue
        i += 1
    parts.append(text[start:])
    return parts


def shorten(reason: str, limit: int = MAX_REASON) -> str:
    """A judge's reason for people: its first clause (the statistics after '; ' left out), numbers rounded,
    at most `limit` characters."""
    text = round_numbers(_top_level_split(" ".join(reason.split()))[0].strip())
    text = re.sub(r" \((?:[^()]*; )?(?:wilson_\w+\([^)]*\)=[^)]*|last|sum over [^)]*)\)", "", text)  # statistics
    return text if len(text) <= limit else text[: limit - 1].rstrip(" ,;:") + "…"


# -- verdicts -----------------------------------------------------------------------------------------------
def label(v: dict[str, Any]) -> str:
    """What a verdict concluded, in docs/rules.md's words."""
    if v.get("result") == "inconclusive":
        if v.get("abstained"):
            return "abstains"
        if v.get("breaching"):
            return "hold"
        if v.get("warming_up"):
            return "warming up"
    return str(v.get("result"))


def _kind(v: dict[str, Any]) -> str:
    stat = v.get("statistic") or ""
    reason = v.get("reason") or ""
    if stat.startswith(("e_value", "level e_value")):
        return "rate" if " per " in reason else "sign"
    if stat.startswith(("p=hypergeometric", "p=sum of hypergeometric", "p=C(", "p=(1-share)")):  # the last two: older
        return "collapse"
    if stat.startswith("growth") or reason.startswith("canary/baseline "):
        return "trend"
    if stat.startswith(("wilson_", "last", "sum over")):
        return "threshold"
    return "other"


def _rate_facts(reason: str) -> str | None:
    m = re.search(rf"canary ({_FLOAT})/({_FLOAT}) (\w+) per (\w+) vs baseline ({_FLOAT})/({_FLOAT})", reason)
    if not m:
        return None
    k, n, what, per, kb, nb = m.groups()
    k, n, kb, nb = float(k), float(n), float(kb), float(nb)
    if n <= 0:
        return f"no canary {per} yet"
    base = percent(kb / nb) if nb > 0 else "no data"
    return f"canary {percent(k / n)} {what} vs baseline {base}, {count(n)} canary {per}"


def _sign_facts(v: dict[str, Any]) -> str | None:
    reason = v.get("reason") or ""
    m = re.search(rf"canary (\w+) above .*means ({_FLOAT}) vs ({_FLOAT})", reason)
    if not m:
        return None
    signal, canary, baseline = m.group(1), float(m.group(2)), float(m.group(3))
    show = unit_of(signal)
    limit = v.get("threshold")
    tail = f" (fails above {number(limit)}× baseline)" if isinstance(limit, int | float) else ""
    return f"canary {show(canary)} vs baseline {show(baseline)}{tail}"


def _threshold_facts(v: dict[str, Any]) -> str | None:
    reason, value, limit = v.get("reason") or "", v.get("value"), v.get("threshold")
    if value is None or " = " not in reason:
        return None
    what = reason.split(" = ")[0]
    show = unit_of(what)
    direction = "below" if re.search(r"\bbelow\b", reason) and not re.search(r"\babove\b", reason) else "above"
    text = f"{what} {show(value)}"
    if isinstance(limit, int | float):
        text += f" (fails {direction} {show(limit)})" if v.get("result") == "pass" else f", limit {show(limit)}"
    n = v.get("sample_size")
    if isinstance(n, int | float) and n == n and n > 0 and show is percent:
        text += f", {count(n)} requests"
    if v.get("breaching"):
        m = re.search(rf"for ({_FLOAT})s of the required ({_FLOAT})s", reason)
        text += (f": {direction} it for {seconds(float(m.group(1)))} of the {seconds(float(m.group(2)))} its "
                 "`for:` asks" if m else f": {direction} it, but not significantly yet")
    elif v.get("result") == "fail":
        m = re.search(rf"for ({_FLOAT})s", reason)
        text += f": {direction} it for {seconds(float(m.group(1)))}" if m else ""
    return text


def detail(v: dict[str, Any]) -> str:
    """Why a verdict is what it is, short: the measurement for a pass, the reason for anything else."""
    reason = v.get("reason") or ""
    kind = _kind(v)
    facts = None
    if v.get("result") == "pass":
        if kind == "rate":
            facts = _rate_facts(reason)
        elif kind == "sign":
            facts = _sign_facts(v)
        elif kind == "collapse":
            facts = "canary traffic steady" if "run of 0 ticks" in reason else None
        elif kind == "threshold":
            facts = _threshold_facts(v)
    elif kind == "threshold" and (v.get("breaching") or v.get("result") == "fail"):
        facts = _threshold_facts(v)
    elif v.get("warming_up"):
        facts = _rate_facts(reason) if kind == "rate" else None
        reason = re.sub(r"^(not enough [^:]*?) \((\d+)\):.*$", r"\1 (\2 ticks)", reason)  # sign: paired ticks
        reason = re.sub(r"^warming up \((.*)\)$", r"\1", reason).replace(": warming up: ", ": ")
    return (facts or shorten(reason) or "(no reason given)") + power_text(v)


def power_text(v: dict[str, Any]) -> str:
    """' · could have seen ×1.7 (80% power)', or ' · underpowered: could only have seen ×4.1, ×2 asked, ~2,300 more
    canary requests needed': what a passing check could have detected (judge/power.py), when it says."""
    said = v.get("detectable")
    if not said:
        return ""
    if v.get("powered") is not False:
        return f" · could have seen {headline(said)} (80% power)"
    need = said.rsplit(": ", 1)[-1] if said.rstrip().endswith(("needed", "noise", "traffic")) else ""
    wanted = asked(said)
    seen = headline(said)
    seen = "could not have seen any regression" if seen == "none" else f"could only have seen {seen}"
    return f" · underpowered: {seen}" + (f", {wanted} asked" if wanted else "") + (f", {need}" if need else "")


def verdict_line(v: dict[str, Any], markup: bool = True) -> str:
    said = label(v)
    head = f"{v.get('check')}: {said}"
    if markup:
        colour = COLOURS.get(said, "white")
        head = f"[{colour}]{_escape(head)}[/{colour}]"
    return f"{head} — {_escape(detail(v)) if markup else detail(v)}"


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


# -- the rollout --------------------------------------------------------------------------------------------
def phase_text(r: dict[str, Any]) -> str:
    phase, by = r.get("phase"), r.get("paused_by")
    if phase == "paused":
        who = {"guardian": "the guardian", "user": "a user", "alertmanager": "an alert"}.get(by or "", by or "?")
        return f"paused by {who}"
    return str(phase).replace("_", " ")


def step_text(r: dict[str, Any]) -> str:
    steps = r.get("steps") or []
    index = min(int(r.get("step_index") or 0) + 1, len(steps)) if steps else 0
    return f"step {index}/{len(steps)} at {r.get('weight')}%"


def state_line(r: dict[str, Any], *, time_left: bool = True) -> str:
    parts = [f"{r['id']} {r['service']}", phase_text(r)]
    if r.get("bake_tick") is not None and r.get("phase") not in ("promoted", "rolled_back"):
        parts.append(f"baking at 100% for {seconds(r.get('bake_seconds') or 0)}, the previous version warm")
        if time_left and r.get("bake_left") is not None:
            parts.append(f"{seconds(r['bake_left'])} of passing ticks left")
        return " · ".join(parts)
    parts.append(step_text(r))
    if approval := approval_text(r):
        parts.append(approval)
        return " · ".join(parts)
    left = r.get("time_left_in_step")
    if time_left and left is not None:
        parts.append(f"{seconds(left)} left in step")
    return " · ".join(parts)


def approval_text(r: dict[str, Any]) -> str | None:
    """'waiting for approval (guardian rollout approve ID)' while the current step's end waits for a human go."""
    if not r.get("awaiting_approval"):  # RolloutState.awaiting_approval, in the API's view
        return None
    return f"waiting for approval (guardian rollout approve {r['id']})"


def decision_text(d: dict[str, Any]) -> str:
    """A decision in one line: its action, who took it, and its reason without the verdicts' details (which
    the verdict lines show), e.g. "advance (guardian): all checks passed for 30s at 25%"."""
    reason = " ".join((d.get("reason") or "").split())
    checks = [v.get("check") for v in d.get("verdicts") or [] if v.get("check")]
    named = [c for c in checks if f"{c}: " in reason]
    cut = min((reason.find(f": {c}: ") for c in named if f": {c}: " in reason), default=-1)
    if cut > 0:
        reason = reason[:cut]
    elif named and any(reason.startswith(f"{c}: ") for c in named):
        reason = "because of " + ", ".join(sorted(set(named), key=reason.find))
    limit = 2 * MAX_REASON if "80% power" in reason else MAX_REASON  # a statement of power names every check
    text = f"{d.get('action')} ({d.get('source')}): {shorten(reason, limit)}"
    outcome = d.get("outcome")
    if outcome and not outcome.get("ok"):
        text += f" — FAILED: {shorten(str(outcome.get('detail')))}"
    return text


def short_reason(r: dict[str, Any]) -> str:
    """The rollout's reason (its last decision's) without the verdicts' details."""
    decisions = r.get("decisions") or []
    if decisions and decisions[-1].get("reason") == r.get("reason"):
        return decision_text(decisions[-1]).split(": ", 1)[1]
    return shorten(r.get("reason") or "")


class Follower:
    """The lines to print as a rollout is followed: only what changed since the last look."""

    def __init__(self) -> None:
        self.state: tuple[Any, ...] | None = None
        self.verdicts: dict[str, tuple[Any, ...]] = {}
        self.decisions = 0

    def lines(self, r: dict[str, Any], now: datetime | None = None) -> list[str]:
        stamp = (now or datetime.now()).strftime("%H:%M:%S")
        lines = []
        for d in (r.get("decisions") or [])[self.decisions:]:
            lines.append(f"{stamp} → [bold]{_escape(d.get('action', ''))}[/bold]"
                         f"{_escape(decision_text(d)[len(str(d.get('action'))):])}")
        self.decisions = len(r.get("decisions") or [])
        state = (r.get("phase"), r.get("paused_by"), r.get("step_index"), r.get("weight"))
        if state != self.state:
            self.state = state
            if r.get("phase") not in ("promoted", "rolled_back"):  # the end has its own line
                analysis = r.get("analysis_seconds")
                per_step = f" · {seconds(analysis)} a step" if analysis and r.get("phase") == "progressing" else ""
                lines.append(f"{stamp} {_escape(state_line(r, time_left=False))}{per_step}")
        for v in r.get("verdicts") or []:
            key = (v.get("result"), v.get("breaching"), v.get("warming_up"), v.get("abstained"))
            if self.verdicts.get(v.get("check")) != key:
                self.verdicts[v.get("check")] = key
                lines.append(f"{stamp}   {verdict_line(v)}")
        return lines
