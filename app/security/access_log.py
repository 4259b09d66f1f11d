"""Credentials in URLs never reach the access log or the request log (SPEC §9 "Logs").

Data links carry their HMAC as ``?token=…`` (SPEC §9 "Data links"), and clients put
other credentials in URLs too (``access_token``, ``api_key``, ``key``, ``jwt``).
uvicorn's access log writes the full path with its query string, so
``QueryCredentialFilter`` — a ``logging.Filter`` on the ``uvicorn.access`` logger —
replaces the value of every such parameter by ``***`` before any handler sees the
record. Parameter names are compared after percent-decoding, case-insensitively; the
credential names are those of ``masking.is_sensitive_key`` plus ``key`` and ``jwt``.
A URL's user and password (``https://user:pass@host``) are masked too.

``access_log_masking()`` installs the filter for as long as the app runs (the app's
lifespan enters it), so it applies to any uvicorn run: ``agw serve``, the sidecar's
``--http-port``, tests. The gateway installs one on httpx's logger (``HTTPX_LOGGER``) as well:
httpx logs every outgoing request's URL at INFO, and a provider's ``base-url`` or a tool's
``toolApi`` may carry a password or an ``api_key`` parameter.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote_plus

from app.security.masking import MASK, is_sensitive_key, mask_userinfo

#: the logger uvicorn writes one line per request to
ACCESS_LOGGER = "uvicorn.access"
#: the logger httpx writes one line per outgoing request to ("HTTP Request: POST <url> …", INFO)
HTTPX_LOGGER = "httpx"
#: credential parameter names beyond ``is_sensitive_key`` (which covers ``*token``, ``api_key``, ``*secret``…)
EXTRA_NAMES = frozenset({"key", "jwt"})

_PARAM = re.compile(r"(?P<lead>[?&;])(?P<name>[^=&;#\s\"?]+)=(?P<value>[^&;#\s\"]*)")


def is_credential_param(name: str) -> bool:
    """Whether a query parameter named ``name`` (percent-encoded or not) carries a credential."""
    plain = unquote_plus(name).strip().lower()
    return plain in EXTRA_NAMES or is_sensitive_key(plain)


def mask_query(text: str) -> str:
    """``text`` with the value of every credential query parameter replaced by ``***``."""
    if "=" not in text:
        return text

    def replace(match: re.Match[str]) -> str:
        if not is_credential_param(match["name"]):
            return match[0]
        return f"{match['lead']}{match['name']}={MASK}"

    return _PARAM.sub(replace, text)


def mask_url(text: str) -> str:
    """``text`` with credential query values and the user and password of URLs masked."""
    return mask_userinfo(mask_query(text))


def _masked_arg(arg: Any) -> Any:
    """A log argument with URL credentials masked: a string, or an object that prints as one (httpx's
    ``URL``: replaced by its masked text only when there was something to mask); numbers as they are."""
    if isinstance(arg, str):
        return mask_url(arg)
    if arg is None or isinstance(arg, (int, float)):
        return arg
    text = str(arg)
    masked = mask_url(text)
    return arg if masked == text else masked


class QueryCredentialFilter(logging.Filter):
    """Masks URL credentials in a record's message and arguments; drops nothing."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = mask_url(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_masked_arg(arg) for arg in record.args)
        elif isinstance(record.args, dict):
            record.args = {key: _masked_arg(arg) for key, arg in record.args.items()}
        return True


@contextmanager
def access_log_masking(logger_name: str = ACCESS_LOGGER) -> Iterator[QueryCredentialFilter]:
    """Install a ``QueryCredentialFilter`` on ``logger_name`` for the duration of the block."""
    logger = logging.getLogger(logger_name)
    installed = QueryCredentialFilter()
    logger.addFilter(installed)
    try:
        yield installed
    finally:
        logger.removeFilter(installed)


__all__ = ["ACCESS_LOGGER", "HTTPX_LOGGER", "QueryCredentialFilter", "access_log_masking", "is_credential_param",
           "mask_query", "mask_url"]
