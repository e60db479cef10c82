"""The `kubernetes` actuator: guards a Deployment's rolling update through the official `kubernetes` client.

Target: `kubernetes:NAMESPACE/NAME`, `kubernetes:NAME` (namespace `default`) or `kubernetes:` (the
rollout's service, in `default`).

A rollout is a new ReplicaSet: when a Deployment's pod template changes, its controller creates (or, for
a rollback, reuses) a ReplicaSet labelled `pod-template-hash=HASH` and gives it the next revision
(`deployment.kubernetes.io/revision`, also on the Deployment). The arms are the two ReplicaSets: the
canary is the current revision's `pod-template-hash`, the baseline the previous revision's. A rule file
selects them with `arms: {label: pod_template_hash, canary: "{pod_template_hash}", baseline:
"{previous_pod_template_hash}"}` (Prometheus' kubernetes_sd role pod relabels
`__meta_kubernetes_pod_label_pod_template_hash` to `pod_template_hash`); `arm_values` fills them.

Actions (every one idempotent by request.key; a write is a fresh read then a write carrying that
read's `metadata.resourceVersion`, retried with a fresh read on 409 Conflict, at most `conflict_retries`):
- START     strategy `observe` (someone else ran `kubectl apply` / `set image`): checks the Deployment
            exists and reports its revision and arms. Other strategies: sets the image of the container
            whose image repository matches request.image (else the first) — a new ReplicaSet.
- PAUSE     `spec.paused: true` (the controller stops moving replicas; both ReplicaSets keep theirs).
- RESUME / ADVANCE / PROMOTE  `spec.paused: false`: the rolling update goes on to its end.
- ROLLBACK  what `kubectl rollout undo` does: the previous revision's ReplicaSet's pod template (without
            its `pod-template-hash` label) becomes the Deployment's template, unpaused, by a replace
            (PUT) with the resourceVersion read. A template that already equals it changes nothing.
- SCALE     the `/scale` subresource: replicas += request.replicas (never below 1).
Faults, as Outcome(ok=False) with the reason: 403 names the missing permission (verb, resource,
namespace, from the Status body's message); the API server unreachable; a Deployment that is gone (404)
fails every action but ROLLBACK, which succeeds with "deleted: nothing to roll back", so a watcher that
sees the deletion ends the rollout cleanly (engine/kube_watch.py).

Connection (`KubeConnection`): `host` (e.g. `kubectl proxy`'s http://127.0.0.1:8001, or a test stub),
else a kubeconfig (`kubeconfig` file and `context`, or $KUBECONFIG / ~/.kube/config), else the
in-cluster service account (KUBERNETES_SERVICE_HOST and the mounted token).
"""
from __future__ import annotations

import contextlib
import copy
import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guardian.actuators import ActionRequest
from guardian.domain import Action, Outcome, RolloutState
from guardian.errors import ActuatorError

REVISION = "deployment.kubernetes.io/revision"
HASH_LABEL = "pod-template-hash"
_DNS = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_FORBIDDEN = re.compile(r'cannot (\S+) resource "([^"]+)"(?: in API group "([^"]*)")?(?: in the namespace "([^"]+)")?')
_HINT = "write kubernetes:NAMESPACE/NAME, kubernetes:NAME or kubernetes:"
MAX_REMEMBERED = 10_000


