"""Issue 17, defect 6: /docs works offline (Swagger UI's assets served by the guardian itself, from the
fastapi-offline package, no CDN) and /openapi.json declares the bearer credentials each endpoint takes, so
Swagger UI shows an Authorize button."""
from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.unit.test_api_contract import Harness, clean_env, make_harness  # noqa: F401  (clean_env: autouse)


@pytest.fixture
def api(tmp_path) -> Iterator[Harness]:
    yield from make_harness(tmp_path, token="docs-T0ken")


def assets(html: str) -> list[str]:
    return re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_reference_no_outside_host_and_their_assets_answer(api, page):
    r = api.client.get(page)
    if page == "/redoc" and r.status_code == 404:
        pytest.skip("no ReDoc page")
    assert r.status_code == 200
    html = r.text
    assert not re.search(r"https?://", html), re.findall(r"https?://[^\s\"'<>]+", html)  # no CDN, no fonts, no favicon
    urls = assets(html)
    scripts = [u for u in urls if u.endswith(".js")]
    assert scripts, html
    if page == "/docs":
        assert any(u.endswith(".css") for u in urls), html
    for url in urls:
        got = api.client.get(url)
        assert got.status_code == 200, url
        assert len(got.content) > 100, url
        if url.endswith(".js"):
            assert "javascript" in got.headers["content-type"], (url, got.headers["content-type"])
        elif url.endswith(".css"):
            assert got.headers["content-type"].startswith("text/css"), url


def test_the_swagger_bundle_is_a_real_swagger_ui(api):
    js = [u for u in assets(api.client.get("/docs").text) if u.endswith("swagger-ui-bundle.js")]
    assert js
    assert "SwaggerUIBundle" in api.client.get(js[0]).text


def _security(doc: dict, path: str, method: str) -> list[dict] | None:
    return doc["paths"][path][method].get("security")


def test_openapi_declares_bearer_schemes_and_where_they_are_needed(api):
    doc = api.client.get("/openapi.json").json()
    schemes = doc["components"]["securitySchemes"]
    bearer = {name for name, s in schemes.items() if s == {**s, "type": "http", "scheme": "bearer"}}
    assert bearer, schemes
    operator = [name for name in bearer if "operator" in name.lower()]
    assert operator, schemes
    for path, method in [("/v1/rollouts", "post"), ("/v1/rollouts/{rollout_id}/pause", "post"),
                         ("/v1/rollouts/{rollout_id}/resume", "post"), ("/v1/rollouts/{rollout_id}/promote", "post"),
                         ("/v1/rollouts/{rollout_id}/rollback", "post"), ("/v1/rules/reload", "post")]:
        assert _security(doc, path, method) == [{operator[0]: []}], (path, _security(doc, path, method))
    for path, method in [("/v1/rollouts", "get"), ("/v1/rollouts/{rollout_id}", "get"), ("/healthz", "get"),
                         ("/metrics", "get"), ("/v1/rules", "get")]:
        assert not _security(doc, path, method), path  # reads stay open
    alerts = _security(doc, "/v1/alerts", "post")
    assert alerts and len(alerts) >= 2, alerts  # Alertmanager's bearer or basic auth
    assert any(schemes[next(iter(req))]["scheme"] == "basic" for req in alerts)
    for path in ("/v1/gates/argo/{service}", "/v1/gates/flagger/{hook}"):
        for method, op in doc["paths"][path].items():
            assert op.get("security"), (path, method)
    # the Authorization header is the scheme's, not a parameter of its own
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            names = [p["name"].lower() for p in op.get("parameters", [])]
            assert "authorization" not in names, (path, method)
