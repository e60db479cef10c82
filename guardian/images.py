"""Image references: their normal form, and the version that tells a rollout's arms apart.

A fact about image references, not about any runtime: the engine fills a rule file's `{version}` and
`{previous_version}` with it, alerts are matched on it (their `version` label), Grafana tags annotations
with it, and the swarm actuator labels the tasks it deploys with it. Pure: no I/O.
"""
from __future__ import annotations


def normalise_image(ref: str) -> str:
    """`docker.io/library/x:1@sha256:..` -> `x:1`; `x` -> `x:latest`; an image ID stays as it is."""
    if ref.startswith("sha256:"):
        return ref
    ref = ref.split("@", 1)[0]
    for prefix in ("docker.io/library/", "index.docker.io/library/", "docker.io/", "library/"):
        if ref.startswith(prefix):
            ref = ref[len(prefix):]
            break
    if ":" not in ref.rsplit("/", 1)[-1]:
        ref += ":latest"
    return ref


def image_version(ref: str) -> str:
    """The tag of an image reference (`registry:5000/app:v3@sha256:..` -> `v3`; no tag -> `latest`), or the
    short ID (12 hex digits) of an image ID."""
    ref = normalise_image(ref)
    if ref.startswith("sha256:"):
        return ref[7:19]
    return ref.rsplit(":", 1)[1]
