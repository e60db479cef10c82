"""Build the demo's Docker images locally — no registry is reachable, nothing is pulled.

    python -m demo.images            # guardian-base:py311, guardian-demo:v1|v2|v3|v4 (if missing)
    python -m demo.images --force    # rebuild them

`guardian-base:py311` is made from the host's own Python (Debian's /usr/bin/python3.11, its standard
library, the shared libraries `ldd` lists for it and its extension modules) plus busybox for `sh`
and `wget` (the healthcheck), imported with `docker import` (the SDK's `import_image_from_data`).
The demo images are built `FROM` it with the demo app (demo/app.py) and prometheus_client:

    v1  healthy
    v2  answers 5xx on 20% of requests (the bad release the demo rolls back)
    v3  healthy, the new feature release (its answers say v3)
    v4  healthy at first, then degrades by itself: each container answers 5xx to 10% of requests from
        90 s after it started (passes its canary steps, goes bad in its bake: the demo rolls it back)

Each image has a HEALTHCHECK on /healthz every second, listens on 8000, and stops at once on SIGTERM.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import docker
import prometheus_client

BASE = "guardian-base:py311"
DEMO = "guardian-demo"
VERSIONS = {"v1": 0.0, "v2": 0.2, "v3": 0.0, "v4": 0.0}  # version -> error ratio baked into the image
V4_FAIL_AFTER, V4_FAIL_RATIO = 90, 0.1  # v4 degrades by itself: 5xx on 10% of requests from 90 s after it started
EXTRA_ARGS = {"v4": ["--fail-after", str(V4_FAIL_AFTER), "--fail-ratio", str(V4_FAIL_RATIO)]}
HOST_PYTHON = Path("/usr/bin/python3.11")
STDLIB = Path("/usr/lib/python3.11")
BUSYBOX = Path("/bin/busybox")
_SKIP = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "pydoc_data"}

DOCKERFILE = """\
FROM {base}
COPY prometheus_client /usr/lib/python3.11/prometheus_client
COPY app.py /app/app.py
ENV DEMO_VERSION={version} DEMO_ERROR_RATIO={error_ratio}
EXPOSE 8000
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=1s --timeout=2s --start-period=1s --retries=3 \\
  CMD ["/bin/wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8000/healthz"]
ENTRYPOINT ["/usr/bin/python3", "/app/app.py", "--host", "0.0.0.0", "--port", "8000"]
CMD ["--version", "{version}", "--error-ratio", "{error_ratio}"{extra}]
"""


def dockerfile(version: str) -> str:
    extra = "".join(f', "{arg}"' for arg in EXTRA_ARGS.get(version, []))
    return DOCKERFILE.format(base=BASE, version=version, error_ratio=VERSIONS[version], extra=extra)


def _libraries(binaries: list[Path]) -> set[Path]:
    """Every shared library `ldd` lists for the binaries (with the dynamic loader)."""
    libs: set[Path] = set()
    for b in binaries:
        out = subprocess.run(["ldd", str(b)], capture_output=True, text=True, check=False).stdout
        for m in re.finditer(r"(/\S+\.so[.\d]*)", out):
            libs.add(Path(m.group(1)))
    return libs


def _copy(src: Path, root: Path) -> None:
    dest = root / src.relative_to("/")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src.resolve(), dest)


def base_rootfs(root: Path) -> None:
    """Lay out the base image's files under `root`."""
    if not HOST_PYTHON.exists() or not BUSYBOX.exists():
        raise RuntimeError(f"need {HOST_PYTHON} (Debian's python3.11) and {BUSYBOX} (Debian's busybox-static)")
    shutil.copytree(STDLIB, root / "usr/lib/python3.11", symlinks=True,
                    ignore=lambda d, names: [n for n in names if n in _SKIP and Path(d) == STDLIB])
    _copy(HOST_PYTHON, root)
    os.symlink("python3.11", root / "usr/bin/python3")
    extensions = list((STDLIB / "lib-dynload").glob("*.so"))
    for lib in _libraries([HOST_PYTHON, *extensions]):
        _copy(lib, root)
    (root / "bin").mkdir(exist_ok=True)
    shutil.copy2(BUSYBOX, root / "bin/busybox")
    for tool in ("sh", "wget", "sleep", "cat", "ls", "kill"):
        os.symlink("busybox", root / "bin" / tool)
    for d in ("tmp", "etc", "app"):
        (root / d).mkdir(exist_ok=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n")
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n")


def build_base(client: docker.DockerClient) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "rootfs"
        root.mkdir()
        base_rootfs(root)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            tar.add(root, arcname=".")
        repo, tag = BASE.split(":")
        client.api.import_image_from_data(buf.getvalue(), repository=repo, tag=tag)


def build_demo(client: docker.DockerClient, version: str) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        text = dockerfile(version).encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(text)
        tar.addfile(info, io.BytesIO(text))
        tar.add(Path(__file__).with_name("app.py"), arcname="app.py")
        pkg = Path(prometheus_client.__file__).parent
        tar.add(pkg, arcname="prometheus_client", filter=lambda ti: None if "__pycache__" in ti.name else ti)
    buf.seek(0)
    client.images.build(fileobj=buf, custom_context=True, tag=f"{DEMO}:{version}", rm=True, forcerm=True,
                        labels={"org.opencontainers.image.version": version, HASH_LABEL: _source_hash(version)})


HASH_LABEL = "guardian.demo.source"  # the image label (a name, not a module)


def _source_hash(version: str) -> str:
    """What a demo image is built from (the app's code, its Dockerfile): a change means a rebuild."""
    h = hashlib.sha256(Path(__file__).with_name("app.py").read_bytes())
    h.update(dockerfile(version).encode())
    return h.hexdigest()[:16]


def _exists(client: docker.DockerClient, name: str, source: str | None = None) -> bool:
    """The image exists (and, given `source`, was built from that source)."""
    try:
        image = client.images.get(name)
    except docker.errors.ImageNotFound:
        return False
    return source is None or (image.labels or {}).get(HASH_LABEL) == source


def ensure_images(client: docker.DockerClient | None = None, *, force: bool = False, log=print) -> list[str]:
    """Build whatever of the base and demo images is missing (all with `force`); returns their names."""
    client = client or docker.from_env()
    if force or not _exists(client, BASE):
        log(f"building {BASE} from the host's Python")
        build_base(client)
    for version in VERSIONS:
        name = f"{DEMO}:{version}"
        if force or not _exists(client, name, _source_hash(version)):
            log(f"building {name}")
            build_demo(client, version)
    return [BASE, *(f"{DEMO}:{v}" for v in VERSIONS)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rebuild even if the images exist")
    args = parser.parse_args(argv)
    try:
        names = ensure_images(force=args.force)
    except docker.errors.DockerException as e:
        print(f"error: cannot build the images: {e}", file=sys.stderr)
        return 2
    print("images: " + ", ".join(names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
