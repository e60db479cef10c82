"""Who is calling: the operator tokens (the unnamed `token`, acting as "user", and the named `operator_tokens`) and
the viewer token. Every comparison is constant-time over all tokens; a secret is never logged."""
from __future__ import annotations

import hmac
from dataclasses import dataclass

from guardian.settings import Settings

UNNAMED = "user"  # the name the unnamed operator token acts under (as every override did before names)


@dataclass(frozen=True)
class Caller:
    name: str  # "user" for the unnamed token, else its name; "local" when no token is configured at all
    role: str  # "operator" | "viewer"

    @property
    def may_act(self) -> bool:
        return self.role == "operator"


def operator_tokens(settings: Settings) -> dict[str, str]:
    tokens = {name: secret.get_secret_value() for name, secret in settings.operator_tokens.items()}
    if settings.token is not None:
        tokens[UNNAMED] = settings.token.get_secret_value()
    return tokens


def any_token(settings: Settings) -> bool:
    return bool(operator_tokens(settings)) or settings.viewer_token is not None


def caller_of_token(settings: Settings, given: str) -> Caller | None:
    """The caller a token names (operator first), or None. Compares against every token, in constant time each."""
    found: Caller | None = None
    raw = given.encode("utf-8", "replace")
    for name, secret in operator_tokens(settings).items():
        if hmac.compare_digest(raw, secret.encode("utf-8", "replace")) and found is None:
            found = Caller(name, "operator")
    if settings.viewer_token is not None and hmac.compare_digest(
            raw, settings.viewer_token.get_secret_value().encode("utf-8", "replace")) and found is None:
        found = Caller("viewer", "viewer")
    return found


def caller_of_header(settings: Settings, authorization: str | bytes | None) -> Caller | None:
    """The caller an `Authorization: Bearer <token>` header names, or None."""
    if isinstance(authorization, bytes):
        authorization = authorization.decode("latin-1", "replace")
    scheme, _, token = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return caller_of_token(settings, token.strip())
