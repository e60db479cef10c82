"""The kubernetes actuator and watcher through the official client against a STUB of the Kubernetes API
(tests/stubs/kube_stub.py: a real HTTP server on loopback; no API server can run on this machine)."""
from __future__ import annotations

import copy
import threading
import time
from pathlib import Path

import pytest
from loguru import logger

from guardian.actuators import ActionRequest
from guardian.actuators.kubernetes import KubeConnection, KubeError, KubernetesActuator
from guardian.api.components import build
from guardian.clock import FakeClock
from guardian.domain import Action, Phase, RolloutState, Strategy
from guardian.settings import Settings
from guardian.sources.recording import RecordingSource
from guardian.watchers.kubernetes import KubeWatcher
from tests.stubs.kube_stub import REVISION, KubeStub, template_hash
from tests.unit.recordings import steady_recording
from tests.unit.test_api_contract import clean_env  # noqa: F401  (autouse: no GUARDIAN_* from outside)

NS, NAME = "shop", "checkout"
POLICY = {"guardian.io/policy": "checkout"}


def actuator(kube: KubeStub) -> KubernetesActuator:
    return KubernetesActuator(f"{NS}/{NAME}", connection=KubeConnection(host=kube.url, timeout=5))


def request(action: Action, key: str, **kw) -> ActionRequest:
    return ActionRequest("r1", "checkout", "app:v2", action, 100, key, strategy="observe", **kw)


def rolled(kube: KubeStub) -> None:
    kube.create_deployment(NS, NAME, "app:v1", replicas=3, annotations=POLICY)
    kube.set_image(NS, NAME, "app:v2")
    kube.progress(NS, NAME)


def test_a_new_replicaset_is_a_rollout_with_two_arms(kube):
    rolled(kube)
    info = actuator(kube).detect(NS, NAME)
    assert (info.revision, info.image, info.previous_image) == (2, "app:v2", "app:v1")
    assert info.in_progress and info.hash != info.previous_hash
    new = kube.replicasets[(NS, f"{NAME}-{info.hash}")]
    assert new["metadata"]["labels"]["pod-template-hash"] == info.hash


def test_pause_resume_scale_and_rollback_like_kubectl_rollout_undo(kube):
    rolled(kube)
    a = actuator(kube)
    start = a.apply(request(Action.START, "r1:0:start"))
    assert start.ok and "revision 2" in start.detail
    old_hash = a.detect(NS, NAME).previous_hash
    assert a.apply(request(Action.PAUSE, "r1:1:pause")).ok and kube.deployments[(NS, NAME)]["spec"]["paused"]
    kube.progress(NS, NAME)  # paused: the controller moves nothing
    assert a.detect(NS, NAME).updated == 1
    assert a.verify(request(Action.PAUSE, "r1:1:pause")).ok
    assert a.apply(request(Action.RESUME, "r1:2:resume")).ok and not kube.deployments[(NS, NAME)]["spec"]["paused"]
    assert a.apply(request(Action.SCALE, "r1:3:scale", replicas=1)).ok
    assert kube.deployments[(NS, NAME)]["spec"]["replicas"] == 4
    assert a.apply(request(Action.SCALE, "r1:3:scale", replicas=1)).ok  # same key: not scaled twice
    assert kube.deployments[(NS, NAME)]["spec"]["replicas"] == 4
    assert ("PATCH", f"/apis/apps/v1/namespaces/{NS}/deployments/{NAME}/scale", 200) in kube.requests
    a.apply(request(Action.PAUSE, "r1:4:pause"))
    undo = a.apply(request(Action.ROLLBACK, "r1:5:rollback"))
    assert undo.ok and "rolled back to revision 1" in undo.detail, undo.detail
    dep = kube.deployments[(NS, NAME)]
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "app:v1"
    assert "pod-template-hash" not in dep["spec"]["template"]["metadata"]["labels"]
    assert not dep["spec"].get("paused")  # kubectl would refuse a paused Deployment: it is resumed
    assert dep["metadata"]["annotations"][REVISION] == "3"  # the old ReplicaSet reused at the next revision
    assert a.detect(NS, NAME).hash == old_hash
    again = a.apply(request(Action.ROLLBACK, "r1:6:rollback"))  # a new key: nothing changes, still ok
    assert again.ok and "no longer runs app:v2 (app:v1): nothing to roll back" in again.detail, again.detail
    assert a.verify(request(Action.ROLLBACK, "r1:6:rollback")).ok


