"""BAKE with the kubernetes actuator, through the official client against the STUB of the Kubernetes API
(tests/stubs/kube_stub.py; its controller deletes old ReplicaSets beyond spec.revisionHistoryLimit once
an update completes, as cleanupDeployment does).

A bake lets the Deployment complete at 100% while its previous ReplicaSet is kept for a rollback: by
revisionHistoryLimit >= 1. Not warm: the controller scales it to 0. With revisionHistoryLimit 0 the
controller deletes it as the update completes, so BAKE refuses and changes nothing.
"""
from __future__ import annotations

import pytest

from guardian.actuators import ActionRequest, registry
from guardian.actuators.kubernetes import KubeConnection, KubernetesActuator
from guardian.domain import Action
from tests.stubs.kube_stub import KubeStub

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

NS, NAME = "shop", "checkout"


def actuator(kube: KubeStub) -> KubernetesActuator:
    return KubernetesActuator(f"{NS}/{NAME}", connection=KubeConnection(host=kube.url, timeout=5))


def request(action: Action, key: str, weight: int = 100) -> ActionRequest:
    return ActionRequest("r1", "checkout", "app:v2", action, weight, key, strategy="rolling")


def started(kube: KubeStub, *, history: int | None = None) -> KubernetesActuator:
    """app:v1 with 3 replicas, then the guardian's START of app:v2 (one replica moved), and a PAUSE."""
    extra = {} if history is None else {"spec": {"revisionHistoryLimit": history}}
    kube.create_deployment(NS, NAME, "app:v1", replicas=3, extra=extra)
    a = actuator(kube)
    assert a.apply(request(Action.START, "r1:1:start", 25)).ok
    kube.progress(NS, NAME)
    assert a.apply(request(Action.PAUSE, "r1:2:pause", 25)).ok
    return a


def replicasets(kube: KubeStub) -> dict[str, tuple[str, int]]:
    """image -> (ReplicaSet name, replicas) of the Deployment's ReplicaSets."""
    return {rs["spec"]["template"]["spec"]["containers"][0]["image"]: (name, rs["spec"]["replicas"])
            for (ns, name), rs in kube.replicasets.items() if ns == NS}


def test_bake_completes_the_update_and_keeps_the_previous_replicaset_for_a_rollback(kube):
    a = started(kube)
    bake = request(Action.BAKE, "r1:3:bake")
    out = a.apply(bake)
    assert out.ok, out.detail
    assert not kube.deployments[(NS, NAME)]["spec"].get("paused")  # the update goes on to 100%
    previous_name, _ = replicasets(kube)["app:v1"]
    warm = out.data["warm"]
    assert (warm["replicaset"], warm["revision"], warm["image"], warm["revision_history_limit"]) == (
        previous_name, 1, "app:v1", 10)
    assert f"the previous ReplicaSet {previous_name} (revision 1, app:v1) kept by revisionHistoryLimit 10" \
        in out.detail, out.detail
    assert "not warm" in out.detail
    assert a.verify(bake).ok
    assert a.apply(bake) is out  # same key: nothing again

    kube.progress(NS, NAME, steps=3)  # the controller completes the update
    assert replicasets(kube) == {"app:v1": (previous_name, 0), "app:v2": (replicasets(kube)["app:v2"][0], 3)}
    assert a.verify(bake).ok  # still kept (at 0 replicas) for the whole bake
    # PAUSE / RESUME during the bake: spec.paused only
    assert a.apply(request(Action.PAUSE, "r1:4:pause")).ok and a.apply(request(Action.RESUME, "r1:5:resume")).ok

    undo = a.apply(request(Action.ROLLBACK, "r1:6:rollback", 0))  # a check failed during the bake
    assert undo.ok and "rolled back to revision 1" in undo.detail, undo.detail
    dep = kube.deployments[(NS, NAME)]
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "app:v1"
    assert a.detect(NS, NAME).hash == warm["pod_template_hash"]  # the same ReplicaSet, scaled up again


def test_bake_is_refused_and_changes_nothing_when_revision_history_limit_is_0(kube):
    a = started(kube, history=0)
    before = kube.deployments[(NS, NAME)]["metadata"]["resourceVersion"]
    out = a.apply(request(Action.BAKE, "r1:3:bake"))
    assert not out.ok
    assert "refusing to bake: spec.revisionHistoryLimit is 0" in out.detail, out.detail
    assert "kubectl -n shop patch deployment checkout -p '{\"spec\":{\"revisionHistoryLimit\":1}}'" in out.detail
    dep = kube.deployments[(NS, NAME)]
    assert dep["spec"]["paused"] and dep["metadata"]["resourceVersion"] == before  # untouched
    assert not a.verify(request(Action.BAKE, "r1:3:bake")).ok

    # why: with 0, once the update completes the controller deletes the previous ReplicaSet
    assert a.apply(request(Action.RESUME, "r1:4:resume")).ok
    kube.progress(NS, NAME, steps=3)
    assert list(replicasets(kube)) == ["app:v2"]
    # the user sets the limit, as the message says: BAKE goes on only with a ReplicaSet to go back to
    kube.deployments[(NS, NAME)]["spec"]["revisionHistoryLimit"] = 1
    out = a.apply(request(Action.BAKE, "r1:3:bake"))
    assert not out.ok and "no previous ReplicaSet is left to roll back to" in out.detail, out.detail


def test_verify_of_a_bake_fails_once_the_previous_replicaset_is_gone(kube):
    a = started(kube, history=2)
    bake = request(Action.BAKE, "r1:3:bake")
    assert a.apply(bake).ok and a.verify(bake).ok
    kube.progress(NS, NAME, steps=3)
    del kube.replicasets[(NS, replicasets(kube)["app:v1"][0])]  # someone deleted it
    check = a.verify(bake)
    assert not check.ok and "no previous ReplicaSet is left" in check.detail, check.detail


def test_a_warm_option_in_the_target_is_refused_with_the_reason():
    problem = registry.validate_target("kubernetes:shop/checkout?warm=2")
    assert problem is not None and "takes no warm=N option (warm=N cannot be done" in problem, problem
    assert Action.BAKE in KubernetesActuator.supports
