# The guardian as an image — and the demo app `checkout` (same image, another command: `python -m demo.app`
# from /app; see docker-compose.yml). Runs as a non-root user (uid 10001), listens on 0.0.0.0:8080, which
# the guardian only accepts with a token: pass GUARDIAN_TOKEN or it refuses to start.
#
#   docker build -t release-guardian .                              # FROM python:3.11-slim, deps from PyPI
#   docker run -e GUARDIAN_TOKEN=... -p 127.0.0.1:8080:8080 release-guardian
#
# Offline builds (no container registry, no package index in the build): build the wheelhouse on the
# host and pass a local base image that has Python 3.11:
#
#   .venv/bin/python -m demo.stack_images              # deploy/wheels/ + guardian-stack-base:py311
#   docker build --build-arg BASE_IMAGE=guardian-stack-base:py311 -t release-guardian .
#
# Why a wheelhouse: deploy/wheels/ holds wheels of every dependency at the versions the host's .venv
# runs (`pip wheel`, made where PyPI is reachable), plus pip and setuptools themselves; when it holds
# any wheel, the build installs with `--no-index` from it and never touches the network. Copying the
# host's site-packages instead would drag in the editable install, the test tools and host paths.
# Without wheels the build is the ordinary online one. Either way the guardian lives in a venv,
# /opt/guardian, built in a first stage: the wheels never reach the final image.
# The base must be a Python 3.11 for the wheels' ABI (cp311), with `sh` for RUN.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
COPY deploy/wheels/ /wheels/
COPY pyproject.toml /src/
# Dependencies first, from pyproject.toml: a change to the code alone does not reinstall them.
# Offline, pip runs from its own wheel (`python pip.whl/pip`): the venv is made without ensurepip,
# which minimal bases lack.
RUN set -eu; \
    python3 -c "import tomllib; print('\n'.join(tomllib.load(open('/src/pyproject.toml', 'rb'))['project']['dependencies']))" > /src/requirements.txt; \
    set -- /wheels/*.whl; \
    if [ -e "$1" ]; then \
        python3 -m venv --without-pip /opt/guardian; \
        for w in /wheels/pip-*.whl; do pip_wheel="$w"; done; \
        /opt/guardian/bin/python "$pip_wheel/pip" install --no-index --find-links /wheels pip -r /src/requirements.txt; \
    else \
        python3 -m venv /opt/guardian; \
        /opt/guardian/bin/python -m pip install -r /src/requirements.txt; \
    fi
COPY guardian /src/guardian
RUN set -eu; \
    set -- /wheels/*.whl; \
    if [ -e "$1" ]; then offline="--no-index --find-links /wheels"; else offline=""; fi; \
    /opt/guardian/bin/python -m pip install $offline /src

FROM ${BASE_IMAGE}
COPY --from=build /opt/guardian /opt/guardian
COPY rules /app/rules
# The demo service (one stdlib + prometheus_client file): not part of the installed package.
COPY demo/__init__.py demo/app.py /app/demo/
COPY deploy/healthcheck.py /app/healthcheck.py
# The user, written by Python rather than useradd: the offline bases have no shadow tools (nor a
# world-writable /tmp).
RUN python3 -c "import os; \
open('/etc/passwd', 'a').write('guardian:x:10001:10001:release guardian:/data:/sbin/nologin\n'); \
open('/etc/group', 'a').write('guardian:x:10001:\n'); \
os.makedirs('/data', exist_ok=True); os.chown('/data', 10001, 10001); \
os.makedirs('/tmp', exist_ok=True); os.chmod('/tmp', 0o1777)"
ENV PATH=/opt/guardian/bin:$PATH \
    HOME=/data \
    MPLCONFIGDIR=/tmp/matplotlib \
    GUARDIAN_HOST=0.0.0.0 \
    GUARDIAN_PORT=8080 \
    GUARDIAN_RULES='["/app/rules"]' \
    GUARDIAN_DB_PATH=/data/guardian.db \
    GUARDIAN_RECORDINGS_DIR=/data/recordings \
    GUARDIAN_MODELS_DIR=/data/models
USER 10001:10001
WORKDIR /data
EXPOSE 8080
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=5s --timeout=3s --start-period=20s --retries=3 CMD ["python", "/app/healthcheck.py"]
ENTRYPOINT ["guardian"]
CMD ["serve"]
