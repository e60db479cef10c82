# The guardian (and the demo app) as an image. No registry is reachable on the build machines of
# this project: build the base from the host's Python (see ../shared/ENVIRONMENT.md) and pass it:
#   docker build --build-arg BASE_IMAGE=local/python:3.11 -t release-guardian .
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
WORKDIR /app
COPY pyproject.toml README.md ./
COPY guardian ./guardian
COPY rules ./rules
RUN python3 -m pip install --no-cache-dir .
ENV GUARDIAN_HOST=0.0.0.0 GUARDIAN_DB_PATH=/data/guardian.db GUARDIAN_RECORDINGS_DIR=/data/recordings
EXPOSE 8080
ENTRYPOINT ["guardian"]
CMD ["serve", "--rules", "/app/rules"]
