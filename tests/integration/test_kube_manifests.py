"""deploy/kubernetes/: the manifests deserialize into the official client's models, the RBAC rules grant
exactly the calls the actuator and the watcher make (recorded by the Kubernetes API STUB,
tests/stubs/kube_stub.py), and the Flagger / Argo Rollouts examples point at the gates that exist."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from kubernetes import client
from ruamel.yaml import YAML

from guardian.actuators import ActionRequest
from guardian.actuators.kubernetes import KubeConnection, KubernetesActuator
from guardian.api.gates import FLAGGER_HOOKS
from guardian.domain import Action
from tests.stubs.kube_stub import KubeStub

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
MODELS = {"Deployment": "V1Deployment", "Service": "V1Service", "ServiceAccount": "V1ServiceAccount",
          "ClusterRole": "V1ClusterRole", "ClusterRoleBinding": "V1ClusterRoleBinding", "Role": "V1Role",
          "RoleBinding": "V1RoleBinding"}


def docs(name: str) -> list[dict]:
    return [d for d in YAML(typ="safe").load_all((DEPLOY / name).read_text()) if d]


def model(doc: dict):
    api = client.ApiClient()
    obj = api.deserialize(json.dumps(doc), MODELS[doc["kind"]], "application/json")
    assert type(obj).__name__ == MODELS[doc["kind"]]
    assert api.sanitize_for_serialization(obj) == doc, f"{doc['kind']} has fields the model does not know"
    return obj


@pytest.mark.parametrize("name", ["rbac.yaml", "guardian.yaml", "app-example.yaml"])
def test_manifests_are_valid_client_models(name):
    for doc in docs(name):
        model(doc)


def test_the_guardian_runs_as_its_service_account_and_the_service_selects_it():
    by_kind = {d["kind"]: d for d in docs("guardian.yaml") + docs("rbac.yaml")}
    dep, svc, sa = model(by_kind["Deployment"]), model(by_kind["Service"]), model(by_kind["ServiceAccount"])
    assert dep.spec.template.spec.service_account_name == sa.metadata.name
    assert svc.spec.selector.items() <= dep.spec.template.metadata.labels.items()
    env = {e.name: e for e in dep.spec.template.spec.containers[0].env}
    assert env["GUARDIAN_WATCH_KUBERNETES"].value == "true" and env["GUARDIAN_TOKEN"].value_from.secret_key_ref
    binding = model(by_kind["ClusterRoleBinding"])
    assert binding.role_ref.name == by_kind["ClusterRole"]["metadata"]["name"]
    assert (binding.subjects[0].name, binding.subjects[0].namespace) == (sa.metadata.name, sa.metadata.namespace)
    app = model(docs("app-example.yaml")[0])
    assert app.metadata.annotations["guardian.io/policy"] == "checkout"


def test_rbac_grants_exactly_the_calls_the_actuator_and_watcher_make(tmp_path):
    stub = KubeStub().start()
    try:
        stub.create_deployment("shop", "checkout", "app:v1", replicas=2, annotations={"guardian.io/policy": "c"})
        stub.set_image("shop", "checkout", "app:v2")
        a = KubernetesActuator("shop/checkout", connection=KubeConnection(host=stub.url))
        for i, action in enumerate([Action.START, Action.PAUSE, Action.RESUME, Action.SCALE, Action.ROLLBACK]):
            request = ActionRequest("r", "checkout", "app:v2", action, 100, f"r:{i}", strategy="canary", replicas=1)
            assert a.apply(request).ok
            assert a.verify(request).ok
        from guardian.api.components import build
        from guardian.clock import FakeClock
        from guardian.settings import Settings
        from guardian.sources.recording import RecordingSource
        from guardian.watchers.kubernetes import KubeWatcher
        from tests.unit.recordings import steady_recording

        settings = Settings(db_path=str(tmp_path / "g.db"), rules=[], recordings_dir="", kube_host=stub.url)
        c = build(settings, source=RecordingSource(steady_recording(5)), clock=FakeClock())
        w = KubeWatcher(c.guard, settings, connection=KubeConnection(host=stub.url))
        w.poll()
        w.watch_once(timeout_seconds=1)
    finally:
        stub.stop()
    made = set()
    for method, path, _ in stub.requests:
        parts = path.strip("/").split("/")
        sub = f"/{parts[7]}" if len(parts) > 7 else ""
        resource = "deployments" if parts[3:] == ["deployments"] else parts[5] + sub
        named = len(parts) > 6
        verb = {"GET": "get" if named else "list", "WATCH": "watch", "PATCH": "patch", "PUT": "update"}[method]
        made.add((verb, resource))
    granted = {(verb, resource) for rule in model(docs("rbac.yaml")[1]).rules for resource in rule.resources
               for verb in rule.verbs if rule.api_groups == ["apps"]}
    assert granted == made, f"granted but unused: {granted - made}; used but not granted: {made - granted}"


def test_flagger_and_argo_examples_use_the_gates_that_exist():
    [canary] = docs("flagger-canary.yaml")
    assert canary["apiVersion"] == "flagger.app/v1beta1" and canary["kind"] == "Canary"
    for hook in canary["spec"]["analysis"]["webhooks"]:
        assert hook["type"] in FLAGGER_HOOKS
        assert hook["url"].endswith(f"/v1/gates/flagger/{hook['type']}")
        assert "token" in hook["metadata"]
    hooks = [h["type"] for h in canary["spec"]["analysis"]["webhooks"]]
    assert {"pre-rollout", "rollout", "confirm-traffic-increase", "confirm-promotion", "rollback",
            "post-rollout"} <= set(hooks)  # judged on every pass, held at each step, ended by Flagger
    secret, template, rollout = docs("argo-analysistemplate.yaml")
    assert template["kind"] == "AnalysisTemplate" and rollout["kind"] == "Rollout"
    [metric] = template["spec"]["metrics"]
    # the secret the template reads exists, in the template's namespace, with the key it reads
    [token_arg] = [a for a in template["spec"]["args"] if "valueFrom" in a]
    ref = token_arg["valueFrom"]["secretKeyRef"]
    assert (secret["kind"], secret["metadata"]["name"], secret["metadata"]["namespace"]) == (
        "Secret", ref["name"], template["metadata"]["namespace"]) and ref["key"] in secret["stringData"]
    # a background analysis without `count` judges until the Rollout completes; the first fail aborts
    assert "count" not in metric and metric["failureLimit"] == 0
    assert metric["successCondition"] == 'result.verdict == "pass"'
    assert metric["failureCondition"] == 'result.verdict == "fail"'
    assert re.search(r"/v1/gates/argo/\{\{args.service\}\}\?revision=", metric["provider"]["web"]["url"])
    used = set(re.findall(r"\{\{args\.([a-z-]+)\}\}", json.dumps(metric)))
    declared = {a["name"] for a in template["spec"]["args"]}
    assert used <= declared
    given = {a["name"] for a in rollout["spec"]["strategy"]["canary"]["analysis"]["args"]}
    assert declared - given == {"gate-token"}  # from its secretKeyRef; the rest from the Rollout
