"""A weighted canary on Kubernetes through the Gateway API: `kubernetes:NS/NAME?router=gateway:NS/HTTPROUTE`.

The stable Deployment NAME keeps running untouched until PROMOTE; beside it the guardian runs a canary
Deployment `NAME-canary` (the stable pod template with the new image and `track: canary`) behind a canary
Service `SERVICE-canary` (kube_canary.py), and moves the traffic with the weights of the HTTPRoute's
backendRefs (gateway_route.py), so any Gateway API implementation does the splitting (Istio, Envoy Gateway,
Contour, Traefik, NGINX Gateway Fabric...). The stable Service is the one of the route's backendRefs that
selects the Deployment's pods (or the target's `service=`); the stable pods must carry a `track` label the
stable Service selects (refused otherwise, nothing created: the stable Service would send traffic to the
canary's pods too).

- START     reads the route, the Deployment and its Service, checks the track labels; creates the canary
            Deployment (replicas: the stable's in proportion to the first step, at least 1; annotated with
            the stable's images as read now, `guardian.io/stable-image`: ROLLBACK's record) and Service,
            adds the canary's backendRef beside the stable's at weight 0, waits (at most `settle_timeout`)
            for the canary's pods to be available, then sets the first step's weight. A step that fails
            deletes what this START created, or says exactly what is left; the guard then rolls back, which
            removes the rest.
- ADVANCE   the canary's replicas first (its share of the stable's capacity, waited for until available),
            then the weights: canary = the step's percent, stable = 100 minus it, one merge patch of the
            route's rules conditional on the resourceVersion read (409: read again, at most
            `conflict_retries`); a lower weight is written before the canary scales down.
- BAKE      canary 100% with the stable's capacity; the stable Deployment keeps running at weight 0: warm,
            so a ROLLBACK during the bake is one route write.
- PAUSE / RESUME  nothing to write: the weights stay where they are.
- PROMOTE   capacity first: (1) the stable Deployment is rolled to the new image (`kubectl set image`'s
            strategic-merge patch) while the canary still carries its share, (2) the guardian waits for
            the rolling update to complete (every replica updated and available; not done within
            `settle_timeout`: PROMOTE fails saying so, nothing else changed, and is tried again), (3) only
            then does all the weight return to the stable Service — which now runs the new version — and
            (4) the canary's backendRef, Service and Deployment are removed. Taking the weight back first
            would put the canary's share on old pods, and deleting the canary first would drop its share
            onto a Service that may not have the capacity for it.
- ROLLBACK  if the stable Deployment runs the rollout's image and did not at START (the canary Deployment's
            `guardian.io/stable-image`: a PROMOTE had begun rolling it and failed, e.g. not complete within
            `settle_timeout`), first the plain actuator's `kubectl rollout undo` of it to its previous
            revision. A stable that ran the image already at START (a re-rollout of the same image) is not
            undone; nor is one when that record is gone with the canary Deployment (nothing then tells that
            the rollout changed it: the detail says so). Then the wait (at most `settle_timeout`): when the
            stable was undone or has pods of the rollout's image (this undo, one a ROLLBACK issued before and
            that timed out), until no pod of another template is left and one serves; otherwise only until one
            stable pod serves (a stable someone paused mid-change does not hold it) — the undo fails, no
            previous revision is left, or the wait ends: ROLLBACK fails saying so, the weights and the canary
            as they were. Only then canary weight 0 (stable 100), the backendRef removed, the canary Service and
            Deployment deleted (each only if the guardian made it: `guardian.io/canary-of`). Its verify fails
            while the stable runs the rollout's image that it did not run at START (by the record: once the
            canary Deployment is deleted with it, verify has nothing to check it against). Applied again it
            converges: a stable that no longer runs it is not undone, what is gone is skipped. A route that is
            gone is reported and the rest cleaned up.
- SCALE     the stable Deployment, as the plain actuator does; the canary follows at its next step.

The arms (`arm_values`): `{pod_template_hash}` is the canary Deployment's, `{previous_pod_template_hash}`
the stable's (both once their controllers have caught up); with the `track` labels the arms are also
`track=canary` and the stable pods' value, for a rule file that names them. Faults are handled as the
plain actuator handles them (kubernetes.py): a 403 names the missing permission, a 404 names the object
that is gone, a 409 is retried with a fresh read.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from guardian.actuators.base import ActionRequest
from guardian.actuators.gateway_route import (
    GROUP,
    KIND,
    PLURAL,
    VERSION,
    RouteProblem,
    others_problem,
    rules_patch,
    services,
    weighted,
    weights,
    with_canary,
    without_canary,
)
from guardian.actuators.kube_canary import (
    CANARY_SERVICE,
    ROLLOUT,
    STABLE_IMAGE,
    canary_deployment,
    canary_name,
    canary_replicas,
    canary_service,
    labels_of,
    made_by_guardian,
    recorded_stable_image,
    selects,
    track_problem,
)
from guardian.actuators.kube_target import parse_kube_target
from guardian.actuators.kubernetes import (
    MERGE_PATCH,
    UNKNOWN_ARMS,
    KubeError,
    KubernetesActuator,
    among,
    images,
    runs,
)
from guardian.domain import Action, Outcome, RolloutState


class NoStableService(KubeError):
    """The route names no Service that is plainly the Deployment's stable one."""