def test_conflicts_are_retried_with_a_fresh_read_and_bounded(kube):
    rolled(kube)
    a = actuator(kube)
    kube.conflicts = 2  # two concurrent writers in a row
    assert a.apply(request(Action.PAUSE, "r1:1:pause")).ok
    assert sum(1 for m, p, s in kube.requests if s == 409) == 2
    assert kube.deployments[(NS, NAME)]["spec"]["paused"]
    kube.conflicts = 100
    out = a.apply(request(Action.ROLLBACK, "r1:2:rollback"))
    assert not out.ok and "409 Conflict" in out.detail and "kept changing" in out.detail
    assert sum(1 for m, p, s in kube.requests if s == 409) == 2 + 6  # 1 + conflict_retries (5)


def test_forbidden_names_the_missing_permission(kube):
    rolled(kube)
    kube.forbid("patch", "deployments/scale", NS)
    out = actuator(kube).apply(request(Action.SCALE, "r1:1:scale", replicas=1))
    assert not out.ok and out.data["status"] == 403
    assert "verb 'patch' on resource 'deployments/scale.apps' in namespace 'shop'" in out.detail, out.detail
    kube.forbid("list", "replicasets", NS)
    out = actuator(kube).apply(request(Action.START, "r1:2:start"))
    assert not out.ok and "verb 'list' on resource 'replicasets.apps'" in out.detail


def guard_and_watcher(kube: KubeStub, tmp_path: Path, namespace: str | None = None):
    s = Settings(db_path=str(tmp_path / "g.db"), rules=[str(Path(__file__).resolve().parents[2] / "rules")],
                 recordings_dir="", kube_host=kube.url)
    c = build(s, source=RecordingSource(steady_recording(30)), clock=FakeClock())
    return c, KubeWatcher(c.guard, s, connection=KubeConnection(host=kube.url, timeout=5), clock=c.clock,
                          namespace=namespace)


def test_the_watcher_guards_a_rollout_and_a_deletion_ends_it_cleanly(kube, tmp_path):
    kube.create_deployment(NS, NAME, "app:v1", replicas=3, annotations=POLICY)
    kube.create_deployment(NS, "other", "x:v1")  # not annotated: never guarded
    c, w = guard_and_watcher(kube, tmp_path)
    assert w.poll() == []  # nothing rolling out
    kube.set_image(NS, NAME, "app:v2")
    kube.set_image(NS, "other", "x:v2")
    handled = w.watch_once(timeout_seconds=1)  # the watch stream (newline-delimited JSON events)
    assert handled >= 2
    [state] = c.store.list(active_only=True)
    assert (state.service, state.target, state.image, state.previous_image) == (
        "checkout", "kubernetes:shop/checkout", "app:v2", "app:v1")
    assert w.poll() == [] and len(c.store.list()) == 1  # guarded once
    values = c.actuators(state.target).arm_values(state)
    assert values["pod_template_hash"] != values["previous_pod_template_hash"] and None not in values.values()
    kube.delete_deployment(NS, NAME)
    c.guard.tick(state.id)  # whatever the tick does meanwhile, nothing crashes
    w.watch_once(timeout_seconds=1)
    ended = c.store.get(state.id)
    assert ended.phase is Phase.ROLLED_BACK, ended
    assert "deleted" in ended.reason
    decisions = c.store.decisions(state.id)
    assert decisions[-1]["reason"].startswith("Deployment shop/checkout was deleted mid-rollout")
    c.store.close()


