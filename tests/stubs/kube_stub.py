"""A STUB of the Kubernetes API server (no API server can run on the test machine): the few apps/v1
endpoints the `kubernetes` actuator and watcher use, as the Kubernetes API reference documents them,
served by a real HTTP server on a free loopback port (in a thread). The official client talks to it
through a `Configuration(host=stub.url)`.

    GET    /apis/apps/v1/namespaces/NS/deployments[?labelSelector=&watch=true&resourceVersion=&timeoutSeconds=]
    GET    /apis/apps/v1/deployments[?watch=true...]                  (every namespace)
    GET    /apis/apps/v1/namespaces/NS/deployments/NAME
    PATCH  /apis/apps/v1/namespaces/NS/deployments/NAME               merge-patch, strategic-merge-patch, json-patch
    PUT    /apis/apps/v1/namespaces/NS/deployments/NAME               replace
    DELETE /apis/apps/v1/namespaces/NS/deployments/NAME
    GET    /apis/apps/v1/namespaces/NS/replicasets?labelSelector=a=b,c=d
    GET    /apis/apps/v1/namespaces/NS/deployments/NAME/scale         autoscaling/v1 Scale
    PATCH  /apis/apps/v1/namespaces/NS/deployments/NAME/scale

Faithful where the actuator depends on it: every write bumps the object's `metadata.resourceVersion`,
and a write carrying a different resourceVersion (PUT body, or a patch that sets it) is refused with
409 Conflict; unknown objects are 404; verbs configured as forbidden (`forbid`) are 403; errors carry a
`Status` body (kind, apiVersion, status Failure, message, reason, details, code) in the API server's
wording; `?watch=true` answers newline-delimited JSON `{"type": ADDED|MODIFIED|DELETED, "object": ...}`
from the given resourceVersion until `timeoutSeconds`. A tiny deployment controller stands in for
kube-controller-manager: a changed pod template gets a ReplicaSet named NAME-HASH labelled
`pod-template-hash=HASH` (an existing one is reused, as a rollback does) and the next revision
(`deployment.kubernetes.io/revision` on both); `progress()` moves replicas from old ReplicaSets to the new
one, one per call, unless the Deployment is paused. Not modelled: admission, defaulting, field
validation, strategic-merge directives ($patch, $retainKeys), label selectors other than equality.
"""
from __future__ import annotations

import copy
import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from guardian.demo.stack import free_port

REVISION = "deployment.kubernetes.io/revision"
HASH = "pod-template-hash"


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
    """RFC 6902 add / replace / remove / test on object paths (enough for `kubectl rollout undo`'s patch)."""
    out = copy.deepcopy(target)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].lstrip("/").split("/")]
        node = out
        for p in parts[:-1]:
            node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})
        last = parts[-1]
        if op["op"] in ("add", "replace"):
            node[last] = copy.deepcopy(op["value"])
        elif op["op"] == "remove":
            node.pop(last)
        elif op["op"] == "test" and node.get(last) != op["value"]:
            raise KubeError(422, "Invalid", f"the test operation on {op['path']} failed")
    return out


