"""The pure parts of the weighted canary (router=gateway): the HTTPRoute's backendRefs and weights
(guardian/actuators/gateway_route.py) and the canary Deployment and Service built from the stable ones
(guardian/actuators/kube_canary.py). The whole actuator against the API stub: tests/integration/
test_kubernetes_gateway.py."""
from __future__ import annotations

import copy

import pytest

from guardian.actuators.gateway_route import (
    RouteProblem,
    others_problem,
    services,
    weighted,
    weights,
    with_canary,
    without_canary,
)
from guardian.actuators.kube_canary import (
    canary_deployment,
    canary_replicas,
    canary_service,
    track_problem,
)


def route(*rules: list[dict], namespace: str = "shop") -> dict:
    return {"metadata": {"name": "web", "namespace": namespace, "resourceVersion": "7"},
            "spec": {"rules": [{"backendRefs": refs} for refs in rules]}}


def test_the_canary_ref_goes_beside_each_stable_ref_once_as_a_copy_of_it():
    r = route([{"name": "checkout", "port": 80, "filters": [{"type": "RequestHeaderModifier"}]}],
              [{"name": "other", "port": 80}])
    rules = with_canary(r, "checkout", "checkout-canary", "shop")
    assert rules[0]["backendRefs"][1] == {"name": "checkout-canary", "port": 80, "group": "", "kind": "Service",
                                          "weight": 0, "filters": [{"type": "RequestHeaderModifier"}]}
    assert rules[1] == r["spec"]["rules"][1]  # a rule without the stable Service is not touched
    again = with_canary({**r, "spec": {"rules": rules}}, "checkout", "checkout-canary", "shop")
    assert again == rules  # applied again: no second canary ref


def test_refs_are_matched_by_group_kind_name_and_namespace():
    r = route([{"name": "checkout", "port": 80, "namespace": "shop"},  # the route in another namespace: explicit
               {"name": "checkout", "port": 80},  # the route's namespace (gw): another Service
               {"name": "checkout", "kind": "ServiceImport", "group": "multicluster.x-k8s.io", "port": 80}],
              namespace="gw")
    assert services(r, "shop") == ["checkout"] and services(r, "gw") == ["checkout"]
    rules = with_canary(r, "checkout", "checkout-canary", "shop")
    assert [ref["name"] for ref in rules[0]["backendRefs"]] == ["checkout", "checkout-canary", "checkout", "checkout"]
    assert rules[0]["backendRefs"][1]["namespace"] == "shop"
    split = weighted({**r, "spec": {"rules": rules}}, "checkout", "checkout-canary", "shop", 30)
    assert [ref.get("weight") for ref in split[0]["backendRefs"]] == [70, 30, None, None]


def test_weights_default_to_1_and_the_canary_is_removed_whole():
    r = route([{"name": "checkout", "port": 80}])
    assert weights(r, "checkout", "shop") == [1] and weights(r, "checkout-canary", "shop") == []
    rules = weighted({**r, "spec": {"rules": with_canary(r, "checkout", "checkout-canary", "shop")}},
                     "checkout", "checkout-canary", "shop", 100)
    assert [(x["name"], x["weight"]) for x in rules[0]["backendRefs"]] == [("checkout", 0), ("checkout-canary", 100)]
    assert without_canary({**r, "spec": {"rules": rules}}, "checkout-canary", "shop")[0]["backendRefs"] == [
        {"name": "checkout", "port": 80, "weight": 0}]
    with pytest.raises(RouteProblem, match="not a percentage"):
        weighted(r, "checkout", "checkout-canary", "shop", 101)


def test_a_rule_at_16_refs_and_a_shared_rule_are_refused_with_the_reason():
    full = route([{"name": "checkout", "port": 80}] + [{"name": f"s{i}", "port": 80, "weight": 0} for i in range(15)])
    with pytest.raises(RouteProblem, match="rule 0 would have 17 backendRefs .* allows 16 per rule"):
        with_canary(full, "checkout", "checkout-canary", "shop")
    shared = route([{"name": "checkout", "port": 80, "weight": 9}, {"name": "legacy", "port": 80, "weight": 1}])
    assert "rule 0 forwards to Service 'legacy' too (weight 1)" in others_problem(shared, "checkout",
                                                                                 "checkout-canary", "shop")
    assert others_problem(full, "checkout", "checkout-canary", "shop") is None  # the others at weight 0


