"""A source around another (the batching sources): what it does not do itself is the wrapped source's.

Its attributes (url, safe_url, timeout …) are read through, and the capabilities every wrapped store has
(guardian/sources/__init__.py: Pinging, Closeable) are declared here, so that `isinstance` sees them."""
from __future__ import annotations

from typing import Any


class Wrapping:
    inner: Any

    def __getattr__(self, name: str) -> Any:
        if name == "inner":  # not set yet (e.g. while copying): no endless lookup
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"

    def ping(self) -> bool:
        return bool(self.inner.ping())

    def close(self) -> None:
        self.inner.close()
