"""What Swarm reports about a service: its tasks (TaskInfo), one look at it (Snapshot), its rolling
update (UpdateInfo, from `update_info`). Pure: the client reads, these only interpret."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from guardian.actuators.swarm.spec import PREVIOUS_LABEL, ROLLOUT_LABEL, image_of, is_held
from guardian.images import normalise_image

IN_PROGRESS = frozenset({"updating", "rollback_started"})
SWARM_PAUSED = frozenset({"paused", "rollback_paused"})
FAILED_STATES = frozenset({"failed", "rejected", "orphaned"})


@dataclass(frozen=True)
class TaskInfo:
    """One Swarm task, as `docker service ps` shows it."""

    id: str
    slot: int | None
    node_id: str
    node: str  # the node's hostname ('' if unknown)
    image: str  # the image its template names (normalised: no digest, no docker.io/library/)
    version: str  # its `guardian.version` container label, else the image's tag
    state: str  # running, starting, pending, failed, rejected, shutdown, complete, ...
    desired_state: str
    error: str  # Swarm's Status.Err ('' if none)
    message: str
    container_id: str
    created_at: str

    @property
    def serving(self) -> bool:
        """Running and meant to keep running (not being shut down by the update)."""
        return self.state == "running" and self.desired_state == "running"


@dataclass(frozen=True)
class UpdateInfo:
    """A service's rolling update as Swarm reports it, with the running tasks per image.

    `new_image` is what the spec now asks for (during a rollback: the image rolled back *to*);
    `old_image` the one it replaces: the image other tasks still run, else the one START replaced,
    else Swarm's PreviousSpec image (during a rollback: the image rolled back *from*)."""

    service: str
    service_id: str
    state: str  # updating, paused, completed, rollback_started, rollback_paused, rollback_completed
    message: str
    old_image: str | None
    new_image: str
    running: dict[str, int]  # image -> tasks running (and meant to), new and old
    replicas: int | None  # desired (None for a global service)
    started_at: str | None = None
    completed_at: str | None = None
    held: bool = False  # held by the guardian's PAUSE (Swarm itself still says "updating")
    rollout: str | None = None  # the service's `guardian.rollout` label: the rollout that last started an update

    @property
    def in_progress(self) -> bool:
        return self.state in IN_PROGRESS and not self.held

    @property
    def paused(self) -> bool:
        return self.held or self.state in SWARM_PAUSED

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "in_progress": self.in_progress, "paused": self.paused}


def _when(stamp: str | None) -> datetime | None:
    if not stamp:
        return None
    try:
        return datetime.fromisoformat(stamp)
    except ValueError:
        return None


@dataclass
class Snapshot:
    """One look at a service and its tasks."""

    service: dict[str, Any]
    tasks: list[TaskInfo]

    @property
    def spec(self) -> dict[str, Any]:
        return self.service["Spec"]

    @property
    def name(self) -> str:
        return self.spec["Name"]

    @property
    def state(self) -> str | None:
        return (self.service.get("UpdateStatus") or {}).get("State")

    @property
    def message(self) -> str:
        return (self.service.get("UpdateStatus") or {}).get("Message") or ""

    @property
    def image(self) -> str:
        return image_of(self.spec) or ""

    @property
    def previous_image(self) -> str | None:
        return image_of(self.service.get("PreviousSpec"))

    @property
    def replicas(self) -> int | None:
        replicated = (self.spec.get("Mode") or {}).get("Replicated")
        return None if replicated is None else int(replicated.get("Replicas") or 0)

    @property
    def held(self) -> bool:
        return is_held(self.spec)

    @property
    def labels(self) -> dict[str, str]:
        return self.spec.get("Labels") or {}

    def running(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for t in self.tasks:
            if t.serving:
                counts[t.image] = counts.get(t.image, 0) + 1
        return dict(sorted(counts.items()))

    def serving(self, image: str | None = None) -> int:
        return sum(1 for t in self.tasks if t.serving and (image is None or t.image == image))

    def converged_on(self, image: str) -> bool:
        """Every running task is on `image`, as many as the replicas (any number for a global service)."""
        running = self.running()
        if set(running) != {image}:
            return self.replicas == 0 and not running
        return self.replicas is None or running[image] == self.replicas

    def failures(self, image: str, since: str | None = None) -> list[TaskInfo]:
        """The tasks of `image` that failed or ended by themselves (since the update started), newest
        first. A service's task is meant to run for ever: one that completed ended early."""
        start = _when(since)
        found = []
        for t in self.tasks:
            if t.image != image:
                continue
            failed = t.state in FAILED_STATES or t.state == "complete" or (t.state == "shutdown" and t.error)
            created = _when(t.created_at)
            if failed and (start is None or created is None or created >= start):
                found.append(t)
        return sorted(found, key=lambda t: t.created_at, reverse=True)

    def pending(self) -> list[str]:
        return [f"task {t.id[:12]} {t.state}: {t.error or t.message}" for t in self.tasks
                if t.desired_state == "running" and t.state in ("pending", "assigned", "preparing") and t.error]

def update_info(snap: Snapshot) -> UpdateInfo | None:
    """The service's update as Swarm reports it, or None if Swarm has none to report (the service was
    created, or last changed without replacing tasks) and all its tasks run the spec's image."""
    status = snap.service.get("UpdateStatus") or {}
    running = snap.running()
    state = status.get("State")
    if state is None:
        if set(running) <= {snap.image}:
            return None
        state = "updating"  # a spec was just posted: Swarm has not started its updater yet
    others = {image: n for image, n in running.items() if image != snap.image}
    if others:  # the image being replaced is the one still running
        old_image: str | None = max(others, key=lambda image: others[image])
    elif snap.labels.get(PREVIOUS_LABEL):  # START's (PreviousSpec is newer after a PAUSE or SCALE)
        old_image = normalise_image(snap.labels[PREVIOUS_LABEL])
    else:
        old_image = snap.previous_image
    return UpdateInfo(
        service=snap.name, service_id=snap.service["ID"], state=state, message=status.get("Message", ""),
        old_image=old_image, new_image=snap.image, running=running, replicas=snap.replicas,
        started_at=status.get("StartedAt"), completed_at=status.get("CompletedAt"), held=snap.held,
        rollout=snap.labels.get(ROLLOUT_LABEL),
    )
