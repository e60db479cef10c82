"""The `kubernetes` actuator: guards a Deployment's rolling update through the official `kubernetes` client.

Target: `kubernetes:NAMESPACE/NAME`, `kubernetes:NAME` (namespace `default`) or `kubernetes:` (the
rollout's service, in `default`), parsed by kube_target.py. With `?router=gateway:NS/HTTPROUTE` the target is a
weighted canary beside the Deployment instead (kube_gateway.py, which builds on this class). The manual,
action by action, and what was tested against what: docs/kubernetes.md.

The arms are the `pod-template-hash` of the current revision's ReplicaSet (the canary) and the previous
one's (the baseline), filled by `arm_values` — and never read before the deployment controller has caught
up with a write (`status.observedGeneration` >= `metadata.generation`, the newest ReplicaSet carrying the
Deployment's template): until then they are unknown, every check of them inconclusive.

Reads are the API's JSON, not the client's typed models (which drop the fields they do not know), and
every write is a patch of what it changes, as `kubectl` sends it, never a whole-object PUT:
- START     `observe`: reads the Deployment; other strategies: `kubectl set image`'s strategic-merge patch.
            Then it waits (at most `settle_timeout` seconds) for the controller and fixes the arms.
- PAUSE     `spec.paused: true`; RESUME / ADVANCE / PROMOTE `spec.paused: false` (merge patches carrying
            the resourceVersion read).
- BAKE      `spec.paused: false` too (the Deployment completes at 100%), once it has checked that the previous
            ReplicaSet is kept for a rollback: `spec.revisionHistoryLimit` >= 1 (0 makes the controller delete
            it as the update completes: BAKE is refused, the Deployment untouched). Kept at 0 replicas, not
            warm: the controller scales every old ReplicaSet down and would undo any other count (see
            docs/kubernetes.md, "Bake").
- ROLLBACK  `kubectl rollout undo`'s JSON patch to the target ReplicaSet's template (the rollout's baseline
            arm, else the newest one running neither the Deployment's template nor the rollout's image), with
            /metadata/resourceVersion and, for a paused Deployment, /spec/paused false in the same patch.
            Applied again it converges: a template already the target's, or a Deployment that no longer
            runs the rollout's image, sends no undo.
- SCALE     the `/scale` subresource: replicas += request.replicas (never below 1).
Writes conditional on a read are retried with a fresh read on 409 Conflict, at most `conflict_retries`.
Every action is idempotent by request.key. Faults are Outcome(ok=False) with the reason: a 403 names the
missing permission; a Deployment that is gone (404) fails every action but ROLLBACK, which succeeds with
"deleted: nothing to roll back" (watchers/kubernetes.py then ends the rollout).

Connection (`KubeConnection`): `host` (e.g. `kubectl proxy`'s http://127.0.0.1:8001, or a test stub),
else a kubeconfig (`kubeconfig` file and `context`, or $KUBECONFIG / ~/.kube/config), else the
in-cluster service account (KUBERNETES_SERVICE_HOST and the mounted token).
"""
from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from guardian.actuators.base import ActionRequest, BaseActuator
from guardian.actuators.kube_target import parse_kube_target, split_target, validate_target
from guardian.domain import Action, Outcome, RolloutState
from guardian.errors import ActuatorError

REVISION = "deployment.kubernetes.io/revision"
HASH_LABEL = "pod-template-hash"
# the annotations `kubectl rollout undo` keeps from the Deployment instead of taking the ReplicaSet's
# (kubectl polymorphichelpers/rollback.go annotationsToSkip)
UNDO_KEEPS = frozenset({"kubectl.kubernetes.io/last-applied-configuration", REVISION,
                        "deployment.kubernetes.io/revision-history", "deployment.kubernetes.io/desired-replicas",
                        "deployment.kubernetes.io/max-replicas", "deprecated.deployment.rollback.to"})
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
_FORBIDDEN = re.compile(r'cannot (\S+) resource "([^"]+)"(?: in API group "([^"]*)")?'
                        r'(?: in the namespace "([^"]+)"| (at the cluster scope))?')
