"""Build what docker-compose.yml needs on a machine where no container registry is reachable.

    python -m demo.stack_images              # the wheelhouse, the offline base, the stand-ins
    python -m demo.stack_images --force      # rebuild them

- `deploy/wheels/`: wheels of the guardian's dependencies at the versions this environment runs
  (`pip wheel`, run on the host, where the package index is reachable), with pip and setuptools.
  The Dockerfile installs from it with `--no-index` whenever it holds a wheel.
- `guardian-stack-base:py311`: `guardian-base:py311` (demo/images.py: the host's own
  Python 3.11 and busybox) plus the shared libraries the dependencies' compiled extensions load
  beyond the interpreter's (libstdc++, libgcc_s, ...): the Dockerfile's BASE_IMAGE offline.
- Stand-ins for official images that cannot be pulled here, made from Debian's binaries in the
  official images' layout, so that the compose file's own commands, mounts and healthchecks run
  unchanged: `guardian-standin/prometheus` (/bin/prometheus, user nobody, /prometheus),
  `guardian-standin/alertmanager` (/bin/alertmanager, user nobody, /alertmanager) and
  `guardian-standin/nginx` (nginx reading /etc/nginx/conf.d/*.conf), each with busybox `sh` and
  `wget` like the official ones. They run Debian's versions (Prometheus 2.42, Alertmanager 0.25 —
  the tags docker-compose.yml pins — and nginx 1.22). Grafana has none: it is not packaged here.

Every image carries a label with the hash of what it was built from; a change means a rebuild.
"""
from __future__ import annotations

import argparse
import fcntl
import hashlib
import io
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import docker

from demo import images

REPO = Path(__file__).resolve().parents[1]
WHEELS = REPO / "deploy" / "wheels"
STACK_BASE = "guardian-stack-base:py311"
STANDINS = {
    "prometheus": "guardian-standin/prometheus:2.42",
    "alertmanager": "guardian-standin/alertmanager:0.25",
    "nginx": "guardian-standin/nginx:1.22",
}
HASH_LABEL = "guardian.stack.source"
AM_TEMPLATES = Path("/usr/share/prometheus/alertmanager")
_TOOLS = {"pip", "setuptools", "wheel"}

_NOBODY_DIR = ('RUN ["/usr/bin/python3", "-c", "import os, sys\\nfor d in sys.argv[1:]:\\n'
               '    os.makedirs(d, exist_ok=True); os.chown(d, 65534, 65534)", {dirs}]')

PROMETHEUS_DOCKERFILE = f"""\
FROM {images.BASE}
COPY prometheus /bin/prometheus
{_NOBODY_DIR.format(dirs='"/prometheus", "/etc/prometheus"')}
USER 65534
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT ["/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
"""

ALERTMANAGER_DOCKERFILE = f"""\
FROM {images.BASE}
COPY alertmanager /bin/alertmanager
COPY templates/ /usr/share/prometheus/alertmanager/
{_NOBODY_DIR.format(dirs='"/alertmanager", "/etc/alertmanager"')}
USER 65534
WORKDIR /alertmanager
EXPOSE 9093
ENTRYPOINT ["/bin/alertmanager"]
CMD ["--config.file=/etc/alertmanager/alertmanager.yml", "--storage.path=/alertmanager"]
"""

NGINX_DOCKERFILE = f"""\
FROM {images.BASE}
COPY rootfs/ /
RUN ["/usr/bin/python3", "-c", "import os\\nfor d in ('/etc/nginx/conf.d', '/var/lib/nginx', '/var/log/nginx', \
'/run'):\\n    os.makedirs(d, exist_ok=True)\\nopen('/etc/group', 'a').write('nogroup:x:65534:\\\\n')"]
EXPOSE 80
STOPSIGNAL SIGQUIT
CMD ["/usr/sbin/nginx", "-g", "daemon off;"]
"""

# The official image's main configuration, reduced: every server comes from conf.d/*.conf.
NGINX_MAIN_CONF = """\
user nobody nogroup;
worker_processes 1;
error_log stderr notice;
pid /run/nginx.pid;
events { worker_connections 1024; }
http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log off;
    include /etc/nginx/conf.d/*.conf;
}
"""

