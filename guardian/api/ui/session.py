"""The web UI's sessions: a login with a viewer or operator token sets a signed cookie (HttpOnly, SameSite=Strict,
Secure behind TLS); every action carries a CSRF token derived from the session.

The cookie holds who logged in, their role and when it expires, signed with HMAC-SHA256 under a key derived from
the configured tokens: replicas with the same settings accept each other's sessions, and rotating a token ends
every session. Nothing secret is in the cookie. With no token configured at all (the guardian then listens on
loopback only), the UI needs no login and acts as "local".
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass

from guardian.api.identity import Caller, any_token, operator_tokens
from guardian.settings import Settings

COOKIE = "guardian_session"
SESSION_SECONDS = 12 * 3600.0
LOCAL = Caller("local", "operator")  # no token configured: loopback only, everyone local acts


def _key(settings: Settings) -> bytes:
    material = json.dumps({"operators": sorted(operator_tokens(settings).items()), "viewer": (
        settings.viewer_token.get_secret_value() if settings.viewer_token else None)}).encode()
    return hashlib.sha256(b"guardian-ui-session\0" + material).digest()


def _sign(key: bytes, payload: bytes) -> str:
    return base64.urlsafe_b64encode(hmac.new(key, payload, hashlib.sha256).digest()).decode().rstrip("=")


@dataclass(frozen=True)
class Session:
    caller: Caller
    cookie: str  # the cookie's value ("" for LOCAL)
    csrf: str  # what an action must carry


def issue(settings: Settings, caller: Caller, now: float | None = None) -> str:
    """The cookie value for a login of `caller`."""
    payload = json.dumps({"n": caller.name, "r": caller.role, "e": (now or time.time()) + SESSION_SECONDS},
                         separators=(",", ":")).encode()
    body = base64.urlsafe_b64encode(payload).decode().rstrip("=")
    return f"{body}.{_sign(_key(settings), body.encode())}"


def csrf_for(settings: Settings, cookie: str) -> str:
    return _sign(_key(settings), b"csrf\0" + cookie.encode())[:32]


def session_of(settings: Settings, cookie: str | None, now: float | None = None) -> Session | None:
    """The session a cookie proves, or None (no cookie, a bad signature, expired, or a role that no longer fits)."""
    if not any_token(settings):
        return Session(LOCAL, "", csrf_for(settings, ""))
    if not cookie or "." not in cookie:
        return None
    body, sig = cookie.rsplit(".", 1)
    if not hmac.compare_digest(sig.encode(), _sign(_key(settings), body.encode()).encode()):
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        name, role, expires = str(data["n"]), str(data["r"]), float(data["e"])
    except (ValueError, KeyError, TypeError):
        return None
    if expires < (now or time.time()) or role not in ("operator", "viewer"):
        return None
    return Session(Caller(name, role), cookie, csrf_for(settings, cookie))


def csrf_ok(session: Session, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(given.encode(), session.csrf.encode())
