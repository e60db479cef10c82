"""Container healthcheck for the guardian image: exit 0 if URL answers 2xx within 2 s, else 1.

    python /app/healthcheck.py [URL]     (default http://127.0.0.1:$GUARDIAN_PORT/healthz, port 8080)

Stdlib only (the slim and the offline base images have neither curl nor wget in common), and no
proxy: a proxy set in the container's environment must not decide whether it is healthy.
"""
from __future__ import annotations

import os
import sys
import urllib.request


def main(argv: list[str]) -> int:
    url = argv[1] if len(argv) > 1 else f"http://127.0.0.1:{os.environ.get('GUARDIAN_PORT', '8080')}/healthz"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2) as response:
            if 200 <= response.status < 300:
                return 0
            print(f"unhealthy: {url} answered {response.status}", file=sys.stderr)
    except Exception as exc:  # noqa: BLE001 - any failure is "unhealthy", with the reason
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
