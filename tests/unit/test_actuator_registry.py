"""The registry turns target URIs into actuators and refuses, with the list of known names, the rest."""
from __future__ import annotations

import pytest

from guardian.actuators import ActionRequest, registry
from guardian.actuators.noop import NoopActuator
from guardian.actuators.webhook import WebhookActuator
from guardian.domain import Action
from guardian.errors import ActuatorError, UnknownActuator


def request(action: Action = Action.ADVANCE, seq: int = 1, weight: int = 25) -> ActionRequest:
    return ActionRequest(
        rollout_id="r1", service="checkout", image="checkout:2", action=action, weight=weight,
        key=f"r1:{seq}:{action.value}",
    )


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("noop", ("noop", "")),
        ("noop:", ("noop", "")),
        ("noop://anything", ("noop", "//anything")),
        ("  NOOP  ", ("noop", "")),
        ("webhook+http://127.0.0.1:8080/hook", ("webhook", "http://127.0.0.1:8080/hook")),
        ("webhook+https://h.example/a?b=c", ("webhook", "https://h.example/a?b=c")),
        ("foo://x", ("foo", "//x")),
        ("a:b+c", ("a", "b+c")),  # the first separator wins
    ],
)
def test_parse_target(uri, expected):
    assert registry.parse_target(uri) == expected


def test_builtin_names():
    assert registry.names() == ["docker", "kubernetes", "nginx", "noop", "swarm", "webhook"]


@pytest.mark.parametrize("uri", ["foo://x", "k8s", "argo+http://h", "", "   "])
def test_unknown_names_are_rejected_with_the_known_list(uri):
    with pytest.raises(UnknownActuator) as err:
        registry.create(uri)
    assert "known: docker, kubernetes, nginx, noop, swarm, webhook" in str(err.value)
    assert registry.validate_target(uri) == str(err.value)


def test_unknown_message_names_actuator_and_target():
    expected = "unknown actuator 'foo' in target 'foo://x'; known: docker, kubernetes, nginx, noop, swarm, webhook"
    assert registry.validate_target("foo://x") == expected


def test_unknown_message_hides_credentials():
    message = registry.validate_target("foo+http://alice:s3cret@h/p")
    assert "s3cret" not in message and "alice" not in message


@pytest.mark.parametrize(
    ("uri", "fragment"),
    [
        ("webhook", "no URL"),
        ("webhook+", "no URL"),
        ("webhook+ftp://h/p", "must be http or https, not 'ftp'"),
        ("webhook://h/p", "must be http or https"),
        ("webhook+http://", "no host"),
        ("webhook+http:///path", "no host"),
        ("webhook+http://h:notaport/p", "invalid"),
        ("webhook+http://h/a b", "whitespace"),
    ],
)
def test_bad_webhook_targets(uri, fragment):
    problem = registry.validate_target(uri)
    assert problem is not None and fragment in problem
    with pytest.raises(ActuatorError) as err:
        registry.create(uri)
    assert not isinstance(err.value, UnknownActuator)


def test_bad_webhook_target_hides_credentials():
    problem = registry.validate_target("webhook+ftp://alice:s3cret@h/p")
    assert problem is not None and "s3cret" not in problem


@pytest.mark.parametrize("uri", ["noop", "noop:", "noop://x", "webhook+http://127.0.0.1:1/h", "webhook+https://h"])
def test_valid_targets(uri):
    assert registry.validate_target(uri) is None


def test_create_builds_each_kind_and_passes_only_known_deps():
    assert isinstance(registry.create("noop", timeout=1.0), NoopActuator)
    hook = registry.create("webhook+http://127.0.0.1:9/h", timeout=1.5, retries=0, unrelated=object())
    try:
        assert isinstance(hook, WebhookActuator)
        assert (hook.timeout, hook.retries) == (1.5, 0)
    finally:
        hook.close()


def test_register_adds_a_name(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    seen = {}

    def factory(rest, **deps):
        seen.update(rest=rest, deps=deps)
        return NoopActuator()

    registry.register("custom", factory, validate=lambda rest: None if rest else "needs a rest")
    assert registry.names() == ["custom", "docker", "kubernetes", "nginx", "noop", "swarm", "webhook"]
    assert registry.validate_target("custom") == "invalid custom target 'custom': needs a rest"
    registry.create("custom+x", a=1)
    assert seen == {"rest": "x", "deps": {"a": 1}}
    with pytest.raises(ValueError):
        registry.register("custom", factory)
    with pytest.raises(ValueError):
        registry.register("bad+name", factory)


def test_noop_records_and_describes():
    noop = registry.create("noop")
    outcome = noop.apply(request())
    assert outcome.ok and outcome.action == "advance"
    assert outcome.detail == "noop: would advance checkout to weight 25"
    assert noop.applied == [request()]
    assert noop.supports == frozenset(Action)
    assert noop.verify(request()).ok


def test_noop_is_idempotent_per_key():
    noop = NoopActuator()
    first = noop.apply(request(seq=1))
    again = noop.apply(request(seq=1))
    other = noop.apply(request(seq=2, weight=50))
    assert again is first
    assert [r.key for r in noop.applied] == ["r1:1:advance", "r1:2:advance"]
    assert other.detail == "noop: would advance checkout to weight 50"
