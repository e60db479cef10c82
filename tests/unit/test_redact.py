"""Security, in process: secrets redacted (guardian/redact.py) from log records, recordings, Grafana
annotations and webhook payloads; PromQL label values kept inside their matcher; the request size
limit on every endpoint (guardian/api/limits.py); operator and Alertmanager credentials kept apart.
The real app, store, rules and guard (a recording as the metric source, a fake clock, noop actuator)."""
from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import pytest
from loguru import logger

from guardian import redact
from guardian.actuators import ActionRequest
from guardian.actuators.webhook import WebhookActuator
from guardian.domain import Action
from guardian.errors import RuleError
from guardian.notifiers.grafana import GrafanaNotifier
from guardian.rules.loader import parse_text
from guardian.rules.promql import render, unquoted_value_placeholders
from tests.unit.test_alerts import alert, payload
from tests.unit.test_api_contract import clean_env, make_harness  # noqa: F401

OPERATOR = "op-Tok3n-5f0c2a9e"
ALERTS = "am-Tok3n-81bd77c1"
GRAFANA = "glsa_Gr4fana-0d3e"
PROM_PASSWORD = "pr0m-Pa55word"
ALERT_PASSWORD = "runb00k-Pa55"
DEPLOY_PASSWORD = "depl0y-Pa55"
SECRETS = (OPERATOR, ALERTS, GRAFANA, PROM_PASSWORD, ALERT_PASSWORD, DEPLOY_PASSWORD)


# -- the pure parts -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "expected"), [
    ("http://user:pass@host:9090/x", "http://user:***@host:9090/x"),
    ("see postgresql://guardian:p%40ss@db:5432/g, then", "see postgresql://guardian:***@db:5432/g, then"),
    ("https://ghp_abcdef123@github.com/o/r.git", "https://***@github.com/o/r.git"),
    ("http://u:with@at@host/", "http://u:***@host/"),
    ("Authorization: Bearer abc.def-123456", "Authorization: Bearer ***"),
    ("Basic " + base64.b64encode(b"am:pa55word").decode(), "Basic ***"),
    ("bearer token or basic auth required", "bearer token or basic auth required"),  # words stay
    ("Basic authentication", "Basic authentication"),
    ("mail ops@example.com or http://host/a@b", "mail ops@example.com or http://host/a@b"),
])
def test_text_redaction(text, expected):
    assert redact.redact_text(text) == expected


def test_registered_secrets_and_their_forms_are_scrubbed():
    redact.register(*redact.secrets_of("alertmanager:" + ALERT_PASSWORD))
    basic = base64.b64encode(f"alertmanager:{ALERT_PASSWORD}".encode()).decode()
    text = redact.redact_text(f"pw={ALERT_PASSWORD} header={basic}")
    assert ALERT_PASSWORD not in text and basic not in text
    redact.register("abc")  # too short: would mangle words, not registered
    assert redact.redact_text("abcdef") == "abcdef"


def test_documents_are_redacted_by_key_and_value_and_not_changed_in_place():
    doc = {"Authorization": "Bearer x", "alerts_token": "t", "password": "p", "token": [1.5, 2.0],
           "requests": {"canary": [1, 2]}, "url": "http://a:b@c/", "nested": [{"api_key": "k"}], "n": None}
    out = redact.redact(doc)
    assert out == {"Authorization": "***", "alerts_token": "***", "password": "***", "token": [1.5, 2.0],
                   "requests": {"canary": [1, 2]}, "url": "http://a:***@c/", "nested": [{"api_key": "***"}],
                   "n": None}
    assert doc["password"] == "p"


def test_settings_register_every_secret_field_and_url_password(tmp_path):
    from guardian.settings import Settings

    s = Settings(db_path=str(tmp_path / "g.db"), token=OPERATOR, alerts_basic_auth=f"am:{ALERT_PASSWORD}",
                 prometheus_url=f"http://prom:{PROM_PASSWORD}@127.0.0.1:9/")
    redact.register_settings(s)
    assert {OPERATOR, ALERT_PASSWORD, PROM_PASSWORD} <= set(redact.registered())
    assert "http://prom:" not in " ".join(redact.registered())  # the password, not the whole URL


