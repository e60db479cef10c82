"""`guardian doctor` for Amazon CloudWatch (sources/doctor.py): present when `ListMetrics` (recently active: within 3
hours) finds each metric the signal is read from with exactly the dimensions `Service` and the arm's (GetMetricData
matches a metric's whole dimension set). Else, from `ListMetrics` of the metric alone: not published in the
namespace (listing what is), no `Service` dimension, not this service (listing the services), no arm dimension or
not its value (listing them), published with more dimensions than the two, or not within 3 hours.

Values: over the last window on CloudWatch's period grid, as a tick reads it. Imported (boto3 with the source) only
where a CloudWatch source is (sources/doctor_stores.py)."""
from __future__ import annotations

import math
from typing import Any

from guardian.errors import SourceUnavailable
from guardian.sources import ArmSelector, SignalQuery
from guardian.sources.cloudwatch import (
    CPU,
    LATENCY,
    MEMORY,
    REQUESTS,
    SERVICE_DIMENSION,
    STANDARD,
    CloudWatchSource,
    arm_dimension,
)
from guardian.sources.doctor import duration, listing

RECENTLY = 3 * 3600.0  # ListMetrics' RecentlyActive (PT3H, the only value it takes)
MAX_LIST_PAGES = 5  # ListMetrics pages (500 metrics each) read for a diagnosis at most
NEEDS: dict[str, tuple[str, ...]] = {  # signal -> the metrics it is read from
    "requests": (REQUESTS,), "errors": (REQUESTS,), "slow": (LATENCY,), "p99_seconds": (LATENCY,),
    "cpu_seconds": (CPU,), "memory_bytes": (MEMORY,),
}