UNKNOWN_ARMS: dict[str, str | None] = {"pod_template_hash": None, "previous_pod_template_hash": None}
T = TypeVar("T")


class KubeError(ActuatorError):
    """An API call failed; `status` is the HTTP status (0: no answer), the message says why."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class KubeConnection:
    """Where the API server is; see the module docstring for the order they are tried in."""

    host: str | None = None
    kubeconfig: str | None = None
    context: str | None = None
    timeout: float = 10.0  # per request, seconds
    conflict_retries: int = 5  # 409s retried with a fresh read
    settle_timeout: float = 15.0  # START: at most this long (seconds) waiting for the deployment controller
    settle_poll: float = 0.2  # ... reading the Deployment again this often

    @classmethod
    def from_settings(cls, s: Any) -> KubeConnection:
        """The connection the settings describe (kube_host, kubeconfig, kube_context, kube_settle_seconds)."""
        return cls(host=s.kube_host, kubeconfig=s.kubeconfig, context=s.kube_context,
                   settle_timeout=s.kube_settle_seconds)

    def api_client(self) -> Any:
        from kubernetes import client, config

        try:
            if self.host:
                cfg = client.Configuration()
                cfg.host = self.host.rstrip("/")
                return client.ApiClient(cfg)
            if self.kubeconfig or self.context or os.environ.get("KUBECONFIG") or Path(
                    "~/.kube/config").expanduser().exists():
                return config.new_client_from_config(config_file=self.kubeconfig, context=self.context)
            cfg = client.Configuration()
            config.load_incluster_config(client_configuration=cfg)
            return client.ApiClient(cfg)
        except Exception as e:  # noqa: BLE001 - config errors come in many types; all mean "cannot connect"
            raise KubeError(f"kubernetes: no usable cluster configuration ({type(e).__name__}: {e}); set "
                            "kube_host, or kubeconfig/kube_context, or run in a Pod with a service account") from e


def rbac_manifest(verb: str, resource: str, group: str) -> str:
    """The manifest granting `verb` on `resource`: a weighted canary's own calls (creating and deleting its
    Deployment and Service, Services, HTTPRoutes) are in rbac-gateway.yaml, every other one in rbac.yaml."""
    if verb in ("create", "delete") or resource == "services" or group == "gateway.networking.k8s.io":
        return "deploy/kubernetes/rbac-gateway.yaml"
    return "deploy/kubernetes/rbac.yaml"


def forbidden(message: str, namespace: str | None, name: str) -> KubeError:
    """A 403 as the permission to grant, read from the API server's message (namespaced: "... in the
    namespace "NS"", or "... at the cluster scope" for a request across namespaces)."""
    m = _FORBIDDEN.search(message)
    if not m:
        where = f"{namespace}/{name}" if namespace else "the cluster scope"
        return KubeError(f"forbidden on {where}: {message}", 403)
    verb, resource, group, ns, cluster = m.groups()
    manifest = rbac_manifest(verb, resource, group or "")
    resource = f"{resource}{'.' + group if group else ''}"
    ns = None if cluster else ns or namespace
    if ns is None:
        return KubeError(f"forbidden: the guardian may not {verb} {resource} at the cluster scope (missing RBAC "
                         f"permission: verb {verb!r} on resource {resource!r} at the cluster scope: a ClusterRole "
                         "and a ClusterRoleBinding, or GUARDIAN_KUBE_NAMESPACE and a Role in that namespace; see "
                         f"{manifest}); API server: {message}", 403)
    return KubeError(f"forbidden: the guardian may not {verb} {resource} in namespace {ns} (missing RBAC "
                     f"permission: verb {verb!r} on resource {resource!r} in namespace {ns!r}; see "
                     f"{manifest}); API server: {message}", 403)


