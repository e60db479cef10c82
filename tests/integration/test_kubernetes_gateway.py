"""Weighted canaries on Kubernetes through the Gateway API (`kubernetes:NS/NAME?router=gateway:NS/HTTPROUTE`),
through the official client against the STUB of the Kubernetes API (tests/stubs/kube_stub.py: Deployments,
Services and HTTPRoutes; the HTTPRoutes pruned, defaulted and validated by the CRD schema of the Gateway API's
v1 types, tests/contracts/gateway_httproute_v1_extract.json). No API server, no Gateway implementation runs
here: what a real cluster must confirm is in docs/kubernetes.md ("What to verify on a real cluster").

The stable Deployment `checkout` (4 replicas of app:v1, pods `app: checkout, track: stable`) behind the Service
`checkout` (selector the same), which the HTTPRoute `checkout` forwards to; the guardian runs app:v2 as the
canary beside it."""
from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from guardian.actuators import ActionRequest, registry
from guardian.actuators.deps import ActuatorDeps
from guardian.actuators.kube_gateway import GatewayCanaryActuator
from guardian.actuators.kubernetes import KubeConnection, KubernetesActuator
from guardian.api.app import create_app
from guardian.api.components import build
from guardian.clock import FakeClock
from guardian.domain import Action, RolloutState, Strategy
from guardian.errors import ActuatorError
from guardian.settings import Settings
from guardian.sources.recording import RecordingSource
from tests.stubs.httproute_schema import normalize
from tests.stubs.kube_stub import ROUTE_GROUP, KubeStub
from tests.unit.recordings import steady_recording
from tests.unit.test_api_contract import clean_env  # noqa: F401  (autouse: no GUARDIAN_* from outside)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

NS, NAME = "shop", "checkout"
TARGET = f"kubernetes:{NS}/{NAME}?router=gateway:{NS}/{NAME}"
ROUTE_PATH = f"/apis/{ROUTE_GROUP}/v1/namespaces/{NS}/httproutes/{NAME}"
STABLE = {"app": NAME, "track": "stable"}


def cluster(kube: KubeStub, *, replicas: int = 4, service_selector: dict[str, str] | None = None,
            route: bool = True) -> None:
    """The stable Deployment, its Service and the HTTPRoute forwarding to it, as `kubectl apply` leaves them."""
    kube.create_deployment(NS, NAME, "app:v1", replicas=replicas, annotations={"guardian.io/policy": NAME}, extra={
        "spec": {"selector": {"matchLabels": STABLE},
                 "template": {"metadata": {"labels": STABLE, "annotations": {"prometheus.io/scrape": "true"}}}}})
    kube.create_service(NS, NAME, STABLE if service_selector is None else service_selector, type="LoadBalancer",
                        ports=[{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080}])
    if route:
        kube.create_httproute(NS, NAME, [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                                          "backendRefs": [{"name": NAME, "port": 80}]}])


def actuator(kube: KubeStub, target: str = TARGET, **conn: Any) -> GatewayCanaryActuator:
    """Through the registry, as the guardian builds it; the deployment controller moves one replica at each
    wait (the injected sleep), so PROMOTE's wait for the stable's rolling update takes no real time."""
    a = registry.create(target, ActuatorDeps(kube_connection=KubeConnection(host=kube.url, timeout=5, **conn)))
    assert isinstance(a, GatewayCanaryActuator)
    a._sleep = lambda _: kube.progress(NS, NAME)
    return a


def request(action: Action, key: str, weight: int = 0) -> ActionRequest:
    return ActionRequest("r1", NAME, "app:v2", action, weight, key, strategy="canary")


def weights(kube: KubeStub) -> dict[str, int]:
    return kube.route_weights(NS, NAME)


def canary_objects(kube: KubeStub) -> list[str]:
    return sorted([f"Deployment {n}" for (ns, n) in kube.deployments if ns == NS and n.endswith("-canary")]
                  + [f"Service {n}" for (ns, n) in kube.services if ns == NS and n.endswith("-canary")])


def image(kube: KubeStub, name: str) -> str:
    return kube.deployments[(NS, name)]["spec"]["template"]["spec"]["containers"][0]["image"]


def calls(kube: KubeStub, method: str, path_end: str, status: int | None = None) -> list[int]:
    """Indexes in kube.calls of the requests `method ...path_end` (with `status`)."""
    return [i for i, c in enumerate(kube.calls) if c["method"] == method and c["path"].endswith(path_end)
            and (status is None or c["status"] == status)]


