"""Builders of small guardian-recording/v1 documents for unit tests."""
from __future__ import annotations


def steady_recording(ticks: int, *, canary_errors: int = 0, canary_p99: float = 0.12, truth: str = "good") -> dict:
    """checkout at steady traffic: 100 canary and 900 baseline requests per 10 s tick, a few of them slow."""
    return {
        "format": "guardian-recording/v1",
        "service": "checkout",
        "step_seconds": 10,
        "start": "2026-01-05T12:00:00Z",
        "series": {
            "requests": {"canary": [100] * ticks, "baseline": [900] * ticks},
            "errors": {"canary": [canary_errors] * ticks, "baseline": [1] * ticks},
            "slow": {"canary": [0] * ticks, "baseline": [2] * ticks},  # answers over the 0.5 s objective
            "p99_seconds": {"canary": [canary_p99] * ticks, "baseline": [0.1] * ticks},
        },
        "labels": {"truth": truth},
    }


def late_regression_recording(ticks: int, *, bad_from: int, canary_errors: int = 30) -> dict:
    """`steady_recording` whose canary answers `canary_errors` of its 100 requests per tick with errors from
    tick `bad_from` on (a regression that shows only after the canary has passed for a while)."""
    rec = steady_recording(ticks)
    rec["series"]["errors"]["canary"] = [0] * bad_from + [canary_errors] * (ticks - bad_from)
    rec["labels"]["truth"] = "bad"
    return rec