def api_error(exc: Exception, namespace: str | None, name: str, kind: str = "Deployment") -> KubeError:
    """An ApiException (or a connection error) as a reason a person can act on; namespace None: a request
    at the cluster scope; `kind` names the object in a 404."""
    status = int(getattr(exc, "status", 0) or 0)
    body: dict[str, Any] = {}
    with contextlib.suppress(ValueError, TypeError):
        body = json.loads(getattr(exc, "body", None) or "{}")
    message = body.get("message") or str(getattr(exc, "reason", "") or exc)
    where = f"{namespace}/{name}" if namespace else "the cluster scope"
    if status == 403:
        return forbidden(message, namespace, name)
    if status == 404:
        return KubeError(f"{kind} {where} not found (deleted?): {message}", 404)
    if status == 0:
        return KubeError(f"Kubernetes API server unreachable: {type(exc).__name__}: {exc}", 0)
    return KubeError(f"Kubernetes API answered {status} for {where}: {message}", status)


def containers_to_set(template: dict[str, Any], image: str) -> list[str]:
    """The containers `kubectl set image` would give `image`: those whose image repository is `image`'s (else
    the first one), less those already running it."""
    repo = image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image
    containers = (template.get("spec") or {}).get("containers") or []
    chosen = [c for c in containers if c.get("image", "").split("@")[0].rsplit(":", 1)[0] == repo]
    return [c["name"] for c in chosen or containers[:1] if c.get("image") != image]


def without_hash(template: dict[str, Any]) -> dict[str, Any]:
    """A pod template without the pod-template-hash label (a ReplicaSet's, as a Deployment's)."""
    template = copy.deepcopy(template)
    labels = (template.get("metadata") or {}).get("labels") or {}
    labels.pop(HASH_LABEL, None)
    return template


def template_of(rs: dict[str, Any]) -> dict[str, Any]:
    """A ReplicaSet's pod template as a Deployment's: without the pod-template-hash label."""
    return without_hash(rs["spec"]["template"])


def same_template(rs: dict[str, Any], dep: dict[str, Any]) -> bool:
    """Whether the ReplicaSet runs the Deployment's pod template (kubectl's and the controller's
    equalIgnoreHash)."""
    return template_of(rs) == without_hash(dep["spec"]["template"])


def revision(obj: dict[str, Any]) -> int:
    try:
        return int(((obj.get("metadata") or {}).get("annotations") or {}).get(REVISION) or 0)
    except ValueError:
        return 0


def hash_of(rs: dict[str, Any] | None) -> str | None:
    return ((rs.get("metadata") or {}).get("labels") or {}).get(HASH_LABEL) if rs else None


def images(template: dict[str, Any]) -> str:
    return ",".join(c.get("image", "") for c in (template.get("spec") or {}).get("containers") or [])


def runs(template: dict[str, Any], image: str) -> bool:
    """Whether the pod template runs the rollout's image (each of a comma-joined list, as an observed
    rollout of a many-container template names them)."""
    return among(images(template), image)


def among(have: str, image: str) -> bool:
    """Whether the rollout's image (each of a comma-joined list) is among the images `have`, comma-joined as
    `images` gives a pod template's (e.g. as recorded in an annotation)."""
    known = set(have.split(","))
    return bool(image) and all(i in known for i in image.split(","))


def controller_caught_up(dep: dict[str, Any], sets: list[dict[str, Any]]) -> bool:
    """Whether the deployment controller has seen the Deployment as it is: it observed its generation
    (status.observedGeneration >= metadata.generation) and the newest ReplicaSet (`sets`, newest revision
    first) runs its pod template. Before that the ReplicaSets are a revision behind."""
    observed = int((dep.get("status") or {}).get("observedGeneration") or 0)
    return observed >= int(dep["metadata"].get("generation") or 0) and bool(sets) and same_template(sets[0], dep)


def history_limit(dep: dict[str, Any]) -> int:
    """spec.revisionHistoryLimit: the old ReplicaSets the controller keeps (apps/v1 defaults it to 10)."""
    limit = dep["spec"].get("revisionHistoryLimit")
    return 10 if limit is None else int(limit)