# -- a whole canary --------------------------------------------------------------------------------------------
def test_a_canary_moves_the_route_weights_step_by_step_and_promote_rolls_the_stable_first(kube):
    cluster(kube)
    stable_rv = kube.deployments[(NS, NAME)]["metadata"]["resourceVersion"]
    a = actuator(kube)
    start = a.apply(request(Action.START, "r1:1:start", 10))
    assert start.ok, start.detail
    assert weights(kube) == {NAME: 90, f"{NAME}-canary": 10}
    canary = kube.deployments[(NS, f"{NAME}-canary")]
    assert image(kube, f"{NAME}-canary") == "app:v2" and canary["spec"]["replicas"] == 1  # ceil(4 x 10%)
    assert canary["spec"]["selector"]["matchLabels"] == {"app": NAME, "track": "canary"}
    assert canary["spec"]["template"]["metadata"]["labels"] == {"app": NAME, "track": "canary"}
    assert canary["spec"]["template"]["metadata"]["annotations"] == {"prometheus.io/scrape": "true"}
    assert "guardian.io/policy" not in canary["metadata"]["annotations"]  # the watcher must not guard it
    svc = kube.services[(NS, f"{NAME}-canary")]
    assert svc["spec"]["selector"] == {"app": NAME, "track": "canary"} and svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["clusterIP"] != kube.services[(NS, NAME)]["spec"]["clusterIP"]
    assert "nodePort" not in svc["spec"]["ports"][0]
    assert kube.deployments[(NS, NAME)]["metadata"]["resourceVersion"] == stable_rv  # the stable untouched
    assert a.verify(request(Action.START, "r1:1:start", 10)).ok
    # the backendRef went in at weight 0, then the weight was set (two route writes)
    assert [s["rules"][0]["backendRefs"][1]["weight"] for _, s in kube.route_history[1:]] == [0, 10]
    arms = a.arm_values(_state())
    assert None not in arms.values() and arms["pod_template_hash"] != arms["previous_pod_template_hash"]
    assert arms["pod_template_hash"] == a.detect(NS, f"{NAME}-canary").hash

    for i, (step, replicas) in enumerate([(25, 1), (50, 2), (100, 4)], start=2):
        out = a.apply(request(Action.ADVANCE, f"r1:{i}:advance", step))
        assert out.ok, out.detail
        assert weights(kube) == {NAME: 100 - step, f"{NAME}-canary": step}
        assert kube.deployments[(NS, f"{NAME}-canary")]["spec"]["replicas"] == replicas
        assert a.verify(request(Action.ADVANCE, f"r1:{i}:advance", step)).ok
    # capacity first: the canary was scaled (and available) before each weight that needed it
    scaled, moved = calls(kube, "PATCH", f"deployments/{NAME}-canary"), calls(kube, "PATCH", ROUTE_PATH)
    assert len(scaled) == 2 and all(any(s < m for m in moved[-2:]) for s in scaled)
    assert a.apply(request(Action.PAUSE, "r1:5:pause", 100)).ok and weights(kube)[f"{NAME}-canary"] == 100

    promote = a.apply(request(Action.PROMOTE, "r1:6:promote", 100))
    assert promote.ok, promote.detail
    assert image(kube, NAME) == "app:v2"
    assert a.detect(NS, NAME).updated == 4 and a.detect(NS, NAME).total == 4  # the rolling update completed
    assert weights(kube) == {NAME: 100}
    assert canary_objects(kube) == []
    assert a.verify(request(Action.PROMOTE, "r1:6:promote", 100)).ok
    # the order: the stable's new image, its update complete, then the weight back, then the canary removed
    set_image = calls(kube, "PATCH", f"deployments/{NAME}")[-1]
    route_writes = [i for i in calls(kube, "PATCH", ROUTE_PATH) if i > set_image]
    assert kube.calls[set_image]["content_type"].startswith("application/strategic-merge-patch+json")
    delete_svc, delete_dep = calls(kube, "DELETE", f"services/{NAME}-canary"), calls(kube, "DELETE",
                                                                                     f"deployments/{NAME}-canary")
    assert set_image < route_writes[0] < route_writes[1] < delete_svc[0] < delete_dep[0]
    complete_reads = [i for i in calls(kube, "GET", f"deployments/{NAME}") if set_image < i < route_writes[0]]
    assert json.loads(json.dumps(kube.calls[complete_reads[-1]]["response"]["status"]))["updatedReplicas"] == 4
    assert [s["rules"][0]["backendRefs"] for _, s in kube.route_history[-2:]] == [
        [_ref(NAME, 100), _ref(f"{NAME}-canary", 0)], [_ref(NAME, 100)]]


def _ref(name: str, weight: int) -> dict[str, Any]:
    return {"group": "", "kind": "Service", "name": name, "port": 80, "weight": weight}


def _state() -> RolloutState:
    return RolloutState(id="r1", service=NAME, image="app:v2", strategy=Strategy.CANARY, steps=(10, 100),
                        target=TARGET, step_seconds=30, analysis_seconds=60, created_at=0.0, step_started_at=0.0,
                        updated_at=0.0)


def test_bake_puts_all_traffic_on_the_canary_with_the_stable_warm_and_a_rollback_is_one_route_write(kube):
    cluster(kube)
    a = actuator(kube)
    assert a.apply(request(Action.START, "r1:1:start", 50)).ok
    bake = a.apply(request(Action.BAKE, "r1:2:bake", 100))
    assert bake.ok, bake.detail
    assert weights(kube) == {NAME: 0, f"{NAME}-canary": 100}
    assert kube.deployments[(NS, f"{NAME}-canary")]["spec"]["replicas"] == 4  # the stable's capacity
    assert bake.data["warm"] == {"deployment": NAME, "replicas": 4, "image": "app:v1", "weight": 0}
    assert a.verify(request(Action.BAKE, "r1:2:bake", 100)).ok
    writes = len(calls(kube, "PATCH", ROUTE_PATH))
    undo = a.apply(request(Action.ROLLBACK, "r1:3:rollback"))
    assert undo.ok, undo.detail
    assert weights(kube) == {NAME: 100} and image(kube, NAME) == "app:v1"
    assert len(calls(kube, "PATCH", ROUTE_PATH)) == writes + 2  # weight 0, then the backendRef removed


def test_rollback_sets_the_canary_weight_to_0_first_then_deletes_it_and_converges(kube):
    cluster(kube)
    a = actuator(kube)
    assert a.apply(request(Action.START, "r1:1:start", 25)).ok
    assert a.apply(request(Action.ADVANCE, "r1:2:advance", 50)).ok
    svc_uid = kube.services[(NS, f"{NAME}-canary")]["metadata"]["uid"]
    dep_uid = kube.deployments[(NS, f"{NAME}-canary")]["metadata"]["uid"]
    before = len(kube.route_history)
    undo = a.apply(request(Action.ROLLBACK, "r1:3:rollback"))
    assert undo.ok, undo.detail
    assert [s["rules"][0]["backendRefs"] for _, s in kube.route_history[before:]] == [
        [_ref(NAME, 100), _ref(f"{NAME}-canary", 0)], [_ref(NAME, 100)]]
    first_delete = min(calls(kube, "DELETE", f"{NAME}-canary"))
    assert max(calls(kube, "PATCH", ROUTE_PATH)) < first_delete  # no traffic left when it is deleted
    assert [kube.calls[i]["body"] for i in calls(kube, "DELETE", f"{NAME}-canary")] == [
        {"preconditions": {"uid": uid}} for uid in (svc_uid, dep_uid)]  # only the very objects it made
    assert canary_objects(kube) == [] and image(kube, NAME) == "app:v1"
    for word in ("canary weight 0% (stable checkout 100%)", "backendRef checkout-canary removed",
                 "Service shop/checkout-canary deleted", "Deployment shop/checkout-canary deleted"):
        assert word in undo.detail, undo.detail
    assert a.verify(request(Action.ROLLBACK, "r1:3:rollback")).ok
    assert a.apply(request(Action.ROLLBACK, "r1:3:rollback")) is undo  # the same key: nothing again
    n = len(kube.calls)
    again = GatewayCanaryActuator(TARGET[len("kubernetes:"):], connection=KubeConnection(host=kube.url)).apply(
        request(Action.ROLLBACK, "r1:4:rollback"))  # a restarted guardian, a new key: converges, changes nothing
    assert again.ok and "already gone" in again.detail, again.detail
    assert not [c for c in kube.calls[n:] if c["method"] in ("PATCH", "DELETE", "POST")]


