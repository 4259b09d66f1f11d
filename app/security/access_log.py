"""Credentials in query strings never reach the access log (SPEC §9 "Logs").

Data links carry their HMAC as ``?token=…`` (SPEC §9 "Data links"), and clients put
other credentials in URLs too (``access_token``, ``api_key``, ``key``, ``jwt``).
uvicorn's access log writes the full path with its query string, so
``QueryCredentialFilter`` — a ``logging.Filter`` on the ``uvicorn.access`` logger —
replaces the value of every such parameter by ``***`` before any handler sees the
record. Parameter names are compared after percent-decoding, case-insensitively; the
credential names are those of ``masking.is_sensitive_key`` plus ``key`` and ``jwt``.

``access_log_masking()`` installs the filter for as long as the app runs (the app's
lifespan enters it), so it applies to any uvicorn run: ``agw serve``, the sidecar's
``--http-port``, tests.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import unquote_plus

from app.security.masking import MASK, is_sensitive_key

#: the logger uvicorn writes one line per request to
ACCESS_LOGGER = "uvicorn.access"
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


class QueryCredentialFilter(logging.Filter):
    """Masks credential query values in a record's message and string arguments; drops nothing."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = mask_query(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(mask_query(arg) if isinstance(arg, str) else arg for arg in record.args)
        elif isinstance(record.args, dict):
            record.args = {key: mask_query(arg) if isinstance(arg, str) else arg for key, arg in record.args.items()}
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


__all__ = ["ACCESS_LOGGER", "QueryCredentialFilter", "access_log_masking", "is_credential_param", "mask_query"]
