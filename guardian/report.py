"""A picture of one rollout: per-arm error ratio, slow ratio and P99, and the canary's share of the
traffic, tick by tick, with every decision marked and the final one named; as a PNG, or as one
self-contained HTML page holding that PNG and the plain-words explanation (guardian/explain.py).

    render(recording, explanation, Path("rollout.html"))   # or .png

`recording` is the rollout as guardian-recording/v1 (GET /v1/rollouts/{id}/recording); the plot
only reads its `series`, `start` and `step_seconds`, so recordings of any source draw the same.
"""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import numpy as np

from guardian.sources.recording import parse_start

COLOURS = {"rollback": "#d62728", "promote": "#2ca02c", "pause": "#ff7f0e", "resume": "#1f77b4",
           "advance": "#1f77b4", "start": "#7f7f7f", "scale": "#9467bd", "notify": "#8c564b"}
ARM_STYLE = {"canary": {"color": "#d62728", "label": "canary"}, "baseline": {"color": "#1f77b4", "label": "baseline"}}


def _series(recording: dict[str, Any], signal: str, arm: str) -> np.ndarray:
    values = (recording.get("series") or {}).get(signal, {}).get(arm) or []
    return np.array([np.nan if v is None else float(v) for v in values], dtype=float)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    n = min(len(num), len(den))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den[:n] > 0, num[:n] / den[:n], np.nan)


def figure_png(recording: dict[str, Any], explanation: dict[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    step = float(recording.get("step_seconds") or 1.0)
    start = parse_start(recording["start"]) if recording.get("start") else 0.0
    def per_request(signal: str):
        return lambda arm: _ratio(_series(recording, signal, arm), _series(recording, "requests", arm))

    panels = [("error ratio", per_request("errors")), ("slow ratio", per_request("slow")),
              ("P99 (s)", lambda arm: _series(recording, "p99_seconds", arm))]
    fig, axes = plt.subplots(4, 1, figsize=(10, 9), sharex=True)
    for ax, (title, get) in zip(axes, panels, strict=False):
        for arm, style in ARM_STYLE.items():
            y = get(arm)
            ax.plot(np.arange(len(y)) * step, y, drawstyle="steps-post", **style)
        ax.set_ylabel(title)
        ax.grid(alpha=0.3)
    canary, baseline = _series(recording, "requests", "canary"), _series(recording, "requests", "baseline")
    share = _ratio(canary, canary[: len(baseline)] + baseline[: len(canary)]) * 100
    axes[3].plot(np.arange(len(share)) * step, share, drawstyle="steps-post", color="#555555", label="canary share")
    axes[3].set_ylabel("canary traffic %")
    axes[3].set_ylim(-5, 105)
    axes[3].set_xlabel("seconds since the rollout started")
    axes[3].grid(alpha=0.3)
    axes[0].legend(loc="upper left", fontsize=8)
    for t in explanation.get("timeline", []):
        if t.get("at") is None:
            continue
        x = t["at"] - start
        colour = COLOURS.get(t["action"], "#000000")
        for ax in axes:
            ax.axvline(x, color=colour, linestyle="--", linewidth=1, alpha=0.8)
        axes[0].annotate(t["action"], (x, 1.0), xycoords=("data", "axes fraction"), rotation=90, fontsize=7,
                         color=colour, va="top", ha="right")
    fig.suptitle(f"{explanation.get('service')} → {explanation.get('image')}: {explanation.get('phase')}", fontsize=11)
    logs = explanation.get("logs") or []
    if logs:  # the log evidence of the decisive decision, under the panels
        text = "\n".join(_log_line(t) for t in logs[:3])
        fig.text(0.01, 0.005, "canary log templates:\n" + text, fontsize=7, family="monospace", va="bottom")
        fig.tight_layout(rect=(0, 0.02 + 0.018 * (min(len(logs), 3) + 1), 1, 1))
    else:
        fig.tight_layout()
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
    from guardian.explain import render_text

    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Rollout {html.escape(str(explanation.get('id')))}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}pre{{white-space:pre-wrap;font-size:13px}}</style>
</head><body>
<h1>Rollout {html.escape(str(explanation.get('id')))}: {html.escape(str(explanation.get('phase')))}</h1>
<p>{html.escape(explanation.get('summary', ''))}</p>
<img alt="per-arm error ratio, slow ratio, P99 and canary traffic share"
     src="data:image/png;base64,{base64.b64encode(png).decode()}">
<h2>Decisions</h2>
<pre>{html.escape(render_text(explanation))}</pre>
</body></html>
"""
    output.write_text(page, encoding="utf-8")
    return output