def test_a_retried_start_reuses_what_the_guardian_made_and_refuses_what_it_did_not(kube):
    cluster(kube)
    a = actuator(kube)
    assert a.apply(request(Action.START, "r1:1:start", 10)).ok
    assert a.apply(request(Action.START, "r1:1:start", 10)).ok
    assert len(calls(kube, "POST", "deployments")) == 1  # the same key: nothing again
    fresh = actuator(kube)  # a restart: the START carried out again under a new key converges
    out = fresh.apply(request(Action.START, "r1:2:start", 10))
    assert out.ok, out.detail
    assert weights(kube) == {NAME: 90, f"{NAME}-canary": 10}
    assert len(kube.deployments) == 2 and len(kube.services) == 2
    assert a.apply(request(Action.ROLLBACK, "r1:3:rollback")).ok

    kube.create_deployment(NS, f"{NAME}-canary", "someone:else")  # someone else's Deployment of that name
    out = a.apply(request(Action.START, "r1:4:start", 10))
    assert not out.ok
    assert "Deployment shop/checkout-canary exists and was not made by the guardian" in out.detail, out.detail
    assert "this START created nothing" in out.detail and weights(kube) == {NAME: 100}
    assert (NS, f"{NAME}-canary") not in kube.services
    undo = a.apply(request(Action.ROLLBACK, "r1:5:rollback"))
    assert undo.ok and "left alone (not made by the guardian" in undo.detail, undo.detail
    assert image(kube, f"{NAME}-canary") == "someone:else"


def test_promote_waits_for_the_stable_rolling_update_and_fails_saying_so_with_the_canary_kept(kube):
    cluster(kube)
    a = actuator(kube, settle_timeout=0.05, settle_poll=0.01)
    assert a.apply(request(Action.START, "r1:1:start", 50)).ok
    a._sleep = lambda _: None  # the deployment controller moves no replica meanwhile
    out = a.apply(request(Action.PROMOTE, "r1:2:promote", 100))
    assert not out.ok
    assert ("the stable Deployment shop/checkout is still rolling to app:v2 after 0.05s (0/4 updated, 4 available): "
            "the canary keeps its share until it is complete; PROMOTE again") in out.detail, out.detail
    assert weights(kube) == {NAME: 50, f"{NAME}-canary": 50} and len(canary_objects(kube)) == 2
    kube.progress(NS, NAME, steps=4)  # the controller completes it
    again = a.apply(request(Action.PROMOTE, "r1:3:promote", 100))
    assert again.ok, again.detail
    assert weights(kube) == {NAME: 100} and canary_objects(kube) == [] and image(kube, NAME) == "app:v2"
    assert len([c for c in calls(kube, "PATCH", f"deployments/{NAME}")]) == 1  # the image set once


def timed_out_promote(kube: KubeStub, moved: int = 0) -> GatewayCanaryActuator:
    """START at 50%, then a PROMOTE whose stable rolling update moves `moved` replicas to app:v2 and no more:
    it fails after `settle_timeout`, the stable left on app:v2 (what a ROLLBACK must undo). Time passes only
    as the actuator reads its clock (0.01 s a read), so no wait depends on the machine's speed."""
    cluster(kube)
    a = actuator(kube, settle_timeout=0.05, settle_poll=0.01)
    a._monotonic = itertools.count(0, 0.01).__next__
    assert a.apply(request(Action.START, "r1:1:start", 50)).ok
    a._sleep = stalls_after(kube, moved)
    out = a.apply(request(Action.PROMOTE, "r1:2:promote", 100))
    assert not out.ok and f"still rolling to app:v2 after 0.05s ({moved}/4 updated" in out.detail, out.detail
    assert image(kube, NAME) == "app:v2" and weights(kube) == {NAME: 50, f"{NAME}-canary": 50}
    return a


def stalls_after(kube: KubeStub, moves: int) -> Callable[[float], None]:
    """An injected sleep during which the deployment controller moves the stable's rolling update one replica,
    `moves` times in all, then none."""
    left = [moves]

    def sleep(_: float) -> None:
        if left[0] > 0:
            left[0] -= 1
            kube.progress(NS, NAME)
    return sleep


def test_a_rollback_after_a_promote_that_timed_out_undoes_the_stable_before_the_weight_returns_to_it(kube):
    a = timed_out_promote(kube, moved=2)
    rollback = request(Action.ROLLBACK, "r1:3:rollback")
    still = a.verify(rollback)  # the canary there, and the stable on the rejected image
    assert not still.ok and "the stable Deployment still runs app:v2: it is not rolled back" in still.detail
    a._sleep = lambda _: kube.progress(NS, NAME)
    n = len(kube.calls)
    undo = a.apply(rollback)
    assert undo.ok, undo.detail
    assert ("the stable Deployment shop/checkout ran app:v2 (a PROMOTE had begun rolling it): rolled back to "
            "revision 1") in undo.detail and "(4 replicas available)" in undo.detail, undo.detail
    assert image(kube, NAME) == "app:v1" and weights(kube) == {NAME: 100} and canary_objects(kube) == []
    info = a.detect(NS, NAME)
    assert info.image == "app:v1" and info.updated == 4 and info.total == 4  # the undo's rolling update completed
    assert a.verify(rollback).ok
    # the order: `kubectl rollout undo`'s patch, its rolling update complete, then the weight back, then the canary
    undo_patch = [i for i in calls(kube, "PATCH", f"deployments/{NAME}") if i > n]
    route_writes = [i for i in calls(kube, "PATCH", ROUTE_PATH) if i > n]
    assert len(undo_patch) == 1 and kube.calls[undo_patch[0]]["content_type"].startswith("application/json-patch+json")
    assert undo_patch[0] < route_writes[0] < route_writes[1] < min(calls(kube, "DELETE", f"{NAME}-canary"))
    complete_reads = [i for i in calls(kube, "GET", f"deployments/{NAME}") if undo_patch[0] < i < route_writes[0]]
    assert kube.calls[complete_reads[-1]]["response"]["status"]["updatedReplicas"] == 4
    m = len(kube.calls)
    again = a.apply(request(Action.ROLLBACK, "r1:4:rollback"))  # a new key: converges, changes nothing
    assert again.ok and "already gone" in again.detail and "PROMOTE had begun" not in again.detail, again.detail
    assert not [c for c in kube.calls[m:] if c["method"] in ("PATCH", "DELETE", "POST")]
    assert image(kube, NAME) == "app:v1" and a.verify(request(Action.ROLLBACK, "r1:4:rollback")).ok


def _forbid_the_undo(kube: KubeStub, a: GatewayCanaryActuator) -> None:
    kube.forbid("patch", "deployments", NS)