LIBS_DOCKERFILE = f"""\
FROM {images.BASE}
COPY rootfs/ /
"""


# -- the wheelhouse ---------------------------------------------------------------------------------
def requirements() -> list[str]:
    """The guardian's runtime dependencies, as pyproject.toml lists them."""
    return list(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"])


def constraints(python: str = sys.executable) -> list[str]:
    """`name==version` of every distribution this environment runs (not the project, not pip's tools):
    the wheelhouse holds what the tests here run against."""
    out = subprocess.run([python, "-m", "pip", "freeze", "--exclude-editable"], capture_output=True, text=True,
                         check=True).stdout
    pins = []
    for line in out.splitlines():
        name = line.split("==")[0].strip().lower()
        if "==" in line and name not in _TOOLS and name != "release-guardian":
            pins.append(line.strip())
    return sorted(pins)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One builder at a time (test workers may start together)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_wheelhouse(*, force: bool = False, python: str = sys.executable, log: Callable[[str], None] = print,
                      wheels: Path = WHEELS) -> str:
    """Fill `wheels` unless it already holds exactly this environment's pins; returns their hash."""
    reqs, pins = requirements(), constraints(python)
    digest = hashlib.sha256("\n".join([*reqs, "--", *pins]).encode()).hexdigest()[:16]
    stamp = wheels / ".stamp"
    with _locked(wheels / ".lock"):
        if not force and stamp.exists() and stamp.read_text().strip() == digest and any(wheels.glob("pip-*.whl")):
            return digest
        log(f"building the wheelhouse {wheels} (pip wheel, {len(reqs)} requirements)")
        for old in wheels.glob("*.whl"):
            old.unlink()
        stamp.unlink(missing_ok=True)
        pinned = wheels / ".constraints.txt"
        pinned.write_text("\n".join(pins) + "\n")
        run = subprocess.run(
            [python, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", "--wheel-dir", str(wheels),
             "--constraint", str(pinned), *reqs, "setuptools>=68", "wheel", "pip"],
            capture_output=True, text=True, check=False)
        if run.returncode != 0:
            raise RuntimeError(f"pip wheel failed (is the package index reachable from the host?):\n"
                               f"{run.stdout[-2000:]}{run.stderr[-2000:]}")
        stamp.write_text(digest + "\n")
    return digest


# -- images -----------------------------------------------------------------------------------------
def _libraries(binaries: list[Path]) -> set[Path]:
    """The shared libraries `ldd` resolves for the binaries, outside the binaries' own folders."""
    libs: set[Path] = set()
    for b in binaries:
        out = subprocess.run(["ldd", str(b)], capture_output=True, text=True, check=False).stdout
        for m in re.finditer(r"=>\s+(/\S+)|^\s+(/\S+)\s+\(", out, re.MULTILINE):
            lib = Path(m.group(1) or m.group(2))
            if "site-packages" not in lib.parts and lib.exists():
                libs.add(lib)
    return libs


def _add_file(tar: tarfile.TarFile, src: Path, arcname: str) -> None:
    tar.add(src.resolve(), arcname=arcname)


def _add_text(tar: tarfile.TarFile, arcname: str, text: str) -> None:
    data = text.encode()
    info = tarfile.TarInfo(arcname)
    info.size, info.mode = len(data), 0o644
    tar.addfile(info, io.BytesIO(data))


def _image_hash(client: docker.DockerClient, name: str) -> str | None:
    try:
        return (client.images.get(name).labels or {}).get(HASH_LABEL)
    except docker.errors.ImageNotFound:
        return None


def _build(client: docker.DockerClient, name: str, dockerfile: str, files: dict[str, Path], source: str,
           texts: dict[str, str] | None = None) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        _add_text(tar, "Dockerfile", dockerfile)
        for arcname, src in sorted(files.items()):
            _add_file(tar, src, arcname)
        for arcname, text in sorted((texts or {}).items()):
            _add_text(tar, arcname, text)
    buf.seek(0)
    client.images.build(fileobj=buf, custom_context=True, tag=name, rm=True, forcerm=True,
                        labels={HASH_LABEL: source})


def _hash(*parts: object) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(repr(part).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def _binary_id(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return (str(path), st.st_size, int(st.st_mtime))


def ensure_base(client: docker.DockerClient, log: Callable[[str], None] = print) -> None:
    """guardian-base:py311 (demo/images.py), if missing."""
    try:
        client.images.get(images.BASE)
    except docker.errors.ImageNotFound:
        log(f"building {images.BASE} from the host's Python")
        images.build_base(client)


def ensure_stack_base(client: docker.DockerClient, *, wheel_digest: str, force: bool = False,
                      log: Callable[[str], None] = print) -> str:
    """guardian-stack-base:py311: the base plus the libraries the dependencies' extensions need."""
    ensure_base(client, log)
    base_id = client.images.get(images.BASE).id
    source = _hash(LIBS_DOCKERFILE, base_id, wheel_digest)
    if force or _image_hash(client, STACK_BASE) != source:
        site = Path(sysconfig.get_paths()["platlib"])
        extensions = [p for p in site.rglob("*.so*") if p.is_file()]
        libs = _libraries(extensions)
        log(f"building {STACK_BASE} ({len(libs)} shared libraries for {len(extensions)} extension modules)")
        _build(client, STACK_BASE, LIBS_DOCKERFILE, {f"rootfs{lib}": lib for lib in libs}, source)
    return STACK_BASE


def _which(*names: str) -> Path:
    for name in names:
        if path := shutil.which(name):
            return Path(path)
    raise RuntimeError(f"{' or '.join(names)} is not installed (scripts/setup.sh installs Debian's packages)")


def ensure_standins(client: docker.DockerClient, *, force: bool = False,
                    log: Callable[[str], None] = print) -> dict[str, str]:
    """The stand-ins for prom/prometheus, prom/alertmanager and nginx: {compose service: image}."""
    ensure_base(client, log)
    base_id = client.images.get(images.BASE).id
    prometheus = _which("prometheus")
    alertmanager = _which("prometheus-alertmanager", "alertmanager")
    nginx = Path("/usr/sbin/nginx") if Path("/usr/sbin/nginx").exists() else _which("nginx")
    mime = Path("/etc/nginx/mime.types")
    specs: dict[str, tuple[str, dict[str, Path], dict[str, str]]] = {
        "prometheus": (PROMETHEUS_DOCKERFILE, {"prometheus": prometheus}, {}),
        # Debian's Alertmanager reads its default notification templates from a file
        "alertmanager": (ALERTMANAGER_DOCKERFILE,
                         {"alertmanager": alertmanager,
                          **{f"templates/{t.name}": t for t in sorted(AM_TEMPLATES.glob("*.tmpl"))}}, {}),
        "nginx": (NGINX_DOCKERFILE,
                  {"rootfs/usr/sbin/nginx": nginx, "rootfs/etc/nginx/mime.types": mime,
                   **{f"rootfs{lib}": lib for lib in _libraries([nginx])}},
                  {"rootfs/etc/nginx/nginx.conf": NGINX_MAIN_CONF}),
    }
    for service, (dockerfile, files, texts) in specs.items():
        name = STANDINS[service]
        source = _hash(dockerfile, base_id, sorted(_binary_id(p) for p in files.values()), texts)
        if force or _image_hash(client, name) != source:
            log(f"building {name} (stand-in for the official {service} image)")
            _build(client, name, dockerfile, files, source, texts)
    return dict(STANDINS)


def ensure_all(client: docker.DockerClient | None = None, *, force: bool = False,
               log: Callable[[str], None] = print) -> dict[str, str]:
    """Wheelhouse, offline base and stand-ins; returns {what: image}."""
    client = client or docker.from_env()
    digest = ensure_wheelhouse(force=force, log=log)
    with _locked(REPO / "var" / "stack-images.lock"):
        base = ensure_stack_base(client, wheel_digest=digest, force=force, log=log)
        return {"base": base, **ensure_standins(client, force=force, log=log)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rebuild even if they are up to date")
    args = parser.parse_args(argv)
    try:
        built = ensure_all(force=args.force)
    except (docker.errors.DockerException, RuntimeError, subprocess.CalledProcessError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wheelhouse: {WHEELS}")
    for what, image in built.items():
        print(f"{what}: {image}")
    print("build the guardian offline: docker build --build-arg BASE_IMAGE=" + built["base"] + " .")
    return 0


if __name__ == "__main__":
    sys.exit(main())
