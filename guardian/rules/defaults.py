"""Built-in knowledge: the standard signals (SPEC.md §4, the contract outside this repository; docs/rules.md)
and the default policy.

A service that exposes `http_requests_total` and `http_request_duration_seconds` with a track
label needs no rule file: these queries read it, and DEFAULT_RULES judge it.
"""
from __future__ import annotations

from guardian.domain import SignalType
from guardian.rules.models import Query, RuleFile

_SEL = 'service="{{service}}",{{arm_label}}="{{arm}}"'
SLOW_OBJECTIVE_LE = "0.5"  # the latency objective, as the histogram bucket's `le` label

STANDARD_QUERIES: dict[str, Query] = {
    "requests": Query(type=SignalType.COUNTER, promql=f"sum without (code) (http_requests_total{{{_SEL}}})"),
    "errors": Query(
        type=SignalType.COUNTER,
        # `or (… * 0)`: a service that never answered 5xx has no such series; that is 0 errors, not no data
        promql=f'sum without (code) (http_requests_total{{{_SEL},code=~"5.."}})'
        f" or (sum without (code) (http_requests_total{{{_SEL}}}) * 0)",
    ),
    "slow": Query(
        type=SignalType.COUNTER,
        promql=f"http_request_duration_seconds_count{{{_SEL}}}"
        f' - ignoring (le) http_request_duration_seconds_bucket{{{_SEL},le="{SLOW_OBJECTIVE_LE}"}}',
    ),
    "p99_seconds": Query(
        type=SignalType.GAUGE,
        promql="histogram_quantile(0.99, sum by (le) "
        f"(rate(http_request_duration_seconds_bucket{{{_SEL}}}[{{{{window}}}}])))",
    ),
    "cpu_seconds": Query(type=SignalType.COUNTER, promql=f"process_cpu_seconds_total{{{_SEL}}}"),
    "memory_bytes": Query(type=SignalType.GAUGE, promql=f"sum(process_resident_memory_bytes{{{_SEL}}})"),
}

# The default policy: every standard signal of the canary judged against the baseline, sequentially
# and anytime-valid, with the overall false-rollback budget (alpha) split across the five checks.
DEFAULT_RULES = RuleFile.model_validate(
    {
        "service": "*",
        "checks": [
            {"name": "errors-vs-baseline", "kind": "compare", "ratio": "errors / requests", "alpha": 0.01},
            {"name": "slow-vs-baseline", "kind": "compare", "ratio": "slow / requests", "alpha": 0.01},
            {"name": "p99-vs-baseline", "kind": "compare", "signal": "p99_seconds", "test": "sign", "alpha": 0.01,
             "optional": True},
            {"name": "canary-traffic", "kind": "compare", "signal": "requests", "test": "collapse", "alpha": 0.01},
            {"name": "memory-leak", "kind": "compare", "signal": "memory_bytes", "test": "trend", "alpha": 0.01,
             "optional": True},
        ],
    }
)

# The seed's threshold policy (also shipped as rules/checkout.yaml): error rate above 5% for 2 minutes,
# or P99 above 1 s for 3 minutes -> rollback.
SEED_THRESHOLD_RULES = RuleFile.model_validate(
    {
        "service": "*",
        "checks": [
            {"name": "error-rate", "kind": "threshold", "ratio": "errors / requests", "above": 0.05,
             "for": "2m", "action": "rollback"},
            {"name": "p99-latency", "kind": "threshold", "signal": "p99_seconds", "above": 1.0,
             "for": "3m", "min_samples": 20, "action": "rollback"},
        ],
    }
)
