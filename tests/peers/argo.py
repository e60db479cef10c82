"""An Argo Rollouts canary with a background AnalysisRun of one `web` metric: the requests its web provider
sends, how it counts the measurements and when the run ends. Rebuilt from Argo Rollouts' source
(argoproj/argo-rollouts, metricproviders/webmetric/webmetric.go `Run`; analysis/analysis.go
`assessMetricStatus`, `assessMetricFailureInconclusiveOrError`), for a Rollout whose canary steps are
`setWeight` and `pause: {duration}` and whose analysis runs in the background from the first step. Not an
Argo: a replay of its calls against the real guardian, with traffic moved by a real load generator.

What it keeps from the source:
- a measurement every `interval`: the web provider sends `method` (GET, POST or PUT) to the URL with the
  `headers`; `body:` is sent as it is with no Content-Type, `jsonBody:` as JSON with `Content-Type:
  application/json`; a transport error or a status outside 2xx is an Error measurement; the JSON answer is
  `result` (jsonPath `{$}`);
- the measurement is Successful when `successCondition` holds, Failed when `failureCondition` holds, else
  Inconclusive (here: result.verdict == "pass" / "fail");
- the metric is Failed when failed > failureLimit, Inconclusive when inconclusive > inconclusiveLimit
  (counted over the whole run, not consecutively), Error when consecutive errors > consecutiveErrorLimit
  (4); without `count` it runs until the Rollout completes (then Successful);
- a Failed run aborts the Rollout (all traffic to the stable ReplicaSet); an Inconclusive one pauses it.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx


@dataclass
class Measurement:
    at: float
    weight: int
    status: int
    phase: str  # Successful | Failed | Inconclusive | Error
    verdict: str | None
    reason: str


@dataclass
class ArgoRollout:
    """`url` is the guardian's /v1/gates/argo/SERVICE; `route(canary_weight)` moves traffic."""

    url: str
    route: Callable[[int], None]
    canary_hash: str
    stable_hash: str
    token: str
    steps: tuple[tuple[str, float], ...] = (("setWeight", 20), ("pause", 8), ("setWeight", 50), ("pause", 8))
    interval: float = 2.0
    failure_limit: int = 0
    inconclusive_limit: int = 10
    consecutive_error_limit: int = 4
    method: str = "POST"
    body_form: str = "body"  # "body": a JSON string with no Content-Type; "jsonBody": JSON; "query": GET params
    weight: int = 0
    phase: str = "Progressing"  # Progressing | Paused (inconclusive) | Degraded (aborted) | Healthy (completed)
    measurements: list[Measurement] = field(default_factory=list)
    events: list[str] = field(default_factory=list)

    def _request(self) -> httpx.Request:
        args = {"revision": self.canary_hash, "previous": self.stable_hash}
        headers = {"Authorization": f"Bearer {self.token}"}
        if self.body_form == "query":
            return httpx.Request("GET", self.url, params=args, headers=headers)
        if self.body_form == "jsonBody":
            return httpx.Request(self.method, self.url, content=json.dumps(args).encode(),
                                 headers={**headers, "Content-Type": "application/json"})
        return httpx.Request(self.method, self.url, content=json.dumps(args).encode(), headers=headers)

    def measure(self) -> Measurement:
        """One measurement, as Run and parseResponse take it."""
        status, result, reason = 0, None, ""
        try:
            with httpx.Client(timeout=10) as client:
                r = client.send(self._request())
            status = r.status_code
            if 200 <= status < 300:
                result = r.json()
            else:
                reason = f"received non 2xx response code: {status}: {r.text[:120]}"
        except (httpx.HTTPError, ValueError) as e:
            reason = f"{type(e).__name__}: {e}"
        if not isinstance(result, dict):
            m = Measurement(time.time(), self.weight, status, "Error", None, reason)
        else:
            verdict = result.get("verdict")
            phase = "Successful" if verdict == "pass" else "Failed" if verdict == "fail" else "Inconclusive"
            m = Measurement(time.time(), self.weight, status, phase, verdict, str(result.get("reason", ""))[:160])
        self.measurements.append(m)
        return m

    def assess(self) -> str:
        """The metric's phase: Running, Failed, Inconclusive or Error."""
        count = {p: sum(1 for m in self.measurements if m.phase == p) for p in ("Failed", "Inconclusive")}
        consecutive = 0
        for m in reversed(self.measurements):
            if m.phase != "Error":
                break
            consecutive += 1
        if consecutive > self.consecutive_error_limit:
            return "Error"
        if count["Inconclusive"] > self.inconclusive_limit:
            return "Inconclusive"
        if count["Failed"] > self.failure_limit:
            return "Failed"
        return "Running"

    def _set_weight(self, weight: int) -> None:
        self.weight = weight
        self.route(weight)
        self.events.append(f"weight {weight}")

    def run(self, during: Callable[[ArgoRollout], None] | None = None, timeout: float = 120.0) -> str:
        """Walk the steps with the background analysis measuring every `interval`; the Rollout's end phase."""
        deadline = time.time() + timeout
        plan = list(self.steps)
        next_measure = time.time()
        step_until = 0.0
        while time.time() < deadline:
            now = time.time()
            if now >= step_until:
                if not plan:
                    self._set_weight(100)
                    self.phase = "Healthy"  # the background run is terminated: Successful
                    self.events.append("rollout completed; analysis terminated (Successful)")
                    return self.phase
                kind, value = plan.pop(0)
                if kind == "setWeight":
                    self._set_weight(int(value))
                    step_until = now
                else:
                    step_until = now + float(value)
                    self.events.append(f"pause {value:g}s")
            if now >= next_measure:
                self.measure()
                next_measure = now + self.interval
                outcome = self.assess()
                if outcome in ("Failed", "Error"):
                    self.events.append(f"analysis {outcome}: rollout aborted")
                    self._set_weight(0)
                    self.phase = "Degraded"
                    return self.phase
                if outcome == "Inconclusive":
                    self.events.append("analysis Inconclusive: rollout paused")
                    self.phase = "Paused"
                    return self.phase
            if during is not None:
                during(self)
            time.sleep(0.1)
        raise TimeoutError(f"Argo rollout still at weight {self.weight} after {timeout:g}s")