STABLE = {"metadata": {"name": "checkout", "namespace": "shop", "labels": {"app": "checkout"},
                       "annotations": {"guardian.io/policy": "checkout"}, "uid": "u", "resourceVersion": "9"},
          "spec": {"replicas": 5, "revisionHistoryLimit": 3, "paused": True,
                   "selector": {"matchLabels": {"app": "checkout", "track": "stable"},
                                "matchExpressions": [{"key": "track", "operator": "In", "values": ["stable"]},
                                                     {"key": "tier", "operator": "Exists"}]},
                   "template": {"metadata": {"labels": {"app": "checkout", "track": "stable", "tier": "web"}},
                                "spec": {"containers": [{"name": "proxy", "image": "envoy:1.30"},
                                                        {"name": "app", "image": "registry/shop/app:v1"}]}}},
          "status": {"replicas": 5}}
SERVICE = {"metadata": {"name": "checkout", "namespace": "shop", "uid": "s", "resourceVersion": "3"},
           "spec": {"type": "LoadBalancer", "clusterIP": "10.0.0.9", "clusterIPs": ["10.0.0.9"],
                    "externalTrafficPolicy": "Local", "sessionAffinity": "ClientIP",
                    "selector": {"app": "checkout", "track": "stable"},
                    "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 31000}]}}


def test_the_canary_deployment_is_the_stable_template_with_the_image_and_track_canary():
    dep = canary_deployment(copy.deepcopy(STABLE), "registry/shop/app:v2", 2, service="checkout", rollout_id="r9")
    spec = dep["spec"]
    assert [c["image"] for c in spec["template"]["spec"]["containers"]] == ["envoy:1.30", "registry/shop/app:v2"]
    assert spec["template"]["metadata"]["labels"] == {"app": "checkout", "track": "canary", "tier": "web"}
    assert spec["selector"] == {"matchLabels": {"app": "checkout", "track": "canary"},
                                "matchExpressions": [{"key": "tier", "operator": "Exists"}]}
    assert (spec["replicas"], spec["revisionHistoryLimit"], "paused" in spec) == (2, 3, False)
    assert dep["metadata"] == {"name": "checkout-canary", "namespace": "shop",
                               "labels": {"app": "checkout", "track": "canary"},
                               "annotations": {"guardian.io/canary-of": "checkout",
                                               "guardian.io/canary-service": "checkout-canary",
                                               "guardian.io/rollout": "r9",
                                               "guardian.io/stable-image": "envoy:1.30,registry/shop/app:v1"}}
    assert STABLE["spec"]["template"]["metadata"]["labels"]["track"] == "stable"  # the stable's copy untouched


def test_the_canary_service_keeps_ports_and_selector_and_drops_what_is_allocated():
    svc = canary_service(copy.deepcopy(SERVICE), "checkout", "r9")
    assert svc["spec"] == {"type": "ClusterIP", "sessionAffinity": "ClientIP",
                           "selector": {"app": "checkout", "track": "canary"},
                           "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
    long = copy.deepcopy(SERVICE)
    long["metadata"]["name"] = "a" * 60
    with pytest.raises(ValueError, match="longer than 63 characters"):
        canary_service(long, "checkout", "r9")


def test_track_labels_are_required_on_the_pods_and_in_the_stable_selector():
    assert track_problem(STABLE, SERVICE) is None
    no_track = copy.deepcopy(STABLE)
    del no_track["spec"]["template"]["metadata"]["labels"]["track"]
    assert "carry no `track` label" in track_problem(no_track, SERVICE)
    canary_value = copy.deepcopy(STABLE)
    canary_value["spec"]["template"]["metadata"]["labels"]["track"] = "canary"
    assert "the canary's own value" in track_problem(canary_value, SERVICE)
    loose = copy.deepcopy(SERVICE)
    del loose["spec"]["selector"]["track"]
    assert "would send the stable share of the traffic to the canary's pods too" in track_problem(STABLE, loose)


@pytest.mark.parametrize("stable, percent, want", [(4, 10, 1), (4, 0, 1), (4, 26, 2), (10, 50, 5), (3, 100, 3)])
def test_the_canary_gets_its_share_of_the_stable_capacity(stable, percent, want):
    assert canary_replicas(stable, percent) == want