def _no_previous_revision(kube: KubeStub, a: GatewayCanaryActuator) -> None:
    """The controller completes the update later and, at revisionHistoryLimit 0, deletes app:v1's ReplicaSet."""
    kube.deployments[(NS, NAME)]["spec"]["revisionHistoryLimit"] = 0
    kube.progress(NS, NAME, steps=4)


def _undo_never_completes(kube: KubeStub, a: GatewayCanaryActuator) -> None:
    """The undo is written, but the controller moves none of the 2 replicas on app:v2 back within the wait."""
    a._sleep = lambda _: None


@pytest.mark.parametrize("cannot, words, stable_image", [
    (_forbid_the_undo, "runs app:v2 (a PROMOTE had begun rolling it) and its undo failed: forbidden: the guardian "
                       "may not patch deployments.apps in namespace shop", "app:v2"),
    (_no_previous_revision, "runs app:v2 (a PROMOTE had begun rolling it) and cannot be undone (no previous "
                            "revision: nothing to roll back)", "app:v2"),
    (_undo_never_completes, "but it is still rolling back to app:v1 after 0.05s (2/4 updated, 4 available)",
     "app:v1"),
], ids=["undo-forbidden", "no-previous-revision", "undo-not-complete-in-time"])
def test_a_rollback_that_cannot_undo_the_stable_fails_and_leaves_the_weights(kube, cannot, words, stable_image):
    a = timed_out_promote(kube, moved=2)
    cannot(kube, a)
    out = a.apply(request(Action.ROLLBACK, "r1:3:rollback"))
    assert not out.ok and words in out.detail, out.detail
    assert "the weights and the canary stay as they are" in out.detail
    assert weights(kube) == {NAME: 50, f"{NAME}-canary": 50} and len(canary_objects(kube)) == 2
    assert image(kube, NAME) == stable_image
    assert not a.verify(request(Action.ROLLBACK, "r1:3:rollback")).ok


def _stable_already_on_v2(kube: KubeStub) -> None:
    """The stable Deployment rolled to app:v2 by hand before the rollout and complete (revision 2; app:v1's
    ReplicaSet kept at 0 replicas: a previous revision an undo could go back to)."""
    cluster(kube)
    kube.set_image(NS, NAME, "app:v2")
    kube.progress(NS, NAME, steps=4)
    assert image(kube, NAME) == "app:v2" and kube.settled(NS, NAME)


@pytest.mark.parametrize("restarted", [False, True], ids=["same-guardian", "restarted-guardian"])
def test_a_rollback_of_a_rollout_of_the_image_the_stable_already_ran_at_start_leaves_the_stable_alone(kube, restarted):
    """Before the record, the same guardian refused the ROLLBACK (its undo target, the stable's revision at START,
    is the current one: "cannot be undone", the canary kept its share) and a restarted one rolled the stable
    back to app:v1, an older revision than it ran before the rollout."""
    _stable_already_on_v2(kube)
    a = actuator(kube)
    assert a.apply(request(Action.START, "r1:1:start", 50)).ok  # a re-rollout of app:v2 as a canary
    canary = kube.deployments[(NS, f"{NAME}-canary")]["metadata"]["annotations"]
    assert canary["guardian.io/stable-image"] == "app:v2"  # the stable's image, recorded at START
    if restarted:  # no arms in memory: the undo's target would be the newest revision not on app:v2
        a = actuator(kube)
    rollback = request(Action.ROLLBACK, "r1:2:rollback")
    before = a.verify(rollback)  # fails for the canary only, not for the stable
    assert not before.ok and "the canary is not gone" in before.detail and "still runs" not in before.detail
    n = len(kube.calls)
    out = a.apply(rollback)
    assert out.ok, out.detail
    assert ("the stable Deployment shop/checkout runs app:v2 as it did at START (guardian.io/stable-image on the "
            "canary Deployment: app:v2): not undone") in out.detail, out.detail
    assert image(kube, NAME) == "app:v2" and a.detect(NS, NAME).revision == 2  # no older revision rolled to
    assert not [i for i in calls(kube, "PATCH", f"deployments/{NAME}") if i >= n]  # the stable not written
    assert weights(kube) == {NAME: 100} and canary_objects(kube) == [] and a.verify(rollback).ok


def test_a_rollback_without_the_record_of_the_stables_image_does_not_undo_it_and_says_so(kube):
    """A re-rollout of app:v2 whose START failed and deleted the canary Deployment (and with it the record):
    the stable runs the rollout's image, but nothing says it did not before, so it is not undone."""
    _stable_already_on_v2(kube)
    kube.forbid("create", "services", NS)
    a = actuator(kube)
    start = a.apply(request(Action.START, "r1:1:start", 50))
    assert not start.ok and "Deployment shop/checkout-canary deleted" in start.detail, start.detail
    kube.forbidden.clear()
    rollback = request(Action.ROLLBACK, "r1:2:rollback")
    assert a.verify(rollback).ok  # verify agrees: no record, no judgement of the stable
    out = a.apply(rollback)
    assert out.ok, out.detail
    assert ("the stable Deployment shop/checkout runs app:v2 and no record of its image at START is left (no "
            "canary Deployment the guardian made with guardian.io/stable-image): not undone") in out.detail, out.detail
    assert image(kube, NAME) == "app:v2" and a.detect(NS, NAME).revision == 2
    assert weights(kube) == {NAME: 1} and canary_objects(kube) == []  # the route as it was (weight defaulted)


def test_a_start_that_reuses_a_canary_left_by_another_rollout_records_the_stables_image_anew(kube):
    cluster(kube)
    a = actuator(kube)
    assert a.apply(request(Action.START, "r1:1:start", 50)).ok  # r1's canary, recorded on app:v1, left there
    kube.set_image(NS, NAME, "app:v2")  # then the stable rolled to app:v2 by hand
    kube.progress(NS, NAME, steps=4)
    r2 = ActionRequest("r2", NAME, "app:v2", Action.START, 50, "r2:1:start", strategy="canary")
    assert a.apply(r2).ok
    annotations = kube.deployments[(NS, f"{NAME}-canary")]["metadata"]["annotations"]
    assert (annotations["guardian.io/rollout"], annotations["guardian.io/stable-image"]) == ("r2", "app:v2")
    again = a.apply(ActionRequest("r2", NAME, "app:v2", Action.START, 50, "r2:2:start", strategy="canary"))
    assert again.ok  # the same rollout's START again: its first record stands (no write of it)
    out = a.apply(ActionRequest("r2", NAME, "app:v2", Action.ROLLBACK, 0, "r2:3:rollback", strategy="canary"))
    assert out.ok and "as it did at START" in out.detail, out.detail
    assert image(kube, NAME) == "app:v2" and canary_objects(kube) == []


