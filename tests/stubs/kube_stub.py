"""A STUB of the Kubernetes API server (no API server can run on the test machine): the few apps/v1
endpoints the `kubernetes` actuator and watcher use, as the Kubernetes API reference documents them,
served by a real HTTP server on a free loopback port (in a thread). The official client talks to it
through a `Configuration(host=stub.url)`.

    GET    /apis/apps/v1/namespaces/NS/deployments[?labelSelector=&watch=true&resourceVersion=&timeoutSeconds=
                                                    &allowWatchBookmarks=true]
    GET    /apis/apps/v1/deployments[?watch=true...]                  (every namespace: the cluster scope)
    GET    /apis/apps/v1/namespaces/NS/deployments/NAME
    PATCH  /apis/apps/v1/namespaces/NS/deployments/NAME               merge-patch, strategic-merge-patch, json-patch
    PUT    /apis/apps/v1/namespaces/NS/deployments/NAME               replace
    DELETE /apis/apps/v1/namespaces/NS/deployments/NAME
    GET    /apis/apps/v1/namespaces/NS/replicasets?labelSelector=a=b,c=d
    GET    /apis/apps/v1/namespaces/NS/deployments/NAME/scale         autoscaling/v1 Scale
    PATCH  /apis/apps/v1/namespaces/NS/deployments/NAME/scale
    POST   /apis/apps/v1/namespaces/NS/deployments                    create (the weighted canary's Deployment)
    POST, GET, PATCH, DELETE  /api/v1/namespaces/NS/services[/NAME]   core v1 Services
    POST, GET, PATCH, PUT, DELETE  /apis/gateway.networking.k8s.io/v1/namespaces/NS/httproutes[/NAME]

The weighted canary's part (router=gateway; each behaviour checked by tests/integration/test_kubernetes_gateway.py):
a created Deployment is refused with 409 AlreadyExists when it exists and with 422 when its selector does not
select its template's labels; a Service with 409, and with 422 for a name that is not an RFC 1035 label, no
ports, or a clusterIP / nodePort already allocated (one copied from another Service); a DELETE honours
DeleteOptions.preconditions (uid: 409 when the object is another one). HTTPRoutes are a custom resource: a
PATCH takes merge-patch and json-patch, a strategic-merge patch is 415 as the API server answers it for
custom resources; every write is pruned, defaulted (backendRef group "", kind Service, weight 1) and
validated by the CRD's schema from the Gateway API's v1 types (tests/stubs/httproute_schema.py,
tests/contracts/gateway_httproute_v1_extract.json: weight 0..1000000, at most 16 backendRefs per rule and 16
rules, a Service ref needs its port, ...: 422 Invalid naming the field), conditional on a resourceVersion
(409; `route_conflicts` makes the next N writes race a concurrent writer); `route_history` keeps each
written spec. `rolling_every` > 0 runs the deployment controller on its own: every incomplete rolling
update moves one replica that often (a guardian in another process waits on it).

Faithful where the guardian's clients depend on it (each checked by a test in
tests/integration/test_kubernetes_actuator.py; the requests themselves are checked against the official
OpenAPI document by tests/unit/test_contract_kubernetes.py):
- The API server and the deployment controller are apart. A write is stored at once: a new
  `metadata.resourceVersion`, `metadata.generation` + 1 when (and only when) the spec changed, status
  untouched, a MODIFIED event. The controller runs after it, `controller_delay` seconds later (0: right
  after the write, before the answer is sent; > 0: in a timer thread, as kube-controller-manager does):
  a changed pod template gets a ReplicaSet named NAME-HASH labelled `pod-template-hash=HASH` (an existing
  one with the same template is reused, as a rollback does) and the next revision
  (`deployment.kubernetes.io/revision` on both); the Deployment's annotations are copied to it (without
  kubectl's skipped ones); a paused Deployment gets no new ReplicaSet; then status, with
  `status.observedGeneration` = the generation it saw. `progress()` moves replicas from old ReplicaSets to
  the new one, one per call, unless the Deployment is paused; once the update is complete it deletes the
  old ReplicaSets at 0 replicas beyond `spec.revisionHistoryLimit` (10 when absent), oldest revision first,
  as the controller's cleanupDeployment does (so with 0, the previous ReplicaSet is gone).
- Optimistic concurrency: a write whose body (PUT) or patch result carries a different
  `metadata.resourceVersion` is refused with 409 Conflict, the Scale subresource's too; `conflicts` makes
  the next N writes race a concurrent writer.
- PATCH with a Content-Type the API server does not accept is 415 UnsupportedMediaType with its message.
- 403 in the API server's wording (`forbid(verb, resource, namespace)`, namespace "" = the cluster scope:
  "... at the cluster scope"); 404 for unknown objects; every error a `Status` body.
- `?watch=true` answers newline-delimited JSON `{"type": ADDED|MODIFIED|DELETED, "object": ...}` from the
  given resourceVersion until `timeoutSeconds`. A resourceVersion older than `compacted` (see
  `compact()`, etcd's compaction) is answered as the API server does: HTTP 200 and one event
  `{"type": "ERROR", "object": Status 410 Expired "too old resource version: X (Y)"}`. With
  `allowWatchBookmarks=true`, a BOOKMARK event carrying only the current resourceVersion every
  `bookmark_every` seconds without other events.
- Every request is recorded: `requests` (method, path, status; a watch as method "WATCH") and `calls`
  (method, path, query parameters, Content-Type, parsed body, status, answer) for the contract test.
Not modelled: admission, defaulting, field validation, strategic-merge directives ($patch, $retainKeys),
label selectors other than equality, the real pod-template-hash function (here a digest of the template).
"""
from __future__ import annotations

import copy
import hashlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from demo.stack import free_port
from tests.stubs.httproute_schema import normalize

REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
HASH = "pod-template-hash"
# the Deployment annotations the controller does not copy to a ReplicaSet (and `kubectl rollout undo` keeps)
NOT_COPIED = frozenset({"kubectl.kubernetes.io/last-applied-configuration", REVISION, REVISION_HISTORY,
                        DESIRED_REPLICAS, "deployment.kubernetes.io/max-replicas", "deprecated.deployment.rollback.to"})
# what the API server accepts as a PATCH of a built-in resource (apiserver installer.go; +cbor behind a gate)
PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json",
               "application/strategic-merge-patch+json", "application/apply-patch+yaml")
USER = "system:serviceaccount:guardian:guardian"
ROUTE_GROUP = "gateway.networking.k8s.io"


def status_body(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "details": details or {}, "code": code}


class KubeError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.body = status_body(code, reason, message, details)
        self.code = code


def merge_patch(target: Any, patch: Any, *, strategic: bool = False) -> Any:
    """RFC 7386 merge patch; with `strategic`, lists of objects with a `name` are merged by name (as the
    strategic merge patch does for containers, env, ports)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        elif (strategic and isinstance(v, list) and isinstance(out.get(k), list)
              and all(isinstance(i, dict) and "name" in i for i in v + out[k])):
            merged = {i["name"]: i for i in out[k]}
            for item in v:
                merged[item["name"]] = merge_patch(merged.get(item["name"], {}), item, strategic=True)
            out[k] = list(merged.values())
        else:
            out[k] = merge_patch(out.get(k), v, strategic=strategic)
    return out


def json_patch(target: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """RFC 6902 add / replace / remove / test on object paths (enough for `kubectl rollout undo`'s patch);
    `replace` and `remove` of a member that does not exist fail, as the API server's json-patch does."""
    if not isinstance(ops, list):
        raise KubeError(400, "BadRequest", "json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    out = copy.deepcopy(target)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].lstrip("/").split("/")]
        node = out
        for p in parts[:-1]:
            node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})
        last: Any = parts[-1]
        if isinstance(node, list):  # an index, or "-" (after the last) for add
            last = len(node) if last == "-" and op["op"] == "add" else int(last)
            if not 0 <= last <= len(node) - (op["op"] != "add"):
                raise KubeError(422, "Invalid", f"{op['op']} operation does not apply: doc is missing path: "
                                f"{op['path']}")
            if op["op"] == "add":
                node.insert(last, copy.deepcopy(op["value"]))
                continue
        elif op["op"] in ("replace", "remove", "test") and last not in node:
            raise KubeError(422, "Invalid", f"{op['op']} operation does not apply: doc is missing path: {op['path']}")
        if op["op"] in ("add", "replace"):
            node[last] = copy.deepcopy(op["value"])
        elif op["op"] == "remove":
            node.pop(last)
        elif op["op"] == "test" and node[last] != op["value"]:
            raise KubeError(422, "Invalid", f"the test operation on {op['path']} failed")
    return out


