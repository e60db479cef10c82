"""The OpenAPI document's credentials: the bearer and basic schemes each operation takes, declared so that
Swagger UI (/docs) shows an Authorize button. The rule is the one the middleware (tokenfirst.py) and the
routes (deps.py) enforce."""
from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI

from guardian.api.tokenfirst import OPERATOR_PATHS

SECURITY_SCHEMES = {
    "operatorToken": {"type": "http", "scheme": "bearer", "description": (
        "The operators' token (`token`, GUARDIAN_TOKEN): it alone authorizes starting, pausing, resuming, promoting "
        "and rolling back rollouts and reloading rules, when the guardian has one.")},
    "alertmanagerToken": {"type": "http", "scheme": "bearer", "description": (
        "Alertmanager's bearer token for POST /v1/alerts (`alerts_token`); with no Alertmanager credentials set, "
        "the webhook takes the operator token.")},
    "alertmanagerBasicAuth": {"type": "http", "scheme": "basic", "description": (
        "Alertmanager's basic auth for POST /v1/alerts (`alerts_basic_auth`, as http_config.basic_auth sends it).")},
    "gateToken": {"type": "http", "scheme": "bearer", "description": (
        "The gates' token (`gate_token`, else the operator token) for Flagger's webhooks and Argo's web metric; "
        "Flagger may send it as metadata.token in the body instead.")},
}


def security_of(path: str, method: str) -> list[dict[str, list[str]]] | None:
    """The credentials an operation takes: the same rule the middleware and the routes enforce."""
    if method == "post" and OPERATOR_PATHS.match(path):
        return [{"operatorToken": []}]
    if method == "post" and path == "/v1/alerts":
        return [{"alertmanagerToken": []}, {"alertmanagerBasicAuth": []}, {"operatorToken": []}]
    if path.startswith("/v1/gates/flagger/"):
        return [{"gateToken": []}, {}]  # or metadata.token in the body; the event hook takes none
    if path.startswith("/v1/gates/"):
        return [{"gateToken": []}]
    return None


def with_security(app: FastAPI) -> Callable[[], dict]:
    """FastAPI's OpenAPI document plus the bearer/basic schemes each operation takes (so Swagger UI shows an
    Authorize button); the Authorization header is the schemes', not a parameter of its own."""
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = generate()
        doc.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
        for path, operations in doc.get("paths", {}).items():
            for method, op in operations.items():
                if not isinstance(op, dict):
                    continue
                if "parameters" in op:
                    op["parameters"] = [p for p in op["parameters"] if not (
                        p.get("in") == "header" and p.get("name", "").lower() == "authorization")]
                    if not op["parameters"]:
                        del op["parameters"]
                security = security_of(path, method)
                if security:
                    op["security"] = security
                    op.setdefault("responses", {}).setdefault("401", {
                        "description": 'missing or wrong credentials: {"error": "unauthorized", "detail": "..."}'})
        app.openapi_schema = doc
        return doc

    return openapi