def test_a_retried_rollback_after_an_undo_that_timed_out_waits_for_the_stable_before_moving_weight(kube):
    a = timed_out_promote(kube, moved=2)
    a._sleep = lambda _: None  # the undo is written, the controller moves no replica back within the wait
    first = a.apply(request(Action.ROLLBACK, "r1:3:rollback"))
    assert not first.ok and "still rolling back to app:v1" in first.detail, first.detail
    assert image(kube, NAME) == "app:v1"  # the stable's spec is back on app:v1, its pods still switching
    n = len(kube.calls)
    retried = a.apply(request(Action.ROLLBACK, "r1:4:rollback"))  # the guard's retry, a new key
    assert not retried.ok
    assert ("the stable Deployment shop/checkout is still rolling to app:v1 after 0.05s (2/4 updated, 4 "
            "available): the weights and the canary stay as they are until it is complete; ROLLBACK "
            "again") in retried.detail, retried.detail
    assert weights(kube) == {NAME: 50, f"{NAME}-canary": 50} and len(canary_objects(kube)) == 2
    assert not [c for c in kube.calls[n:] if c["method"] in ("PATCH", "DELETE", "POST")]  # nothing written
    assert not a.verify(request(Action.ROLLBACK, "r1:4:rollback")).ok
    a._sleep = lambda _: kube.progress(NS, NAME)  # the controller moves on
    m = len(kube.calls)
    done = a.apply(request(Action.ROLLBACK, "r1:5:rollback"))
    assert done.ok, done.detail
    assert "PROMOTE had begun" not in done.detail, done.detail  # no second undo
    assert ("the stable Deployment shop/checkout completed its rolling update to app:v1 (4 replicas available) "
            "before the weight moved") in done.detail, done.detail
    assert image(kube, NAME) == "app:v1" and weights(kube) == {NAME: 100} and canary_objects(kube) == []
    route_writes = [i for i in calls(kube, "PATCH", ROUTE_PATH) if i >= m]
    complete_reads = [i for i in calls(kube, "GET", f"deployments/{NAME}") if m <= i < route_writes[0]]
    assert kube.calls[complete_reads[-1]]["response"]["status"]["updatedReplicas"] == 4  # complete before weight
    assert not [i for i in calls(kube, "PATCH", f"deployments/{NAME}") if i >= m]  # no second undo
    assert a.verify(request(Action.ROLLBACK, "r1:5:rollback")).ok


def test_a_rollback_is_not_held_back_by_a_stable_pod_that_is_down_but_is_by_a_stable_with_none_up(kube):
    cluster(kube)
    a = actuator(kube)
    assert a.apply(request(Action.START, "r1:0:start")).ok
    assert a.apply(request(Action.ADVANCE, "r1:1:advance", 50)).ok
    kube.down[(NS, NAME)] = 4  # every stable pod down: the weight must not go where nothing answers
    kube.progress(NS, NAME)
    a._sleep = lambda _: None
    held = a.apply(request(Action.ROLLBACK, "r1:2:rollback"))
    assert not held.ok and "0 available" in held.detail, held.detail
    assert weights(kube) == {NAME: 50, f"{NAME}-canary": 50}
    kube.down[(NS, NAME)] = 1  # one stable pod down (a failed node): not a reason to keep the rejected canary
    kube.progress(NS, NAME)
    done = a.apply(request(Action.ROLLBACK, "r1:3:rollback"))
    assert done.ok, done.detail
    assert weights(kube) == {NAME: 100} and canary_objects(kube) == [] and image(kube, NAME) == "app:v1"


def test_a_rollback_is_not_held_back_by_a_stable_paused_mid_change_by_someone_else(kube):
    cluster(kube)
    a = actuator(kube)
    assert a.apply(request(Action.START, "r1:0:start")).ok
    assert a.apply(request(Action.ADVANCE, "r1:1:advance", 50)).ok
    r = httpx.patch(f"{kube.url}/apis/apps/v1/namespaces/{NS}/deployments/{NAME}",  # kubectl rollout pause, an edit
                    headers={"Content-Type": "application/merge-patch+json"},
                    json={"spec": {"paused": True, "template": {"metadata": {"annotations": {"ops/restart": "1"}}}}})
    assert r.status_code == 200, r.text
    dep = kube.deployments[(NS, NAME)]  # as the controller reports it: no new ReplicaSet, the old pods all serving
    dep["status"] = {"observedGeneration": dep["metadata"]["generation"], "replicas": 4, "updatedReplicas": 0,
                     "readyReplicas": 4, "availableReplicas": 4}
    a._sleep = lambda _: None
    done = a.apply(request(Action.ROLLBACK, "r1:2:rollback"))
    assert done.ok, done.detail  # the rollout never touched the stable: the weight goes back at once
    assert weights(kube) == {NAME: 100} and canary_objects(kube) == [] and image(kube, NAME) == "app:v1"


def test_a_canary_whose_pods_never_become_available_gets_no_weight_and_start_says_what_is_left():
    kube = KubeStub(controller_delay=30).start()  # the controller never gets to the canary within the wait
    try:
        kube.controller_delay = 0
        cluster(kube)
        kube.controller_delay = 30
        a = actuator(kube, settle_timeout=0.05, settle_poll=0.01)
        out = a.apply(request(Action.START, "r1:1:start", 10))
        assert not out.ok
        assert ("the canary Deployment shop/checkout-canary has not 1 pods available after 0.05s (0/1 updated, 0 "
                "available): the weights stay at 0% until it has; the canary's Deployment, Service and backendRef "
                "(weight 0) exist: the rollback removes them") in out.detail, out.detail
        assert weights(kube) == {NAME: 1, f"{NAME}-canary": 0}  # the stable's weight as it was: all its traffic
        undo = a.apply(request(Action.ROLLBACK, "r1:2:rollback"))  # what the guard does after a failed START
        assert undo.ok and canary_objects(kube) == [] and weights(kube) == {NAME: 100}, undo.detail
    finally:
        kube.stop()


# -- faults: 409, 403, 404, refusals ----------------------------------------------------------------------------
def test_a_conflict_on_the_route_is_retried_with_a_fresh_read_and_bounded(kube):
    cluster(kube)
    a = actuator(kube)
    assert a.apply(request(Action.START, "r1:1:start", 10)).ok
    kube.route_conflicts = 2  # two writers in between
    assert a.apply(request(Action.ADVANCE, "r1:2:advance", 50)).ok
    assert len(calls(kube, "PATCH", ROUTE_PATH, 409)) == 2 and weights(kube)[f"{NAME}-canary"] == 50
    kube.route_conflicts = 100
    out = a.apply(request(Action.ADVANCE, "r1:3:advance", 100))
    assert not out.ok and out.data["status"] == 409
    assert "HTTPRoute shop/checkout kept changing: 6 writes refused with 409 Conflict" in out.detail, out.detail
    assert weights(kube)[f"{NAME}-canary"] == 50
    assert not a.verify(request(Action.ADVANCE, "r1:3:advance", 100)).ok


