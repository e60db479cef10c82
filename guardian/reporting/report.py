"""A picture of one rollout: per-arm error ratio, slow ratio and P99, and the canary's share of the
traffic, tick by tick, with every decision marked and the final one named; as a PNG, or as one
self-contained HTML page holding that PNG and the plain-words explanation (guardian/reporting/explain.py).

    render(recording, explanation, Path("rollout.html"))   # or .png

`recording` is the rollout as guardian-recording/v1 (GET /v1/rollouts/{id}/recording); the plot
reads its `series`, `start` and `step_seconds`, so recordings of any source draw the same, and the
limits of the checks it ran under (`labels.rules`: the built-in default policy, or a rule file this
machine can read) are drawn on their panels. The x axis counts seconds since the rollout started (its
START decision): with aligned ticks its first tick begins a few seconds later. Every panel starts at 0,
so a flat P99 is shown flat rather than as magnified noise.
"""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from guardian.sources.recording import parse_start

if TYPE_CHECKING:
    from guardian.rules.models import RuleFile

COLOURS = {"rollback": "#d62728", "promote": "#2ca02c", "pause": "#ff7f0e", "resume": "#1f77b4",
           "advance": "#1f77b4", "start": "#7f7f7f", "scale": "#9467bd", "notify": "#8c564b",
           "approval": "#bcbd22", "approve": "#17becf"}
ARM_STYLE = {"canary": {"color": "#d62728", "label": "canary"}, "baseline": {"color": "#1f77b4", "label": "baseline"}}


def _series(recording: dict[str, Any], signal: str, arm: str) -> np.ndarray:
    values = (recording.get("series") or {}).get(signal, {}).get(arm) or []
    return np.array([np.nan if v is None else float(v) for v in values], dtype=float)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    n = min(len(num), len(den))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den[:n] > 0, num[:n] / den[:n], np.nan)


PANELS = (("error ratio", "errors / requests"), ("slow ratio", "slow / requests"), ("P99 (s)", "p99_seconds"))


def rules_of(recording: dict[str, Any]) -> RuleFile | None:
    """The rules the recording's rollout ran under (`labels.rules`), when known here: the built-in default
    policy, or a rule file this machine can read. None otherwise (the picture is drawn without limits)."""
    from guardian.errors import RuleError
    from guardian.rules.defaults import DEFAULT_RULES
    from guardian.rules.loader import DEFAULT_RULESET, parse_text

    source = (recording.get("labels") or {}).get("rules")
    if not isinstance(source, str) or not source:
        return None
    if source in (DEFAULT_RULESET.source, "default"):
        return DEFAULT_RULES
    try:
        return parse_text(Path(source).read_text(encoding="utf-8"), source)
    except (OSError, UnicodeDecodeError, RuleError):
        return None


def _limits(rules: RuleFile | None, reads: str) -> list[tuple[str, float | None, float | None]]:
    """(label, absolute limit, factor of the baseline) of each check that judges `reads` ('errors / requests',
    'p99_seconds')."""
    out: list[tuple[str, float | None, float | None]] = []
    for check in rules.checks if rules is not None else []:
        if " / ".join(check.signals) != reads or getattr(check, "arm", "canary") != "canary":
            continue
        if check.kind == "threshold":
            shown = f"{check.limit:.3g}s" if reads == "p99_seconds" else f"{check.limit:.3g}"
            if " / " in reads:
                shown = f"{check.limit * 100:.3g}%"
            out.append((f"{check.name}: fails {check.direction} {shown}", check.limit, None))
        elif check.kind == "compare" and check.kind_of_test in ("rate", "sign"):
            factor = check.effective_tolerance if check.kind_of_test == "rate" else 1 + check.effective_tolerance
            out.append((f"{check.name}: canary worse than {factor:.3g}× baseline (sequential test)", None, factor))
    return out


def _top(*arrays: np.ndarray | float | None) -> float:
    values = [np.asarray(a, dtype=float).ravel() for a in arrays if a is not None]
    finite = np.concatenate(values) if values else np.array([])
    finite = finite[np.isfinite(finite)]
    top = float(finite.max()) if finite.size else 0.0
    return top * 1.15 if top > 0 else 1.0


