"""PromQL templating: fill {{service}}, {{arm}}, {{arm_label}} and {{window}}, escaping label values."""
from __future__ import annotations

import re

PLACEHOLDERS = ("service", "arm", "arm_label", "window")
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def escape_label_value(value: str) -> str:
    """Escape a value for use inside a double-quoted PromQL string (backslash, quote, newline)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_duration(seconds: float) -> str:
    """A PromQL duration: 2 -> '2s', 0.5 -> '500ms', 120 -> '120s'."""
    ms = int(round(seconds * 1000))
    if ms <= 0:
        raise ValueError(f"window must be positive, got {seconds}")
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def unknown_placeholders(template: str) -> list[str]:
    return [m.group(1) for m in _PLACEHOLDER.finditer(template) if m.group(1) not in PLACEHOLDERS]


def render(template: str, *, service: str, arm: str, arm_label: str = "track", window: float = 60) -> str:
    """Fill a template. Label values are escaped; the label *name* must be a valid identifier."""
    if not _LABEL_NAME.match(arm_label):
        raise ValueError(f"arm label {arm_label!r} is not a valid Prometheus label name")
    values = {
        "service": escape_label_value(service),
        "arm": escape_label_value(arm),
        "arm_label": arm_label,
        "window": format_duration(window),
    }

    def fill(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in values:
            raise ValueError(f"unknown placeholder {{{{{name}}}}}; known: {', '.join(PLACEHOLDERS)}")
        return values[name]

    return _PLACEHOLDER.sub(fill, template)