def test_forbidden_names_the_missing_permission_and_a_failed_start_cleans_up_what_it_made(kube):
    cluster(kube)
    kube.forbid("patch", "httproutes", NS)
    out = actuator(kube).apply(request(Action.START, "r1:1:start", 10))
    assert not out.ok and out.data["status"] == 403
    assert ("forbidden: the guardian may not patch httproutes.gateway.networking.k8s.io in namespace shop (missing "
            "RBAC permission: verb 'patch' on resource 'httproutes.gateway.networking.k8s.io' in namespace 'shop'; "
            "see deploy/kubernetes/rbac-gateway.yaml)") in out.detail, out.detail
    assert ("cleaned up what this START created: Service shop/checkout-canary deleted, Deployment "
            "shop/checkout-canary deleted") in out.detail
    assert canary_objects(kube) == [] and weights(kube) == {NAME: 1}  # the route as it was (weight defaulted)

    kube.forbidden.clear()
    kube.forbid("create", "services", NS)
    out = actuator(kube).apply(request(Action.START, "r1:2:start", 10))
    assert not out.ok and "may not create services in namespace shop" in out.detail, out.detail
    assert "Deployment shop/checkout-canary deleted" in out.detail and canary_objects(kube) == []

    kube.forbidden.clear()
    kube.forbid("delete", "deployments", NS)
    kube.forbid("create", "services", NS)
    out = actuator(kube).apply(request(Action.START, "r1:3:start", 10))
    assert "Deployment shop/checkout-canary is LEFT (its deletion failed: forbidden: the guardian may not delete " \
           "deployments.apps in namespace shop" in out.detail, out.detail


def test_a_missing_route_deployment_or_service_is_reported_at_start_with_nothing_created(kube):
    cluster(kube, route=False)
    out = actuator(kube).apply(request(Action.START, "r1:1:start", 10))
    assert not out.ok and out.data["status"] == 404
    assert "HTTPRoute shop/checkout not found" in out.detail, out.detail
    assert canary_objects(kube) == []
    kube.create_httproute(NS, NAME, [{"backendRefs": [{"name": "gone", "port": 80}]}])
    out = actuator(kube).apply(request(Action.START, "r1:2:start", 10))
    assert not out.ok and "none of the Services HTTPRoute shop/checkout forwards to" in out.detail, out.detail
    assert "gone does not exist" in out.detail and canary_objects(kube) == []
    out = actuator(kube, f"kubernetes:{NS}/nothere?router=gateway:{NS}/{NAME}").apply(
        ActionRequest("r2", "nothere", "app:v2", Action.START, 10, "r2:1:start"))
    assert not out.ok and "Deployment shop/nothere not found" in out.detail, out.detail
    out = actuator(kube, f"{TARGET}&service=other").apply(request(Action.START, "r1:3:start", 10))
    assert not out.ok and "HTTPRoute shop/checkout has no backendRef to Service shop/other" in out.detail


def test_start_is_refused_when_the_stable_service_would_select_the_canarys_pods(kube):
    cluster(kube, service_selector={"app": NAME})  # no track in the selector
    out = actuator(kube).apply(request(Action.START, "r1:1:start", 10))
    assert not out.ok and "refusing to start, nothing created" in out.detail, out.detail
    assert "without `track: stable` in its selector it would send the stable share of the traffic to the " \
           "canary's pods too" in out.detail
    assert canary_objects(kube) == [] and len(kube.route_history) == 1
    out = actuator(kube).apply(ActionRequest("r1", NAME, "app:v2", Action.START, 10, "r1:2:start",
                                             strategy="observe"))
    assert not out.ok and "strategy 'observe' has none" in out.detail


def test_a_shared_rule_is_refused_and_every_rule_of_the_stable_service_is_split(kube):
    cluster(kube, route=False)
    kube.create_service(NS, "legacy", {"app": "legacy"})
    kube.create_httproute(NS, NAME, [{"backendRefs": [{"name": NAME, "port": 80}, {"name": "legacy", "port": 80}]}])
    out = actuator(kube).apply(request(Action.START, "r1:1:start", 10))
    assert not out.ok and "rule 0 forwards to Service 'legacy' too (weight 1)" in out.detail, out.detail
    kube.httproutes.clear()
    kube.create_httproute(NS, NAME, [
        {"matches": [{"path": {"type": "PathPrefix", "value": "/api"}}], "backendRefs": [{"name": NAME, "port": 80}]},
        {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
         "backendRefs": [{"name": NAME, "port": 80}, {"name": "legacy", "port": 80, "weight": 0}]}])
    a = actuator(kube)
    assert a.apply(request(Action.START, "r1:2:start", 20)).ok
    rules = kube.httproutes[(NS, NAME)]["spec"]["rules"]
    assert [[(r["name"], r["weight"]) for r in rule["backendRefs"]] for rule in rules] == [
        [(NAME, 80), (f"{NAME}-canary", 20)], [(NAME, 80), (f"{NAME}-canary", 20), ("legacy", 0)]]
    assert rules[0]["matches"] == [{"path": {"type": "PathPrefix", "value": "/api"}}]  # the rest as it was


@pytest.mark.parametrize("target, wrong", [
    ("kubernetes:shop/checkout?router=istio:shop/checkout", "router 'istio:shop/checkout' is not known"),
    ("kubernetes:shop/checkout?router=gateway:", "names no HTTPRoute"),
    ("kubernetes:shop/checkout?router=gateway:Shop/x", "'Shop' is not a valid HTTPRoute namespace"),
    ("kubernetes:shop/checkout?service=checkout", "give router=gateway:... too"),
    ("kubernetes:shop/checkout?router=gateway:shop/r&service=Bad_name", "option 'service': 'Bad_name' is not"),
    ("kubernetes:shop/checkout?router=gateway:shop/r&weights=1", "unknown option 'weights'"),
    ("kubernetes:shop/checkout?router=gateway:a&router=gateway:b", "option 'router' is given twice"),
])
def test_a_bad_target_is_refused_with_what_is_wrong(target, wrong):
    problem = registry.validate_target(target)
    assert problem is not None and wrong in problem, problem
    with pytest.raises(ActuatorError, match="invalid kubernetes target"):
        registry.create(target)
    assert registry.validate_target("kubernetes:shop/checkout?router=gateway:checkout&service=checkout") is None
    with pytest.raises(ActuatorError, match="kube_gateway.from_target"):
        KubernetesActuator("shop/checkout?router=gateway:checkout")


