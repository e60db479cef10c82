"""nginx itself, the process: where its binary is, what it complains about, which workers it runs."""
from __future__ import annotations

import os
import re
import shutil

_LOG_PREFIX = re.compile(r"^(?:\d{4}/\d\d/\d\d \d\d:\d\d:\d\d |nginx: )?(?:\[(\w+)\] )?(?:\d+#\d+: )?")
_SERIOUS = ("emerg", "alert", "crit", "error")


def find_nginx(name: str = "nginx") -> str | None:
    """The nginx binary: `name` on PATH, else in /usr/sbin or /sbin (not on a non-root user's PATH)."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/local/sbin")


def nginx_messages(output: str) -> str:
    """nginx's own complaint from its stderr: the [emerg]/[alert]/[crit]/[error] lines, without
    timestamps and pids, joined by '; ' (all of the output if none is marked)."""
    found = []
    for line in output.splitlines():
        match = _LOG_PREFIX.match(line)
        level = match.group(1) if match else None
        if level in _SERIOUS:
            found.append(f"[{level}] {line[match.end():].strip()}")
    if found:
        return "; ".join(found)
    return " ".join(output.split())[:500] or "(no output)"


def children(pid: int) -> dict[int, str]:
    """pid -> command line of the live processes whose parent is `pid` (nginx's workers)."""
    found: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[1]) != pid or fields[0] == "Z":
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                found[int(entry)] = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, ValueError, IndexError):
            continue
    return found