def test_a_deletion_seen_only_by_a_list_ends_the_rollout_too(kube, tmp_path):
    rolled(kube)
    c, w = guard_and_watcher(kube, tmp_path)
    [state] = w.poll()
    kube.delete_deployment(NS, NAME)
    out = c.actuators(state.target).apply(request(Action.PAUSE, "x:1:pause"))
    assert not out.ok and "not found" in out.detail  # a 404 for any other action is a failure, not a crash
    w.poll()
    assert c.store.get(state.id).phase is Phase.ROLLED_BACK
    c.store.close()


# -- the stub behaves like the real API server where the guardian depends on it ------------------------------
def wait_for(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_stub_the_controller_runs_after_the_write_later_when_delayed(kube):
    kube.create_deployment(NS, NAME, "app:v1", replicas=3)
    kube.controller_delay = 1.0
    kube.set_image(NS, NAME, "app:v2")
    dep = kube.deployments[(NS, NAME)]
    assert (dep["metadata"]["generation"], dep["status"]["observedGeneration"]) == (2, 1)  # written, not yet seen
    assert dep["metadata"]["annotations"][REVISION] == "1" and len(kube.replicasets) == 1
    wait_for(lambda: kube.settled(NS, NAME))
    dep = kube.deployments[(NS, NAME)]
    assert (dep["metadata"]["generation"], dep["status"]["observedGeneration"]) == (2, 2)
    assert dep["metadata"]["annotations"][REVISION] == "2" and len(kube.replicasets) == 2


def test_stub_generation_moves_on_spec_changes_only(kube):
    kube.create_deployment(NS, NAME, "app:v1")
    a = actuator(kube)
    patch = a.apps.patch_namespaced_deployment
    a._call(patch, NS, NAME, NAME, NS, {"metadata": {"annotations": {"note": "x"}}},
            _content_type="application/merge-patch+json")
    assert kube.deployments[(NS, NAME)]["metadata"]["generation"] == 1  # metadata only
    a._call(patch, NS, NAME, NAME, NS, {"spec": {"paused": True}}, _content_type="application/merge-patch+json")
    dep = kube.deployments[(NS, NAME)]
    assert dep["metadata"]["generation"] == 2 and dep["status"]["observedGeneration"] == 2  # the controller saw it
    kube.progress(NS, NAME)  # a status update by the controller
    assert kube.deployments[(NS, NAME)]["metadata"]["generation"] == 2


def test_stub_refuses_an_unsupported_patch_type_with_415_as_the_api_server_does(kube):
    kube.create_deployment(NS, NAME, "app:v1")
    a = actuator(kube)
    with pytest.raises(KubeError) as err:
        a._call(a.apps.patch_namespaced_deployment, NS, NAME, NAME, NS, {"spec": {"paused": True}},
                _content_type="application/json")
    assert err.value.status == 415
    assert ("the body of the request was in an unknown format - accepted media types include: "
            "application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, "
            "application/apply-patch+yaml") in str(err.value)
    assert not kube.deployments[(NS, NAME)]["spec"].get("paused")


# -- defect 6: the arms of a rollout the guardian starts, with a deployment controller that runs later ---------
def rolled_out(kube: KubeStub) -> None:
    """Two finished revisions: app:v1 (1) then app:v2 (2)."""
    kube.create_deployment(NS, NAME, "app:v1", replicas=3, annotations=POLICY)
    kube.set_image(NS, NAME, "app:v2")
    kube.progress(NS, NAME, steps=3)


def hash_of_image(kube: KubeStub, image: str) -> str:
    template = copy.deepcopy(kube.deployments[(NS, NAME)]["spec"]["template"])
    template["spec"]["containers"][0]["image"] = image
    return template_hash(template)


def rollout_state(rollout_id: str = "r1") -> RolloutState:
    return RolloutState(id=rollout_id, service="checkout", image="app:v3", strategy=Strategy.ROLLING, steps=(100,),
                        target=f"kubernetes:{NS}/{NAME}", step_seconds=30, analysis_seconds=60, created_at=0.0,
                        step_started_at=0.0, updated_at=0.0)


def test_start_waits_for_a_delayed_controller_then_fixes_the_arms_of_the_new_revision(kube):
    rolled_out(kube)
    kube.controller_delay = 0.5
    a = actuator(kube)
    state = rollout_state()
    a.arm_values(state)  # Guard.start asks before the START (for its warning): nothing of it may stick
    start = a.apply(ActionRequest("r1", "checkout", "app:v3", Action.START, 100, "r1:0:start", strategy="rolling"))
    assert start.ok, start.detail
    want = {"pod_template_hash": hash_of_image(kube, "app:v3"),
            "previous_pod_template_hash": hash_of_image(kube, "app:v2")}
    got = a.arm_values(state)
    by_revision = {rs["metadata"]["annotations"][REVISION]: (rs["metadata"]["labels"]["pod-template-hash"],
                                                             rs["spec"]["template"]["spec"]["containers"][0]["image"])
                   for rs in kube.replicasets.values()}
    print(f"\narms with a {kube.controller_delay}s controller: {got}; ReplicaSets by revision: {by_revision}")
    assert got == want, f"arms {got}, want {want}; ReplicaSets by revision: {by_revision}"
    assert "revision 3" in start.detail and want["pod_template_hash"] in start.detail


def test_a_controller_slower_than_the_wait_leaves_the_arms_unknown_never_stale(kube):
    rolled_out(kube)
    kube.controller_delay = 2.0
    a = KubernetesActuator(f"{NS}/{NAME}", connection=KubeConnection(host=kube.url, timeout=5, settle_timeout=0.2))
    state = rollout_state()
    start = a.apply(ActionRequest("r1", "checkout", "app:v3", Action.START, 100, "r1:0:start", strategy="rolling"))
    assert start.ok and "not caught up" in start.detail, start.detail
    assert a.arm_values(state) == {"pod_template_hash": None, "previous_pod_template_hash": None}  # inconclusive
    wait_for(lambda: kube.settled(NS, NAME))
    assert a.arm_values(state) == {"pod_template_hash": hash_of_image(kube, "app:v3"),
                                   "previous_pod_template_hash": hash_of_image(kube, "app:v2")}


# -- defect 7: patches as kubectl sends them; nothing the client does not know is dropped ----------------------
def writes(kube: KubeStub) -> list[dict]:
    return [c for c in kube.calls if c["method"] in ("PATCH", "PUT", "POST")]


def test_set_image_is_kubectls_strategic_merge_patch_of_the_named_container(kube):
    rolled_out(kube)
    actuator(kube).apply(ActionRequest("r1", "checkout", "app:v3", Action.START, 100, "r1:0:start", strategy="rolling"))
    [write] = writes(kube)
    assert (write["method"], write["path"], write["content_type"]) == (
        "PATCH", f"/apis/apps/v1/namespaces/{NS}/deployments/{NAME}", "application/strategic-merge-patch+json")
    assert write["body"] == {"spec": {"template": {"spec": {"containers": [{"name": NAME, "image": "app:v3"}]}}}}


UNKNOWN = {"metadata": {"labels": {"team": "payments"}},
           "spec": {"futureDeploymentField": {"x": 1},
                    "template": {"spec": {"futurePodField": True,
                                          "containers": [{"name": NAME, "futureContainerField": "keep me"}]}}}}


def test_fields_the_client_does_not_know_survive_every_action(kube):
    kube.create_deployment(NS, NAME, "app:v1", replicas=3, annotations=POLICY, extra=UNKNOWN)
    kube.set_image(NS, NAME, "app:v2")
    a = actuator(kube)
    for i, action in enumerate([Action.START, Action.PAUSE, Action.RESUME, Action.SCALE, Action.PAUSE,
                                Action.ROLLBACK]):
        out = a.apply(ActionRequest("r1", "checkout", "app:v3", action, 100, f"r1:{i}", strategy="rolling",
                                    replicas=1))
        assert out.ok, out.detail
        dep = kube.deployments[(NS, NAME)]
        pod = dep["spec"]["template"]["spec"]
        assert dep["spec"]["futureDeploymentField"] == {"x": 1}, action
        assert pod["futurePodField"] is True and pod["containers"][0]["futureContainerField"] == "keep me", action
    assert pod["containers"][0]["image"] == "app:v2"  # rolled back from v3
    assert not [c for c in kube.calls if c["method"] == "PUT"]


def test_rollback_is_kubectls_json_patch_and_resumes_a_deployment_the_guardian_paused(kube):
    applied = "kubectl.kubernetes.io/last-applied-configuration"
    kube.create_deployment(NS, NAME, "app:v1", replicas=3, annotations={**POLICY, applied: "{v1}"})
    a = actuator(kube)
    patch = a.apps.patch_namespaced_deployment
    a._call(patch, NS, NAME, NAME, NS, {"metadata": {"annotations": {applied: "{v2}"}}},
            _content_type="application/merge-patch+json")
    kube.set_image(NS, NAME, "app:v2")
    a._call(patch, NS, NAME, NAME, NS, {"metadata": {"annotations": {"note": "set after revision 2"}}},
            _content_type="application/merge-patch+json")
    assert a.apply(request(Action.PAUSE, "r1:1:pause")).ok
    v1 = next(rs for rs in kube.replicasets.values() if rs["metadata"]["annotations"][REVISION] == "1")
    dep = copy.deepcopy(kube.deployments[(NS, NAME)])
    kube.calls.clear()
    undo = a.apply(request(Action.ROLLBACK, "r1:2:rollback"))
    assert undo.ok and "rolled back to revision 1" in undo.detail, undo.detail
    [write] = writes(kube)
    assert write["content_type"] == "application/json-patch+json"
    template = copy.deepcopy(v1["spec"]["template"])
    del template["metadata"]["labels"]["pod-template-hash"]
    # kubectl's annotations: the skipped ones (last-applied, revision) from the Deployment, the rest from the RS
    annotations = {applied: "{v2}", REVISION: "2", **POLICY}
    assert write["body"] == [
        {"op": "replace", "path": "/spec/template", "value": template},
        {"op": "replace", "path": "/metadata/annotations", "value": annotations},
        {"op": "replace", "path": "/metadata/resourceVersion", "value": dep["metadata"]["resourceVersion"]},
        {"op": "replace", "path": "/spec/paused", "value": False},  # one write: never resumed on the bad template
    ]
    now = kube.deployments[(NS, NAME)]
    assert not now["spec"].get("paused") and now["spec"]["template"] == template
    assert "note" not in now["metadata"]["annotations"] and now["metadata"]["annotations"][REVISION] == "3"
    assert a.apply(request(Action.PAUSE, "r1:3:pause")).ok
    kube.calls.clear()
    again = KubernetesActuator(f"{NS}/{NAME}", connection=KubeConnection(host=kube.url)).apply(
        request(Action.ROLLBACK, "r1:2:rollback"))  # applied again after a restart: no arms, no memory
    assert again.ok and "no longer runs app:v2 (app:v1): nothing to roll back; resumed" in again.detail, again.detail
    [write] = writes(kube)  # converged (a second `kubectl rollout undo` would go back to app:v2): only resumed
    assert (write["content_type"], write["body"]["spec"]) == ("application/merge-patch+json", {"paused": False})
    assert kube.deployments[(NS, NAME)]["spec"]["template"] == template


def test_scale_is_conditional_on_the_scales_resource_version_and_retried_on_409(kube):
    rolled_out(kube)
    kube.conflicts = 1
    out = actuator(kube).apply(request(Action.SCALE, "r1:1:scale", replicas=2))
    assert out.ok and "scaled to 5" in out.detail, out.detail
    scale = f"/apis/apps/v1/namespaces/{NS}/deployments/{NAME}/scale"
    sent = [c for c in kube.calls if c["path"] == scale]
    assert [(c["method"], c["status"]) for c in sent] == [("GET", 200), ("PATCH", 409), ("GET", 200), ("PATCH", 200)]
    for read, write in ((sent[0], sent[1]), (sent[2], sent[3])):  # each write conditional on the read before it
        assert write["content_type"] == "application/merge-patch+json"
        assert write["body"]["metadata"] == {"resourceVersion": read["response"]["metadata"]["resourceVersion"]}
    assert sent[3]["body"]["spec"] == {"replicas": 5}
    assert kube.deployments[(NS, NAME)]["spec"]["replicas"] == 5


# -- defect 8: what a real API server sends the watcher -------------------------------------------------------
def watcher_calls(kube: KubeStub) -> list[tuple[str, str | None]]:
    """(list|watch, resourceVersion) of each Deployment list/watch request, in order."""
    out = []
    for c in kube.calls:
        if c["path"].endswith("/deployments") and c["method"] == "GET":
            kind = "watch" if c["query"].get("watch") == ["true"] else "list"
            out.append((kind, (c["query"].get("resourceVersion") or [None])[0]))
    return out


def test_an_expired_watch_410_error_event_is_listed_again_and_resumed(kube, tmp_path):
    kube.create_deployment(NS, NAME, "app:v1", replicas=3, annotations=POLICY)
    c, w = guard_and_watcher(kube, tmp_path)
    w.poll()
    listed = w._resource_version
    kube.create_deployment("other", "x", "x:v1")
    kube.compact()  # the list's resourceVersion is now too old to watch from
    threading.Timer(0.5, kube.set_image, (NS, NAME, "app:v2")).start()
    w.watch_once(timeout_seconds=2)
    calls = watcher_calls(kube)
    assert calls[:2] == [("list", None), ("watch", listed)]
    assert [kind for kind, _ in calls[2:4]] == ["list", "watch"], calls  # listed again, then resumed
    assert int(calls[3][1]) >= kube.compacted
    first_watch = next(x for x in kube.calls if x["query"].get("watch") == ["true"])
    assert first_watch["status"] == 200  # the 410 came as an ERROR event in a 200 stream
    [state] = c.store.list(active_only=True)  # the change after the expiry was seen on the resumed stream
    assert state.image == "app:v2"
    c.store.close()


def test_bookmarks_advance_the_watchers_resource_version(tmp_path):
    kube = KubeStub(bookmark_every=0.2).start()
    try:
        kube.create_deployment(NS, NAME, "app:v1", annotations=POLICY)
        c, w = guard_and_watcher(kube, tmp_path, namespace=NS)
        w.poll()
        listed = int(w._resource_version)
        kube.create_deployment("other", "x", "x:v1")  # not in the watched namespace: no event, a newer version
        w.watch_once(timeout_seconds=1)
        watches = [x for x in kube.calls if x["query"].get("watch") == ["true"]]
        assert watches and all(x["query"].get("allowWatchBookmarks") == ["true"] for x in watches)
        assert int(w._resource_version) > listed and int(w._resource_version) == kube._rv
        c.store.close()
    finally:
        kube.stop()


def test_forbidden_at_the_cluster_scope_is_reported_as_such(kube, tmp_path):
    kube.create_deployment(NS, NAME, "app:v1", annotations=POLICY)
    kube.forbid("list", "deployments", "")
    c, w = guard_and_watcher(kube, tmp_path)
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="WARNING", format="{message}")
    try:
        assert w.poll() == []
    finally:
        logger.remove(sink)
    [line] = lines
    assert "the guardian may not list deployments.apps at the cluster scope" in line, line
    assert "namespace *" not in line and "namespace '*'" not in line
    assert ('User "system:serviceaccount:guardian:guardian" cannot list resource "deployments" in API group "apps" '
            "at the cluster scope") in line
    c.store.close()
