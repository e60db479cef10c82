"""PromQL templating: fill {{service}}, {{arm}}, {{arm_label}} and {{window}}, escaping label values."""
from __future__ import annotations

import re

PLACEHOLDERS = ("service", "arm", "arm_label", "window")
VALUE_PLACEHOLDERS = ("service", "arm")  # filled with escaped label values: only inside "double-quoted" strings
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


def unquoted_value_placeholders(template: str) -> list[str]:
    """The value placeholders ({{service}}, {{arm}}) that are not inside a double-quoted PromQL string.
    Escaping (backslash, quote, newline) only keeps a value inside a "..." string: outside quotes, in a
    '...' string (where an unescaped ' would end it) or a `raw` string (no escapes at all), a crafted
    service name or version could add matchers or whole expressions to the query."""
    quote_at: dict[int, str | None] = {}
    quote: str | None = None
    i, n = 0, len(template)
    starts = {m.start() for m in _PLACEHOLDER.finditer(template)}
    while i < n:
        if i in starts:
            quote_at[i] = quote
        c = template[i]
        if quote is None:
            if c in "\"'`":
                quote = c
            elif c == "#":  # a comment runs to the end of the line
                while i < n and template[i] != "\n":
                    i += 1
                continue
        elif c == "\\" and quote != "`":
            i += 1  # the escaped character cannot end the string
        elif c == quote:
            quote = None
        i += 1
    return [m.group(1) for m in _PLACEHOLDER.finditer(template)
            if m.group(1) in VALUE_PLACEHOLDERS and quote_at.get(m.start()) != '"']


def render(template: str, *, service: str, arm: str, arm_label: str = "track", window: float = 60) -> str:
    """Fill a template. Label values are escaped; the label *name* must be a valid identifier."""
    if not _LABEL_NAME.match(arm_label):
        raise ValueError(f"arm label {arm_label!r} is not a valid Prometheus label name")
    if bad := unquoted_value_placeholders(template):
        raise ValueError(f"{{{{{bad[0]}}}}} must be inside a double-quoted string, e.g. service=\"{{{{service}}}}\"")
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