# -- PromQL injection -----------------------------------------------------------------------------------
INJECTION = 'x"} or vector(1) or {a="'


def test_an_injected_service_stays_inside_its_one_label_matcher():
    q = render('sum(http_requests_total{service="{{service}}",{{arm_label}}="{{arm}}"})', service=INJECTION,
               arm='canary\\"}\nor vector(2)', arm_label="track")
    assert q == ('sum(http_requests_total{service="x\\"} or vector(1) or {a=\\"",'
                 'track="canary\\\\\\"}\\nor vector(2)"})')
    assert "\n" not in q
    # the value decodes back to exactly what was given: one matcher, nothing outside it
    inner = q[len('sum(http_requests_total{service="'):q.index('",track="')]
    assert json.loads(f'"{inner}"') == INJECTION


@pytest.mark.parametrize("template", [
    "m{service={{service}}}",  # no quotes at all: the value would be PromQL
    "m{service='{{service}}'}",  # escaping a ' is not done (and \" is not valid there)
    "m{service=`{{service}}`}",  # raw strings have no escapes
    'm{a="x\\\\"{{service}}"}',  # "x\\" ends before the placeholder
    'm{track="canary"} # "{{arm}}"',  # in a comment
])
def test_a_value_placeholder_outside_a_double_quoted_string_is_refused(template):
    assert unquoted_value_placeholders(template)
    with pytest.raises(ValueError, match="double-quoted"):
        render(template, service="s", arm="canary")


def test_quoted_placeholders_pass_even_after_escapes_and_other_strings():
    ok = ('label_replace(m{a="it\'s \\"q\\"",service="{{service}}"}, "x", \'{{arm}}?\', "", "")'
          ' or n{t=`a"b`,s="{{arm}}"}')
    assert unquoted_value_placeholders(ok) == ["arm"]  # only the one in '...'
    assert unquoted_value_placeholders('m{a="\\"",s="{{service}}",t="{{ arm }}"}') == []


def test_a_rule_file_with_an_unquoted_value_placeholder_is_refused_with_its_line():
    text = ("service: checkout\nqueries:\n  throttled:\n    type: counter\n"
            "    promql: sum(http_requests_total{service=~{{service}}})\n"
            "checks:\n  - {name: t, kind: threshold, signal: throttled, above: 1, action: pause}\n")
    with pytest.raises(RuleError) as e:
        parse_text(text, "checkout.yaml")
    problem = str(e.value.problems[0])
    assert "checkout.yaml:5:" in problem and "double-quoted" in problem


# -- request size limit -----------------------------------------------------------------------------------
def test_every_endpoint_refuses_a_body_over_the_limit_by_content_length(tmp_path):
    for h in make_harness(tmp_path, max_body_bytes=4096):
        big = json.dumps({"service": "checkout", "image": "x" * 5000})
        r = h.client.post("/v1/rollouts", content=big, headers={"Content-Type": "application/json"})
        assert r.status_code == 413, r.text
        assert r.json()["error"] == "too_large" and "4096" in r.json()["detail"]
        assert h.rollouts() == []
        assert h.start(image="y" * 100)["image"] == "y" * 100  # under the limit: through as before


def test_a_chunked_body_is_refused_when_it_grows_past_the_limit_before_the_handler_runs(tmp_path):
    for h in make_harness(tmp_path, max_body_bytes=4096, alerts_max_bytes=4096):  # the webhook has its own limit
        calls = []
        h.c.guard.receive_alerts = lambda alerts, calls=calls: calls.append(alerts) or {}  # the handler's work

        def chunks():
            body = json.dumps(payload(*[alert(fingerprint=f"f{i}") for i in range(40)])).encode()
            for i in range(0, len(body), 1000):
                yield body[i:i + 1000]

        r = h.client.post("/v1/alerts", content=chunks(), headers={"Content-Type": "application/json"})
        assert r.status_code == 413 and r.json()["error"] == "too_large", r.text
        assert calls == []

        def small():
            yield json.dumps(payload(alert()))[:10].encode()
            yield json.dumps(payload(alert()))[10:].encode()

        r = h.client.post("/v1/alerts", content=small(), headers={"Content-Type": "application/json"})
        assert r.status_code == 200, r.text  # streamed, within the limit: replayed to the handler whole
        assert len(calls) == 1