class KubeError(ActuatorError):
    """An API call failed; `status` is the HTTP status (0: no answer), the message says why."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


def split_target(rest: str) -> tuple[str | None, str | None]:
    """`ns/name` -> (ns, name); `name` -> ('default', name); '' -> (None, None)."""
    rest = rest[2:] if rest.startswith("//") else rest
    if not rest:
        return None, None
    namespace, _, name = rest.rpartition("/")
    return namespace or "default", name


def validate_target(rest: str) -> str | None:
    namespace, name = split_target(rest)
    for what, value in (("namespace", namespace), ("Deployment name", name)):
        if value is not None and not _DNS.fullmatch(value):
            return f"{value!r} is not a valid {what} (lower-case letters, digits, '-', '.'); {_HINT}"
    return None


@dataclass(frozen=True)
class KubeConnection:
    """Where the API server is; see the module docstring for the order they are tried in."""

    host: str | None = None
    kubeconfig: str | None = None
    context: str | None = None
    timeout: float = 10.0  # per request, seconds
    conflict_retries: int = 5  # 409s retried with a fresh read

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


def api_error(exc: Exception, namespace: str, name: str) -> KubeError:
    """An ApiException (or a connection error) as a reason a person can act on."""
    import json

    status = int(getattr(exc, "status", 0) or 0)
    body: dict[str, Any] = {}
    with contextlib.suppress(ValueError, TypeError):
        body = json.loads(getattr(exc, "body", None) or "{}")
    message = body.get("message") or str(getattr(exc, "reason", "") or exc)
    if status == 403:
        m = _FORBIDDEN.search(message)
        if m:
            verb, resource, group, ns = m.groups()
            resource = f"{resource}{'.' + group if group else ''}"
            return KubeError(f"forbidden: the guardian may not {verb} {resource} in namespace {ns or namespace} "
                             f"(missing RBAC permission: verb {verb!r} on resource {resource!r} in namespace "
                             f"{ns or namespace!r}; see deploy/kubernetes/rbac.yaml); API server: {message}", 403)
        return KubeError(f"forbidden on {namespace}/{name}: {message}", 403)
    if status == 404:
        return KubeError(f"Deployment {namespace}/{name} not found (deleted?): {message}", 404)
    if status == 0:
        return KubeError(f"Kubernetes API server unreachable: {type(exc).__name__}: {exc}", 0)
    return KubeError(f"Kubernetes API answered {status} for {namespace}/{name}: {message}", status)


def template_of(rs: dict[str, Any]) -> dict[str, Any]:
    """A ReplicaSet's pod template as a Deployment's: without the pod-template-hash label."""
    template = copy.deepcopy(rs["spec"]["template"])
    labels = (template.get("metadata") or {}).get("labels") or {}
    labels.pop(HASH_LABEL, None)
    return template


def revision(obj: dict[str, Any]) -> int:
    try:
        return int(((obj.get("metadata") or {}).get("annotations") or {}).get(REVISION) or 0)
    except ValueError:
        return 0


def images(template: dict[str, Any]) -> str:
    return ",".join(c.get("image", "") for c in (template.get("spec") or {}).get("containers") or [])


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

    @property
    def in_progress(self) -> bool:
        return self.previous_hash is not None and (self.updated < self.replicas or self.total > self.updated)


class KubernetesActuator:
    name = "kubernetes"
    supports: frozenset[Action] = frozenset(Action)

    def __init__(self, target: str = "", *, connection: KubeConnection | None = None,
                 api_client: Any = None) -> None:
        if problem := validate_target(target):
            raise KubeError(f"kubernetes: {problem}")
        self.namespace, self.deployment = split_target(target)
        self.connection = connection or KubeConnection()
        self._client = api_client
        self._owns = api_client is None
        self._done: OrderedDict[str, Outcome] = OrderedDict()
        self._arms: dict[str, dict[str, str]] = {}  # rollout id -> its arm values, once known
        self._lock = threading.Lock()

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

    def _plain(self, model: Any) -> Any:
        return self.client.sanitize_for_serialization(model)

    def _call(self, fn: Any, namespace: str, name: str, *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException

        kwargs.setdefault("_request_timeout", self.connection.timeout)
        try:
            return self._plain(fn(*args, **kwargs))
        except ApiException as e:
            raise api_error(e, namespace, name) from e
        except Exception as e:  # noqa: BLE001 - urllib3 / socket errors: the server did not answer
            raise api_error(e, namespace, name) from e

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
        """The Deployment's current and previous revision. Raises KubeError (404 when it is gone)."""
        dep = dep or self.read(namespace, name)
        sets = self.replicasets(dep)
        current_rev = revision(dep)
        current = next((rs for rs in sets if revision(rs) == current_rev), sets[0] if sets else None)
        older = [rs for rs in sets if current is not None and revision(rs) < revision(current)]
        previous = older[0] if older else None
        spec, status = dep["spec"], dep.get("status") or {}
        hash_of = (lambda rs: rs["metadata"].get("labels", {}).get(HASH_LABEL) if rs else None)  # noqa: E731
        return DeploymentRollout(
            namespace=namespace, name=name, revision=current_rev, hash=hash_of(current),
            previous_hash=hash_of(previous),
            image=images(spec["template"]), previous_image=images(previous["spec"]["template"]) if previous else None,
            replicas=int(spec.get("replicas") if spec.get("replicas") is not None else 1),
            updated=int(status.get("updatedReplicas") or 0), total=int(status.get("replicas") or 0),
            paused=bool(spec.get("paused")), annotations=dict(dep["metadata"].get("annotations") or {}))

    def _fresh(self, namespace: str, name: str, what: str, send: Any) -> Any:
        """`send(dep)` on a fresh read of the Deployment; a 409 Conflict (someone wrote it in between) is
        retried with a fresh read, at most `conflict_retries` times."""
        last: KubeError | None = None
        for _ in range(self.connection.conflict_retries + 1):
            try:
                return send(self.read(namespace, name))
            except KubeError as e:
                if e.status != 409:
                    raise
                last = e
        raise KubeError(f"Deployment {namespace}/{name} kept changing: {self.connection.conflict_retries + 1} "
                        f"{what} refused with 409 Conflict ({last})", 409)

    def _write(self, namespace: str, name: str, change: Any) -> dict[str, Any] | None:
        """`change(dep)` -> the new object (None: nothing to do), replaced (PUT) with the resourceVersion read."""
        def send(dep: dict[str, Any]) -> dict[str, Any] | None:
            new = change(copy.deepcopy(dep))
            if new is None:
                return None
            return self._call(self.apps.replace_namespaced_deployment, namespace, name, name, namespace, new)

        return self._fresh(namespace, name, "writes", send)

    def _patch(self, namespace: str, name: str, spec_patch: dict[str, Any]) -> None:
        """A merge patch of spec fields, conditional on the resourceVersion just read."""
        def send(dep: dict[str, Any]) -> None:
            if all(dep["spec"].get(k) == v for k, v in spec_patch.items()):
                return
            body = {"metadata": {"resourceVersion": dep["metadata"]["resourceVersion"]}, "spec": spec_patch}
            self._call(self.apps.patch_namespaced_deployment, namespace, name, name, namespace, body,
                       _content_type="application/merge-patch+json")

        self._fresh(namespace, name, "patches", send)

    # -- actions --------------------------------------------------------------------------------------------
    def arm_values(self, state: RolloutState) -> dict[str, str | None]:
        """`{pod_template_hash}` and `{previous_pod_template_hash}` for this rollout's arms (None: unknown)."""
        known = self._arms.get(state.id)
        if known is None:
            try:
                info = self.detect(*self.where(state=state))
            except KubeError:
                return {"pod_template_hash": None, "previous_pod_template_hash": None}
            known = {"pod_template_hash": info.hash, "previous_pod_template_hash": info.previous_hash}
            if info.hash and info.previous_hash:
                self._arms[state.id] = known
        return dict(known)

    def apply(self, request: ActionRequest) -> Outcome:
        with self._lock:
            if (known := self._done.get(request.key)) is not None:
                return known
            namespace, name = self.where(request)
            a = request.action
            try:
                detail = self._apply(request, namespace, name)
            except KubeError as e:
                return Outcome(False, a.value, f"kubernetes: {namespace}/{name}: {e}", data={"status": e.status})
            outcome = Outcome(True, a.value, f"kubernetes: {namespace}/{name}: {detail}")
            self._done[request.key] = outcome
            while len(self._done) > MAX_REMEMBERED:
                self._done.popitem(last=False)
            return outcome

    def _apply(self, request: ActionRequest, namespace: str, name: str) -> str:
        a = request.action
        if a is Action.ROLLBACK:
            return self._rollback(request, namespace, name)
        if a is Action.START:
            info = self.detect(namespace, name)
            if request.strategy != "observe":
                self._set_image(namespace, name, request.image)
                info = self.detect(namespace, name)
            self._arms[request.rollout_id] = {"pod_template_hash": info.hash,
                                              "previous_pod_template_hash": info.previous_hash}
            return (f"revision {info.revision} (pod-template-hash {info.hash}, previous {info.previous_hash}), "
                    f"{info.updated}/{info.replicas} replicas updated")
        if a is Action.PAUSE:
            self._patch(namespace, name, {"paused": True})
            return "paused (spec.paused: true)"
        if a in (Action.RESUME, Action.ADVANCE, Action.PROMOTE):
            self._patch(namespace, name, {"paused": False})
            return "rolling update resumed (spec.paused: false)"
        if a is Action.SCALE:
            scale = self._call(self.apps.read_namespaced_deployment_scale, namespace, name, name, namespace)
            want = max(1, int((scale.get("spec") or {}).get("replicas") or 0) + request.replicas)
            self._call(self.apps.patch_namespaced_deployment_scale, namespace, name, name, namespace,
                       {"spec": {"replicas": want}}, _content_type="application/merge-patch+json")
            return f"scaled to {want} replicas"
        return f"nothing to do for {a.value}"

    def _set_image(self, namespace: str, name: str, image: str) -> None:
        repo = image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image

        def change(dep: dict[str, Any]) -> dict[str, Any] | None:
            containers = dep["spec"]["template"]["spec"]["containers"]
            chosen = [c for c in containers if c.get("image", "").split("@")[0].rsplit(":", 1)[0] == repo]
            chosen = chosen or containers[:1]
            if all(c.get("image") == image for c in chosen):
                return None
            for c in chosen:
                c["image"] = image
            return dep

        self._write(namespace, name, change)

    def _rollback(self, request: ActionRequest, namespace: str, name: str) -> str:
        try:
            dep = self.read(namespace, name)
        except KubeError as e:
            if e.status == 404:
                return f"deleted: nothing to roll back ({e})"
            raise
        sets = self.replicasets(dep)
        wanted = self._arms.get(request.rollout_id, {}).get("previous_pod_template_hash")
        target = next((rs for rs in sets if rs["metadata"].get("labels", {}).get(HASH_LABEL) == wanted), None)
        if target is None:  # as kubectl: the newest revision below the current one
            older = [rs for rs in sets if revision(rs) < revision(dep)]
            target = older[0] if older else None
        if target is None:
            return "no previous revision: nothing to roll back"
        template = template_of(target)

        def change(d: dict[str, Any]) -> dict[str, Any] | None:
            if d["spec"]["template"] == template and not d["spec"].get("paused"):
                return None
            d["spec"]["template"] = copy.deepcopy(template)
            d["spec"]["paused"] = False  # kubectl refuses to undo a paused Deployment; the guardian resumes it
            return d

        changed = self._write(namespace, name, change)
        verb = "rolled back" if changed is not None else "already at"
        target_hash = target["metadata"]["labels"].get(HASH_LABEL)
        return f"{verb} revision {revision(target)} (pod-template-hash {target_hash}, {images(template)})"

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
        if a in (Action.RESUME, Action.ADVANCE, Action.PROMOTE, Action.ROLLBACK) and paused:
            return Outcome(False, a.value, f"kubernetes: {namespace}/{name} is still paused")
        return Outcome(True, a.value, f"kubernetes: {namespace}/{name} as asked (revision {revision(dep)})")

    def close(self) -> None:
        if self._owns and self._client is not None:
            self._client.close()
            self._client = None


_DEPS = {"kube_connection": "connection", "kube_client": "api_client"}


def from_target(rest: str, **deps: Any) -> KubernetesActuator:
    """Registry factory: deps `kube_connection` (KubeConnection) and `kube_client` (an ApiClient) are
    used, every other one ignored."""
    return KubernetesActuator(rest, **{_DEPS[k]: v for k, v in deps.items() if k in _DEPS and v is not None})


__all__ = ["DeploymentRollout", "KubeConnection", "KubeError", "KubernetesActuator", "from_target", "split_target",
           "template_of", "validate_target"]
