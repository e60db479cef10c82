"""Target URIs: `NAME`, `NAME:REST` or `NAME+REST`. The name picks the actuator; the rest is its own."""
from __future__ import annotations

import re

_SEPARATOR = re.compile(r"[+:]")


def parse_target(uri: str) -> tuple[str, str]:
    """Split a target at its first `+` or `:`.

    `webhook+http://h/p` -> ("webhook", "http://h/p"); `noop://x` -> ("noop", "//x"); `noop` -> ("noop", "").
    """
    text = uri.strip()
    match = _SEPARATOR.search(text)
    if match is None:
        return text.lower(), ""
    return text[: match.start()].lower(), text[match.end():]


def target_body(rest: str) -> str:
    """The rest of a target without the `//` of its URL-style spelling: `swarm://web` names what
    `swarm:web` does, `nginx:///etc/app.conf` the file `nginx:/etc/app.conf` does."""
    return rest[2:] if rest.startswith("//") else rest