def without_hash(template: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(template)
    ((out.get("metadata") or {}).get("labels") or {}).pop(HASH, None)
    return out


def template_hash(template: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(without_hash(template), sort_keys=True).encode()).hexdigest()[:10]


class KubeStub:
    def __init__(self, *, controller_delay: float = 0.0, bookmark_every: float = 0.5,
                 rolling_every: float = 0.0) -> None:
        self.deployments: dict[tuple[str, str], dict[str, Any]] = {}
        self.services: dict[tuple[str, str], dict[str, Any]] = {}  # core v1 Services
        self.httproutes: dict[tuple[str, str], dict[str, Any]] = {}  # gateway.networking.k8s.io/v1 HTTPRoutes
        self.route_history: list[tuple[str, dict[str, Any]]] = []  # (namespace/name, spec) after each route write
        self.route_conflicts = 0  # the next N writes to an HTTPRoute race a concurrent writer (-> 409)
        self.rolling_every = rolling_every  # > 0: the controller moves every rolling update on its own, this often
        self.replicasets: dict[tuple[str, str], dict[str, Any]] = {}
        self.forbidden: set[tuple[str, str, str]] = set()  # (verb, resource, namespace; "" = cluster scope)
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status)
        self.calls: list[dict[str, Any]] = []  # every request in full (see the module docstring)
        self.conflicts = 0  # the next N writes to a Deployment race a concurrent writer (-> 409)
        self.events: list[tuple[int, str, str, dict[str, Any]]] = []  # (rv, type, namespace, Deployment)
        self.controller_delay = controller_delay  # seconds between a write and the controller's sync
        self.bookmark_every = bookmark_every
        self.compacted = 0  # a watch from a resourceVersion below this one gets 410 Expired
        self._seen_replicas: dict[tuple[str, str], int] = {}  # spec.replicas at the controller's last sync
        self.down: dict[tuple[str, str], int] = {}  # pods of a Deployment not ready (a failed node): by its status
        self._timers: list[threading.Timer] = []
        self._rv = 100
        self._ips = 0
        self._stopped = threading.Event()
        self._lock = threading.Condition()
        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="kube-stub", daemon=True)  # stop() waits at most one poll

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> KubeStub:
        self._thread.start()
        if self.rolling_every > 0:
            threading.Thread(target=self._roll, name="kube-stub-controller", daemon=True).start()
        return self

    def _roll(self) -> None:
        """The deployment controller on its own (`rolling_every` > 0): every Deployment whose update is not
        complete moves one replica each `rolling_every` seconds, as `progress()` does when a test calls it."""
        while not self._stopped.wait(self.rolling_every):
            with self._lock:
                for (ns, name), dep in list(self.deployments.items()):
                    new = self._current(ns, name)
                    old = [rs for rs in self._owned(ns, name) if rs is not new and rs["spec"]["replicas"] > 0]
                    if new is not None and (old or new["spec"]["replicas"] < dep["spec"]["replicas"]):
                        self.progress(ns, name)

    def stop(self) -> None:
        self._stopped.set()
        for timer in self._timers:
            timer.cancel()
        with self._lock:
            self._lock.notify_all()
        self.server.shutdown()
        self.server.server_close()

    # -- test helpers (what kubectl and the controllers would do) ------------------------------------------
    def forbid(self, verb: str, resource: str, namespace: str) -> None:
        """Refuse `verb` on `resource` in `namespace` ("": at the cluster scope) with 403, as RBAC does."""
        self.forbidden.add((verb, resource, namespace))

    def compact(self) -> int:
        """etcd compacts (or the watch cache moves on): every resourceVersion before now is too old to watch
        from. Returns the oldest one still watchable."""
        with self._lock:
            self.compacted = self._rv
            return self.compacted

    def settled(self, namespace: str, name: str) -> bool:
        """Whether the controller has observed the Deployment's latest generation."""
        with self._lock:
            dep = self.deployments[(namespace, name)]
            return (dep.get("status") or {}).get("observedGeneration") == dep["metadata"]["generation"]

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def create_deployment(self, namespace: str, name: str, image: str, *, replicas: int = 2,
                          annotations: dict[str, str] | None = None,
                          extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """A Deployment as `kubectl apply` creates it, its first ReplicaSet complete at once; `extra` is
        merged into it (fields a client's typed model may not know)."""
        labels = {"app": name}
        dep = {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{namespace}-{name}", "generation": 1,
                         "labels": dict(labels), "annotations": dict(annotations or {})},
            "spec": {"replicas": replicas, "selector": {"matchLabels": dict(labels)},
                     "strategy": {"type": "RollingUpdate",
                                  "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                     "template": {"metadata": {"labels": dict(labels)},
                                  "spec": {"containers": [{"name": name, "image": image}]}}},
            "status": {},
        }
        dep = merge_patch(dep, extra or {}, strategic=True)
        with self._lock:
            return self._add_deployment(dep)

    def _add_deployment(self, dep: dict[str, Any], *, at_once: bool = True) -> dict[str, Any]:
        """A new Deployment stored (its resourceVersion, an ADDED event), then the controller's first sync: at
        once (a test's given cluster), or as after any write (`controller_delay`: a Deployment the client created)."""
        namespace, name = dep["metadata"]["namespace"], dep["metadata"]["name"]
        dep["metadata"]["resourceVersion"] = self._next_rv()
        self.deployments[(namespace, name)] = dep
        self._event("ADDED", namespace, dep)
        written = copy.deepcopy(dep)
        if not at_once:
            self._kick(namespace, name)
            return written
        self._sync(namespace, name)
        return copy.deepcopy(self.deployments[(namespace, name)])

    def set_image(self, namespace: str, name: str, image: str) -> None:
        """`kubectl set image` on the first container: a spec write, then (maybe later) the controller."""
        with self._lock:
            dep = self.deployments[(namespace, name)]
            new = copy.deepcopy(dep)
            new["spec"]["template"]["spec"]["containers"][0]["image"] = image
            new["metadata"].pop("resourceVersion")
            self._store(namespace, name, dep, new)

    def delete_deployment(self, namespace: str, name: str) -> None:
        with self._lock:
            dep = self.deployments.pop((namespace, name))
            for key in [k for k, rs in self.replicasets.items() if self._owner(rs) == dep["metadata"]["uid"]]:
                del self.replicasets[key]
            dep["metadata"]["resourceVersion"] = self._next_rv()
            self._event("DELETED", namespace, dep)

    def progress(self, namespace: str, name: str, steps: int = 1) -> None:
        """The controller's next pass: it syncs, then the rolling update moves `steps` replicas to the
        newest ReplicaSet (none while paused)."""
        with self._lock:
            self._sync(namespace, name)
            dep = self.deployments[(namespace, name)]
            new = self._current(namespace, name)
            if dep["spec"].get("paused") or new is None:
                return
            for _ in range(steps):
                old = [rs for rs in self._owned(namespace, name) if rs is not new and rs["spec"]["replicas"] > 0]
                want = dep["spec"]["replicas"]
                if new["spec"]["replicas"] < want:
                    new["spec"]["replicas"] += 1
                if old and sum(rs["spec"]["replicas"] for rs in old) + new["spec"]["replicas"] > want:
                    old[0]["spec"]["replicas"] -= 1
            for rs in self._owned(namespace, name):
                rs["status"]["replicas"] = rs["spec"]["replicas"]
            self._clean_up(namespace, name, new)
            self._status(namespace, name)
            dep["metadata"]["resourceVersion"] = self._next_rv()
            self._event("MODIFIED", namespace, dep)

    def _clean_up(self, namespace: str, name: str, new: dict[str, Any]) -> None:
        """The controller's cleanupDeployment once the update is complete (every replica on `new`): the old
        ReplicaSets at 0 replicas beyond spec.revisionHistoryLimit are deleted, oldest revision first."""
        dep = self.deployments[(namespace, name)]
        old = [rs for rs in self._owned(namespace, name) if rs is not new]
        if new["spec"]["replicas"] < dep["spec"]["replicas"] or any(rs["spec"]["replicas"] for rs in old):
            return
        limit = dep["spec"].get("revisionHistoryLimit")
        extra = len(old) - (10 if limit is None else int(limit))
        for rs in sorted(old, key=lambda rs: int(rs["metadata"]["annotations"][REVISION]))[:max(0, extra)]:
            del self.replicasets[(namespace, rs["metadata"]["name"])]

    # -- the API server's side of a write -------------------------------------------------------------------
    def _store(self, namespace: str, name: str, dep: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
        """What the API server does with a new version of a Deployment: the resourceVersion precondition,
        the system fields kept (uid, generation, status: a client cannot set them here), generation + 1 if
        the spec changed, a new resourceVersion, a MODIFIED event; then the controller is told."""
        want = (new.get("metadata") or {}).get("resourceVersion")
        if want and want != dep["metadata"]["resourceVersion"]:
            raise KubeError(409, "Conflict", f'Operation cannot be fulfilled on deployments.apps "{name}": the object '
                            "has been modified; please apply your changes to the latest version and try again",
                            {"name": name, "group": "apps", "kind": "deployments"})
        new.setdefault("metadata", {})
        for key in ("uid", "name", "namespace", "generation"):
            new["metadata"][key] = dep["metadata"][key]
        if new.get("spec") != dep["spec"]:
            new["metadata"]["generation"] = dep["metadata"]["generation"] + 1
        new["status"] = dep["status"]
        new["metadata"]["resourceVersion"] = self._next_rv()
        self.deployments[(namespace, name)] = new
        self._event("MODIFIED", namespace, new)
        written = copy.deepcopy(new)
        self._kick(namespace, name)
        return written

    def _race(self, namespace: str, dep: dict[str, Any]) -> None:
        """While `conflicts` > 0, someone else writes the Deployment after the client read it (just before
        its write arrives): a write conditional on the read's resourceVersion then gets 409."""
        if self.conflicts > 0:
            self.conflicts -= 1
            dep["metadata"].setdefault("annotations", {})["other-writer"] = self._next_rv()
            dep["metadata"]["resourceVersion"] = self._next_rv()
            self._event("MODIFIED", namespace, dep)

    def _kick(self, namespace: str, name: str) -> None:
        """The deployment controller hears of the write: syncs now, or `controller_delay` seconds later."""
        if self.controller_delay <= 0:
            self._sync(namespace, name)
            return
        timer = threading.Timer(self.controller_delay, self._sync_later, (namespace, name))
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def _sync_later(self, namespace: str, name: str) -> None:
        with self._lock:
            if (namespace, name) in self.deployments:
                self._sync(namespace, name)

    # -- the controller -----------------------------------------------------------------------------------
    @staticmethod
    def _owner(rs: dict[str, Any]) -> str:
        return rs["metadata"]["ownerReferences"][0]["uid"]

    def _owned(self, namespace: str, name: str) -> list[dict[str, Any]]:
        uid = self.deployments[(namespace, name)]["metadata"]["uid"]
        return [rs for (ns, _), rs in sorted(self.replicasets.items()) if ns == namespace and self._owner(rs) == uid]

    def _current(self, namespace: str, name: str) -> dict[str, Any] | None:
        revision = self.deployments[(namespace, name)]["metadata"].get("annotations", {}).get(REVISION)
        return next((rs for rs in self._owned(namespace, name)
                     if rs["metadata"]["annotations"][REVISION] == revision), None)

    def _sync(self, namespace: str, name: str) -> None:
        """One pass of the deployment controller: the ReplicaSet of the current pod template (created, or
        an old one reused at the next revision; none while paused), replicas on a scale, then status with
        observedGeneration, written as a status update (a new resourceVersion and a MODIFIED event)."""
        dep = self.deployments[(namespace, name)]
        owned = self._owned(namespace, name)
        newest = max((int(rs["metadata"]["annotations"][REVISION]) for rs in owned), default=0)
        new = next((rs for rs in owned if without_hash(rs["spec"]["template"]) == dep["spec"]["template"]), None)
        if new is None and not dep["spec"].get("paused"):
            new = self._new_replicaset(dep, str(newest + 1))
        elif new is not None and int(new["metadata"]["annotations"][REVISION]) != newest:
            self._reuse(dep, new, str(newest + 1))
        if new is not None:
            dep["metadata"].setdefault("annotations", {})[REVISION] = new["metadata"]["annotations"][REVISION]
            self._scale_replicasets(namespace, name, new)
        self._status(namespace, name)
        dep["metadata"]["resourceVersion"] = self._next_rv()
        self._event("MODIFIED", namespace, dep)

    def _copied_annotations(self, dep: dict[str, Any]) -> dict[str, str]:
        return {k: v for k, v in (dep["metadata"].get("annotations") or {}).items() if k not in NOT_COPIED}

    def _new_replicaset(self, dep: dict[str, Any], revision: str) -> dict[str, Any]:
        meta, template = dep["metadata"], dep["spec"]["template"]
        digest = template_hash(template)
        rs_template = copy.deepcopy(template)
        rs_template.setdefault("metadata", {}).setdefault("labels", {})[HASH] = digest
        labels = dict(rs_template["metadata"]["labels"])
        rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
              "metadata": {"name": f"{meta['name']}-{digest}", "namespace": meta["namespace"], "labels": labels,
                           "annotations": {**self._copied_annotations(dep), REVISION: revision,
                                           DESIRED_REPLICAS: str(dep["spec"].get("replicas", 1))},
                           "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": meta["name"],
                                                "uid": meta["uid"], "controller": True}],
                           "resourceVersion": self._next_rv()},
              "spec": {"replicas": 0,
                       "selector": {"matchLabels": {**dep["spec"]["selector"]["matchLabels"], HASH: digest}},
                       "template": rs_template},
              "status": {"replicas": 0}}
        self.replicasets[(meta["namespace"], rs["metadata"]["name"])] = rs
        return rs

    def _reuse(self, dep: dict[str, Any], rs: dict[str, Any], revision: str) -> None:
        """An old ReplicaSet's template is current again (a rollback): it gets the next revision, the old
        one noted in revision-history, and the Deployment's annotations again."""
        annotations = rs["metadata"]["annotations"]
        old = annotations[REVISION]
        history = annotations.get(REVISION_HISTORY)
        annotations.update(self._copied_annotations(dep))
        annotations[REVISION_HISTORY] = f"{history},{old}" if history else old
        annotations[REVISION] = revision
        rs["metadata"]["resourceVersion"] = self._next_rv()

    def _scale_replicasets(self, namespace: str, name: str, new: dict[str, Any]) -> None:
        """The first ReplicaSet gets every replica; a scale (spec.replicas changed since the last sync)
        goes to the new ReplicaSet at once (no surge: a simplification)."""
        key = (namespace, name)
        want = int(self.deployments[key]["spec"].get("replicas", 1))
        owned = self._owned(namespace, name)
        if len(owned) == 1 or (key in self._seen_replicas and self._seen_replicas[key] != want):
            new["spec"]["replicas"] = want
        self._seen_replicas[key] = want
        for rs in owned:
            rs["status"]["replicas"] = rs["spec"]["replicas"]

    def _status(self, namespace: str, name: str) -> None:
        """The controller's status update: what it saw (observedGeneration) and the replica counts."""
        dep = self.deployments[(namespace, name)]
        new = self._current(namespace, name)
        total = sum(rs["spec"]["replicas"] for rs in self._owned(namespace, name))
        up = max(0, total - self.down.get((namespace, name), 0))
        dep["status"] = {"observedGeneration": dep["metadata"]["generation"], "replicas": total,
                         "updatedReplicas": new["spec"]["replicas"] if new else 0, "readyReplicas": up,
                         "availableReplicas": up}

    def _event(self, kind: str, namespace: str, dep: dict[str, Any]) -> None:
        self.events.append((int(dep["metadata"]["resourceVersion"]), kind, namespace, copy.deepcopy(dep)))
        self._lock.notify_all()

    # -- HTTP ---------------------------------------------------------------------------------------------
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args: Any) -> None:
                pass

            def _do(self, method: str) -> None:
                url = urlsplit(self.path)
                query = parse_qs(url.query, keep_blank_values=True)
                last = {k: v[-1] for k, v in query.items()}
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                content_type = self.headers.get("Content-Type")
                call = {"method": method, "path": url.path, "query": query, "content_type": content_type,
                        "body": None, "status": 0}
                stub.calls.append(call)
                try:
                    body = call["body"] = json.loads(raw) if raw else None
                    if last.get("watch") in ("true", "1"):
                        call["status"] = 200
                        return self._watch(url.path, last, call)
                    status, payload = stub.route(method, url.path, last, body, content_type or "")
                except KubeError as e:
                    status, payload = e.code, e.body
                except (ValueError, KeyError, IndexError, TypeError) as e:
                    status, payload = 400, status_body(400, "BadRequest", f"the request is invalid: {e}")
                call["status"], call["response"] = status, payload
                stub.requests.append((method, url.path, status))
                self._reply(status, payload)

            def _reply(self, status: int, payload: Any) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _send_event(self, event: dict[str, Any]) -> None:
                self.wfile.write(json.dumps(event).encode() + b"\n")
                self.wfile.flush()

            def _watch(self, path: str, query: dict[str, str], call: dict[str, Any]) -> None:
                parts = path.strip("/").split("/")
                namespace = parts[4] if len(parts) > 4 and parts[3] == "namespaces" else None
                try:
                    stub._check("watch", "deployments", namespace or "")
                except KubeError as e:
                    call["status"] = e.code
                    stub.requests.append(("WATCH", path, e.code))
                    return self._reply(e.code, e.body)
                stub.requests.append(("WATCH", path, 200))
                since = int(query.get("resourceVersion") or 0)
                deadline = time.monotonic() + float(query.get("timeoutSeconds") or 5)
                bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                if since and since < stub.compacted:  # the API server's answer: 200, then an ERROR event
                    return self._send_event({"type": "ERROR", "object": status_body(
                        410, "Expired", f"too old resource version: {since} ({stub.compacted})")})
                self._follow(namespace, since, deadline, bookmarks)

            def _follow(self, namespace: str | None, since: int, deadline: float, bookmarks: bool) -> None:
                sent, quiet_since = since, time.monotonic()
                while time.monotonic() < deadline:
                    with stub._lock:
                        batch = [e for e in stub.events if e[0] > sent and namespace in (None, e[2])]
                        if not batch:
                            stub._lock.wait(timeout=min(0.1, max(0.0, deadline - time.monotonic())))
                            rv = stub._rv
                    if not batch:
                        if bookmarks and time.monotonic() - quiet_since >= stub.bookmark_every:
                            self._send_event({"type": "BOOKMARK", "object": {
                                "kind": "Deployment", "apiVersion": "apps/v1",
                                "metadata": {"resourceVersion": str(rv), "creationTimestamp": None}}})
                            quiet_since = time.monotonic()
                        continue
                    for rv_, kind, _, obj in batch:
                        self.wfile.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")
                        sent = rv_
                    self.wfile.flush()
                    quiet_since = time.monotonic()

            def do_GET(self) -> None:  # noqa: N802
                self._do("GET")

            def do_PATCH(self) -> None:  # noqa: N802
                self._do("PATCH")

            def do_PUT(self) -> None:  # noqa: N802
                self._do("PUT")

            def do_DELETE(self) -> None:  # noqa: N802
                self._do("DELETE")

            def do_POST(self) -> None:  # noqa: N802
                self._do("POST")

        return Handler

    def _check(self, verb: str, resource: str, namespace: str, name: str = "", group: str = "apps") -> None:
        """RBAC: 403 with the API server's message (responsewriters.forbiddenMessage); namespace "" is a
        request at the cluster scope; the core group is "" (`services "x" is forbidden: ... in API group ""`)."""
        if (verb, resource, namespace) not in self.forbidden:
            return
        plural = resource.split("/")[0] + (f".{group}" if group else "")
        what = f'{plural} "{name}"' if name else plural
        scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
        raise KubeError(403, "Forbidden", f'{what} is forbidden: User "{USER}" cannot {verb} resource "{resource}" '
                                          f'in API group "{group}" {scope}',
                        {"name": name, "group": group, "kind": resource.split("/")[0]})

    @staticmethod
    def _patch_type(content_type: str) -> str:
        """The PATCH's media type, or 415 as the API server answers an unsupported one (patch.go)."""
        media = content_type.split(";")[0].strip()
        if media not in PATCH_TYPES:
            raise KubeError(415, "UnsupportedMediaType", "the body of the request was in an unknown format - "
                            f"accepted media types include: {', '.join(PATCH_TYPES)}")
        if media == "application/apply-patch+yaml":
            raise KubeError(415, "UnsupportedMediaType", "the stub does not implement server-side apply")
        return media

    def _get(self, namespace: str, name: str) -> dict[str, Any]:
        dep = self.deployments.get((namespace, name))
        if dep is None:
            raise KubeError(404, "NotFound", f'deployments.apps "{name}" not found',
                            {"name": name, "group": "apps", "kind": "deployments"})
        return dep

    def route(self, method: str, path: str, query: dict[str, str], body: Any,
              content_type: str) -> tuple[int, Any]:
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "v1"] and parts[2:3] == ["namespaces"] and parts[4:5] == ["services"]:
            with self._lock:
                return self._services(method, parts[3], parts[5] if len(parts) > 5 else "", body, content_type)
        if parts[:3] == ["apis", ROUTE_GROUP, "v1"] and parts[3:4] == ["namespaces"] and parts[5:6] == ["httproutes"]:
            with self._lock:
                return self._httproutes(method, parts[4], parts[6] if len(parts) > 6 else "", body, content_type)
        if parts[:3] != ["apis", "apps", "v1"]:
            raise KubeError(404, "NotFound", "the server could not find the requested resource")
        if method == "POST" and len(parts) == 6 and parts[5] == "deployments":
            with self._lock:
                self._check("create", "deployments", parts[4])
                return 201, self._create_deployment(parts[4], body)
        with self._lock:
            if parts[3:] == ["deployments"]:
                self._check("list", "deployments", "")
                return 200, self._list("Deployment", [d for d in self.deployments.values()], query)
            namespace, kind = parts[4], parts[5]
            name = parts[6] if len(parts) > 6 else ""
            sub = parts[7] if len(parts) > 7 else ""
            resource = kind + (f"/{sub}" if sub else "")
            verb = {"GET": "get" if name else "list", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}[method]
            self._check(verb, resource, namespace, name)
            media = self._patch_type(content_type) if method == "PATCH" else ""
            if kind == "replicasets" and not name:
                return 200, self._list("ReplicaSet", [rs for (ns, _), rs in self.replicasets.items()
                                                      if ns == namespace], query)
            if kind != "deployments":
                raise KubeError(404, "NotFound", "the server could not find the requested resource")
            if not name:
                return 200, self._list("Deployment", [d for (ns, _), d in self.deployments.items()
                                                      if ns == namespace], query)
            dep = self._get(namespace, name)
            if method in ("PATCH", "PUT"):
                self._race(namespace, dep)
            if sub == "scale":
                return self._scale(method, dep, body, media)
            if method == "GET":
                return 200, copy.deepcopy(dep)
            if method == "DELETE":
                self._preconditions(dep, body, "deployments.apps")
                self.delete_deployment(namespace, name)
                return 200, status_body(200, "", "") | {"status": "Success"}
            return 200, self._store(namespace, name, dep, self._patched(method, dep, body, media))

    # -- Deployments created, Services and HTTPRoutes: what the guardian's weighted canary uses ------------------
    def _create_deployment(self, namespace: str, body: Any) -> dict[str, Any]:
        """POST of a Deployment: 409 if it exists, 422 if its selector does not select its template (the API
        server's validation), else stored as `create_deployment` stores one and synced by the controller."""
        dep = copy.deepcopy(body)
        meta = dep.setdefault("metadata", {})
        name = meta.get("name", "")
        if meta.get("namespace", namespace) != namespace:
            raise KubeError(400, "BadRequest", "the namespace of the provided object does not match the namespace "
                            "sent on the request")
        if (namespace, name) in self.deployments:
            raise KubeError(409, "AlreadyExists", f'deployments.apps "{name}" already exists',
                            {"name": name, "group": "apps", "kind": "deployments"})
        labels = ((dep.get("spec") or {}).get("template", {}).get("metadata") or {}).get("labels") or {}
        selector = ((dep.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        if not selector or any(labels.get(k) != v for k, v in selector.items()):
            raise KubeError(422, "Invalid", f'Deployment.apps "{name}" is invalid: spec.template.metadata.labels: '
                            f"Invalid value: {json.dumps(labels)}: `selector` does not match template `labels`")
        meta.update({"namespace": namespace, "uid": f"uid-{namespace}-{name}-{self._next_rv()}", "generation": 1})
        dep["spec"].setdefault("replicas", 1)
        dep["status"] = {}
        return self._add_deployment(dep, at_once=False)

    @staticmethod
    def _preconditions(obj: dict[str, Any], body: Any, what: str) -> None:
        """A DELETE's DeleteOptions.preconditions (uid, resourceVersion): 409 when the object is another."""
        pre = (body or {}).get("preconditions") or {}
        meta = obj["metadata"]
        for key, field in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
            if pre.get(key) is not None and pre[key] != meta.get(key):
                raise KubeError(409, "Conflict", f"Precondition failed: {field} in precondition: {pre[key]}, "
                                f"{field} in object meta: {meta.get(key)}", {"name": meta["name"], "kind": what})

    def create_service(self, namespace: str, name: str, selector: dict[str, str], *, port: int = 80,
                       target_port: int | str = 8080, **spec: Any) -> dict[str, Any]:
        """A Service as `kubectl apply` creates it (a test helper)."""
        body = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace},
                "spec": {"selector": selector, "ports": [{"name": "http", "port": port, "targetPort": target_port,
                                                          "protocol": "TCP"}], **spec}}
        with self._lock:
            return self._services("POST", namespace, "", body, "")[1]

    def _services(self, method: str, namespace: str, name: str, body: Any, content_type: str) -> tuple[int, Any]:
        """core v1 Services: create (a name that is an RFC 1035 label, ports required, a clusterIP or nodePort
        already allocated refused, 409 if it exists), get, patch (conditional on a resourceVersion), delete
        (with preconditions)."""
        verb = {"GET": "get", "POST": "create", "PATCH": "patch", "DELETE": "delete", "PUT": "update"}[method]
        self._check(verb, "services", namespace, name or (body or {}).get("metadata", {}).get("name", ""), group="")
        if method == "POST":
            return 201, self._create_service(namespace, copy.deepcopy(body))
        svc = self.services.get((namespace, name))
        if svc is None:
            raise KubeError(404, "NotFound", f'services "{name}" not found', {"name": name, "kind": "services"})
        if method == "GET":
            return 200, copy.deepcopy(svc)
        if method == "DELETE":
            self._preconditions(svc, body, "services")
            del self.services[(namespace, name)]
            return 200, status_body(200, "", "") | {"status": "Success"}
        new = self._patched(method, svc, body, self._patch_type(content_type) if method == "PATCH" else "")
        want = (new.get("metadata") or {}).get("resourceVersion")
        if want and want != svc["metadata"]["resourceVersion"]:
            raise KubeError(409, "Conflict", f'Operation cannot be fulfilled on services "{name}": the object has been '
                            "modified; please apply your changes to the latest version and try again")
        for key in ("uid", "name", "namespace"):
            new["metadata"][key] = svc["metadata"][key]
        new["metadata"]["resourceVersion"] = self._next_rv()
        self.services[(namespace, name)] = new
        return 200, copy.deepcopy(new)

    def _create_service(self, namespace: str, svc: dict[str, Any]) -> dict[str, Any]:
        meta, spec = svc.setdefault("metadata", {}), svc.setdefault("spec", {})
        name = meta.get("name", "")
        if not re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", name):
            raise KubeError(422, "Invalid", f'Service "{name}" is invalid: metadata.name: Invalid value: "{name}": a '
                            "DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
                            "alphabetic character, and end with an alphanumeric character")
        if (namespace, name) in self.services:
            raise KubeError(409, "AlreadyExists", f'services "{name}" already exists',
                            {"name": name, "kind": "services"})
        if not spec.get("ports") and spec.get("clusterIP") != "None":
            raise KubeError(422, "Invalid", f'Service "{name}" is invalid: spec.ports: Required value')
        used_ips = {s["spec"].get("clusterIP") for s in self.services.values()}
        used_ports = {p.get("nodePort") for s in self.services.values() for p in s["spec"].get("ports") or []}
        if spec.get("clusterIP") in used_ips:
            ip = spec["clusterIP"]
            raise KubeError(422, "Invalid", f'Service "{name}" is invalid: spec.clusterIPs: Invalid value: ["{ip}"]: '
                            f"failed to allocate IP {ip}: provided IP is already allocated")
        if taken := [p["nodePort"] for p in spec.get("ports") or [] if p.get("nodePort") in used_ports - {None}]:
            raise KubeError(422, "Invalid", f'Service "{name}" is invalid: spec.ports[0].nodePort: Invalid value: '
                            f"{taken[0]}: provided port is already allocated")
        self._ips += 1
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("clusterIP", f"10.96.{self._ips // 250}.{self._ips % 250 + 1}")
        spec["clusterIPs"] = [spec["clusterIP"]]
        meta.update({"namespace": namespace, "uid": f"uid-svc-{namespace}-{name}-{self._next_rv()}",
                     "resourceVersion": self._next_rv()})
        self.services[(namespace, name)] = svc
        return copy.deepcopy(svc)

    def create_httproute(self, namespace: str, name: str, rules: list[dict[str, Any]],
                         gateway: str = "web") -> dict[str, Any]:
        """An HTTPRoute as `kubectl apply` creates it (a test helper), attached to the Gateway `gateway`."""
        body = {"apiVersion": f"{ROUTE_GROUP}/v1", "kind": "HTTPRoute", "metadata": {"name": name},
                "spec": {"parentRefs": [{"name": gateway}], "rules": rules}}
        with self._lock:
            return self._httproutes("POST", namespace, "", body, "")[1]

    def _httproutes(self, method: str, namespace: str, name: str, body: Any, content_type: str) -> tuple[int, Any]:
        """gateway.networking.k8s.io/v1 HTTPRoutes, a custom resource: create, get, patch (merge and JSON patch:
        a custom resource takes no strategic-merge patch), update, delete; each write pruned, defaulted and
        validated by the CRD's schema (tests/stubs/httproute_schema.py), conditional on a resourceVersion."""
        verb = {"GET": "get", "POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}[method]
        self._check(verb, "httproutes", namespace, name or (body or {}).get("metadata", {}).get("name", ""),
                    group=ROUTE_GROUP)
        if method == "POST":
            name = (body.get("metadata") or {}).get("name", "")
            if (namespace, name) in self.httproutes:
                raise KubeError(409, "AlreadyExists", f'httproutes.{ROUTE_GROUP} "{name}" already exists')
            route = self._valid_route(name, copy.deepcopy(body))
            route["metadata"].update({"name": name, "namespace": namespace, "generation": 1,
                                      "uid": f"uid-route-{namespace}-{name}", "resourceVersion": self._next_rv()})
            return 201, self._keep_route(namespace, name, route)
        route = self.httproutes.get((namespace, name))
        if route is None:
            raise KubeError(404, "NotFound", f'httproutes.{ROUTE_GROUP} "{name}" not found',
                            {"name": name, "group": ROUTE_GROUP, "kind": "httproutes"})
        if method == "GET":
            return 200, copy.deepcopy(route)
        if method == "DELETE":
            self._preconditions(route, body, f"httproutes.{ROUTE_GROUP}")
            del self.httproutes[(namespace, name)]
            return 200, status_body(200, "", "") | {"status": "Success"}
        media = ""
        if method == "PATCH":
            media = self._patch_type(content_type)
            if media == "application/strategic-merge-patch+json":
                raise KubeError(415, "UnsupportedMediaType", "the body of the request was in an unknown format - "
                                "accepted media types include: application/json-patch+json, "
                                "application/merge-patch+json, application/apply-patch+yaml")
        if self.route_conflicts > 0:  # someone else wrote it after the client read it
            self.route_conflicts -= 1
            route["metadata"]["resourceVersion"] = self._next_rv()
        new = self._patched(method, route, body, media)
        want = (new.get("metadata") or {}).get("resourceVersion")
        if want and want != route["metadata"]["resourceVersion"]:
            raise KubeError(409, "Conflict", f'Operation cannot be fulfilled on httproutes.{ROUTE_GROUP} "{name}": the '
                            "object has been modified; please apply your changes to the latest version and try again",
                            {"name": name, "group": ROUTE_GROUP, "kind": "httproutes"})
        new = self._valid_route(name, new)
        for key in ("uid", "name", "namespace", "generation"):
            new["metadata"][key] = route["metadata"][key]
        if new["spec"] != route["spec"]:
            new["metadata"]["generation"] = route["metadata"]["generation"] + 1
        new["status"] = route.get("status") or {}
        new["metadata"]["resourceVersion"] = self._next_rv()
        return 200, self._keep_route(namespace, name, new)

    @staticmethod
    def _valid_route(name: str, route: dict[str, Any]) -> dict[str, Any]:
        """The route as the CRD's structural schema leaves it, or 422 Invalid with every field error."""
        route, errors = normalize(route)
        if errors:
            joined = errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]"
            raise KubeError(422, "Invalid", f'HTTPRoute.{ROUTE_GROUP} "{name}" is invalid: {joined}',
                            {"name": name, "group": ROUTE_GROUP, "kind": "HTTPRoute",
                             "causes": [{"reason": "FieldValueInvalid", "message": e} for e in errors]})
        return route

    def _keep_route(self, namespace: str, name: str, route: dict[str, Any]) -> dict[str, Any]:
        self.httproutes[(namespace, name)] = route
        self.route_history.append((f"{namespace}/{name}", copy.deepcopy(route["spec"])))
        return copy.deepcopy(route)

    def route_weights(self, namespace: str, name: str) -> dict[str, int]:
        """Each backendRef's name -> weight in the route's first rule (a test helper)."""
        rule = self.httproutes[(namespace, name)]["spec"]["rules"][0]
        return {ref["name"]: ref["weight"] for ref in rule.get("backendRefs") or []}

    @staticmethod
    def _patched(method: str, current: dict[str, Any], body: Any, media: str) -> dict[str, Any]:
        """The object a PUT (the body) or a PATCH (applied to the current object) asks to store."""
        if method == "PUT":
            return copy.deepcopy(body)
        if media == "application/json-patch+json":
            return json_patch(current, body)
        return merge_patch(current, body, strategic=media == "application/strategic-merge-patch+json")

    def _scale(self, method: str, dep: dict[str, Any], body: Any, media: str) -> tuple[int, Any]:
        """The autoscaling/v1 Scale of a Deployment (its resourceVersion is the Deployment's); a write
        is a Deployment write of spec.replicas, with the same resourceVersion precondition."""
        meta = dep["metadata"]
        if method in ("PATCH", "PUT"):
            scale = self._patched(method, self._scale_of(dep), body, media)
            replicas = int(((scale or {}).get("spec") or {})["replicas"])
            if replicas < 0:
                raise KubeError(422, "Invalid", f'Scale.autoscaling "{meta["name"]}" is invalid: spec.replicas: '
                                "Invalid value: must be greater than or equal to 0")
            new = copy.deepcopy(dep)
            new["spec"]["replicas"] = replicas
            new["metadata"]["resourceVersion"] = (scale.get("metadata") or {}).get("resourceVersion")
            self._store(meta["namespace"], meta["name"], dep, new)
        return 200, self._scale_of(self.deployments[(meta["namespace"], meta["name"])])

    @staticmethod
    def _scale_of(dep: dict[str, Any]) -> dict[str, Any]:
        meta = dep["metadata"]
        return {"apiVersion": "autoscaling/v1", "kind": "Scale",
                "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"],
                             "resourceVersion": meta["resourceVersion"]},
                "spec": {"replicas": dep["spec"]["replicas"]},
                "status": {"replicas": (dep.get("status") or {}).get("replicas", 0),
                           "selector": ",".join(f"{k}={v}" for k, v in dep["spec"]["selector"]["matchLabels"].items())}}

    def _list(self, kind: str, items: list[dict[str, Any]], query: dict[str, str]) -> dict[str, Any]:
        selector = [s.split("=", 1) for s in (query.get("labelSelector") or "").split(",") if s]
        chosen = [copy.deepcopy(i) for i in items
                  if all((i["metadata"].get("labels") or {}).get(k.rstrip("=")) == v.lstrip("=") for k, v in selector)]
        return {"apiVersion": "apps/v1", "kind": f"{kind}List", "metadata": {"resourceVersion": str(self._rv)},
                "items": chosen}


__all__ = ["HASH", "NOT_COPIED", "PATCH_TYPES", "REVISION", "ROUTE_GROUP", "KubeStub", "status_body", "template_hash"]
