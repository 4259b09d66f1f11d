"""Signed data-file links (SPEC §2 ``agent.chat-image-token.*``, §9 "Data links").

A token is ``<expiry>.<signature>``: ``expiry`` is the epoch second after which the
link is dead, ``signature`` the URL-safe base64 (unpadded) HMAC-SHA256 of
``"<file>\\n<expiry>"`` under ``agent.chat-image-token.secret``. Verification accepts
the current secret or any of ``previous-secrets`` (rotation) and compares in constant
time. With no secret configured tokens are off: links carry none and none is checked.

``GET /api/ap/data`` with tokens on: no ``token`` → 401 (``AuthError``); a malformed,
forged, foreign-file or expired token → 403 (``ForbiddenError``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from urllib.parse import urlencode

from app.config import ImageTokenSettings, Settings
from app.errors import AuthError, ForbiddenError
from app.paths import ascii_int

#: the longest token we look at (an expiry, a dot and a 43-char signature fit easily)
MAX_TOKEN_CHARS = 128


def _signature(secret: str, file: str, expiry: int) -> str:
    mac = hmac.new(secret.encode("utf-8"), f"{file}\n{expiry}".encode("utf-8", "surrogatepass"), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode("ascii")


def sign_data_token(secret: str, file: str, expiry: int) -> str:
    """The token for ``file`` valid until epoch second ``expiry``."""
    assert secret, "signing needs a secret"
    return f"{expiry}.{_signature(secret, file, expiry)}"


def issue_data_token(tokens: ImageTokenSettings, file: str, now: float | None = None) -> str | None:
    """A token for ``file`` expiring ``ttl-seconds`` from ``now``; ``None`` when tokens are off."""
    if not tokens.secret:
        return None
    issued = int(time.time() if now is None else now)
    return sign_data_token(tokens.secret, file, issued + max(1, tokens.ttl_seconds))


def verify_data_token(tokens: ImageTokenSettings, file: str, token: str | None, now: float | None = None) -> None:
    """Accept a valid, unexpired token for ``file`` (current or previous secret); else raise.

    Does nothing when tokens are off.
    """
    if not tokens.secret:
        return
    if not token:
        raise AuthError("this data link needs a 'token' (ask the gateway for a signed link)")
    expiry_text, dot, signature = token.partition(".")
    expiry = ascii_int(expiry_text, 12)
    # ASCII only: compare_digest refuses other text
    if len(token) > MAX_TOKEN_CHARS or not dot or not token.isascii() or expiry is None:
        raise ForbiddenError("invalid data token")
    secrets = [tokens.secret, *(s for s in tokens.previous_secrets if s)]
    if not any(hmac.compare_digest(_signature(s, file, expiry), signature) for s in secrets):
        raise ForbiddenError("invalid data token")
    if expiry < (time.time() if now is None else now):
        raise ForbiddenError("the data link has expired")


def signed_data_url(settings: Settings, file: str, now: float | None = None) -> str:
    """The link clients use for a data file: ``/api/ap/data?file=…&token=…`` (no token when off)."""
    params = {"file": file}
    token = issue_data_token(settings.agent.chat_image_token, file, now)
    if token is not None:
        params["token"] = token
    return "/api/ap/data?" + urlencode(params)


__all__ = ["issue_data_token", "sign_data_token", "signed_data_url", "verify_data_token"]