# -- credentials: operators and Alertmanager apart ----------------------------------------------------
@pytest.fixture
def secured(tmp_path):
    yield from make_harness(tmp_path, token=OPERATOR, alerts_token=ALERTS, alerts_basic_auth=f"am:{ALERT_PASSWORD}")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


BASIC = {"Authorization": "Basic " + base64.b64encode(f"am:{ALERT_PASSWORD}".encode()).decode()}


def test_alertmanager_credentials_cannot_start_or_steer_a_rollout(secured):
    body = {"service": "checkout", "image": "checkout:2"}
    for headers in (bearer(ALERTS), BASIC, {}, bearer(OPERATOR + "x"), {"Authorization": OPERATOR}):
        assert secured.client.post("/v1/rollouts", json=body, headers=headers).status_code == 401
        assert secured.client.post("/v1/rules/reload", headers=headers).status_code == 401
    rid = secured.start()["id"]  # the operator token does
    for action in ("pause", "resume", "promote", "rollback"):
        for headers in (bearer(ALERTS), BASIC):
            r = secured.client.post(f"/v1/rollouts/{rid}/{action}", headers=headers)
            assert r.status_code == 401, (action, r.text)
    assert secured.client.get(f"/v1/rollouts/{rid}").json()["phase"] == "progressing"
    assert secured.client.post(f"/v1/rollouts/{rid}/pause", headers=bearer(OPERATOR)).status_code == 200


def test_the_alert_webhook_takes_alertmanager_credentials_only(secured):
    send = lambda headers, fp: secured.client.post("/v1/alerts", json=payload(alert(fingerprint=fp)),  # noqa: E731
                                                   headers=headers)
    assert send(bearer(ALERTS), "a").status_code == 200
    assert send(BASIC, "b").status_code == 200
    assert send(bearer(OPERATOR), "c").status_code == 401  # separate credentials: the operator's are not Alertmanager's
    assert send({}, "d").status_code == 401
    wrong_basic = {"Authorization": "Basic " + base64.b64encode(b"am:guess").decode()}
    assert send(wrong_basic, "e").status_code == 401
    stored = {a["fingerprint"] for a in secured.client.get("/v1/alerts", params={"all": True}).json()}
    assert stored == {"a", "b"}


def test_every_credential_check_is_constant_time():
    import inspect

    from guardian.api import deps as routes  # the credential checks (once in routes.py)
    from guardian.api import identity  # who an operator or viewer token names

    for fn in (identity.caller_of_token, routes.require_alertmanager):
        source = inspect.getsource(fn)
        assert "compare_digest" in source and "==" not in source.replace("is None", "")
    assert "caller_of_header" in inspect.getsource(routes.require_token)  # the operator tokens: through identity


