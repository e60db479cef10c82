"""An HTTPRoute's backendRefs and their weights, as the Gateway API defines them: pure functions, JSON in and out.

The fields (gateway.networking.k8s.io/v1, kubernetes-sigs/gateway-api apis/v1/httproute_types.go,
shared_types.go, object_reference_types.go): `spec.rules[].backendRefs[]` (at most 16 per rule, at most 16
rules) each `{group, kind, name, namespace, port, weight, filters}`; `group` defaults to "" (the core group) and
`kind` to "Service", so a ref with neither is a Service; `port` is required for a Service; `weight` defaults
to 1 and lies in 0..1000000. A rule forwards to each ref in proportion to weight / (sum of the rule's
weights); weight 0 sends it nothing. A ref without `namespace` is in the route's namespace.

The rules list is `+listType=atomic`: a JSON merge patch (the only patch a custom resource takes besides a
JSON patch) replaces it whole, so the guardian reads the route, changes its copy of the rules, and writes
them back conditional on the resourceVersion it read (a 409 when someone wrote in between: read again).
This is what Argo Rollouts' gatewayAPI plugin (pkg/plugin/httproute.go: every ref of the canary Service
gets the weight, every ref of the stable Service 100 minus it) and Flagger's gatewayapi router
(pkg/router/gateway_api.go: primary and canary refs, weights 100 and 0 to begin) do with an Update.
"""
from __future__ import annotations

import copy
from typing import Any

GROUP, VERSION, PLURAL, KIND = "gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute"
MAX_BACKEND_REFS = 16  # per rule (+kubebuilder:validation:MaxItems=16)
MAX_WEIGHT = 1_000_000
DEFAULT_WEIGHT = 1


class RouteProblem(ValueError):
    """The route cannot carry the canary as asked; the message says why and what to do."""


def is_service(ref: dict[str, Any]) -> bool:
    """A backendRef to a core Service (group "" and kind Service, the defaults)."""
    return (ref.get("group") or "") == "" and (ref.get("kind") or "Service") == "Service"


def points_at(ref: dict[str, Any], service: str, service_namespace: str, route_namespace: str) -> bool:
    """Whether `ref` forwards to the Service `service_namespace/service`."""
    return (is_service(ref) and ref.get("name") == service
            and (ref.get("namespace") or route_namespace) == service_namespace)


def weight_of(ref: dict[str, Any]) -> int:
    weight = ref.get("weight")
    return DEFAULT_WEIGHT if weight is None else int(weight)


def rules_of(route: dict[str, Any]) -> list[dict[str, Any]]:
    return list((route.get("spec") or {}).get("rules") or [])


def services(route: dict[str, Any], namespace: str) -> list[str]:
    """The Services of `namespace` the route's rules forward to, in order, each once."""
    route_ns = route["metadata"]["namespace"]
    names: list[str] = []
    for rule in rules_of(route):
        for ref in rule.get("backendRefs") or []:
            if is_service(ref) and (ref.get("namespace") or route_ns) == namespace and ref.get("name") not in names:
                names.append(ref["name"])
    return names


def stable_rules(route: dict[str, Any], stable: str, namespace: str) -> list[int]:
    """The indexes of the rules that forward to the stable Service."""
    route_ns = route["metadata"]["namespace"]
    return [i for i, rule in enumerate(rules_of(route))
            if any(points_at(ref, stable, namespace, route_ns) for ref in rule.get("backendRefs") or [])]


def others_problem(route: dict[str, Any], stable: str, canary: str, namespace: str) -> str | None:
    """Why the guardian cannot split the stable Service's rules between stable and canary: a rule that also
    forwards to another backend with a weight above 0 (the guardian moves the stable's share only when the
    stable Service has the rule to itself)."""
    route_ns = route["metadata"]["namespace"]
    for i in stable_rules(route, stable, namespace):
        for ref in rules_of(route)[i].get("backendRefs") or []:
            mine = points_at(ref, stable, namespace, route_ns) or points_at(ref, canary, namespace, route_ns)
            if not mine and weight_of(ref) > 0:
                return (f"rule {i} forwards to {ref.get('kind') or 'Service'} {ref.get('name')!r} too (weight "
                        f"{weight_of(ref)}): the guardian splits a rule between the stable and the canary Service "
                        "only when the stable Service has it to itself (set the other backend's weight to 0, or "
                        "move it to a rule of its own)")
    return None


