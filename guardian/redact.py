"""Keep secrets out of everything the guardian writes: log records, recordings, Grafana annotations
and webhook payloads.

Three rules, applied to text and (recursively) to JSON-like documents:

- **known secrets**: every value registered with `register` (the settings' tokens and passwords, see
  `register_settings`) is replaced by `***` wherever it appears in text;
- **credentials in URLs**: `scheme://user:pass@host` becomes `scheme://user:***@host`
  (`scheme://token@host` becomes `scheme://***@host`), and `Bearer X` / `Basic X` become `Bearer ***`;
- **sensitive keys**: in a mapping, the string value of a key such as `Authorization`, `token`,
  `password`, `secret`, `api_key`, `cookie` or `*_token` / `*_password` / `*_secret` is replaced by `***`
  (numbers and nested documents under such keys are walked, not blanked).

`install_log_redaction` sets a loguru patcher so that every log record (message and `extra`) is redacted
before any sink sees it; `redacting_sink` wraps a sink for the rest (tracebacks)."""
from __future__ import annotations

import base64
import re
import sys
import threading
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

MASK = "***"
MIN_SECRET_CHARS = 6  # shorter literals are not scrubbed from text (they would mangle ordinary words)

_URL_CREDENTIALS = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^\s:/?#@\"'<>]*)"
                              r"(?::(?P<password>[^\s/?#\"'<>]*))?@")
_AUTH_SCHEME = re.compile(r"\b(?P<scheme>Bearer|Basic) +(?P<credentials>[A-Za-z0-9._~+/=\-]{8,})")
_SENSITIVE_KEY = re.compile(
    r"^(?:proxy[-_]?)?authorization$|^(?:set[-_]?)?cookie$|^pass(?:word|wd)?$|^secret$|^token$|^api[-_]?key$"
    r"|^credentials?$|[-_](?:token|password|passwd|secret|api[-_]?key)$",
    re.IGNORECASE)

_lock = threading.Lock()
_secrets: tuple[str, ...] = ()  # longest first


def register(*values: str | None) -> None:
    """Remember literal secrets to scrub from text (too short or empty ones are ignored)."""
    global _secrets
    fresh = {v for v in values if isinstance(v, str) and len(v) >= MIN_SECRET_CHARS}
    if not fresh - set(_secrets):
        return
    with _lock:
        _secrets = tuple(sorted(set(_secrets) | fresh, key=len, reverse=True))


def registered() -> tuple[str, ...]:
    return _secrets


def secrets_of(value: str) -> list[str]:
    """The literal forms a secret may take in text: itself; for 'user:password' also the password and
    the basic-auth header value; for a URL with credentials its password (plain and percent-decoded)."""
    out = [value]
    parts = urlsplit(value) if "://" in value else None
    if parts is not None and (parts.password or parts.username):
        if parts.password:
            out += [parts.password, unquote(parts.password)]
        elif parts.username:  # scheme://token@host
            out += [parts.username, unquote(parts.username)]
        return out
    user, colon, password = value.partition(":")
    if colon:
        out += [password, base64.b64encode(value.encode()).decode()]
    return out


def register_settings(settings: Any) -> None:
    """Register every secret the settings hold: each SecretStr field (tokens, basic auth) and the
    passwords of URLs with credentials (prometheus_url, grafana_url, ...)."""
    from pydantic import SecretStr

    found: list[str] = []
    for name in type(settings).model_fields:
        value = getattr(settings, name, None)
        if isinstance(value, SecretStr):
            found += secrets_of(value.get_secret_value())
        elif isinstance(value, str) and "://" in value and "@" in value:
            found += secrets_of(value)[1:]  # the URL's password, not the whole URL
        elif isinstance(value, dict):  # named operator tokens
            found += [s for v in value.values() if isinstance(v, SecretStr) for s in secrets_of(v.get_secret_value())]
        elif isinstance(value, list):  # notification routes: a webhook URL is a secret
            found += [s for route in value for v in vars(route).values() if isinstance(v, SecretStr)
                      for s in secrets_of(v.get_secret_value())] if all(hasattr(r, "__dict__") for r in value) else []
    register(*found)


def _url(m: re.Match[str]) -> str:
    if m.group("password") is None:  # scheme://token@host: the user part is the secret
        return f"{m.group('scheme')}{MASK}@" if m.group("user") else m.group(0)
    return f"{m.group('scheme')}{m.group('user')}:{MASK}@"


def redact_text(text: str) -> str:
    """`text` with registered secrets, URL credentials and Bearer/Basic credentials masked."""
    if not text:
        return text
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    if "@" in text:
        text = _URL_CREDENTIALS.sub(_url, text)
    return _AUTH_SCHEME.sub(_auth, text) if "B" in text else text


def _auth(m: re.Match[str]) -> str:
    """`Bearer X` -> `Bearer ***`; `Basic X` only when X is base64 of 'user:password' (not 'Basic auth')."""
    if m.group("scheme") == "Basic":
        try:
            if b":" not in base64.b64decode(m.group("credentials"), validate=True):
                return m.group(0)
        except ValueError:
            return m.group(0)
    return f"{m.group('scheme')} {MASK}"


def sensitive_key(key: object) -> bool:
    return isinstance(key, str) and bool(_SENSITIVE_KEY.search(key))


def redact(value: Any) -> Any:
    """A copy of a JSON-like document (dicts, lists, tuples, strings, numbers) with secrets masked;
    other objects are returned as they are."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: (MASK if sensitive_key(k) and isinstance(v, str) and v else redact(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value] if any(not isinstance(v, (int, float)) for v in value) else value
    if isinstance(value, tuple):
        return tuple(redact(v) for v in value)
    return value


# -- logs -----------------------------------------------------------------------------------------------
def patch_record(record: dict[str, Any]) -> None:
    """loguru patcher: redact the message and the bound extras of every record."""
    record["message"] = redact_text(record["message"])
    if record["extra"]:
        record["extra"] = redact(record["extra"])


def install_log_redaction(settings: Any | None = None) -> None:
    """Register the settings' secrets and make every loguru record pass through `patch_record`
    (for every sink, including ones added later)."""
    from loguru import logger

    if settings is not None:
        register_settings(settings)
    logger.configure(patcher=patch_record)


def redacting_sink(write: Callable[[str], Any] = sys.stderr.write) -> Callable[[Any], None]:
    """A loguru sink writing the formatted line (traceback included) redacted."""
    def sink(message: Any) -> None:
        write(redact_text(str(message)))

    return sink


def configure_logging(settings: Any) -> None:
    """The server's logging: one stderr sink at `settings.log_level`, redacted, without variable
    values in tracebacks (loguru's `diagnose` would print locals, secrets among them)."""
    from loguru import logger

    install_log_redaction(settings)
    logger.remove()
    # loguru's own layout, uncoloured; it appends the traceback (redacted by the sink, locals not shown)
    layout = "{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <8} | {name}:{function}:{line} - {message}"
    logger.add(redacting_sink(), level=str(settings.log_level).upper(), diagnose=False, backtrace=False, format=layout)