def undo_patch(dep: dict[str, Any], rs: dict[str, Any]) -> list[dict[str, Any]]:
    """`kubectl rollout undo`'s JSON patch (getDeploymentPatch): the ReplicaSet's template without its hash
    label, and the annotations kubectl computes (UNDO_KEEPS from the Deployment, every other one from the
    ReplicaSet); then the resourceVersion read (the patch is conditional on it) and, if the Deployment is
    paused, spec.paused false in the same write."""
    meta = dep["metadata"]
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k in UNDO_KEEPS}
    annotations |= {k: v for k, v in (rs["metadata"].get("annotations") or {}).items() if k not in UNDO_KEEPS}
    ops = [{"op": "replace", "path": "/spec/template", "value": template_of(rs)},
           {"op": "replace" if "annotations" in meta else "add", "path": "/metadata/annotations",
            "value": annotations},
           {"op": "replace", "path": "/metadata/resourceVersion", "value": meta["resourceVersion"]}]
    if dep["spec"].get("paused"):
        ops.append({"op": "replace", "path": "/spec/paused", "value": False})
    return ops


@dataclass(frozen=True)
class DeploymentRollout:
    """A Deployment's rolling update as the API reports it."""

    namespace: str
    name: str
    revision: int
    hash: str | None  # the current revision's pod-template-hash (the canary arm)
    previous_hash: str | None  # the previous revision's (the baseline arm)
    image: str
    previous_image: str | None
    replicas: int
    updated: int  # replicas of the current revision
    total: int  # replicas of every revision
    paused: bool
    annotations: dict[str, str]
    settled: bool = True  # the controller has caught up: the hashes are this template's (controller_caught_up)

    @property
    def in_progress(self) -> bool:
        return self.previous_hash is not None and (self.updated < self.replicas or self.total > self.updated)

    @property
    def arms(self) -> dict[str, str | None]:
        """The arm values, or unknown ones while the controller has not caught up."""
        if not self.settled:
            return dict(UNKNOWN_ARMS)
        return {"pod_template_hash": self.hash, "previous_pod_template_hash": self.previous_hash}


