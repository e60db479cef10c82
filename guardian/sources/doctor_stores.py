"""Which `Examiner` asks a service's store for `guardian doctor` and the start's preflight (sources/doctor.py):
`examiner_for` finds the service's store (behind a router and a batching wrapper), and its examiner, one module a
store: doctor_promql_stores.py (Prometheus, VictoriaMetrics), doctor_influxdb.py, doctor_cloudwatch.py,
doctor_datadog.py.

Values are read by the store's own `fetch` (the batching wrappers left out: the doctor's reads are its own), over
the last `window` seconds (CloudWatch: the last window on its period grid, as a tick reads it). A refusal, no
connection or a timeout is SourceUnavailable naming the cause, as a tick's; the findings say `unavailable`.
"""
from __future__ import annotations

import sys
from typing import Any

from guardian.sources import Introspectable, Routing
from guardian.sources.datadog import DatadogSource
from guardian.sources.doctor import Examiner
from guardian.sources.doctor_datadog import DatadogExaminer
from guardian.sources.doctor_influxdb import InfluxDBExaminer
from guardian.sources.doctor_promql_stores import PromQLStoreExaminer
from guardian.sources.influxdb import InfluxDBSource


def examiner_for(source: Any, service: str) -> Examiner | None:
    """The examiner of `service`'s store (the one its rule file names, behind a router); None for a source the doctor
    does not know (a recording, a test stub). Raises SourceUnavailable when the service's store is not configured."""
    if isinstance(source, Routing):
        source = source.for_service(service)
    store = innermost(source)
    if isinstance(source, Introspectable):
        return PromQLStoreExaminer(source, store)
    if isinstance(store, InfluxDBSource):
        return InfluxDBExaminer(store)
    if isinstance(store, DatadogSource):
        return DatadogExaminer(store)
    cloudwatch = sys.modules.get("guardian.sources.cloudwatch")  # imported (boto3 with it) only where it is used
    if cloudwatch is not None and isinstance(store, cloudwatch.CloudWatchSource):
        from guardian.sources.doctor_cloudwatch import CloudWatchExaminer

        return CloudWatchExaminer(store)
    return None


def innermost(source: Any) -> Any:
    """The store behind the wrappers around it (sources/wrapping.py: an `inner` attribute of its own)."""
    for _ in range(8):
        inner = vars(source).get("inner") if hasattr(source, "__dict__") else None
        if inner is None:
            break
        source = inner
    return source


__all__ = ["examiner_for", "innermost"]
