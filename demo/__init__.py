"""The demo: a service to guard, its load, its images, and the stacks that run it. Not part of the installed
package (pyproject.toml installs `guardian` only): run it from the repository, as `bash scripts/demo.sh` does
(`python -m demo.run`); the tests and the benchmarks import it from there too.

app.py          a tiny HTTP service whose error ratio and latency can be changed live (stdlib + prometheus_client)
loadgen.py      traffic to it, split between a baseline and a canary by weights a webhook actuator can steer
images.py       guardian-demo:v1|v2|v3 built locally from the host's Python (nothing pulled)
stack_images.py what docker-compose.yml needs offline: a wheelhouse, a base image, stand-ins
stack.py        real servers on free loopback ports: DemoApp, PrometheusServer, GuardianServer
nginx.py        NginxServer
dockerstack.py  DockerStack (containers behind nginx), GuardedStack (that + Prometheus + load + the guardian)
run.py          the demo itself, on a GuardedStack
"""