def available(want: int) -> Callable[[dict[str, Any]], bool]:
    """Whether a Deployment's controller has seen its spec and `want` of its pods are updated and available."""
    def done(dep: dict[str, Any]) -> bool:
        status = dep.get("status") or {}
        seen = int(status.get("observedGeneration") or 0) >= int(dep["metadata"].get("generation") or 0)
        return (seen and int(status.get("updatedReplicas") or 0) >= want
                and int(status.get("availableReplicas") or 0) >= want)
    return done


def replicas_of(dep: dict[str, Any]) -> int:
    return int(dep["spec"].get("replicas") if dep["spec"].get("replicas") is not None else 1)


def rolled_out(dep: dict[str, Any]) -> bool:
    """Whether a Deployment's rolling update is complete: every replica updated and available, no old one left."""
    replicas = replicas_of(dep)
    return available(replicas)(dep) and int((dep.get("status") or {}).get("replicas") or 0) == replicas


def switched(dep: dict[str, Any]) -> bool:
    """Whether every pod of a Deployment runs its current template (none of another left) and one at least is
    available: what ROLLBACK waits for before the weight returns to the stable. Not `rolled_out`: one pod of the
    stable that is down (a failed node, a crash loop) must not keep the rejected canary's traffic on it."""
    status = dep.get("status") or {}
    seen = int(status.get("observedGeneration") or 0) >= int(dep["metadata"].get("generation") or 0)
    replicas = replicas_of(dep)
    return (seen and int(status.get("updatedReplicas") or 0) >= replicas
            and int(status.get("replicas") or 0) <= replicas
            and int(status.get("availableReplicas") or 0) >= min(1, replicas))


def serving(dep: dict[str, Any]) -> bool:
    """Whether one pod of a Deployment at least is available (none asked for: nothing to wait for)."""
    return int((dep.get("status") or {}).get("availableReplicas") or 0) >= min(1, replicas_of(dep))


def progress(dep: dict[str, Any]) -> str:
    status = dep.get("status") or {}
    return (f"{int(status.get('updatedReplicas') or 0)}/{replicas_of(dep)} updated, "
            f"{int(status.get('availableReplicas') or 0)} available")


def paused(dep: dict[str, Any]) -> str:
    return " (the Deployment is paused: resume it)" if dep["spec"].get("paused") else ""


