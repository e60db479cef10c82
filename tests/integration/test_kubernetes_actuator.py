"""The kubernetes actuator and watcher through the official client against a STUB of the Kubernetes API
(tests/stubs/kube_stub.py: a real HTTP server on loopback; no API server can run on this machine)."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from guardian.actuators import ActionRequest
from guardian.actuators.kubernetes import KubeConnection, KubernetesActuator
from guardian.api.app import build
from guardian.clock import FakeClock
from guardian.domain import Action, Phase
from guardian.engine.kube_watch import KubeWatcher
from guardian.settings import Settings
from guardian.sources.recording import RecordingSource
from tests.stubs.kube_stub import REVISION, KubeStub
from tests.unit.recordings import steady_recording
from tests.unit.test_api_contract import clean_env  # noqa: F401  (autouse: no GUARDIAN_* from outside)

NS, NAME = "shop", "checkout"
POLICY = {"guardian.io/policy": "checkout"}


@pytest.fixture
def kube() -> Iterator[KubeStub]:
    stub = KubeStub().start()
    yield stub
    stub.stop()


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
    assert undo.ok and "rolled back revision 1" in undo.detail, undo.detail
    dep = kube.deployments[(NS, NAME)]
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "app:v1"
    assert "pod-template-hash" not in dep["spec"]["template"]["metadata"]["labels"]
    assert not dep["spec"].get("paused")  # kubectl would refuse a paused Deployment: it is resumed
    assert dep["metadata"]["annotations"][REVISION] == "3"  # the old ReplicaSet reused at the next revision
    assert a.detect(NS, NAME).hash == old_hash
    again = a.apply(request(Action.ROLLBACK, "r1:6:rollback"))  # a new key: nothing changes, still ok
    assert again.ok and "already at" in again.detail
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


def guard_and_watcher(kube: KubeStub, tmp_path: Path):
    s = Settings(db_path=str(tmp_path / "g.db"), rules=[str(Path(__file__).resolve().parents[2] / "rules")],
                 recordings_dir="", kube_host=kube.url)
    c = build(s, source=RecordingSource(steady_recording(30)), clock=FakeClock())
    return c, KubeWatcher(c.guard, s, connection=KubeConnection(host=kube.url, timeout=5), clock=c.clock)


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
