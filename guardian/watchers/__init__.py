"""Watchers start observe rollouts by themselves for changes someone else made, through the same door as
`POST /v1/rollouts` (`start_spec`, then `Guard.start`). base.py: what every watcher does (start a change's
rollout once, the loop, problems logged without flooding) · swarm.py: `docker service update`s of labelled
Swarm services · kubernetes.py: new revisions of annotated Deployments (a deleted one ends its rollout).

They stand above the engine and read through the actuators' public pieces (the swarm actuator's
`detect_update`, the kubernetes actuator's `list_deployments` and `detect` over a KubeConnection); neither
the engine nor the actuators know them. The API's lifespan runs them (`watch_swarm`, `watch_kubernetes`).
"""
