"""`kubernetes:` targets: which Deployment, and through which router its canary gets traffic.

    kubernetes:NAMESPACE/NAME                 the Deployment's own rolling update (kubernetes.py)
    kubernetes:NAME   kubernetes:             namespace `default`; no name: the rollout's service
    kubernetes:NAMESPACE/NAME?router=gateway:ROUTE_NAMESPACE/HTTPROUTE[&service=STABLE_SERVICE]
                                              a weighted canary beside the Deployment, its traffic moved by
                                              the HTTPRoute's backendRef weights (kube_gateway.py)

`router=gateway:HTTPROUTE` takes the Deployment's namespace for the route. `service=` names the stable
Service when the route's backendRefs do not make it plain (by default it is the one Service among them
that selects the Deployment's pods). A target may come from an API user: every part is checked here,
before anything is built or asked.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl

from guardian.actuators.targets import target_body
from guardian.errors import ActuatorError

_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")  # Deployment, HTTPRoute names
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")  # namespaces
_SERVICE = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")  # Service names: RFC 1035 labels
_LABEL_RULE = "lower-case letters, digits, '-'"
_SUBDOMAIN_RULE = "lower-case letters, digits, '-', '.'"
HINT = ("write kubernetes:NAMESPACE/NAME, kubernetes:NAME or kubernetes:, and for a weighted canary "
        "kubernetes:NAMESPACE/NAME?router=gateway:NAMESPACE/HTTPROUTE[&service=STABLE_SERVICE]")
ROUTERS = ("gateway",)
OPTIONS = ("router", "service")
WARM = ("warm=N cannot be done: the deployment controller scales the previous ReplicaSet to 0; see "
        "docs/kubernetes.md, Bake")


@dataclass(frozen=True)
class KubeTarget:
    """A parsed `kubernetes:` target. `namespace`/`name` None: the rollout's service in `default`."""

    namespace: str | None
    name: str | None
    route_namespace: str | None = None  # router=gateway: the HTTPRoute (namespace None: the Deployment's)
    route: str | None = None
    service: str | None = None  # the stable Service, when named

    @property
    def router(self) -> str | None:
        return "gateway" if self.route else None


def _name_problem(what: str, value: str, pattern: re.Pattern[str], rule: str) -> str | None:
    if pattern.fullmatch(value):
        return None
    return f"{value!r} is not a valid {what} ({rule})"


def _route(value: str) -> tuple[str | None, str]:
    """`gateway:NS/NAME` or `gateway:NAME` -> (NS or None, NAME); ActuatorError naming what is wrong."""
    kind, sep, where = value.partition(":")
    if not sep or kind not in ROUTERS:
        raise ActuatorError(f"router {value!r} is not known: write router=gateway:NAMESPACE/HTTPROUTE "
                            f"(known routers: {', '.join(ROUTERS)})")
    namespace, _, name = where.rpartition("/")
    if not name:
        raise ActuatorError(f"router {value!r} names no HTTPRoute: write router=gateway:NAMESPACE/HTTPROUTE")
    for what, v, pattern, rule in (("HTTPRoute namespace", namespace, _DNS_LABEL, _LABEL_RULE),
                                   ("HTTPRoute name", name, _DNS_SUBDOMAIN, _SUBDOMAIN_RULE)):
        if (v or what == "HTTPRoute name") and (problem := _name_problem(what, v, pattern, rule)):
            raise ActuatorError(f"router {value!r}: {problem}")
    return namespace or None, name


def parse_kube_target(rest: str) -> KubeTarget:
    """The part of a target after `kubernetes:`. Raises ActuatorError naming the bad part and the syntax."""
    if any(c.isspace() for c in rest):
        raise ActuatorError(f"the target contains whitespace; {HINT}")
    path, _, query = target_body(rest).partition("?")
    namespace, name = None, None
    if path:
        ns, _, name = path.rpartition("/")
        namespace = ns or "default"
        for what, v, pattern, rule in (("namespace", namespace, _DNS_LABEL, _LABEL_RULE),
                                       ("Deployment name", name, _DNS_SUBDOMAIN, _SUBDOMAIN_RULE)):
            if problem := _name_problem(what, v, pattern, rule):
                raise ActuatorError(f"{problem}; {HINT}")
    params: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key == "warm":
            raise ActuatorError(f"a kubernetes target takes no warm=N option ({WARM}); {HINT}")
        if key not in OPTIONS:
            raise ActuatorError(f"unknown option {key!r} (known: {', '.join(OPTIONS)}); {HINT}")
        if key in params:
            raise ActuatorError(f"option {key!r} is given twice")
        params[key] = value
    if query and not params:
        raise ActuatorError(f"option {query!r} is not KEY=VALUE; {HINT}")
    if "service" in params and "router" not in params:
        raise ActuatorError("option 'service' names the stable Service of a router: give router=gateway:... too")
    route_namespace, route = _route(params["router"]) if "router" in params else (None, None)
    service = params.get("service")
    if service is not None and (problem := _name_problem("Service name", service, _SERVICE,
                                                        "an RFC 1035 label: lower-case letters, digits, '-', "
                                                        "starting with a letter, at most 63")):
        raise ActuatorError(f"option 'service': {problem}")
    return KubeTarget(namespace, name, route_namespace, route, service)


def validate_target(rest: str) -> str | None:
    """Why `rest` (the target after `kubernetes:`) is unusable, or None. Asks nothing of any cluster."""
    try:
        parse_kube_target(rest)
    except ActuatorError as e:
        return str(e)
    return None


def split_target(rest: str) -> tuple[str | None, str | None]:
    """`ns/name` -> (ns, name); `name` -> ('default', name); '' -> (None, None). Options are not looked at."""
    path = target_body(rest).partition("?")[0]
    if not path:
        return None, None
    namespace, _, name = path.rpartition("/")
    return namespace or "default", name


__all__ = ["HINT", "KubeTarget", "parse_kube_target", "split_target", "validate_target"]
