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
scope") and the next pass tries again; the loop never stops for them.
"""
from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from loguru import logger

from guardian.actuators import registry
from guardian.actuators.kubernetes import DeploymentRollout, KubeConnection, KubeError, KubernetesActuator
from guardian.clock import Clock
from guardian.domain import Action, RolloutState, Strategy
from guardian.engine.guard import Guard, StartDefaults, start_spec
from guardian.errors import ActuatorError, ModelMissing, RolloutConflict

POLICY_ANNOTATION = "guardian.io/policy"
MAX_GUARDED = 1_000


@dataclass(frozen=True)
class PlannedStart:
    policy: str  # the annotation's value: the rollout's service (its rule file)
    info: DeploymentRollout

    @property
    def target(self) -> str:
        return f"kubernetes:{self.info.namespace}/{self.info.name}"

    @property
    def key(self) -> tuple[str, str, int]:
        return self.info.namespace, self.info.name, self.info.revision

    @property
    def reason(self) -> str:
        i = self.info
        return (f"rollout of Deployment {i.namespace}/{i.name} to revision {i.revision} detected (ReplicaSet "
                f"pod-template-hash {i.hash}, {i.updated}/{i.replicas} replicas updated, replacing {i.previous_hash}"
                f" {i.previous_image}); guarding it with policy {self.policy}")


def kube_deployment(target: str) -> tuple[str, str] | None:
    """(namespace, name) a `kubernetes:NS/NAME` target names, else None."""
    from guardian.actuators.kubernetes import split_target

    name, rest = registry.parse_target(target)
    if name != "kubernetes":
        return None
    ns, dep = split_target(rest)
    return (ns, dep) if dep else None


def active_deployments(states: list[RolloutState]) -> dict[tuple[str, str], str]:
    return {d: s.id for s in states if not s.phase.terminal and (d := kube_deployment(s.target)) is not None}


class KubeWatcher:
    """Lists and watches annotated Deployments; starts observe rollouts; ends those whose Deployment is gone."""

    def __init__(self, guard: Guard, defaults: StartDefaults, *, connection: KubeConnection | None = None,
                 api_client: Any = None, namespace: str | None = None, annotation: str = POLICY_ANNOTATION,
                 clock: Clock | None = None, repeat_errors_after: float = 60.0) -> None:
        self.guard, self.defaults, self.namespace, self.annotation = guard, defaults, namespace, annotation
        self.clock = clock or guard.clock
        self.actuator = KubernetesActuator(connection=connection, api_client=api_client)
        self.repeat_errors_after = repeat_errors_after
        self._guarded: OrderedDict[tuple[str, str, int], str] = OrderedDict()
        self._problems: dict[str, float] = {}
        self._stop = threading.Event()
        self._resource_version: str | None = None

    def _list_call(self) -> tuple[Any, tuple[Any, ...]]:
        apps = self.actuator.apps
        if self.namespace:
            return apps.list_namespaced_deployment, (self.namespace,)
        return apps.list_deployment_for_all_namespaces, ()

    # -- one pass --------------------------------------------------------------------------------------
    def poll(self) -> list[RolloutState]:
        """List the Deployments, start what `consider` asks for, end rollouts of deleted ones."""
        fn, args = self._list_call()
        try:
            listed = self.actuator._call(fn, self.namespace, "*", *args)  # namespace None: the cluster scope
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
            obj = self.actuator._plain(obj)
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
        planned = PlannedStart(policy, info)
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

    def _start(self, planned: PlannedStart) -> RolloutState | None:
        i = planned.info
        spec = start_spec(self.defaults, service=planned.policy, image=i.image, strategy=Strategy.OBSERVE,
                          steps=(100,), target=planned.target, previous_image=i.previous_image,
                          reason=planned.reason, source="guardian")
        try:
            state = self.guard.start(spec)
        except RolloutConflict as e:
            logger.info("Kubernetes watcher: {}/{} not started: {}", i.namespace, i.name, e)
            return None
        except ModelMissing as e:
            self._problem(f"start:{planned.key}", f"Kubernetes watcher: cannot guard {i.namespace}/{i.name}: {e}")
            return None
        except ActuatorError as e:
            self._remember(planned, "")
            logger.error("Kubernetes watcher: guarding {}/{} failed: {}", i.namespace, i.name, e)
            return None
        self._remember(planned, state.id)
        logger.info("Kubernetes watcher: rollout {} started: {}", state.id, planned.reason)
        return state

    def _remember(self, planned: PlannedStart, rollout_id: str) -> None:
        self._guarded[planned.key] = rollout_id
        while len(self._guarded) > MAX_GUARDED:
            self._guarded.popitem(last=False)

    # -- the watch stream --------------------------------------------------------------------------------
    def watch_once(self, timeout_seconds: int = 60) -> int:
        """Follow the watch stream from the last list for up to `timeout_seconds`; returns events handled.
        An expired resourceVersion (410) lists again and resumes from the new list within that time; a broken
        stream returns early (the next pass lists again)."""
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

        fn, args = self._list_call()
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

    async def run(self, every: float, watch_seconds: int = 10) -> None:
        logger.info("Kubernetes watcher started: Deployments annotated {} in {}", self.annotation,
                    self.namespace or "every namespace")
        while not self._stop.is_set():
            try:
                await asyncio.to_thread(self.poll)
                await asyncio.to_thread(self.watch_once, watch_seconds)
            except Exception as e:  # noqa: BLE001 - the loop must survive anything one pass throws
                logger.exception("Kubernetes watcher: pass failed: {}", e)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.to_thread(self._stop.wait, every), timeout=every + 1)
        logger.info("Kubernetes watcher stopped")

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self.actuator.close()

    # -- logging that does not flood -----------------------------------------------------------------------
    def _problem(self, what: str, message: str) -> None:
        now = self.clock.now()
        last = self._problems.get(what)
        if last is None or now - last >= self.repeat_errors_after:
            logger.warning(message)
            self._problems[what] = now

    def _solved(self, what: str, message: str = "") -> None:
        if self._problems.pop(what, None) is not None and message:
            logger.info(message)


__all__ = ["KubeWatcher", "POLICY_ANNOTATION", "PlannedStart", "active_deployments", "kube_deployment"]
