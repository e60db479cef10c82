"""Image references as Swarm reports them, and the version that tells a rollout's arms apart."""
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
    """The tag of an image reference (`guardian-demo:v3` -> `v3`), or a short ID for an image ID."""
    ref = normalise_image(ref)
    if ref.startswith("sha256:"):
        return ref[7:19]
    return ref.rsplit(":", 1)[1]