# -- secrets out of logs, recordings, annotations, webhook payloads ----------------------------------------
def test_secrets_in_settings_and_labels_reach_no_log_line_recording_or_annotation(tmp_path):
    sent: list[dict] = []

    def grafana(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(200, json={"id": len(sent)})

    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="DEBUG", format="{message} | {extra}")
    try:
        for h in make_harness(tmp_path, token=OPERATOR, alerts_token=ALERTS, grafana_token=GRAFANA,
                              prometheus_url=f"http://prom:{PROM_PASSWORD}@127.0.0.1:9/"):
            from guardian.notifiers import FanOut

            notifier = GrafanaNotifier("http://grafana.invalid", GRAFANA, transport=httpx.MockTransport(grafana))
            h.c.guard.notifier = FanOut(h.c.guard.notifier, notifier)
            rid = h.start(previous_image=f"https://deploy:{DEPLOY_PASSWORD}@registry.local/checkout:1")["id"]
            for _ in range(2):  # real ticks: each writes the recording file
                h.clock.advance(10)
                h.c.guard.tick(rid)
            runbook = f"http://ops:{ALERT_PASSWORD}@wiki.local/runbooks/checkout"
            a = alert(runbook=runbook)
            a["annotations"]["summary"] = f"canary failing; debug with token {OPERATOR} at {runbook}"
            r = h.client.post("/v1/alerts", json=payload(a), headers=bearer(ALERTS))
            assert r.status_code == 200 and r.json()["acted"][0]["action"] == "rollback", r.text
            logger.warning("settings: {} and {}", h.c.settings.token.get_secret_value(), h.c.settings.prometheus_url)
            logger.bind(headers={"Authorization": f"Bearer {ALERTS}"}).info("a request")
            notifier.close(3)
            recording = h.client.get(f"/v1/rollouts/{rid}/recording").json()
            written = (Path(h.c.settings.recordings_dir) / f"{rid}.json").read_text()
    finally:
        logger.remove(sink)
    texts = [a.get("text", "") for a in sent]
    assert any("rollback" in t and "runbook=http://ops:***@wiki.local" in t for t in texts), texts
    assert recording["labels"]["previous_image"] == "https://deploy:***@registry.local/checkout:1"
    log = "\n".join(lines)
    assert "settings: *** and http://prom:***@127.0.0.1:9/" in log and "{'Authorization': '***'}" in log
    everything = {"log": log, "recording": json.dumps(recording), "written": written, "annotations": json.dumps(sent)}
    for where, text in everything.items():
        for secret in SECRETS:
            assert secret not in text, (where, secret)


def test_the_serving_sink_redacts_tracebacks_too():
    lines: list[str] = []
    sink = logger.add(redact.redacting_sink(lines.append), format="{message}", diagnose=False)
    try:
        try:
            raise ConnectionError(f"cannot reach http://prom:{PROM_PASSWORD}@127.0.0.1:9/api")
        except ConnectionError:
            logger.exception("query failed")
    finally:
        logger.remove(sink)
    text = "".join(lines)
    assert "Traceback" in text and "http://prom:***@127.0.0.1:9/api" in text and PROM_PASSWORD not in text


def test_a_webhook_payload_carries_no_secret():
    bodies: list[dict] = []

    def hook(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200)

    redact.register(OPERATOR)
    w = WebhookActuator("http://127.0.0.1:9/weights", transport=httpx.MockTransport(hook))
    reason = f"rollback: alert at http://ops:{ALERT_PASSWORD}@wiki.local/x (token {OPERATOR})"
    assert w.apply(ActionRequest("r1", "checkout", "checkout:2", Action.ROLLBACK, 0, "r1:1:rollback",
                                 reason=reason)).ok
    assert bodies[0]["reason"] == "rollback: alert at http://ops:***@wiki.local/x (token ***)"
    assert bodies[0]["key"] == "r1:1:rollback" and bodies[0]["action"] == "rollback"


def test_named_operator_tokens_webhook_urls_and_the_influxdb_password_are_masked_in_logs():
    from guardian.redact import redact_text, register_settings
    from guardian.settings import Settings

    register_settings(Settings(operator_tokens={"alice": "alice-secret-1"}, influxdb_url="http://127.0.0.1:8086",
                               influxdb_password="pw-secret-9", notify_routes=[
                                   {"channel": "slack", "url": "https://hooks.slack.com/services/T/B/XYZsecret"}]))
    text = redact_text("alice-secret-1 https://hooks.slack.com/services/T/B/XYZsecret pw-secret-9")
    assert "alice-secret-1" not in text and "XYZsecret" not in text and "pw-secret-9" not in text
