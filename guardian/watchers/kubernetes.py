"""The Kubernetes watcher: an `observe` rollout starts by itself when an annotated Deployment rolls out.

With `GUARDIAN_WATCH_KUBERNETES=true` the guardian watches the Deployments (in `kube_namespace`, or every
namespace) that carry the policy annotation (`guardian.io/policy: RULES`, `kube_annotation`): it lists
them, then follows the API's watch stream (`?watch=true&allowWatchBookmarks=true` from the list's
resourceVersion). Each event's resourceVersion, BOOKMARK events' too (they carry nothing else), becomes
the one to resume from. An expired resourceVersion — the API server answers HTTP 200 and one `ERROR` event
whose Status is 410 Expired ("too old resource version") — is listed again (which starts what the missed
events would have) and the watch resumes from the new list, within the same pass; a stream that ends or
breaks is started again from a fresh list on the next pass. For each Deployment whose rolling update is in
progress — a current ReplicaSet (the newest `deployment.kubernetes.io/revision`) with fewer replicas than
wanted, or older ReplicaSets still holding some — once the deployment controller has caught up with it
(the write that changed the template is an event before the controller's own, whose ReplicaSets are still
the revision before: it is passed over), and that no active rollout guards, it starts an observe rollout
exactly as `POST /v1/rollouts` would (`start_spec`, then `Guard.start`): service = the annotation's value
(the rule file's `service`), target `kubernetes:NAMESPACE/NAME`, one step of 100%, image and previous
image from the two ReplicaSets' pod templates. The arms are their pod-template-hashes (the actuator's
`arm_values`). A revision is guarded once (key namespace, name, revision); a paused Deployment starts
nothing (someone holds it); a Deployment deleted while its rollout is active ends that rollout (ROLLBACK,
which the actuator reports as "deleted: nothing to roll back") with the reason. Errors talking to the API
server are logged (a repeated one once a minute; a 403 of the list across namespaces says "at the cluster
scope") and the next pass tries again; the loop never stops for them. (What every watcher shares:
watchers/base.py.)
"""
from __future__ import annotations

import math
import time
from typing import Any

from loguru import logger

from guardian.actuators.kubernetes import (
    DeploymentRollout,
    KubeConnection,
    KubeError,
    KubernetesActuator,
    split_target,
)
from guardian.actuators.targets import parse_target
from guardian.clock import Clock
from guardian.domain import Action, RolloutState, Strategy
from guardian.engine.guard import Guard
from guardian.engine.start import StartDefaults
from guardian.errors import ActuatorError, RolloutConflict
from guardian.watchers.base import PlannedStart, Watcher

POLICY_ANNOTATION = "guardian.io/policy"


def planned_start(policy: str, info: DeploymentRollout) -> PlannedStart:
    """The observe rollout that guards a Deployment's new revision (the key: namespace, name, revision)."""
    i = info
    return PlannedStart(
        service=policy, image=i.image, previous_image=i.previous_image,
        target=f"kubernetes:{i.namespace}/{i.name}", key=(i.namespace, i.name, i.revision),
        reason=(f"rollout of Deployment {i.namespace}/{i.name} to revision {i.revision} detected (ReplicaSet "
                f"pod-template-hash {i.hash}, {i.updated}/{i.replicas} replicas updated, replacing {i.previous_hash}"
                f" {i.previous_image}); guarding it with policy {policy}"),
        what=f"{i.namespace}/{i.name}")


def kube_deployment(target: str) -> tuple[str, str] | None:
    """(namespace, name) a `kubernetes:NS/NAME` target names, else None."""
    name, rest = parse_target(target)
    if name != "kubernetes":
        return None
    ns, dep = split_target(rest)
    return (ns, dep) if dep else None


def active_deployments(states: list[RolloutState]) -> dict[tuple[str, str], str]:
    return {d: s.id for s in states if not s.phase.terminal and s.strategy is not Strategy.WATCH  # a watch gives way
            and (d := kube_deployment(s.target)) is not None}


