"""Where a model call goes and which headers carry the key (SPEC §2, endpoint resolution).

* ``OPENAI`` → ``{base-url}/v1/chat/completions``, or ``{base-url}/chat/completions``
  when ``base-url`` already ends in ``/v1``;
* ``NEWAPI_OPENAI_COMPATIBLE`` → ``{base-url}{new-api-path}``;
* ``ANTHROPIC`` → ``{base-url}/v1/messages``, or ``{base-url}/messages`` when
  ``base-url`` ends in ``/v1``.

OpenAI kinds send ``Authorization: Bearer <key>``; Anthropic sends ``x-api-key`` and
``anthropic-version: 2023-06-01``. No header is sent for an empty key.
"""

from __future__ import annotations

from app.catalog.definitions import Protocol
from app.config import ProviderSettings

ANTHROPIC_VERSION = "2023-06-01"


def _base(provider: ProviderSettings) -> str:
    return provider.base_url.strip().rstrip("/")


def resolve_endpoint(protocol: Protocol, provider: ProviderSettings) -> str:
    """The full URL a streaming chat request for ``protocol`` is POSTed to."""
    base = _base(provider)
    if protocol == "OPENAI":
        return f"{base}/chat/completions" if base.endswith("/v1") else f"{base}/v1/chat/completions"
    if protocol == "NEWAPI_OPENAI_COMPATIBLE":
        path = provider.new_api_path or "/v1/chat/completions"
        return base + (path if path.startswith("/") else "/" + path)
    if protocol == "ANTHROPIC":
        return f"{base}/messages" if base.endswith("/v1") else f"{base}/v1/messages"
    raise ValueError(f"unknown model protocol: {protocol!r}")


def build_headers(protocol: Protocol, api_key: str) -> dict[str, str]:
    """Request headers for ``protocol``, including the credential."""
    headers = {"content-type": "application/json", "accept": "text/event-stream"}
    if protocol == "ANTHROPIC":
        headers["anthropic-version"] = ANTHROPIC_VERSION
        if api_key:
            headers["x-api-key"] = api_key
    elif api_key:
        headers["authorization"] = f"Bearer {api_key}"
    return headers


__all__ = ["ANTHROPIC_VERSION", "build_headers", "resolve_endpoint"]
