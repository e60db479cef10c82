"""`guardian report`'s picture (issue 17, frictions): the checks' limits drawn, every decision marker where
it happened and clear of the legend, axes that show magnitudes rather than noise, and an HTML page that
says its summary once."""
from __future__ import annotations

import copy
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from matplotlib.figure import Figure

from guardian.reporting.explain import explain
from guardian.reporting.report import figure_png, render
from guardian.sources.recording import parse_start
from tests.unit.recordings import steady_recording

matplotlib.use("Agg")
REPO = Path(__file__).resolve().parents[2]


def recording(rules: str | None = str(REPO / "rules" / "checkout.yaml")) -> dict:
    rec = steady_recording(30, canary_errors=1)
    noise = np.random.default_rng(0).normal(0, 3e-5, 30)
    rec["series"]["p99_seconds"] = {"canary": (0.1201 + noise).tolist(), "baseline": (0.12 - noise).tolist()}
    rec["series"]["errors"]["canary"][15:] = [25] * 15
    if rules:
        rec["labels"] = {**rec["labels"], "rules": rules}
    return rec


def explanation(rec: dict) -> dict:
    origin = parse_start(rec["start"])
    created = origin - 8  # aligned ticks: the first tick starts up to one tick after the rollout
    ok = {"ok": True, "action": "x", "detail": "noop"}
    decisions = [
        {"action": "start", "source": "user", "at": created, "reason": "start", "verdicts": [], "outcome": ok},
        {"action": "advance", "source": "guardian", "at": origin + 61, "tick": 5, "reason": "ok", "outcome": ok,
         "verdicts": [{"check": "error-rate", "result": "pass"}]},
        {"action": "rollback", "source": "guardian", "at": origin + 301, "tick": 29, "reason": "bad", "outcome": ok,
         "verdicts": [{"check": "error-rate", "result": "fail", "value": 0.25, "threshold": 0.05}]},
    ]
    rollout = {"id": "r1", "service": "checkout", "image": "checkout:v2", "strategy": "canary",
               "steps": [10, 25, 50, 100], "phase": "rolled_back", "weight": 0, "created_at": created}
    return explain(rollout, decisions)


@pytest.fixture
def drawn(monkeypatch):
    """The matplotlib Figure behind figure_png."""
    figures: list[Figure] = []
    save = Figure.savefig

    def keep(self, *args, **kwargs):
        figures.append(self)
        return save(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)

    def draw(rec: dict) -> Figure:
        figure_png(rec, explanation(rec))
        return figures[-1]

    return draw


def horizontal_levels(ax) -> set[float]:
    return {round(float(line.get_ydata()[0]), 6) for line in ax.get_lines()
            if len(set(np.asarray(line.get_ydata(), dtype=float).tolist())) == 1 and len(line.get_xdata()) >= 2
            and len(set(np.asarray(line.get_xdata(), dtype=float).tolist())) > 1}


def test_the_checks_limits_are_drawn(drawn):
    fig = drawn(recording())
    errors, _, p99, _ = fig.axes[:4]
    assert 0.05 in horizontal_levels(errors)  # error-rate: above 5%
    assert 1.0 in horizontal_levels(p99)  # p99-latency: above 1s


def test_the_start_marker_is_at_zero_and_clear_of_the_legend(drawn):
    fig = drawn(recording())
    ax = fig.axes[0]
    markers = sorted(float(line.get_xdata()[0]) for line in ax.get_lines()
                     if len(set(np.asarray(line.get_xdata(), dtype=float).tolist())) == 1)
    assert markers[0] == 0.0  # the rollout started at 0; its first tick began 8 s later
    left, right = ax.get_xlim()
    assert left < 0.0 and right > markers[-1]  # every marker inside the axes, not on their edge
    legend = ax.get_legend()
    if legend is not None:  # a legend drawn inside the top panel would cover the markers: it stands above it
        fig.canvas.draw()
        box = legend.get_window_extent()
        assert box.y0 >= ax.get_window_extent().y1 - 1


def test_axes_start_at_zero_so_noise_is_not_magnified(drawn):
    fig = drawn(recording())
    errors, slow, p99, share = fig.axes[:4]
    for ax in (errors, slow, p99, share):
        assert ax.get_ylim()[0] == 0.0, ax.get_ylabel()
    assert p99.get_ylim()[1] > 0.12  # the 0.1 ms of noise around 120 ms is shown as the flat line it is


def test_without_known_rules_the_picture_is_still_drawn(drawn):
    fig = drawn(recording(rules=None))
    assert fig.axes[0].get_ylim()[0] == 0.0


def test_the_html_report_says_its_summary_once(tmp_path):
    rec = recording()
    e = explanation(rec)
    page = render(copy.deepcopy(rec), e, tmp_path / "r.html").read_text()
    assert page.count(e["summary"].split(" because ")[0]) == 1
    assert "ROLLBACK" in page and "ADVANCE" in page
