"""Every request the guardian's Kubernetes client sends, checked against the official Kubernetes OpenAPI
document: tests/contracts/kubernetes_apps_v1_openapi.json is an extract of kubernetes/kubernetes
api/openapi-spec/v3/apis__apps__v1_openapi.json (its `_source` names the commit and what was kept).

The actuator and the watcher run real actions against the API STUB (tests/stubs/kube_stub.py), which
records each request; each one must be an operation of the document (method and path), with only the
query parameters it declares (of their types), a Content-Type its requestBody accepts, and a body whose
fields are fields of the resource's schema — a merge patch any subset of them, a strategic-merge patch's
list items carrying their merge key, a JSON patch's paths fields of the resource and its values complete
(required fields present). The stub's answers are checked against the documented response schemas too,
so neither the client nor the stub can drift from the real API unnoticed."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from guardian.actuators import ActionRequest
from guardian.actuators.kubernetes import KubeConnection, KubernetesActuator
from guardian.api.components import build
from guardian.clock import FakeClock
from guardian.domain import Action
from guardian.settings import Settings
from guardian.sources.recording import RecordingSource
from guardian.watchers.kubernetes import KubeWatcher
from tests.stubs.kube_stub import PATCH_TYPES, KubeStub
from tests.unit.recordings import steady_recording
from tests.unit.test_api_contract import clean_env  # noqa: F401  (autouse: no GUARDIAN_* from outside)

EXTRACT = Path(__file__).resolve().parents[1] / "contracts" / "kubernetes_apps_v1_openapi.json"
SPEC: dict[str, Any] = json.loads(EXTRACT.read_text())
REF = "#/components/schemas/"
JSON_PATCH_OPS = {"add", "remove", "replace", "move", "copy", "test"}
NS, NAME = "shop", "checkout"


# -- the checker ----------------------------------------------------------------------------------------------
def operation(method: str, path: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(path template, path item, operation) of the document for this request; AssertionError if none."""
    for template, item in SPEC["paths"].items():
        if re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", template), path) and method.lower() in item:
            return template, item, item[method.lower()]
    raise AssertionError(f"{method} {path}: no such operation in the official document (extract)")