class GatewayCanaryActuator(KubernetesActuator):
    """A canary Deployment and Service beside the stable ones, traffic by HTTPRoute weights (module docstring)."""

    routes_traffic = True

    def __init__(self, target: str = "", **kwargs: Any) -> None:
        super().__init__(target, **kwargs)
        if not self.target.route:
            raise KubeError("kubernetes: a weighted canary needs router=gateway:NAMESPACE/HTTPROUTE in its target")
        self._services: dict[tuple[str, str], tuple[str, str]] = {}  # (ns, Deployment) -> (stable, canary) Service

    # -- the API ------------------------------------------------------------------------------------------
    @property
    def core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.client)

    @property
    def custom(self) -> Any:
        from kubernetes import client

        return client.CustomObjectsApi(self.client)

    def route_where(self, namespace: str) -> tuple[str, str]:
        return self.target.route_namespace or namespace, str(self.target.route)

    def read_route(self, namespace: str) -> dict[str, Any]:
        rns, name = self.route_where(namespace)
        return self._call(self.custom.get_namespaced_custom_object, rns, name, GROUP, VERSION, rns, PLURAL, name,
                          kind=KIND)

    def read_service(self, namespace: str, name: str) -> dict[str, Any]:
        return self._call(self.core.read_namespaced_service, namespace, name, name, namespace, kind="Service")

    def _write_route(self, namespace: str, what: str,
                     change: Callable[[dict[str, Any]], list[dict[str, Any]] | None]) -> bool:
        """Read the route, let `change` give its new rules (None: nothing to change) and merge-patch them
        conditional on the resourceVersion read; a 409 reads again. Returns whether it wrote."""
        rns, name = self.route_where(namespace)

        def attempt() -> bool:
            route = self.read_route(namespace)
            try:
                rules = change(route)
            except RouteProblem as e:
                raise KubeError(f"HTTPRoute {rns}/{name}: {e}") from e
            if rules is None or rules == (route.get("spec") or {}).get("rules"):
                return False
            self._call(self.custom.patch_namespaced_custom_object, rns, name, GROUP, VERSION, rns, PLURAL, name,
                       rules_patch(route, rules), _content_type=MERGE_PATCH, kind=KIND)
            return True

        return self._retrying(rns, name, what, attempt, kind=KIND)

    def _create(self, kind: str, namespace: str, body: dict[str, Any]) -> None:
        fn = self.apps.create_namespaced_deployment if kind == "Deployment" else self.core.create_namespaced_service
        self._call(fn, namespace, body["metadata"]["name"], namespace, body, kind=kind)

    def _read(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            return self.read(namespace, name) if kind == "Deployment" else self.read_service(namespace, name)
        except KubeError as e:
            if e.status == 404:
                return None
            raise

    def _delete(self, kind: str, namespace: str, name: str, stable: str) -> str:
        """Delete the canary's `kind` if the guardian made it (its uid a precondition: never another object
        of that name created meanwhile). Returns what it did."""
        obj = self._read(kind, namespace, name)
        if obj is None:
            return f"{kind} {namespace}/{name} already gone"
        if not made_by_guardian(obj, stable):
            return f"{kind} {namespace}/{name} left alone (not made by the guardian: no guardian.io/canary-of {stable})"
        fn = self.apps.delete_namespaced_deployment if kind == "Deployment" else self.core.delete_namespaced_service
        body = {"preconditions": {"uid": obj["metadata"]["uid"]}}
        try:
            self._call(fn, namespace, name, name, namespace, body=body, kind=kind)
        except KubeError as e:
            if e.status != 404:
                raise
            return f"{kind} {namespace}/{name} already gone"
        return f"{kind} {namespace}/{name} deleted"

    # -- which Services -----------------------------------------------------------------------------------
    def stable_service(self, route: dict[str, Any], dep: dict[str, Any]) -> dict[str, Any]:
        """The Service of the route's backendRefs that selects the Deployment's pods (or the target's
        `service=`). KubeError when there is none, or more than one, saying which the route names."""
        namespace, name = dep["metadata"]["namespace"], dep["metadata"]["name"]
        rns, rname = route["metadata"]["namespace"], route["metadata"]["name"]
        names = services(route, namespace)
        if self.target.service:
            if self.target.service not in names:
                raise NoStableService(f"HTTPRoute {rns}/{rname} has no backendRef to Service {namespace}/"
                                      f"{self.target.service} (it forwards to Services {names or 'none'} of namespace "
                                      f"{namespace})")
            return self.read_service(namespace, self.target.service)
        labels = labels_of(dep["spec"]["template"])
        seen: dict[str, str] = {}
        chosen: list[dict[str, Any]] = []
        for svc_name in names:
            svc = self._read("Service", namespace, svc_name)
            if svc is None:
                seen[svc_name] = "does not exist"
                continue
            if made_by_guardian(svc, name):
                continue
            selector = (svc.get("spec") or {}).get("selector") or {}
            seen[svc_name] = f"selects {selector}"
            if selects(selector, labels):
                chosen.append(svc)
        if len(chosen) == 1:
            return chosen[0]
        listed = "; ".join(f"{n} {why}" for n, why in seen.items()) or "none"
        if not chosen:
            raise NoStableService(f"none of the Services HTTPRoute {rns}/{rname} forwards to in namespace "
                                  f"{namespace} selects the pods of Deployment {namespace}/{name} (labels {labels}): "
                                  f"{listed}; point a backendRef at the stable Service, or name it with service=")
        raise NoStableService(f"more than one Service HTTPRoute {rns}/{rname} forwards to selects the pods of "
                              f"Deployment {namespace}/{name}: {listed}; name the stable one with service=")

    def names(self, namespace: str, name: str) -> tuple[str, str] | None:
        """(stable Service, canary Service) of the Deployment's canary: as START found them, else from the
        canary Deployment's annotation, else the target's `service=`, else the route; None if none says."""
        known = self._services.get((namespace, name))
        if known:
            return known
        canary = self._read("Deployment", namespace, canary_name(name))
        svc = ((canary or {}).get("metadata", {}).get("annotations") or {}).get(CANARY_SERVICE)
        if canary is not None and made_by_guardian(canary, name) and svc:
            found = (svc.removesuffix("-canary"), svc)
        elif self.target.service:
            found = (self.target.service, canary_name(self.target.service))
        else:
            try:
                stable = self.stable_service(self.read_route(namespace), self.read(namespace, name))["metadata"]["name"]
            except NoStableService:
                return None
            except KubeError as e:
                if e.status == 404:
                    return None
                raise
            found = (stable, canary_name(stable))
        self._services[(namespace, name)] = found
        return found

    def _names(self, namespace: str, name: str) -> tuple[str, str]:
        found = self.names(namespace, name)
        if found is None:
            raise KubeError(f"no canary of Deployment {namespace}/{name} is known: no canary Deployment the guardian "
                            "made, and no stable Service to be read from the route")
        return found

    # -- waiting ------------------------------------------------------------------------------------------
    def _wait(self, namespace: str, name: str, done: Callable[[dict[str, Any]], bool]) -> tuple[bool, dict[str, Any]]:
        """Read the Deployment every `settle_poll` seconds until `done` (True) or `settle_timeout` (False)."""
        deadline = self._monotonic() + self.connection.settle_timeout
        while True:
            dep = self.read(namespace, name)
            if done(dep):
                return True, dep
            if self._monotonic() >= deadline:
                return False, dep
            self._sleep(self.connection.settle_poll)

    # -- actions ------------------------------------------------------------------------------------------
    def _apply(self, request: ActionRequest, namespace: str, name: str) -> str:
        a = request.action
        if a is Action.START:
            return self._start(request, namespace, name)
        if a is Action.ADVANCE:
            return self._shift(namespace, name, request.weight)
        if a is Action.PROMOTE:
            return self._promote(request, namespace, name)
        if a is Action.ROLLBACK:
            stable = self._stable_back(request, namespace, name)
            return "; ".join(filter(None, (stable, self._retire(namespace, name))))
        if a in (Action.PAUSE, Action.RESUME):
            return "the weights stay as they are (they move only on START, ADVANCE, BAKE, PROMOTE and ROLLBACK)"
        return super()._apply(request, namespace, name)  # SCALE: the stable Deployment

    def _bake(self, request: ActionRequest, namespace: str, name: str) -> tuple[str, dict[str, Any]]:
        detail = self._shift(namespace, name, 100)
        dep = self.read(namespace, name)
        warm = {"deployment": name, "replicas": replicas_of(dep), "image": images(dep["spec"]["template"]),
                "weight": 0}
        return (f"{detail}; the stable Deployment {namespace}/{name} ({warm['replicas']} replicas of "
                f"{warm['image']}) keeps running at weight 0: warm, a ROLLBACK moves the traffic back with one "
                "route write", {"warm": warm})

    def _start(self, request: ActionRequest, namespace: str, name: str) -> str:
        """The canary's objects, its backendRef at 0, its pods available, then the first step's weight."""
        if request.strategy == "observe":
            raise KubeError("router=gateway runs the rollout's image as a canary: strategy 'observe' has none (the "
                            "Deployment watcher observes rolling updates with target kubernetes:NAMESPACE/NAME)")
        self._arms.pop(request.rollout_id, None)
        route, dep = self.read_route(namespace), self.read(namespace, name)
        svc = self.stable_service(route, dep)
        stable_svc = svc["metadata"]["name"]
        canary_svc = canary_name(stable_svc)
        if problem := track_problem(dep, svc) or others_problem(route, stable_svc, canary_svc, namespace):
            raise KubeError(f"refusing to start, nothing created: {problem}")
        try:
            svc_body = canary_service(svc, name, request.rollout_id)
        except ValueError as e:
            raise KubeError(f"refusing to start, nothing created: {e}") from e
        replicas = canary_replicas(replicas_of(dep), request.weight)
        dep_body = canary_deployment(dep, request.image, replicas, service=stable_svc, rollout_id=request.rollout_id)
        self._services[(namespace, name)] = (stable_svc, canary_svc)
        created: list[tuple[str, str]] = []
        try:
            for kind, body in (("Deployment", dep_body), ("Service", svc_body)):
                if self._ensure(kind, namespace, body, name, request.image):
                    created.append((kind, body["metadata"]["name"]))
            self._write_route(namespace, "writes", lambda r: with_canary(r, stable_svc, canary_svc, namespace))
        except KubeError as e:
            raise KubeError(f"{e}; {self._clean_up_start(namespace, name, created)}", e.status) from e
        canary = canary_name(name)
        try:
            detail = self._shift(namespace, name, request.weight)  # waits for the canary's pods before any weight
        except KubeError as e:
            raise KubeError(f"{e}; the canary's Deployment, Service and backendRef (weight 0) exist: the rollback "
                            "removes them", e.status) from e
        arms = self.arm_values_of(namespace, name)
        if None not in arms.values():
            self._arms[request.rollout_id] = arms
        return (f"canary Deployment {namespace}/{canary} ({replicas} of {request.image}, pod-template-hash "
                f"{arms['pod_template_hash']}) and Service {namespace}/{canary_svc} beside {stable_svc}; {detail}")

    def _ensure(self, kind: str, namespace: str, body: dict[str, Any], stable: str, image: str) -> bool:
        """Create the canary's `kind`; one the guardian made before is kept (a Deployment given `image`), one it
        did not make is refused. Returns whether it created it."""
        name = body["metadata"]["name"]
        try:
            self._create(kind, namespace, body)
            return True
        except KubeError as e:
            if e.status != 409:
                raise
        existing = self._read(kind, namespace, name)
        if existing is None or not made_by_guardian(existing, stable):
            raise KubeError(f"{kind} {namespace}/{name} exists and was not made by the guardian (no "
                            f"guardian.io/canary-of: {stable}): rename or delete it")
        if kind == "Deployment":
            self._set_image(namespace, name, image)
            self._keep_record(namespace, existing, body)
        return False

    def _keep_record(self, namespace: str, existing: dict[str, Any], body: dict[str, Any]) -> None:
        """A canary Deployment the guardian made before, kept by START: it gets this START's record of the
        stable's images (and rollout), unless this very rollout made it with one (a START tried again: its
        first reading, from before anything of the rollout touched the stable, stands)."""
        have, want = existing["metadata"].get("annotations") or {}, body["metadata"]["annotations"]
        if have.get(ROLLOUT) == want[ROLLOUT] and have.get(STABLE_IMAGE):
            return
        patch = {"metadata": {"annotations": {k: want[k] for k in (ROLLOUT, STABLE_IMAGE)}}}
        self._patch_deployment(namespace, existing["metadata"]["name"], patch, MERGE_PATCH)

    def _clean_up_start(self, namespace: str, name: str, created: list[tuple[str, str]]) -> str:
        """Delete what a failed START created (the newest first); says what was deleted and what is left. (Not
        named `_undo`: that is the plain actuator's `kubectl rollout undo`, which ROLLBACK reuses.)"""
        if not created:
            return "this START created nothing"
        said = []
        for kind, obj in reversed(created):
            try:
                said.append(self._delete(kind, namespace, obj, name))
            except KubeError as e:
                said.append(f"{kind} {namespace}/{obj} is LEFT (its deletion failed: {e})")
        return "cleaned up what this START created: " + ", ".join(said)

    def _shift(self, namespace: str, name: str, percent: int) -> str:
        """The canary at `percent` of the traffic, with its share of the stable's capacity (module docstring)."""
        if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
            raise KubeError(f"weight {percent!r} is not a percentage 0..100")
        stable_svc, canary_svc = self._names(namespace, name)
        canary = canary_name(name)
        route = self.read_route(namespace)
        now = weights(route, canary_svc, namespace)
        rns, rname = self.route_where(namespace)
        if not now:
            raise KubeError(f"HTTPRoute {rns}/{rname} has no backendRef to the canary Service {namespace}/{canary_svc} "
                            "(removed by someone?): roll back, then start again", 404)
        want = canary_replicas(replicas_of(self.read(namespace, name)), percent)
        cdep = self.read(namespace, canary)
        if percent > max(now):  # capacity first
            if replicas_of(cdep) < want:
                self._patch_spec(namespace, canary, {"replicas": want})
            ok, cdep = self._wait(namespace, canary, available(want))
            if not ok:
                raise KubeError(f"the canary Deployment {namespace}/{canary} has not {want} pods available after "
                                f"{self.connection.settle_timeout:g}s ({progress(cdep)}): the weights stay at "
                                f"{max(now)}% until it has")
        wrote = self._write_route(namespace, "writes",
                                  lambda r: weighted(r, stable_svc, canary_svc, namespace, percent))
        if replicas_of(cdep) > want:
            self._patch_spec(namespace, canary, {"replicas": want})
        said = "set" if wrote else "already"
        return (f"weights {said}: canary {canary_svc} {percent}%, stable {stable_svc} {100 - percent}% in HTTPRoute "
                f"{rns}/{rname}; canary replicas {want}")

    def _promote(self, request: ActionRequest, namespace: str, name: str) -> str:
        """The stable Deployment rolled to the new image and complete, then the weight back and the canary
        removed (module docstring: the order keeps capacity)."""
        dep = self.read(namespace, name)
        if request.image and not runs(dep["spec"]["template"], request.image):
            self._set_image(namespace, name, request.image)
        ok, dep = self._wait(namespace, name, rolled_out)
        if not ok:
            raise KubeError(f"the stable Deployment {namespace}/{name} is still rolling to {request.image} after "
                            f"{self.connection.settle_timeout:g}s ({progress(dep)}){paused(dep)}: the canary keeps "
                            "its share until it is complete; PROMOTE again")
        return (f"stable Deployment {namespace}/{name} rolled to {images(dep['spec']['template'])} "
                f"({replicas_of(dep)} replicas available); {self._retire(namespace, name)}")

    def _stable_verdict(self, request: ActionRequest, namespace: str, name: str,
                        stable: dict[str, Any]) -> tuple[bool, str]:
        """Whether ROLLBACK undoes the stable Deployment, and why not: only when it runs the rollout's image and
        the record START left on the canary Deployment (`guardian.io/stable-image`) says it did not then. A
        stable that ran it at START (a re-rollout of the same image) is not undone, and neither is one with no
        record left (the canary Deployment gone): nothing then tells that the rollout changed it. ('' as the
        reason when it does not run the image.) ROLLBACK and its verify both judge by this."""
        if not runs(stable["spec"]["template"], request.image):
            return False, ""
        where = f"the stable Deployment {namespace}/{name} runs {request.image}"
        recorded = recorded_stable_image(self._read("Deployment", namespace, canary_name(name)), name)
        if recorded is None:
            return False, (f"{where} and no record of its image at START is left (no canary Deployment the guardian "
                           f"made with {STABLE_IMAGE}): not undone, as it may have run it before this rollout; if a "
                           f"PROMOTE had begun rolling it, undo it by hand (kubectl -n {namespace} rollout undo "
                           f"deployment/{name})")
        if among(recorded, request.image):
            return False, (f"{where} as it did at START ({STABLE_IMAGE} on the canary Deployment: {recorded}): "
                           "not undone")
        return True, ""

    def _stable_back(self, request: ActionRequest, namespace: str, name: str) -> str:
        """ROLLBACK's first step. The stable Deployment undone when `_stable_verdict` says so (the plain
        actuator's `kubectl rollout undo` to its previous revision); then, undone or not, the wait until its
        rolling update is complete (whatever rolls it: this undo, an earlier ROLLBACK's that timed out, anyone's),
        as the weights move only after (`switched`: no pod of another template left, one at least available) —
        when the stable runs the rejected image or has pods of it; otherwise only until one stable pod serves
        (`serving`: a stable paused with a pending change, or someone else's update stuck, must not hold it).
        Says what was decided ('' when there was nothing to say: a stable not on the image and complete, or gone).
        Raises KubeError, nothing else changed, when the undo fails, leaves it on the image (no previous revision)
        or the rolling update is not complete in time."""
        dep = self._read("Deployment", namespace, name)
        if dep is None:
            return ""
        undo, said = self._stable_verdict(request, namespace, name, dep)
        where, why = f"the stable Deployment {namespace}/{name}", f"{request.image} (a PROMOTE had begun rolling it)"
        keeps = "the weights and the canary stay as they are"
        undone, rolling_before = "", not switched(dep)
        if undo:
            try:
                undone = self._rollback(request, namespace, name)  # the plain actuator's: 409 read again and retried
            except KubeError as e:
                raise KubeError(f"{where} runs {why} and its undo failed: {e}; {keeps}", e.status) from e
            dep = self._read("Deployment", namespace, name)
            if dep is None:  # deleted meanwhile: nothing to wait for, the weight goes back to what is left
                return f"{where} is gone ({undone})"
            if runs(dep["spec"]["template"], request.image):
                raise KubeError(f"{where} runs {why} and cannot be undone ({undone}); {keeps}: roll the stable back "
                                f"by hand (e.g. kubectl -n {namespace} set image deployment/{name} to the previous "
                                "image), then ROLLBACK again")
        if not undo and not self._runs_rejected(dep, request.image):
            # nothing of the rejected image on the stable: the weight goes back as soon as one stable pod serves,
            # whatever else holds the stable (paused with a pending change, someone else's stuck update)
            ok, dep = self._wait(namespace, name, serving)
            if not ok:
                raise KubeError(f"{where} has no pod available ({progress(dep)}){paused(dep)}: {keeps} (the weight "
                                "would go where nothing answers); ROLLBACK again once one is")
            return said
        ok, dep = self._wait(namespace, name, switched)
        if not ok:
            rolling = f"ran {why}: {undone}, but it is still rolling back" if undo else "is still rolling"
            raise KubeError(f"{where} {rolling} to {images(dep['spec']['template'])} after "
                            f"{self.connection.settle_timeout:g}s ({progress(dep)}){paused(dep)}: {keeps} until it "
                            f"is complete; ROLLBACK again{f' ({said})' if said else ''}")
        if undo:
            return f"{where} ran {why}: {undone} ({replicas_of(dep)} replicas available)"
        if rolling_before:
            waited = (f"{where} completed its rolling update to {images(dep['spec']['template'])} "
                      f"({replicas_of(dep)} replicas available) before the weight moved")
            return "; ".join(filter(None, (said, waited)))
        return said

    def _runs_rejected(self, dep: dict[str, Any], image: str) -> bool:
        """Whether a ReplicaSet of the stable Deployment with pods runs the rejected image (a PROMOTE's, or the
        pods an undo has yet to replace)."""
        return any(int((rs.get("status") or {}).get("replicas") or rs["spec"].get("replicas") or 0) > 0
                   and runs(rs["spec"]["template"], image) for rs in self.replicasets(dep))

    def _retire(self, namespace: str, name: str) -> str:
        """Canary weight 0 (stable 100), then its backendRef, Service and Deployment removed; what is gone is
        skipped, so it converges when applied again."""
        found = self.names(namespace, name)
        if found is None:
            return ("nothing to remove: no canary of it is known (no canary Deployment the guardian made, and no "
                    "stable Service to be read from the route)")
        stable_svc, canary_svc = found
        rns, rname = self.route_where(namespace)
        said = []
        try:
            route = self.read_route(namespace)
        except KubeError as e:
            if e.status != 404:
                raise
            route = None
            said.append(f"HTTPRoute {rns}/{rname} is gone")
        if route is not None and weights(route, canary_svc, namespace):
            if self._write_route(namespace, "writes", lambda r: weighted(r, stable_svc, canary_svc, namespace, 0)):
                said.append(f"canary weight 0% (stable {stable_svc} 100%)")
            self._write_route(namespace, "writes", lambda r: without_canary(r, canary_svc, namespace))
            said.append(f"backendRef {canary_svc} removed from HTTPRoute {rns}/{rname}")
        elif route is not None:
            said.append(f"HTTPRoute {rns}/{rname} has no backendRef to {canary_svc}")
        said.append(self._delete("Service", namespace, canary_svc, name))
        said.append(self._delete("Deployment", namespace, canary_name(name), name))
        self._services.pop((namespace, name), None)
        return "; ".join(said)

    # -- the arms and verify ------------------------------------------------------------------------------
    def arm_values_of(self, namespace: str, name: str) -> dict[str, str | None]:
        """The canary Deployment's pod-template-hash and the stable's, once their controllers caught up."""
        canary, stable = self.detect(namespace, canary_name(name)), self.detect(namespace, name)
        if not (canary.settled and stable.settled):
            return dict(UNKNOWN_ARMS)
        return {"pod_template_hash": canary.hash, "previous_pod_template_hash": stable.hash}

    def arm_values(self, state: RolloutState) -> dict[str, str | None]:
        known = self._arms.get(state.id)
        if known is not None:
            return dict(known)
        try:
            arms = self.arm_values_of(*self.where(state=state))
        except KubeError:
            return dict(UNKNOWN_ARMS)
        if None not in arms.values():
            self._arms[state.id] = arms
        return arms

    def verify(self, request: ActionRequest) -> Outcome:
        a = request.action
        namespace, name = self.where(request)
        try:
            problem = self._problem(request, namespace, name)
        except KubeError as e:
            return Outcome(False, a.value, f"kubernetes: {namespace}/{name}: {e}")
        if problem:
            return Outcome(False, a.value, f"kubernetes: {namespace}/{name}: {problem}")
        return Outcome(True, a.value, f"kubernetes: {namespace}/{name}: as asked")

    def _problem(self, request: ActionRequest, namespace: str, name: str) -> str:
        """What differs from what `request` asked for ('' when nothing)."""
        a = request.action
        if a in (Action.START, Action.ADVANCE, Action.BAKE):
            percent = 100 if a is Action.BAKE else request.weight
            stable_svc, canary_svc = self._names(namespace, name)
            route = self.read_route(namespace)
            seen = (weights(route, canary_svc, namespace), weights(route, stable_svc, namespace))
            if not seen[0] or set(seen[0]) != {percent} or set(seen[1]) != {100 - percent}:
                return f"asked for canary {percent}% / stable {100 - percent}%, the route has {seen[0]} / {seen[1]}"
            return ""
        if a in (Action.ROLLBACK, Action.PROMOTE):
            if a is Action.PROMOTE and not runs(self.read(namespace, name)["spec"]["template"], request.image):
                return f"the stable Deployment does not run {request.image}"
            stable = self._read("Deployment", namespace, name) if a is Action.ROLLBACK else None
            if stable is not None and self._stable_verdict(request, namespace, name, stable)[0]:
                return (f"the stable Deployment still runs {request.image}: it is not rolled back (it did not run "
                        f"it at START, says {STABLE_IMAGE} on the canary Deployment)")
            found = self.names(namespace, name)
            if found is None:
                return ""
            try:
                left = weights(self.read_route(namespace), found[1], namespace)
            except KubeError as e:
                if e.status != 404:
                    raise
                left = []
            canary = self._read("Deployment", namespace, canary_name(name))
            service = self._read("Service", namespace, found[1])
            mine = [f"{kind} {obj['metadata']['name']}" for kind, obj in (("Deployment", canary), ("Service", service))
                    if obj is not None and made_by_guardian(obj, name)]
            if left or mine:
                return f"the canary is not gone: backendRef weights {left}, still there: {mine or 'nothing else'}"
        return ""


def from_target(rest: str, **kwargs: Any) -> KubernetesActuator:
    """The actuator a `kubernetes:` target names: a weighted canary with `router=`, else the Deployment's own
    rolling update."""
    cls = GatewayCanaryActuator if parse_kube_target(rest).router else KubernetesActuator
    return cls(rest, **kwargs)


__all__ = ["GatewayCanaryActuator", "available", "from_target", "rolled_out"]