class CloudWatchExaminer:
    def __init__(self, source: CloudWatchSource) -> None:
        self.source = source
        self._listed: dict[tuple[Any, ...], list[dict[str, Any]]] = {}

    def describe(self) -> str:
        return f"CloudWatch ({self.source.where}), namespace {self.source.namespace}"

    def notes(self) -> list[str]:
        return []

    def _list_metrics(self, metric: str | None, dimensions: list[dict[str, str]] | None = None, *,
                      recent: bool = False, pages: int = MAX_LIST_PAGES) -> list[dict[str, Any]]:
        """ListMetrics in the namespace (of `metric`, with these dimensions among its own), its pages followed."""
        key = (metric, repr(dimensions), recent, pages)
        if key in self._listed:
            return self._listed[key]
        ask: dict[str, Any] = {"Namespace": self.source.namespace, **({"MetricName": metric} if metric else {}),
                               **({"Dimensions": dimensions} if dimensions else {}),
                               **({"RecentlyActive": "PT3H"} if recent else {})}
        found: list[dict[str, Any]] = []
        for _ in range(pages):
            answer = self.source.list_metrics(**ask)
            found += answer.get("Metrics") or []
            if not answer.get("NextToken"):
                break
            ask["NextToken"] = answer["NextToken"]
        self._listed[key] = found
        return found

    def _dims(self, service: str, arm: ArmSelector) -> tuple[str, list[dict[str, str]]]:
        arm_dim = arm_dimension(arm.label)
        return arm_dim, [{"Name": SERVICE_DIMENSION, "Value": service}, {"Name": arm_dim, "Value": arm.label_value}]

    def present(self, query: SignalQuery, service: str, arm: ArmSelector, now: float, window: float) -> bool:
        if query.signal not in NEEDS:
            return False
        arm_dim, dims = self._dims(service, arm)
        exact = {SERVICE_DIMENSION, arm_dim}
        return all(any({d["Name"] for d in m.get("Dimensions") or []} == exact
                       for m in self._list_metrics(metric, dims, recent=True))
                   for metric in NEEDS[query.signal])

    def why(self, query: SignalQuery, service: str, arm: ArmSelector, now: float, window: float) -> str:
        if query.signal not in NEEDS:
            return (f"a CloudWatch source reads the standard signals only ({', '.join(STANDARD)}): "
                    f"{query.signal} cannot be read there")
        try:
            for metric in NEEDS[query.signal]:
                if reason := self._why(metric, service, arm):
                    return reason
        except SourceUnavailable as e:
            return f"(could not find out why: {e})"
        return "the metrics are there (ListMetrics), yet not found a moment ago: ask again"

    def _why(self, metric: str, service: str, arm: ArmSelector) -> str | None:
        ns, svc_dim = self.source.namespace, SERVICE_DIMENSION
        arm_dim, dims = self._dims(service, arm)
        value = arm.label_value
        every = self._list_metrics(metric)
        if not every:
            names = sorted({m.get("MetricName", "") for m in self._list_metrics(None, pages=1)})
            return (f"no metric {metric} in namespace {ns} ({self.source.where}; its metrics: {listing(names)}): "
                    f"does the service publish {metric} there (GUARDIAN_CLOUDWATCH_NAMESPACE names the namespace), "
                    "in this region?")

        def values_of(name: str, metrics: list[dict[str, Any]]) -> list[str]:
            return sorted({d["Value"] for m in metrics for d in m.get("Dimensions") or [] if d.get("Name") == name})

        services = values_of(svc_dim, every)
        if not services:
            names = sorted({d["Name"] for m in every for d in m.get("Dimensions") or []})
            return (f"{metric} has no {svc_dim} dimension (its dimensions: {', '.join(names) or 'none'}): publish it "
                    f"with exactly the dimensions {svc_dim} and {arm_dim} (EMF: \"Dimensions\": [[\"{svc_dim}\", "
                    f"\"{arm_dim}\"]])")
        if service not in services:
            return (f"no {metric} metric has {svc_dim}=\"{service}\"; the services that publish it: "
                    f"{listing(services)} (publish with {svc_dim}=\"{service}\", or name the rule file's service after "
                    "one of these)")
        own = [m for m in every if {"Name": svc_dim, "Value": service} in (m.get("Dimensions") or [])]
        arms = values_of(arm_dim, own)
        if not arms:
            names = sorted({d["Name"] for m in own for d in m.get("Dimensions") or []})
            return (f"the {metric} metrics of {svc_dim}=\"{service}\" have no {arm_dim} dimension to tell the arms "
                    f"apart (their dimensions: {', '.join(names)}): publish the {arm.arm}'s with "
                    f"{arm_dim}=\"{value}\", or name the label that does in the rule file's `arms:` (its name "
                    "capitalised is the dimension)")
        if value not in arms:
            return (f"no {metric} metric with {svc_dim}=\"{service}\" has {arm_dim}=\"{value}\" (the {arm.arm}); its "
                    f"{arm_dim} values: {listing(arms)}")
        sets = {tuple(sorted(d["Name"] for d in m.get("Dimensions") or [])) for m in self._list_metrics(metric, dims)}
        if (svc_dim, arm_dim) not in {tuple(sorted(s)) for s in sets}:
            shown = "; ".join(", ".join(s) for s in sorted(sets))
            return (f"{metric} of {svc_dim}=\"{service}\", {arm_dim}=\"{value}\" is published only with the dimensions "
                    f"{shown}: GetMetricData matches a metric's whole dimension set, and the guardian reads the one "
                    f"with exactly {svc_dim} and {arm_dim}: publish that set too (EMF: \"Dimensions\": "
                    f"[[\"{svc_dim}\", \"{arm_dim}\"]])")
        return (f"{metric} with {svc_dim}=\"{service}\", {arm_dim}=\"{value}\" received no datapoint in the last "
                f"{duration(RECENTLY)} (ListMetrics, RecentlyActive): does the service still publish it?")

    def value(self, query: SignalQuery, service: str, arm: ArmSelector, now: float, window: float) -> float:
        """Over the last `window` seconds on CloudWatch's period grid (a whole minute, or 30, 20, 10, 5 s), as a tick
        window of that length reads it."""
        grid = next((p for p in (60, 30, 20, 10, 5) if window % p == 0), 1)
        end = math.floor(now / grid) * grid
        return self.source.fetch(query, service, arm, end - window, end)


__all__ = ["NEEDS", "CloudWatchExaminer"]
