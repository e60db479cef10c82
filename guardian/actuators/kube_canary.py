"""The canary beside a stable Deployment: its Deployment and Service as the guardian creates them, and the
`track` label that keeps the two apart. Pure functions: the stable objects' JSON in, the canary's out.

The track label is Kubernetes' own canary pattern (the "Canary deployments" section of the docs' "Managing
Workloads"): the stable pods carry `track: stable` (any value but `canary`), the stable Service selects it,
and the canary's pods carry `track: canary`, so neither Service sends traffic to the other's pods.
`track_problem` checks the stable side of that (the pods' label and the stable Service's selector) and
nothing else: the stable Deployment's own selector is not checked (it is immutable and may leave `track`
out, docs/kubernetes.md; it then matches the canary's pods as well). The canary Deployment's selector is
the stable's with `track: canary`, so it never matches the stable's pods. The canary Deployment
`NAME-canary` is the stable Deployment's pod template with the new image and `track: canary`; the canary
Service `SERVICE-canary` is the stable Service's ports with the same selector but `track: canary`, type
ClusterIP (the route reaches it in the cluster; no load balancer or node port of its own). Both are
annotated `guardian.io/canary-of: NAME`: the guardian changes or deletes only objects it made. The canary
Deployment also records the stable's images as START read them (`guardian.io/stable-image`, comma-joined as
`images` gives them): a ROLLBACK undoes the stable Deployment only if it runs the rollout's image and did not
then (a re-rollout of the image the stable already ran is not rolled back to an older revision).

The stable Deployment's metadata annotations are not copied: the Deployment watcher's `guardian.io/policy`
would make it guard the canary Deployment as a rollout of its own. The pod template's annotations are
(Prometheus' scrape annotations among them: the canary's metrics must be read like the stable's).
"""
from __future__ import annotations

import copy
import math
import re
from typing import Any

from guardian.actuators.kubernetes import containers_to_set, images

TRACK = "track"
CANARY = "canary"
CANARY_OF = "guardian.io/canary-of"  # on the canary Deployment and Service: the stable Deployment's name
CANARY_SERVICE = "guardian.io/canary-service"  # on the canary Deployment: its Service (to clean up without a route)
ROLLOUT = "guardian.io/rollout"
STABLE_IMAGE = "guardian.io/stable-image"  # on the canary Deployment: the stable's images when START read it
_SERVICE_NAME = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
# the Deployment spec fields the canary takes from the stable one (not replicas, selector, template, paused)
_COPIED_SPEC = ("minReadySeconds", "progressDeadlineSeconds", "revisionHistoryLimit", "strategy")
# the Service spec fields the canary Service takes (not clusterIP(s), nodePorts, type, externalIPs, loadBalancer*)
_COPIED_SERVICE_SPEC = ("sessionAffinity", "sessionAffinityConfig", "publishNotReadyAddresses",
                        "internalTrafficPolicy", "trafficDistribution", "ipFamilyPolicy")


def canary_name(name: str) -> str:
    return f"{name}-canary"


def labels_of(template: dict[str, Any]) -> dict[str, str]:
    return dict((template.get("metadata") or {}).get("labels") or {})


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """Whether a Service's selector (equality of every key) matches pods with `labels`; an empty selector
    selects nothing the guardian can tell apart (Endpoints are then managed by hand)."""
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def track_problem(deployment: dict[str, Any], service: dict[str, Any]) -> str | None:
    """Why the stable Deployment and Service cannot have a canary beside them: the stable pods do not carry
    a `track` label other than `canary`, or the stable Service does not select it (it would then send its
    share of the traffic to the canary's pods as well)."""
    meta, svc_meta = deployment["metadata"], service["metadata"]
    where = f"Deployment {meta['namespace']}/{meta['name']}"
    labels = labels_of(deployment["spec"]["template"])
    selector = (service.get("spec") or {}).get("selector") or {}
    fix = ("Kubernetes' canary pattern: give the Deployment's pod template the label `track: stable` and the "
           "stable Service's selector `track: stable` (docs/kubernetes.md, Weighted canaries through the Gateway API)")
    if TRACK not in labels:
        return f"the pods of {where} carry no `{TRACK}` label, so no Service can tell them from the canary's; {fix}"
    if labels[TRACK] == CANARY:
        return f"the pods of {where} carry `{TRACK}: {CANARY}`, the canary's own value; {fix}"
    if selector.get(TRACK) != labels[TRACK]:
        return (f"Service {svc_meta['namespace']}/{svc_meta['name']} selects {selector or 'nothing'}: without "
                f"`{TRACK}: {labels[TRACK]}` in its selector it would send the stable share of the traffic to the "
                f"canary's pods too; {fix}")
    return None


