"""Flagger's canary loop, as far as it calls webhooks: the order, the payloads (with the checksum Flagger
puts in each), the weights and the decisions it takes on the answers. Rebuilt from Flagger's source
(fluxcd/flagger, pkg/controller/scheduler.go `advanceCanary`, `checkCanaryStatus`, `runCanary`,
`rollback`; scheduler_hooks.go; webhook.go `CallWebhook`, `canaryChecksum`), for a canary with
`stepWeight`/`maxWeight` (progressive traffic), no mirroring, no A/B, and no metric checks of its own: the
guardian's webhooks are its only judge. Not a Flagger: a replay of its call sequence against the real
guardian, with traffic moved by a real load generator.

What it keeps from the source:
- every `interval`, one pass (`advance`), returning early wherever Flagger returns early;
- a new revision is first seen in phase Initialized/Succeeded: `confirm-rollout` is called with the
  checksum of the spec last applied (the previous revision's); a refusal sets phase Waiting; on approval the
  new spec is synced (the checksum changes) and phase becomes Progressing — and the pass ends;
- in Progressing / Waiting / WaitingPromotion, `rollback` hooks first: a 2xx (<= 202) rolls back;
- failedChecks >= threshold rolls back;
- at weight 0 with no iteration: `pre-rollout` (a refusal counts a failed check and ends the pass); else the
  `rollout` hooks (a refusal counts a failed check and ends the pass);
- then `confirm-traffic-increase` (a refusal ends the pass, counting nothing), then the weight grows by
  `stepWeight` up to `maxWeight`; at `maxWeight`, `confirm-promotion` (a refusal: phase WaitingPromotion),
  then Promoting -> Finalising -> Succeeded, `post-rollout` with phase Succeeded;
- a rollback routes all traffic to the primary, sets phase Failed and calls `post-rollout` with Failed.
A webhook answer above 202 is a refusal (webhook.go: `if r.StatusCode > 202`).
"""
from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class Call:
    at: float
    hook: str
    checksum: str
    weight: int
    status: int
    verdict: str | None
    reason: str


@dataclass
class FlaggerCanary:
    """One Canary resource: `url` is the guardian's /v1/gates/flagger base; `route(canary_weight)` moves traffic."""

    url: str
    name: str
    namespace: str
    route: Callable[[int], None]
    metadata: dict[str, str]
    interval: float = 2.0
    threshold: int = 5
    step_weight: int = 10
    max_weight: int = 50
    hooks: tuple[str, ...] = ("confirm-rollout", "pre-rollout", "rollout", "confirm-traffic-increase",
                              "confirm-promotion", "rollback", "post-rollout")
    phase: str = "Initialized"
    weight: int = 0
    iterations: int = 0
    failed_checks: int = 0
    last_applied: str = "v1"  # Status.LastAppliedSpec: the spec the checksum is computed from
    target_spec: str = "v1"  # the Deployment's spec now
    calls: list[Call] = field(default_factory=list)
    events: list[str] = field(default_factory=list)

    @property
    def checksum(self) -> str:
        """canaryChecksum: a hash of (TrackedConfigs, LastAppliedSpec)."""
        return hashlib.sha256(self.last_applied.encode()).hexdigest()[:10]

    def deploy(self, spec: str) -> None:
        """`kubectl set image`: the target's spec changes; Flagger sees it at its next pass."""
        self.target_spec = spec

    def _hook(self, hook: str, phase: str) -> bool:
        if hook not in self.hooks:
            return True
        body = {"name": self.name, "namespace": self.namespace, "phase": phase, "checksum": self.checksum,
                "metadata": self.metadata}
        try:
            r = httpx.post(f"{self.url}/{hook}", json=body, timeout=10)
            status, answer = r.status_code, _json(r)
        except httpx.HTTPError as e:
            status, answer = 0, {"reason": f"{type(e).__name__}: {e}"}
        self.calls.append(Call(time.time(), hook, self.checksum, self.weight, status, answer.get("verdict"),
                               str(answer.get("reason", ""))[:160]))
        return 0 < status <= 202

    def _set_weight(self, weight: int) -> None:
        self.weight = weight
        self.route(weight)
        self.events.append(f"weight {weight}")

    def _rollback(self) -> None:
        self.events.append(f"rolling back (failed checks {self.failed_checks})")
        self._set_weight(0)
        self.phase = "Failed"
        self._hook("post-rollout", "Failed")

    def advance(self) -> None:
        """One pass of advanceCanary."""
        if self.phase in ("Initialized", "Succeeded", "Failed", "Waiting"):
            if self.target_spec == self.last_applied and self.phase != "Waiting":
                return  # shouldAdvance: nothing changed
            if not self._hook("confirm-rollout", "Progressing"):  # the previous spec's checksum
                self.phase = "Waiting"
                return
            self.last_applied = self.target_spec  # SyncStatus(Progressing): the new checksum from here on
            self.phase, self.weight, self.iterations, self.failed_checks = "Progressing", 0, 0, 0
            self.events.append(f"new revision {self.target_spec}: progressing")
            return
        if self.phase in ("Progressing", "WaitingPromotion") and self._hook("rollback", self.phase):
            self.events.append("rollback hook asked for a rollback")
            self._rollback()
            return
        if self.phase == "Promoting":
            self._set_weight(0)  # all traffic to the primary, which now runs the new spec
            self.phase = "Finalising"
            return
        if self.phase == "Finalising":
            self.phase = "Succeeded"
            self._hook("post-rollout", "Succeeded")
            self.events.append("promotion completed")
            return
        if self.failed_checks >= self.threshold:
            self._rollback()
            return
        if self.weight == 0 and self.iterations == 0:
            if not self._hook("pre-rollout", "Progressing"):
                self.failed_checks += 1
                return
        elif not self._hook("rollout", "Progressing"):
            self.failed_checks += 1
            return
        if self.phase != "WaitingPromotion" and not self._hook("confirm-traffic-increase", "Progressing"):
            return
        if self.weight < self.max_weight:
            self._set_weight(min(self.max_weight, self.weight + self.step_weight))
            return
        if not self._hook("confirm-promotion", "Progressing"):
            self.phase = "WaitingPromotion"
            return
        self.events.append("promoting")
        self.phase = "Promoting"

    @property
    def done(self) -> bool:
        return self.phase in ("Succeeded", "Failed") and self.target_spec == self.last_applied

    def run(self, until: Callable[[FlaggerCanary], bool] | None = None, timeout: float = 120.0) -> None:
        """Pass every `interval` until the canary is done (or `until` says stop)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            self.advance()
            if self.done or (until is not None and until(self)):
                return
            time.sleep(self.interval)
        raise TimeoutError(f"Flagger canary still {self.phase} at weight {self.weight} after {timeout:g}s")


def _json(r: httpx.Response) -> dict[str, Any]:
    try:
        body = r.json()
    except ValueError:
        return {"reason": r.text[:160]}
    return body if isinstance(body, dict) else {"reason": str(body)[:160]}