class KubernetesActuator(BaseActuator):
    """One Deployment (or each request's service's) through the API server; see the module docstring.
    Capability ArmValues (`arm_values`). One action at a time."""

    name = "kubernetes"
    routes_traffic = False  # True: a router moves the traffic (kube_gateway.GatewayCanaryActuator)

    def __init__(self, target: str = "", *, connection: KubeConnection | None = None,
                 api_client: Any = None, sleep: Callable[[float], None] = time.sleep,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        if problem := validate_target(target):
            raise KubeError(f"kubernetes: {problem}")
        self.target = parse_kube_target(target)
        if self.target.router and not self.routes_traffic:
            raise KubeError("kubernetes: a target with router= is a weighted canary: build it with "
                            "kube_gateway.from_target (the registry does)")
        self.namespace, self.deployment = self.target.namespace, self.target.name
        self.connection = connection or KubeConnection()
        self._client = api_client
        self._owns = api_client is None
        self._sleep, self._monotonic = sleep, monotonic  # injected: tests settle without waiting
        self._arms: dict[str, dict[str, str | None]] = {}  # rollout id -> its arm values, once known

    # -- the API ------------------------------------------------------------------------------------------
    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self.connection.api_client()
        return self._client

    @property
    def apps(self) -> Any:
        from kubernetes import client

        return client.AppsV1Api(self.client)

    def plain(self, model: Any) -> Any:
        """A client model (a watch event's object) as the API's JSON."""
        return self.client.sanitize_for_serialization(model)

    def deployment_lister(self, namespace: str | None) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        """The client call that lists the Deployments of `namespace` (None: of every namespace), with its
        arguments: what `list_deployments` asks, and what a watch stream follows."""
        apps = self.apps
        if namespace:
            return apps.list_namespaced_deployment, (namespace,)
        return apps.list_deployment_for_all_namespaces, ()

    def list_deployments(self, namespace: str | None) -> dict[str, Any]:
        """The Deployments of `namespace` (None: at the cluster scope) as the API's JSON list; KubeError."""
        fn, args = self.deployment_lister(namespace)
        return self._call(fn, namespace, "*", *args)

    def _call(self, fn: Any, namespace: str | None, name: str, *args: Any, kind: str = "Deployment",
              **kwargs: Any) -> Any:
        """`fn(*args, **kwargs)`'s answer as the API's JSON (not the client's typed model: it drops fields it
        does not know); failures as KubeError (namespace None: a request at the cluster scope; `kind` names
        the object a 404 is about)."""
        from kubernetes.client.exceptions import ApiException

        kwargs.setdefault("_request_timeout", self.connection.timeout)
        try:
            response = fn(*args, _preload_content=False, **kwargs)
            try:
                return json.loads(response.data or b"null")
            finally:
                response.release_conn()
        except ApiException as e:
            raise api_error(e, namespace, name, kind) from e
        except Exception as e:  # noqa: BLE001 - urllib3 / socket errors: the server did not answer
            raise api_error(e, namespace, name, kind) from e

    def _patch_deployment(self, namespace: str, name: str, body: Any, content_type: str) -> dict[str, Any]:
        return self._call(self.apps.patch_namespaced_deployment, namespace, name, name, namespace, body,
                          _content_type=content_type)

    def where(self, request: ActionRequest | None = None, state: RolloutState | None = None) -> tuple[str, str]:
        service = request.service if request else state.service if state else ""
        return self.namespace or "default", self.deployment or service

    def read(self, namespace: str, name: str) -> dict[str, Any]:
        return self._call(self.apps.read_namespaced_deployment, namespace, name, name, namespace)

    def replicasets(self, dep: dict[str, Any]) -> list[dict[str, Any]]:
        """The Deployment's ReplicaSets (by its selector, owned by its uid), newest revision first."""
        meta = dep["metadata"]
        labels = (dep["spec"].get("selector") or {}).get("matchLabels") or {}
        selector = ",".join(f"{k}={v}" for k, v in labels.items())
        listed = self._call(self.apps.list_namespaced_replica_set, meta["namespace"], meta["name"], meta["namespace"],
                            label_selector=selector)
        owned = [rs for rs in listed.get("items") or []
                 if any(o.get("uid") == meta.get("uid") for o in rs["metadata"].get("ownerReferences") or [])]
        return sorted(owned, key=revision, reverse=True)

    def detect(self, namespace: str, name: str, dep: dict[str, Any] | None = None) -> DeploymentRollout:
        """The Deployment's current and previous revision. Raises KubeError (404 when it is gone). While the
        controller has not caught up (`settled` False) they are the newest ReplicaSets it has made so far."""
        dep = dep or self.read(namespace, name)
        sets = self.replicasets(dep)
        settled = controller_caught_up(dep, sets)
        current = sets[0] if sets else None
        older = [rs for rs in sets if current is not None and revision(rs) < revision(current)]
        previous = older[0] if older else None
        spec, status = dep["spec"], dep.get("status") or {}
        return DeploymentRollout(
            namespace=namespace, name=name, revision=revision(current) if current else revision(dep),
            hash=hash_of(current), previous_hash=hash_of(previous),
            image=images(spec["template"]), previous_image=images(previous["spec"]["template"]) if previous else None,
            replicas=int(spec.get("replicas") if spec.get("replicas") is not None else 1),
            updated=int(status.get("updatedReplicas") or 0), total=int(status.get("replicas") or 0),
            paused=bool(spec.get("paused")), annotations=dict(dep["metadata"].get("annotations") or {}),
            settled=settled)

    def settle(self, namespace: str, name: str) -> DeploymentRollout:
        """The rollout once the deployment controller has caught up with the Deployment (it has observed the
        generation just written and made or chosen its ReplicaSet), reading again every `settle_poll`
        seconds; after `settle_timeout` seconds, as it is (`settled` False)."""
        deadline = self._monotonic() + self.connection.settle_timeout
        while True:
            info = self.detect(namespace, name)
            if info.settled or self._monotonic() >= deadline:
                return info
            self._sleep(self.connection.settle_poll)

    def _retrying(self, namespace: str, name: str, what: str, attempt: Callable[[], T], kind: str = "Deployment") -> T:
        """`attempt()`, which reads afresh and writes conditionally on that read; a 409 Conflict (someone
        wrote in between) is tried again, at most `conflict_retries` times."""
        last: KubeError | None = None
        for _ in range(self.connection.conflict_retries + 1):
            try:
                return attempt()
            except KubeError as e:
                if e.status != 409:
                    raise
                last = e
        raise KubeError(f"{kind} {namespace}/{name} kept changing: {self.connection.conflict_retries + 1} "
                        f"{what} refused with 409 Conflict ({last})", 409)

    def _patch_spec(self, namespace: str, name: str, spec_patch: dict[str, Any]) -> None:
        """A merge patch of spec fields, conditional on the resourceVersion just read."""
        def attempt() -> None:
            dep = self.read(namespace, name)
            if all(dep["spec"].get(k) == v for k, v in spec_patch.items()):
                return
            body = {"metadata": {"resourceVersion": dep["metadata"]["resourceVersion"]}, "spec": spec_patch}
            self._patch_deployment(namespace, name, body, MERGE_PATCH)

        self._retrying(namespace, name, "patches", attempt)

    # -- actions --------------------------------------------------------------------------------------------
    def arm_values(self, state: RolloutState) -> dict[str, str | None]:
        """`{pod_template_hash}` and `{previous_pod_template_hash}` for this rollout's arms (None: unknown,
        as both are while the deployment controller has not caught up)."""
        known = self._arms.get(state.id)
        if known is None:
            try:
                info = self.detect(*self.where(state=state))
            except KubeError:
                return dict(UNKNOWN_ARMS)
            known = info.arms
            if known["pod_template_hash"] and known["previous_pod_template_hash"]:
                self._arms[state.id] = known
        return dict(known)

    def carry_out(self, request: ActionRequest) -> Outcome:
        namespace, name = self.where(request)
        a = request.action
        data: dict[str, Any] = {}
        try:
            if a is Action.BAKE:
                detail, data = self._bake(request, namespace, name)
            else:
                detail = self._apply(request, namespace, name)
        except KubeError as e:
            return Outcome(False, a.value, f"kubernetes: {namespace}/{name}: {e}", data={"status": e.status})
        return Outcome(True, a.value, f"kubernetes: {namespace}/{name}: {detail}", data=data)

    def _apply(self, request: ActionRequest, namespace: str, name: str) -> str:
        a = request.action
        if a is Action.ROLLBACK:
            return self._rollback(request, namespace, name)
        if a is Action.START:
            return self._start(request, namespace, name)
        if a is Action.PAUSE:
            self._patch_spec(namespace, name, {"paused": True})
            return "paused (spec.paused: true)"
        if a in (Action.RESUME, Action.ADVANCE, Action.PROMOTE):
            self._patch_spec(namespace, name, {"paused": False})
            return "rolling update resumed (spec.paused: false)"
        if a is Action.SCALE:
            want = self._retrying(namespace, name, "scales", lambda: self._scale(namespace, name, request.replicas))
            return f"scaled to {want} replicas"
        return f"nothing to do for {a.value}"

    def _bake(self, request: ActionRequest, namespace: str, name: str) -> tuple[str, dict[str, Any]]:
        """The Deployment completes at 100% (unpaused), its previous ReplicaSet kept for a ROLLBACK: refused,
        changing nothing, when the controller would delete it (revisionHistoryLimit 0) or it is gone."""
        dep = self.read(namespace, name)
        limit = history_limit(dep)
        if limit == 0:
            raise KubeError(
                "refusing to bake: spec.revisionHistoryLimit is 0, so the deployment controller deletes the previous "
                "ReplicaSet as soon as the update completes and a ROLLBACK during the bake would have no revision "
                f"to go back to. Set it to 1 or more (kubectl -n {namespace} patch deployment {name} -p "
                "'{\"spec\":{\"revisionHistoryLimit\":1}}'), or give the rule file no `bake`")
        sets = self.replicasets(dep)
        previous = self._rollback_target(request, dep, sets)
        if previous is None:
            raise KubeError("refusing to bake: no previous ReplicaSet is left to roll back to (was it deleted?); "
                            "PROMOTE instead, or roll back now")
        self._patch_spec(namespace, name, {"paused": False})
        warm = {"replicaset": previous["metadata"]["name"], "pod_template_hash": hash_of(previous),
                "revision": revision(previous), "image": images(previous["spec"]["template"]),
                "replicas": int(previous["spec"].get("replicas") or 0), "revision_history_limit": limit}
        return (f"all traffic on {images(dep['spec']['template'])}: the rolling update completes (spec.paused: "
                f"false); the previous ReplicaSet {warm['replicaset']} (revision {warm['revision']}, {warm['image']}) "
                f"kept by revisionHistoryLimit {limit} for a ROLLBACK (`rollout undo` to it), not warm: the "
                f"controller scales it to 0 (now {warm['replicas']}) and its pods start again on a rollback",
                {"warm": warm})

    def _start(self, request: ActionRequest, namespace: str, name: str) -> str:
        """Sets the image (unless observing), waits for the controller, fixes the arms if it caught up."""
        self._arms.pop(request.rollout_id, None)  # whatever was read before this START is not its arms
        if request.strategy != "observe":
            self._set_image(namespace, name, request.image)
        info = self.settle(namespace, name)
        if not info.settled:
            return (f"the deployment controller has not caught up after {self.connection.settle_timeout:g}s "
                    f"(newest ReplicaSet: revision {info.revision}, pod-template-hash {info.hash}): the arms stay "
                    "unknown, every check of them inconclusive, until it has")
        self._arms[request.rollout_id] = info.arms
        return (f"revision {info.revision} (pod-template-hash {info.hash}, previous {info.previous_hash}), "
                f"{info.updated}/{info.replicas} replicas updated")

    def _set_image(self, namespace: str, name: str, image: str) -> None:
        """`kubectl set image`: a strategic-merge patch naming the container(s) whose image repository is
        `image`'s (else the first container) with the new image; nothing when they already run it."""
        changed = containers_to_set(self.read(namespace, name)["spec"]["template"], image)
        if changed:
            patch = {"spec": {"template": {"spec": {"containers": [{"name": c, "image": image} for c in changed]}}}}
            self._patch_deployment(namespace, name, patch, STRATEGIC_MERGE_PATCH)

    def _scale(self, namespace: str, name: str, delta: int) -> int:
        """One try: the Scale read, then its replicas + delta (at least 1) conditional on its resourceVersion."""
        scale = self._call(self.apps.read_namespaced_deployment_scale, namespace, name, name, namespace)
        want = max(1, int((scale.get("spec") or {}).get("replicas") or 0) + delta)
        body = {"metadata": {"resourceVersion": scale["metadata"]["resourceVersion"]}, "spec": {"replicas": want}}
        self._call(self.apps.patch_namespaced_deployment_scale, namespace, name, name, namespace, body,
                   _content_type=MERGE_PATCH)
        return want

    def _rollback(self, request: ActionRequest, namespace: str, name: str) -> str:
        try:
            return self._retrying(namespace, name, "rollbacks", lambda: self._undo(request, namespace, name))
        except KubeError as e:
            if e.status == 404:
                return f"deleted: nothing to roll back ({e})"
            raise

    def _undo(self, request: ActionRequest, namespace: str, name: str) -> str:
        """One try of `kubectl rollout undo` to the rollout's baseline (see the module docstring)."""
        dep = self.read(namespace, name)
        if request.image and not runs(dep["spec"]["template"], request.image):  # also: this undo, repeated
            return self._resume(dep, f"no longer runs {request.image} ({images(dep['spec']['template'])}): "
                                     "nothing to roll back")
        target = self._rollback_target(request, dep, self.replicasets(dep))
        if target is None:
            return "no previous revision: nothing to roll back"
        what = (f"revision {revision(target)} (pod-template-hash {hash_of(target)}, "
                f"{images(target['spec']['template'])})")
        if same_template(target, dep):  # kubectl: "skipped rollback (current template already matches ...)"
            return self._resume(dep, f"already at {what}")
        self._patch_deployment(namespace, name, undo_patch(dep, target), JSON_PATCH)
        return f"rolled back to {what}"

    def _resume(self, dep: dict[str, Any], detail: str) -> str:
        """`detail`, after unpausing the Deployment (conditional on the read `dep`) if it is paused."""
        if not dep["spec"].get("paused"):
            return detail
        meta = dep["metadata"]
        body = {"metadata": {"resourceVersion": meta["resourceVersion"]}, "spec": {"paused": False}}
        self._patch_deployment(meta["namespace"], meta["name"], body, MERGE_PATCH)
        return f"{detail}; resumed (spec.paused: false)"

    def _rollback_target(self, request: ActionRequest, dep: dict[str, Any],
                         sets: list[dict[str, Any]]) -> dict[str, Any] | None:
        """The rollout's baseline ReplicaSet; else the newest one whose template is not the Deployment's
        and does not run the rollout's image (else the newest other one: kubectl's previous revision)."""
        wanted = self._arms.get(request.rollout_id, {}).get("previous_pod_template_hash")
        baseline = next((rs for rs in sets if wanted and hash_of(rs) == wanted), None)
        others = [rs for rs in sets if not same_template(rs, dep)]
        before = next((rs for rs in others if not runs(rs["spec"]["template"], request.image)), None)
        return baseline or before or (others[0] if others else None)

    def verify(self, request: ActionRequest) -> Outcome:
        a = request.action
        namespace, name = self.where(request)
        try:
            dep = self.read(namespace, name)
        except KubeError as e:
            if e.status == 404 and a is Action.ROLLBACK:
                return Outcome(True, a.value, f"kubernetes: {namespace}/{name} is gone")
            return Outcome(False, a.value, f"kubernetes: {namespace}/{name}: {e}")
        paused = bool(dep["spec"].get("paused"))
        if a is Action.PAUSE and not paused:
            return Outcome(False, a.value, f"kubernetes: {namespace}/{name} is not paused")
        if a in (Action.RESUME, Action.ADVANCE, Action.PROMOTE, Action.BAKE, Action.ROLLBACK) and paused:
            return Outcome(False, a.value, f"kubernetes: {namespace}/{name} is still paused")
        if a is Action.BAKE and (problem := self._bake_problem(request, dep)):
            return Outcome(False, a.value, f"kubernetes: {namespace}/{name}: {problem}")
        return Outcome(True, a.value, f"kubernetes: {namespace}/{name} as asked (revision {revision(dep)})")

    def _bake_problem(self, request: ActionRequest, dep: dict[str, Any]) -> str:
        """Why the previous ReplicaSet is not kept for a rollback during the bake ('' when it is)."""
        if history_limit(dep) == 0:
            return "spec.revisionHistoryLimit is 0: the previous ReplicaSet is not kept"
        try:
            previous = self._rollback_target(request, dep, self.replicasets(dep))
        except KubeError as e:
            return f"cannot list its ReplicaSets: {e}"
        return "" if previous is not None else "no previous ReplicaSet is left to roll back to"

    def close(self) -> None:
        if self._owns and self._client is not None:
            self._client.close()
            self._client = None


__all__ = ["DeploymentRollout", "KubeConnection", "KubeError", "KubernetesActuator", "among", "containers_to_set",
           "controller_caught_up", "runs", "split_target", "template_of", "undo_patch", "validate_target"]