def canary_replicas(stable_replicas: int, percent: int) -> int:
    """The canary's replicas for `percent` of the traffic: the stable's capacity in proportion, at least 1
    (as Argo Rollouts scales a canary with traffic routing)."""
    return max(1, math.ceil(stable_replicas * percent / 100))


def made_by_guardian(obj: dict[str, Any], stable: str) -> bool:
    return ((obj.get("metadata") or {}).get("annotations") or {}).get(CANARY_OF) == stable


def recorded_stable_image(canary: dict[str, Any] | None, stable: str) -> str | None:
    """The stable Deployment's images as START recorded them on the canary Deployment the guardian made for
    it; None when there is no such record (no canary Deployment, not the guardian's, or made without it)."""
    if canary is None or not made_by_guardian(canary, stable):
        return None
    return ((canary.get("metadata") or {}).get("annotations") or {}).get(STABLE_IMAGE) or None


def canary_deployment(stable: dict[str, Any], image: str, replicas: int, *, service: str,
                      rollout_id: str) -> dict[str, Any]:
    """The canary Deployment: the stable's pod template with `image` (`kubectl set image`'s choice of
    container) and `track: canary`, its selector the stable's with `track: canary`."""
    meta, spec = stable["metadata"], stable["spec"]
    template = copy.deepcopy(spec["template"])
    template.setdefault("metadata", {}).setdefault("labels", {})[TRACK] = CANARY
    changed = set(containers_to_set(template, image))
    for c in template["spec"]["containers"]:
        if c["name"] in changed:
            c["image"] = image
    selector = copy.deepcopy(spec["selector"])
    selector["matchLabels"] = {**(selector.get("matchLabels") or {}), TRACK: CANARY}
    if selector.get("matchExpressions"):
        selector["matchExpressions"] = [e for e in selector["matchExpressions"] if e.get("key") != TRACK]
    name = canary_name(meta["name"])
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": meta["namespace"],
                     "labels": {**(meta.get("labels") or {}), TRACK: CANARY},
                     "annotations": {CANARY_OF: meta["name"], CANARY_SERVICE: canary_name(service),
                                     ROLLOUT: rollout_id, STABLE_IMAGE: images(spec["template"])}},
        "spec": {**{k: copy.deepcopy(spec[k]) for k in _COPIED_SPEC if k in spec}, "replicas": replicas,
                 "selector": selector, "template": template},
    }


def canary_service(stable: dict[str, Any], deployment: str, rollout_id: str) -> dict[str, Any]:
    """The canary Service: the stable Service's ports (without node ports) and selector with `track:
    canary`, type ClusterIP. Raises ValueError when its name would not be a valid Service name."""
    meta, spec = stable["metadata"], stable.get("spec") or {}
    name = canary_name(meta["name"])
    if not _SERVICE_NAME.fullmatch(name):
        raise ValueError(f"the canary Service's name {name!r} would be longer than 63 characters (a Service name "
                         "is an RFC 1035 label): name a shorter stable Service")
    ports = [{k: v for k, v in p.items() if k != "nodePort"} for p in spec.get("ports") or []]
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": meta["namespace"],
                     "labels": {**(meta.get("labels") or {}), TRACK: CANARY},
                     "annotations": {CANARY_OF: deployment, ROLLOUT: rollout_id}},
        "spec": {**{k: copy.deepcopy(spec[k]) for k in _COPIED_SERVICE_SPEC if k in spec}, "type": "ClusterIP",
                 "ports": ports, "selector": {**(spec.get("selector") or {}), TRACK: CANARY}},
    }


__all__ = ["CANARY", "CANARY_OF", "CANARY_SERVICE", "ROLLOUT", "STABLE_IMAGE", "TRACK", "canary_deployment",
           "canary_name", "canary_replicas", "canary_service", "labels_of", "made_by_guardian", "recorded_stable_image",
           "selects", "track_problem"]