def resolve(schema: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A property's schema with its `$ref` / `allOf: [$ref]` followed: (schema name or '', schema)."""
    ref = schema.get("$ref") or (schema.get("allOf") or [{}])[0].get("$ref")
    if not ref:
        return "", schema
    name = ref.removeprefix(REF)
    if name not in SPEC["components"]["schemas"]:
        raise AssertionError(f"schema {name} is not in the extract (copy it from the official document if the "
                             "request really needs it)")
    return name, SPEC["components"]["schemas"][name]


def check(value: Any, schema: dict[str, Any], where: str, *, partial: bool = False,
          merge_keys: bool = False) -> list[str]:
    """What is wrong with `value` as an instance of `schema`: fields the schema does not have, wrong types,
    required fields missing (not in a `partial` value: a merge patch names only what it changes; but with
    `merge_keys`, a strategic-merge patch's list items must carry their x-kubernetes-patch-merge-key)."""
    name, schema = resolve(schema)
    if value is None:  # null: a merge patch's "delete this field"
        return [] if partial else [f"{where}: null"]
    if "oneOf" in schema:
        return [] if any(not check(value, s, where) for s in schema["oneOf"]) else [f"{where}: {value!r} fits no oneOf"]
    kind = schema.get("type") or ("object" if "properties" in schema else None)
    if kind == "object":
        return check_object(value, schema, name, where, partial=partial, merge_keys=merge_keys)
    if kind == "array":
        return check_array(value, schema, where, partial=partial, merge_keys=merge_keys)
    types = {"string": str, "integer": int, "boolean": bool, "number": (int, float)}
    ok = isinstance(value, types[kind]) and not (kind == "integer" and isinstance(value, bool)) if kind else True
    return [] if ok else [f"{where}: {value!r} is not a {kind}"]


def check_object(value: Any, schema: dict[str, Any], name: str, where: str, *, partial: bool,
                 merge_keys: bool) -> list[str]:
    if not isinstance(value, dict):
        return [f"{where}: {value!r} is not an object ({name or 'object'})"]
    props, more = schema.get("properties"), schema.get("additionalProperties")
    if props is None and more is None:
        return []  # an opaque object in the document (Patch, RawExtension)
    problems = [] if partial else [f"{where}.{r}: required by {name} but missing" for r in schema.get("required", [])
                                   if r not in value]
    for key, item in value.items():
        if props and key in props:
            problems += check(item, props[key], f"{where}.{key}", partial=partial, merge_keys=merge_keys)
        elif more is not None:
            problems += check(item, more, f"{where}.{key}", partial=partial, merge_keys=merge_keys)
        else:
            problems.append(f"{where}.{key}: not a field of {name or 'this object'}")
    return problems


def check_array(value: Any, schema: dict[str, Any], where: str, *, partial: bool, merge_keys: bool) -> list[str]:
    if not isinstance(value, list):
        return [f"{where}: {value!r} is not an array"]
    key = schema.get("x-kubernetes-patch-merge-key")
    problems = []
    for i, item in enumerate(value):
        problems += check(item, schema["items"], f"{where}[{i}]", partial=partial, merge_keys=merge_keys)
        if merge_keys and key and not (isinstance(item, dict) and key in item):
            problems.append(f"{where}[{i}]: a strategic-merge list item without its merge key {key!r}")
    return problems


def field_at(schema: dict[str, Any], pointer: str) -> dict[str, Any] | None:
    """The schema of the field a JSON pointer names in `schema` (None: no such field)."""
    for part in [p.replace("~1", "/").replace("~0", "~") for p in pointer.lstrip("/").split("/")]:
        _, schema = resolve(schema)
        if schema.get("type") == "array" and part.isdigit():
            schema = schema["items"]
        elif part in (schema.get("properties") or {}):
            schema = schema["properties"][part]
        elif schema.get("additionalProperties") is not None:
            schema = schema["additionalProperties"]
        else:
            return None
    return schema


def check_json_patch(ops: Any, resource: dict[str, Any]) -> list[str]:
    """RFC 6902 operations whose paths are fields of the resource, each value a complete instance."""
    if not isinstance(ops, list):
        return ["a json-patch body must be a list of operations"]
    problems = []
    for i, op in enumerate(ops):
        if op.get("op") not in JSON_PATCH_OPS:
            problems.append(f"op {i}: unknown operation {op.get('op')!r}")
        field = field_at(resource, op.get("path", ""))
        if field is None:
            problems.append(f"op {i}: {op.get('path')!r} is not a field of the resource")
        elif op.get("op") in ("add", "replace", "test"):
            problems += check(op.get("value"), field, f"op {i} {op['path']}")
    return problems


def parameters(item: dict[str, Any], op: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(p["in"], p["name"]): p for p in item.get("parameters", []) + op.get("parameters", [])}


def check_query(query: dict[str, list[str]], declared: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    problems = []
    for name, values in query.items():
        p = declared.get(("query", name))
        if p is None:
            problems.append(f"query parameter {name!r} is not declared")
            continue
        kind = p["schema"]["type"]
        for v in values:
            if (kind == "boolean" and v not in ("true", "false")) or (kind == "integer" and not v.isdigit()):
                problems.append(f"query parameter {name}={v!r} is not a {kind}")
    return problems


def media(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip()


def ok_schema(op: dict[str, Any]) -> dict[str, Any]:
    return op["responses"]["200"]["content"]["application/json"]["schema"]


def check_body(call: dict[str, Any], op: dict[str, Any]) -> list[str]:
    """The body against the operation: its Content-Type accepted, its fields the resource's."""
    body, kind = call["body"], media(call["content_type"])
    if "requestBody" not in op:
        return [] if body is None else ["a body where the operation takes none"]
    accepted = op["requestBody"]["content"]
    if kind not in accepted and "*/*" not in accepted:
        return [f"Content-Type {kind!r} is not accepted (the document lists {sorted(accepted)})"]
    if call["method"] == "PUT":
        return check(body, accepted["*/*"]["schema"], "body")
    resource = ok_schema(op)  # a patch changes the object the operation answers with
    if kind == "application/json-patch+json":
        return check_json_patch(body, resource)
    if kind in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
        return check(body, resource, "body", partial=True, merge_keys=kind.startswith("application/strategic"))
    return [f"the guardian does not send {kind} patches"]


def check_answer(call: dict[str, Any], op: dict[str, Any]) -> list[str]:
    """The stub's answer against the document: the 200 schema, or a Status for an error."""
    if "response" not in call:  # a watch stream
        return []
    if call["status"] >= 400:
        return check(call["response"], {"$ref": REF + "io.k8s.apimachinery.pkg.apis.meta.v1.Status"}, "answer")
    return check(call["response"], ok_schema(op), "answer")


def check_call(call: dict[str, Any]) -> tuple[str, list[str]]:
    """(operationId, problems) of one recorded request."""
    try:
        template, item, op = operation(call["method"], call["path"])
    except AssertionError as e:
        return "-", [str(e)]
    problems = check_query(call["query"], parameters(item, op)) + check_body(call, op)
    return op["operationId"], [f"{call['method']} {call['path']}: {p}" for p in problems + check_answer(call, op)]


# -- a run of every action and of the watcher against the stub -------------------------------------------------
def request(action: Action, key: str, strategy: str = "rolling") -> ActionRequest:
    return ActionRequest("r1", "checkout", "app:v3", action, 100, key, strategy=strategy, replicas=1)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Every request of: START (set image; a controller 0.1 s late), PAUSE, RESUME, SCALE (a 409 on the way),
    PAUSE, ROLLBACK, ROLLBACK again, each verified; the watcher at the cluster scope (list, watch with
    bookmarks, an expired resourceVersion listed again and resumed) and in one namespace."""
    kube = KubeStub(controller_delay=0.1, bookmark_every=0.2).start()
    try:
        kube.create_deployment(NS, NAME, "app:v1", replicas=3, annotations={"guardian.io/policy": "checkout"})
        kube.set_image(NS, NAME, "app:v2")
        kube.progress(NS, NAME, steps=3)
        a = KubernetesActuator(f"{NS}/{NAME}", connection=KubeConnection(host=kube.url, timeout=5))
        for i, action in enumerate([Action.START, Action.PAUSE, Action.RESUME, Action.SCALE, Action.PAUSE,
                                    Action.ROLLBACK, Action.ROLLBACK]):
            kube.conflicts = 1 if action is Action.SCALE else 0
            assert a.apply(request(action, f"r1:{i}")).ok
            assert a.verify(request(action, f"r1:{i}")).ok
        settings = Settings(db_path=str(tmp_path_factory.mktemp("contract") / "g.db"), rules=[], recordings_dir="",
                            kube_host=kube.url)
        c = build(settings, source=RecordingSource(steady_recording(5)), clock=FakeClock())
        for namespace in (None, NS):
            w = KubeWatcher(c.guard, settings, connection=KubeConnection(host=kube.url), namespace=namespace)
            w.poll()
            w.watch_once(timeout_seconds=1)
            kube.create_deployment("other", f"x{namespace}", "x:v1")  # unseen: the watcher's version gets old
            kube.compact()  # ... and too old: its next watch is a 410 ERROR event, listed again and resumed
            w.watch_once(timeout_seconds=1)
        c.store.close()
    finally:
        kube.stop()
    return kube.calls


def test_every_request_is_an_operation_of_the_official_document(recorded):
    problems: list[str] = []
    rows: dict[tuple[str, str, str, str], set[str]] = {}
    for call in recorded:
        op_id, wrong = check_call(call)
        problems += wrong
        template = operation(call["method"], call["path"])[0] if op_id != "-" else call["path"]
        watch = " (watch)" if call["query"].get("watch") == ["true"] else ""
        row = (call["method"] + watch, template, media(call["content_type"]) or "-", op_id)
        rows.setdefault(row, set()).update(call["query"])
    print("\nmethod | path | Content-Type | operation (official document) | query parameters")
    for (method, template, kind, op_id), query in sorted(rows.items(), key=lambda r: (r[0][1], r[0][0], r[0][2])):
        print(f"{method} | {template} | {kind} | {op_id} | {', '.join(sorted(query)) or '-'}")
    assert not problems, "\n".join(problems)
    used = {(method, kind, op_id) for method, _, kind, op_id in rows}
    assert used == {
        ("GET", "-", "listAppsV1DeploymentForAllNamespaces"),
        ("GET (watch)", "-", "listAppsV1DeploymentForAllNamespaces"),
        ("GET", "-", "listAppsV1NamespacedDeployment"),
        ("GET (watch)", "-", "listAppsV1NamespacedDeployment"),
        ("GET", "-", "readAppsV1NamespacedDeployment"),
        ("PATCH", "application/strategic-merge-patch+json", "patchAppsV1NamespacedDeployment"),  # set image
        ("PATCH", "application/merge-patch+json", "patchAppsV1NamespacedDeployment"),  # pause / resume
        ("PATCH", "application/json-patch+json", "patchAppsV1NamespacedDeployment"),  # rollout undo
        ("GET", "-", "listAppsV1NamespacedReplicaSet"),
        ("GET", "-", "readAppsV1NamespacedDeploymentScale"),
        ("PATCH", "application/merge-patch+json", "patchAppsV1NamespacedDeploymentScale"),
    }, used  # a request of a new kind: check it here, and extract what it needs from the official document
    assert not [c for c in recorded if c["method"] == "PUT"]  # no read-modify-PUT of whole objects


def test_the_run_covered_the_real_servers_behaviours(recorded):
    statuses = {(c["method"], c["status"]) for c in recorded}
    assert ("PATCH", 409) in statuses  # the SCALE's conflict, retried
    watches = [c for c in recorded if c["query"].get("watch") == ["true"]]
    assert all(c["query"].get("allowWatchBookmarks") == ["true"] for c in watches)
    assert len(watches) >= 6  # per watcher: a watch, an expired one, the one resumed after listing again


def test_the_stubs_patch_types_are_the_documents(recorded):
    """The stub refuses with 415 what the API server refuses: the document's PATCH media types, less
    apply-patch+cbor (behind the CBORServingAndStorage feature gate, off by default)."""
    documented = set(operation("PATCH", f"/apis/apps/v1/namespaces/{NS}/deployments/{NAME}")[2]
                     ["requestBody"]["content"])
    assert documented - set(PATCH_TYPES) == {"application/apply-patch+cbor"}
    assert set(PATCH_TYPES) <= documented


@pytest.mark.parametrize("call, wrong", [
    ({"method": "PUT", "path": f"/apis/apps/v1/namespaces/{NS}/deployments/{NAME}", "query": {},
      "content_type": "application/json", "body": {"spec": {"template": {}, "selector": {}, "pausd": True}}},
     "spec.pausd: not a field of io.k8s.api.apps.v1.DeploymentSpec"),
    ({"method": "PATCH", "path": f"/apis/apps/v1/namespaces/{NS}/deployments/{NAME}", "query": {},
      "content_type": "application/json", "body": {"spec": {"paused": True}}}, "Content-Type 'application/json'"),
    ({"method": "GET", "path": f"/apis/apps/v1/namespaces/{NS}/deployments", "query": {"watchh": ["true"]},
      "content_type": None, "body": None}, "query parameter 'watchh' is not declared"),
    ({"method": "GET", "path": "/apis/apps/v1/deployments", "query": {"timeoutSeconds": ["1.5"]},
      "content_type": None, "body": None}, "timeoutSeconds='1.5' is not a integer"),
    ({"method": "PATCH", "path": f"/apis/apps/v1/namespaces/{NS}/deployments/{NAME}", "query": {},
      "content_type": "application/json-patch+json", "body": [{"op": "replace", "path": "/spec/pausd", "value": 1}]},
     "'/spec/pausd' is not a field"),
    ({"method": "PATCH", "path": f"/apis/apps/v1/namespaces/{NS}/deployments/{NAME}", "query": {},
      "content_type": "application/json-patch+json",
      "body": [{"op": "replace", "path": "/spec/template", "value": {"spec": {"containers": [{"image": "x"}]}}}]},
     "containers[0].name: required by io.k8s.api.core.v1.Container"),
    ({"method": "PATCH", "path": f"/apis/apps/v1/namespaces/{NS}/deployments/{NAME}", "query": {},
      "content_type": "application/strategic-merge-patch+json",
      "body": {"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}}}, "without its merge key 'name'"),
    ({"method": "DELETE", "path": f"/apis/apps/v1/namespaces/{NS}/replicasets/x", "query": {},
      "content_type": None, "body": None}, "no such operation"),
])
def test_the_checker_catches_what_the_document_does_not_allow(call, wrong):
    _, problems = check_call({**call, "status": 200})
    assert any(wrong in p for p in problems), problems
