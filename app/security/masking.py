"""Masking secrets before anything is logged (SPEC §2 ``mask-sensitive``, §7, §9 "Logs").

``mask_value`` walks a JSON-like tree (dicts, lists, strings) and replaces

* the value of every key that names a credential — ``authorization``,
  ``proxy-authorization``, ``cookie``, ``api-key``/``apiKey``/``x-api-key``/``api_key``,
  and any key ending in ``token``, ``secret`` or ``password`` (``access_token``,
  ``client_secret``…; ``max_tokens`` is *not* one) — by ``***``;
* in every free-text string, bearer credentials (``Bearer …``), JWT-shaped strings
  (``eyJ….….…``), OpenAI-style keys (``sk-…``), the user and password of a URL
  (``https://user:pass@host`` → ``https://***@host``) and ``key=value`` / ``"key": "value"``
  pairs of the keys above.

``mask_text`` does the free-text part alone. Both accept extra literal secrets (e.g.
the configured provider API keys) that are replaced wherever they appear.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

MASK = "***"

_EXACT_KEYS = frozenset({"authorization", "proxyauthorization", "cookie", "setcookie", "apikey", "xapikey"})
_KEY_SUFFIXES = ("token", "secret", "password", "apikey", "authorization")
_KEY_NOISE = re.compile(r"[-_.\s]")

_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=\-]+")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*")
_SK_KEY = re.compile(r"\bsk-[A-Za-z0-9_\-]{4,}")
#: a URL's userinfo (RFC 3986: up to the first ``@`` before the host's ``/``, ``?`` or ``#``)
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/?#@\s]+@")
_PAIR = re.compile(
    r"""(?ix)
    (?<![A-Za-z0-9])
    ( (?:x[-_]?)?api[-_]?key | authorization | [A-Za-z0-9_\-]*(?:token|secret|password) )
    ( ["']?\s*[:=]\s*["']? )
    ( [^"'\s,&;}\]]+ )
    """
)


def is_sensitive_key(key: str) -> bool:
    """Whether a mapping key names a credential (see the module docstring)."""
    normal = _KEY_NOISE.sub("", key).lower()
    return normal in _EXACT_KEYS or normal.endswith(_KEY_SUFFIXES)


def mask_text(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with bearer tokens, JWTs, ``sk-`` keys, URL userinfo, credential pairs and ``secrets`` masked."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, MASK)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", text)
    text = _JWT.sub(MASK, text)
    text = _SK_KEY.sub("sk-" + MASK, text)
    text = mask_userinfo(text)
    return _PAIR.sub(lambda m: m.group(1) + m.group(2) + MASK, text)


def mask_userinfo(text: str) -> str:
    """``text`` with the user and password of every URL in it masked (``https://***@host``)."""
    return _USERINFO.sub(lambda m: f"{m.group(1)}{MASK}@", text) if "@" in text else text


def mask_value(value: Any, secrets: Iterable[str] = ()) -> Any:
    """A copy of a JSON-like ``value`` with credential keys and free-text secrets masked."""
    known = tuple(s for s in secrets if s)
    return _mask(value, known)


def _mask(value: Any, secrets: tuple[str, ...]) -> Any:
    if isinstance(value, str):
        return mask_text(value, secrets)
    if isinstance(value, Mapping):
        return {
            key: (MASK if isinstance(key, str) and is_sensitive_key(key) and item not in (None, "") else _mask(item, secrets))
            for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [_mask(item, secrets) for item in value]
    return value


__all__ = ["MASK", "is_sensitive_key", "mask_text", "mask_userinfo", "mask_value"]