class KubeWatcher(Watcher):
    """Lists and watches annotated Deployments; starts observe rollouts; ends those whose Deployment is gone."""

    name = "Kubernetes watcher"
    actuator: KubernetesActuator  # what it reads through (its public pieces only)

    def __init__(self, guard: Guard, defaults: StartDefaults, *, connection: KubeConnection | None = None,
                 api_client: Any = None, namespace: str | None = None, annotation: str = POLICY_ANNOTATION,
                 clock: Clock | None = None, repeat_errors_after: float = 60.0, watch_seconds: int = 10) -> None:
        super().__init__(guard, defaults, KubernetesActuator(connection=connection, api_client=api_client), clock=clock,
                         repeat_errors_after=repeat_errors_after)
        self.namespace, self.annotation, self.watch_seconds = namespace, annotation, watch_seconds
        self._resource_version: str | None = None

    def watching(self, every: float) -> str:
        return f"Deployments annotated {self.annotation} in {self.namespace or 'every namespace'}"

    def run_once(self) -> None:
        """A list, then the watch stream from it for up to `watch_seconds`."""
        self.poll()
        self.watch_once(self.watch_seconds)

    # -- one pass --------------------------------------------------------------------------------------
    def poll(self) -> list[RolloutState]:
        """List the Deployments, start what `consider` asks for, end rollouts of deleted ones."""
        try:
            listed = self.actuator.list_deployments(self.namespace)  # namespace None: the cluster scope
        except KubeError as e:
            self._problem("list", f"Kubernetes watcher: cannot list Deployments: {e}; trying again")
            return []
        self._solved("list", "Kubernetes watcher: the API server answers again")
        self._resource_version = (listed.get("metadata") or {}).get("resourceVersion")
        present = set()
        started = []
        for dep in listed.get("items") or []:
            meta = dep["metadata"]
            present.add((meta["namespace"], meta["name"]))
            if (state := self.consider(dep)) is not None:
                started.append(state)
        for where, rollout_id in active_deployments(self.guard.store.list(active_only=True)).items():
            if where not in present and (self.namespace is None or where[0] == self.namespace):
                self.deleted(*where, rollout_id=rollout_id)
        return started

    def handle(self, event: dict[str, Any]) -> RolloutState | None:
        """One watch event (`type`, `object` as a plain dict); a BOOKMARK only moves the resourceVersion."""
        obj = event.get("raw_object") or event.get("object") or {}
        if not isinstance(obj, dict):
            obj = self.actuator.plain(obj)
        meta = obj.get("metadata") or {}
        if meta.get("resourceVersion"):
            self._resource_version = meta["resourceVersion"]
        if event.get("type") == "BOOKMARK":
            return None
        if event.get("type") == "DELETED":
            self.deleted(meta.get("namespace", ""), meta.get("name", ""))
            return None
        if event.get("type") in ("ADDED", "MODIFIED"):
            return self.consider(obj)
        return None

    def consider(self, dep: dict[str, Any]) -> RolloutState | None:
        meta = dep["metadata"]
        policy = (meta.get("annotations") or {}).get(self.annotation, "").strip()
        if not policy or (dep.get("spec") or {}).get("paused"):
            return None
        namespace, name = meta["namespace"], meta["name"]
        if (namespace, name) in active_deployments(self.guard.store.list(active_only=True)):
            return None
        try:
            info = self.actuator.detect(namespace, name, dep)
        except KubeError as e:
            if e.status != 404:
                self._problem(f"detect:{namespace}/{name}", f"Kubernetes watcher: cannot read {namespace}/{name}: {e}")
            return None
        planned = planned_start(policy, info)
        if not info.settled or not info.in_progress or planned.key in self._guarded:
            return None  # not settled: the controller's own event follows, with this revision's ReplicaSets
        return self._start(planned)

    def deleted(self, namespace: str, name: str, rollout_id: str | None = None) -> None:
        """The Deployment is gone: its active rollout ends (rolled back, with the reason)."""
        rollout_id = rollout_id or active_deployments(self.guard.store.list(active_only=True)).get((namespace, name))
        if rollout_id is None:
            return
        try:
            self.guard.override(rollout_id, Action.ROLLBACK,
                                f"Deployment {namespace}/{name} was deleted mid-rollout: nothing left to guard")
            logger.warning("Kubernetes watcher: Deployment {}/{} deleted; rollout {} ended", namespace, name,
                           rollout_id)
        except (RolloutConflict, ActuatorError) as e:
            logger.info("Kubernetes watcher: rollout {} of deleted {}/{} not ended: {}", rollout_id, namespace, name, e)

    # -- the watch stream --------------------------------------------------------------------------------
    def watch_once(self, timeout_seconds: int = 60) -> int:
        """Follow the watch stream from the last list for up to `timeout_seconds`; returns events handled.
        An expired resourceVersion (410) lists again and resumes from the new list within that time; a broken
        stream returns early (the next pass lists again). (The time left is real time, `time.monotonic`: it
        is the API server's own `timeoutSeconds` for the stream, not the guard's clock.)"""
        deadline = time.monotonic() + timeout_seconds
        handled = 0
        while not self._stop.is_set() and (left := math.ceil(deadline - time.monotonic())) > 0:
            count, expired = self._follow(left)
            handled += count
            if not expired:
                break
            self.poll()  # starts what the events missed would have; a fresh resourceVersion to resume from
            if self._resource_version is None:
                break  # the list failed too: the next pass tries again
        return handled

    def _follow(self, seconds: int) -> tuple[int, bool]:
        """One watch request: (events handled, whether it ended because its resourceVersion expired)."""
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        fn, args = self.actuator.deployment_lister(self.namespace)
        w = watch.Watch()
        handled = 0
        kwargs: dict[str, Any] = {"timeout_seconds": seconds, "_request_timeout": seconds + 5,
                                  "allow_watch_bookmarks": True}
        if self._resource_version:
            kwargs["resource_version"] = self._resource_version
        try:
            for event in w.stream(fn, *args, **kwargs):
                self.handle(event)
                handled += 1
                if self._stop.is_set():
                    w.stop()
        except ApiException as e:
            if e.status == 410:  # the API server's ERROR event: "too old resource version"
                logger.info("Kubernetes watcher: resourceVersion {} expired ({}); listing again",
                            self._resource_version, e.reason)
                self._resource_version = None
                return handled, True
            self._problem("watch", f"Kubernetes watcher: the watch stream failed ({e.status} {e.reason}); "
                                   "listing again")
        except Exception as e:  # noqa: BLE001 - a dropped connection: list again
            self._problem("watch", f"Kubernetes watcher: the watch stream broke ({type(e).__name__}: {e}); "
                                   "listing again")
        return handled, False


__all__ = ["POLICY_ANNOTATION", "KubeWatcher", "active_deployments", "kube_deployment", "planned_start"]
