"""A Swarm service's spec and the edits the actuator posts: pure, each returns a new spec (or a fact about
one) and touches no engine. What the labels and the hold mean: docs/actuators.md#swarm."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from guardian.images import image_version, normalise_image

Spec = dict[str, Any]

IMAGE_LABEL = "guardian.image"  # container label: the image reference the task was created with
VERSION_LABEL = "guardian.version"  # container label: that image's tag (what Prometheus relabels to `version`)
ROLLOUT_LABEL = "guardian.rollout"  # service label: the rollout that last started an update
PREVIOUS_LABEL = "guardian.previous-image"  # service label: the image START replaced
HOLD_LABEL = "guardian.hold"  # service label: the key of the PAUSE that holds the update
HOLD_ORDER_LABEL = "guardian.hold-order"  # service label: the update order the hold replaced
HOLD_CONSTRAINT = "node.id==guardian-hold"  # satisfied by no node: Swarm node IDs never contain '-'


@dataclass(frozen=True)
class SwarmSettings:
    """How updates are run and how long the actuator waits. Durations in seconds."""

    update_parallelism: int = 1  # tasks replaced at a time
    update_delay: float = 10.0  # between one task and the next: time for the guardian to judge both
    update_monitor: float = 5.0  # a new task failing within this counts as an update failure
    max_failure_ratio: float = 0.0  # failures tolerated (as a fraction of the tasks) before Swarm pauses
    rollback_parallelism: int = 0  # 0 = every task at once (still start-first: never below the replicas)
    start_timeout: float = 120.0  # START: until the first new task runs
    wait_timeout: float = 300.0  # PROMOTE, ROLLBACK, SCALE, RESUME: until Swarm converges
    poll_interval: float = 0.25
    require_local_image: bool = True  # START refuses an image this engine does not hold (nothing is pulled)

    def __post_init__(self) -> None:
        if self.update_parallelism < 1 or self.rollback_parallelism < 0:
            raise ValueError("swarm: need update_parallelism >= 1 and rollback_parallelism >= 0")
        if min(self.update_delay, self.update_monitor) < 0 or not 0 <= self.max_failure_ratio <= 1:
            raise ValueError("swarm: delays must be >= 0 and max_failure_ratio within [0, 1]")
        if min(self.start_timeout, self.wait_timeout, self.poll_interval) <= 0:
            raise ValueError("swarm: timeouts and poll_interval must be positive")


def _ns(seconds: float) -> int:
    return int(round(seconds * 1e9))


def update_configs(settings: SwarmSettings) -> tuple[dict[str, Any], dict[str, Any]]:
    """The UpdateConfig and RollbackConfig the guardian runs updates with: start-first (never below the
    replicas), pausing on a failure, `settings`' parallelism, delay and monitor."""
    s = settings
    update = {"Parallelism": s.update_parallelism, "Delay": _ns(s.update_delay), "FailureAction": "pause",
              "Monitor": _ns(s.update_monitor), "MaxFailureRatio": s.max_failure_ratio, "Order": "start-first"}
    rollback = {"Parallelism": s.rollback_parallelism, "Delay": 0, "FailureAction": "pause",
                "Monitor": _ns(s.update_monitor), "MaxFailureRatio": s.max_failure_ratio, "Order": "start-first"}
    return update, rollback


# -- facts ---------------------------------------------------------------------------------------------------
def image_of(spec: Spec | None) -> str | None:
    """The (normalised) image a spec's tasks run; None without one."""
    if not spec:
        return None
    image = ((spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}).get("Image")
    return normalise_image(image) if image else None


def is_held(spec: Spec) -> bool:
    """Whether the guardian's PAUSE holds the update (the hold constraint is in the placement)."""
    constraints = ((spec.get("TaskTemplate") or {}).get("Placement") or {}).get("Constraints") or []
    return HOLD_CONSTRAINT in constraints


