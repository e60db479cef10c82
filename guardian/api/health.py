"""The guardian's own health: /healthz (it answers), /readyz (its store answers; its metric source's state
shown), /v1/status (this replica's leases) and /metrics (its Prometheus metrics)."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from guardian.api.deps import Deps
from guardian.sources import Pinging

router = APIRouter()


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/v1/status")
def status(c: Deps) -> dict[str, Any]:
    """This replica: its lease holder id, the lease time and the rollouts it holds (id -> fencing token); with
    replicas sharing a store, how many are live and this one's share of the rollouts in flight (engine/leases.py)."""
    leases = c.leases
    shared = bool(leases) and leases.lease_seconds != float("inf")
    view = {"replica": leases.holder if leases else None, "store": type(c.store).__name__,
            "lease_seconds": c.settings.lease_seconds if shared else None,
            "leases": leases.held() if leases else {}}
    if shared and leases.share != float("inf"):
        view |= {"replicas_live": leases.live, "share": leases.share}
    return view


@router.get("/readyz")
def readyz(c: Deps, response: Response) -> dict[str, Any]:
    try:
        store_ok = c.store.ping()
    except Exception:  # noqa: BLE001
        store_ok = False
    source_ok = bool(c.source.ping()) if isinstance(c.source, Pinging) else True
    if not store_ok:
        response.status_code = 503
    return {"status": "ready" if store_ok else "not ready", "store": store_ok, "metrics_source": source_ok}


@router.get("/metrics")
def metrics(c: Deps) -> Response:
    return Response(generate_latest(c.metrics.registry), media_type=CONTENT_TYPE_LATEST)
