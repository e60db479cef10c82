"""Files written whole: a reader sees the old content or the new one, never half of either."""
from __future__ import annotations

import os
import secrets
from pathlib import Path


def atomic_write(path: str | os.PathLike[str], data: str | bytes, *, mode: int | None = None) -> None:
    """Write `data` (text as UTF-8) to a temporary file beside `path`, flush it to the disk, and rename
    it over `path` (`os.replace`): readers see the old file or the new one, even after a crash. On a
    failure `path` keeps what it held and the temporary file is removed.

    The temporary name is `.NAME.RANDOM.tmp`: hidden and not ending in the file's own suffix, so a glob
    over the folder (nginx's `include dir/*.conf`, Prometheus' `*.json`) never picks it up, and two
    writers never share one. `mode`: the new file's permission bits; by default those `open` gives a
    new file (0o666 less the umask).
    """
    path = Path(path)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