# -- edits ---------------------------------------------------------------------------------------------------
def _lift_hold(spec: Spec) -> None:
    """Remove the hold from a spec, in place: the constraint, the hold labels, the update order it replaced."""
    template = spec.get("TaskTemplate") or {}
    placement = template.get("Placement") or {}
    constraints = placement.get("Constraints") or []
    labels = spec.get("Labels") or {}
    if HOLD_CONSTRAINT in constraints:
        rest = [c for c in constraints if c != HOLD_CONSTRAINT]
        if rest:
            placement["Constraints"] = rest
        else:
            placement.pop("Constraints", None)
        if not placement:
            template.pop("Placement", None)
    order = labels.pop(HOLD_ORDER_LABEL, None)
    if order and spec.get("UpdateConfig"):
        spec["UpdateConfig"]["Order"] = order
    labels.pop(HOLD_LABEL, None)


def unheld(spec: Spec) -> Spec:
    """`spec` without the hold (RESUME removes exactly that: the tasks already updated are not replaced)."""
    spec = copy.deepcopy(spec)
    _lift_hold(spec)
    return spec


def held(spec: Spec, key: str) -> Spec:
    """`spec` held by the PAUSE `key`: a placement constraint no node satisfies, so the updater's next
    task stays pending and no old task is stopped; a stop-first update made start-first meanwhile (it would
    stop a task, then wait for nothing), the order it had kept in a label."""
    spec = copy.deepcopy(spec)
    placement = spec["TaskTemplate"].setdefault("Placement", {})
    placement["Constraints"] = [*(placement.get("Constraints") or []), HOLD_CONSTRAINT]
    labels = spec.setdefault("Labels", {})
    labels[HOLD_LABEL] = key
    update = spec.setdefault("UpdateConfig", {})
    if update.get("Order") != "start-first":
        labels[HOLD_ORDER_LABEL] = update.get("Order") or "stop-first"
        update["Order"] = "start-first"
    return spec


def configured(spec: Spec, update_cfg: dict[str, Any], rollback_cfg: dict[str, Any]) -> Spec | None:
    """`spec` with the guardian's update and rollback configuration; None if it has them already."""
    if spec.get("UpdateConfig") == update_cfg and spec.get("RollbackConfig") == rollback_cfg:
        return None
    spec = copy.deepcopy(spec)
    spec["UpdateConfig"], spec["RollbackConfig"] = update_cfg, rollback_cfg
    return spec


def with_image(spec: Spec, image: str, configs: tuple[dict[str, Any], dict[str, Any]], *,
               rollout: str | None = None, replaces: str | None = None) -> Spec:
    """`spec` (without a hold) running `image`, each task labelled with the image and its version, with
    the guardian's update and rollback configuration; when it `replaces` another image, the service is
    labelled with the `rollout` that changed it and that image (what a restarted guardian rolls back to)."""
    spec = unheld(spec)
    template = spec["TaskTemplate"]
    if replaces is not None:
        spec["Labels"] = {**spec.get("Labels", {}), ROLLOUT_LABEL: rollout, PREVIOUS_LABEL: replaces}
    container = template.setdefault("ContainerSpec", {})
    container["Image"] = image
    container["Labels"] = {**(container.get("Labels") or {}), IMAGE_LABEL: image, VERSION_LABEL: image_version(image)}
    spec["UpdateConfig"], spec["RollbackConfig"] = configs
    return spec


def rolled_back(spec: Spec, image: str, rollback_cfg: dict[str, Any], *, template: Spec | None = None) -> Spec:
    """`spec` (without a hold) back on the task `template` START replaced (its ForceUpdate kept), or, not
    knowing it, on `image` (relabelled, if the tasks carry the guardian's labels); updated with the
    rollback configuration."""
    spec = unheld(spec)
    if template is not None:
        template = copy.deepcopy(template)
        template["ForceUpdate"] = spec["TaskTemplate"].get("ForceUpdate", 0)
        spec["TaskTemplate"] = template
    else:
        container = spec["TaskTemplate"].setdefault("ContainerSpec", {})
        container["Image"] = image
        labels = container.get("Labels") or {}
        if IMAGE_LABEL in labels or VERSION_LABEL in labels:
            container["Labels"] = {**labels, IMAGE_LABEL: image, VERSION_LABEL: image_version(image)}
    spec["UpdateConfig"] = dict(rollback_cfg)
    return spec


def with_replicas(spec: Spec, replicas: int) -> Spec:
    spec = copy.deepcopy(spec)
    spec["Mode"] = {"Replicated": {"Replicas": replicas}}
    return spec