# -- the stub behaves like the API server where the guardian depends on it -------------------------------------
def test_stub_httproutes_are_pruned_defaulted_and_validated_as_the_crd_does(kube):
    route = kube.create_httproute(NS, "r", [{"backendRefs": [{"name": "a", "port": 80, "colour": "red"}]}])
    assert route["spec"]["rules"][0]["backendRefs"] == [_ref("a", 1)]  # pruned, defaulted
    assert route["spec"]["rules"][0]["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]
    client = KubernetesActuator(f"{NS}/x", connection=KubeConnection(host=kube.url)).client
    from kubernetes import client as k8s
    from kubernetes.client.exceptions import ApiException

    api = k8s.CustomObjectsApi(client)

    def patch(body: Any, content_type: str = "application/merge-patch+json") -> ApiException:
        with pytest.raises(ApiException) as e:
            api.patch_namespaced_custom_object(ROUTE_GROUP, "v1", NS, "httproutes", "r", body,
                                               _content_type=content_type)
        return e.value

    e = patch({"spec": {"rules": [{"backendRefs": [{"name": "a", "port": 80, "weight": 2000000}]}]}})
    assert e.status == 422 and "spec.rules[0].backendRefs[0].weight: Invalid value: 2000000" in e.body
    e = patch({"spec": {"rules": [{"backendRefs": [{"name": f"s{i}", "port": 80} for i in range(17)]}]}})
    assert e.status == 422 and "spec.rules[0].backendRefs: Too many: 17: must have at most 16 items" in e.body
    e = patch({"spec": {"rules": [{"backendRefs": [{"name": "a"}]}]}})
    assert e.status == 422 and "Must have port for Service reference" in e.body
    e = patch({"spec": {"rules": [{"backendRefs": [{"name": "a", "port": 80}]}]}},
              "application/strategic-merge-patch+json")
    assert e.status == 415 and "application/json-patch+json, application/merge-patch+json" in e.body
    e = patch({"metadata": {"resourceVersion": "1"}, "spec": {"rules": []}})
    assert e.status == 409
    ok = api.patch_namespaced_custom_object(ROUTE_GROUP, "v1", NS, "httproutes", "r", [
        {"op": "replace", "path": "/spec/rules/0/backendRefs/0/weight", "value": 7}],
        _content_type="application/json-patch+json")
    assert ok["spec"]["rules"][0]["backendRefs"][0]["weight"] == 7 and ok["metadata"]["generation"] == 2


def test_stub_services_and_created_deployments_are_refused_as_the_api_server_refuses_them(kube):
    from kubernetes import client as k8s
    from kubernetes.client.exceptions import ApiException

    api = KubernetesActuator(f"{NS}/x", connection=KubeConnection(host=kube.url)).client
    core, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
    first = kube.create_service(NS, "a", {"app": "a"}, type="NodePort",
                                ports=[{"name": "http", "port": 80, "nodePort": 30001}])

    def refused(fn: Any, *args: Any, **kw: Any) -> ApiException:
        with pytest.raises(ApiException) as e:
            fn(*args, **kw)
        return e.value

    svc = {"metadata": {"name": "b"}, "spec": {"selector": {"app": "b"}, "ports": [{"port": 80}]}}
    for body, status, words in [
        (first, 409, 'services "a" already exists'),
        ({**svc, "spec": {**svc["spec"], "clusterIP": first["spec"]["clusterIP"]}}, 422, "provided IP is already"),
        ({**svc, "spec": {**svc["spec"], "ports": [{"port": 80, "nodePort": 30001}]}}, 422, "port is already"),
        ({**svc, "spec": {"selector": {"app": "b"}}}, 422, "spec.ports: Required value"),
        ({**svc, "metadata": {"name": "B_b"}}, 422, "a DNS-1035 label"),
    ]:
        e = refused(core.create_namespaced_service, NS, body)
        assert e.status == status and words in json.loads(e.body)["message"], e.body
    e = refused(core.patch_namespaced_service, "a", NS, {"metadata": {"resourceVersion": "1"}, "spec": {}})
    assert e.status == 409
    patched = core.patch_namespaced_service("a", NS, {"spec": {"selector": {"app": "a", "track": "stable"}}})
    assert patched.spec.selector == {"app": "a", "track": "stable"}
    e = refused(core.delete_namespaced_service, "a", NS, body={"preconditions": {"uid": "another"}})
    assert e.status == 409 and "Precondition failed: UID in precondition: another" in e.body
    assert (NS, "a") in kube.services
    dep = {"metadata": {"name": "d"}, "spec": {"selector": {"matchLabels": {"app": "d"}}, "template": {
        "metadata": {"labels": {"app": "other"}}, "spec": {"containers": [{"name": "d", "image": "d:1"}]}}}}
    e = refused(apps.create_namespaced_deployment, NS, dep)
    assert e.status == 422 and "`selector` does not match template `labels`" in e.body
    kube.controller_delay = 30  # a created Deployment is synced by the controller later, as after any write
    dep["spec"]["template"]["metadata"]["labels"] = {"app": "d"}
    apps.create_namespaced_deployment(NS, dep)
    assert "observedGeneration" not in kube.deployments[(NS, "d")]["status"]
    assert refused(apps.create_namespaced_deployment, NS, dep).status == 409


def test_every_route_write_of_a_whole_canary_is_valid_under_the_crds_schema(kube):
    """The guardian's HTTPRoute patches checked against the Gateway API's v1 constraints (not the stub's
    answers): each a merge patch of spec.rules only, with the resourceVersion read, valid as written."""
    cluster(kube)
    a = actuator(kube)
    for i, (action, weight) in enumerate([(Action.START, 10), (Action.ADVANCE, 60), (Action.ROLLBACK, 0)]):
        assert a.apply(request(action, f"r1:{i}", weight)).ok
    writes = [c for c in kube.calls if c["path"] == ROUTE_PATH and c["method"] == "PATCH"]
    assert len(writes) == 5  # the ref at 0, 10%, 60%, 0%, the ref removed
    for c in writes:
        assert c["content_type"] == "application/merge-patch+json"
        assert set(c["body"]) == {"metadata", "spec"} and set(c["body"]["metadata"]) == {"resourceVersion"}
        assert set(c["body"]["spec"]) == {"rules"}
        _, errors = normalize({"spec": c["body"]["spec"]})
        assert errors == []
    bodies = [c["body"] for c in kube.calls if c["method"] == "POST"]
    from kubernetes import client as k8s

    api = k8s.ApiClient()
    for body in bodies:  # the created objects are the official models' fields only
        model = api.deserialize(json.dumps(body), "V1" + body["kind"], "application/json")
        assert api.sanitize_for_serialization(model) == body, body["kind"]


# -- the guard and the API, and a real `guardian serve` ---------------------------------------------------------
RULES = """service: checkout
arms: {label: pod_template_hash, canary: "{pod_template_hash}", baseline: "{previous_pod_template_hash}"}
checks:
  - name: error-rate
    kind: threshold
    ratio: errors / requests
    above: 5%
    window: 20s
    for: 20s
    min_samples: 50
    action: rollback
"""


def test_a_whole_rollout_through_the_api_and_guard_ticks(tmp_path):
    """POST /v1/rollouts with the gateway target, judged tick by tick (a recording as the metric source, a fake
    clock) with arms by pod-template-hash that only the actuator knows: promoted through every step."""
    kube = KubeStub(rolling_every=0.02).start()
    try:
        cluster(kube)
        (tmp_path / "rules").mkdir()
        (tmp_path / "rules" / "checkout.yaml").write_text(RULES)
        clock = FakeClock()
        s = Settings(db_path=str(tmp_path / "g.db"), rules=[str(tmp_path / "rules")], recordings_dir="",
                     kube_host=kube.url)
        c = build(s, source=RecordingSource(steady_recording(60)), clock=clock)
        with TestClient(create_app(c, run_scheduler=False)) as client:
            bad = client.post("/v1/rollouts", json={"service": NAME, "image": "app:v2",
                                                    "target": f"kubernetes:{NS}/{NAME}?router=gateway:"})
            assert bad.status_code == 422 and "names no HTTPRoute" in bad.text, bad.text
            r = client.post("/v1/rollouts", json={"service": NAME, "image": "app:v2", "steps": [25, 50, 100],
                                                  "analysis_seconds": 20, "target": TARGET})
            assert r.status_code == 201, r.text
            rid = r.json()["id"]
            seen = [weights(kube)]
            for _ in range(40):
                clock.advance(10)
                c.guard.tick(rid)
                view = client.get(f"/v1/rollouts/{rid}").json()
                if weights(kube) != seen[-1]:
                    seen.append(weights(kube))
                if view["phase"] in ("promoted", "rolled_back"):
                    break
            assert view["phase"] == "promoted", view["reason"]
        assert seen == [{NAME: 75, f"{NAME}-canary": 25}, {NAME: 50, f"{NAME}-canary": 50},
                        {NAME: 0, f"{NAME}-canary": 100}, {NAME: 100}]
        assert image(kube, NAME) == "app:v2" and canary_objects(kube) == []
        c.store.close()
    finally:
        kube.stop()


def test_start_promote_and_rollback_through_a_real_guardian_serve(tmp_path):
    """`guardian serve` in its own process talking to the stub (GUARDIAN_KUBE_HOST), the stub's controller
    rolling on its own: START through POST /v1/rollouts, then the operator's promote; a second rollout rolled
    back. No metric store runs (the ticks are inconclusive): judged steps are the test above's."""
    from demo.stack import GuardianServer

    kube = KubeStub(rolling_every=0.02).start()
    guardian = None
    try:
        cluster(kube)
        (tmp_path / "g").mkdir()
        guardian = GuardianServer(tmp_path / "g", prometheus_url="http://127.0.0.1:9", rules=[], kube_host=kube.url,
                                  kube_settle_seconds=5, tick_seconds=60).start()

        def started(image: str, first: int) -> str:
            r = guardian.api("POST", "/v1/rollouts", json={"service": NAME, "image": image, "steps": [first, 100],
                                                           "target": TARGET})
            assert r.status_code == 201, r.text + guardian.log_tail()
            assert weights(kube) == {NAME: 100 - first, f"{NAME}-canary": first}
            return r.json()["id"]

        def override(rid: str, action: str) -> str:
            r = guardian.api("POST", f"/v1/rollouts/{rid}/{action}", json={"reason": "the operator"})
            assert r.status_code == 200, r.text + guardian.log_tail()
            return guardian.rollout(rid)["phase"]

        assert override(started("app:v2", 20), "promote") == "promoted"
        assert image(kube, NAME) == "app:v2" and weights(kube) == {NAME: 100} and canary_objects(kube) == []
        assert override(started("app:v3", 50), "rollback") == "rolled_back"
        assert weights(kube) == {NAME: 100} and canary_objects(kube) == [] and image(kube, NAME) == "app:v2"
    finally:
        if guardian is not None:
            guardian.stop()
        kube.stop()


def test_the_rbac_for_the_gateway_router_grants_exactly_what_it_uses(kube):
    """deploy/kubernetes/rbac-gateway.yaml adds to rbac.yaml exactly the calls a weighted canary makes beyond
    those of the plain actuator (recorded by the stub over START, ADVANCE, BAKE, SCALE, PROMOTE, ROLLBACK)."""
    from ruamel.yaml import YAML

    cluster(kube)
    a = actuator(kube)
    for i, (action, weight) in enumerate([(Action.START, 10), (Action.ADVANCE, 50), (Action.BAKE, 100),
                                          (Action.SCALE, 100), (Action.PROMOTE, 100), (Action.START, 10),
                                          (Action.ROLLBACK, 0)]):
        req = ActionRequest("r1", NAME, f"app:v{2 + i // 5}", action, weight, f"r1:{i}", replicas=1)
        assert a.apply(req).ok and a.verify(req).ok
    made = set()
    for method, path, _ in kube.requests:
        parts = path.strip("/").split("/")
        group = "" if parts[0] == "api" else parts[1]
        at = parts.index("namespaces") + 2
        resource = parts[at] + (f"/{parts[at + 2]}" if len(parts) > at + 2 else "")
        verb = {"GET": "get" if len(parts) > at + 1 else "list", "PATCH": "patch", "POST": "create",
                "DELETE": "delete", "PUT": "update"}[method]
        made.add((group, resource, verb))
    deploy = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"

    def granted(name: str) -> set[tuple[str, str, str]]:
        docs = [d for d in YAML(typ="safe").load_all((deploy / name).read_text()) if d and d["kind"] == "ClusterRole"]
        return {(g, r, v) for d in docs for rule in d["rules"] for g in rule["apiGroups"] for r in rule["resources"]
                for v in rule["verbs"]}

    base, gateway = granted("rbac.yaml"), granted("rbac-gateway.yaml")
    assert made - base == gateway, f"unused: {gateway - (made - base)}; missing: {(made - base) - gateway}"