class KubeStub:
    def __init__(self) -> None:
        self.deployments: dict[tuple[str, str], dict[str, Any]] = {}
        self.replicasets: dict[tuple[str, str], dict[str, Any]] = {}
        self.forbidden: set[tuple[str, str, str]] = set()  # (verb, resource, namespace)
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status)
        self.conflicts = 0  # the next N writes to a Deployment race a concurrent writer (-> 409)
        self.events: list[tuple[int, str, str, dict[str, Any]]] = []  # (rv, type, namespace, Deployment)
        self._rv = 100
        self._lock = threading.Condition()
        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, name="kube-stub", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> KubeStub:
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._lock:
            self._lock.notify_all()
        self.server.shutdown()
        self.server.server_close()

    # -- test helpers (what kubectl and the controllers would do) ------------------------------------------
    def forbid(self, verb: str, resource: str, namespace: str) -> None:
        self.forbidden.add((verb, resource, namespace))

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def create_deployment(self, namespace: str, name: str, image: str, *, replicas: int = 2,
                          annotations: dict[str, str] | None = None) -> dict[str, Any]:
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
        with self._lock:
            self.deployments[(namespace, name)] = dep
            self._sync(namespace, name, "ADDED")
            for rs in self._owned(namespace, name):  # the first ReplicaSet is complete at once
                rs["spec"]["replicas"] = rs["status"]["replicas"] = replicas
            self._status(namespace, name)
            return copy.deepcopy(dep)

    def set_image(self, namespace: str, name: str, image: str) -> None:
        """`kubectl set image`: a new pod template, so a new ReplicaSet and revision."""
        with self._lock:
            dep = self.deployments[(namespace, name)]
            dep["spec"]["template"]["spec"]["containers"][0]["image"] = image
            self._sync(namespace, name, "MODIFIED")

    def delete_deployment(self, namespace: str, name: str) -> None:
        with self._lock:
            dep = self.deployments.pop((namespace, name))
            for key in [k for k, rs in self.replicasets.items() if self._owner(rs) == dep["metadata"]["uid"]]:
                del self.replicasets[key]
            dep["metadata"]["resourceVersion"] = self._next_rv()
            self._event("DELETED", namespace, dep)

    def progress(self, namespace: str, name: str, steps: int = 1) -> None:
        """The rolling update moves `steps` replicas to the newest ReplicaSet (none while paused)."""
        with self._lock:
            dep = self.deployments[(namespace, name)]
            if dep["spec"].get("paused"):
                return
            new = self._current(namespace, name)
            for _ in range(steps):
                old = [rs for rs in self._owned(namespace, name) if rs is not new and rs["spec"]["replicas"] > 0]
                want = dep["spec"]["replicas"]
                if new["spec"]["replicas"] < want:
                    new["spec"]["replicas"] += 1
                if old and sum(rs["spec"]["replicas"] for rs in old) + new["spec"]["replicas"] > want:
                    old[0]["spec"]["replicas"] -= 1
            for rs in self._owned(namespace, name):
                rs["status"]["replicas"] = rs["spec"]["replicas"]
            self._status(namespace, name)
            dep["metadata"]["resourceVersion"] = self._next_rv()
            self._event("MODIFIED", namespace, dep)

    # -- the controller -----------------------------------------------------------------------------------
    @staticmethod
    def _owner(rs: dict[str, Any]) -> str:
        return rs["metadata"]["ownerReferences"][0]["uid"]

    def _owned(self, namespace: str, name: str) -> list[dict[str, Any]]:
        uid = self.deployments[(namespace, name)]["metadata"]["uid"]
        return [rs for (ns, _), rs in sorted(self.replicasets.items()) if ns == namespace and self._owner(rs) == uid]

    def _current(self, namespace: str, name: str) -> dict[str, Any]:
        revision = self.deployments[(namespace, name)]["metadata"]["annotations"][REVISION]
        return next(rs for rs in self._owned(namespace, name) if rs["metadata"]["annotations"][REVISION] == revision)

    def _sync(self, namespace: str, name: str, event: str) -> None:
        """What the deployment controller does when the pod template changes."""
        dep = self.deployments[(namespace, name)]
        template = dep["spec"]["template"]
        digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]
        owned = self._owned(namespace, name)
        revisions = [int(rs["metadata"]["annotations"][REVISION]) for rs in owned]
        current = next((rs for rs in owned if rs["metadata"]["labels"][HASH] == digest), None)
        if current is None or str(max(revisions)) != current["metadata"]["annotations"][REVISION]:
            revision = str(max(revisions, default=0) + 1)
            if current is None:
                labels = {**template["metadata"].get("labels", {}), HASH: digest}
                current = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
                           "metadata": {"name": f"{name}-{digest}", "namespace": namespace, "labels": labels,
                                        "annotations": {},
                                        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                                             "name": name, "uid": dep["metadata"]["uid"],
                                                             "controller": True}]},
                           "spec": {"replicas": 0, "selector": {"matchLabels": labels},
                                    "template": {**copy.deepcopy(template),
                                                 "metadata": {"labels": dict(labels)}}},
                           "status": {"replicas": 0}}
                self.replicasets[(namespace, current["metadata"]["name"])] = current
            current["metadata"]["annotations"][REVISION] = revision
            current["metadata"]["resourceVersion"] = self._next_rv()
            dep["metadata"]["annotations"][REVISION] = revision
            dep["metadata"]["generation"] = dep["metadata"].get("generation", 0) + 1
        dep["metadata"]["resourceVersion"] = self._next_rv()
        self._status(namespace, name)
        self._event(event, namespace, dep)

    def _status(self, namespace: str, name: str) -> None:
        dep = self.deployments[(namespace, name)]
        new = self._current(namespace, name)
        total = sum(rs["spec"]["replicas"] for rs in self._owned(namespace, name))
        dep["status"] = {"observedGeneration": dep["metadata"]["generation"], "replicas": total,
                         "updatedReplicas": new["spec"]["replicas"], "readyReplicas": total,
                         "availableReplicas": total}

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
                query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                    if query.get("watch") in ("true", "1"):
                        stub.requests.append(("WATCH", url.path, 200))
                        return self._watch(url.path, query)
                    status, payload = stub.route(method, url.path, query, body, self.headers.get("Content-Type", ""))
                except KubeError as e:
                    status, payload = e.code, e.body
                except (ValueError, KeyError, IndexError, TypeError) as e:
                    status, payload = 400, status_body(400, "BadRequest", f"the request is invalid: {e}")
                stub.requests.append((method, url.path, status))
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _watch(self, path: str, query: dict[str, str]) -> None:
                parts = path.strip("/").split("/")
                namespace = parts[4] if len(parts) > 4 and parts[3] == "namespaces" else None
                since = int(query.get("resourceVersion") or 0)
                deadline = time.monotonic() + float(query.get("timeoutSeconds") or 5)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                sent = since
                while time.monotonic() < deadline:
                    with stub._lock:
                        batch = [e for e in stub.events if e[0] > sent and namespace in (None, e[2])]
                        if not batch:
                            stub._lock.wait(timeout=min(0.2, max(0.0, deadline - time.monotonic())))
                            continue
                    for rv, kind, _, obj in batch:
                        self.wfile.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")
                        sent = rv
                    self.wfile.flush()

            def do_GET(self) -> None:  # noqa: N802
                self._do("GET")

            def do_PATCH(self) -> None:  # noqa: N802
                self._do("PATCH")

            def do_PUT(self) -> None:  # noqa: N802
                self._do("PUT")

            def do_DELETE(self) -> None:  # noqa: N802
                self._do("DELETE")

        return Handler

    def _check(self, verb: str, resource: str, namespace: str, name: str = "") -> None:
        if (verb, resource, namespace) in self.forbidden:
            group = "apps"
            what = f'{resource.split("/")[0]}.{group} "{name}"' if name else f"{resource}.{group}"
            raise KubeError(403, "Forbidden",
                            f'{what} is forbidden: User "system:serviceaccount:guardian:guardian" cannot {verb} '
                            f'resource "{resource}" in API group "{group}" in the namespace "{namespace}"',
                            {"name": name, "group": group, "kind": resource.split("/")[0]})

    def _get(self, namespace: str, name: str) -> dict[str, Any]:
        dep = self.deployments.get((namespace, name))
        if dep is None:
            raise KubeError(404, "NotFound", f'deployments.apps "{name}" not found',
                            {"name": name, "group": "apps", "kind": "deployments"})
        return dep

    def route(self, method: str, path: str, query: dict[str, str], body: Any,
              content_type: str) -> tuple[int, Any]:
        parts = path.strip("/").split("/")
        if parts[:3] != ["apis", "apps", "v1"]:
            raise KubeError(404, "NotFound", "the server could not find the requested resource")
        with self._lock:
            if parts[3:] == ["deployments"]:
                return 200, self._list("Deployment", [d for d in self.deployments.values()], query)
            namespace, kind = parts[4], parts[5]
            name = parts[6] if len(parts) > 6 else ""
            sub = parts[7] if len(parts) > 7 else ""
            resource = kind + (f"/{sub}" if sub else "")
            verb = {"GET": "get" if name else "list", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}[method]
            self._check(verb, resource, namespace, name)
            if kind == "replicasets" and not name:
                return 200, self._list("ReplicaSet", [rs for (ns, _), rs in self.replicasets.items()
                                                      if ns == namespace], query)
            if kind != "deployments":
                raise KubeError(404, "NotFound", "the server could not find the requested resource")
            if not name:
                return 200, self._list("Deployment", [d for (ns, _), d in self.deployments.items()
                                                      if ns == namespace], query)
            dep = self._get(namespace, name)
            if sub == "scale":
                return self._scale(method, dep, body, content_type)
            if method == "GET":
                return 200, copy.deepcopy(dep)
            if method == "DELETE":
                self.delete_deployment(namespace, name)
                return 200, status_body(200, "", "")  | {"status": "Success"}
            if method == "PUT":
                new = copy.deepcopy(body)
            elif "json-patch" in content_type:
                new = json_patch(dep, body)
            else:
                new = merge_patch(dep, body, strategic="strategic" in content_type)
            return 200, self._write(namespace, name, dep, new)

    def _write(self, namespace: str, name: str, dep: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
        if self.conflicts > 0:  # someone else wrote the Deployment after the client read it
            self.conflicts -= 1
            dep["metadata"]["annotations"]["other-writer"] = self._next_rv()
            dep["metadata"]["resourceVersion"] = self._next_rv()
            self._event("MODIFIED", namespace, dep)
        want = (new.get("metadata") or {}).get("resourceVersion")
        if want and want != dep["metadata"]["resourceVersion"]:
            raise KubeError(409, "Conflict", f'Operation cannot be fulfilled on deployments.apps "{name}": the object '
                            "has been modified; please apply your changes to the latest version and try again",
                            {"name": name, "group": "apps", "kind": "deployments"})
        template_changed = new["spec"]["template"] != dep["spec"]["template"]
        for key in ("uid", "name", "namespace"):
            new["metadata"][key] = dep["metadata"][key]
        new["metadata"].setdefault("annotations", {})[REVISION] = dep["metadata"]["annotations"][REVISION]
        new["status"] = dep["status"]
        self.deployments[(namespace, name)] = new
        if template_changed:
            self._sync(namespace, name, "MODIFIED")
        else:
            if new["spec"] != dep["spec"]:
                new["metadata"]["generation"] = dep["metadata"].get("generation", 1) + 1
            new["metadata"]["resourceVersion"] = self._next_rv()
            self._status(namespace, name)
            self._event("MODIFIED", namespace, new)
        return copy.deepcopy(new)

    def _scale(self, method: str, dep: dict[str, Any], body: Any, content_type: str) -> tuple[int, Any]:
        meta = dep["metadata"]
        if method in ("PATCH", "PUT"):
            replicas = int(((body or {}).get("spec") or {})["replicas"])
            if replicas < 0:
                raise KubeError(422, "Invalid", f'Scale.autoscaling "{meta["name"]}" is invalid: spec.replicas: '
                                "Invalid value: must be greater than or equal to 0")
            dep["spec"]["replicas"] = replicas
            self._current(meta["namespace"], meta["name"])["spec"]["replicas"] = replicas  # at once: no surge
            for rs in self._owned(meta["namespace"], meta["name"]):
                rs["status"]["replicas"] = rs["spec"]["replicas"]
            meta["resourceVersion"] = self._next_rv()
            self._status(meta["namespace"], meta["name"])
            self._event("MODIFIED", meta["namespace"], dep)
        return 200, {"apiVersion": "autoscaling/v1", "kind": "Scale",
                     "metadata": {"name": meta["name"], "namespace": meta["namespace"],
                                  "resourceVersion": meta["resourceVersion"]},
                     "spec": {"replicas": dep["spec"]["replicas"]},
                     "status": {"replicas": dep["status"].get("replicas", 0),
                                "selector": ",".join(f"{k}={v}" for k, v in
                                                     dep["spec"]["selector"]["matchLabels"].items())}}

    def _list(self, kind: str, items: list[dict[str, Any]], query: dict[str, str]) -> dict[str, Any]:
        selector = [s.split("=", 1) for s in (query.get("labelSelector") or "").split(",") if s]
        chosen = [copy.deepcopy(i) for i in items
                  if all((i["metadata"].get("labels") or {}).get(k.rstrip("=")) == v.lstrip("=") for k, v in selector)]
        return {"apiVersion": "apps/v1", "kind": f"{kind}List", "metadata": {"resourceVersion": str(self._rv)},
                "items": chosen}


__all__ = ["KubeStub", "status_body"]