def with_canary(route: dict[str, Any], stable: str, canary: str, namespace: str) -> list[dict[str, Any]]:
    """The route's rules with a backendRef to the canary Service, at weight 0, right after each ref to the
    stable Service that has none beside it yet: a copy of the stable's ref (its port, namespace and filters),
    kind and group written out as Flagger and Argo Rollouts write them. Raises RouteProblem when a rule would
    exceed 16 backendRefs."""
    route_ns = route["metadata"]["namespace"]
    rules = copy.deepcopy(rules_of(route))
    for i, rule in enumerate(rules):
        refs = rule.get("backendRefs") or []
        if any(points_at(r, canary, namespace, route_ns) for r in refs):
            continue
        out: list[dict[str, Any]] = []
        for ref in refs:
            out.append(ref)
            if points_at(ref, stable, namespace, route_ns):
                out.append({**copy.deepcopy(ref), "group": "", "kind": "Service", "name": canary, "weight": 0})
        if len(out) > MAX_BACKEND_REFS:
            raise RouteProblem(f"rule {i} would have {len(out)} backendRefs with the canary's: the Gateway API "
                               f"allows {MAX_BACKEND_REFS} per rule")
        if len(out) != len(refs):
            rule["backendRefs"] = out
    return rules


def weighted(route: dict[str, Any], stable: str, canary: str, namespace: str,
             canary_percent: int) -> list[dict[str, Any]]:
    """The route's rules with every ref to the canary Service at `canary_percent` and every ref to the stable
    one at 100 minus it (weights are proportions: 100 in all is a percentage)."""
    if not 0 <= canary_percent <= 100:
        raise RouteProblem(f"canary weight {canary_percent} is not a percentage 0..100")
    route_ns = route["metadata"]["namespace"]
    rules = copy.deepcopy(rules_of(route))
    for rule in rules:
        for ref in rule.get("backendRefs") or []:
            if points_at(ref, canary, namespace, route_ns):
                ref["weight"] = canary_percent
            elif points_at(ref, stable, namespace, route_ns):
                ref["weight"] = 100 - canary_percent
    return rules


def without_canary(route: dict[str, Any], canary: str, namespace: str) -> list[dict[str, Any]]:
    """The route's rules without any ref to the canary Service."""
    route_ns = route["metadata"]["namespace"]
    rules = copy.deepcopy(rules_of(route))
    for rule in rules:
        if "backendRefs" in rule:
            rule["backendRefs"] = [r for r in rule["backendRefs"] if not points_at(r, canary, namespace, route_ns)]
    return rules


def weights(route: dict[str, Any], service: str, namespace: str) -> list[int]:
    """The weights of the route's refs to `service`, rule by rule (empty: no ref to it)."""
    route_ns = route["metadata"]["namespace"]
    return [weight_of(ref) for rule in rules_of(route) for ref in rule.get("backendRefs") or []
            if points_at(ref, service, namespace, route_ns)]


def rules_patch(route: dict[str, Any], rules: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON merge patch that writes `rules` over the route read, conditional on its resourceVersion."""
    return {"metadata": {"resourceVersion": route["metadata"]["resourceVersion"]}, "spec": {"rules": rules}}


__all__ = ["GROUP", "KIND", "MAX_BACKEND_REFS", "MAX_WEIGHT", "PLURAL", "VERSION", "RouteProblem", "is_service",
           "others_problem", "points_at", "rules_patch", "services", "stable_rules", "weight_of", "weighted",
           "weights", "with_canary", "without_canary"]