def figure_png(recording: dict[str, Any], explanation: dict[str, Any], rules: RuleFile | None = None) -> bytes:
    """The picture as PNG bytes. `rules`: the checks whose limits are drawn (default: `rules_of(recording)`)."""
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import PercentFormatter

    rules = rules if rules is not None else rules_of(recording)
    step = float(recording.get("step_seconds") or 1.0)
    start = parse_start(recording["start"]) if recording.get("start") else 0.0
    timeline = [t for t in explanation.get("timeline", []) if t.get("at") is not None]
    began = next((t["at"] for t in timeline if t["action"] == "start"), None)
    origin = min(start, began) if began is not None else start  # x = 0: the rollout's start
    offset = start - origin

    def xs(n: int) -> np.ndarray:  # tick t covers [t, t+1) steps: one more edge than values, for steps-post
        return offset + np.arange(n + 1) * step

    def stepped(y: np.ndarray) -> np.ndarray:
        return np.append(y, y[-1:]) if len(y) else y

    def per_request(signal: str):
        return lambda arm: _ratio(_series(recording, signal, arm), _series(recording, "requests", arm))

    getters = [per_request("errors"), per_request("slow"), lambda arm: _series(recording, "p99_seconds", arm)]
    fig, axes = plt.subplots(4, 1, figsize=(10, 9.5), sharex=True)
    for ax, (title, reads), get in zip(axes, PANELS, getters, strict=False):
        drawn = []
        for arm, style in ARM_STYLE.items():
            y = get(arm)
            drawn.append(y)
            if len(y):
                ax.plot(xs(len(y)), stepped(y), drawstyle="steps-post", **style)
        baseline = drawn[1]
        for label, limit, factor in _limits(rules, reads):
            if limit is not None:
                ax.axhline(limit, color="#000000", linestyle=":", linewidth=1.2)
                ax.annotate(label, (0.03, limit), xycoords=("axes fraction", "data"), ha="left", va="bottom",
                            fontsize=7, color="#000000")  # clear of the final decision's marker on the right
                drawn.append(np.array([limit]))
            elif len(baseline):
                y = baseline * factor
                ax.plot(xs(len(y)), stepped(y), drawstyle="steps-post", color="#000000", linestyle=":", linewidth=1.2)
                ax.set_title(label, fontsize=7, loc="right", pad=2)
                drawn.append(y)
        ax.set_ylim(0.0, _top(*drawn))
        if " / " in reads:
            ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=None))
        ax.set_ylabel(title)
        ax.grid(alpha=0.3)
    canary, baseline = _series(recording, "requests", "canary"), _series(recording, "requests", "baseline")
    share = _ratio(canary, canary[: len(baseline)] + baseline[: len(canary)]) * 100
    if len(share):
        axes[3].plot(xs(len(share)), stepped(share), drawstyle="steps-post", color="#555555")
    moves = [(t["at"] - origin, t["weights"]["to"]) for t in timeline if t.get("weights")
             and (t.get("outcome") or {"ok": True}).get("ok")]
    end = offset + len(share) * step
    if moves:  # the weight the guardian set, beside the share the canary measurably got
        wx = [x for x, _ in moves] + [max(end, moves[-1][0])]
        wy = [w for _, w in moves] + [moves[-1][1]]
        axes[3].plot(wx, wy, drawstyle="steps-post", color="#555555", linestyle="--", linewidth=1)
    axes[3].set_ylabel("canary traffic %")
    axes[3].set_ylim(0, 105)
    axes[3].set_xlabel("seconds since the rollout started")
    axes[3].grid(alpha=0.3)
    last = 0.0
    for t in timeline:
        x = t["at"] - origin
        last = max(last, x)
        colour = COLOURS.get(t["action"], "#000000")
        for ax in axes:
            ax.axvline(x, color=colour, linestyle="--", linewidth=1, alpha=0.8)
        axes[0].annotate(t["action"], (x, 1.0), xycoords=("data", "axes fraction"), rotation=90, fontsize=7,
                         color=colour, va="top", ha="right")
    span = max(end, last, step)
    axes[0].set_xlim(-0.02 * span, max(end, last) + 0.03 * span)  # every marker inside, none on an edge
    handles = [Line2D([], [], **style) for style in ARM_STYLE.values()] + [
        Line2D([], [], color="#555555", label="canary share (measured)"),
        Line2D([], [], color="#555555", linestyle="--", label="canary weight (set)"),
        Line2D([], [], color="#000000", linestyle=":", label="limit")]
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.97), ncol=len(handles), fontsize=8,
               frameon=False)  # above the panels: it covers neither the data nor the decision markers
    fig.suptitle(f"{explanation.get('service')} → {explanation.get('image')}: {explanation.get('phase')}", fontsize=11)
    ran_under = (recording.get("labels") or {}).get("rules")
    if rules is None and isinstance(ran_under, str):  # say why no limit is drawn
        fig.text(0.01, 0.99, f"limits not drawn: the rules it ran under ({ran_under}) cannot be read here",
                 fontsize=7, va="top", color="#555555")
    logs = explanation.get("logs") or []
    top = 0.955
    if logs:  # the log evidence of the decisive decision, under the panels
        text = "\n".join(_log_line(t) for t in logs[:3])
        fig.text(0.01, 0.005, "canary log templates:\n" + text, fontsize=7, family="monospace", va="bottom")
        fig.tight_layout(rect=(0, 0.02 + 0.018 * (min(len(logs), 3) + 1), 1, top))
    else:
        fig.tight_layout(rect=(0, 0, 1, top))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _log_line(t: dict[str, Any], width: int = 150) -> str:
    line = f"{t.get('canary_count')}x vs {t.get('baseline_count')}x in baseline: {t.get('template')}"
    return line if len(line) <= width else line[: width - 1] + "…"


def render(recording: dict[str, Any], explanation: dict[str, Any], output: Path) -> Path:
    """Write `output` (.png or .html); raises ValueError for any other suffix."""
    suffix = output.suffix.lower()
    if suffix not in (".png", ".html", ".htm"):
        raise ValueError(f"{output}: the report is written as .png or .html")
    png = figure_png(recording, explanation)
    output.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".png":
        output.write_bytes(png)
        return output
    from guardian.reporting.explain import render_timeline

    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Rollout {html.escape(str(explanation.get('id')))}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}pre{{white-space:pre-wrap;font-size:13px}}</style>
</head><body>
<h1>Rollout {html.escape(str(explanation.get('id')))}: {html.escape(str(explanation.get('phase')))}</h1>
<p>{html.escape(explanation.get('summary', ''))}</p>
<img alt="per-arm error ratio, slow ratio, P99 and canary traffic share"
     src="data:image/png;base64,{base64.b64encode(png).decode()}">
<h2>Decisions</h2>
<pre>{html.escape(render_timeline(explanation))}</pre>
</body></html>
"""
    output.write_text(page, encoding="utf-8")
    return output
