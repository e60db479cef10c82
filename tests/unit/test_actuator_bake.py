"""BAKE in every actuator: it is in each one's `supports`, what BaseActuator enforces; noop and webhook
(the others have their own tests against real or stubbed backends: tests/integration/test_*_bake.py)."""
from __future__ import annotations

import json

import httpx
import pytest

from guardian.actuators import ActionRequest, registry
from guardian.actuators.base import BaseActuator
from guardian.actuators.containers import Containers
from guardian.actuators.docker import DockerActuator
from guardian.actuators.kubernetes import KubernetesActuator
from guardian.actuators.nginx import NginxActuator
from guardian.actuators.noop import NoopActuator
from guardian.actuators.swarm import SwarmActuator
from guardian.actuators.webhook import KIND, WebhookActuator
from guardian.domain import Action, Outcome


def bake(key: str = "r1:7:bake") -> ActionRequest:
    return ActionRequest(rollout_id="r1", service="checkout", image="checkout:v4", action=Action.BAKE, weight=100,
                         key=key, reason="the last step passed: baking for 10m")


@pytest.mark.parametrize("kind", [NoopActuator, WebhookActuator, DockerActuator, NginxActuator, SwarmActuator,
                                  KubernetesActuator])
def test_every_actuator_supports_bake(kind: type[BaseActuator]) -> None:
    assert Action.BAKE in kind.supports


def test_an_actuator_that_does_not_support_bake_refuses_it_and_says_what_it_does() -> None:
    class Old(BaseActuator):
        name = "old"
        supports = frozenset({Action.START, Action.PROMOTE, Action.ROLLBACK})

        def carry_out(self, request: ActionRequest) -> Outcome:
            raise AssertionError("never carried out")

    out = Old().apply(bake())
    assert not out.ok and out.detail == "old: does not bake (it supports: promote, rollback, start)"


def test_docker_refuses_what_it_does_not_carry_out_instead_of_starting_replicas() -> None:
    """Before BAKE was added, any action docker did not name fell through to START's path."""
    docker = DockerActuator(Containers(client=None))  # refused before the engine is asked anything
    for action in (Action.CONTINUE, Action.NOTIFY):
        out = docker.apply(ActionRequest("r1", "checkout", "checkout:v4", action, 100, f"r1:1:{action.value}"))
        assert not out.ok and f"docker: does not {action.value}" in out.detail and "bake" in out.detail


def test_noop_bakes_and_says_nothing_is_kept_warm() -> None:
    noop = registry.create("noop")
    out = noop.apply(bake())
    assert out.ok and out.action == "bake"
    assert out.detail == "noop: nothing kept warm (no actuator)"
    assert out.data == {"key": "r1:7:bake", "warm": None}
    assert noop.apply(bake()) is out and noop.applied == [bake()]
    assert noop.verify(bake()).ok


def test_the_webhook_posts_bake_like_every_other_action() -> None:
    seen: list[httpx.Request] = []

    def receiver(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    with WebhookActuator("http://router.local/weights", transport=httpx.MockTransport(receiver)) as hook:
        out = hook.apply(bake())
        assert out.ok and "delivered bake for checkout" in out.detail, out.detail
        assert hook.apply(bake()) is out  # the same key is not POSTed again
        assert hook.verify(bake()).ok
    [posted] = seen
    assert posted.headers["Idempotency-Key"] == "r1:7:bake"
    body = json.loads(posted.content)
    assert body == {"kind": KIND, "action": "bake", "weight": 100, "service": "checkout", "image": "checkout:v4",
                    "rollout_id": "r1", "strategy": "canary", "replicas": 0,
                    "reason": "the last step passed: baking for 10m", "key": "r1:7:bake"}
