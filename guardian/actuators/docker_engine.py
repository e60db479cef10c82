"""What the actuators that talk to a Docker engine (docker, swarm) share."""
from __future__ import annotations

import docker
import requests

# API 1.41 (Docker Engine 20.10; newer engines speak it too) is pinned so that building an actuator never
# needs the daemon: an engine that is down is reported by the action that needed it, not at start-up
API_VERSION = "1.41"
ENGINE_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException)  # the SDK speaks requests
