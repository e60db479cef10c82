"""Contract: every request the Grafana notifier sends, and every answer the Grafana stub gives it, is
allowed by Grafana's own OpenAPI (Swagger 2.0) document -- a verbatim extract of grafana/grafana's
public/api-merged.json kept in tests/contracts/grafana_openapi_extract.json (source, commit and what was
extracted are named in its "x-source"). The real notifier sends to the stub (tests/stubs/grafana_stub.py),
the stub records each request (method, path, query, content type, JSON body) and its answer, and each is
checked here: the path and method are an operation of the document, the query parameters and path
parameters are declared, a body is sent exactly when the operation takes one, with a content type it
consumes, and every body field is a declared property of the right type (no undeclared field, every
required one present); each answer's status is declared for the operation and its body has the schema's
required fields with the declared types. So neither the notifier nor the stub can drift from the real API
unnoticed.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from guardian.notifiers.grafana import GrafanaNotifier
from tests.stubs.grafana_stub import ALL_PERMISSIONS, Call, GrafanaStub

EXTRACT = Path(__file__).resolve().parents[1] / "contracts" / "grafana_openapi_extract.json"
SPEC: dict[str, Any] = json.loads(EXTRACT.read_text(encoding="utf-8"))
TOKEN = "glsa_contract"


# -- a small, strict Swagger 2.0 checker ---------------------------------------------------------------------
def resolve(node: dict[str, Any]) -> dict[str, Any]:
    """Follow local $refs (#/definitions/X, #/responses/X) until a real node."""
    while "$ref" in node:
        _, section, name = node["$ref"].split("/")
        node = SPEC[section][name]
    return node


def operation(method: str, path: str) -> tuple[str, dict[str, Any], dict[str, str]] | None:
    """The operation (path template, operation object, path parameters) this request is, if any."""
    if not path.startswith(SPEC["basePath"] + "/"):
        return None
    rest = path.removeprefix(SPEC["basePath"])
    for template, item in SPEC["paths"].items():
        pattern = "^" + re.sub(r"\\{(\w+)\\}", r"(?P<\1>[^/]+)", re.escape(template)) + "$"
        if (found := re.match(pattern, rest)) and method.lower() in item:
            return template, item[method.lower()], found.groupdict()
    return None


def type_errors(value: Any, schema: dict[str, Any], where: str, *, strict: bool) -> list[str]:
    """How `value` breaks `schema` (type, format int64, items, required, and with `strict` no undeclared
    property)."""
    schema = resolve(schema)
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        return object_errors(value, schema, where, strict=strict)
    checks = {"string": lambda v: isinstance(v, str), "boolean": lambda v: isinstance(v, bool),
              "integer": lambda v: isinstance(v, int) and not isinstance(v, bool) and -2**63 <= v < 2**63,
              "array": lambda v: isinstance(v, list)}
    if kind in checks and not checks[kind](value):
        return [f"{where}: {value!r} is not {kind} ({schema.get('format', '')})".replace(" ()", "")]
    if kind == "array":
        return [e for i, item in enumerate(value) for e in type_errors(item, schema["items"], f"{where}[{i}]",
                                                                        strict=strict)]
    return []


def object_errors(value: Any, schema: dict[str, Any], where: str, *, strict: bool) -> list[str]:
    if not isinstance(value, dict):
        return [f"{where}: {value!r} is not an object"]
    props = schema.get("properties", {})
    errors = [f"{where}: required field {name!r} missing" for name in schema.get("required", []) if name not in value]
    for name, field in value.items():
        if name in props:
            errors += type_errors(field, props[name], f"{where}.{name}", strict=strict)
        elif strict:
            errors.append(f"{where}: field {name!r} is not declared by the schema")
    return errors


def request_errors(call: Call) -> list[str]:
    """How this request breaks the document (empty: allowed)."""
    found = operation(call.method, call.path)
    if found is None:
        return [f"{call.method} {call.path}: no such operation in Grafana's API"]
    template, op, path_params = found
    params = op.get("parameters", [])
    declared = {p["name"]: p for p in params}
    errors = [f"path parameter {n!r} undeclared" for n in path_params if declared.get(n, {}).get("in") != "path"]
    errors += [f"query parameter {n!r} undeclared" for n in call.query
               if declared.get(n, {}).get("in") != "query"]
    body = next((p for p in params if p["in"] == "body"), None)
    if body is None:
        if call.body is not None or call.content_type:
            errors.append(f"{call.method} {template} takes no body, got {call.content_type} {call.body!r}")
        return errors
    media = (call.content_type or "").split(";")[0].strip()
    if media not in op.get("consumes", SPEC["consumes"]):
        errors.append(f"content type {call.content_type!r} not in {op.get('consumes', SPEC['consumes'])}")
    if call.body is None and body.get("required"):
        errors.append("the required body is missing")
    elif call.body is not None:
        errors += type_errors(call.body, body["schema"], "body", strict=True)
    return errors


def answer_errors(call: Call) -> list[str]:
    """How the stub's answer breaks the document: an undeclared status, or a body without the schema's
    required fields or with a declared field of the wrong type (extra fields are allowed, as Swagger does)."""
    _, op, _ = operation(call.method, call.path) or ("", {"responses": {}}, {})
    response = op["responses"].get(str(call.status)) or op["responses"].get("default")
    if response is None:
        return [f"{call.method} {call.path}: status {call.status} is not declared"]
    schema = resolve(response).get("schema")
    return type_errors(call.answer, schema, f"answer {call.status}", strict=False) if schema else []


def operation_id(call: Call) -> str:
    found = operation(call.method, call.path)
    return found[1]["operationId"] if found else "?"


# -- what the real notifier sends ----------------------------------------------------------------------------
def event(action: str, phase: str, at: float, rid: str = "r1", **more: Any) -> dict[str, Any]:
    return {"rollout_id": rid, "service": "checkout", "image": "registry:5000/checkout:v2", "phase": phase,
            "started_at": 1000.0, "weight": 50, "action": action, "reason": "why", "at": at,
            "verdicts": [{"check": "error-rate", "result": "pass", "value": 0.01, "threshold": 0.05,
                          "sample_size": 300, "statistic": "wilson"}], "outcome": {"ok": True}, **more}


def record(stub: GrafanaStub, *, dashboard_uid: str | None = "release-guardian", panel_id: int | None = 4) -> None:
    """Drive the real notifier through every kind of request it makes: the start-up dashboard check, a
    rollout's region (POST, then PATCH at its end), points, and a region whose start never landed (POSTed
    whole at its end)."""
    g = GrafanaNotifier(stub.url, TOKEN, dashboard_uid=dashboard_uid, panel_id=panel_id, retry_base=0.01,
                        retry_cap=0.02)
    g.start_dashboard_check()
    g.notify(event("start", "progressing", 1000.0))
    g.notify(event("advance", "progressing", 1060.0))
    g.notify(event("promote", "promoted", 1120.0))
    g.notify(event("rollback", "rolled_back", 1200.0, rid="r2"))  # its start was never seen: POSTed whole
    assert g.wait_dashboard_check(5) or dashboard_uid is None
    assert g.flush(10)
    g.close(2)


@pytest.fixture
def stub() -> Any:
    with GrafanaStub(TOKEN) as s:
        yield s


def test_every_request_the_notifier_sends_is_allowed_by_grafanas_openapi(stub):
    record(stub)
    assert stub.calls, "nothing was sent"
    problems = {f"{c.method} {c.path} {c.body!r}": request_errors(c) for c in stub.calls}
    assert not {k: v for k, v in problems.items() if v}
    assert {operation_id(c) for c in stub.calls} == {"getDashboardByUID", "postAnnotation", "patchAnnotation"}
    posts = [c.body for c in stub.calls if c.method == "POST"]
    region, point = {"dashboardUID", "panelId", "time", "timeEnd", "tags", "text"}, {"dashboardUID", "panelId", "time",
                                                                                    "tags", "text"}
    assert {frozenset(b) for b in posts} == {frozenset(region), frozenset(point)}
    (patch,) = [c.body for c in stub.calls if c.method == "PATCH"]
    assert set(patch) == {"timeEnd", "tags", "text"}
    assert all(c.content_type == "application/json" for c in stub.calls if c.body is not None)


def test_without_a_dashboard_the_posts_carry_no_dashboard_fields(stub):
    record(stub, dashboard_uid=None, panel_id=None)
    assert not [e for c in stub.calls for e in request_errors(c)]
    assert all(not {"dashboardUID", "panelId"} & set(c.body) for c in stub.calls if c.method == "POST")
    assert "getDashboardByUID" not in {operation_id(c) for c in stub.calls}


def test_every_answer_the_stub_gives_is_one_grafanas_openapi_declares():
    with GrafanaStub(TOKEN) as found, GrafanaStub(TOKEN, dashboards={}) as missing, \
            GrafanaStub(TOKEN, permissions=ALL_PERMISSIONS - {"annotations:write", "dashboards:read"}) as refusing:
        for s in (found, missing, refusing):
            record(s)
    calls = found.calls + missing.calls + refusing.calls
    assert {c.status for c in calls} == {200, 403, 404}
    assert not {f"{c.method} {c.path} {c.status}": answer_errors(c) for c in calls if answer_errors(c)}
    assert not [e for c in calls for e in request_errors(c)]


def test_the_stubs_error_answers_are_grafanas_declared_error_bodies(stub):
    headers = {"Authorization": f"Bearer {TOKEN}"}
    for method, path, body in [("POST", "/api/annotations", {"text": "t", "tags": ["x" * 600]}),
                               ("POST", "/api/annotations", {"text": "t", "tags": ["x" * 101]}),
                               ("POST", "/api/annotations", {"text": ""}),
                               ("PATCH", "/api/annotations/77", {"text": "t"})]:
        httpx.request(method, stub.url + path, json=body, headers=headers)
    assert [c.status for c in stub.calls] == [400, 500, 400, 404]
    assert not [e for c in stub.calls for e in answer_errors(c) + request_errors(c)]


# -- the checker is not vacuous -------------------------------------------------------------------------------
def call(method: str = "POST", path: str = "/api/annotations", body: Any = None, query: dict | None = None,
         content_type: str | None = "application/json") -> Call:
    return Call(method, path, query or {}, content_type, body, 200)


@pytest.mark.parametrize(("bad", "why"), [
    (call(body={"text": "t", "title": "x"}), "'title' is not declared"),
    (call(body={"text": "t", "time": True}), "is not integer"),
    (call(body={"text": "t", "time": 1.5}), "is not integer"),
    (call(body={"text": "t", "tags": "a,b"}), "is not array"),
    (call(body={"text": "t", "tags": [1]}), "is not string"),
    (call(body={"time": 1}), "required field 'text' missing"),
    (call(body={"text": "t"}, content_type="text/plain"), "content type"),
    (call("PUT", "/api/annotations/1", {"text": "t"}), "no such operation"),
    (call("PATCH", "/api/annotation/1", {"text": "t"}), "no such operation"),
    (call("GET", "/api/dashboards/uid/x", query={"orgId": ["1"]}, content_type=None), "query parameter 'orgId'"),
    (call("GET", "/api/dashboards/uid/x", body={"a": 1}), "takes no body"),
    (call("PATCH", "/api/annotations/1", {"dashboardUID": "x"}), "'dashboardUID' is not declared"),
])
def test_the_checker_refuses_what_grafanas_document_does_not_allow(bad, why):
    assert any(why in e for e in request_errors(bad)), request_errors(bad)


def test_the_extract_names_its_source_and_resolves():
    source = SPEC["x-source"]
    assert source["repository"] == "grafana/grafana" and source["path"] == "public/api-merged.json"
    assert re.fullmatch(r"[0-9a-f]{40}", source["commit"])
    refs = re.findall(r'"\$ref": "#/(\w+)/(\w+)"', EXTRACT.read_text(encoding="utf-8"))
    assert refs and all(name in SPEC[section] for section, name in refs)
    assert {op["operationId"] for item in SPEC["paths"].values() for op in item.values()} == {
        "postAnnotation", "patchAnnotation", "getDashboardByUID"}
